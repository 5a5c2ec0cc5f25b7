"""Data: images, PASCAL VOC and COCO reading, the synthetic shapes set, and the Fast R-CNN input transforms."""
from .coco import COCODetection, write_coco_json
from .image import check_image, read_image
from .shapes import SHAPES_CLASSES, make_shapes_voc
from .transforms import PREPROCESS, deprocess, hflip, im_list_to_blob, image_pyramid, preprocess, rescale
from .voc import VOC_CLASSES, VOCDetection, parse_voc_xml

__all__ = ['check_image', 'read_image', 'VOC_CLASSES', 'VOCDetection', 'parse_voc_xml',
           'COCODetection', 'write_coco_json',
           'SHAPES_CLASSES', 'make_shapes_voc', 'PREPROCESS', 'preprocess', 'deprocess', 'rescale',
           'hflip', 'image_pyramid', 'im_list_to_blob']
