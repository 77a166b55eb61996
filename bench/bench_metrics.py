"""Evaluate-metric timings: Fréchet distance routes, the whole distance report, cosine similarity.

    python bench/bench_metrics.py [--data ../shared/data/pbc-dev] [--threads 2]

*Fréchet distance.* Timing and exactness of wbcgen's two routes against what most FID code
does (``scipy.linalg.sqrtm`` of S1·S2), at the shapes evaluate meets: a class of 418 real
images (pbc-dev's basophils) against 1,000 synthetic ones, 1,024-d features like W-Net's
penultimate layer. The features here are random ReLU projections (seeded) — these rows
measure *speed and numerical behaviour*, not image quality.

*Cosine similarity* (W-Net paper Table 7) is timed on real pixels: the pbc-dev neutrophils
against the first 1,000 images of the other classes, 128×128×3.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wbcgen import metrics  # noqa: E402
from wbcgen.data import load_cells  # noqa: E402


def timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t


def scipy_fd(f1: np.ndarray, f2: np.ndarray) -> tuple[complex, float]:
    """The usual FID formula with scipy's sqrtm; returns (value, max |imag| of the sqrtm)."""
    import scipy.linalg

    m1, s1 = metrics.gaussian_stats(f1)
    m2, s2 = metrics.gaussian_stats(f2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cs = scipy.linalg.sqrtm(s1 @ s2)
    imag = float(np.abs(np.imag(cs)).max()) if np.iscomplexobj(cs) else 0.0
    return ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cs), imag


def bench_fd() -> dict:
    r = np.random.default_rng(0)
    w = r.normal(size=(64, 1024))
    f1 = np.maximum(r.normal(size=(418, 64)) @ w, 0)
    f2 = np.maximum(r.normal(size=(1000, 64)) @ w * 1.1, 0)
    out = {}
    d, t = timed(metrics.frechet_distance_features, f1, f2)
    out["fd_418x1000_sample_space"] = {"seconds": round(t, 3), "value": d}
    (m1, s1), (m2, s2) = metrics.gaussian_stats(f1), metrics.gaussian_stats(f2)
    d, t = timed(metrics.frechet_distance, m1, s1, m2, s2)
    out["fd_418x1000_eigh_route"] = {"seconds": round(t, 3), "value": d}
    (d, imag), t = timed(scipy_fd, f1, f2)
    out["fd_418x1000_scipy_sqrtm"] = {"seconds": round(t, 3), "value": str(d), "max_imag": imag}
    out["fd_5x5_ours"] = metrics.frechet_distance_features(f1[:5], f2[:5])
    out["fd_5x5_scipy_sqrtm"] = str(scipy_fd(f1[:5], f2[:5])[0])
    _, t = timed(metrics.distance_report, f1, f2, splits=20)
    out["distance_report_418x1000_20_splits_s"] = round(t, 2)
    g1 = np.maximum(r.normal(size=(1782, 64)) @ w, 0)
    g2 = np.maximum(r.normal(size=(5000, 64)) @ w, 0)
    _, t = timed(metrics.distance_report, g1, g2, splits=5)
    out["distance_report_1782x5000_5_splits_s"] = round(t, 2)
    return out


def bench_cosine(data: str) -> dict:
    cells = load_cells(data, progress=False)
    ne = cells.labels == 0
    x, y = cells.images[ne], cells.images[~ne][:1000]
    a, ta = timed(metrics.mean_pairwise_cosine, x, y)

    def gram_mean():
        X = x.reshape(len(x), -1).float()
        Y = y.reshape(len(y), -1).float()
        X, Y = X / X.norm(dim=1, keepdim=True), Y / Y.norm(dim=1, keepdim=True)
        return float((X @ Y.T).double().mean())

    b, tb = timed(gram_mean)
    xs, ys = x[:30].reshape(30, -1).double(), y[:30].reshape(30, -1).double()
    t = time.perf_counter()
    for i in range(30):
        for j in range(30):
            float(xs[i] @ ys[j] / (xs[i].norm() * ys[j].norm()))
    loop = (time.perf_counter() - t) / 900 * len(x) * len(y)
    return {"shape": [len(x), len(y)], "sum_identity": {"seconds": round(ta, 2), "value": a},
            "normalise_matmul": {"seconds": round(tb, 2), "value": b},
            "python_pair_loop_extrapolated_s": round(loop)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pbc-dev"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = {"loadavg_before": os.getloadavg(), "torch": torch.__version__, "threads": args.threads}
    res["frechet"] = bench_fd()
    res["cosine_pixels"] = bench_cosine(args.data)
    res["loadavg_after"] = os.getloadavg()
    text = json.dumps(res, indent=1, default=float)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
