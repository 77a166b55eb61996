"""The data layer: every WBC layout → one in-memory :class:`CellSet`."""
from .aliases import ALIASES, parse_mapping, resolve
from .cellset import CLASS_TO_IDX, CLASSES, CellSet
from .decode import MAX_PIXELS, PAPER_CROP
from .load import load_cells, sample_data_path
from .splits import (apply_split, load_split, load_splits, make_split, save_split, save_splits, split_indices,
                     split_info, stratified_kfold)
from .synthetic import BlockShuffleSampler, MixedCells, SyntheticCells

__all__ = ["ALIASES", "BlockShuffleSampler", "CLASS_TO_IDX", "CLASSES", "MixedCells", "SyntheticCells", "CellSet",
           "MAX_PIXELS", "PAPER_CROP", "apply_split", "load_cells", "load_split", "load_splits", "make_split",
           "parse_mapping", "resolve", "sample_data_path", "save_split", "save_splits", "split_indices", "split_info",
           "stratified_kfold"]
