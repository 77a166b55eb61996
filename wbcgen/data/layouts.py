"""Find (path, label) pairs in the three on-disk layouts wbcgen reads.

* ``folders``: class folders anywhere below the root (any case, aliases, nested
  split folders such as ``TRAIN/`` and ``TEST/``).
* ``csv``: images plus a CSV of ``id,label`` rows (zheng2018: ``Class Labels of
  Dataset 1.csv`` beside ``Dataset 1/``); numeric labels need ``--label-map``.
* ``metadata``: a ``metadata.csv`` with ``file_name`` and ``label`` columns (the
  Hub ImageFolder layout that ``wbcgen sample`` writes).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Mapping

from classifiers.runtime import UserError

from . import aliases as al
from .cellset import CLASSES
from .decode import IMAGE_EXTS


def display(path: Path | str) -> str:
    """A printable form of a path, even when its name is not valid UTF-8."""
    return os.fsencode(str(path)).decode("utf-8", "replace")


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTS


def _walk(root: Path):
    """Sorted (dir, subdirs, files) triples; hidden entries skipped; symlinked dirs not followed."""
    for d, subdirs, files in os.walk(root):
        subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))
        yield Path(d), subdirs, sorted(f for f in files if not f.startswith("."))


def detect_layout(root: Path, extra: Mapping[str, str] | None = None) -> str:
    if (root / "metadata.csv").is_file():
        return "metadata"
    for d, subdirs, _ in _walk(root):
        if any(al.resolve(s, extra) for s in subdirs):
            return "folders"
    if any(p.suffix.lower() == ".csv" for p in root.iterdir()):
        return "csv"
    return "folders"


def find_folders(root: Path, extra: Mapping[str, str] | None, ignore_unknown: bool):
    """(items, notes): items are (path, class); notes has empty class folders / ignored folders."""
    items: list[tuple[Path, str]] = []
    notes: list[dict] = []
    unknown: list[str] = []

    def visit(d: Path, cls: str | None):
        entries = sorted(d.iterdir(), key=lambda p: p.name) if d.is_dir() else []
        files = [p for p in entries if p.is_file() and not p.name.startswith(".")]
        dirs = [p for p in entries if p.is_dir() and not p.name.startswith(".") and not p.is_symlink()]
        imgs = [p for p in files if _is_image(p)]
        if cls is None and imgs:
            if d == root:
                unknown.append("(images directly in the root folder)")
            else:
                unknown.append(d.name)
            imgs = []
        if cls is not None:
            items.extend((p, cls) for p in files)  # non-image files get a skip reason later
            if not files and not dirs:
                notes.append({"path": display(d), "reason": f"empty class folder ({cls})"})
        for sub in dirs:
            sub_cls = al.resolve(sub.name, extra)
            visit(sub, sub_cls or cls)

    visit(root, None)
    if unknown and not ignore_unknown:
        name = unknown[0]
        raise UserError(
            f"folder {display(name)!r} is not a known class; map it with --alias {display(name)}=CLASS "
            f"(one of {', '.join(CLASSES)}) or skip it with --ignore-unknown")
    for name in unknown:
        notes.append({"path": display(name), "reason": "unknown class folder ignored (--ignore-unknown)"})
    return items, notes


def _read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read labels from {display(path)}: {e}") from None


def _map_label(value: str, label_map: Mapping[str, str], extra, ignore_unknown: bool, where: str) -> str | None:
    v = str(value).strip()
    if v in label_map:
        return label_map[v]
    cls = al.resolve(v, extra)
    if cls is None and not ignore_unknown:
        hint = "--label-map 1=neutrophil,2=lymphocyte,..." if v.isdigit() else f"--alias {v}=CLASS"
        raise UserError(f"label {v!r} in {where} is not a known class; map it with {hint} or skip it with --ignore-unknown")
    return cls


def _key(name: str) -> str:
    stem = Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTS else name
    return str(int(stem)) if stem.strip().isdigit() else stem.strip().lower()


def find_csv(root: Path, label_map: Mapping[str, str], extra, ignore_unknown: bool):
    """Pair each CSV with its image folder (same folder, or a folder whose name ends the CSV's name)."""
    csvs = sorted(p for p in root.iterdir() if p.suffix.lower() == ".csv")
    if not csvs:
        raise UserError(f"no CSV label file in {display(root)}; use --layout folders for class folders")
    items: list[tuple[Path, str | None]] = []
    notes: list[dict] = []
    dirs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: -len(p.name))
    for c in csvs:
        rows = _read_csv(c)
        if not rows:
            continue
        cols = list(rows[0].keys())
        id_col = next((k for k in cols if k and k.strip().lower() in ("image id", "image", "id", "file", "filename", "file_name", "image_id")), cols[0])
        lab_col = next((k for k in cols if k and "label" in k.lower() or (k or "").lower() in ("class", "category")), cols[-1])
        folder = next((d for d in dirs if c.stem.lower().endswith(d.name.lower())), root)
        files = {_key(p.name): p for p in folder.iterdir() if p.is_file() and _is_image(p)}
        for r in rows:
            ident, lab = (r.get(id_col) or "").strip(), (r.get(lab_col) or "").strip()
            if not ident:
                continue
            cls = _map_label(lab, label_map, extra, ignore_unknown, display(c.name))
            p = files.get(_key(ident))
            if p is None:
                notes.append({"path": f"{display(c.name)}: {ident}", "reason": "listed in the CSV but no image file found"})
                continue
            if cls is None:
                notes.append({"path": display(p), "reason": f"unknown label {lab!r} ignored (--ignore-unknown)"})
                continue
            items.append((p, cls))
    return items, notes


def find_metadata(root: Path, extra, ignore_unknown: bool):
    rows = _read_csv(root / "metadata.csv")
    if rows and ("file_name" not in rows[0] or "label" not in rows[0]):
        raise UserError(f"{display(root / 'metadata.csv')} needs file_name and label columns")
    items: list[tuple[Path, str]] = []
    notes: list[dict] = []
    real_root = root.resolve()
    for r in rows:
        cls = _map_label(r["label"], {}, extra, ignore_unknown, "metadata.csv")
        name = (r["file_name"] or "").strip()
        why = _outside(name, root, real_root)
        p = root / name if why is None else None
        if why is not None:
            notes.append({"path": display(name), "reason": why})
        elif cls is None:
            notes.append({"path": display(p), "reason": f"unknown label {r['label']!r} ignored (--ignore-unknown)"})
        elif not p.is_file():
            notes.append({"path": display(p), "reason": "listed in metadata.csv but missing"})
        else:
            items.append((p, cls))
    return items, notes


def _outside(name: str, root: Path, real_root: Path) -> str | None:
    """Why a metadata.csv ``file_name`` may not be opened (None when it is a path inside ``root``)."""
    if not name:
        return "empty file_name in metadata.csv"
    rel = Path(name.replace("\\", "/"))
    if rel.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path in metadata.csv refused (paths must be relative to the dataset folder)"
    if ".." in rel.parts:
        return "path in metadata.csv leaves the dataset folder ('..') and was refused"
    try:
        inside = (root / rel).resolve().is_relative_to(real_root)
    except (OSError, RuntimeError):  # a symlink loop
        return "path in metadata.csv cannot be resolved (symlink loop) and was refused"
    if not inside:
        return "path in metadata.csv leads outside the dataset folder (symlink) and was refused"
    return None


def lab_groups(rel_paths, labels) -> dict[str, list[int]]:
    """The labs of a set, as index lists: where the set's top folders each hold more than one
    class they are sources, one lab each (zheng2018's ``Dataset 1`` / ``Dataset 2``); otherwise
    (class folders, or one folder of images) the whole set is one lab, named ``""``."""
    rel_paths, labels = list(rel_paths), list(labels)
    tops: dict[str, list[int]] = {}
    for i, p in enumerate(rel_paths):
        parts = Path(p).parts
        tops.setdefault(parts[0] if len(parts) > 1 else "", []).append(i)
    if len(tops) > 1 and any(len({labels[i] for i in g}) > 1 for g in tops.values()):
        return dict(sorted(tops.items()))
    return {"": list(range(len(rel_paths)))}
