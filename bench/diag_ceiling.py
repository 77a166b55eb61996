"""What TSTR could reach with a perfect generator (issue 12, session 22): the benchmark's TSTR protocol run
on REAL cells of the train part instead of synthetic ones.

``bench_quality.py`` trains its TSTR W-Net and WBCsNet on 1,000 synthetic cells per class (5 epochs, 3
classifier seeds) and tests them on the real test part. Here the training set is 1,000 cells per class
drawn with replacement from the GANs' own training part (split seed 0; same size and class proportions as
a synthetic row), in two views:

- ``real``    the cells as the GANs' training data holds them (128 px);
- ``real64``  the same cells through a 64-px generator's bottleneck: 2×2 area-downsampled (what the fast64
              discriminator sees) and bilinearly upsampled back to 128 px (the fixed upsample every fast64
              generator ends with) — a perfect fast64 generator's cells.

- ``real64-uN`` real64 drawn from only N cells per class (seeded), then resampled to 1,000 per class: what a
              generator that repeats N cells of each class could reach at best.
- ``real32``  the same through a 32-px bottleneck (4×4 area average, bilinear back to 128 px): what a generator
              learnt at 32 px (4× cheaper steps) could reach at best (session 41); ``real32-uN`` likewise.

    python bench/diag_ceiling.py real real64        # -> bench/diag_ceiling.jsonl, one line per view
    python bench/diag_ceiling.py real64-u30 real64-u100
    python bench/diag_ceiling.py real32

Run folders under runs/diag-ceiling/VIEW/ (finished classifiers are read back, not retrained).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_quality as bq  # noqa: E402
from wbcgen.data import CLASSES, load_cells  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402
from wbcgen.gan.models import _upsample  # noqa: E402


def through(images: torch.Tensor, size: int = 64) -> torch.Tensor:
    """uint8 N×3×S×S -> area average down to ``size`` px (64: the fast64 D's 2×2) -> the fast64 G's fixed
    bilinear upsample back to S -> uint8."""
    out = torch.empty_like(images)
    f = images.shape[-1] // size
    for i in range(0, len(images), 256):
        x = _upsample(F.avg_pool2d(images[i:i + 256].float() / 255, f), images.shape[-1])
        out[i:i + 256] = (x * 255).round().clamp(0, 255).to(torch.uint8)
    return out


def through_64(images: torch.Tensor) -> torch.Tensor:
    return through(images, 64)


def _view(view: str) -> tuple[int, int] | None:
    """(bottleneck px or 0 for none, unique cells per class or 0) of a view name; None if unknown."""
    base, _, u = view.partition("-u")
    if base == "real" and not u:
        return 0, 0
    if base in ("real64", "real32") and (not u or u.isdigit()):
        return int(base[4:]), int(u or 0)
    return None


def resample(labels: torch.Tensor, per_class: int, seed: int, unique: int = 0) -> torch.Tensor:
    """``per_class`` indices of every class, drawn with replacement (seeded) from all of the class's cells,
    or from ``unique`` of them (drawn without replacement first)."""
    g = torch.Generator().manual_seed(seed)
    idx = []
    for k in range(len(CLASSES)):
        own = torch.nonzero(labels == k).flatten()
        if unique:
            own = own[torch.randperm(len(own), generator=g)[:unique]]
        idx.append(own[torch.randint(len(own), (per_class,), generator=g)])
    return torch.cat(idx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("views", nargs="+", help="real, real64, real32, real64-uN or real32-uN")
    ap.add_argument("-n", type=int, default=1000, help="cells per class (a synthetic row's -n)")
    ap.add_argument("--tstr-epochs", type=int, default=5)
    ap.add_argument("--tstr-seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cells = load_cells(bq.DATA, progress=False)
    split = bq.the_split(cells, Path("runs/bench-quality"))
    train, test = apply_split(cells, split, "train"), apply_split(cells, split, "test")
    seeds = list(range(a.tstr_seeds))
    for view in a.views:
        if _view(view) is None:
            ap.error(f"unknown view {view!r}: real, real64, real32, real64-uN or real32-uN")
    low = {px: through(train.images, px) for px in {_view(v)[0] for v in a.views} if px}
    for view in a.views:
        px, unique = _view(view)
        idx = resample(train.labels, a.n, seed=0, unique=unique)
        t0, load0 = time.time(), os.getloadavg()
        images = low[px][idx] if px else train.images[idx]
        labels = train.labels[idx]
        runs = ROOT / "runs" / "diag-ceiling" / view
        line = {"view": view, "n_per_class": a.n, "n_train_unique": int(len(set(idx.tolist()))), "n_test": len(test),
                "tstr_epochs": a.tstr_epochs}
        for model, rec in (("wnet", "wnet-cpu"), ("wbcsnet", "wbcsnet-cpu")):
            line[f"tstr_{model}"] = bq.tstr_report(model, bq.recipe(rec, a.tstr_epochs), images, labels, test,
                                                   runs / f"tstr-{model}", seeds, reuse=True)
        line |= {"minutes": round((time.time() - t0) / 60, 1), "load_average": [load0, os.getloadavg()],
                 "commit": bq.commit(), "threads": a.threads}
        print(view, "W-Net", bq.tstr_cell(line["tstr_wnet"]), "| WBCsNet", bq.tstr_cell(line["tstr_wbcsnet"]), flush=True)
        with open(ROOT / "bench" / "diag_ceiling.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
