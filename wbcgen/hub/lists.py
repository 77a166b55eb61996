"""The generators' training lists in Hub repos, so that a download can be leakage-checked.

* GAN repo: ``<folder>/train_images.csv`` (``sha256,label``) beside each generator's weights:
  the run's ``generator/train_images.csv``, checked against the ``train_images_sha256`` the run
  recorded in its config; ``<folder>/run_config.json`` keeps folder names only.
* dataset repo: ``generation.json`` and ``train_images.csv`` (``generator,sha256,label``) at the
  root, checked against each other (:func:`wbcgen.provenance.dataset_lists`).

Both are rewritten from their rows in the path-free form, so no local path is ever pushed;
their sha256 is pinned in ``wbcgen.json`` like every other CSV/JSON file.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from classifiers.runtime import UserError, atomic_write_bytes
from wbcgen.data import CLASSES
from wbcgen.provenance import (TRAIN_IMAGES, dataset_lists, lean_lists_csv, read_train_images, train_images_hash,
                               without_local_paths, write_train_images)

#: What a dataset repo carries beside metadata.csv for provenance (root files).
SIDE_FILES = ("generation.json", TRAIN_IMAGES)
GENERATION_KIND = "wbcgen-synthetic-dataset"


def _per_class(rows: list[dict]) -> dict[str, int]:
    n = Counter(r["label"] for r in rows)
    return {c: n[c] for c in (*CLASSES, *sorted(set(n) - set(CLASSES))) if n[c]}


def _ours(folder: Path) -> bool:
    """Whether ``folder/generation.json`` is wbcgen's (another tool's file of that name is not
    ours to interpret: it travels as it is, without lists)."""
    try:
        return json.loads((folder / "generation.json").read_text(encoding="utf-8")).get("kind") == GENERATION_KIND
    except (OSError, ValueError, AttributeError):
        return False


def scrub_run_config(path: Path) -> dict:
    """A staged ``<class>/run_config.json`` without local paths (runs made before provenance
    named their data folder): rewritten in place when needed (a new file, so a hard link to
    the run's own config.json is replaced, not changed); returns its content."""
    from .layout import read_json

    cfg = read_json(path)
    clean = without_local_paths(cfg)
    if clean != cfg:
        atomic_write_bytes(path, (json.dumps(clean, indent=2) + "\n").encode())
    return clean


def stage_gan_list(gen: Path, run: Path, run_cfg: dict, root: Path, folder: str, files: list[str]) -> dict | None:
    """Write ``root/<folder>/train_images.csv`` (sha256,label) for one generator folder of a GAN
    repo (listed in ``files``); returns ``{n, sha256, per_class}`` or None when the run recorded
    no training list."""
    rows = read_train_images(gen) or (read_train_images(run) if run != gen else None)
    if not rows:
        return None
    recorded = (run_cfg.get("data") or {}).get("train_images_sha256") if isinstance(run_cfg, dict) else None
    digest = train_images_hash(rows)
    if recorded and recorded != digest:
        raise UserError(f"the training list of the {folder} generator ({run.name}/{TRAIN_IMAGES}) does not match "
                        f"the train_images_sha256 its run recorded: it was edited or mixed up, so it is not pushed")
    (root / folder).mkdir(parents=True, exist_ok=True)
    write_train_images(root / folder, rows, with_paths=False)
    files.append(f"{folder}/{TRAIN_IMAGES}")
    return {"n": len(rows), "sha256": digest, "per_class": _per_class(rows)}


def stage_dataset_lists(root: Path, dest: Path, files: list[str]) -> dict | None:
    """Write ``dest/train_images.csv`` (generator,sha256,label, listed in ``files``) for a
    ``wbcgen sample`` folder whose generation.json records the lists; returns
    ``{generator: {n, sha256}}`` or None."""
    found = dataset_lists(root) if _ours(root) else None  # refuses a list that does not match generation.json
    if found is None:
        return None
    lists, _ = found
    atomic_write_bytes(dest / TRAIN_IMAGES, lean_lists_csv(lists))
    files.append(TRAIN_IMAGES)
    return {c: {"n": len(rows), "sha256": train_images_hash(rows)} for c, rows in lists.items()}


def check_lists(folder: Path) -> None:
    """Refuse (one sentence) a folder whose wbcgen generation.json and train_images.csv disagree."""
    if _ours(folder):
        dataset_lists(folder)


def copy_side_files(src: Path | None, out: Path) -> bool:
    """Copy ``generation.json`` + ``train_images.csv`` of a downloaded dataset from ``src`` into
    ``out`` (both or neither) and check that they agree; returns whether they were copied."""
    if src is None or not all((src / f).is_file() for f in SIDE_FILES) or not _ours(src):
        return False
    for f in SIDE_FILES:
        shutil.copyfile(src / f, out / f)  # follows the Hub cache's symlinks into blobs/
    dataset_lists(out)  # a list that does not match generation.json is refused in one sentence
    return True
