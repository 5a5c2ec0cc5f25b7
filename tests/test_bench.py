"""`python -m tinyrcnn bench` (tinyrcnn/bench/): the rows it prints, on small workloads."""
import re

import numpy as np
import pytest

from helpers import distinct, gpu
from tinyrcnn import bench
from tinyrcnn.tensor import Tensor


def test_roi_pool_rows_on_a_small_map():
    rows = bench.bench_roi_pool('cpu', repeats=1, roi_counts=(3,), shape=(1, 2, 6, 7))
    assert [name for name, _ in rows] == ['roi_pool forward, 3 RoIs (cpu)',
                                          'roi_pool forward+backward, 3 RoIs (cpu)']
    assert all(t > 0 for _, t in rows)


def test_nms_rows_and_unknown_benchmarks(capsys):
    rows = bench.bench_nms_reference('cpu', sizes=(50,), repeats=1)
    assert rows[0][0] == 'nms 50 boxes @ 0.7 (cpu)' and rows[0][1] > 0
    with pytest.raises(ValueError, match='unknown benchmark'):
        bench.run('cpu', only=['nothing'])


def test_roi_pool_rows_show_the_reference_beside_the_speed_path():
    from tinyrcnn import speed
    with speed.enabled():
        rows = bench.bench_roi_pool('cpu', repeats=1, roi_counts=(3,), shape=(1, 2, 6, 7))
    assert rows[-1][0] == 'roi_pool forward, 3 RoIs, reference loop (cpu)' and rows[-1][1] > 0


def test_the_header_names_the_cpu_its_family_and_avx512(tmp_path, capsys):
    from tinyrcnn.bench import common
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n'
                    'model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n\n'
                    'processor\t: 1\nmodel name\t: another\n')
    assert common.cpu_text(str(info)) == 'AMD EPYC, family 25 model 17, AVX-512'
    info.write_text('model name\t: Intel(R) Xeon(R)\ncpu family\t: 6\nmodel\t\t: 85\nflags\t\t: avx2\n')
    assert common.cpu_text(str(info)) == 'Intel(R) Xeon(R), family 6 model 85, no AVX-512'
    assert common.cpu_text(str(tmp_path / 'missing'))            # platform's name instead
    bench.run('cpu', only=['nms'], repeats=1, quick=True)
    assert f'tinyrcnn bench on cpu ({common.cpu_text()});' in capsys.readouterr().out


def test_timeit_pair_runs_the_two_sides_in_turns():
    from tinyrcnn.bench import common
    order = []
    t_a, t_b = common.timeit_pair(lambda: order.append('a'), lambda: order.append('b'), repeats=4)
    assert order == ['a', 'b'] + ['a', 'b', 'b', 'a', 'a', 'b', 'b', 'a']    # warm-up, then turns
    assert t_a > 0 and t_b > 0


def test_the_vgg16_trunk_row_on_a_small_image():
    pytest.importorskip('torch')                             # an optional reference
    (label, ours, ref), = bench.bench_vgg16_trunk('cpu', size=(32, 32), repeats=1)
    assert label == 'VGG16 trunk fwd+bwd 1x3x32x32 (cpu)' and ours > 0 and ref > 0


# ---------------------------------------------------------------------------------------------
# truncated SVD rows (bench/svd.py)
# ---------------------------------------------------------------------------------------------

def test_svd_rows_report_the_top_t_error_next_to_the_exact_one():
    from tinyrcnn.bench import svd
    rows = svd.bench_truncated_svd((30, 70), 5, full=True)
    assert [r[0].split(', error')[0] for r in rows] == ['top-5 SVD of a 30x70 decaying float32 matrix',
                                                         'top-5 SVD of a 30x70 gaussian float32 matrix']
    assert rows[0][2] > 0 and rows[1][2] is None             # the full SVD is timed once
    for label, seconds, _ in rows:
        ours, exact, diff = (float(v) for v in re.findall(
            r'error ([\d.]+) \(exact ([\d.]+), difference ([\d.e+-]+)\)', label)[0])
        assert seconds > 0 and 0 < exact < 1 and abs(ours - exact) <= 1e-6 and diff <= 1e-6
    W = svd.fc_like((30, 70), 'gaussian')
    U, S, Vt = np.linalg.svd(W.astype(np.float64), full_matrices=False)
    assert abs(svd.relative_error(W, U[:, :5], S[:5], Vt[:5]) - svd.exact_error(W, 5)) < 1e-12


# ---------------------------------------------------------------------------------------------
# the training-step row (bench/train.py, bench/torch_fast_rcnn.py)
# ---------------------------------------------------------------------------------------------

def test_child_process_returns_the_result_and_its_peak_memory():
    from tinyrcnn.bench import common
    value, peak = common.in_child(np.add, 2, 3)
    assert value == 5 and 1e6 < peak < 1e10


def test_train_row_at_a_tiny_size_checks_tinyrcnn_against_pytorch():
    pytest.importorskip('torch')
    from tinyrcnn.bench import train
    (label, ours, ref), = train.bench_train('demo', repeats=1, size=(48, 64), rois=6)
    assert label.startswith('Fast R-CNN train step, demo: vgg-tiny, N=2, R=6, 48x64; peak memory')
    worst = float(re.search(r'same step to ([\d.e+-]+) in float64;', label).group(1))
    assert worst <= train.TOLERANCE and 'torch RoI pool:' in label
    assert ours > 0 and ref > 0


def test_train_step_is_the_same_as_pytorch_in_float64():
    """With conv1 frozen, another class count and size: the two steps agree to rounding."""
    torch = pytest.importorskip('torch')
    from tinyrcnn.bench import train
    setting = dict(trunk='vgg-tiny', num_classes=4, freeze_stages=2)
    model = train.make_model(**setting)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert 'features.0.weight' not in trainable and 'cls_score.weight' in trainable
    worst, _ = train.check_in_float64(torch, model, (64, 80), rois=12)
    assert worst < train.TOLERANCE and model.cls_score.weight.dtype == np.float64


def test_train_check_finds_a_wrong_weight():
    torch = pytest.importorskip('torch')
    from tinyrcnn.bench import train
    model = train.make_model('vgg-tiny', 3, freeze_stages=1)
    net, _ = train.float64_pair(torch, model)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert 'features.0.weight' not in trainable and 'features.3.weight' in trainable   # stage 1 frozen
    batch = train.float64_batch((32, 48), 3, rois=6)
    with torch.no_grad():
        net.bbox_pred.bias[5] += 1e-6
    with pytest.raises(RuntimeError, match='differ in bbox_pred'):
        train.check_same_step(torch, model, net, batch)


def test_train_row_without_pytorch_times_tinyrcnn_alone(monkeypatch):
    from tinyrcnn.bench import train
    monkeypatch.setattr(train, 'torch_or_none', lambda device='cpu': None)
    (label, ours, ref), = train.bench_train('demo', repeats=1, size=(32, 48), rois=4)
    assert label.endswith('no PyTorch installed: tinyrcnn alone') and ours > 0 and ref is None


@gpu
def test_train_step_on_the_gpu_is_the_same_as_pytorch_in_float64():
    """tinyrcnn's step on the device (images and targets uploaded, RoIs and labels from the
    host) against PyTorch's on the CPU: the plumbing of the GPU row's check."""
    torch = pytest.importorskip('torch')
    from tinyrcnn.bench import train
    setting = dict(trunk='vgg-tiny', num_classes=3, freeze_stages=1)
    worst, _ = train.check_in_float64(torch, train.make_model(**setting), (48, 64), 8, 'cuda', 'cpu')
    assert worst < train.TOLERANCE


@gpu
def test_train_row_on_the_gpu_at_a_tiny_size():
    from tinyrcnn.bench import train
    (label, ours, ref), = train.bench_train('demo', repeats=1, size=(32, 48), rois=4, device='cuda')
    assert label.startswith('Fast R-CNN train step, demo: vgg-tiny, N=2, R=4, 32x48 (cuda); GPU ')
    assert ours > 0 and (ref is None) == ('no PyTorch with CUDA' in label)


def _check_detect_rows(rows, device):
    assert [label.split(' detect per image')[0] for label, _, _ in rows] == ['Fast R-CNN', 'Faster R-CNN']
    assert '2000 proposals, 48x64 at 48' in rows[0][0] and 'RPN proposals' in rows[1][0]
    assert all(f'({device})' in label and t > 0 and ref is None for label, t, ref in rows)


def test_detect_rows_at_a_tiny_size():
    _check_detect_rows(bench.bench_detect('cpu', 'vgg-tiny', (48, 64), 48, repeats=1), 'cpu')


@gpu
def test_detect_rows_on_the_gpu_at_a_tiny_size():
    rows = bench.bench_detect('cuda', 'vgg-tiny', (48, 64), 48, repeats=1)
    _check_detect_rows(rows, 'cuda')
    assert all('MB' in label.split('GPU pool')[1] for label, _, _ in rows)


def test_torch_roi_pool_from_torch_ops_equals_tinyrcnn_roi_pool():
    """Forward values and input gradients, for RoIs inside the map, overhanging it (x2, y2 round
    past the edge), of one cell, and starting on the last column."""
    torch = pytest.importorskip('torch')
    from tinyrcnn.bench import torch_fast_rcnn
    from tinyrcnn.ops.roi_pool import roi_pool
    x = distinct((2, 3, 5, 6), seed=1, dtype=np.float32)
    rois = np.array([[0, 0, 0, 95, 79], [1, 8, 8, 40, 30], [0, 30, 20, 100, 88],
                     [1, 17, 17, 17, 17], [0, 88, 0, 95, 79], [1, 3, 60, 50, 70]], np.float32)
    gy = distinct((6, 3, 2, 3), seed=2, dtype=np.float32)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch_fast_rcnn.roi_pool(torch, xt, rois, (2, 3), 1 / 16)
    yt.backward(torch.from_numpy(gy))
    ours_x = Tensor(x, requires_grad=True)
    ours = roi_pool(ours_x, rois, (2, 3), 1 / 16)
    ours.backward(gy)
    np.testing.assert_array_equal(yt.detach().numpy(), ours.numpy())
    # the same argmax cells get gradient; where several bins share one, in another order
    np.testing.assert_array_equal(xt.grad.numpy() != 0, ours_x.grad != 0)
    np.testing.assert_allclose(xt.grad.numpy(), ours_x.grad, rtol=1e-6)


@pytest.mark.parametrize('dtype, length', [(np.float32, 57), (np.float64, 29)])
def test_torch_roi_pool_follows_caffe_bins_where_float_rounding_moves_an_edge(dtype, length):
    """length / 7 * 7 rounds above `length` in this float type, so Caffe's last bin reaches one
    row past the RoI (into the map); exact integer bins (adaptive pooling) would not."""
    torch = pytest.importorskip('torch')
    from tinyrcnn.bench import torch_fast_rcnn
    from tinyrcnn.ops.roi_pool import roi_pool
    start, end = torch_fast_rcnn.caffe_bins(np.array([length]), 7, dtype)
    assert end[0, -1] == length + 1 and start[0, 0] == 0
    x = distinct((1, 2, length + 8, length + 8), seed=3, dtype=dtype)
    x[0, :, length + 2] = 1e6                        # the row past the RoI wins every max there
    rois = np.array([[0, 2, 2, length + 1, length + 1], [0, 0, 3, 20, length + 2],
                     [0, 5, 5, 30, 20]], dtype)
    ours = roi_pool(Tensor(x), rois, (7, 7), 1.0).numpy()
    ref = torch_fast_rcnn.roi_pool(torch, torch.from_numpy(x), rois, (7, 7), 1.0).numpy()
    np.testing.assert_array_equal(ref, ours)
    assert (ref[:2, :, -1] == 1e6).all() and (ref[2] < 1e6).all()


# ---------------------------------------------------------------------------------------------
# the selective-search row (bench/proposals.py)
# ---------------------------------------------------------------------------------------------

def test_recall_counts_ground_truth_boxes_that_some_proposal_overlaps_enough():
    from tinyrcnn.bench import proposals
    gt = np.array([[0, 0, 9, 9], [20, 20, 29, 29], [50, 50, 59, 59]], np.float32)
    found = np.array([[0, 0, 9, 9],           # the first exactly
                      [20, 20, 29, 33],       # the second: 100 / 140 = 0.714
                      [50, 50, 59, 69]],      # the third: 100 / 200 = 0.5
                     np.float32)
    best = proposals.best_overlaps(found, gt)
    np.testing.assert_allclose(best, [1, 100 / 140, 0.5])
    assert proposals.recall(best) == [1.0, 2 / 3]
    assert proposals.recall(proposals.best_overlaps(np.zeros((0, 4)), gt)) == [0.0, 0.0]


def test_shipped_labels_load_with_their_photos():
    from tinyrcnn.bench import proposals
    photos = proposals.labelled_photos()
    assert len(photos) == 6 and sum(len(b) for _, _, b in photos) == 28
    for name, image, boxes in photos:
        H, W = image.shape[:2]
        assert image.dtype == np.uint8 and image.shape[2] == 3
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= W - 1).all() and (boxes[:, 3] <= H - 1).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all(), name


def _small_photo():
    image = np.full((60, 80, 3), 120, np.uint8)
    image[10:30, 15:45] = (200, 40, 40)
    image[35:55, 50:75] = (40, 40, 200)
    return [('two rectangles', image, np.array([[15, 10, 44, 29], [50, 35, 74, 54]], np.float32))]


def test_selective_search_rows_on_a_small_image(monkeypatch):
    from tinyrcnn.bench import proposals
    rows = proposals.bench_selective_search(repeats=1, photos=_small_photo())
    assert [label.split(', ')[1] for label, _, _ in rows] == ['k = 50', "k = 150"]
    for label, ours, ref in rows:
        assert ours > 0 and 'tinyrcnn recall 1.00/1.00' in label
        if proposals._cv2() is not None:
            assert ref > 0 and re.search(r'OpenCV recall [\d.]+/[\d.]+ with \d+ boxes', label)
    monkeypatch.setattr(proposals, '_cv2', lambda: None)
    for label, ours, ref in proposals.bench_selective_search(repeats=1, photos=_small_photo()):
        assert ref is None and 'no OpenCV' in label and 'tinyrcnn recall 1.00/1.00' in label
