"""``load_cells``: any supported folder → a validated, preprocessed :class:`CellSet`."""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from classifiers.runtime import UserError, save_safetensors_atomic

from . import layouts
from .cellset import CLASSES, CellSet
from .decode import BadImage, decode, open_rgb, parse_crop

CACHE_VERSION = 2  # 2: crop padding is the smear background (was the median border colour)


def sample_data_path() -> Path:
    """The small real PBC sample shipped inside the package (30 images per class, CC BY 4.0)."""
    return Path(str(resources.files("wbcgen") / "sample_data" / "pbc"))


def _read(path: Path) -> tuple[bytes | None, str | None]:
    try:
        with open(path, "rb") as f:
            return f.read(), None
    except OSError as e:
        return None, f"cannot read file ({e.strerror or type(e).__name__})"


def load_cells(path: str | Path | None = None, *, layout: str = "auto",
               aliases: Mapping[str, str] | None = None, label_map: Mapping[str, str] | None = None,
               ignore_unknown: bool = False, crop: str = "auto", size: int | None = 128,
               cache_dir: str | Path | None = None, progress: bool = True, workers: int = 2) -> CellSet:
    """Read a folder of WBC images into a :class:`CellSet` (uint8 N×3×size×size).

    ``path=None`` reads the embedded PBC sample. ``layout`` is ``auto``, ``folders``,
    ``csv`` or ``metadata``. Unreadable files are skipped and listed with a reason in
    ``CellSet.skipped``; label problems raise :class:`UserError`. The input folder is
    only ever read. ``path="hf://USER/NAME[@REV]"`` is a Hub dataset, downloaded once into
    wbcgen's cache (:mod:`wbcgen.hub.hfdata`) and read from there afterwards.
    """
    if isinstance(path, str) and path.startswith("hf://"):  # the one place hf:// is resolved
        from wbcgen.hub.hfdata import resolve as resolve_hf

        path = resolve_hf(path, label_map=label_map, aliases=aliases, progress=progress)
    root = Path(path) if path is not None else sample_data_path()
    if not root.exists():
        raise UserError(f"data path {layouts.display(root)} does not exist")
    if not root.is_dir():
        raise UserError(f"data path {layouts.display(root)} is not a folder")
    if size is not None and not 8 <= int(size) <= 2048:
        raise UserError(f"--size must be between 8 and 2048, got {size}")
    crop_t = parse_crop(crop)
    extra = dict(aliases or {})
    layout = layouts.detect_layout(root, extra) if layout == "auto" else layout
    if layout == "folders":
        items, notes = layouts.find_folders(root, extra, ignore_unknown)
    elif layout == "csv":
        items, notes = layouts.find_csv(root, dict(label_map or {}), extra, ignore_unknown)
    elif layout == "metadata":
        items, notes = layouts.find_metadata(root, extra, ignore_unknown)
    else:
        raise UserError(f"unknown layout {layout!r}; use auto, folders, csv or metadata")
    preprocessing = {"crop": crop, "size": size, "layout": layout}

    # 1. read bytes + sha256 (cheap) → manifest; 2. decode (expensive), or take it from the cache
    raw: list[tuple[Path, str, bytes]] = []
    skipped = list(notes)
    for p, cls in items:
        data, why = _read(p)
        if why:
            skipped.append({"path": layouts.display(p), "reason": why})
        else:
            raw.append((p, cls, data))
    shas = [hashlib.sha256(d).hexdigest() for _, _, d in raw]
    key = hashlib.sha256(json.dumps([preprocessing, CACHE_VERSION, [(layouts.display(p.relative_to(root)), c, s)
                                     for (p, c, _), s in zip(raw, shas)]]).encode()).hexdigest()[:32]
    cached = _cache_get(cache_dir, key)
    if cached is not None:
        images, keep, sizes, bad, fallbacks = cached
    else:
        crops = [crop_t] * len(raw)
        if crop_t == ("lab",):
            crops, lab_notes = lab_crops([d for _, _, d in raw], [p.relative_to(root) for p, _, _ in raw],
                                         [c for _, c, _ in raw], progress=progress, workers=workers)
        else:
            lab_notes = {}

        def work(j):
            info: dict = {}
            try:
                arr, wh = decode(raw[j][2], crops[j], size, info)
                return arr, wh, None, info.get("crop_fallback") or lab_notes.get(j)
            except BadImage as e:
                return None, None, str(e), None

        with ThreadPoolExecutor(max(1, workers)) as pool:
            results = list(tqdm(pool.map(work, range(len(raw))), total=len(raw), desc=f"reading {root.name}",
                                unit="img", disable=not progress, leave=False))
        keep = [i for i, r in enumerate(results) if r[2] is None]
        bad = {i: r[2] for i, r in enumerate(results) if r[2] is not None}
        sizes = [list(results[i][1]) for i in keep]
        fallbacks = {str(i): results[i][3] for i in keep if results[i][3]}
        arrs = [results[i][0] for i in keep]
        if size is None and len({a.shape for a in arrs}) > 1:
            raise UserError("images differ in size; pass --size to resize them to one square size")
        images = (torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous() if arrs
                  else torch.zeros((0, 3, size or 1, size or 1), dtype=torch.uint8))
        _cache_put(cache_dir, key, images, keep, sizes, bad, fallbacks)
    for i, reason in sorted(bad.items()):
        skipped.append({"path": layouts.display(raw[i][0]), "reason": reason})
    manifest = [{"path": layouts.display(raw[i][0].relative_to(root)), "label": raw[i][1],
                 "sha256": shas[i], "orig_size": sz} for i, sz in zip(keep, sizes)]
    for i, m in zip(keep, manifest):  # --crop cell / lab: why the cell-centred crop was not used
        if str(i) in fallbacks:
            m["crop_fallback"] = fallbacks[str(i)]
    by_sha: dict[str, list[str]] = {}
    for m in manifest:
        by_sha.setdefault(m["sha256"], []).append(m["path"])
    labels = torch.tensor([CLASSES.index(m["label"]) for m in manifest], dtype=torch.int64)
    return CellSet(images=images, labels=labels, classes=CLASSES, manifest=manifest,
                   source=layouts.display(root.resolve()), skipped=skipped,
                   duplicates=[v for v in by_sha.values() if len(v) > 1], preprocessing=preprocessing)


def lab_crops(datas, rel_paths, labels, progress: bool = False, workers: int = 2):
    """``--crop lab``: each image's ``("box", ...)`` crop and, by index, the reason where it is not
    centred on a detected cell. A lab's square side is ``LAB_MULTIPLE`` × the median side of its
    detected cells (labs: :func:`layouts.lab_groups`); an image without a detected cell gets
    the centred square of its lab's side; a lab without any detected cell the ``auto`` crop."""
    from .cellcrop import NoCell, cell_geometry, lab_side, square_box

    def find(data):
        try:
            im, wh = open_rgb(data)
        except BadImage as e:      # decode reports it again, as the image's skip reason
            return None, None, str(e)
        try:
            return cell_geometry(np.asarray(im, dtype=np.uint8)), wh, None
        except NoCell as e:
            return None, wh, f"no cell found ({e})"

    with ThreadPoolExecutor(max(1, workers)) as pool:
        found = list(tqdm(pool.map(find, datas), total=len(datas), desc="finding cells", unit="img",
                          disable=not progress, leave=False))
    crops: list[tuple] = [("auto",)] * len(datas)
    notes: dict[int, str] = {}
    for name, idx in layouts.lab_groups(rel_paths, labels).items():
        sides = [found[i][0][2] for i in idx if found[i][0] is not None]
        where = f"lab {name!r}" if name else "the set"
        if not sides:
            for i in idx:
                notes[i] = f"{found[i][2]}; no cell found in {where}, used --crop auto"
            continue
        side = lab_side(sides)
        for i in idx:
            geom, wh, why = found[i]
            if geom is not None:
                crops[i] = ("box", *square_box(geom[0], geom[1], side))
            elif wh is not None:   # readable, no cell: the centred square
                crops[i] = ("box", *square_box((wh[1] - 1) / 2, (wh[0] - 1) / 2, side))
                notes[i] = f"{why}; used the centred square of {where}'s scale"
    return crops, notes


def _cache_get(cache_dir, key):
    if not cache_dir:
        return None
    f = Path(cache_dir) / f"cells-{key}.safetensors"
    if not f.is_file():
        return None
    from safetensors import safe_open
    try:
        with safe_open(str(f), framework="pt") as h:
            meta = json.loads(h.metadata()["wbcgen"])
            images = h.get_tensor("images")
    except Exception:  # a broken cache entry is just a miss
        return None
    return images, meta["keep"], meta["sizes"], {int(k): v for k, v in meta["bad"].items()}, meta.get("fallbacks", {})


def _cache_put(cache_dir, key, images, keep, sizes, bad, fallbacks):
    if not cache_dir:
        return
    meta = json.dumps({"keep": keep, "sizes": sizes, "bad": bad, "fallbacks": fallbacks})
    save_safetensors_atomic({"images": images}, Path(cache_dir) / f"cells-{key}.safetensors", {"wbcgen": meta})


def _reference_files(root: Path, max_images: int) -> list[Path]:
    from .decode import IMAGE_EXTS

    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UserError(f"stain reference {layouts.display(root)} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if len(files) > max_images:
        files = [files[round(i * (len(files) - 1) / (max_images - 1))] for i in range(max_images)]
    return files


def reference_record(path: str | Path, max_images: int = 256) -> dict:
    """What a run records about its stain reference instead of the local path: the basename,
    the number of image files :func:`load_reference` reads and a sha256 of them (of the file's
    bytes for one image; of the sorted per-file sha256 list for a folder)."""
    root = Path(path)
    files = _reference_files(root, max_images)
    shas = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    digest = shas[0] if root.is_file() else hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()
    return {"name": root.resolve().name, "sha256": digest, "n_files": len(files)}


def load_reference(path: str | Path, *, crop: str = "auto", size: int | None = 128,
                   max_images: int = 256) -> torch.Tensor:
    """Unlabelled images for fitting a colour normaliser: one image file, or up to
    ``max_images`` image files found under a folder (sorted, evenly spaced); uint8 N×3×S×S."""
    root = Path(path)
    files = _reference_files(root, max_images)
    datas = [d for d in (_read(f)[0] for f in files) if d is not None]
    crops = [parse_crop(crop)] * len(datas)
    if crops and crops[0] == ("lab",):   # the reference is one lab
        crops = lab_crops(datas, [f"{i}" for i in range(len(datas))], [""] * len(datas))[0]
    arrs = []
    for data, c in zip(datas, crops):
        try:
            arrs.append(decode(data, c, size)[0])
        except BadImage:
            continue
    if not arrs:
        raise UserError(f"no readable image in the stain reference {layouts.display(root)}")
    if size is None and len({a.shape for a in arrs}) > 1:
        raise UserError("stain reference images differ in size; pass --size")
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()
