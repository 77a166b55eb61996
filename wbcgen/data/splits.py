"""Split files: one train/val/test split (or K folds) keyed by image sha256, shared by
``train-gan``, ``train-classifier`` and ``evaluate`` (``--split FILE [--fold K]``).

Because the file is keyed by the bytes of each image (sha256), it survives moved or renamed
folders, and exact duplicates are one entry: they always land on the same side.

File format (JSON)::

    {"kind": "wbcgen-split", "version": 1, "seed": 0, "test_fraction": 0.2, "val_fraction": 0.0,
     "per_class": null, "folds": null,
     "data": {"name": "pbc-dev", "images_sha256": "...", "n_images": 3565, "n_unique": 3564},
     "counts": [{"train": {class: n}, "val": {...}, "test": {...}, "unused": {...}}],   # one per fold
     "notes": [...],
     "images": {"<sha256>": {"label": "basophil", "parts": ["train"]}}}                 # one part per fold

``parts`` holds one of ``train``/``val``/``test``/``unused`` per fold (one entry without
folds). ``unused`` images are those left out by ``per_class`` (the scarce-data training set).

The older index-based k-fold files (``save_splits``/``load_splits``) are still read by
``train-classifier --splits``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from classifiers.runtime import UserError, atomic_write_json
from classifiers.splits import stratified_kfold  # noqa: F401  (re-exported: one implementation)

KIND = "wbcgen-split"
PARTS = ("train", "val", "test", "unused")


# ------------------------------------------------------------------ split files (sha256-keyed)
def _n_of(n: int, fraction: float, keep: int) -> int:
    """round(n × fraction), at least 1 when fraction > 0, leaving at least ``keep`` images."""
    if fraction <= 0 or n <= keep:
        return 0
    return min(max(int(round(n * fraction)), 1), n - keep)


def make_split(cells, *, test_fraction: float = 0.2, val_fraction: float = 0.0, per_class: int | None = None,
               folds: int | None = None, seed: int = 0) -> dict:
    """A stratified split of ``cells`` keyed by sha256 (see the module docstring).

    Without ``folds``: ``test_fraction`` and ``val_fraction`` of every class (as fractions
    of the class) go to test and val, the rest to train. With ``folds=K``: every image is in
    the test part of exactly one fold (stratified, round-robin after a seeded shuffle) and
    ``test_fraction`` is not used; val is ``val_fraction`` of the class from the other folds.
    ``per_class=N`` keeps N training images per class (the same ones in every fold where
    possible; val is then ``round(val_fraction × N)`` more) and marks the rest ``unused``.
    Deterministic for a seed.
    """
    if not cells.manifest or any("sha256" not in m for m in cells.manifest):
        raise UserError("a split needs image hashes; load the images with wbcgen.data.load_cells")
    if folds is None and not 0 < test_fraction < 1:
        raise UserError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    if not 0 <= val_fraction < 1 or (folds is None and test_fraction + val_fraction >= 1):
        raise UserError(f"--val-fraction must be ≥ 0 and leave room for training images, got {val_fraction}")
    if per_class is not None and per_class < 1:
        raise UserError(f"--per-class must be at least 1, got {per_class}")
    if folds is not None and folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}")
    label_of: dict[str, str] = {}
    notes: list[str] = []
    for m in cells.manifest:
        old = label_of.setdefault(m["sha256"], m["label"])
        if old != m["label"]:
            notes.append(f"{m['path']} has the same bytes as a {old} image but is labelled {m['label']}; "
                         f"the split files it as {old}")
    classes = list(cells.classes)
    gen = torch.Generator().manual_seed(int(seed))
    k = int(folds) if folds else 1
    parts: dict[str, list[str]] = {}
    offset = 0
    for cls in classes:
        units = sorted(s for s, lab in label_of.items() if lab == cls)
        if not units:
            continue
        if folds and len(units) < k:
            raise UserError(f"{cls} has {len(units)} distinct images, too few for {k} folds")
        units = [units[i] for i in torch.randperm(len(units), generator=gen).tolist()]
        n = len(units)
        if folds:
            test_fold = {u: (i + offset) % k for i, u in enumerate(units)}
            offset += n  # the next class starts where this one stopped: balanced fold sizes
        else:
            n_test = _n_of(n, test_fraction, keep=1)
            test_fold = {u: (0 if i < n_test else -1) for i, u in enumerate(units)}
        keep = 1 + (-(-n // k) if folds else sum(v == 0 for v in test_fold.values()))
        n_val = _n_of(n, val_fraction, keep) if per_class is None else min(_n_of(per_class, val_fraction, 0),
                                                                            max(0, n - keep))
        for u in units:
            parts[u] = []
        for f in range(k):
            rest = [u for u in units if test_fold[u] != f]
            n_train = len(rest) - n_val if per_class is None else min(per_class, len(rest) - n_val)
            if per_class is not None and per_class > len(rest) - n_val and f == 0:
                notes.append(f"{cls}: only {len(rest) - n_val} training images for --per-class {per_class}")
            # val first, then train; per_class prefers the same images in every fold (perm order)
            role = {u: "val" for u in rest[:n_val]}
            role.update({u: "train" for u in rest[n_val:n_val + n_train]})
            for u in units:
                parts[u].append("test" if test_fold[u] == f else role.get(u, "unused"))
    split = {"kind": KIND, "version": 1, "seed": int(seed),
             "test_fraction": None if folds else float(test_fraction), "val_fraction": float(val_fraction),
             "per_class": per_class, "folds": int(folds) if folds else None,
             "data": {"name": Path(cells.source).name if cells.source else None,
                      "images_sha256": images_hash(cells.manifest), "n_images": len(cells), "n_unique": len(label_of)},
             "classes": classes, "notes": notes,
             "images": {s: {"label": label_of[s], "parts": parts[s]} for s in sorted(parts)}}
    split["counts"] = [{p: _counts(cells, split_indices(cells, split, f)[p]) for p in PARTS} for f in range(k)]
    return split


def images_hash(manifest) -> str:
    """sha256 over the sorted ``sha256:label`` lines of a manifest (independent of paths,
    order and preprocessing): names a set of images."""
    h = hashlib.sha256()
    for line in sorted(f"{m['sha256']}:{m['label']}" for m in manifest):
        h.update(line.encode() + b"\n")
    return h.hexdigest()


def _counts(cells, idx: torch.Tensor) -> dict[str, int]:
    bc = torch.bincount(cells.labels[idx], minlength=len(cells.classes)).tolist()
    return dict(zip(cells.classes, map(int, bc)))


def save_split(path: str | Path, split: dict) -> None:
    atomic_write_json(path, split)


def load_split(path: str | Path) -> dict:
    """Read and check a split file written by :func:`save_split` / ``wbcgen data split``."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read split file {path}: {e.strerror or type(e).__name__}") from None
    except ValueError:
        raise UserError(f"split file {path} is not JSON") from None
    if isinstance(d, dict) and "test_folds" in d:
        raise UserError(f"{path} is an index-based folds file from an older wbcgen; make a split file with "
                        "`wbcgen data split PATH --seed S --out split.json`")
    if not isinstance(d, dict) or d.get("kind") != KIND or not isinstance(d.get("images"), dict):
        raise UserError(f"{path} is not a wbcgen split file (make one with `wbcgen data split`)")
    return d


def split_hash(split: dict) -> str:
    """sha256 of the split's assignment (seed and settings included), for run records."""
    body = {k: split.get(k) for k in ("seed", "test_fraction", "val_fraction", "per_class", "folds", "images")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def split_info(split: dict, path=None, fold: int | None = None, part: str | None = None) -> dict:
    """What a run records about the split it used (file basename, hash, fold, part)."""
    return {"file": Path(path).name if path else None, "sha256": split_hash(split), "fold": fold, "part": part,
            "seed": split.get("seed"), "per_class": split.get("per_class"), "folds": split.get("folds")}


def _fold(split: dict, fold: int | None) -> int:
    k = int(split.get("folds") or 1)
    if fold is None:
        if k > 1:
            raise UserError(f"the split has {k} folds; pass --fold 0..{k - 1}")
        return 0
    if not 0 <= int(fold) < k:
        raise UserError(f"--fold {fold} is out of range: the split has {k} fold(s) (0..{k - 1})")
    return int(fold)


def split_indices(cells, split: dict, fold: int | None = None) -> dict[str, torch.Tensor]:
    """``{part: indices into cells}`` for one fold. Every sha256 of the split must be in
    ``cells`` with the same label; images of ``cells`` that the split does not list are in
    no part."""
    f = _fold(split, fold)
    if not cells.manifest:
        raise UserError("this image set has no manifest (sha256 per image), so a split file cannot be applied")
    shas = [m["sha256"] for m in cells.manifest]
    have = set(shas)
    images = split["images"]
    missing = [s for s in images if s not in have]
    if missing:
        name = (split.get("data") or {}).get("name") or "another folder"
        if len(missing) > len(images) / 2:
            raise UserError(f"the split was made for a different data set ({name}): {len(missing)} of its "
                            f"{len(images)} images are not in {Path(cells.source).name or 'these images'}")
        raise UserError(f"{len(missing)} image(s) of the split (made from {name}) are missing from "
                        f"{Path(cells.source).name or 'these images'}, e.g. a {images[missing[0]]['label']} with "
                        f"sha256 {missing[0][:12]}…; use the same folder or make a new split")
    for m in cells.manifest:
        e = images.get(m["sha256"])
        if e is not None and e["label"] != m["label"] and not any(
                x["sha256"] == m["sha256"] and x["label"] == e["label"] for x in cells.manifest):
            raise UserError(f"{m['path']} is labelled {m['label']} here but {e['label']} in the split file")
    part_of = [images[s]["parts"][f] if s in images else None for s in shas]
    return {p: torch.tensor([i for i, q in enumerate(part_of) if q == p], dtype=torch.long) for p in PARTS}


def apply_split(cells, split: dict | str | Path, part: str = "train", fold: int | None = None):
    """The images of ``cells`` in one part (``train``, ``val``, ``test`` or ``unused``) of
    one fold, as a CellSet (manifest order kept)."""
    if part not in PARTS:
        raise UserError(f"split part must be one of {', '.join(PARTS)}, got {part!r}")
    if not isinstance(split, dict):
        split = load_split(split)
    return cells.subset(split_indices(cells, split, fold)[part])


# ------------------------------------------------------- older index-based k-fold files
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
