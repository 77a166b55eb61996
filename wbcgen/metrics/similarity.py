"""Mean pairwise cosine similarity (the paper's Table 7), vectorised.

With unit rows u_i (set X, n rows) and v_j (set Y, m rows), the mean over all n·m pairs
of cos(x_i, y_j) = u_i·v_j is ``(Σu)·(Σv) / (n·m)`` — one pass over the data, no n×m
matrix. Within one set, self-pairs are left out:
``(|Σu|² − Σ|u_i|²) / (n(n−1))``. All-zero rows have no direction; they count as cosine 0.
"""
from __future__ import annotations

import numpy as np
import torch


def _unit_sum(x, chunk: int = 256) -> tuple[np.ndarray, int, float]:
    """(Σ of unit rows, number of rows, Σ|u_i|² = number of non-zero rows), float64, chunked."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    x = x.reshape(len(x), -1)
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    nonzero = 0.0
    for i in range(0, len(x), chunk):
        c = x[i:i + chunk].to(torch.float64)
        norm = c.norm(dim=1, keepdim=True)
        ok = norm.squeeze(1) > 0
        total += (c[ok] / norm[ok]).sum(0)
        nonzero += float(ok.sum())
    return total.numpy(), len(x), nonzero


def mean_pairwise_cosine(x, y=None) -> float:
    """Mean cosine similarity over all pairs of rows (x vs y, or x vs x without self-pairs)."""
    sx, n, nzx = _unit_sum(x)
    if y is None:
        if n < 2:
            raise ValueError("need at least 2 rows for within-set cosine similarity")
        return float((sx @ sx - nzx) / (n * (n - 1)))
    sy, m, _ = _unit_sum(y)
    if n == 0 or m == 0:
        raise ValueError("need at least 1 row in each set")
    return float(sx @ sy / (n * m))


def _take(a, idx: torch.Tensor):
    return a[idx.numpy()] if isinstance(a, np.ndarray) else a[idx]


def cosine_table(real, real_labels, synth, synth_labels, classes) -> dict:
    """Per class: real–real and real–synthetic mean cosine and their difference.

    ``real``/``synth`` are N×... arrays or tensors (uint8 images or features), labels index
    ``classes``. ``difference_pct`` = 100·(rr − rs)/rr (relative, the paper's "difference
    in cosine similarity"); ``difference_points`` = 100·(rr − rs). Classes missing from
    either set are listed with ``None`` values. ``mean`` averages the classes present.
    """
    real_labels = torch.as_tensor(real_labels)
    synth_labels = torch.as_tensor(synth_labels)
    rows: dict = {}
    for k, cls in enumerate(classes):
        r = _take(real, (real_labels == k).nonzero().flatten())
        s = _take(synth, (synth_labels == k).nonzero().flatten())
        if len(r) < 2 or len(s) < 1:
            rows[cls] = {"real_real": None, "real_synthetic": None, "difference_pct": None,
                         "difference_points": None, "n_real": len(r), "n_synthetic": len(s)}
            continue
        rr, rs = mean_pairwise_cosine(r), mean_pairwise_cosine(r, s)
        rows[cls] = {"real_real": rr, "real_synthetic": rs,
                     "difference_pct": 100.0 * (rr - rs) / rr if rr else None,
                     "difference_points": 100.0 * (rr - rs), "n_real": len(r), "n_synthetic": len(s)}
    diffs = [v["difference_pct"] for v in rows.values() if v["difference_pct"] is not None]
    return {"per_class": rows, "mean_difference_pct": float(np.mean(diffs)) if diffs else None}
