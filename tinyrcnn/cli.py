"""The command line: `python -m tinyrcnn COMMAND ...` (see `python -m tinyrcnn --help`).

Bad files, paths or arguments end with one line `error: ...` on stderr and a non-zero exit
status, never a traceback.
"""
import argparse
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise SystemExit(_fail(f'{self.prog}: {message}'))


def _fail(message):
    print(f'error: {message}', file=sys.stderr)
    return 2


def cmd_bench(args):
    from . import bench
    from .backend import check_device
    check_device(args.device)
    only = args.only.split(',') if args.only else None
    bench.run(args.device, only=only, repeats=args.repeats)


def cmd_convert_weights(args):
    from .weights import convert_weights
    n = convert_weights(args.src, args.dst)
    print(f'wrote {n} arrays to {args.dst}')


def build_parser():
    p = _Parser(prog='python -m tinyrcnn',
                description='Fast R-CNN and Faster R-CNN from scratch on NumPy/CuPy.')
    sub = p.add_subparsers(dest='command', parser_class=_Parser)

    b = sub.add_parser('bench', help='time the hot paths (next to PyTorch where installed)')
    b.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    b.add_argument('--only', default=None,
                   help='comma-separated subset: vgg,roi_pool,nms,selective_search')
    b.add_argument('--repeats', type=int, default=3)
    b.set_defaults(fn=cmd_bench)

    c = sub.add_parser('convert-weights', help='convert a PyTorch state-dict file to .npz')
    c.add_argument('src')
    c.add_argument('dst')
    c.set_defaults(fn=cmd_convert_weights)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, 'fn', None):
        parser.print_help()
        return 2
    try:
        args.fn(args)
    except KeyboardInterrupt:
        return _fail('interrupted')
    except (ValueError, FileNotFoundError, IsADirectoryError, PermissionError, RuntimeError,
            OSError, KeyError) as e:
        message = str(e).strip().splitlines()
        return _fail(message[0] if message else type(e).__name__)
    return 0
