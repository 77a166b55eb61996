"""Datasets that wbcgen did not write → ``<out>/[<SPLIT>/]<class>/<sha256>.<ext>`` + ``metadata.csv``.

Two kinds are recognised in a download (or a local folder): a **parquet** dataset
(:mod:`.parquet`) and an **ImageFolder** repo (class folders, optionally below split folders,
with neither ``metadata.csv`` nor ``wbcgen.json``). Every image is checked by its magic number
and decoded (only as PNG/JPEG/BMP/TIFF) before its original bytes are written under its
sha256; labels go through the data layer's alias table; classes outside wbcgen's five are
counted and skipped; exact duplicates are written once and reported. ``source.json`` and
``SOURCE.md`` record where it all came from (see :mod:`.srcinfo`).
"""
from __future__ import annotations

import hashlib
import heapq
import io
import os
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from tqdm.auto import tqdm

from classifiers.runtime import UserError
from wbcgen.data import CLASSES, MAX_PIXELS, resolve

from . import parquet as pq_
from . import srcinfo
from .layout import IMAGE_SUFFIXES, SAFE_PATTERNS, write_metadata
from .lists import copy_side_files

#: What a dataset download fetches: the safe types plus parquet shards (data, never code).
DATASET_PATTERNS = SAFE_PATTERNS + ["*.parquet"]
OPTIONS = ("split", "config", "max_per_class", "label_map", "aliases", "image_column", "label_column")
MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png", "PNG"), (b"\xff\xd8\xff", ".jpg", "JPEG"), (b"BM", ".bmp", "BMP"),
         (b"II*\x00", ".tif", "TIFF"), (b"MM\x00*", ".tif", "TIFF"))
FOLDER_IMAGES = IMAGE_SUFFIXES  # one set with the push side: whatever is laid out here can be pushed
COLUMNS = ["file_name", "label", "split", "source_label", "sha256", "source"]
_LISTED = 100  # bad images / duplicate conflicts listed in source.json (all are counted)


def detect(src: Path, repo_type: str = "dataset") -> str | None:
    """``"parquet"``, ``"imagefolder"`` or ``None`` (a wbcgen layout or plain files: copied as before)."""
    if repo_type != "dataset" or (src / "metadata.csv").is_file() or (src / "wbcgen.json").is_file():
        return None
    if pq_.parquet_files(src):
        return "parquet"
    for d, subdirs, files in os.walk(src):
        subdirs[:] = [s for s in subdirs if not s.startswith(".")]
        if Path(d) != src and any(f.lower().endswith(FOLDER_IMAGES) for f in files):
            return "imagefolder"
    return None


def refuse_options(opts: Mapping, src: Path) -> None:
    used = [k for k in OPTIONS if opts.get(k) not in (None, "", "all", {}, (), [])]
    if used:
        flag = "--" + used[0].replace("_", "-").replace("aliases", "alias")
        raise UserError(f"{flag} applies to parquet and ImageFolder datasets; {src} is a wbcgen dataset "
                        "(metadata.csv) or a model, which is laid out as it is")


def sniff(data: bytes) -> tuple[str, str] | None:
    """(extension, PIL format) from the magic number, or None for anything else."""
    for magic, ext, fmt in MAGIC:
        if data.startswith(magic):
            return ext, fmt
    return None


def check_image(data: bytes, fmt: str) -> str | None:
    """Decode ``data`` as ``fmt`` only (PIL ``formats=``); the reason it is unusable, or None."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    return f"{w}×{h} pixels, over the {MAX_PIXELS:,}-pixel limit"
                im.load()
    except Exception as e:  # noqa: BLE001 - any decoder failure is a reason, not a crash
        return f"not a decodable {fmt} ({' '.join(str(e).split())[:80] or type(e).__name__})"
    return None


class Writer:
    """Checks, names and writes images into ``out``; collects counts, skips and duplicates."""

    def __init__(self, out: Path, *, splits: list[str], label_map: Mapping[str, str] | None = None,
                 aliases: Mapping[str, str] | None = None, max_per_class: int | None = None):
        if max_per_class is not None and max_per_class < 1:
            raise UserError("--max-per-class must be at least 1")
        self.out, self.splits, self.nested, self.max = out, splits, len(splits) > 1, max_per_class
        self.label_map, self.aliases = dict(label_map or {}), dict(aliases or {})
        self.kept: dict[tuple[str, str, str], dict] = {}
        self.heaps: dict[tuple[str, str], list] = {}
        self.seen: dict[str, tuple[str, str]] = {}
        self.mapping: dict[str, str | None] = {}
        self.skipped: Counter = Counter()
        self.unusable: list[dict] = []
        self.n_unusable = self.dups = self.conflicts = self.sampled_out = 0
        self.conflict_list: list[dict] = []

    def cls_of(self, raw, name: str) -> str | None:
        for key in (str(raw), name):
            if key in self.label_map:
                return self.label_map[key]
        return resolve(name, self.aliases)

    def _skip(self, origin: str, reason: str) -> None:
        self.n_unusable += 1
        if len(self.unusable) < _LISTED:
            self.unusable.append({"source": origin, "reason": reason})

    def _folder(self, split: str, cls: str) -> Path:
        return self.out / split.upper() / cls if self.nested else self.out / cls

    def add(self, row: pq_.Row) -> None:
        if row.why:
            self._skip(row.origin, row.why)
            return
        cls = self.cls_of(row.raw, row.name)
        self.mapping.setdefault(row.name, cls)
        if cls is None:
            self.skipped[row.name] += 1
            return
        data = bytes(row.data)
        kind = sniff(data)
        if kind is None:
            self._skip(row.origin, "not a PNG/JPEG/BMP/TIFF (magic number)")
            return
        sha = hashlib.sha256(data).hexdigest()
        key = (row.split, cls, sha)
        if key in self.kept or sha in self.seen and self.seen[sha] == (row.split, cls):
            self.dups += 1
            return
        if sha in self.seen:
            self.conflicts += 1
            if len(self.conflict_list) < _LISTED:
                self.conflict_list.append({"sha256": sha, "first": "/".join(self.seen[sha]), "also": row.origin,
                                           "also_as": f"{row.split}/{cls}"})
        else:
            self.seen[sha] = (row.split, cls)
        heap = self.heaps.setdefault((row.split, cls), [])
        if self.max is not None and len(heap) >= self.max and -heap[0][0] < int(sha, 16):
            self.sampled_out += 1
            return
        reason = check_image(data, kind[1])
        if reason:
            self._skip(row.origin, reason)
            return
        folder = self._folder(row.split, cls)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{sha}{kind[0]}").write_bytes(data)
        self.kept[key] = {"file_name": (folder / f"{sha}{kind[0]}").relative_to(self.out).as_posix(), "label": cls,
                          "split": row.split, "source_label": row.name, "sha256": sha,
                          "source": row.filename or row.origin}
        heapq.heappush(heap, (-int(sha, 16), sha))
        if self.max is not None and len(heap) > self.max:
            _, gone = heapq.heappop(heap)
            self.sampled_out += 1
            (self.out / self.kept.pop((row.split, cls, gone))["file_name"]).unlink()

    def finish(self) -> dict:
        rows = sorted(self.kept.values(),
                      key=lambda r: (self.splits.index(r["split"]), CLASSES.index(r["label"]), r["sha256"]))
        if not rows:
            seen = ", ".join(f"{k} ({v})" for k, v in self.skipped.most_common(12)) or "none"
            hint = "--label-map 0=neutrophil,..." if all(k.isdigit() for k in self.skipped) else "--alias NAME=CLASS"
            raise UserError(f"no image maps to one of wbcgen's classes ({', '.join(CLASSES)}); labels seen: {seen}. "
                            f"Map them with {hint}")
        write_metadata(self.out / "metadata.csv", COLUMNS, rows)
        by_split: dict[str, Counter] = {}
        for r in rows:
            by_split.setdefault(r["split"], Counter())[r["label"]] += 1
        counts = Counter(r["label"] for r in rows)
        return {"files": len(rows), "counts": {c: counts[c] for c in CLASSES if counts[c]},
                "counts_by_split": {s: {c: n[c] for c in CLASSES if n[c]} for s, n in by_split.items()},
                "skipped_labels": dict(self.skipped.most_common()), "label_mapping": self.mapping,
                "duplicates": self.dups, "duplicate_conflicts": self.conflicts, "conflicts": self.conflict_list,
                "n_unusable": self.n_unusable, "unusable": self.unusable, "sampled_out": self.sampled_out}


def _choose(available: Iterable[str], split: str | None) -> list[str]:
    have = list(dict.fromkeys(available))
    if split in (None, "", "all"):
        return have
    want = pq_.canonical_split(split)
    if want not in have:
        raise UserError(f"--split {split}: this dataset has the split(s) {', '.join(have)}")
    return [want]


def _check_splits(splits: list[str]) -> list[str]:
    for s in splits:  # split names from a card become folder names
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", s):
            raise UserError(f"the dataset has a split named {s!r}, which cannot be used as a folder name")
    return splits


def folder_rows(src: Path, splits: list[str]) -> Iterator[pq_.Row]:
    for rel, split, label in folder_items(src):
        if split in splits:
            data = (src / rel).read_bytes()
            yield pq_.Row(split, label, label, data, rel, rel, None if label else "image outside a class folder")


def folder_items(src: Path) -> list[tuple[str, str, str]]:
    """(relative path, split, label = parent folder) of every image of an ImageFolder repo."""
    out = []
    for d, subdirs, files in os.walk(src):
        subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))
        for f in sorted(files):
            if f.lower().endswith(FOLDER_IMAGES) and not f.startswith("."):
                rel = (Path(d) / f).relative_to(src).as_posix()
                parts = rel.split("/")[:-1]
                split = next((pq_.SPLIT_WORDS[p.lower()] for p in parts if p.lower() in pq_.SPLIT_WORDS), "train")
                label = parts[-1] if parts and parts[-1].lower() not in pq_.SPLIT_WORDS else ""
                out.append((rel, split, label))
    return out


def lay_out(src: Path, out: Path, kind: str, *, source: str, revision: str | None = None,
            split: str | None = "all", config: str | None = None, max_per_class: int | None = None,
            label_map: Mapping[str, str] | None = None, aliases: Mapping[str, str] | None = None,
            image_column: str | None = None, label_column: str | None = None,
            fetch_card: Callable[[], Path | None] | None = None, progress: bool = True) -> dict:
    """Lay out a parquet or ImageFolder dataset ``src`` into the (empty, temporary) folder ``out``."""
    meta, body = srcinfo.read_card(src)
    lic_meta, lic_body, card_dir = meta, body, None
    if not meta and not body and fetch_card is not None:  # refs/convert/parquet holds no card: licence from main
        card_dir = fetch_card()
        if card_dir is not None:
            lic_meta, lic_body = srcinfo.read_card(card_dir)
    prov: dict = {"kind": "wbcgen-download", "version": 1, "source": str(source), "format": kind,
                  "repo_id": None if Path(source).expanduser().exists() else str(source),
                  "revision": revision, "commit": srcinfo.commit_of(src), "downloaded_at": srcinfo.now(),
                  "license": srcinfo.licence(lic_meta), "citation": srcinfo.citation(lic_body),
                  "max_per_class": max_per_class}
    if kind == "parquet":
        shards, how = pq_.find_shards(src, meta, config)
        chosen = _choose((s.split for s in shards), split)
        shards = [s for s in shards if s.split in chosen]
        files = [pq_.open_shard(src, s.rel) for s in shards]       # every footer read before any image is written
        img, lab, classes = pq_.columns(files[0].schema_arrow, meta, how.get("config"), image_column, label_column)
        total = sum(f.metadata.num_rows for f in files)
        stream: Iterable[pq_.Row] = (r for s in shards for r in pq_.rows(src, s, img, lab, classes))
        prov.update(how, image_column=img, label_column=lab, class_names=classes,
                    shards=[{"path": s.rel, "split": s.split, "rows": f.metadata.num_rows}
                            for s, f in zip(shards, files)])
    else:
        items = folder_items(src)
        chosen = _choose((s for _, s, _ in items), split)
        total = sum(1 for _, s, _ in items if s in chosen)
        stream = folder_rows(src, chosen)
        prov.update(found_by="class folders", label_column="folder name")
    writer = Writer(out, splits=_check_splits(chosen), label_map=label_map, aliases=aliases,
                    max_per_class=max_per_class)
    for row in tqdm(stream, total=total, desc="laying out images", unit="img", disable=not progress):
        writer.add(row)
    report = writer.finish()
    # a synthetic set's generators' training lists (side files; from main for refs/convert/parquet)
    lists = "this revision" if copy_side_files(src, out) else \
        ("default branch" if copy_side_files(card_dir, out) else None)
    prov.update(splits=chosen, nested_splits=len(chosen) > 1, training_lists=lists, **report)
    srcinfo.write(out, prov)
    return {"layout": kind, **{k: prov[k] for k in ("files", "counts", "counts_by_split", "skipped_labels",
                                                     "duplicates", "duplicate_conflicts", "n_unusable",
                                                     "sampled_out", "splits", "license")},
            "provenance": srcinfo.PROVENANCE}
