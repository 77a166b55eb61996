"""Colour calibration of a synthetic set against the GANs' training images (issue 12, session 20).

Per class, one affine map per CIELAB channel moves the synthetic cells' pooled mean and std onto those of
the class's REAL TRAINING images (bench_quality's split seed 0, train part: what the GANs saw; never a test
image) — Reinhard et al. 2001's transfer, fitted once per class over the whole set, so every cell keeps its
place in the class's spread. Then TSTR W-Net (and with ``--wbcsnet`` WBCsNet) over 3 classifier seeds on
the real test part, as bench_quality does. Question: is part of the TSTR gap the generators' global colour
and contrast (synthetic cells are ~4 L* darker and less contrasted than the real ones)?

    python bench/diag_calib.py runs/bench-quality/fast64x2-cap450-g2-cpu118/synthetic --name g2
    # -> runs/diag-calib/NAME/tstr-wnet*, one line in bench/diag_calib.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage.color import lab2rgb, rgb2lab

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_quality import DATA, commit, load  # noqa: E402
from diag_swap import tstr  # noqa: E402
from wbcgen.data import CLASSES, load_cells  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402


def lab(images: torch.Tensor) -> np.ndarray:
    """uint8 N×3×H×W → float N×H×W×3 CIELAB."""
    return rgb2lab(images.permute(0, 2, 3, 1).numpy())


def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = x.reshape(-1, 3)
    return flat.mean(0), flat.std(0)


def calibrate(syn: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """``syn`` with its pooled per-channel CIELAB mean/std set to ``real``'s, and the shift applied
    (real − synthetic means, real ÷ synthetic stds)."""
    x = lab(syn)
    (ms, ss), (mr, sr) = moments(x), moments(lab(real))
    out = (x - ms) / ss * sr + mr
    rgb = lab2rgb(out.reshape(-1, out.shape[2], 3)).reshape(out.shape)
    shift = {"mean": np.round(mr - ms, 2).tolist(), "std_ratio": np.round(sr / ss, 3).tolist()}
    return torch.from_numpy(np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)).permute(0, 3, 1, 2).contiguous(), shift


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("synthetic", help="a wbcgen sample folder (bench_quality's OUT/LABEL/synthetic)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--tstr-seeds", type=int, default=3)
    ap.add_argument("--tstr-epochs", type=int, default=5)
    ap.add_argument("--wbcsnet", action="store_true")
    ap.add_argument("--bench", default="runs/bench-quality")
    ap.add_argument("--out", default="runs/diag-calib")
    a = ap.parse_args()
    torch.set_num_threads(2)
    bench, out = Path(a.bench), Path(a.out) / a.name
    cells = load_cells(DATA, progress=False)
    train, test = (apply_split(cells, bench / "split.json", part) for part in ("train", "test"))
    syn = load_cells(a.synthetic, progress=False)
    res = {"synthetic": a.synthetic, "name": a.name, "date": time.strftime("%Y-%m-%d %H:%M"),
           "load_start": load(), "commit": commit(), "shift": {}}
    images = syn.images.clone()
    for k, c in enumerate(CLASSES):
        m = syn.labels == k
        images[m], res["shift"][c] = calibrate(syn.images[m], train.images[train.labels == k])
    print("LAB shift per class (real train − synthetic):", res["shift"], flush=True)
    res |= tstr(images, syn.labels, test, out, a.tstr_seeds, a.tstr_epochs, a.wbcsnet, a.name)
    res["load_end"] = load()
    with open(ROOT / "bench" / "diag_calib.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
