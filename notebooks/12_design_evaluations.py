# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 12. Design evaluations: multi-task training, frozen convs, more data, SVMs, pyramids (Fast R-CNN, Sec. 4.5, 5.1-5.4)
#
# Section 5 of the Fast R-CNN paper asks five questions about its own design and answers each
# with a table of VOC07 mAP: does the multi-task loss help (Sec. 5.1, Table 6)? Must the conv
# layers be fine-tuned (Sec. 4.5, Table 5)? Does more training data help (Sec. 5.3)? Do post-hoc
# SVMs beat the softmax (Sec. 5.4, Table 8)? Is an image pyramid worth its cost at test time
# (Sec. 5.2, Table 7)? This chapter asks the same five questions of small runs on the shapes
# data set and puts the paper's numbers beside them.
#
# Training a detector takes minutes here even when small, so the runs are **not made when this
# notebook runs** (nor in CI): they were made once by
#
#     python notebooks/runs/design_evaluations.py
#
# which writes `notebooks/runs/design_evaluations.json`, read below. Its docstring says exactly
# what each run is; the first cell prints when, where and how long it took. Rerunning the command
# regenerates the file (every draw is seeded; another machine's floating point can move the
# numbers a little).

# %%
import importlib.util
import inspect
import json
import pathlib

import matplotlib.pyplot as plt
import numpy as np

import tinyrcnn as tr
from tinyrcnn.fast_rcnn.detect import PYRAMID_TARGET_AREA, pyramid_levels
from tinyrcnn.fast_rcnn.loss import multitask_loss
from tinyrcnn.train import TrainConfig

ROOT = pathlib.Path(tr.__file__).resolve().parents[1]
RUNS = ROOT / 'notebooks' / 'runs'
path = RUNS / 'design_evaluations.json'
if not path.exists():
    raise FileNotFoundError(f'{path} is missing: make it with `python notebooks/runs/design_evaluations.py`')
runs = json.loads(path.read_text())
# the runner script, for its functions (imported, not run: its main() is not called)
spec = importlib.util.spec_from_file_location('design_evaluations', RUNS / 'design_evaluations.py')
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)

print(f"made by `{runs['command']}` on {runs['created']} (commit {runs['git_commit']})")
print(f"{runs['cpu']}, {runs['cpu_count']} logical CPUs (shared with other jobs), Python {runs['python']}, "
      f"NumPy {runs['numpy']}: {runs['wall_seconds'] / 60:.1f} minutes in all")
print(f"{runs['seeds']} seeds per training variant")

# %% [markdown]
# ## What was run
#
# One synthetic data set (the demo's shapes, `data.make_shapes_voc`, drawn smaller), selective search in its
# cheapest mode, and one vgg-tiny trunk pretrained on crops of *other* rendered images
# (`train.pretrain.pretrain_vgg_tiny`, the stand-in for ImageNet of Sec. 2.2), shared by every
# run. Each run then fine-tunes a detector with the CPU demo's Adam settings, but far shorter
# and at a smaller scale than the demo (and than the paper's SGD, Sec. 2.3). A seed changes the
# initial weights of the two new output layers, the order of the images, the sampled RoIs and
# the flips.

# %%
s, setup = runs['settings'], runs['setup']
d = s['data']
print(f"data: {d['num_train']} training + {d['num_test']} test images, sides "
      f"{d['image_size'][0]}-{d['image_size'][1]} px; selective search '{s['proposals']['mode']}': "
      f"median {setup['median_test_proposals']:.0f} proposals per test image, recall@0.5 "
      f"{setup['test_recall_at_05']:.2f}")
p = s['pretrain']
print(f"trunk: vgg-tiny pretrained {p['iterations']} iterations on crops of {p['num_images']} other "
      f"images ({setup['pretrain_seconds']:.0f} s)")
paper, ours = TrainConfig(), s['train']
print(f'\n{"setting":<16} {"paper (TrainConfig)":<22} these runs')
for key in ('optimizer', 'lr', 'weight_decay', 'dropout', 'iterations', 'step_size', 'scales',
            'max_size', 'freeze_stages', 'ims_per_batch', 'rois_per_batch'):
    before = "0.5 (VGG16's)" if key == 'dropout' else getattr(paper, key)
    print(f'{key:<16} {str(before):<22} {ours[key]}')
times = {}
for r in runs['runs']:
    if 'train_seconds' in r:
        times.setdefault(r['variant'], []).append(r['train_seconds'])
print('\ntraining time per run (s): ' + ', '.join(f'{k} {np.mean(v):.0f}' for k, v in times.items()))
last = [r['final_loss'] for r in runs['runs'] if r['variant'] == 'multitask']
print(f"multi-task runs end at loss {np.mean([f['total'] for f in last]):.2f} (classification "
      f"{np.mean([f['cls'] for f in last]):.2f}, box {np.mean([f['loc'] for f in last]):.2f}; "
      f"mean of the last 20 iterations), after {ours['iterations']} iterations: "
      f"{ours['iterations'] / paper.iterations:.1%} of the paper's {paper.iterations}")

# %% [markdown]
# Every number below is VOC07 11-point mAP on the same 100 test images, given as the mean over
# the seeds $\pm$ their standard deviation, with the smallest and largest run. With two or three
# runs a standard deviation is itself very uncertain: read the min-max range as the honest
# statement, and a difference smaller than it as no difference. The paper's numbers are its
# VOC07 test mAP in percent, for VGG16 ("L") unless said otherwise.

# %%
maps, summ = runs['maps'], runs['summary']


def cell(key):
    """'mean +- std (min-max, n runs)' of a stored result, in percent, like the paper's tables."""
    v = summ[key]
    return (f"{100 * v['mean']:5.1f} +- {100 * v['std']:4.1f} "
            f"({100 * v['min']:.1f}-{100 * v['max']:.1f}, n={v['n']})")


def table(rows, paper_header):
    print(f'{"":<42} {paper_header:<22} these runs: mAP % mean +- std (min-max, n)')
    for label, paper_value, key in rows:
        print(f'{label:<42} {paper_value:<22} {cell(key) if key else "-"}')


def paired(a, b):
    """b - a per seed (the same seed: the same initial output layers, images and RoIs)."""
    n = min(len(maps[a]), len(maps[b]))
    return 100 * (np.array(maps[b][:n]) - np.array(maps[a][:n]))


# %% [markdown]
# ## 1. Does multi-task training help? (Sec. 5.1, Table 6)
#
# The loss is $L = L_\mathrm{cls} + \lambda [u \ge 1] L_\mathrm{loc}$ (chapter 4). The paper
# trains with $\lambda = 0$ (classification only, so no regressor: tested without box
# regression), with $\lambda = 1$ tested without box regression (to compare classification
# alone, apples to apples), stage-wise (the $\lambda = 0$ network, then a new `bbox_pred`
# trained with $L_\mathrm{loc}$ while every other weight stays frozen), and with $\lambda = 1$
# tested with box regression. In `tinyrcnn` $\lambda$ is `TrainConfig.loss_lambda`:

# %%
print(inspect.getsource(multitask_loss))

# %%
table([('lambda = 0, no box reg at test', '62.6 (S 52.2, M 54.7)', 'lambda0/no_bbox_reg'),
       ('multi-task, no box reg at test', '63.4 (S 53.3, M 55.5)', 'multitask/no_bbox_reg'),
       ('stage-wise, box reg at test', '64.0 (S 54.6, M 56.6)', 'stagewise/bbox_reg'),
       ('multi-task, box reg at test', '66.9 (S 57.1, M 59.2)', 'multitask/bbox_reg')],
      'paper L (S, M)')
print()
for label, a, b, claim in (
        ('multi-task - lambda 0 (no box reg)', 'lambda0/no_bbox_reg', 'multitask/no_bbox_reg', '+0.8 to +1.1'),
        ('stage-wise - lambda 0', 'lambda0/no_bbox_reg', 'stagewise/bbox_reg', '+1.4 to +2.4'),
        ('multi-task - stage-wise (box reg)', 'stagewise/bbox_reg', 'multitask/bbox_reg', '+2.5 to +2.9')):
    print(f'{label:<36} per seed {np.round(paired(a, b), 1)}  (paper: {claim})')

# %% [markdown]
# The paper's differences above are read off its Table 6 (S, M and L). Paired per seed, the
# differences cancel what the seeds share (the initial output layers, the same images in the
# same order), so they are tighter than the spread of each row.

# %% [markdown]
# ## 2. Which layers to fine-tune? (Sec. 4.5, Table 5)
#
# SPPnet could only train its fully connected layers. The paper emulates that by freezing all
# thirteen conv layers of VGG16 and finds that "training through the RoI pooling layer is
# important for very deep nets" (Table 5). Here `freeze_stages=5` freezes every conv layer of
# vgg-tiny; the fine-tuned run trains all of them (`freeze_stages=0`, the CPU demo's choice:
# the paper starts at conv3_1 for VGG16 for memory and time, and found conv1 generic for the
# smaller nets).

# %%
params = {r['variant']: r['trainable_parameters'] for r in runs['runs'] if 'trainable_parameters' in r}
table([('conv frozen (fc6, fc7, outputs learn)', '61.4 (>= fc6)', 'conv_frozen/bbox_reg'),
       ('fine-tuned (here: every conv layer)', '66.9 (>= conv3_1)', 'multitask/bbox_reg'),
       ('fine-tuned from conv2_1', '67.2 (>= conv2_1)', None),
       ('SPPnet L, five scales, >= fc6', '63.1', None)], 'paper (VGG16)')
print(f"\ntrainable parameters: frozen {params['conv_frozen']:,}, fine-tuned {params['multitask']:,}")
print(f"fine-tuned - frozen, per seed: {np.round(paired('conv_frozen/bbox_reg', 'multitask/bbox_reg'), 1)} "
      f'(paper: +5.5)')

# %% [markdown]
# ## 3. Do we need more training data? (Sec. 5.3)
#
# The paper adds VOC12 trainval to VOC07 trainval, "roughly tripling" the images to 16.5k, and
# VOC07 test mAP goes from 66.9 to 70.0 (with 60k iterations instead of 40k); the same for VOC10
# (66.1 to 68.8) and VOC12 (65.7 to 68.4). Here the question is turned around and kept cheap:
# the same number of iterations on half of the training images (each seen twice as often) vs
# all of them.

# %%
n_half = s['half_data_images']
table([(f'half: {n_half} images', '-', 'half_data/bbox_reg'),
       (f'all: {2 * n_half} images', '-', 'multitask/bbox_reg'),
       ('VOC07 5k -> 07+12 16.5k images', '66.9 -> 70.0', None)], 'paper')
print(f"\nall - half, per seed: {np.round(paired('half_data/bbox_reg', 'multitask/bbox_reg'), 1)}")

# %% [markdown]
# ## 4. Do SVMs outperform softmax? (Sec. 5.4, Table 8)
#
# R-CNN and SPPnet replaced the fine-tuned softmax by one-vs-rest linear SVMs trained post hoc
# on the network's features, with hard negative mining. The paper does the same with Fast
# R-CNN ("the same training algorithm and hyper-parameters as in R-CNN") and finds the softmax
# slightly better, by 0.1 to 0.8 points. R-CNN's SVM labels (its Sec. 2.3) differ from
# fine-tuning's: positives are only the ground-truth boxes, negatives the proposals with IoU
# below 0.3 with every box of the class, the rest ignored.
#
# The runner's version is small but keeps that recipe: per class, a linear SVM on the fc7
# features of the multi-task network (the same network whose softmax it is compared with),
# squared hinge loss with an L2 penalty (C = 1, features scaled to unit mean norm), fitted by
# L-BFGS; hard negatives are mined in one pass over the training images, in chunks of 50. How
# it differs from the paper: R-CNN's solver, its regularisation and its mining thresholds were
# not reproduced (its features do not fit in memory; these do, so mining here mostly keeps the
# problem small), and C was not tuned. At test time each SVM scores every proposal and the
# boxes are the network's class-specific regressions, as for the softmax.

# %%
print(inspect.getsource(runner.train_svms))

# %%
table([('FRCN, SVM', '66.8 (S 56.3, M 58.7)', 'svm/bbox_reg'),
       ('FRCN, softmax', '66.9 (S 57.1, M 59.2)', 'multitask/bbox_reg'),
       ('R-CNN, SVM', '66.0 (S 58.5, M 60.2)', None)], 'paper L (S, M)')
svm = [r for r in runs['runs'] if r['variant'] == 'svm'][0]
print(f"\nper class: {svm['positives']} positives, {svm['negatives_seen']} negatives seen, "
      f"{svm['cached_negatives']} hard ones kept (seed 0)")
print(f"softmax - SVM, per seed: {np.round(paired('svm/bbox_reg', 'multitask/bbox_reg'), 1)} "
      f'(paper: +0.1 to +0.8)')
print(f"the same without box regression: softmax {cell('multitask/no_bbox_reg')}, "
      f"SVM {cell('svm/no_bbox_reg')}")

# %% [markdown]
# ## 5. Scale invariance: brute force or finesse? (Sec. 5.2, Table 7)
#
# The paper trains *and* tests models S and M on five scales, $s \in \{480, 576, 688, 864,
# 1200\}$, and gains 1.3 and 1.5 points at about four times the test time (Table 7: S 57.1 vs
# 58.4, M 59.2 vs 60.7; SPPnet ZF 58.0 vs 59.2); VGG16 stays single-scale (memory). Here only the
# test side is varied, on the trained multi-task model: the same ratios around the training
# scale 160 ($\{128, 154, 184, 230, 320\}$), each RoI pooled at one level by SPPnet's rule,
# which `tinyrcnn` follows: the level where the RoI is closest to 224 x 224 pixels, the input
# size of an ImageNet network.

# %%
print(inspect.getsource(pyramid_levels))

# %% [markdown]
# That rule assumes a network that saw its objects at about 224 pixels. This one saw them at a
# median of about $\sqrt{\text{area}}$ printed below, so the rule sends nearly every RoI to the
# top level, twice the training scale. A live check on boxes of the sizes of these objects
# (a 150 x 200 image, so the factors of the five levels are s / 150):

# %%
factors = np.array(s['pyramid']) / 150.0
sides = np.array([24, 40, 60, 80, 100])                     # square objects, pixels in the image
boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides - 1, sides - 1], 1).astype(np.float32)
trained_area = s['trained_object_area']
print(f'objects during training: median area {trained_area:.0f} px^2, '
      f'about {np.sqrt(trained_area):.0f} px square')
print(f'{"object side (px)":<18} {"224x224 rule":<14} rule aimed at the training size')
for side, a, b in zip(sides, pyramid_levels(boxes, factors),
                      runner.levels_for(boxes, factors, trained_area)):
    print(f'{side:<18} s = {s["pyramid"][a]:<10} s = {s["pyramid"][b]}')
assert (runner.levels_for(boxes, factors, PYRAMID_TARGET_AREA) == pyramid_levels(boxes, factors)).all()

# %% [markdown]
# The runner therefore tests two pyramids: the paper's rule, and the same rule aimed at the
# training object size. Only the first seed's model is tested on them (a pyramid costs several
# times the convolutions of one scale); the spread is a paired bootstrap over the 100 test
# images (the same resampled images for both), which covers the test set's noise, not the
# training's.

# %%
table([('one scale (s = 160, as trained)', '66.9 (S 57.1, M 59.2)', 'multitask/bbox_reg'),
       ('pyramid, 224 x 224 rule', '- (S 58.4, M 60.7)', 'pyramid_224/bbox_reg'),
       ('pyramid, rule aimed at the training size', '-', 'pyramid_trained_area/bbox_reg')],
      'paper L (S, M)')
for r in runs['runs']:
    if r['variant'].startswith('pyramid'):
        b = r['bootstrap_vs_single']
        single = maps['multitask/bbox_reg'][r['seed']]
        pyr = maps[r['variant'] + '/bbox_reg'][r['seed']]
        print(f"\n{r['variant']} (seed {r['seed']}): {100 * pyr:.1f} vs one scale {100 * single:.1f}; "
              f"difference {100 * (pyr - single):+.1f}, 90% bootstrap interval "
              f"[{100 * b['p05']:+.1f}, {100 * b['p95']:+.1f}]; {r['test_seconds']:.0f} s for the test set")
        print('  share of RoIs per level: '
              + ', '.join(f's={sc}: {v:.0%}' for sc, v in zip(s['pyramid'], r['level_share'])))

# %% [markdown]
# ## All five, side by side
#
# Bars are the means over the seeds, the black lines the min-max range, the dots the single
# runs. The pyramid panel has one model: its error bar is the 90% bootstrap interval.

# %%
panels = [
    ('Sec. 5.1: multi-task?', [('$\\lambda$=0\nno reg', 'lambda0/no_bbox_reg'),
                               ('multi-task\nno reg', 'multitask/no_bbox_reg'),
                               ('stage-wise\nreg', 'stagewise/bbox_reg'),
                               ('multi-task\nreg', 'multitask/bbox_reg')]),
    ('Sec. 4.5: fine-tune convs?', [('conv\nfrozen', 'conv_frozen/bbox_reg'),
                                    ('fine-\ntuned', 'multitask/bbox_reg')]),
    ('Sec. 5.3: more data?', [('half', 'half_data/bbox_reg'), ('all', 'multitask/bbox_reg')]),
    ('Sec. 5.4: SVM or softmax?', [('SVM', 'svm/bbox_reg'), ('softmax', 'multitask/bbox_reg')]),
]
fig, axes = plt.subplots(1, 5, figsize=(15, 3.8), gridspec_kw=dict(width_ratios=[4, 2, 2, 2, 3]))
for ax, (title, bars) in zip(axes, panels):
    for x, (label, key) in enumerate(bars):
        v = 100 * np.array(maps[key])
        ax.bar(x, v.mean(), color='C0' if 'multitask/bbox' not in key else 'C1', alpha=0.7)
        ax.errorbar(x, v.mean(), yerr=[[v.mean() - v.min()], [v.max() - v.mean()]], color='k', capsize=4)
        ax.plot(np.full(len(v), x) + np.linspace(-0.12, 0.12, len(v)), v, 'k.', ms=5)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(axis='y', alpha=0.3)
ax = axes[-1]
pyr = [r for r in runs['runs'] if r['variant'].startswith('pyramid') and r['seed'] == 0]
single = 100 * maps['multitask/bbox_reg'][0]
ax.bar(0, single, color='C1', alpha=0.7)
for x, r in enumerate(pyr, start=1):
    b = r['bootstrap_vs_single']
    value = 100 * maps[r['variant'] + '/bbox_reg'][0]
    ax.bar(x, value, color='C0', alpha=0.7)
    lo, hi = single + 100 * b['p05'], single + 100 * b['p95']    # the interval, as mAP
    ax.errorbar(x, value, yerr=[[max(value - lo, 0)], [max(hi - value, 0)]], color='k', capsize=4)
ax.set_xticks(range(1 + len(pyr)), ['one scale'] + [r['variant'].replace('pyramid_', 'pyramid\n') for r in pyr],
              fontsize=8)
ax.set_title('Sec. 5.2: pyramid at test? (seed 0)', fontsize=9)
ax.grid(axis='y', alpha=0.3)
axes[0].set_ylabel('VOC07 mAP (%), 100 test images')
fig.suptitle('Fast R-CNN design evaluations, small runs (orange: the multi-task, fine-tuned, all-data, '
             'softmax, one-scale reference)', fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Where the small runs agree with the paper, and where not
#
# The verdicts below are computed from the stored runs: "agrees" when every seed's paired
# difference has the paper's sign, "within noise" when the seeds disagree in sign, "opposite"
# when every seed goes the other way.

# %%
claims = [('Sec. 5.1: multi-task > lambda 0 (both without box reg)', 'lambda0/no_bbox_reg', 'multitask/no_bbox_reg'),
          ('Sec. 5.1: stage-wise > lambda 0', 'lambda0/no_bbox_reg', 'stagewise/bbox_reg'),
          ('Sec. 5.1: multi-task > stage-wise (both with box reg)', 'stagewise/bbox_reg', 'multitask/bbox_reg'),
          ('Sec. 4.5: fine-tuned convs > frozen convs', 'conv_frozen/bbox_reg', 'multitask/bbox_reg'),
          ('Sec. 5.3: more images > fewer', 'half_data/bbox_reg', 'multitask/bbox_reg'),
          ('Sec. 5.4: softmax >= SVM', 'svm/bbox_reg', 'multitask/bbox_reg'),
          ('Sec. 5.2: pyramid (224 rule) > one scale', 'multitask/bbox_reg', 'pyramid_224/bbox_reg'),
          ('Sec. 5.2: pyramid (training-size rule) > one scale', 'multitask/bbox_reg', 'pyramid_trained_area/bbox_reg')]
verdicts = {}
for claim, a, b in claims:
    diff = paired(a, b)
    verdict = 'agrees' if (diff > 0).all() else 'opposite' if (diff < 0).all() else 'within noise'
    if len(diff) == 1:      # one model: the bootstrap interval decides
        boot = [r['bootstrap_vs_single'] for r in runs['runs'] if b.startswith(r['variant'] + '/') and r['seed'] == 0][0]
        verdict = 'agrees' if boot['p05'] > 0 else 'opposite' if boot['p95'] < 0 else 'within noise'
    verdicts[claim] = verdict
    print(f'{claim:<52} {verdict:<13} difference per run {np.round(diff, 1)}')

# %% [markdown]
# What these runs can and cannot say: each is a short run of Adam (the iterations are printed
# at the top) from a trunk pretrained for a few minutes, a tiny fraction of the paper's 40k SGD
# iterations from ImageNet; six classes of flat shapes, a few hundred training images, 100 test
# images, a few seeds. They measure how
# each design choice behaves *early in a short run of a small network*, which is not the
# regime of Sec. 5. Read against the verdicts printed above:
#
# * **The pyramid with SPPnet's rule loses** (Sec. 5.2), for a mechanical reason shown above:
#   the 224 x 224 rule sends nearly every RoI to the top level, twice the scale the detector was
#   trained at, so the "pyramid" tests objects at sizes it never saw. Aimed at the object size
#   of training, the same pyramid lands close to one scale. The paper's +1.3 and +1.5 points
#   came from models also *trained* on five scales; its main finding, that one scale is nearly
#   as good at a fraction of the cost, is what the re-aimed pyramid shows here too.
# * **Freezing the conv layers wins here** (Sec. 4.5), the opposite of Table 5. In so few Adam steps
#   the fine-tuned runs first move their conv layers away from the pretrained features (Adam's
#   per-parameter steps make lr 0.001 a large step for every conv weight) while the frozen runs
#   only fit fc6/fc7 and the outputs on fixed features, which converges sooner; and the stand-in
#   pretraining saw crops of the very same kind of shapes, so the conv features have little to
#   adapt, where ImageNet features must adapt to VOC. Table 5 compares converged VGG16 models;
#   these runs are far from converged (the final losses above).
# * **The post-hoc SVMs beat the softmax** (Sec. 5.4), the opposite of Table 8. The SVMs are an
#   extra training stage fitted to convergence on fixed fc7 features; the softmax has had a few
#   hundred steps at most. The paper's point, that "one-shot" fine-tuning makes the SVM stage unnecessary,
#   presumes the fine-tuning has run its course.
# * **Box regression adds next to nothing at test time**, after multi-task or stage-wise
#   training alike, so Table 6's differences (+0.8 to +2.9 points) do not show: they are within
#   the seeds' spread. At the end of these runs the box loss is still high (printed above), and these
#   proposals of flat shapes are often already tight (recall at 0.5 printed at the top).
#   Chapter 6 measures what regression gains on the demo model, trained ten times longer.
# * **Half of the images does worse than all of them** (Sec. 5.3), the paper's direction, at the
#   same number of iterations: seeing half of the images twice is not as good as all of them once.
#
# The disagreements are about training length more than about the designs: rerunning with
# `--iterations` several times larger (the cost grows in proportion) is the test of that.

# %% [markdown]
# ## Summary
#
# * `python notebooks/runs/design_evaluations.py` regenerates every number of this chapter (its
#   run time is printed at the top); the notebook only reads its JSON.
# * Sec. 5.1: `TrainConfig.loss_lambda` switches the multi-task loss off; stage-wise training is
#   the $\lambda = 0$ network with everything but `bbox_pred` frozen.
# * Sec. 4.5: `freeze_stages=5` is SPPnet's fc-only fine-tuning; `freeze_stages=2` the paper's
#   VGG16 setting; 0 the CPU demo's.
# * Sec. 5.4: one-vs-rest SVMs on fc7 need a second training stage, labels of their own and
#   hard negative mining; the softmax comes with fine-tuning.
# * Sec. 5.2: SPPnet's level rule is tied to the 224-pixel input of ImageNet networks; on a
#   detector trained at another object size it must be re-aimed, or the pyramid tests at the
#   wrong scale.

# %% [markdown]
# ## Exercises
#
# Each exercise has a code cell: put your answer in `answer` (it starts as `None`) and run the
# cell; it prints "correct", or "not yet" and a hint, by comparing with what tinyrcnn computes.
#
# 1. **What fixing conv1 and conv2 saves (Sec. 4.5).** For VGG16 the paper fine-tunes from conv3_1
#    up and leaves conv1_1 to conv2_2 fixed. What fraction of VGG16's conv parameters (weights and
#    biases) do those four layers hold, and what fraction of the conv layers' multiply-adds on a
#    600 x 1000 input? Answer both to within 0.005. What does that say about where fixing them
#    saves time and memory?
# 2. **SPPnet's level rule (Sec. 5.2).** A 500 x 375 image is tested on the paper's five scales
#    $s \in \{480, 576, 688, 864, 1200\}$ (shorter side; the image is scaled by $s / 375$). At which
#    scale does `pyramid_levels` pool a RoI of 150 x 100 pixels (width x height)? And one of
#    30 x 30?
# 3. **More data, fewer passes (Sec. 5.3).** VOC07 trainval has 5011 images, VOC07+12 trainval
#    16551. With `TrainConfig`'s 2 images per mini-batch, how many times is each image seen on
#    average (ignoring flips) in the paper's 40k iterations on VOC07, and in its 60k on VOC07+12?
#    Answer both to within 0.05. The second model sees each image less than half as often and
#    gains 3.1 points: what does that suggest about the first?

# %%
from tinyrcnn.utils import check_answer as check   # 'correct', or 'not yet' and a hint


# %%
# Exercise 1: answer = (fraction of the conv parameters, fraction of the multiply-adds)
answer = None
from tinyrcnn.ops.conv import conv_output_size

H, W, stage = 600, 1000, 1
conv_params, conv_macs = np.zeros(2), np.zeros(2)    # [conv1-conv2, all conv layers]
for m in tr.models.make_features(tr.models.VGG16_CFG):
    if isinstance(m, tr.nn.Conv2d):
        H, W = conv_output_size(H, 3, 1, 1), conv_output_size(W, 3, 1, 1)
        counted = np.array([stage <= 2, True])
        conv_params += counted * sum(p.data.size for p in m.parameters())
        conv_macs += counted * H * W * m.weight.data.size   # C_out x C_in x 3 x 3 per output pixel
    elif isinstance(m, tr.nn.MaxPool2d):
        H, W, stage = conv_output_size(H, 2, 2, 0), conv_output_size(W, 2, 2, 0), stage + 1
check(answer, [conv_params[0] / conv_params[1], conv_macs[0] / conv_macs[1]], tol=0.005,
      hint='a 3 x 3 conv has C_in x C_out x 9 weights and C_out biases; it does that many '
           'multiply-adds at every pixel of its output, which is 600 x 1000 in stage 1 and '
           'halves in each side after every pool')

# %%
# Exercise 2: answer = (scale s for the 150 x 100 RoI, scale s for the 30 x 30 RoI)
answer = None
paper_scales = np.array([480, 576, 688, 864, 1200])
two_rois = np.array([[0, 0, 149, 99], [0, 0, 29, 29]], np.float32)
check(answer, paper_scales[pyramid_levels(two_rois, paper_scales / 375)],
      'scale the RoI\'s area by (s / 375)^2 and take the s that brings it closest to 224 x 224')

# %%
# Exercise 3: answer = (passes over VOC07 in 40k iterations, passes over VOC07+12 in 60k)
answer = None
per_iteration = TrainConfig().ims_per_batch
check(answer, [TrainConfig().iterations * per_iteration / 5011, 60_000 * per_iteration / 16551], tol=0.05,
      hint='images seen = iterations x images per mini-batch; divide by the size of the set')
