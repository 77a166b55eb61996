"""``wbcgen report RUN_DIR``: one self-contained HTML page for a GAN run, a classifier run
or an evaluation run. Images are inline (base64 data URIs), charts are inline SVG, there
are no external requests; a tiny inline script only checks that every image decoded.

>>> from wbcgen.report import write_report
>>> write_report("runs/evaluate/synthetic")        # -> runs/evaluate/synthetic/report.html
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from classifiers.runtime import UserError, atomic_write_text
from wbcgen.report import html as H

KINDS = ("evaluation", "classifier", "gan")


def _json(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return d if isinstance(d, dict) else None


def detect_kind(run: Path) -> str:
    """``evaluation`` (results.json with train_on), ``classifier`` (config.json with a model
    and model_args) or ``gan`` (a generator/ folder, samples/ or a GAN config)."""
    res = _json(run / "results.json")
    if res is not None and "train_on" in res:
        return "evaluation"
    cfg = _json(run / "config.json") or {}
    if "model_args" in cfg and "model" in cfg:
        return "classifier"
    if (run / "generator").is_dir() or (run / "samples").is_dir() or "gan" in json.dumps(cfg)[:2000].lower():
        return "gan"
    if res is not None and "test" in res:
        return "classifier"
    raise UserError(f"{run} is not a GAN run, classifier run or evaluation run (no results.json/config.json "
                    "that wbcgen recognises)")


def build_report(run_dir: str | Path, real=None) -> tuple[str, str]:
    """``(html, kind)`` for a run folder; ``real`` (a GAN run): the folder holding its
    training images (found by sha256, see :func:`wbcgen.report.runs.real_images`)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"run folder {run} does not exist")
    kind = detect_kind(run)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if kind == "evaluation":
        from wbcgen.report.evaluation import sections

        res = _json(run / "results.json")
        body = sections(run, res)
        title = f"wbcgen evaluation — train on {res['train_on']}"
    elif kind == "classifier":
        from wbcgen.report.runs import classifier_sections

        body, title = classifier_sections(run)
    else:
        from wbcgen.report.runs import gan_sections

        body, title = gan_sections(run, real)
    return H.page(title, body, subtitle=f"{run.resolve()} · {kind} run · report written {stamp}"), kind


def write_report(run_dir: str | Path, out: str | Path | None = None, overwrite: bool = False, real=None) -> Path:
    """Write the report (default ``RUN_DIR/report.html``) and return its path."""
    if real is not None and not Path(real).is_dir():
        raise UserError(f"--real {real} is not a folder")
    html, _ = build_report(run_dir, real)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    if path.exists() and (path.is_dir() or path.suffix.lower() not in (".html", ".htm")):
        raise UserError(f"{path} exists and is not an HTML file, so it is left alone; choose another --out")
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists; pass --overwrite to replace it")
    atomic_write_text(path, html)
    return path


__all__ = ["KINDS", "build_report", "detect_kind", "write_report"]
