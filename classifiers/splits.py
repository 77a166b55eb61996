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


def stratified_kfold(labels, k: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``k`` (train_idx, test_idx) pairs; every image is in exactly one test fold and each
    class is spread over the folds as evenly as possible (round-robin after a seeded shuffle)."""
    labels = torch.as_tensor(labels)
    if k < 2:
        raise UserError(f"cross-validation needs at least 2 folds, got {k}")
    if len(labels) < k:
        raise UserError(f"{len(labels)} images cannot be split into {k} folds")
    fold_of = torch.empty(len(labels), dtype=torch.long)
    offset = 0
    for idx in _class_perms(labels, seed):
        fold_of[idx] = (torch.arange(len(idx)) + offset) % k
        offset += len(idx)  # start the next class where this one stopped: balanced fold sizes
    folds = []
    for f in range(k):
        test = torch.nonzero(fold_of == f).flatten()
        train = torch.nonzero(fold_of != f).flatten()
        folds.append((train, test))
    return folds


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
