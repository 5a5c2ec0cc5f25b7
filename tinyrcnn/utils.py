"""Small helpers shared by the package: a progress bar and atomic file writes."""
import os
import sys
import time
import tempfile
import contextlib


def progress(iterable, total=None, desc='', file=None, every=0.2, postfix=None):
    """Wrap an iterable and draw a one-line text progress bar on stderr.

    `postfix` is a callable returning a short string (for example running losses); it is
    called each time the bar is redrawn. The bar is silent when `file` is not a terminal
    and TINYRCNN_QUIET is set, so tests and CI logs stay short.
    """
    file = file or sys.stderr
    if total is None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    quiet = bool(os.environ.get('TINYRCNN_QUIET'))
    start = last = time.time()

    def draw(i, final=False):
        elapsed = time.time() - start
        rate = i / elapsed if elapsed > 0 else 0.0
        extra = (' ' + postfix()) if postfix is not None else ''
        if total:
            frac = i / total
            bar = '#' * int(24 * frac) + '-' * (24 - int(24 * frac))
            eta = (total - i) / rate if rate > 0 else 0.0
            line = f'\r{desc} [{bar}] {i}/{total} {elapsed:5.1f}s<{eta:5.1f}s{extra}'
        else:
            line = f'\r{desc} {i} {elapsed:5.1f}s{extra}'
        file.write(line + ('\n' if final else ''))
        file.flush()

    i = 0
    for item in iterable:
        yield item
        i += 1
        now = time.time()
        if not quiet and now - last >= every:
            draw(i)
            last = now
    if not quiet:
        draw(i, final=True)


def atomic_write(path, write_fn, mode='wb'):
    """Write a file so that readers see either the old or the complete new one.

    `write_fn(f)` writes into a temporary file in the same folder, which is then
    renamed over `path` (an atomic rename on POSIX): a run killed half-way loses nothing.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)           # as open() would make it (mkstemp makes 0600)
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def check_answer(answer, truth, hint, tol=1e-3):
    """The check cell of a chapter's exercises: prints 'correct' when `answer` matches `truth`
    (numbers or nested lists of them to within `tol`, strings ignoring case and surrounding
    spaces), 'not answered yet: <hint>' for None, else 'not yet: <hint>'. Never raises, so a
    chapter runs top to bottom before its reader has answered anything. Returns whether it
    was correct."""
    import numpy as np
    if answer is None:
        print(f'not answered yet: {hint}')
        return False
    if isinstance(truth, str):
        ok = isinstance(answer, str) and answer.strip().lower() == truth.strip().lower()
    else:
        try:
            ok = np.shape(answer) == np.shape(truth) and bool(
                np.allclose(np.asarray(answer, float), np.asarray(truth, float), rtol=0, atol=tol))
        except (TypeError, ValueError):
            ok = False
    print('correct' if ok else f'not yet: {hint}')
    return ok
