"""Provenance: which real images a generator (or classifier) was trained on, where they
came from, and the ``generation.json`` a synthetic dataset carries.

* ``train_images.csv`` in a GAN run folder: ``path,sha256,label`` (path relative to the
  data root) — exactly the images the run trained on. ``generator/train_images.csv`` is
  the same list as ``sha256,label`` only (it travels with the weights, e.g. to the Hub,
  so it holds no local paths). ``train_images_sha256`` everywhere is the sha256 of that
  ``generator/`` file's bytes: the same whether a generator came from a run or a download.
* :func:`identify_source` names the data set (``pbc``, ``zheng2018``, ``bccd``) only when
  every training image is in wbcgen's list of known image hashes; otherwise ``None``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path, PureWindowsPath

from classifiers.runtime import UserError, atomic_write_bytes

TRAIN_IMAGES = "train_images.csv"
LICENSES = {"pbc": "cc-by-4.0", "zheng2018": "gpl-3.0", "bccd": "mit"}


def _csv(header: list[str], rows) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def image_rows(cells) -> list[dict]:
    """``[{path, sha256, label}]`` for every image of a CellSet (manifest order)."""
    if not cells.manifest:
        raise UserError("these images have no manifest (sha256 per image); load them with wbcgen.data.load_cells")
    return [{"path": m["path"], "sha256": m["sha256"], "label": m["label"]} for m in cells.manifest]


def write_train_images(folder: str | Path, rows: list[dict], with_paths: bool = True) -> str:
    """Write ``folder/train_images.csv``; returns the sha256 of the path-free form (see module doc)."""
    lean = _csv(["sha256", "label"], [(r["sha256"], r["label"]) for r in rows])
    data = _csv(["path", "sha256", "label"], [(r["path"], r["sha256"], r["label"]) for r in rows]) if with_paths \
        else lean
    atomic_write_bytes(Path(folder) / TRAIN_IMAGES, data)
    return hashlib.sha256(lean).hexdigest()


def read_train_images(path: str | Path) -> list[dict] | None:
    """Rows of a ``train_images.csv`` (a file, or a folder holding one); None if absent."""
    p = Path(path)
    p = p / TRAIN_IMAGES if p.is_dir() else p
    if not p.is_file():
        return None
    try:
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read {p}: {type(e).__name__}") from None
    if rows and not {"sha256", "label"} <= set(rows[0]):
        raise UserError(f"{p} is not a training list (needs sha256 and label columns)")
    return rows


def train_images_hash(rows: list[dict]) -> str:
    """sha256 of the path-free ``sha256,label`` CSV of ``rows`` (= generator/train_images.csv)."""
    return hashlib.sha256(_csv(["sha256", "label"], [(r["sha256"], r["label"]) for r in rows])).hexdigest()


@lru_cache(maxsize=1)
def _known() -> dict:
    doc = json.loads((resources.files("wbcgen.provenance") / "known_sources.json").read_text(encoding="utf-8"))
    return {name: frozenset(s["prefixes"][i:i + 8] for i in range(0, len(s["prefixes"]), 8))
            for name, s in doc["sources"].items()}


KNOWN_NAMES = {"pbc-dev": "pbc", "pbc": "pbc", "zheng2018": "zheng2018", "bccd-aug": "bccd", "bccd": "bccd"}


def identify_source(shas, name: str | None = None) -> tuple[str | None, str | None]:
    """``(data_source, license)`` of a set of training images: a known data set when every
    image hash is in it (pbc-dev and the embedded sample → ``pbc``), else the data set named
    by the folder basename ``name`` if it is one of :data:`KNOWN_NAMES`, else ``(None, None)``."""
    shas = [s for s in shas if s]
    if shas:
        for src, known in _known().items():
            if all(s[:8] in known for s in shas):
                return src, LICENSES[src]
    src = KNOWN_NAMES.get((name or "").lower())
    return (src, LICENSES[src]) if src else (None, None)


def without_local_paths(obj):
    """``obj`` (JSON-like) with every absolute path string replaced by its basename: configs
    of runs made before provenance named their data folder, and a folder name is all that may
    leave the machine (it can name a patient cohort; the rest of the path says more)."""
    if isinstance(obj, dict):
        return {k: without_local_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [without_local_paths(v) for v in obj]
    if isinstance(obj, str) and len(obj) > 1 and "\n" not in obj and (
            obj.startswith(("/", "~")) or (len(obj) > 2 and obj[1:3] in (":\\", ":/"))):
        return PureWindowsPath(obj).name if ":" in obj[1:3] else Path(obj).name
    return obj


# ------------------------------------------------------------------------ generation.json
def generator_record(source, weights_sha256: str | None) -> tuple[dict, list[dict] | None]:
    """(one ``generators[<class>]`` entry of generation.json, the training rows or None) for
    a run or generator folder."""
    from wbcgen.gan.runs import _is_run, read_run_config

    p = Path(source) if source is not None else None
    run_config, rows, data_source, license_ = None, None, None, None
    if p is not None and p.is_dir():
        if _is_run(p):
            run_config = read_run_config(p)
            rows = read_train_images(p / "generator") or read_train_images(p)
        else:  # a generator folder; a Hub repo's <class>/ folder also holds the run's run_config.json
            for name in ("run_config.json", "config.json"):
                try:
                    run_config = json.loads((p / name).read_text(encoding="utf-8"))
                    break
                except (OSError, ValueError):
                    run_config = None
            rows = read_train_images(p)
        run_config = without_local_paths(run_config)  # runs made before provenance: basenames only
        data = (run_config or {}).get("data") or {}
        data_source, license_ = data.get("data_source"), data.get("license")
        recorded = data.get("train_images_sha256")
        if rows and recorded and train_images_hash(rows) != recorded:
            raise UserError(f"{p.name}/train_images.csv does not match the training list its run recorded "
                            "(train_images_sha256): it was edited or mixed up; use the generator as it was "
                            "trained or pushed")
        if rows and not data_source:
            data_source, license_ = identify_source([r["sha256"] for r in rows], data.get("name"))
    return {"weights_sha256": weights_sha256, "run_config": run_config, "data_source": data_source,
            "license": license_, "train_images_sha256": train_images_hash(rows) if rows else None,
            "n_train_images": len(rows) if rows else None}, rows


def write_generation_json(out_dir: str | Path, generators: dict, seed: int, n_per_class: int) -> dict:
    """Write ``<out>/generation.json`` (schema in the project's conventions) and
    ``<out>/train_images.csv`` (``generator,sha256,label``: every generator's training list,
    no paths; ``evaluate`` checks test images against it). ``generators`` maps class →
    (run or generator folder or None, weights sha256)."""
    recs = {c: generator_record(src, sha) for c, (src, sha) in generators.items()}
    doc = {"kind": "wbcgen-synthetic-dataset", "version": 1, "seed": int(seed), "n_per_class": int(n_per_class),
           "generators": {c: r for c, (r, _) in recs.items()}}
    atomic_write_bytes(Path(out_dir) / TRAIN_IMAGES, lean_lists_csv({c: rows or [] for c, (_, rows) in recs.items()}))
    atomic_write_bytes(Path(out_dir) / "generation.json", (json.dumps(doc, indent=2) + "\n").encode())
    return doc


def lean_lists_csv(lists: dict[str, list[dict]]) -> bytes:
    """``generator,sha256,label`` CSV of every generator's training rows (no paths)."""
    return _csv(["generator", "sha256", "label"], [(c, r["sha256"], r["label"]) for c, rows in lists.items()
                                                    for r in rows])


def dataset_lists(folder: str | Path) -> tuple[dict[str, list[dict]], list[str]] | None:
    """The training rows of every generator of a ``wbcgen sample`` folder, checked against its
    generation.json: ``({class: rows}, [classes whose list is not recorded])``, or None when the
    folder lacks generation.json or train_images.csv. A list whose hash differs from the one
    generation.json records is refused (:class:`UserError`)."""
    folder = Path(folder)
    gen = read_generation_json(folder)
    rows = read_train_images(folder / TRAIN_IMAGES)
    if gen is None or rows is None:
        return None
    by_gen: dict[str, list[dict]] = {}
    for r in rows:
        by_gen.setdefault(r.get("generator", ""), []).append(r)
    out, unknown = {}, []
    for cls, g in (gen.get("generators") or {}).items():
        mine = by_gen.get(cls)
        if not (g or {}).get("train_images_sha256") or not mine:
            unknown.append(cls)
            continue
        if train_images_hash(mine) != g["train_images_sha256"]:
            raise UserError(f"{folder.name}/{TRAIN_IMAGES} does not match generation.json for the {cls} generator "
                            "(edited or mixed up); sample again with `wbcgen sample` or download it again")
        out[cls] = mine
    return out, unknown


def read_generation_json(folder: str | Path) -> dict | None:
    p = Path(folder) / "generation.json"
    if not p.is_file():
        return None
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"{p} is not readable JSON") from None
    if doc.get("kind") != "wbcgen-synthetic-dataset":
        raise UserError(f"{p} is not a wbcgen generation record")
    return doc
