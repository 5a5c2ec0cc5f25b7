"""Data: PASCAL VOC reading, the synthetic shapes set, and the Fast R-CNN input transforms."""
from .voc import VOC_CLASSES, VOCDetection, parse_voc_xml, read_image
from .shapes import SHAPES_CLASSES, make_shapes_voc
from .transforms import PREPROCESS, preprocess, deprocess, rescale, hflip, image_pyramid, im_list_to_blob

__all__ = ['VOC_CLASSES', 'VOCDetection', 'parse_voc_xml', 'read_image', 'SHAPES_CLASSES',
           'make_shapes_voc', 'PREPROCESS', 'preprocess', 'deprocess', 'rescale', 'hflip',
           'image_pyramid', 'im_list_to_blob']
