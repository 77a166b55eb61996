"""The data layer: every WBC layout → one in-memory :class:`CellSet`."""
from .aliases import ALIASES, parse_mapping, resolve
from .cellset import CLASSES, CellSet
from .decode import MAX_PIXELS, PAPER_CROP
from .load import load_cells, sample_data_path
from .splits import (apply_split, load_split, load_splits, make_split, save_split, save_splits, split_indices,
                     split_info, stratified_kfold)

__all__ = ["ALIASES", "CLASSES", "CellSet", "MAX_PIXELS", "PAPER_CROP", "apply_split", "load_cells", "load_split",
           "load_splits", "make_split", "parse_mapping", "resolve", "sample_data_path", "save_split", "save_splits",
           "split_indices", "split_info", "stratified_kfold"]
