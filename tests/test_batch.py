"""Detection at scale (tinyrcnn/batch.py and `detect`): files, folders and patterns in, one COCO
results JSON and a picture per image out; a broken image is skipped, the rest written."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from tinyrcnn.batch import coco_results, expand_inputs, image_ids, picture_names
from tinyrcnn.data.shapes import render_shapes_image
from test_hostile_inputs import cli


def shapes_jpg(path, seed):
    image, objects, _ = render_shapes_image(np.random.default_rng(seed), 120, 160)
    Image.fromarray(image).save(path, quality=90)
    return objects


def test_inputs_expand_in_order_each_once(tmp_path):
    for name in ('b.jpg', 'a.PNG', 'notes.txt'):
        (tmp_path / name).write_bytes(b'x')
    (tmp_path / 'empty').mkdir()
    a, b = str(tmp_path / 'a.PNG'), str(tmp_path / 'b.jpg')
    assert expand_inputs([tmp_path]) == [a, b]                     # a folder: its images, sorted
    assert expand_inputs([b, str(tmp_path / '*.*'), tmp_path]) == [b, a, str(tmp_path / 'notes.txt')]
    with pytest.raises(ValueError, match='no images'):
        expand_inputs([tmp_path / 'empty'])
    with pytest.raises(FileNotFoundError, match='no file matches'):
        expand_inputs([str(tmp_path / '*.gif')])
    with pytest.raises(FileNotFoundError, match='image not found'):
        expand_inputs([tmp_path / 'c.jpg'])


def test_ids_names_and_results_follow_the_coco_conventions():
    assert image_ids(['x/000000397133.jpg', 'y/42.png']) == [397133, 42]   # COCO's file names
    assert image_ids(['x/1.jpg', 'y/001.jpg']) == [1, 2]                    # not distinct: positions
    assert image_ids(['cat.jpg', '7.jpg']) == [1, 2]
    assert picture_names(['a/x.jpg', 'b/x.png', 'c/y.jpg']) == [
        '000001_x_detections.png', '000002_x_detections.png', 'y_detections.png']
    dets = dict(boxes=np.array([[10, 20, 39, 59]], np.float32), scores=np.array([0.9]),
                labels=np.array([2]))
    assert coco_results(dets, 5) == [dict(image_id=5, category_id=2, bbox=[10, 20, 30, 40], score=0.9)]
    assert coco_results(dets, 5, category_ids=[3, 18])[0]['category_id'] == 18


def test_a_folder_gives_pictures_and_one_json_and_a_broken_image_is_skipped(tmp_path, capsys):
    folder = tmp_path / 'photos'
    folder.mkdir()
    shapes_jpg(folder / '11.jpg', 1)
    shapes_jpg(folder / '12.jpg', 2)
    (folder / '13.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
    code, out, err = cli(capsys, 'detect', folder, '--out', tmp_path / 'out')
    assert code != 0 and err.count('\n') == 1 and '1 of 3 images could not be used' in err, err
    assert 'knows 6 classes: circle' in out and 'skipped' in out
    results = json.load(open(tmp_path / 'out' / 'detections.json'))
    assert {r['image_id'] for r in results} == {11, 12} and results
    assert all(len(r['bbox']) == 4 and r['bbox'][2] > 0 and 1 <= r['category_id'] <= 6 for r in results)
    assert sorted(os.listdir(tmp_path / 'out')) == ['11_detections.png', '12_detections.png',
                                                    'detections.json']
    try:                                         # what pycocotools reads, where it is installed
        from pycocotools.coco import COCO
    except ImportError:
        return
    import contextlib
    import io
    gt = COCO()
    gt.dataset = dict(images=[dict(id=11), dict(id=12)], categories=[dict(id=k) for k in range(1, 7)],
                      annotations=[])
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        assert len(gt.loadRes(str(tmp_path / 'out' / 'detections.json')).getAnnIds()) == len(results)


def test_train_and_test_on_a_coco_file_with_both_metrics(tmp_path, capsys):
    """`train`/`test`/`proposals` take --coco-json FILE --images DIR, a negative image included;
    the model records the file's category ids and `test --metric coco` prints COCO's numbers."""
    from tinyrcnn.data import VOCDetection, make_shapes_voc, write_coco_json
    from test_hostile_inputs import TINY
    voc = VOCDetection(make_shapes_voc(tmp_path / 'voc', 3, 0, seed=4), 'trainval')
    path = write_coco_json(voc, tmp_path / 'train.json')
    data = json.load(open(path))
    for c in data['categories']:                                    # COCO's ids are not 1..K
        c['id'] += 10
    for a in data['annotations']:
        a['category_id'] += 10
    blank = tmp_path / 'voc' / 'JPEGImages' / 'blank.jpg'           # an image with no object
    Image.fromarray(np.full((100, 140, 3), 128, np.uint8)).save(blank)
    data['images'].append(dict(id=99, file_name='blank.jpg', width=140, height=100))
    path.write_text(json.dumps(data))
    coco = ['--coco-json', path, '--images', tmp_path / 'voc' / 'JPEGImages']
    code, out, err = cli(capsys, 'proposals', *coco, '--mode', 'single')
    assert code == 0 and '4 images' in out, err
    code, out, err = cli(capsys, 'train', *coco, '--out', tmp_path / 'run', *TINY)
    assert code == 0, err
    assert json.load(open(tmp_path / 'run' / 'model.json'))['category_ids'] == list(range(11, 17))
    model = ['--weights', tmp_path / 'run' / 'model', *coco, '--proposal-mode', 'single']
    code, out, err = cli(capsys, 'test', *model, '--metric', 'coco')
    assert code == 0 and 'AP@[.50:.95] (COCO): ' in out, err
    code, out, err = cli(capsys, 'test', *model)
    assert code == 0 and 'mAP@0.5 (VOC07 11-point): ' in out, err
    code, out, err = cli(capsys, 'test', *model, '--data', tmp_path / 'voc')
    assert code != 0 and 'not both' in err
    assert (tmp_path / 'train_proposals').is_dir()                  # the cache of this file only
    data['categories'].reverse()                                    # same names, other order
    for c, name in zip(data['categories'], voc.class_names):
        c['name'] = name
    path.write_text(json.dumps(data))
    code, out, err = cli(capsys, 'test', *model)
    assert code != 0 and "the model's classes" in err and err.count('\n') == 1, err


def test_a_folder_with_one_image_is_still_a_folder(tmp_path, capsys):
    (tmp_path / 'one').mkdir()
    shapes_jpg(tmp_path / 'one' / '5.jpg', 5)
    code, out, err = cli(capsys, 'detect', tmp_path / 'one', '--out', tmp_path / 'dets')
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / 'dets')) == ['5_detections.png', 'detections.json']
    code, out, err = cli(capsys, 'detect', tmp_path / 'one', '--json', tmp_path)
    assert code != 0 and 'a folder, expected a file name' in err
