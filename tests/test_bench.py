"""`python -m tinyrcnn bench` (tinyrcnn/bench.py): the rows it prints, on small workloads."""
import pytest

from tinyrcnn import bench


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
