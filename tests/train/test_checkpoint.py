"""Nothing lost on a long run (tinyrcnn/train/checkpoint.py, loop.py): the newest checkpoints
are kept, a damaged one is skipped for the one before, a resume with other settings or data is
refused unless overridden, a full disk leaves the checkpoints whole, and a non-finite loss stops
the run before its update (or skips its batch)."""
import errno
import os

import numpy as np
import pytest

from tinyrcnn.train import FastRCNNTrainer
from tinyrcnn.train.checkpoint import checkpoint_files
from tinyrcnn.train.loop import Diverged
from helpers import shapes_set, small_cfg


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return shapes_set(tmp_path_factory.mktemp('shapes'))


def run(shapes, out, iterations=7, **kw):
    ds, props = shapes
    trainer = FastRCNNTrainer(small_cfg(iterations=iterations, checkpoint_every=2, **kw), ds, props,
                              str(out))
    trainer.run(show_progress=False)
    return trainer


def same_weights(a, b):
    return all(np.array_equal(p.data, q.data) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_the_newest_are_kept_and_a_damaged_one_falls_back(shapes, tmp_path):
    full = run(shapes, tmp_path / 'full')
    names = [os.path.basename(p) for p in checkpoint_files(tmp_path / 'full')]
    assert names == ['checkpoint_00000007.npz', 'checkpoint_00000006.npz']    # keep 2 of 2, 4, 6, 7
    stopped = run(shapes, tmp_path / 'cut', iterations=6)
    newest = checkpoint_files(tmp_path / 'cut')[0]                              # iteration 6
    data = open(newest, 'rb').read()
    for damage in ('truncated', 'zeroed'):
        with open(newest, 'wb') as f:                                           # damaged on disk
            f.write(data[:len(data) // 2] if damage == 'truncated' else
                    data[:len(data) // 2] + bytes(64) + data[len(data) // 2 + 64:])
        ds, props = shapes
        resumed = FastRCNNTrainer(small_cfg(iterations=7, checkpoint_every=2), ds, props,
                                  str(tmp_path / 'cut')).load_checkpoint()
        assert resumed.iteration == 4 and resumed.resumed['skipped'][0][0] == newest
        assert 'damaged' in resumed.resumed['skipped'][0][1]
        assert os.path.exists(newest + '.damaged') and not os.path.exists(newest)   # set aside
    resumed.run(show_progress=False)
    assert resumed.iteration == 7 and same_weights(full, resumed)
    assert resumed.history == full.history
    assert stopped.iteration == 6


def test_all_damaged_is_one_clear_error(shapes, tmp_path):
    run(shapes, tmp_path, iterations=4)
    for path in checkpoint_files(tmp_path):
        with open(path, 'r+b') as f:
            f.truncate(100)
    ds, props = shapes
    with pytest.raises(ValueError, match='no usable checkpoint') as info:
        FastRCNNTrainer(small_cfg(), ds, props, str(tmp_path)).load_checkpoint()
    assert '\n' not in str(info.value) and 'checkpoint_00000004.npz: damaged' in str(info.value)


def test_other_settings_or_data_are_refused_unless_overridden(shapes, tmp_path):
    run(shapes, tmp_path, iterations=2)
    ds, props = shapes
    other = FastRCNNTrainer(small_cfg(lr=0.02, flip=False), ds, props, str(tmp_path))
    with pytest.raises(ValueError, match=r'flip \(checkpoint True, now False\); lr \(checkpoint 0.01'):
        other.load_checkpoint()
    other.load_checkpoint(override=True)
    assert other.iteration == 2 and len(other.resumed['overridden']) == 2
    assert other.optimizer.lr == 0.02 and other.schedule.base_lr == 0.02    # the new rate is used
    longer = FastRCNNTrainer(small_cfg(iterations=50, device='cpu'), ds, props, str(tmp_path))
    assert longer.load_checkpoint().iteration == 2                      # a longer run: allowed
    fewer = shapes_set(tmp_path / 'fewer', num_train=4)
    with pytest.raises(ValueError, match='the data set'):
        FastRCNNTrainer(small_cfg(), fewer[0], fewer[1], str(tmp_path)).load_checkpoint()


def test_a_full_disk_leaves_the_checkpoints_whole(shapes, tmp_path, monkeypatch):
    trainer = run(shapes, tmp_path, iterations=4)
    before = {p: open(p, 'rb').read() for p in checkpoint_files(tmp_path)}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(np, 'savez', full)
    trainer.iteration = 6
    with pytest.raises(OSError, match='No space left on device.*already on disk are intact'):
        trainer.save_checkpoint()
    assert {p: open(p, 'rb').read() for p in checkpoint_files(tmp_path)} == before
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]


def poisoned(trainer, at):
    """The trainer's loss becomes NaN at iteration `at` (1-based)."""
    part_losses = trainer.part_losses

    def nan_at(model, part):
        losses, weight = part_losses(model, part)
        if trainer.iteration + 1 == at:
            losses = [losses[0] * float('nan')] + losses[1:]
        return losses, weight
    trainer.part_losses = nan_at
    return trainer


def test_a_non_finite_loss_stops_before_its_update_or_skips_its_batch(shapes, tmp_path):
    ds, props = shapes
    trainer = poisoned(FastRCNNTrainer(small_cfg(iterations=7, checkpoint_every=2), ds, props,
                                       str(tmp_path / 'stop')), at=5)
    with pytest.raises(Diverged, match='iteration 5 .*the state before it is saved, checkpoint_00000004') as info:
        trainer.run(show_progress=False)
    assert 'nan' in str(info.value) and trainer.iteration == 4
    assert all(np.isfinite(p.data).all() for p in trainer.model.parameters())
    assert [os.path.basename(p) for p in checkpoint_files(tmp_path / 'stop')][0] == 'checkpoint_00000004.npz'
    between = poisoned(FastRCNNTrainer(small_cfg(iterations=7, checkpoint_every=2), ds, props,
                                       str(tmp_path / 'between')), at=4)
    with pytest.raises(Diverged, match='iteration 4 .*saved, checkpoint_00000003.npz'):
        between.run(show_progress=False)                # nothing lost: iteration 3 was not saved yet
    names = [os.path.basename(p) for p in checkpoint_files(tmp_path / 'between')]
    assert names == ['checkpoint_00000003.npz', 'checkpoint_00000002.npz']
    again = FastRCNNTrainer(small_cfg(iterations=7, checkpoint_every=2), ds, props,
                            str(tmp_path / 'between')).load_checkpoint()
    assert again.iteration == 3 and same_weights(again, between)
    skipping = poisoned(FastRCNNTrainer(small_cfg(iterations=7, checkpoint_every=2, skip_nonfinite=True),
                                        ds, props, str(tmp_path / 'skip')), at=5)
    skipping.run(show_progress=False)
    assert skipping.iteration == 7 and skipping.skipped == [5]
    assert [h[0] for h in skipping.history] == [1, 2, 3, 4, 6, 7]
    assert all(np.isfinite(p.data).all() for p in skipping.model.parameters())
    again = FastRCNNTrainer(small_cfg(iterations=7, skip_nonfinite=True, checkpoint_every=2), ds,
                            props, str(tmp_path / 'skip')).load_checkpoint()
    assert again.skipped == [5]                                          # counted across a resume
