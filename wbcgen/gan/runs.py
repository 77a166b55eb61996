"""Run folders: ``<out_root>/gan/<class>/<run-id>/`` and finding the newest one per class.

A class-conditional run (one model for several classes) lives in ``<out_root>/gan/all/<run-id>/``
with ``"cls": "all"`` and ``"classes": [...]`` in its config; :func:`find_runs` maps each of
its classes to it (the newer of a per-class and a conditional run wins).

A run folder holds ``config.json`` (``"kind": "wbcgen-gan-run"``), ``log.jsonl``,
``samples/step_XXXXXX.png``, ``checkpoints/{latest,best}.safetensors``, ``summary.json``
and, when training finished, ``generator/`` (``model.safetensors`` + ``config.json``).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from pathlib import Path

import torch
from torchvision.utils import save_image

from classifiers.runtime import LOCK_NAME, UserError, atomic_write_bytes, run_lock
from wbcgen.data.cellset import CLASSES
from wbcgen.outputs import output_kind, plain_name, refuse_overlap

RUN_KIND = "wbcgen-gan-run"


def new_run_dir(out_root: str | Path, cls: str, cfg_name: str, seed: int, name: str | None,
                overwrite: bool, inputs: dict | None = None, lock: contextlib.ExitStack | None = None) -> Path:
    """Create (or, with ``overwrite``, empty) ``<out_root>/gan/<cls>/<run-id>``. ``name`` must be one
    plain folder name; only a folder that is a wbcgen GAN run (or an empty stub) is replaced,
    never one that holds an input. With ``lock``, the run lock is taken before anything changes."""
    run_id = plain_name(name, "--name") if name is not None else f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg_name}-s{seed}"
    run_dir = Path(out_root) / "gan" / cls / run_id
    refuse_overlap(run_dir, "the run folder", inputs or {})
    if run_dir.exists() or run_dir.is_symlink():
        if run_dir.is_symlink() or not run_dir.is_dir():
            raise UserError(f"{run_dir} exists and is not a folder; choose another --name")
        if not _stub(run_dir):
            if output_kind(run_dir) != "gan-run":
                raise UserError(f"{run_dir} exists and is not a wbcgen GAN run, so it is left alone; "
                                "choose another --name or --out")
            if not overwrite:
                raise UserError(f"run folder {run_dir} already exists; pass --overwrite to replace it or --resume "
                                "to continue it")
    if lock is not None:
        lock.enter_context(run_lock(run_dir))
    for e in run_dir.iterdir() if run_dir.is_dir() else []:
        if e.name != LOCK_NAME:
            shutil.rmtree(e) if e.is_dir() and not e.is_symlink() else e.unlink()
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "samples").mkdir(exist_ok=True)
    return run_dir


def _stub(d: Path) -> bool:
    """True when ``d`` holds only empty folders (what a failed start could leave)."""
    return all(not f or set(f) <= {LOCK_NAME} for _, _, f in os.walk(d))


def read_run_config(run_dir: Path) -> dict:
    try:
        cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"{run_dir} is not a wbcgen GAN run folder (no readable config.json)") from None
    if cfg.get("kind") != RUN_KIND:
        raise UserError(f"{run_dir} is not a wbcgen GAN run folder (config.json kind is {cfg.get('kind')!r})")
    return cfg


def _is_run(p: Path) -> bool:
    try:
        return json.loads((p / "config.json").read_text(encoding="utf-8")).get("kind") == RUN_KIND
    except (OSError, ValueError, AttributeError):
        return False


def _is_generator(p: Path) -> bool:
    return (p / "model.safetensors").is_file() and (p / "config.json").is_file() and not _is_run(p)


def _runs_of(cls_dir: Path, need: str) -> list[Path]:
    runs = [p for p in cls_dir.iterdir() if p.is_dir() and _is_run(p)] if cls_dir.is_dir() else []
    if need == "checkpoint":
        runs = [p for p in runs if (p / "checkpoints" / "latest.safetensors").is_file()]
    elif need == "generator":
        runs = [p for p in runs if _has_weights(p)]
    return sorted(runs, key=run_age)


def run_age(run: Path) -> tuple:
    """The order of runs: ``config.json``'s modification time, then the folder name."""
    return (run / "config.json").stat().st_mtime, run.name


def _has_weights(run: Path) -> bool:
    return (run / "generator" / "model.safetensors").is_file() or any(
        (run / "checkpoints" / f).is_file() for f in ("best.safetensors", "latest.safetensors"))


def run_classes(p: Path) -> list[str]:
    """The classes a run folder or generator folder makes (several for a conditional model)."""
    try:
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cfg = {}
    if isinstance(cfg, dict) and isinstance(cfg.get("classes"), list) and cfg.get("cls") == "all":
        return [c for c in cfg["classes"] if c in CLASSES]
    return [read_run_config(p)["cls"]] if _is_run(p) else [_generator_class(p)]


def newest_run(out_root: str | Path, cls: str, need: str = "generator") -> Path | None:
    runs = _runs_of(Path(out_root) / "gan" / cls, need)
    return runs[-1] if runs else None


def find_runs(path: str | Path = "runs") -> dict[str, Path]:
    """Newest usable run (or generator folder) per class found at ``path``.

    ``path`` may be a run folder, a generator folder (``model.safetensors`` + ``config.json``),
    an output root holding ``gan/<class>/<run-id>/`` (what ``train-gan --out DIR`` writes),
    or a folder of ``<class>/<run-id>/`` or ``<class>/`` generator folders.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p} does not exist (expected a GAN run folder, a generator folder or a runs root)")
    if _is_run(p) or _is_generator(p):
        return {c: p for c in run_classes(p)}
    found: dict[str, Path] = {}
    for root in (p / "gan", p):
        cond = root / "all"  # a conditional model: a generator folder or runs
        cond_run = cond if _is_generator(cond) else (_runs_of(cond, "generator") or [None])[-1]
        cond_classes = run_classes(cond_run) if cond_run is not None else []
        here: dict[str, Path] = {}
        for cls in CLASSES:
            d = root / cls
            if cls in found:
                continue
            if d.is_dir() and _is_generator(d):
                here[cls] = d
            elif d.is_dir() and (runs := _runs_of(d, "generator")):
                here[cls] = runs[-1]
            if cls in cond_classes and (cls not in here or _mtime(cond_run) > _mtime(here[cls])):
                here[cls] = cond_run
        found |= here
    return {c: found[c] for c in CLASSES if c in found}


def _mtime(p: Path) -> float:
    return (p / "config.json").stat().st_mtime


def _generator_class(gen_dir: Path) -> str:
    cfg_file = gen_dir / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"generator config {cfg_file} is not UTF-8 text") from None
    except ValueError as e:
        raise UserError(f"generator config {cfg_file} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"generator config {cfg_file} must be a JSON object, not {type(cfg).__name__}")
    cls = cfg.get("cls")
    if cls in CLASSES:
        return cls
    name = gen_dir.name if gen_dir.name != "generator" else gen_dir.parent.name
    for c in CLASSES:
        if c in name.lower():
            return c
    why = "no 'cls' in its config.json" if cls is None else f"its config.json names the unknown class {cls!r}"
    raise UserError(f"cannot tell which class the generator in {gen_dir} makes ({why})")


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> None:
    """A PNG grid of float images in [0, 1], written atomically."""
    buf = io.BytesIO()
    save_image(images.float().cpu(), buf, format="png", nrow=nrow, padding=2)
    atomic_write_bytes(path, buf.getvalue())


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_evals(run: Path) -> list[dict]:
    """A run's selection-proxy records from its ``log.jsonl``, in order: ``{"step": s, "eval": {...}}``."""
    recs = (json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines())
    return [r for r in recs if "eval" in r]


def member_records(run: Path) -> list[dict]:
    """What each generator of a finished run did, from its ``summary.json``: one record per
    generator (``steps``, ``exported_step``, ``budget``) — one for an ordinary run, one per member
    for an ensemble (``members = k`` configs)."""
    try:
        summ = json.loads((Path(run) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{run} has no readable summary.json (is the run finished?): {e}") from None
    return summ["members"] if "members" in summ else [summ]


def budget_shortfall(run: Path, max_steps: int) -> dict | None:
    """Did the last ``--minutes`` budget stop this run's generators before the config's
    ``max_steps`` (the step its cells are best at)? ``None`` if not (or no cap, or no budget);
    else ``{"steps": [...], "max_steps", "minutes": used, "minutes_needed": at the same speed}``."""
    if not max_steps:
        return None
    recs = member_records(run)
    budgets = [r.get("budget") or [] for r in recs]
    if not any(b and b[-1].get("stopped_by") == "minutes" and r["steps"] < max_steps for r, b in zip(recs, budgets)):
        return None
    budgets = [b for b in budgets if b]
    spent = [sum(s["minutes"] for s in b) for b in budgets]  # every budgeted session of the generator
    need = sum(m * max_steps / max(b[-1]["stopped_at_step"], 1) for m, b in zip(spent, budgets))
    return {"steps": [r["steps"] for r in recs], "max_steps": max_steps, "minutes": round(sum(spent), 2),
            "minutes_needed": round(need, 1)}


def truncate_log(path: Path, step: int) -> None:
    """Drop records written after ``step`` (a resumed run re-creates them)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:
            continue
    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())
