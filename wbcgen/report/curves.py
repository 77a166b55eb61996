"""Loss curves from training logs (JSONL or CSV), drawn as inline SVG."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from wbcgen.report import html as H

SKIP = {"step", "epoch", "fold", "seconds", "time", "time_s", "wall", "lr", "images_per_s", "img_per_s", "it", "iter",
        "t", "kimg"}


def read_log(path: Path) -> list[dict]:
    """Rows of a ``log.jsonl`` or ``*.csv`` log (bad lines skipped)."""
    if not path.is_file():
        return []
    rows = []
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                rows.append({k: _num(v) for k, v in r.items()})
        return rows
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict):
            rows.append(r)
    return rows


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _flatten(r: dict) -> dict:
    """One level of nesting flattened: ``{"eval": {"fd": 3}}`` → ``{"eval.fd": 3}``."""
    out = {}
    for k, v in r.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def classifier_curves(log: Path, title: str) -> str:
    """Training loss and validation accuracy per epoch, one line per fold."""
    rows = read_log(log)
    if not rows:
        return ""
    folds = sorted({r.get("fold", 0) for r in rows})
    loss, val = {}, {}
    for f in folds:
        rs = [r for r in rows if r.get("fold", 0) == f]
        name = f"split {f + 1}" if len(folds) > 1 else "train"
        loss[name] = [(r.get("epoch"), r.get("loss")) for r in rs if _finite(r.get("loss"))]
        key = "val_balanced_accuracy" if any("val_balanced_accuracy" in r for r in rs) else "val_accuracy"
        val[name] = [(r.get("epoch"), r.get(key)) for r in rs if _finite(r.get(key))]
    out = [f"<h3>{H.esc(title)}</h3><div class=\"pair\">",
           H.svg_lines(loss, title="training loss", xlabel="epoch", ylabel="loss", logy=True)]
    if any(val.values()):
        out.append(H.svg_lines(val, title="validation (balanced) accuracy", xlabel="epoch", ylabel="accuracy",
                               ylim=(0.0, 1.0)))
    out.append("</div>")
    return "".join(out)


def gan_curves(rows: list[dict], max_points: int = 600) -> str:
    """Every numeric loss-like column against the step (or epoch), thinned to ``max_points``."""
    if not rows:
        return H.note("no training log found")
    rows = [_flatten(r) for r in rows]
    xkey = "step" if any("step" in r for r in rows) else ("epoch" if any("epoch" in r for r in rows) else None)
    keys = []
    for r in rows:
        for k, v in r.items():
            if k not in SKIP and k not in keys and _finite(v):
                keys.append(k)
    losses = [k for k in keys if "loss" in k.lower()]
    quality = [k for k in keys if k.lower().endswith(("fd", "fid", "kid"))]
    others = [k for k in keys if k not in losses and k not in quality]
    stride = max(1, len(rows) // max_points)
    thin = rows[::stride]

    def series(ks):
        return {k: [(r.get(xkey, i) if xkey else i, r.get(k)) for i, r in enumerate(thin) if _finite(r.get(k))]
                for k in ks}

    out = ["<div class=\"pair\">"]
    if losses:
        out.append(H.svg_lines(series(losses), title="GAN losses", xlabel=xkey or "row", ylabel="loss"))
    if quality:
        out.append(H.svg_lines(series(quality), title="quality proxy (lower is better)", xlabel=xkey or "row",
                               ylabel="distance"))
    if others:
        out.append(H.svg_lines(series(others[:6]), title="other logged values", xlabel=xkey or "row", ylabel="value"))
    out.append("</div>")
    return "".join(out)
