"""Parquet datasets as the Hub stores them → a stream of (split, label, image bytes) rows.

Which files make up which split is found in this order:

1. ``configs:`` → ``data_files`` in the card's YAML (what ``datasets.push_to_hub`` writes);
2. ``*.parquet`` under ``data/``, the split taken from the name (``data/train-00000-of-00002.parquet``);
3. the parquet-converter branch (``--revision refs/convert/parquet``): ``<config>/<split>/NNNN.parquet``
   (``partial-<split>`` when the converter stopped early);
4. any other ``*.parquet``, the split taken from folder or file names (``train`` when none).

Class names come from the card's ``dataset_info`` features (``class_label``), else from the
``huggingface`` schema metadata ``datasets`` writes into every shard. Rows are streamed in small
record batches (never a whole shard in memory). Parquet is data: nothing from the repo is
executed or unpickled (pyarrow >= 14.0.1 does not deserialise pickled extension types).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from classifiers.runtime import UserError

BATCH_ROWS = 32
SPLIT_WORDS = {"train": "train", "training": "train", "test": "test", "testing": "test", "eval": "test",
               "evaluation": "test", "validation": "validation", "valid": "validation", "val": "validation",
               "dev": "validation"}
IMAGE_NAMES = ("image", "img", "images", "picture", "pixel_values")
LABEL_NAMES = ("label", "labels", "class", "class_label", "cell_type", "celltype", "category", "target",
               "class_name", "cell_class", "type", "diagnosis")
_CONVERT = re.compile(r"^([^/]+)/(partial-)?([^/]+)/\d+\.parquet$")


@dataclass
class Shard:
    rel: str
    split: str


@dataclass
class Row:
    split: str
    raw: object            # the stored label value (int or str)
    name: str              # its class name (ClassLabel name for ints when known)
    data: bytes | None
    origin: str            # "<shard>#<row>"
    filename: str | None   # the image's original path/name, when the row carries one
    why: str | None = None  # why the row has no usable bytes


def canonical_split(word: str) -> str:
    w = word.lower()
    return SPLIT_WORDS.get(w, w)


def split_of(rel: str) -> str:
    """The split a shard belongs to, from its folders or the start of its file name."""
    parts = rel.split("/")
    for d in reversed(parts[:-1]):
        d = d[len("partial-"):] if d.startswith("partial-") else d
        if d.lower() in SPLIT_WORDS:
            return SPLIT_WORDS[d.lower()]
    first = re.split(r"[-_.]", parts[-1], maxsplit=1)[0].lower()
    return SPLIT_WORDS.get(first, "train")


def parquet_files(root: Path) -> list[str]:
    out = []
    for d, subdirs, files in os.walk(root):
        subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))
        out += [(Path(d) / f).relative_to(root).as_posix() for f in sorted(files)
                if f.lower().endswith(".parquet") and not f.startswith(".")]
    return out


def _glob_re(pattern: str) -> re.Pattern:
    rx = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            rx, i = rx + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            rx, i = rx + ".*", i + 2
        elif pattern[i] == "*":
            rx, i = rx + "[^/]*", i + 1
        elif pattern[i] == "?":
            rx, i = rx + "[^/]", i + 1
        else:
            rx, i = rx + re.escape(pattern[i]), i + 1
    return re.compile(rx + "$")


def _pick(options: list[str], wanted: str | None, what: str) -> str:
    if wanted is not None:
        if wanted not in options:
            raise UserError(f"--config {wanted!r} is not in this dataset (it has {', '.join(options)})")
        return wanted
    if "default" in options or len(options) == 1:
        return "default" if "default" in options else options[0]
    raise UserError(f"this dataset has several {what}s ({', '.join(options)}); choose one with --config NAME")


def _card_entries(config: dict) -> list[tuple[str, list[str]]]:
    df = config.get("data_files")
    if isinstance(df, str):
        return [("train", [df])]
    if isinstance(df, dict):
        return [(str(k), [v] if isinstance(v, str) else list(v)) for k, v in df.items()]
    out = []
    for e in df or []:
        if isinstance(e, str):
            out.append(("train", [e]))
        elif isinstance(e, dict) and e.get("path"):
            out.append((str(e.get("split") or "train"), [e["path"]] if isinstance(e["path"], str) else list(e["path"])))
    return out


def find_shards(root: Path, meta: dict, config: str | None = None) -> tuple[list[Shard], dict]:
    """The shards of the chosen config and the split each belongs to, plus how they were found."""
    files = parquet_files(root)
    if not files:
        return [], {}
    configs = [c for c in meta.get("configs") or [] if isinstance(c, dict) and c.get("data_files")]
    if configs:
        default = next((c["config_name"] for c in configs if c.get("default")), None)
        names = [str(c.get("config_name", "default")) for c in configs]
        name = _pick(names, config or default, "config")
        chosen = configs[names.index(name)]
        shards = []
        for split, patterns in _card_entries(chosen):
            rxs = [_glob_re(p.lstrip("./")) for p in patterns]
            shards += [Shard(f, canonical_split(split)) for f in files if any(r.match(f) for r in rxs)]
        if not shards:
            raise UserError(f"the card's data_files for config {name!r} match no parquet file in the download")
        return shards, {"found_by": "card data_files", "config": name}
    if any(f.startswith("data/") for f in files):
        return [Shard(f, split_of(f)) for f in files if f.startswith("data/")], {"found_by": "data/ folder"}
    conv = [(_CONVERT.match(f), f) for f in files]
    if all(m for m, _ in conv):
        name = _pick(sorted({m.group(1) for m, _ in conv}), config, "config")
        sel = [(m, f) for m, f in conv if m.group(1) == name]
        shards = [Shard(f, canonical_split(m.group(3))) for m, f in sel]
        partial = sorted({canonical_split(m.group(3)) for m, _ in sel if m.group(2)})
        return shards, {"found_by": "refs/convert/parquet layout", "config": name, "partial_splits": partial}
    return [Shard(f, split_of(f)) for f in files], {"found_by": "parquet files"}


# ------------------------------------------------------------------------------ features


def _features(meta: dict, config: str | None) -> list[dict]:
    """The card's feature list for ``config`` (``dataset_info`` may be one dict or one per config)."""
    infos = meta.get("dataset_info")
    infos = [infos] if isinstance(infos, dict) else [i for i in infos or [] if isinstance(i, dict)]
    infos += [c for c in meta.get("configs") or [] if isinstance(c, dict) and c.get("features")]
    for info in sorted(infos, key=lambda i: str(i.get("config_name", "default")) != (config or "default")):
        feats = info.get("features")
        if isinstance(feats, list):
            return [f for f in feats if isinstance(f, dict)]
    return []


def _card_names(feature: dict) -> list[str] | None:
    dtype = feature.get("dtype")
    cl = dtype.get("class_label") if isinstance(dtype, dict) else None
    names = cl.get("names") if isinstance(cl, dict) else None
    if isinstance(names, dict):
        try:
            return [str(names[k]) for k in sorted(names, key=lambda k: int(k))]
        except (TypeError, ValueError):
            return None
    return [str(n) for n in names] if isinstance(names, list) else None


def _schema_features(schema) -> dict:
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        feats = json.loads(raw)["info"]["features"] if raw else {}
    except (ValueError, KeyError, TypeError):
        return {}
    return feats if isinstance(feats, dict) else {}


def _is_image_type(t) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(t):
        return any(t.field(i).name == "bytes" and (pa.types.is_binary(t.field(i).type) or
                                                   pa.types.is_large_binary(t.field(i).type))
                   for i in range(t.num_fields))
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _is_label_type(t) -> bool:
    import pyarrow as pa

    def text(x):
        return pa.types.is_string(x) or pa.types.is_large_string(x)

    return pa.types.is_integer(t) or text(t) or (pa.types.is_dictionary(t) and text(t.value_type))


def columns(schema, meta: dict, config: str | None, image_column: str | None = None,
            label_column: str | None = None) -> tuple[str, str, list[str] | None]:
    """(image column, label column, class names or None) for a shard's arrow schema."""
    names = list(schema.names)
    card = {f.get("name"): f for f in _features(meta, config)}
    hf = _schema_features(schema)

    def check(col, flag, ok, what):
        if col not in names:
            raise UserError(f"{flag} {col!r} is not a column of this dataset (columns: {', '.join(names)})")
        if not ok(schema.field(col).type):
            raise UserError(f"{flag} {col!r} holds {schema.field(col).type}, not {what}")
        return col

    if image_column:
        img = check(image_column, "--image-column", _is_image_type, "image bytes")
    else:
        cands = [n for n in names if _is_image_type(schema.field(n).type)]
        tagged = [n for n in cands if card.get(n, {}).get("dtype") == "image"
                  or (hf.get(n) or {}).get("_type") == "Image"]
        named = [n for n in cands if n.lower() in IMAGE_NAMES]
        img = (tagged or named or cands or [None])[0]
        if img is None:
            raise UserError(f"no column holds image bytes (columns: {', '.join(names)}); pass --image-column")
    if label_column:
        lab = check(label_column, "--label-column", _is_label_type, "integer or text labels")
    else:
        cands = [n for n in names if n != img and _is_label_type(schema.field(n).type)]
        classy = [n for n in cands if _card_names(card.get(n, {})) or (hf.get(n) or {}).get("_type") == "ClassLabel"]
        named = sorted((n for n in cands if n.lower() in LABEL_NAMES), key=lambda n: LABEL_NAMES.index(n.lower()))
        pick = named or classy or (cands if len(cands) == 1 else [])
        if not pick:
            raise UserError(f"cannot tell which column holds the class (columns: {', '.join(names)}); "
                            "pass --label-column")
        lab = pick[0]
    classes = _card_names(card.get(lab, {}))
    if classes is None and (hf.get(lab) or {}).get("_type") == "ClassLabel" and isinstance(hf[lab].get("names"), list):
        classes = [str(n) for n in hf[lab]["names"]]
    return img, lab, classes


# -------------------------------------------------------------------------------- reading


def _arrow_error(e: BaseException) -> str:
    return " ".join(str(e).split())[:120] or type(e).__name__


def open_shard(root: Path, rel: str):
    """A ``pyarrow.parquet.ParquetFile`` (reads only the footer); a bad file is one sentence."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(root / rel, page_checksum_verification=True)  # CRCs are checked when written
    except (pa.ArrowException, OSError, ValueError) as e:
        raise UserError(f"{rel} is not a readable parquet file ({_arrow_error(e)}): the download is corrupt") from None


def rows(root: Path, shard: Shard, img: str, lab: str, classes: list[str] | None) -> Iterator[Row]:
    """Stream one shard's rows, ``BATCH_ROWS`` at a time."""
    import pyarrow as pa

    pf = open_shard(root, shard.rel)
    missing = [c for c in (img, lab) if c not in pf.schema_arrow.names]
    if missing:
        raise UserError(f"{shard.rel} has no column {missing[0]!r} (its columns: {', '.join(pf.schema_arrow.names)})")
    i = 0
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=[img, lab], use_threads=False):
            for image, label in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                origin = f"{shard.rel}#{i}"
                i += 1
                data, fname = (image.get("bytes"), image.get("path")) if isinstance(image, dict) else (image, None)
                if isinstance(label, int) and not isinstance(label, bool):
                    name = classes[label] if classes and 0 <= label < len(classes) else str(label)
                    why = "no label (-1)" if label < 0 else None
                else:
                    name, why = ("" if label is None else str(label)), (None if label is not None else "no label")
                if data is None:
                    why = why or ("image not embedded (only a path)" if fname else "no image")
                yield Row(shard.split, label, name, data, origin, fname, why)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise UserError(f"{shard.rel} is corrupt at row {i} ({_arrow_error(e)}): the download is incomplete "
                        "or damaged") from None


def shard_rows(root: Path, shard: Shard) -> int:
    return open_shard(root, shard.rel).metadata.num_rows
