"""Detection evaluation: the PASCAL VOC devkit's AP (voc.py) and the COCO metrics (coco.py);
common.py checks the inputs both take.

    from tinyrcnn.eval import evaluate_voc, evaluate_coco
"""
from .coco import evaluate_coco, format_coco_table
from .voc import evaluate_voc, format_ap_table, voc_ap

__all__ = ['evaluate_voc', 'format_ap_table', 'voc_ap', 'evaluate_coco', 'format_coco_table']
