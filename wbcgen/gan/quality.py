"""A cheap, fixed quality proxy for choosing the best checkpoint and spotting mode collapse.

Features ("wbcgen-fixed-v1", 278 dims): a 4-layer random convolutional network whose weights
come from NumPy's PCG64 generator with a fixed seed (identical on every machine and torch
version), global mean/std pooled, plus colour statistics (per-channel mean and std and a 4×4
map of mean colour). Random conv features track FID rankings well enough to pick snapshots;
they are NOT a substitute for the evaluation metrics of ``wbcgen.metrics``.

The Fréchet distance is the usual ‖μ₁−μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½), in float64.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_WIDTHS = (16, 32, 48, 64)
_weights: list[tuple[torch.Tensor, torch.Tensor]] | None = None


def _net() -> list[tuple[torch.Tensor, torch.Tensor]]:
    global _weights
    if _weights is None:
        rng = np.random.Generator(np.random.PCG64(20240229))
        layers, cin = [], 3
        for cout in _WIDTHS:
            w = rng.standard_normal((cout, cin, 4, 4)) * np.sqrt(2.0 / (cin * 16))
            b = rng.standard_normal(cout) * 0.1
            layers.append((torch.tensor(w, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)))
            cin = cout
        _weights = layers
    return _weights


@torch.inference_mode()
def features(images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Images (uint8 or float in [0, 1], N×3×H×W) → float64 N×278 features, on the CPU."""
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].detach().cpu()
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if x.shape[-1] != 128 or x.shape[-2] != 128:
            x = F.interpolate(x, size=(128, 128), mode="bilinear", antialias=True, align_corners=False)
        feats = [x.mean(dim=[2, 3]), x.std(dim=[2, 3]), F.adaptive_avg_pool2d(x, 4).flatten(1)]
        h = x * 2 - 1
        for w, b in _net():
            h = F.leaky_relu(F.conv2d(h, w, b, stride=2, padding=1), 0.2)
            feats.append(h.mean(dim=[2, 3]))
        feats.append(h.std(dim=[2, 3]))
        out.append(torch.cat(feats, dim=1).double())
    return torch.cat(out)


def stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = feats.double()
    return f.mean(0), torch.cov(f.T) if len(f) > 1 else torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between two Gaussians (float64, via symmetric eigendecompositions)."""
    mu1, mu2, s1, s2 = (torch.as_tensor(v, dtype=torch.float64) for v in (mu1, mu2, sigma1, sigma2))
    r1 = _sqrtm_psd(s1)
    covmean_trace = torch.linalg.eigvalsh(r1 @ s2 @ r1).clamp(min=0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * covmean_trace)


def diversity(feats: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance between feature vectors (0 for a collapsed set)."""
    if len(feats) < 2:
        return 0.0
    d = torch.cdist(feats.double(), feats.double())
    n = len(feats)
    return float(d.sum() / (n * (n - 1)))
