"""The data layer: every WBC layout → one in-memory :class:`CellSet`."""
from .aliases import ALIASES, parse_mapping, resolve
from .cellset import CLASSES, CellSet
from .decode import MAX_PIXELS, PAPER_CROP
from .load import load_cells, sample_data_path
from .splits import load_splits, save_splits, stratified_kfold

__all__ = ["ALIASES", "CLASSES", "CellSet", "MAX_PIXELS", "PAPER_CROP", "load_cells", "load_splits",
           "parse_mapping", "resolve", "sample_data_path", "save_splits", "stratified_kfold"]
