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

    python bench/diag_ceiling.py real real64        # -> bench/diag_ceiling.jsonl, one line per view
    python bench/diag_ceiling.py real64-u30 real64-u100

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


def through_64(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×S×S -> 2×2 area average (the fast64 D's) -> the fast64 G's fixed bilinear upsample -> uint8."""
    out = torch.empty_like(images)
    for i in range(0, len(images), 256):
        x = _upsample(F.avg_pool2d(images[i:i + 256].float() / 255, 2), images.shape[-1])
        out[i:i + 256] = (x * 255).round().clamp(0, 255).to(torch.uint8)
    return out


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
    ap.add_argument("views", nargs="+", help="real, real64 or real64-uN")
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
    low = through_64(train.images) if any(v != "real" for v in a.views) else None
    for view in a.views:
        if view not in ("real", "real64") and not (view.startswith("real64-u") and view[8:].isdigit()):
            ap.error(f"unknown view {view!r}: real, real64 or real64-uN")
        idx = resample(train.labels, a.n, seed=0, unique=int(view[8:]) if "-u" in view else 0)
        t0, load0 = time.time(), os.getloadavg()
        images = train.images[idx] if view == "real" else low[idx]
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
