"""The few-shot fine-tuning protocol (the papers' LISC experiment): K training images per
class, tested on the rest of the set, repeated over F seeded draws."""
from __future__ import annotations

import torch

from classifiers.data import check_images, resize_u8
from classifiers.recipes import load_recipe
from classifiers.registry import model_class
from classifiers.runtime import UserError


def few_shot(model_name: str, images_u8: torch.Tensor, labels, *, classes, recipe, out_dir, seed: int = 0,
             per_class: int | None = None, folds: int | None = None, **kw) -> dict:
    """Few-shot protocol (the papers' LISC experiment): ``folds`` random draws of ``per_class``
    training images per class (capped at n_c − 1 so every class keeps a test image); each
    draw is tested on all the other images. Usually with ``init_from``."""
    from classifiers.train import run_protocol

    recipe = load_recipe(recipe)
    check_images(images_u8, labels)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    k = int(per_class or recipe["protocol"]["per_class"])
    f = int(folds or recipe["protocol"]["folds"])
    if k < 1 or f < 1:
        raise UserError("the few-shot protocol needs --per-class >= 1 and --folds >= 1")
    splits, capped = few_shot_splits(labels, k, f, seed, len(classes))
    images = resize_u8(images_u8, model_class(model_name).input_size)
    return run_protocol(model_name, images, labels, classes=classes, recipe=recipe, out_dir=out_dir, seed=seed,
                        splits=splits, protocol={"kind": "few-shot", "per_class": k, "folds": f,
                                                 "capped": {classes[c]: n for c, n in capped.items()}}, **kw)


def few_shot_splits(labels: torch.Tensor, k: int, folds: int, seed: int, num_classes: int):
    """(splits, capped): seeded draws of k images per class; classes with ≤ k images give n_c − 1."""
    gen = torch.Generator().manual_seed(seed)
    splits, capped = [], {}
    for _ in range(folds):
        train_idx = []
        for c in range(num_classes):
            idx = torch.nonzero(labels == c).flatten()
            if len(idx) == 0:
                continue
            take = min(k, len(idx) - 1)
            if take < k:
                capped[c] = take
            train_idx.append(idx[torch.randperm(len(idx), generator=gen)[:take]])
        tr = torch.cat(train_idx).sort().values
        mask = torch.ones(len(labels), dtype=torch.bool)
        mask[tr] = False
        splits.append({"train": tr, "test": torch.nonzero(mask).flatten()})
    return splits, capped
