"""How much to trust the demos' mAP: each demo run with three seeds.

    python notebooks/runs/demo_seeds.py [--out notebooks/runs/demo_seeds.json] [--work out/seeds]
                                        [--seeds 3] [--smoke]

runs `python -m tinyrcnn demo --model M --seeds N --out WORK/M` for M = fast and faster (seeds
0 .. N-1; `tinyrcnn.demo.run_seeds`) and writes the JSON that chapter 7 reads: per seed the mAP,
the wall time and the sha256 of the weights, the mean and the sample standard deviation, with
the CPU, the date, the commit and the command. A seed draws the synthetic data set, the
initial weights and the order of the mini-batches, so the spread is that of the whole recipe.
A seed that finished in WORK is reused, so an interrupted run loses only the seed it was on.
About 5 minutes per seed on 2 CPU cores, both demos (the Fast R-CNN demo computes selective
search for each new data set). --smoke: toy sizes, to check the script.
"""
import argparse
import datetime
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tinyrcnn import speed  # noqa: E402
from tinyrcnn.demo import run_seeds  # noqa: E402
from design_evaluations import cpu_model, git_commit  # noqa: E402

SMOKE = dict(num_train=6, num_test=3, iterations=2, device='cpu',
             overrides=dict(pretrain_iterations=2, checkpoint_every=2, threads=1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default=os.path.join(ROOT, 'notebooks', 'runs', 'demo_seeds.json'))
    p.add_argument('--work', default=os.path.join(ROOT, 'out', 'seeds'))
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--smoke', action='store_true')
    args = p.parse_args(argv)
    speed.enable()
    models = {}
    for model in ('fast', 'faster'):
        summary = run_seeds(os.path.join(args.work, model), range(args.seeds), model=model,
                            **(SMOKE if args.smoke else {}))
        models[model] = dict(rows=[{k: r[k] for k in ('seed', 'map', 'seconds', 'weights_sha256')}
                                   for r in summary['rows']],
                             mean=summary['mean'], std=summary['std'])
    result = dict(models=models, smoke=args.smoke, cpu=cpu_model(), git_commit=git_commit(),
                  date=datetime.date.today().isoformat(),
                  command=f'python -m tinyrcnn demo --model MODEL --seeds {args.seeds}')
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=1)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
