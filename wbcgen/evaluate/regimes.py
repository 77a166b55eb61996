"""Training regimes (real / synthetic / mixed) as index splits over one pooled tensor.

Real, synthetic and (optional) ``--test-on`` images are resized once to the model's input
size and concatenated: ``[real | synthetic | test]``. Every regime is then a list of
``{"train", "val"?, "test"}`` index splits handed to the classifier suite's own
``classifiers.train.run_protocol`` (one trainer for everything). Test indices only ever
point into the real or the ``--test-on`` block: synthetic images are never tested on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from classifiers.runtime import UserError
from classifiers.splits import stratified_holdout, stratified_kfold

REGIMES = ("real", "synthetic", "mixed")


@dataclass
class Pool:
    images: torch.Tensor            # uint8, model input size
    labels: torch.Tensor
    real: torch.Tensor              # indices of the real block
    synthetic: torch.Tensor         # indices of the synthetic block
    test: torch.Tensor | None       # indices of the --test-on block
    classes: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    def counts(self, idx: torch.Tensor) -> dict[str, int]:
        bc = torch.bincount(self.labels[idx], minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, map(int, bc)))


def make_pool(real, synthetic, test, size) -> Pool:
    """Resize and pool the CellSets (``synthetic``/``test`` may be None)."""
    from classifiers.data import resize_u8

    parts = [s for s in (real, synthetic, test) if s is not None]
    images = torch.cat([resize_u8(s.images, size) for s in parts])
    labels = torch.cat([s.labels for s in parts])
    n_r, n_s = len(real), len(synthetic) if synthetic is not None else 0
    n_t = len(test) if test is not None else 0
    return Pool(images, labels, torch.arange(n_r), torch.arange(n_r, n_r + n_s),
                torch.arange(n_r + n_s, n_r + n_s + n_t) if test is not None else None, tuple(real.classes))


def _per_class(idx: torch.Tensor, labels: torch.Tensor, want: dict[int, int], gen: torch.Generator) -> torch.Tensor:
    """A seeded subset of ``idx`` with ``want[c]`` images of class c (capped at what exists)."""
    out = []
    for c, n in want.items():
        cand = idx[labels[idx] == c]
        if n > 0 and len(cand):
            out.append(cand[torch.randperm(len(cand), generator=gen)[:n]])
    return torch.sort(torch.cat(out)).values if out else torch.zeros(0, dtype=torch.long)


def _cap_real(pool: Pool, idx: torch.Tensor, real_per_class: int | None, gen) -> torch.Tensor:
    if real_per_class is None:
        return idx
    return _per_class(idx, pool.labels, {c: real_per_class for c in range(len(pool.classes))}, gen)


def _add_synthetic(pool: Pool, real_train: torch.Tensor, ratio: float, gen, notes: set) -> torch.Tensor:
    """``round(ratio × n_real_c)`` synthetic images of each class c (all there are if fewer)."""
    if ratio <= 0:
        return torch.zeros(0, dtype=torch.long)
    want = {}
    have = pool.counts(pool.synthetic)
    for c, name in enumerate(pool.classes):
        n_real = int((pool.labels[real_train] == c).sum())
        want[c] = int(round(ratio * n_real))
        if want[c] > have[name]:
            notes.add(f"{name}: asked for {want[c]} synthetic images (ratio {ratio:g}), only {have[name]} exist; "
                      "used them all")
    return _per_class(pool.synthetic, pool.labels, want, gen)


def _real_val(pool: Pool, train: torch.Tensor, val_fraction: float, seed: int):
    """Hold a stratified validation slice out of the *real* training images (never synthetic)."""
    if val_fraction <= 0 or len(train) < 4:
        return train, None
    keep, held = stratified_holdout(pool.labels[train], val_fraction, seed)
    return train[keep], train[held]


def build_splits(pool: Pool, train_on: str, *, folds: int | None, holdout: float = 0.2, mix_ratio: float = 1.0,
                 real_per_class: int | None = None, seed: int = 0, val_fraction: float = 0.1) -> list[dict]:
    """Index splits for a regime. ``real``/``mixed`` cross-validate over the real block
    (``folds`` ≥ 2; ``folds=None``: one stratified hold-out of ``holdout`` of every class)
    unless a ``--test-on`` block exists; ``synthetic`` trains on every synthetic
    image and tests on the ``--test-on`` block or on all real images. ``real_per_class``
    caps the real training images per class (scarcity); ``mix_ratio`` is synthetic:real
    per class. Validation slices for early stopping come from real training images; the
    ``synthetic`` regime has none (an empty ``val``: the classifier trains on every synthetic
    image and keeps its last epoch). Held-out synthetic cells pick the epoch that best separates
    the *synthetic* classes, which is not the one that best names real cells (bench/RESULTS.md,
    sessions 37-38: 20 epochs of ``wnet-cpu`` on the default's cells, restored at the synthetic
    pick, scored 68.2 % balanced on real cells; the same training kept at its last epoch 78.6 %,
    +14 and +17 points for the two classifier seeds whose pick fell on epoch 2), and real images
    the generators saw may not pick it either (the leakage guard)."""
    if train_on not in REGIMES:
        raise UserError(f"--train-on must be one of {', '.join(REGIMES)}, got {train_on!r}")
    notes: set[str] = set()
    if train_on == "synthetic":
        if len(pool.synthetic) == 0:
            raise UserError("the synthetic set is empty; run `wbcgen sample` first or give --synthetic PATH")
        present = [c for c, n in enumerate(pool.counts(pool.synthetic).values()) if n > 0]
        if len(present) < 2:
            only = ", ".join(pool.classes[c] for c in present) or "none"
            raise UserError(f"training on synthetic images needs at least two classes, but the synthetic set has "
                            f"only {only}; train GANs for more classes (wbcgen train-gan --cls all) or use "
                            "--train-on mixed")
        test = pool.test if pool.test is not None else pool.real
        keep = torch.isin(pool.labels[test], torch.tensor(present))
        if not bool(keep.all()):
            missing = sorted({pool.classes[int(c)] for c in pool.labels[test][~keep]})
            notes.add(f"no synthetic {', '.join(missing)}: those real images are left out of the test set")
        if real_per_class is not None:
            notes.add("--real-per-class limits real training images only (regimes real/mixed and --dose), "
                      "not --train-on synthetic")
        splits = [{"train": pool.synthetic, "test": test[keep], "val": torch.zeros(0, dtype=torch.long)}]
    else:
        ratio = mix_ratio if train_on == "mixed" else 0.0
        if train_on == "mixed" and len(pool.synthetic) == 0:
            raise UserError("--train-on mixed needs synthetic images; run `wbcgen sample` first "
                            "or give --synthetic PATH")
        if pool.test is not None:
            pairs = [(pool.real, pool.test)]
        elif folds is None:
            keep, held = stratified_holdout(pool.labels[pool.real], holdout, seed)
            pairs = [(pool.real[keep], pool.real[held])]
        else:
            pairs = [(pool.real[tr], pool.real[te]) for tr, te in stratified_kfold(pool.labels[pool.real], folds, seed)]
        splits = []
        for f, (tr, te) in enumerate(pairs):
            # separate streams per fold for the real and the synthetic draws: every ratio (and
            # ratio 0, the real-only baseline) gets the same real training/validation images
            tr = _cap_real(pool, tr, real_per_class, torch.Generator().manual_seed(seed * 1_000_003 + f))
            tr, va = _real_val(pool, tr, val_fraction, seed + f)
            syn = _add_synthetic(pool, tr, ratio, torch.Generator().manual_seed(seed * 1_000_003 + 7919 + f), notes)
            # "val" is always given (empty when there are too few real images), so the trainer never
            # carves a validation slice out of training images that include synthetic ones
            splits.append({"train": torch.cat([tr, syn]), "test": te,
                           "val": va if va is not None else torch.zeros(0, dtype=torch.long)})
    pool.notes.extend(sorted(notes))
    return splits


def split_counts(pool: Pool, split: dict) -> dict:
    """Per-class real and synthetic training counts of one split (validation images excluded)."""
    tr = split["train"]
    is_syn = torch.isin(tr, pool.synthetic)
    return {"real": pool.counts(tr[~is_syn]), "synthetic": pool.counts(tr[is_syn]),
            "validation": pool.counts(split["val"]) if split.get("val") is not None else None,
            "test": pool.counts(split["test"])}
