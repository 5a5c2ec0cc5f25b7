"""Region proposals for Fast R-CNN: selective search (Uijlings et al., IJCV 2013) and a per-data-set cache."""
from .cache import compute_dataset_proposals, dataset_proposals
from .selective_search import selective_search

__all__ = ['selective_search', 'compute_dataset_proposals', 'dataset_proposals']
