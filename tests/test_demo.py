"""The demo at toy sizes: `run_seeds` runs one demo per seed, summarises the mAPs, and reuses a
finished seed instead of training it again."""
import json

import numpy as np

from tinyrcnn import demo

TINY = dict(num_train=6, num_test=3, iterations=2, device='cpu',
            overrides=dict(pretrain_iterations=2, checkpoint_every=2, threads=1))


def test_run_seeds_summarises_and_reuses_finished_seeds(tmp_path, monkeypatch):
    lines = []
    summary = demo.run_seeds(str(tmp_path), seeds=(0, 1), model='faster', log=lines.append, **TINY)
    assert [r['seed'] for r in summary['rows']] == [0, 1]
    maps = [r['map'] for r in summary['rows']]
    assert all(0.0 <= m <= 1.0 for m in maps)
    assert np.isclose(summary['mean'], np.mean(maps))
    assert np.isclose(summary['std'], np.std(maps, ddof=1))
    assert summary['rows'][0]['weights_sha256'] != summary['rows'][1]['weights_sha256']
    assert json.loads((tmp_path / 'seeds.json').read_text()) == summary
    assert lines[-1].startswith('| seed | mAP@0.5 | seconds |')
    assert 'mean +- std (2 seeds)' in lines[-1]

    # a second run with the same arguments trains nothing: every seed is read back
    lines.clear()
    again = demo.run_seeds(str(tmp_path), seeds=(0, 1), model='faster', log=lines.append, **TINY)
    assert again == summary
    assert [line for line in lines if line.startswith('seed ')] == [
        f'seed 0: reusing {tmp_path}/seed_0/result.json', f'seed 1: reusing {tmp_path}/seed_1/result.json']

    # other arguments: seed 0 is trained again (its result.json was made with other settings)
    lines.clear()
    demo.run_seeds(str(tmp_path), seeds=(0,), model='faster', log=lines.append,
                   **dict(TINY, iterations=3))
    assert not any('reusing' in line for line in lines)
    assert json.loads((tmp_path / 'seed_0' / 'result.json').read_text())['arguments']['iterations'] == 3

    # the same arguments but another recipe (a demo setting changed in the code): trained again
    lines.clear()
    monkeypatch.setitem(demo.DEMOS['faster'][1], 'lr', 0.002)
    demo.run_seeds(str(tmp_path), seeds=(1,), model='faster', log=lines.append, **TINY)
    assert not any('reusing' in line for line in lines)
    assert json.loads((tmp_path / 'seed_1' / 'result.json').read_text())['arguments']['recipe'][
        'settings']['lr'] == 0.002
