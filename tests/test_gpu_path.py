"""The GPU path end to end: training on the GPU gives the CPU's numbers, a training step keeps
to its sync budget, and the command line runs with --device cuda, on the real GPU where there
is one and on the strict CuPy stand-in (tests/cupy_standin/) everywhere else."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyrcnn as tr
import tinyrcnn.functional as F
from cupy_standin import switch
from helpers import distinct, gpu, shapes_set, small_cfg
from tinyrcnn import bench
from tinyrcnn.data import VOCDetection, make_shapes_voc
from tinyrcnn.train import FastRCNNTrainer, FasterRCNNTrainer, FasterTrainConfig

pytestmark = switch.needs_compiler          # the stand-in runs kernels through kernels/cpu.py
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FASTER = dict(trunk='vgg-tiny', freeze_stages=0, scales=(96,), max_size=160, lr=0.01,
                   source='tiny', anchor_scales=(1, 2, 4), rpn_min_size=4, checkpoint_every=1000)

# Blocking syncs per training iteration (the host waits for the GPU). Fast R-CNN: the losses,
# read back together. Faster R-CNN adds the proposals: sorted once (NMS takes them presorted),
# NMS reads back how many it kept, one copy of the proposals to the host.
# Measured before this budget: 6 (Fast R-CNN) and 16 (Faster R-CNN) per iteration.
FAST_BUDGET, FASTER_BUDGET = 2, 4


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return shapes_set(tmp_path_factory.mktemp('shapes'))


@pytest.fixture(scope='module')
def faster_set(tmp_path_factory):
    return VOCDetection(make_shapes_voc(tmp_path_factory.mktemp('faster'), 4, 2), 'trainval')


def _trained(make, device):
    trainer = make(device)
    trainer.run(show_progress=False)
    return trainer.model.state_dict(), np.array(trainer.history)


def _same(cpu, gpu_run, exact):
    """Exactly equal on the stand-in (NumPy arithmetic, the kernels' own order); to float
    rounding on a GPU (cuBLAS, fma)."""
    (a, ha), (b, hb) = cpu, gpu_run
    tol = 0 if exact else 1e-4
    np.testing.assert_allclose(hb, ha, rtol=tol, atol=tol)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=tol, atol=tol, err_msg=k)


@gpu
def test_fast_rcnn_training_on_the_gpu_equals_the_cpu(shapes, cuda_device):
    ds, props = shapes
    def make(device):
        return FastRCNNTrainer(small_cfg(iterations=3, dropout=0.0, device=device), ds, props, None)
    _same(_trained(make, 'cpu'), _trained(make, 'cuda'), exact=cuda_device == 'standin')


@gpu
@pytest.mark.parametrize('schedule, iterations', [('joint', 3), ('alternating', 6)])
def test_faster_rcnn_training_on_the_gpu_equals_the_cpu(faster_set, cuda_device, schedule, iterations):
    def make(device):
        cfg = FasterTrainConfig(**TINY_FASTER, dropout=0.0, iterations=iterations, schedule=schedule,
                                device=device)
        return FasterRCNNTrainer(cfg, faster_set, None)
    cpu, on_gpu = _trained(make, 'cpu'), _trained(make, 'cuda')
    if cuda_device == 'standin':
        _same(cpu, on_gpu, exact=True)
    else:   # rounding can move a proposal over the NMS threshold: only the first RPN losses
        np.testing.assert_allclose(on_gpu[1][0, 2:4], cpu[1][0, 2:4], rtol=1e-4)
        assert np.isfinite(on_gpu[1]).all()


def _syncs_per_step(trainer, steps=3, start=1):
    """Blocking syncs per iteration from iteration `start` on (after at least one warm-up
    iteration: kernels built, anchors cached), and their report by call site."""
    import cupy
    trainer.run(iterations=start, show_progress=False)
    with cupy._standin.counting() as tally:
        for _ in range(steps):
            trainer.step()
    stage = getattr(trainer, 'stage', '')
    print(f'\n{type(trainer).__name__} {stage}'.rstrip() + ': per iteration\n' +
          tally.report(per=steps, depth=4, kinds=('sync', 'd2h', 'h2d')))
    return tally.total('sync') / steps, tally.report(per=steps, depth=4, kinds=('sync',))


def test_a_training_step_keeps_to_its_sync_budget(shapes, faster_set):
    """Every sync stalls the GPU's queue; the budget keeps them from creeping back in."""
    ds, props = shapes
    with switch.standin():
        fast = FastRCNNTrainer(small_cfg(iterations=10, device='cuda'), ds, props, None)
        per_step, report = _syncs_per_step(fast)
        assert per_step <= FAST_BUDGET, report
        joint = FasterTrainConfig(**TINY_FASTER, iterations=10, device='cuda')
        per_step, report = _syncs_per_step(FasterRCNNTrainer(joint, faster_set, None))
        assert per_step <= FASTER_BUDGET, report
        # the 4-step schedule: step 2 (iterations 4, 5 of 12) trains the head on the step-1
        # RPN's proposals, fixed ones, as Fast R-CNN; the other steps propose as joint training
        steps = FasterTrainConfig(**TINY_FASTER, iterations=12, schedule='alternating', device='cuda')
        per_step, report = _syncs_per_step(FasterRCNNTrainer(steps, faster_set, None), 1, start=5)
        assert per_step <= FAST_BUDGET, report


def test_labels_and_rois_from_the_host_are_checked_there_before_upload():
    """The log loss's label range and RoI pooling's RoI checks cost no wait for host data;
    given device arrays they copy them back, once each; bad values raise either way."""
    with switch.standin() as cupy:
        x = tr.Tensor(cupy.asarray(distinct((1, 2, 8, 8), dtype=np.float32)))
        logits = tr.Tensor(cupy.asarray(distinct((4, 3), dtype=np.float32)))
        labels, rois = np.array([0, 2, 1, 1]), np.array([[0, 0, 0, 63, 63]], np.float32)
        with cupy._standin.counting() as host:
            F.cross_entropy(logits, labels)
            F.roi_pool(x, rois, (2, 2), 1 / 16)
        assert host.total('sync') == 0 and host.total('h2d') == 2, host.report()
        with cupy._standin.counting() as device:
            F.cross_entropy(logits, cupy.asarray(labels))
            F.roi_pool(x, cupy.asarray(rois), (2, 2), 1 / 16)
        assert device.total('sync') == 2, device.report()
        for bad in (np.array([0, 3, 1, 1]), cupy.asarray([0, 3, 1, 1])):
            with pytest.raises(ValueError, match='labels must be in'):
                F.cross_entropy(logits, bad)
        for bad in (rois + [1, 0, 0, 0, 0], cupy.asarray(rois + [1, 0, 0, 0, 0])):
            with pytest.raises(ValueError, match='batch indices'):
                F.roi_pool(x, bad, (2, 2), 1 / 16)


# ----- the command line -------------------------------------------------------------------------
SMALL = ['--trunk', 'vgg-tiny', '--set', 'freeze_stages=0', 'scales=[96]', 'max_size=160',
         'rois_per_batch=32', 'source="tiny"', 'checkpoint_every=2', 'lr=0.01']
FASTER = ['anchor_scales=[1,2,4]', 'rpn_min_size=4']


@pytest.fixture(scope='module')
def cli_data(tmp_path_factory):
    return Path(make_shapes_voc(tmp_path_factory.mktemp('cli'), 3, 2, seed=4, image_size=(96, 128)))


def cuda(tmp_path, *args):
    """`python -m tinyrcnn ARGS --device cuda` on the GPU, or on the stand-in, which then
    writes what the run launched and synced (returned as a dict, {} on a GPU)."""
    report = tmp_path / 'standin.json'
    env = dict(os.environ, TINYRCNN_QUIET='1', PYTHONPATH=ROOT) if switch.real_gpu() else \
        dict(switch.env(), CUPY_STANDIN_REPORT=str(report))
    r = subprocess.run([sys.executable, '-m', 'tinyrcnn', *args, '--device', 'cuda'], env=env,
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    counts = json.loads(report.read_text()) if report.exists() else {}
    report.unlink(missing_ok=True)
    return r.stdout, {site.split('(')[-1].rstrip(')') for site in counts.get('launch', {})}


def test_fast_rcnn_train_resume_test_detect_with_device_cuda(cli_data, tmp_path):
    out = str(tmp_path / 'fast')
    _, kernels = cuda(tmp_path, 'train', '--data', str(cli_data), '--out', out, '--model', 'fast',
                      '--proposal-mode', 'single', '--iterations', '3', *SMALL)
    if kernels:                                     # the stand-in ran the kernels' own source
        assert {'im2col', 'col2im', 'max_pool_forward', 'roi_pool_forward',
                'roi_pool_backward'} <= kernels, kernels
    stdout, _ = cuda(tmp_path, 'train', '--data', str(cli_data), '--out', out, '--resume',
                     '--iterations', '4')
    assert 'resumed from checkpoint_00000003.npz at iteration 3' in stdout
    stdout, _ = cuda(tmp_path, 'test', '--weights', f'{out}/model', '--data', str(cli_data),
                     '--out', str(tmp_path / 'test'), '--proposal-mode', 'single')
    assert stdout.strip().splitlines()[-1].startswith('mAP@0.5 (VOC07 11-point): ')
    image = sorted((cli_data / 'JPEGImages').iterdir())[0]
    cuda(tmp_path, 'detect', str(image), '--weights', f'{out}/model', '--out', str(tmp_path / 'd.png'),
         '--proposal-mode', 'single')
    assert (tmp_path / 'd.png').read_bytes()[:4] == b'\x89PNG'


@pytest.mark.parametrize('schedule', ['joint', 'alternating'])
def test_faster_rcnn_train_and_detect_with_device_cuda(cli_data, tmp_path, schedule):
    out = str(tmp_path / schedule)
    _, kernels = cuda(tmp_path, 'train', '--data', str(cli_data), '--out', out, '--model', 'faster',
                      '--iterations', '4', *SMALL, *FASTER, f'schedule="{schedule}"')
    if kernels:
        assert {'im2col', 'roi_pool_forward', 'nms_mask'} <= kernels, kernels
    image = sorted((cli_data / 'JPEGImages').iterdir())[0]
    stdout, kernels = cuda(tmp_path, 'detect', str(image), '--weights', f'{out}/model',
                           '--out', str(tmp_path / 'd.png'))
    assert 'RPN proposals' in stdout and (tmp_path / 'd.png').exists()
    assert not kernels or 'nms_mask' in kernels


def test_bench_with_device_cuda(tmp_path):
    stdout, kernels = cuda(tmp_path, 'bench', '--only', 'nms', '--repeats', '1')
    assert 'nms 2000 boxes @ 0.7 (cuda)' in stdout and 'nms 12000 boxes @ 0.7 (cuda)' in stdout
    assert not kernels or 'nms_mask' in kernels


@gpu
def test_bench_rows_on_the_gpu_at_small_sizes():
    rows = bench.bench_roi_pool('cuda', repeats=1, roi_counts=(3,), shape=(1, 2, 6, 7))
    assert [name for name, _ in rows] == ['roi_pool forward, 3 RoIs (cuda)',
                                          'roi_pool forward+backward, 3 RoIs (cuda)']
    assert bench.bench_nms_reference('cuda', sizes=(50,), repeats=1)[0][0] == 'nms 50 boxes @ 0.7 (cuda)'
