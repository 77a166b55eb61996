"""Deterministic stratified k-fold splits (``classifiers.splits``), saved to and reloaded from JSON."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
import torch

from classifiers.runtime import UserError, atomic_write_json
from classifiers.splits import stratified_kfold  # noqa: F401  (re-exported: one implementation)


def _labels_hash(labels: torch.Tensor) -> str:
    return hashlib.sha256(labels.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def save_splits(path: str | Path, splits, labels, seed: int) -> None:
    atomic_write_json(path, {"k": len(splits), "seed": seed, "n": len(labels),
                             "labels_sha256": _labels_hash(torch.as_tensor(labels)),
                             "test_folds": [t.tolist() for _, t in splits]})


def load_splits(path: str | Path, labels=None):
    try:
        d = json.loads(Path(path).read_text())
        tests = [torch.tensor(t, dtype=torch.int64) for t in d["test_folds"]]
        n = int(d["n"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read splits file {path}: {type(e).__name__}") from None
    if labels is not None and (len(labels) != n or _labels_hash(torch.as_tensor(labels)) != d["labels_sha256"]):
        raise UserError(f"splits file {path} was made for a different dataset ({n} images)")
    every = torch.arange(n)
    return [(every[~torch.isin(every, t)], t) for t in tests]
