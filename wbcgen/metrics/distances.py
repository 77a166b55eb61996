"""Distribution distances between two feature sets, in float64, never NaN or complex.

* :func:`frechet_distance` — the Fréchet distance between two Gaussians given their
  statistics, ``||mu1-mu2||² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½)``. The trace of the matrix
  square root is computed as ``Σ sqrt(eig(√S1 S2 √S1))``: ``√S1 S2 √S1`` is symmetric
  positive semi-definite, so a symmetric eigen-decomposition (``eigvalsh``) gives real
  eigenvalues; round-off negatives are clipped to 0. No complex numbers appear.
* :func:`frechet_distance_features` — the same quantity straight from two feature
  matrices. When the sets are smaller than the feature dimension (every WBC class is) it
  works in sample space: with centred rows A1 (n1×D), A2 (n2×D),
  ``tr((S1 S2)^½) = ||A1 A2ᵀ||_* / sqrt((n1-1)(n2-1))`` (the nuclear norm, i.e. the sum
  of singular values), exact and cheap, and still well defined when the covariances are
  rank deficient.
* :func:`kid` — the Kernel Inception Distance (unbiased MMD² with the cubic polynomial
  kernel ``(xᵀy/d + 1)³``) over random subsets drawn exactly as torch-fidelity draws them
  (``numpy.random.RandomState(seed).choice(n, m, replace=False)``), so a seed gives the
  same number as torch-fidelity.
* :func:`distance_report` — both, with a real-vs-real floor (two halves of the real set),
  a size-matched real-vs-synthetic value to compare with it, and resampling intervals.
"""
from __future__ import annotations

import math

import numpy as np

#: KID protocol defaults (those of torch-fidelity and torchmetrics).
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_DEGREE = 3
KID_COEF = 1.0
#: Below this many images per set FID is strongly biased; KID is the preferred number.
KID_PREFERRED_BELOW = 2048


def _f64(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64) of an N×D feature matrix (N ≥ 2)."""
    f = _f64(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need an N×D feature matrix with N ≥ 2, got shape {f.shape}")
    mu = f.mean(axis=0)
    a = f - mu
    return mu, (a.T @ a) / (f.shape[0] - 1)


def _clip_eig(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off noise (|w| ≲ n·eps·max) set to exactly 0."""
    tol = max(float(np.abs(w).max(initial=0.0)), 1e-300) * len(w) * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0)


def _sqrtm_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(_clip_eig(w))) @ v.T


def trace_sqrt_product(s1, s2) -> float:
    """``tr((S1 S2)^½)`` for symmetric PSD S1, S2, via ``eigvalsh(√S1 S2 √S1)``."""
    s1, s2 = _f64(s1), _f64(s2)
    r = _sqrtm_psd(s1)
    p = r @ ((s2 + s2.T) / 2) @ r
    w = np.linalg.eigvalsh((p + p.T) / 2)
    return float(np.sqrt(_clip_eig(w)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), float64, ≥ 0 up to round-off."""
    mu1, mu2, s1, s2 = _f64(mu1), _f64(mu2), _f64(sigma1), _f64(sigma2)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError("frechet_distance: mean/covariance shapes do not match")
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    if not math.isfinite(d):
        raise FloatingPointError("Fréchet distance is not finite (non-finite features?)")
    return max(d, 0.0)


def frechet_distance_features(f1, f2) -> float:
    """Fréchet distance between the Gaussians fitted to two feature matrices (N×D each, N ≥ 2)."""
    f1, f2 = _f64(f1), _f64(f2)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature matrices must be N×D with the same D, got {f1.shape} and {f2.shape}")
    n1, n2, dim = f1.shape[0], f2.shape[0], f1.shape[1]
    if n1 < 2 or n2 < 2:
        raise ValueError("the Fréchet distance needs at least 2 samples per set")
    if not (np.isfinite(f1).all() and np.isfinite(f2).all()):
        raise FloatingPointError("features contain NaN or Inf")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a1, a2 = f1 - mu1, f2 - mu2
    # cost of the two routes: sample space (n1·n2·D + min²·max) vs feature space (~(n1+n2)·D² + 20·D³)
    if n1 * n2 * dim + min(n1, n2) ** 2 * max(n1, n2) <= (n1 + n2) * dim * dim + 20 * dim ** 3:
        tr1 = float((a1 * a1).sum()) / (n1 - 1)
        tr2 = float((a2 * a2).sum()) / (n2 - 1)
        nuc = float(np.linalg.svd(a1 @ a2.T, compute_uv=False).sum())
        d = float(((mu1 - mu2) ** 2).sum()) + tr1 + tr2 - 2.0 * nuc / math.sqrt((n1 - 1) * (n2 - 1))
        return max(d, 0.0)
    return frechet_distance(mu1, a1.T @ a1 / (n1 - 1), mu2, a2.T @ a2 / (n2 - 1))


def _fd_gram(k: np.ndarray, i: np.ndarray, j: np.ndarray) -> float:
    """Fréchet distance between the row sets ``i`` and ``j`` from the Gram matrix K = F Fᵀ
    (sample-space route: no D×D matrix; exact)."""
    g11, g22, g12 = k[np.ix_(i, i)], k[np.ix_(j, j)], k[np.ix_(i, j)]
    n1, n2 = len(i), len(j)
    msq = g11.mean() + g22.mean() - 2.0 * g12.mean()
    tr1 = (np.trace(g11) - g11.sum() / n1) / (n1 - 1)
    tr2 = (np.trace(g22) - g22.sum() / n2) / (n2 - 1)
    c12 = g12 - g12.mean(1, keepdims=True) - g12.mean(0, keepdims=True) + g12.mean()
    nuc = float(np.linalg.svd(c12, compute_uv=False).sum())
    return max(float(msq + tr1 + tr2) - 2.0 * nuc / math.sqrt((n1 - 1) * (n2 - 1)), 0.0)


def _kid_gram(k: np.ndarray, i: np.ndarray, j: np.ndarray, *, subsets: int, subset_size: int,
              degree: int, gamma: float, coef: float, seed: int) -> np.ndarray:
    """Per-subset unbiased MMD² from the Gram matrix; subsets drawn as torch-fidelity draws them."""
    m = min(subset_size, len(i), len(j))
    rng = np.random.RandomState(seed)
    vals = np.empty(subsets)
    for t in range(subsets):
        x = i[rng.choice(len(i), m, replace=False)]
        y = j[rng.choice(len(j), m, replace=False)]
        kxx = (k[np.ix_(x, x)] * gamma + coef) ** degree
        kyy = (k[np.ix_(y, y)] * gamma + coef) ** degree
        kxy = (k[np.ix_(x, y)] * gamma + coef) ** degree
        vals[t] = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) \
            - 2.0 * kxy.sum() / (m * m)
    return vals


def _kid_summary(vals: np.ndarray, m: int) -> dict:
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return {"mean": float(vals.mean()), "std": float(vals.std()), "ci95": [float(lo), float(hi)],
            "subset_size": int(m), "subsets": int(len(vals))}


def kid(f1, f2, *, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, degree: int = KID_DEGREE,
        gamma: float | None = None, coef: float = KID_COEF, seed: int = 0) -> dict:
    """KID (unbiased MMD², cubic polynomial kernel) over ``subsets`` random subsets.

    ``subset_size`` is capped at the smaller set. Subsets are drawn like torch-fidelity's
    (``RandomState(seed).choice(n, m, replace=False)``, set 1 then set 2), so a seed gives
    torch-fidelity's number. Returns ``{"mean", "std", "ci95": [lo, hi] (subset
    percentiles), "subset_size", "subsets"}``.
    """
    f1, f2 = _f64(f1), _f64(f2)
    m = min(subset_size, f1.shape[0], f2.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 samples per set")
    f = np.concatenate([f1, f2])
    k = f @ f.T
    i, j = np.arange(len(f1)), np.arange(len(f1), len(f))
    vals = _kid_gram(k, i, j, subsets=subsets, subset_size=m, degree=degree,
                     gamma=1.0 / f1.shape[1] if gamma is None else gamma, coef=coef, seed=seed)
    return _kid_summary(vals, m)


def _summary(vals: list[float]) -> dict:
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return {"mean": float(np.mean(vals)), "ci95": [float(lo), float(hi)]}


def half_splits(n_real: int, n_syn: int, splits: int, seed: int):
    """``splits`` seeded (real half A, real half B, synthetic subset of B's size) index arrays: the
    floor / matched protocol shared by :func:`distance_report` and :func:`wbcgen.metrics.prdc.prdc_report`."""
    rng = np.random.default_rng(seed)
    for _ in range(splits):
        perm = rng.permutation(n_real)
        a, b = perm[: n_real // 2], perm[n_real // 2:]
        yield a, b, rng.permutation(n_syn)[: min(len(b), n_syn)]


def distance_report(real, fake, *, seed: int = 0, splits: int = 20, kid_subsets: int = KID_SUBSETS,
                    kid_subset_size: int = KID_SUBSET_SIZE) -> dict:
    """FD and KID between real and synthetic features, with a real-vs-real floor.

    * ``fd`` / ``kid``: all real vs all synthetic (KID with its subset mean/std);
    * ``floor``: real half A vs real half B — what a perfect generator would score at that
      sample size; ``matched``: real half A vs a synthetic subset of half B's size, the
      number to compare with the floor (FD is biased by sample size, so only equal sizes
      compare). Both are averaged over ``splits`` random half-splits, with 95 % intervals
      (percentiles over the splits: subsampling without replacement — a with-replacement
      bootstrap duplicates images, which inflates FD and KID's within-set terms).
    Values that cannot be computed (fewer than 2 images, 4 for the floor) are ``None``
    with a ``note``; they are never NaN.
    """
    f1, f2 = _f64(real), _f64(fake)
    n1, n2 = len(f1), len(f2)
    out: dict = {"n_real": n1, "n_synthetic": n2, "feature_dim": int(f1.shape[1]) if f1.ndim == 2 else None,
                 "preferred": "kid" if min(n1, n2) < KID_PREFERRED_BELOW else "fd", "notes": [],
                 "interval": f"95% percentile over {splits} random half-splits (subsampling without replacement)"}
    if n1 < 2 or n2 < 2:
        out.update(fd=None, kid=None, floor=None, matched=None)
        out["notes"].append(f"not computed: needs ≥ 2 real and ≥ 2 synthetic images (have {n1} and {n2})")
        return out
    f = np.concatenate([f1, f2])
    k = f @ f.T                                    # one Gram matrix serves every FD/KID below
    ri, si = np.arange(n1), np.arange(n1, n1 + n2)
    kw = dict(degree=KID_DEGREE, gamma=1.0 / f.shape[1], coef=KID_COEF)
    out["fd"] = frechet_distance_features(f1, f2) if min(n1, n2) > f.shape[1] else _fd_gram(k, ri, si)
    m = min(kid_subset_size, n1, n2)
    out["kid"] = _kid_summary(_kid_gram(k, ri, si, subsets=kid_subsets, subset_size=m, seed=seed, **kw), m)
    if n1 < 4 or splits < 1:
        out.update(floor=None, matched=None)
        out["notes"].append(f"no real-vs-real floor: needs ≥ 4 real images (have {n1})")
        return out
    kw.update(subsets=max(1, kid_subsets // 20), subset_size=kid_subset_size)
    acc: dict[str, list[float]] = {"floor_fd": [], "floor_kid": [], "matched_fd": [], "matched_kid": []}
    for r, (a, b, s) in enumerate(half_splits(n1, n2, splits, seed)):
        a, b, s = ri[a], ri[b], si[s]
        big = min(len(a), len(b)) > f.shape[1]
        acc["floor_fd"].append(frechet_distance_features(f[a], f[b]) if big else _fd_gram(k, a, b))
        acc["matched_fd"].append(frechet_distance_features(f[a], f[s]) if big else _fd_gram(k, a, s))
        acc["floor_kid"].append(float(_kid_gram(k, a, b, seed=seed + r, **kw).mean()))
        acc["matched_kid"].append(float(_kid_gram(k, a, s, seed=seed + r, **kw).mean()))
    sizes = [n1 // 2, n1 - n1 // 2, min(n1 - n1 // 2, n2)]
    out["floor"] = {"fd": _summary(acc["floor_fd"]), "kid": _summary(acc["floor_kid"]), "n": sizes[:2]}
    out["matched"] = {"fd": _summary(acc["matched_fd"]), "kid": _summary(acc["matched_kid"]),
                      "n": [sizes[0], sizes[2]]}
    return out
