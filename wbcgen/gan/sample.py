"""Loading trained generators and writing synthetic cells to a folder the data layer reads back.

Image ``i`` of class ``c`` for ``--seed s`` comes from ``z = randn(z_dim)`` drawn with a
torch.Generator seeded by ``mix(class_seed(s, c), i)``: each file depends only on
(generator weights, seed, class, index) and the batch size, not on ``-n``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_model

from classifiers.runtime import (LOCK_NAME, CheckpointError, UserError, atomic_write_bytes, check_batch_memory,
                                 load_checkpoint, pick_device)
from wbcgen.data.cellset import CLASSES
from wbcgen.gan.models import Generator
from wbcgen.gan.runs import _is_run, read_run_config
from wbcgen.outputs import (SAMPLE_HEADER, is_empty, is_legacy_temp, output_kind, plain_name, refuse_overlap,
                            staged_output)

_M1, _M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def class_seed(seed: int, cls: str) -> int:
    """The per-class seed derived from the user's seed (stable across machines)."""
    return int(hashlib.sha256(f"wbcgen-sample:{seed}:{cls}".encode()).hexdigest()[:15], 16)


def latents(n: int, z_dim: int, seed: int, start: int = 0) -> torch.Tensor:
    """z for indices ``start … start+n-1``; row i depends only on (seed, index)."""
    g = torch.Generator()
    out = torch.empty(n, z_dim)
    for i in range(n):
        g.manual_seed((seed * _M1 + (start + i) * _M2) % (2 ** 63))
        out[i] = torch.randn(z_dim, generator=g)
    return out


def load_generator(path: str | Path, device: str | None = None, cls: str | None = None) -> Generator:
    """A trained generator (eval mode) from a run folder or a ``generator/`` folder.

    ``cls``: for a class-conditional model, return its one-class view (``G.for_class(cls)``),
    which samples like a per-class generator; a per-class generator must make ``cls``.

    A run folder without ``generator/`` (training was stopped early) falls back to the EMA
    weights of ``checkpoints/best`` or ``checkpoints/latest``. The result carries
    ``weights_sha256`` (of the file it was read from) and ``source``.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"generator path {p} does not exist")
    if _is_run(p):
        if (p / "generator" / "model.safetensors").is_file():
            return load_generator(p / "generator", device, cls)
        meta = read_run_config(p)
        for name in ("best.safetensors", "latest.safetensors"):
            ck = p / "checkpoints" / name
            if ck.is_file():
                state = load_checkpoint(ck)
                extra = {"classes": meta["classes"]} if meta.get("classes") else {}
                g = Generator(meta["gan"] | {"cls": meta["cls"], "step": int(state["step"])} | extra)
                try:
                    g.load_state_dict(state["ema"] or state["G"])
                except (KeyError, RuntimeError) as e:
                    raise CheckpointError(f"checkpoint {ck} does not match its run's config ({type(e).__name__})") from None
                return _bind(_ready(g, ck, device), cls)
        raise UserError(f"run folder {p} has no generator/ and no checkpoint yet")
    weights, cfg_file = p / "model.safetensors", p / "config.json"
    if not weights.is_file() or not cfg_file.is_file():
        raise UserError(f"{p} is neither a GAN run folder nor a generator folder (model.safetensors + config.json)")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
        g = Generator(config)
    except (ValueError, TypeError, KeyError, UserError) as e:
        raise CheckpointError(f"generator config {cfg_file} is invalid ({e})") from None
    try:
        load_model(g, str(weights), strict=True)
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"generator weights {weights} are corrupt or do not match config.json "
                              f"({type(e).__name__})") from None
    return _bind(_ready(g, weights, device), cls)


def _bind(g: Generator, cls: str | None):
    """The one-class view of a conditional generator (a per-class generator is returned as is)."""
    if cls is None or not g.classes:
        return g
    if cls not in g.classes:
        raise UserError(f"the conditional generator {g.source} makes {', '.join(g.classes)}, not {cls}")
    return g.for_class(cls)


def _ready(g: Generator, weights: Path, device: str | None) -> Generator:
    g.weights_sha256 = file_sha256(weights)
    g.source = str(weights)
    return g.eval().requires_grad_(False).to(pick_device(device))


@torch.inference_mode()
def generate(G: Generator, n: int, *, seed: int, batch_size: int = 250, device: str | None = None,
             start: int = 0) -> torch.Tensor:
    """``n`` images as uint8 N×3×128×128 (CPU), from the BN-folded eval-mode generator.

    Every batch is exactly ``batch_size`` latents (the last one padded with the following
    indices), so image ``i`` is computed the same way whatever ``n`` is; a different batch
    size, thread count or device may change the lowest bit of a few pixels.
    """
    if n < 1:
        raise UserError(f"the number of images must be positive (got {n})")
    if getattr(G, "classes", None):
        raise UserError(f"this generator is class-conditional ({', '.join(G.classes)}): sample one class "
                        f"with G.for_class(name) or load_generator(path, cls=name)")
    dev = pick_device(device) if device is not None else next(G.parameters()).device
    f = G.folded().to(dev, memory_format=torch.channels_last)  # faster on CPU (oneDNN) and CUDA
    bs = max(1, int(batch_size))
    z = latents(-(-n // bs) * bs, G.z_dim, seed, start)
    out = torch.empty(n, 3, 128, 128, dtype=torch.uint8)
    for i in range(0, n, bs):
        x = f(z[i:i + bs].to(dev))[: n - i]
        out[i:i + len(x)] = x.mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu()
    return out


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_pngs(images: torch.Tensor, folder: Path, names: list[str], workers: int = 2) -> None:
    """Encode with PIL in a thread pool (zlib releases the GIL)."""
    arrs = images.permute(0, 2, 3, 1).contiguous().numpy()

    def one(i: int) -> None:
        (folder / names[i]).write_bytes(_png(arrs[i]))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        list(ex.map(one, range(len(names))))


def sample_to_folder(generators: dict, n: int, out_dir: str | Path, seed: int = 0, *, batch_size: int = 250,
                     device: str | None = None, overwrite: bool = False, progress: bool = True,
                     workers: int = 2, timings: dict | None = None,
                     extra_files: dict[str, bytes] | None = None) -> Path:
    """Write ``n`` images per class to ``<out>/<class>/<class>_NNNNNN.png`` + ``<out>/metadata.csv``.

    ``generators`` maps class names to :class:`Generator` objects or run/generator paths.
    Whole or nothing: the complete dataset (class folders, ``metadata.csv`` and ``extra_files``,
    name → bytes, e.g. provenance JSON) is written to one temp folder beside ``out`` and renamed
    into place at the end, under the output lock. ``overwrite`` replaces only an earlier
    ``wbcgen sample`` dataset. A killed run leaves only a temp folder that the next run removes;
    sampling is deterministic, so rerunning the command gives the same files. ``timings``
    (optional dict) receives per-class generation and PNG-writing seconds.
    """
    from tqdm.auto import tqdm

    if n < 1:
        raise UserError(f"-n must be a positive number of images per class (got {n})")
    if not generators:
        raise UserError("no generators to sample from")
    for cls in generators:
        if cls not in CLASSES:
            raise UserError(f"unknown class {cls!r}; choose from {', '.join(CLASSES)}")
    check_batch_memory(batch_size, 12 * 4 * 3 * 128 * 128, device, "--batch-size")
    out = Path(out_dir)
    for c, g in generators.items():
        src = getattr(g, "source", None) if isinstance(g, torch.nn.Module) else g
        refuse_overlap(out, "--out", {f"generator ({c})": Path(src).parent if isinstance(g, torch.nn.Module) and src
                                      else src})
    _check_replaceable(out, overwrite)
    # load every generator before writing anything, so a bad one fails fast
    gens = {c: (g.for_class(c) if getattr(g, "classes", None) else g) if isinstance(g, torch.nn.Module)
            else load_generator(g, device, cls=c)
            for c, g in sorted(generators.items(), key=lambda kv: CLASSES.index(kv[0]))}
    from wbcgen.provenance import generator_record

    for c, (src, sha) in _sources(generators, gens).items():  # a tampered training list fails before any image
        generator_record(src, sha)
    # check again under the lock, now that no other writer can change it
    with staged_output(out, lambda: _check_replaceable(out, overwrite)) as tmp:
        _write_dataset(gens, n, tmp, seed, batch_size, device, progress, workers, timings, tqdm)
        for name, data in (extra_files or {}).items():
            atomic_write_bytes(tmp / plain_name(name, "extra file name"), data)
        write_generation(tmp, generators, gens, seed, n)
    return out


def _write_dataset(gens, n, tmp, seed, batch_size, device, progress, workers, timings, tqdm) -> None:
    rows = []
    for cls in tqdm(gens, desc="sample", unit="class", disable=not progress):
        g = gens[cls]
        sha = getattr(g, "weights_sha256", "")
        t0 = time.perf_counter()
        imgs = generate(g, n, seed=class_seed(seed, cls), batch_size=batch_size, device=device)
        t1 = time.perf_counter()
        names = [f"{cls}_{i:06d}.png" for i in range(n)]
        (tmp / cls).mkdir()
        write_pngs(imgs, tmp / cls, names, workers)
        if timings is not None:
            timings[cls] = {"generate_s": round(t1 - t0, 3), "write_s": round(time.perf_counter() - t1, 3), "n": n}
        rows += [(f"{cls}/{name}", cls, seed, i, sha) for i, name in enumerate(names)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SAMPLE_HEADER)
    w.writerows(rows)
    atomic_write_bytes(tmp / "metadata.csv", buf.getvalue().encode())


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """``out`` may be missing, empty, or (with ``overwrite``) a dataset ``wbcgen sample`` wrote and
    holding nothing else; anything else is refused without touching it."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"output {out} exists and is not a folder; choose another --out")
    if not out.is_dir() or is_empty(out) or all(e.name == LOCK_NAME or is_legacy_temp(e) for e in out.iterdir()):
        return
    if output_kind(out) != "synthetic-dataset":
        raise UserError(f"output folder {out} is not empty and is not a wbcgen sample dataset (no wbcgen "
                        "metadata.csv), so it is left alone; choose an empty or new --out")
    listed = _listed(out)
    for e in sorted(out.iterdir()):
        if e.name in ("metadata.csv", "generation.json", "train_images.csv", LOCK_NAME) or is_legacy_temp(e):
            continue  # an older sample's own temp folder: removed under the lock (wbcgen.outputs)
        if e.name not in CLASSES or not e.is_dir() or e.is_symlink():
            raise UserError(f"{out} holds {e.name}, which wbcgen sample did not write, so the folder is left "
                            "alone; move it away or choose another --out")
        for f in e.iterdir():
            if f"{e.name}/{f.name}" not in listed:
                raise UserError(f"{f} is not listed in {out / 'metadata.csv'}, so wbcgen did not write it and "
                                "the folder is left alone; move it away or choose another --out")
    if not overwrite:
        raise UserError(f"output folder {out} already holds a wbcgen sample dataset; pass --overwrite to replace it")


def _listed(out: Path) -> set[str]:
    try:
        with open(out / "metadata.csv", newline="", encoding="utf-8") as f:
            return {r.get("file_name", "") for r in csv.DictReader(f)}
    except (OSError, UnicodeDecodeError, csv.Error):
        return set()


def write_generation(out: Path, generators: dict, gens: dict, seed: int, n: int) -> None:
    """``generation.json`` beside metadata.csv: per class the generator's weights hash, run
    config, data source/licence and training-list hash (wbcgen.provenance)."""
    from wbcgen.provenance import write_generation_json

    write_generation_json(out, _sources(generators, gens), seed, n)


def _sources(generators: dict, gens: dict) -> dict:
    """class → (run or generator folder or None, weights sha256) for generation.json."""
    def where(c):
        src = generators[c]
        if isinstance(src, torch.nn.Module):
            w = getattr(src, "source", None)
            return Path(w).parent if w else None
        return Path(src)

    return {c: (where(c), getattr(g, "weights_sha256", None) or None) for c, g in gens.items()}
