"""Deterministic stratified splits (class ratios preserved), computed on label tensors."""
from __future__ import annotations

import torch

from classifiers.runtime import UserError


def _class_perms(labels: torch.Tensor, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(int(seed))
    labels = torch.as_tensor(labels)
    out = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        out.append(idx[torch.randperm(len(idx), generator=gen)])
    return out


def stratified_kfold(labels, k: int, seed: int = 0, groups=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``k`` (train_idx, test_idx) pairs; every image is in exactly one test fold and each
    class is spread over the folds as evenly as possible (round-robin after a seeded shuffle).

    With ``groups`` (one key per image, e.g. its sha256) all members of a group share a
    fold, so exact duplicates never straddle train and test.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if k < 2:
        raise UserError(f"cross-validation needs at least 2 folds, got {k}")
    if len(labels) < k:
        raise UserError(f"{len(labels)} images cannot be split into {k} folds")
    if groups is None:
        unit_of = torch.arange(len(labels))
    else:
        ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        unit_of = torch.tensor([ids[g] for g in groups], dtype=torch.long)
    n_units = int(unit_of.max()) + 1
    unit_label = torch.zeros(n_units, dtype=torch.long).scatter_(0, unit_of, labels)
    unit_fold = torch.empty(n_units, dtype=torch.long)
    offset = 0
    for idx in _class_perms(unit_label, seed):
        unit_fold[idx] = (torch.arange(len(idx)) + offset) % k
        offset += len(idx)  # start the next class where this one stopped: balanced fold sizes
    fold_of = unit_fold[unit_of]
    return [(torch.nonzero(fold_of != f).flatten(), torch.nonzero(fold_of == f).flatten()) for f in range(k)]


def stratified_holdout(labels, fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep_idx, held_idx) with ``fraction`` of every class held out (at least one image of
    each class that has two or more)."""
    if not 0 < fraction < 1:
        raise UserError(f"hold-out fraction must be between 0 and 1, got {fraction}")
    keep, held = [], []
    for idx in _class_perms(labels, seed):
        n = int(round(len(idx) * fraction))
        n = min(max(n, 1 if len(idx) >= 2 else 0), len(idx) - 1) if len(idx) else 0
        held.append(idx[:n])
        keep.append(idx[n:])
    return torch.sort(torch.cat(keep)).values, torch.sort(torch.cat(held)).values
