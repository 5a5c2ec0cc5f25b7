"""Region proposals for Fast R-CNN: selective search (Uijlings et al., IJCV 2013) and a per-dataset cache."""
from .selective_search import selective_search, compute_dataset_proposals

__all__ = ['selective_search', 'compute_dataset_proposals']
