"""Fidelity and diversity of synthetic cells, separately: precision, recall, density, coverage.

FD and KID fold two failures into one number: cells unlike real ones (fidelity) and cells too
alike each other (diversity — a generator that draws one prototype per class). The k-nearest-
neighbour metrics tell them apart, in any feature space (wbcgen uses a real-trained W-Net's
penultimate features, like its FD):

* **precision** (Kynkäänniemi et al. 2019): the share of synthetic cells inside the real
  manifold — the union of balls around each real feature with radius its distance to its
  k-th nearest real neighbour;
* **recall**: the share of real cells inside the synthetic manifold (the same construction
  on the synthetic features);
* **density** (Naeem et al. 2020, "Reliable fidelity and diversity metrics for generative
  models"): how many real balls each synthetic cell lies in, ÷ k, averaged — about 1 for
  a generator that matches the real distribution, above 1 when synthetic cells crowd the
  dense middle of the real cells, below 1 for outliers; robust to real outliers, unlike
  precision;
* **coverage**: the share of real cells whose own ball holds at least one synthetic cell —
  the diversity counterpart of density, robust to synthetic outliers, unlike recall.

Definitions and k = 5 as in Naeem et al.'s reference implementation (the ``prdc`` package;
distances Euclidean, a point's own distance 0 skipped, strict ``<``), computed with
``torch.cdist`` in float64. Like FD they depend on the sample sizes, so
:func:`prdc_report` also gives a real-vs-real floor (real half A vs half B: what a perfect
generator scores) and the synthetic value at matched sizes (half A vs a synthetic subset of
half B's size), over random half-splits.
"""
from __future__ import annotations

import numpy as np
import torch

from .distances import half_splits

#: Naeem et al.'s recommended neighbourhood size.
NEAREST_K = 5
METRICS = ("precision", "recall", "density", "coverage")


def _t(x) -> torch.Tensor:
    return (x.detach().cpu() if hasattr(x, "detach") else torch.as_tensor(np.asarray(x))).to(torch.float64)


def _kth_radius(f: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's distance to its k-th nearest other row (its own distance, 0, is the first)."""
    return torch.cdist(f, f).kthvalue(k + 1, dim=1).values


def prdc(real, fake, k: int = NEAREST_K) -> dict:
    """Precision, recall, density and coverage of ``fake`` (N×D features) against ``real`` (M×D).
    Both sets need more than ``k`` rows."""
    r, f = _t(real), _t(fake)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise ValueError(f"need two N×D feature matrices of one width, got {tuple(r.shape)} and {tuple(f.shape)}")
    if min(len(r), len(f)) <= k:
        raise ValueError(f"need more than k={k} real and synthetic features (have {len(r)} and {len(f)})")
    r_rad, f_rad = _kth_radius(r, k), _kth_radius(f, k)
    d = torch.cdist(r, f)                                  # real × fake
    inside_real = d < r_rad[:, None]                       # fake j inside real i's ball
    return {"precision": float(inside_real.any(dim=0).double().mean()),
            "recall": float((d < f_rad[None, :]).any(dim=1).double().mean()),
            "density": float(inside_real.sum(dim=0).double().mean() / k),
            "coverage": float((d.min(dim=1).values < r_rad).double().mean())}


def prdc_report(real, fake, *, k: int = NEAREST_K, seed: int = 0, splits: int = 10) -> dict:
    """:func:`prdc` of all real vs all synthetic features, plus a real-vs-real ``floor`` (half A
    vs half B) and the ``matched`` synthetic value (half A vs a synthetic subset of half B's size),
    each the mean over ``splits`` random half-splits with a 95 % percentile interval. The floor and
    matched values compare with each other; ``all`` compares only with sets of the same sizes."""
    r, f = _t(real), _t(fake)
    out = {"k": k, "n_real": len(r), "n_synthetic": len(f)}
    if min(len(r), len(f)) <= k:
        out["all"] = out["floor"] = out["matched"] = None
        out["note"] = f"not computed: needs more than k={k} real and synthetic features (have {len(r)} and {len(f)})"
        return out
    out["all"] = prdc(r, f, k)
    half = len(r) // 2
    if min(half, len(f)) <= k:
        out["floor"] = out["matched"] = None
        out["note"] = f"no floor: half of {len(r)} real features is not more than k={k}"
        return out
    acc = {"floor": [], "matched": []}
    for a, b, s in half_splits(len(r), len(f), splits, seed):
        a, b, s = (torch.as_tensor(i) for i in (a, b, s))
        acc["floor"].append(prdc(r[a], r[b], k))
        acc["matched"].append(prdc(r[a], f[s], k))
    for part, vals in acc.items():
        out[part] = {m: {"mean": round(float(np.mean([v[m] for v in vals])), 4),
                         "ci95": [round(float(x), 4) for x in np.percentile([v[m] for v in vals], [2.5, 97.5])]}
                     for m in METRICS}
    out["n_matched"] = [half, min(len(r) - half, len(f))]
    return out


def means(part: dict | None) -> dict | None:
    """A :func:`prdc_report` part (``floor`` / ``matched``) as ``{metric: mean}``; None for a part
    that was not computed (too few features)."""
    return {m: v["mean"] for m, v in part.items()} if part else None
