"""Tensor-side data handling: resizing uint8 batches, per-channel statistics, batched
augmentation (rotation/flip/scale/colour jitter on whole batches, no per-image PIL) and
class-balanced sampling. Images stay uint8 in memory and become float per batch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def check_images(images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    from classifiers.runtime import UserError

    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise UserError(f"images must be a uint8 N×3×H×W tensor, got {shape}")
    if labels is not None and len(labels) != len(images):
        raise UserError(f"{len(images)} images but {len(labels)} labels")


def resize_u8(images: torch.Tensor, size: tuple[int, int], chunk: int = 256) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 N×3×H×W tensor to ``size`` (h, w), in chunks."""
    size = tuple(size)
    if tuple(images.shape[-2:]) == size:
        return images
    out = torch.empty((len(images), 3, *size), dtype=torch.uint8)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].float()
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        out[i:i + chunk] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def to_float(x_u8: torch.Tensor, device: torch.device, size: tuple[int, int] | None = None,
             memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """uint8 batch -> float [0, 1] on ``device`` (resized to ``size`` first when needed)."""
    x = x_u8.to(device, non_blocking=True).float().div_(255)
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous(memory_format=memory_format)


def channel_stats(images: torch.Tensor, chunk: int = 512) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (in [0, 1] units) of a uint8 N×3×H×W tensor."""
    s = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    n = 0
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to(torch.float64).div_(255)
        s += x.sum((0, 2, 3))
        s2 += (x * x).sum((0, 2, 3))
        n += x.numel() // 3
    mean = s / max(n, 1)
    std = (s2 / max(n, 1) - mean ** 2).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def epoch_order(labels: torch.Tensor, gen: torch.Generator, balanced: bool,
                num_classes: int) -> torch.Tensor:
    """Indices for one epoch (len == len(labels)). Balanced: every class drawn equally often
    (with replacement within a class); otherwise a random permutation."""
    n = len(labels)
    if not balanced:
        return torch.randperm(n, generator=gen)
    counts = torch.bincount(labels, minlength=num_classes).double()
    w = torch.where(counts[labels] > 0, 1.0 / counts[labels], torch.zeros_like(counts[labels]))
    return torch.multinomial(w, n, replacement=True, generator=gen)


_PERMS: dict = {}


def _dihedral_perms(size: int, device) -> torch.Tensor:
    """Flat source-pixel indices of the 8 symmetries of a size×size square."""
    key = (size, str(device))
    if key not in _PERMS:
        grid = torch.arange(size * size).view(size, size)
        views = []
        for flip in (False, True):
            g = grid.flip(-1) if flip else grid
            views += [torch.rot90(g, k, (0, 1)).reshape(-1) for k in range(4)]
        _PERMS[key] = torch.stack(views).to(device)
    return _PERMS[key]


class BatchAugment:
    """Random augmentation of a float [0, 1] batch, vectorised over the batch.

    ``rotate``: ``"dihedral"`` (exact 90° rotations + flips, no interpolation),
    ``"any"`` (uniform angle + flip, one ``grid_sample`` with reflection padding) or
    ``"none"``; ``scale``: (lo, hi) zoom range (applied with ``any``, or forces a grid
    sample with dihedral); ``jitter``: strength of brightness/contrast/saturation jitter
    (0 = off) and ``hue``: max hue rotation in turns (0 = off); ``stain``: strengths of the
    acquisition-robustness augmentation (:class:`classifiers.stainaug.StainAugment`: ``hed``,
    ``gamma``, ``tint``, ``blur``, ``jpeg``), applied last; all 0 = off.
    """

    def __init__(self, rotate: str = "dihedral", scale: tuple[float, float] = (1.0, 1.0),
                 jitter: float = 0.0, hue: float = 0.0, stain: dict | None = None):
        from classifiers.stainaug import StainAugment

        if rotate not in ("dihedral", "any", "none"):
            raise ValueError(f"rotate must be dihedral, any or none, not {rotate!r}")
        self.rotate, self.scale, self.jitter, self.hue = rotate, tuple(scale), float(jitter), float(hue)
        self.stain = StainAugment(**(stain or {}))

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = len(x)
        # every random number is drawn on the CPU generator in a fixed order (reproducible)
        r = torch.rand(n, 8, generator=gen)
        lo, hi = self.scale
        if self.rotate == "any" or (lo, hi) != (1.0, 1.0):
            x = self._affine(x, r)
        elif self.rotate == "dihedral":
            x = self._dihedral(x, r)
        if self.jitter or self.hue:
            x = self._colour(x, r)
        return self.stain(x, gen)  # draws its own random numbers only when active

    def _dihedral(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """One gather with per-sample pixel permutations of the 8 rotations/flips."""
        n, c, h, w = x.shape
        if h != w:  # non-square inputs: flips only
            code = (r[:, 0] * 4).long().clamp_(max=3).to(x.device)
            out = torch.where((code % 2 == 1).view(-1, 1, 1, 1), x.flip(-1), x)
            return torch.where((code >= 2).view(-1, 1, 1, 1), out.flip(-2), out)
        code = (r[:, 0] * 8).long().clamp_(max=7).to(x.device)
        perms = _dihedral_perms(h, x.device)                     # 8 × (h·w)
        idx = perms[code].unsqueeze(1).expand(n, c, h * w)
        return x.reshape(n, c, h * w).gather(2, idx).view(n, c, h, w)

    def _affine(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        lo, hi = self.scale
        if self.rotate == "any":
            ang = r[:, 0] * 2 * math.pi
        elif self.rotate == "dihedral":  # exact quarter turns + zoom
            ang = (r[:, 0] * 4).floor() * (math.pi / 2)
        else:
            ang = torch.zeros(len(x))
        flip = torch.where(r[:, 1] < 0.5, -1.0, 1.0) if self.rotate != "none" else torch.ones(len(x))
        zoom = 1.0 / (lo + (hi - lo) * r[:, 2])        # grid scale: <1 zooms in
        cos, sin = torch.cos(ang) * zoom, torch.sin(ang) * zoom
        theta = torch.stack([torch.stack([cos * flip, -sin, torch.zeros_like(cos)], 1),
                             torch.stack([sin * flip, cos, torch.zeros_like(cos)], 1)], 1)
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _colour(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Brightness → contrast → saturation → hue, folded into one per-image affine colour
        map x' = A·x + o (a single batched matmul over the pixels)."""
        n, j, dev = len(x), self.jitter, x.device
        b, c, s = (1 + j * (2 * r[:, 3:6] - 1)).to(dev, x.dtype).unbind(1)
        m = x.mean((1, 2, 3)) * b                                   # mean after brightness
        w = torch.tensor([0.299, 0.587, 0.114], device=dev, dtype=x.dtype)
        eye = torch.eye(3, device=dev, dtype=x.dtype)
        mat = s.view(-1, 1, 1) * eye + (1 - s).view(-1, 1, 1) * w.view(1, 1, 3).expand(n, 3, 3)
        if self.hue:  # rotate chroma in YIQ space by a per-image angle
            a = ((2 * r[:, 6] - 1) * self.hue * 2 * math.pi).to(dev, x.dtype)
            yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                               device=dev, dtype=x.dtype)
            co, si = torch.cos(a), torch.sin(a)
            one, zero = torch.ones_like(co), torch.zeros_like(co)
            rot = torch.stack([torch.stack([one, zero, zero], -1), torch.stack([zero, co, -si], -1),
                               torch.stack([zero, si, co], -1)], -2)
            mat = torch.linalg.inv(yiq) @ rot @ yiq @ mat
        amat = (c * b).view(-1, 1, 1) * mat
        off = ((1 - c) * m).view(-1, 1) * mat.sum(2)                # (1-c)·m·(M·1)
        y = torch.einsum("nij,njp->nip", amat, x.reshape(n, 3, -1)).add_(off.unsqueeze(-1))
        return y.view_as(x).clamp_(0, 1)
