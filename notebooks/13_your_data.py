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
# # 13. Your own data: the COCO format, COCO's metrics, a folder of photos
#
# The chapters so far read PASCAL VOC's layout: one XML file per image. Most data sets made
# today come in the other layout, COCO's (Lin et al., 2014): one JSON file with three lists,
# `images` (id, file name, size), `annotations` (image id, category id, a box `[x, y, w, h]`,
# an area, an `iscrowd` flag) and `categories` (id, name). tinyrcnn reads it into the very
# items `VOCDetection` gives, so everything else (proposals, training, testing, detection)
# takes either. Three conversions, one rule each:
#
# * a COCO box `[x, y, w, h]` becomes the 0-based inclusive corners `[x, y, x + w - 1, y + h - 1]`
#   that the whole package uses (its IoU counts widths as x2 - x1 + 1, so w comes back);
# * labels are the categories sorted by id: label k is the k-th (0 stays background);
# * a crowd box (`iscrowd`, one box around many people) is *difficult*: training neither
#   samples it as foreground nor counts a miss, as VOC's difficult objects.
#
# Then the other half of COCO: its metric, AP averaged over IoU thresholds 0.50 to 0.95, which
# rewards boxes that fit tightly, where VOC's AP at IoU 0.5 does not look.

# %%
import inspect
import json
import pathlib
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

import tinyrcnn as tr
import tinyrcnn.speed
from tinyrcnn.batch import coco_results, detect_files
from tinyrcnn.data import COCODetection, VOCDetection, make_shapes_voc, write_coco_json
from tinyrcnn.demo import DATA
from tinyrcnn.eval import evaluate_coco, format_ap_table, format_coco_table
from tinyrcnn.eval.coco import IOU_THRESHOLDS
from tinyrcnn.export import DEMO_MODEL, load_model
from tinyrcnn.fast_rcnn.detect import evaluate
from tinyrcnn.fast_rcnn.minibatch import prepare_roidb, sample_rois
from tinyrcnn.proposals import compute_dataset_proposals
from tinyrcnn.train import FastRCNNTrainer, TrainConfig

tinyrcnn.speed.enable()   # the CPU speed paths on: this chapter detects in a few dozen images
work = pathlib.Path(tempfile.mkdtemp(prefix='tinyrcnn-ch13-'))

# %% [markdown]
# ## A COCO file from the shapes set
#
# `write_coco_json` turns any data set with ground truth into a COCO file. Here: the first 24
# test images of the demo's shapes set (the same files the demo model was tested on), and one
# image with no object at all, which COCO files often hold.

# %%
root = make_shapes_voc(work / 'shapes', num_train=DATA['num_train'], num_test=24, seed=0, only_test=True)
ann = write_coco_json(VOCDetection(root, 'test'), work / 'shapes.json')
data = json.loads(ann.read_text())
rng = np.random.default_rng(0)
blank = np.clip(rng.normal(128, 20, (160, 200, 1)) + np.linspace(0, 60, 200)[None, :, None], 0, 255)
Image.fromarray(np.repeat(blank, 3, axis=2).astype(np.uint8)).save(work / 'shapes' / 'JPEGImages' / 'empty.jpg')
data['images'].append(dict(id=1000, file_name='empty.jpg', width=200, height=160))
ann.write_text(json.dumps(data))
print(json.dumps(data['images'][0]), json.dumps(data['annotations'][0]), json.dumps(data['categories'][0]),
      sep='\n')

coco = COCODetection(work / 'shapes' / 'JPEGImages', ann)
print(coco, '\nlabels 1..K:', coco.class_names, '\nfirst image, as VOCDetection gives it:',
      {k: v for k, v in coco.annotation(0).items()})

# %% [markdown]
# The reader, for one image (the boxes were converted once, when the file was read):

# %%
print(inspect.getsource(COCODetection.annotation))

# %% [markdown]
# ## An image with no object trains as a negative
#
# Fast R-CNN samples background RoIs from IoU [0.1, 0.5) with the ground truth (Sec. 2.3):
# near objects, hard negatives. An image without objects has no such RoI, so the original code
# drops it (`filter_roidb`). tinyrcnn keeps it and calls every one of its RoIs background, which
# is what an empty photo teaches: "nothing here". (Faster R-CNN's anchors need no such rule:
# with no object, every anchor inside the image is a negative.)

# %%
cfg = TrainConfig(trunk='vgg-tiny', freeze_stages=0, scales=(160,), max_size=256, source='tiny',
                  rois_per_batch=64, lr=0.01, iterations=12, step_size=100)
proposals = compute_dataset_proposals(coco, work / 'proposals.npz', mode='fast')
roidb = prepare_roidb(coco, proposals, cfg)
empty = next(e for e in roidb if e['id'] == '1000')
keep, labels = sample_rois(empty, 32, cfg, np.random.default_rng(0))
print(f"empty image: {len(empty['rois'])} proposals, {len(keep)} sampled, labels {set(labels.tolist())} (background)")
trainer = FastRCNNTrainer(cfg, coco, proposals, out_dir=None)
trainer.run(show_progress=False)
print('a few iterations on the COCO file: loss', ' '.join(f'{h[1]:.2f}' for h in trainer.history))

# %% [markdown]
# ## COCO's metric next to VOC's
#
# Both rank detections by score and match each to a ground truth, but COCO (`tinyrcnn/eval/coco.py`,
# checked equal to pycocotools, the reference implementation, to the last bit on 62 test sets):
#
# * averages AP over ten IoU thresholds, 0.50, 0.55, ..., 0.95 (VOC: 0.5 only), and matches
#   at IoU >= t (VOC: > 0.5);
# * interpolates precision at 101 recall levels (VOC07: 11);
# * keeps at most 1, 10 or 100 detections per image and class (AR@1, AR@10, AR@100: recall,
#   averaged over the thresholds);
# * splits objects by area: small below 32², medium to 96², large above.
#
# The shipped demo model (trained by `make demo`, chapter 7) on the COCO file:

# %%
model, info = load_model(DEMO_MODEL)
voc_result, detections, seconds = evaluate(model, coco, proposals, scales=tuple(info['scales']),
                                           max_size=info['max_size'], source=info['source'])
print(format_ap_table(voc_result))
ground_truths = [coco.annotation(i) for i in range(len(coco))]
result = evaluate_coco(detections, ground_truths, coco.class_names)
print(format_coco_table(result))

# %%
print(inspect.getsource(tr.eval.coco.coco_iou))

# %% [markdown]
# AP at each threshold: the VOC number sits at the left end. Where the curve falls, boxes are
# right but loose; a detector judged by VOC alone never learns that.

# %%
precision = result['precision'][:, :, :, 0, 2]            # (thresholds, recall, classes) all areas, 100
ap_at = [float(np.mean([p[:, k].mean() for k in range(p.shape[1]) if (p[:, k] > -1).all()]))
         for p in precision]
fig, ax = plt.subplots(figsize=(5.5, 3.5))
ax.plot(IOU_THRESHOLDS, ap_at, 'o-', label='AP at each IoU threshold (101-point)')
ax.axhline(result['AP'], color='gray', ls='--', label=f"AP@[.50:.95] = {result['AP']:.3f}")
ax.scatter([0.5], [voc_result['map']], color='C3', zorder=3, label=f"VOC07 mAP@0.5 = {voc_result['map']:.3f}")
ax.set_xlabel('IoU threshold'), ax.set_ylabel('AP'), ax.set_ylim(0, 1.02), ax.legend(fontsize=8)
ax.set_title('The demo model: AP as the bar for a match rises')
plt.show()
print(f"AP50 {result['AP50']:.3f} (COCO, >= 0.5, 101 points) vs {voc_result['map']:.3f} (VOC07, > 0.5, "
      f"11 points); AP75 {result['AP75']:.3f}")

# %% [markdown]
# ## A folder of photos in, one JSON out
#
# `python -m tinyrcnn detect FOLDER --out DIR` (or files, or `'photos/*.jpg'`) runs the model
# on every image, draws each, and writes the results as COCO's result list, the format its
# evaluation server and pycocotools read: `image_id`, `category_id`, `bbox` as `[x, y, w, h]`,
# `score`. Here through the Python function the command calls:

# %%
folder = work / 'photos'
folder.mkdir()
for name in sorted((work / 'shapes' / 'JPEGImages').iterdir())[:4]:
    (folder / name.name).write_bytes(name.read_bytes())
done = detect_files(model, info, sorted(str(p) for p in folder.iterdir()), out_dir=work / 'detections',
                    json_path=work / 'detections' / 'detections.json', show=0.5)
print(f"{len(done['results'])} detections in {len(done['detections'])} images; the first two:")
print('\n'.join(json.dumps(r) for r in done['results'][:2]))
pictures = sorted((work / 'detections').glob('*.png'))[:2]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
for ax, path in zip(axes, pictures):
    ax.imshow(plt.imread(path)), ax.set_title(path.name, fontsize=9), ax.axis('off')
plt.show()

# %% [markdown]
# ## On real COCO
#
# The same commands, pointed at the official files (no download happens here):
#
#     python -m tinyrcnn proposals --coco-json annotations/instances_train2017.json --images train2017
#     python -m tinyrcnn train --coco-json annotations/instances_train2017.json --images train2017 \
#         --weights vgg16-397923af.pth --out runs/coco
#     python -m tinyrcnn test --weights runs/coco/model --coco-json annotations/instances_val2017.json \
#         --images val2017 --metric coco
#
# COCO's 118,000 training images take days of selective search on one machine; `proposals
# --scheduler tcp://HOST:8786` spreads them over a Dask cluster, and an interrupted run resumes
# where it stopped (README, "Proposals on a cluster"). A model trained on a COCO file records
# its category ids, so `detect` writes COCO's own ids (1 to 90, with gaps), not labels 1 to 80.

# %% [markdown]
# ## Exercises
#
# Each exercise has a code cell: put your answer in `answer` (it starts as `None`) and run the
# cell; it prints "correct", or "not yet" and a hint, by comparing with what tinyrcnn computes.
#
# 1. **From `[x, y, w, h]` to corners.** A COCO file has one image, 200 x 160 pixels (width x
#    height), with two boxes: `[12, 30, 50, 20]` and `[190, 150, 30, 30]`, the second reaching
#    past the image. Which boxes $[x_1, y_1, x_2, y_2]$ does `COCODetection` give? Which `bbox`
#    would `detect` write back for the first?
# 2. **Labels from category ids.** The same file lists its categories as id 90 "toothbrush",
#    id 1 "person" and id 18 "dog". Which label does a toothbrush get, and which `category_id`
#    does `detect` write for a detection with label 1?
# 3. **Loose ground truth.** Make every third box of the shapes file 20 % wider and 20 % taller
#    about its centre (careless annotation) and score the demo model's detections again. Which
#    of AP50, AP75 and AP falls most? Work it out before running anything: what is the IoU of a
#    box with the same box enlarged that way, and which thresholds does that pass?

# %%
from tinyrcnn.utils import check_answer as check   # 'correct', or 'not yet' and a hint


# %%
# Exercise 1: answer = [[x1, y1, x2, y2], [x1, y1, x2, y2]]
answer = None
(work / 'tiny').mkdir(exist_ok=True)
tiny_json = work / 'tiny' / 'tiny.json'
tiny_json.write_text(json.dumps(dict(
    images=[dict(id=7, file_name='7.jpg', width=200, height=160)],
    annotations=[dict(id=1, image_id=7, category_id=90, bbox=[12, 30, 50, 20], iscrowd=0),
                 dict(id=2, image_id=7, category_id=1, bbox=[190, 150, 30, 30], iscrowd=0)],
    categories=[dict(id=90, name='toothbrush'), dict(id=1, name='person'), dict(id=18, name='dog')])))
tiny = COCODetection(work / 'tiny', tiny_json)        # reads the JSON only: no image is opened
check(answer, tiny.annotation(0)['boxes'],
      'x2 = x + w - 1 and y2 = y + h - 1 (w pixels from x to x2 inclusive); a box is then '
      'clipped to the image, x to [0, width - 1] and y to [0, height - 1]')

# %%
# Exercise 2: answer = (label of "toothbrush", category_id written for label 1)
answer = None
written = coco_results(dict(boxes=np.zeros((1, 4)), scores=np.ones(1), labels=np.array([1])), 7,
                       category_ids=tiny.category_ids)
check(answer, [1 + tiny.class_names.index('toothbrush'), written[0]['category_id']],
      'labels 1..K follow the categories sorted by id, and detect maps a label back to its id')

# %%
# Exercise 3: answer = 'AP50', 'AP75' or 'AP'
answer = None
loose, n = [], 0
for g in ground_truths:
    boxes = g['boxes'].copy()
    for j in range(len(boxes)):
        if n % 3 == 0:                                     # every third box of the file
            cx, cy = (boxes[j, 0] + boxes[j, 2]) / 2, (boxes[j, 1] + boxes[j, 3]) / 2
            w, h = 1.2 * (boxes[j, 2] - boxes[j, 0] + 1), 1.2 * (boxes[j, 3] - boxes[j, 1] + 1)
            boxes[j] = [cx - (w - 1) / 2, cy - (h - 1) / 2, cx + (w - 1) / 2, cy + (h - 1) / 2]
        n += 1
    loose.append(dict(g, boxes=boxes))
loose_result = evaluate_coco(detections, loose, coco.class_names)
drops = {name: result[name] - loose_result[name] for name in ('AP50', 'AP75', 'AP')}
check(answer, max(drops, key=drops.get),
      'a tight box inside its loose ground truth has IoU (w h) / (1.2 w x 1.2 h); which of the '
      'thresholds 0.5, 0.75 and 0.50:0.95 does that still pass?')
