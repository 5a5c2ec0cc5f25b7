"""VOCDetection on hand-written VOC2007/VOC2012-style files: parsing quirks, images, errors."""
import os

import imageio.v3 as iio
import numpy as np
import pytest

from tinyrcnn.data.voc import VOC_CLASSES, VOCDetection

# W=100, H=80. A dog touching the top-left corner (pixel 1), a person reaching the right and
# bottom edges (pixel W, H) with <part>s and no <difficult>/<truncated>, a difficult cat with
# VOC2012-style float coordinates.
XML_1 = """<annotation>
  <folder>VOC2012</folder><filename>000001.jpg</filename>
  <size><width>100</width><height>80</height><depth>3</depth></size>
  <object><name>dog</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>50</xmax><ymax>40</ymax></bndbox></object>
  <object><name>person</name>
    <bndbox><xmin>30</xmin><ymin>10</ymin><xmax>100</xmax><ymax>80</ymax></bndbox>
    <part><name>head</name><bndbox><xmin>40</xmin><ymin>12</ymin><xmax>55</xmax><ymax>30</ymax></bndbox></part>
    <part><name>hand</name><bndbox><xmin>31</xmin><ymin>50</ymin><xmax>38</xmax><ymax>58</ymax></bndbox></part>
  </object>
  <object><name>cat</name><truncated>0</truncated><difficult>1</difficult>
    <bndbox><xmin>12.0</xmin><ymin>20.0</ymin><xmax>33.0</xmax><ymax>44.0</ymax></bndbox></object>
</annotation>
"""
XML_2 = """<annotation><filename>000002.png</filename>
  <size><width>6</width><height>4</height><depth>3</depth></size>
  <object><name>car</name><difficult>0</difficult>
    <bndbox><xmin>2</xmin><ymin>2</ymin><xmax>5</xmax><ymax>3</ymax></bndbox></object>
</annotation>
"""


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / 'VOC2012'
    _write(root / 'Annotations' / '000001.xml', XML_1)
    _write(root / 'Annotations' / '000002.xml', XML_2)
    _write(root / 'ImageSets' / 'Main' / 'trainval.txt', '000001\n000002\n\n')
    os.makedirs(root / 'JPEGImages')
    gray = np.tile(np.arange(100, dtype=np.uint8) * 2, (80, 1))  # (80, 100) grayscale JPEG
    iio.imwrite(root / 'JPEGImages' / '000001.jpg', gray, extension='.jpg')
    rgba = np.arange(4 * 6 * 4, dtype=np.uint8).reshape(4, 6, 4) * 2  # (4, 6, 4) RGBA PNG
    iio.imwrite(root / 'JPEGImages' / '000002.png', rgba, extension='.png')
    return root, gray, rgba


def test_voc_classes_devkit_order():
    assert len(VOC_CLASSES) == 20
    assert VOC_CLASSES[0] == 'aeroplane' and VOC_CLASSES[14] == 'person' and VOC_CLASSES[19] == 'tvmonitor'


def test_parse_quirks(voc):
    root, gray, rgba = voc
    ds = VOCDetection(root, 'trainval')
    assert len(ds) == 2 and ds.num_classes == 20 and ds.class_names == VOC_CLASSES
    s = ds[0]
    assert s['id'] == '000001'
    # 0-based = XML - 1; parts are not objects; missing difficult/truncated = False
    np.testing.assert_array_equal(s['boxes'], np.array([[0, 0, 49, 39],
                                                        [29, 9, 99, 79],
                                                        [11, 19, 32, 43]], np.float32))
    assert s['boxes'].dtype == np.float32 and s['labels'].dtype == np.int64
    np.testing.assert_array_equal(s['labels'], [12, 15, 8])  # dog, person, cat (1-based)
    np.testing.assert_array_equal(s['difficult'], [False, False, True])
    np.testing.assert_array_equal(s['truncated'], [True, False, False])
    assert s['difficult'].dtype == bool


def test_images_converted_to_rgb(voc):
    root, gray, rgba = voc
    ds = VOCDetection(root)
    im = ds[0]['image']
    assert im.shape == (80, 100, 3) and im.dtype == np.uint8
    assert (im[..., 0] == im[..., 1]).all() and (im[..., 1] == im[..., 2]).all()
    assert np.abs(im[..., 0].astype(int) - gray).max() <= 3  # JPEG is lossy
    im2 = ds[1]['image']  # PNG found from <filename>, alpha dropped, lossless
    np.testing.assert_array_equal(im2, rgba[..., :3])
    np.testing.assert_array_equal(ds[-1]['boxes'], [[1, 1, 4, 2]])


def test_annotation_without_image(voc):
    root, _, _ = voc
    ds = VOCDetection(root)
    full = ds[0]
    os.remove(root / 'JPEGImages' / '000001.jpg')
    gt = ds.annotation(0)
    assert set(gt) >= {'boxes', 'labels', 'difficult', 'id'} and 'image' not in gt
    for k in ('boxes', 'labels', 'difficult', 'truncated'):
        np.testing.assert_array_equal(gt[k], full[k])
    gt['boxes'][:] = -5  # a copy: the cache is not touched
    assert ds.annotation(0)['boxes'][0, 2] == 49


def test_class_names_and_classes_txt(tmp_path, voc):
    root, _, _ = voc
    ds = VOCDetection(root, class_names=['cat', 'dog', 'person', 'car'])
    np.testing.assert_array_equal(ds[0]['labels'], [2, 3, 1])
    _write(root / 'classes.txt', 'car\nperson\ndog\ncat\n')
    ds = VOCDetection(root)
    assert ds.class_names == ('car', 'person', 'dog', 'cat') and ds.num_classes == 4
    np.testing.assert_array_equal(ds.annotation(0)['labels'], [3, 2, 4])
    np.testing.assert_array_equal(ds.annotation(1)['labels'], [1])


def test_errors_name_the_file(voc):
    root, _, _ = voc
    ann = root / 'Annotations'
    with pytest.raises(FileNotFoundError, match=r'ImageSets.Main.test\.txt'):
        VOCDetection(root, 'test')

    _write(ann / '000002.xml', '<annotation><object><name>car</name>')
    with pytest.raises(ValueError, match=r'000002\.xml.*malformed'):
        VOCDetection(root).annotation(1)

    _write(ann / '000002.xml', XML_2.replace('car', 'unicorn'))
    with pytest.raises(ValueError, match=r"000002\.xml.*'unicorn'"):
        VOCDetection(root)[1]

    _write(ann / '000002.xml', XML_2.replace('<xmax>5</xmax>', '<xmax>1</xmax>'))
    with pytest.raises(ValueError, match=r'000002\.xml.*xmin <= xmax'):
        VOCDetection(root).annotation(1)

    _write(ann / '000002.xml', XML_2.replace('<ymin>2</ymin>', '<ymin>two</ymin>'))
    with pytest.raises(ValueError, match=r'000002\.xml.*ymin'):
        VOCDetection(root).annotation(1)

    os.remove(ann / '000002.xml')
    with pytest.raises(FileNotFoundError, match=r'000002\.xml'):
        VOCDetection(root)[1]

    os.remove(root / 'JPEGImages' / '000001.jpg')
    with pytest.raises(FileNotFoundError, match=r'JPEGImages.000001\.jpg'):
        VOCDetection(root)[0]

    with pytest.raises(IndexError):
        VOCDetection(root)[2]


def test_empty_image_and_zero_coordinate(tmp_path):
    """An image without objects gives (0, 4) boxes; xmin=0 (hand-made sets) does not go negative."""
    root = tmp_path / 'voc'
    _write(root / 'Annotations' / 'a.xml', '<annotation><size><width>5</width><height>5</height></size>'
                                           '</annotation>')
    _write(root / 'Annotations' / 'b.xml', XML_2.replace('<xmin>2</xmin>', '<xmin>0</xmin>'))
    _write(root / 'ImageSets' / 'Main' / 'val.txt', 'a\nb\n')
    ds = VOCDetection(root, 'val')
    a = ds.annotation(0)
    assert a['boxes'].shape == (0, 4) and a['labels'].shape == (0,) and a['difficult'].shape == (0,)
    np.testing.assert_array_equal(ds.annotation(1)['boxes'], [[0, 1, 4, 2]])
