"""``download`` and model loading: Hub repo (or local folder) → folders wbcgen reads.

Only the safe file types in :data:`SAFE_PATTERNS` are fetched or copied, a download is laid
out in a temp folder beside ``--out`` and renamed into place only when complete, and models
are loaded from safetensors + JSON with ``strict=True`` (nothing is ever unpickled).
``wbcgen.json`` is checked strictly: every pinned file (weights, configs, metadata.csv,
results.json) must be there with its sha256, and the classes found must be the ones it lists;
the card and reports may have been edited on the Hub. Symlinks leading out of the repo (or
out of the Hub cache entry) and images whose first bytes are not PNG/JPEG/BMP/TIFF are refused.
"""
from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from classifiers.runtime import UserError, atomic_write_json
from wbcgen.data import CLASSES
from wbcgen.outputs import refuse_overlap, staged_output, write_marker

from . import released
from .errors import call_hub
from .layout import (IMAGE_SUFFIXES, SAFE_PATTERNS, check_image, gan_runs, hub_layout_classes, inside, is_safe,
                     read_json, read_metadata, safe_relpath, write_metadata)
from .lists import SIDE_FILES, check_lists
from .publish import MANIFEST, check_out, check_repo_id, is_hashed, sha256_file

REPO_TYPES = ("dataset", "model")
#: What loading a model fetches: weights, JSON, card, and each generator's training list.
MODEL_PATTERNS = ["*.safetensors", "*.json", "*.md", "*train_images.csv"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_repo_id(source: str) -> bool:
    return bool(_REPO_ID.match(source)) and not source.startswith((".", "/", "~"))


def snapshot(repo_id: str, *, repo_type: str = "dataset", revision: str | None = None,
             allow_patterns: list[str] | None = None, cache_dir: str | Path | None = None, api: Any = None,
             sleep: Callable[[float], None] | None = None) -> Path:
    """``snapshot_download`` restricted to safe types, through the Hub cache (works offline)."""
    check_repo_id(repo_id)
    if repo_type not in REPO_TYPES:
        raise UserError(f"--repo-type must be dataset or model, got {repo_type!r}")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    path = call_hub(lambda: api.snapshot_download(repo_id, repo_type=repo_type, revision=revision,
                                                  cache_dir=cache_dir, allow_patterns=allow_patterns or SAFE_PATTERNS),
                    repo_id=repo_id, repo_type=repo_type, revision=revision, action="download", sleep=sleep)
    return Path(path)


def _source_dir(source: str | Path, *, repo_type: str, revision: str | None, cache_dir, api, sleep,
                allow_patterns: list[str] | None = None) -> Path:
    p = Path(source).expanduser()
    if p.exists():
        if not p.is_dir():
            raise UserError(f"{source} is a file; give a folder or a Hub repo id (USER/NAME)")
        if revision:
            raise UserError("--revision applies to Hub repos, not to the local folder " + str(source))
        return p
    if not is_repo_id(str(source)):
        raise UserError(f"{source} is neither an existing folder nor a Hub repo id of the form USER/NAME")
    return snapshot(str(source), repo_type=repo_type, revision=revision, cache_dir=cache_dir, api=api, sleep=sleep,
                    allow_patterns=allow_patterns)


def _roots(root: Path) -> list[Path]:
    """Where the files of ``root`` may resolve to: the folder itself, plus ``blobs/`` when it is a
    snapshot of the Hub cache (``<store>/snapshots/<commit>`` whose files link to ``<store>/blobs``)."""
    if root.parent.name == "snapshots" and (root.parent.parent / "blobs").is_dir():
        return [root, root.parent.parent / "blobs"]
    return [root]


def _refuse_outside_links(root: Path) -> None:
    roots = _roots(root)
    for d, subdirs, files in os.walk(root):
        subdirs[:] = [s for s in subdirs if not s.startswith(".")]
        for f in files:
            if not f.startswith(".") and not inside(Path(d) / f, roots):
                rel = (Path(d) / f).relative_to(root).as_posix()
                raise UserError(f"{rel} in {root} is a symlink to {os.path.realpath(Path(d) / f)}, outside the "
                                f"repo; refusing to read it")


def _safe_files(root: Path) -> list[str]:
    out, roots = [], _roots(root)
    for d, subdirs, files in os.walk(root):
        subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))
        for f in sorted(files):
            rel = (Path(d) / f).relative_to(root).as_posix()
            if not f.startswith(".") and is_safe(f):
                if not inside(Path(d) / f, roots):
                    raise UserError(f"{rel} in {root} is a symlink to {os.path.realpath(Path(d) / f)}, outside the "
                                    f"repo; refusing to read it")
                out.append(rel)
    return out


def _verify(root: Path, files: list[str], patterns: list[str] | None = None) -> dict | None:
    """Check ``wbcgen.json``: every pinned file present (among those ``patterns`` fetch) and
    unchanged, and for a GAN repo the class folders equal its ``classes``. Returns the manifest."""
    if MANIFEST not in files:
        return None
    manifest = read_json(root / MANIFEST)
    for rel, sha in (manifest.get("sha256") or {}).items():
        p = root / safe_relpath(rel, MANIFEST)
        if not is_hashed(rel) or (patterns and not any(fnmatch.fnmatch(rel, pat) for pat in patterns)):
            continue  # cards and reports may be edited (older manifests pinned them too)
        if not p.is_file():
            raise UserError(f"{rel} is listed in {MANIFEST} but missing from the repo: it is incomplete, "
                            f"push it again")
        if sha256_file(p) != sha:
            raise UserError(f"{rel} does not match its sha256 in {MANIFEST}: the download is corrupt or tampered")
    if manifest.get("kind") == "gan":
        _same_classes(manifest, list(hub_layout_classes(root)))
    return manifest


def _same_classes(manifest: dict, found: list[str]) -> None:
    listed = manifest.get("classes")
    if isinstance(listed, list) and sorted(listed) != sorted(found):
        raise UserError(f"{MANIFEST} lists the classes {', '.join(listed) or 'none'} but the repo holds "
                        f"{', '.join(found) or 'none'}: it is incomplete or was edited, push it again")


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.suffix.lower() in IMAGE_SUFFIXES:
        check_image(src, dest.name)
    shutil.copyfile(src, dest)  # follows the cache's symlinks into blobs/


def lay_out(src: Path, out: Path, *, progress: bool = True) -> dict:
    """Copy the safe files of ``src`` into ``out``. A ``metadata.csv`` dataset becomes flat
    ``<class>/<file>`` folders (Hub shards are merged) with ``file_name`` rewritten."""
    files = _safe_files(src)
    if not files:
        raise UserError(f"{src} holds no files wbcgen can use (safetensors, json, images, csv, md, html)")
    manifest = _verify(src, files)
    if "metadata.csv" not in files:
        for rel in tqdm(files, desc="copying", unit="file", disable=not progress):
            _copy(src / rel, out / rel)
        return {"layout": "files", "files": len(files)}
    cols, rows = read_metadata(src / "metadata.csv")
    used, out_rows, listed = set(), [], set()
    for r in tqdm(rows, desc="laying out images", unit="img", disable=not progress):
        rel = safe_relpath(r["file_name"], "metadata.csv")
        if rel.suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"metadata.csv lists {r['file_name']!r}, which is not a PNG/JPEG/BMP/TIFF image")
        if not (src / rel).is_file():
            raise UserError(f"metadata.csv lists {r['file_name']!r} but the download does not contain it")
        label = r["label"].strip()
        if not label or "/" in label or "\\" in label or label.startswith("."):
            raise UserError(f"metadata.csv has an unusable label {r['label']!r}")
        name, n = rel.name, 1
        while f"{label}/{name}" in used:  # two shards held the same file name
            name, n = f"{rel.stem}_{n}{rel.suffix}", n + 1
        used.add(f"{label}/{name}")
        listed.add(rel.as_posix())
        _copy(src / rel, out / label / name)
        out_rows.append({**r, "file_name": f"{label}/{name}"})
    counts: dict[str, int] = {}
    for r in out_rows:
        counts[r["label"].strip()] = counts.get(r["label"].strip(), 0) + 1
    if manifest is not None:
        _same_classes(manifest, list(counts))
    write_metadata(out / "metadata.csv", cols, out_rows)
    for rel in files:  # the card, generation.json, train_images.csv and other top-level text files
        if "/" not in rel and not rel.lower().endswith(IMAGE_SUFFIXES) and rel not in ("metadata.csv", MANIFEST):
            _copy(src / rel, out / rel)
    check_lists(out)  # the generators' training lists must match generation.json (else one sentence)
    if manifest is not None:  # metadata.csv changed (shards merged): re-pin what is here now
        pinned = {rel: sha256_file(out / rel) for rel in manifest.get("sha256") or {}
                  if is_hashed(rel) and (out / safe_relpath(rel, MANIFEST)).is_file()}
        atomic_write_json(out / MANIFEST, {**manifest, "sha256": pinned})
    return {"layout": "metadata", "files": len(out_rows), "counts": counts,
            "unlisted_images": sum(1 for f in files if f.lower().endswith(IMAGE_SUFFIXES) and f not in listed)}


def download(source: str | Path, out: str | Path, *, revision: str | None = None, repo_type: str = "dataset",
             overwrite: bool = False, cache_dir: str | Path | None = None, api: Any = None,
             sleep: Callable[[float], None] | None = None, progress: bool = True, **dataset_opts) -> dict:
    """Download a Hub repo (or read a local repo folder) into ``out`` as folders wbcgen reads.

    Parquet and ImageFolder datasets go through :func:`.released.lay_out` (``dataset_opts``:
    split, config, max_per_class, label_map, aliases, image_column, label_column).
    Returns ``{out, source, layout, files, counts?}``. Nothing is left at ``out`` on failure.
    """
    out = Path(out)
    if Path(source).expanduser().exists():  # a local folder: never write into, over or around it
        refuse_overlap(out, "--out", {"source": Path(source).expanduser()})
    check_out(out, overwrite, "--out", "download")
    src = _source_dir(source, repo_type=repo_type, revision=revision, cache_dir=cache_dir, api=api, sleep=sleep,
                      allow_patterns=released.DATASET_PATTERNS if repo_type == "dataset" else None)
    refuse_overlap(out, "--out", {"source": src})
    with staged_output(out, lambda: check_out(out, overwrite, "--out", "download")) as tmp:
        _refuse_outside_links(src)  # parquet / ImageFolder releases included
        kind = released.detect(src, repo_type)
        if kind is None:
            released.refuse_options(dataset_opts, src)
            report = lay_out(src, tmp, progress=progress)
        else:
            card = None
            if revision and is_repo_id(str(source)):
                card = lambda: _card_dir(str(source), cache_dir, api, sleep)  # noqa: E731
            report = released.lay_out(src, tmp, kind, source=str(source), revision=revision,
                                      fetch_card=card, progress=progress, **dataset_opts)
        write_marker(tmp, "download", source=str(source), revision=revision, repo_type=repo_type)
    return {"out": str(out), "source": str(source), **report}


def _card_dir(repo_id: str, cache_dir, api, sleep) -> Path | None:
    """The default branch's README.md, generation.json and train_images.csv (a pinned revision
    such as refs/convert/parquet holds only the parquet shards)."""
    try:
        path = snapshot(repo_id, cache_dir=cache_dir, api=api, sleep=sleep, allow_patterns=["README.md", *SIDE_FILES])
    except UserError:
        return None
    _refuse_outside_links(path)
    return path


# --------------------------------------------------------------------------- models


def load_pretrained(model_cls: type, path: str | Path, *, strict: bool = True, map_location: str = "cpu"):
    """``model_cls.from_pretrained`` on a LOCAL folder (model.safetensors + config.json), strict by
    default; a key mismatch or a bad file becomes a one-sentence :class:`UserError`."""
    path = Path(path)
    for f in ("model.safetensors", "config.json"):
        if not (path / f).is_file():
            raise UserError(f"{path} has no {f}; a pretrained folder needs model.safetensors and config.json")
    read_json(path / "config.json")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # huggingface_hub prints "Loading weights from ..."
            return model_cls.from_pretrained(str(path), strict=strict, map_location=map_location)
    except RuntimeError as e:
        msg = str(e)
        if "Missing key" in msg or "Unexpected key" in msg or "size mismatch" in msg:
            short = " ".join(msg.split())[:300]
            raise UserError(f"weights in {path / 'model.safetensors'} do not match {model_cls.__name__} "
                            f"(strict load): {short}") from None
        raise UserError(f"cannot load {path / 'model.safetensors'}: {' '.join(msg.split())[:200]}") from None
    except (TypeError, ValueError) as e:
        raise UserError(f"config.json in {path} does not fit {model_cls.__name__}: {e}") from None
    except Exception as e:  # safetensors raises its own error type for corrupt files
        if type(e).__name__ in ("SafetensorError", "HeaderTooLarge", "InvalidHeader"):
            raise UserError(f"{path / 'model.safetensors'} is corrupt or not a safetensors file") from None
        raise


def resolve_generator_source(source: str | Path, revision: str | None = None, *,
                             cache_dir: str | Path | None = None, api: Any = None,
                             sleep: Callable[[float], None] | None = None) -> Path:
    """A local folder with per-class generator subfolders (``<class>/model.safetensors`` +
    ``config.json``): the path itself when it exists locally, else the Hub snapshot of the
    model repo ``source`` (only safetensors/JSON/Markdown fetched; works with HF_HUB_OFFLINE=1)."""
    if Path(source).expanduser().exists():
        local = _source_dir(source, repo_type="model", revision=revision, cache_dir=None, api=None, sleep=None)
        if (local / MANIFEST).is_file():
            _verify(local, _safe_files(local))
        return local
    snap = _source_dir(source, repo_type="model", revision=revision, cache_dir=cache_dir, api=api, sleep=sleep,
                       allow_patterns=MODEL_PATTERNS)
    if not hub_layout_classes(snap):
        raise UserError(f"model repo {source} has no per-class generator folders (<class>/model.safetensors)")
    _verify(snap, _safe_files(snap), MODEL_PATTERNS)
    return snap


def resolve_generators(source: str | Path, revision: str | None = None, **kw) -> dict[str, Path]:
    """class → local generator folder (model.safetensors + config.json) for a Hub repo id, a Hub
    layout folder, a GAN run folder or a folder of runs."""
    root = resolve_generator_source(source, revision, **kw)
    found = hub_layout_classes(root)
    if not found:
        if (root / "model.safetensors").is_file() and (root / "config.json").is_file():
            raise UserError(f"{root} is a single model folder; give its parent or a GAN run/repo")
        found = {c: r / "generator" for c, r in gan_runs(root).items()}
    if not found:
        raise UserError(f"no generators found in {source}: expected <class>/model.safetensors or GAN runs")
    return found


def _generator_class():
    import wbcgen.gan as gan

    for name in ("Generator", "DCGANGenerator"):
        if isinstance(getattr(gan, name, None), type):
            return getattr(gan, name)
    G, _ = gan.create_gan("tiny")
    return type(G)


def load_generator_from_hub(repo_id_or_path: str | Path, cls: str, revision: str | None = None, *,
                            map_location: str = "cpu", model_cls: type | None = None, **kw):
    """The generator for ``cls`` from a Hub repo id or local folder, strict safetensors load, eval mode."""
    if cls not in CLASSES:
        raise UserError(f"unknown class {cls!r}; expected one of {', '.join(CLASSES)}")
    gens = resolve_generators(repo_id_or_path, revision, **kw)
    if cls not in gens:
        raise UserError(f"{repo_id_or_path} has no generator for {cls} (it has {', '.join(gens)})")
    g = load_pretrained(model_cls or _generator_class(), gens[cls], strict=True, map_location=map_location).eval()
    return g.for_class(cls) if getattr(g, "classes", None) else g  # a conditional model: its one-class view


def load_classifier_from_hub(repo_id_or_path: str | Path, revision: str | None = None, *,
                             map_location: str = "cpu", **kw):
    """A classifier from a Hub model repo or local run/repo folder: the class named by
    ``config.json["model"]``, loaded with ``from_pretrained(strict=True)``; also returns the config."""
    from classifiers import model_class

    folder = _source_dir(repo_id_or_path, repo_type="model", revision=revision, allow_patterns=MODEL_PATTERNS,
                         cache_dir=kw.get("cache_dir"), api=kw.get("api"), sleep=kw.get("sleep"))
    _verify(folder, _safe_files(folder), MODEL_PATTERNS)
    if not (folder / "config.json").is_file():
        raise UserError(f"{repo_id_or_path} has no config.json; it is not a classifier repo")
    config = read_json(folder / "config.json")
    if not isinstance(config.get("model"), str):
        raise UserError(f"config.json of {repo_id_or_path} names no classifier model ('model' key)")
    model = load_pretrained(model_class(config["model"]), folder, strict=True, map_location=map_location)
    return model, config
