"""Acquisition-robustness augmentation on whole float [0, 1] batches: what differs between
labs' microscopes — stain (HED jitter), exposure (gamma), illumination colour (tint),
focus (blur) and compression (JPEG-like block quantisation). Each strength 0 = off; every
random number comes from the caller's CPU generator in a fixed order (reproducible).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from classifiers.stain import hed_to_rgb, rgb_to_hed

KEYS = ("hed", "gamma", "tint", "blur", "jpeg")

#: The JPEG standard luminance quantisation table (quality 50).
_JPEG_Q = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
           14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
           49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


class StainAugment:
    """``hed``: HED-space jitter (Tellez et al. 2018): every stain channel s → s·(1+a) + b,
    a ∈ ±hed, b ∈ ±hed·0.05 (0.05 ≈ a typical haematoxylin density of a stained cell in
    skimage's HED units); ``gamma``: x → x^g, log g ∈ ±gamma; ``tint``: per-channel gain
    x → x·(1+t), t ∈ ±tint (a white-balance / lamp colour shift, largest on the bright
    background); ``blur``: Gaussian defocus with σ ∈ [0, blur] pixels (at the model's input
    size); ``jpeg``: 8×8 DCT quantisation in YCbCr with the standard luminance table scaled
    by u·jpeg, u ∈ [0, 1] (jpeg = 1 ≈ JPEG quality 50, no chroma subsampling — a cheap
    stand-in for re-encoding, not libjpeg)."""

    def __init__(self, hed: float = 0.0, gamma: float = 0.0, tint: float = 0.0, blur: float = 0.0,
                 jpeg: float = 0.0):
        self.hed, self.gamma, self.tint, self.blur, self.jpeg = map(float, (hed, gamma, tint, blur, jpeg))
        if min(self.hed, self.gamma, self.tint, self.blur, self.jpeg) < 0:
            raise ValueError("stain augmentation strengths must be >= 0")

    @property
    def active(self) -> bool:
        return any((self.hed, self.gamma, self.tint, self.blur, self.jpeg))

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if not self.active:
            return x
        r = torch.rand(len(x), 12, generator=gen).to(x.device, x.dtype) * 2 - 1    # uniform in [-1, 1]
        if self.hed:
            s = rgb_to_hed(x, clamp=False)   # exact round trip: a = 1, b = 0 is the identity
            a = 1 + self.hed * r[:, 0:3]
            b = 0.05 * self.hed * r[:, 3:6]
            x = hed_to_rgb(s * a[..., None, None] + b[..., None, None])
        if self.gamma:
            g = torch.exp(self.gamma * r[:, 6]).view(-1, 1, 1, 1)
            x = x.clamp_min(1e-6).pow(g)
        if self.tint:
            x = x * (1 + self.tint * r[:, 7:10])[..., None, None]
        if self.blur:
            x = _blur(x, self.blur * (r[:, 10] + 1) / 2, self.blur)
        if self.jpeg:
            x = _jpeg(x, self.jpeg * (r[:, 11] + 1) / 2)
        return x.clamp_(0, 1)


def _blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Per-image separable Gaussian blur (σ = 0 leaves the image as is), reflect padding."""
    n, c, h, w = x.shape
    rad = max(1, math.ceil(3 * max_sigma))
    t = torch.arange(-rad, rad + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp_min(1e-3).view(-1, 1)
    k = torch.exp(-0.5 * (t / s) ** 2)
    k = k / k.sum(1, keepdim=True)                                  # n × (2rad+1)
    k = k.repeat_interleave(c, 0)                                   # one kernel per image channel
    y = F.pad(x.reshape(1, n * c, h, w), (rad, rad, rad, rad), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


def _dct_matrix(device, dtype) -> torch.Tensor:
    i = torch.arange(8, dtype=torch.float64)
    m = torch.cos((2 * i[None, :] + 1) * i[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return m.to(device, dtype)


def _jpeg(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Quantise 8×8 DCT blocks of Y, Cb and Cr with the luminance table × ``scale`` (per image)."""
    n, c, h, w = x.shape
    ph, pw = (-h) % 8, (-w) % 8
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    H, W = x.shape[-2:]
    ycc = torch.tensor(_YCC, device=x.device, dtype=x.dtype)
    y = torch.einsum("dc,nchw->ndhw", ycc, x) * 255
    blocks = y.view(n, 3, H // 8, 8, W // 8, 8).permute(0, 1, 2, 4, 3, 5)     # n,3,bh,bw,8,8
    d = _dct_matrix(x.device, x.dtype)
    coef = d @ blocks @ d.T
    q = torch.tensor(_JPEG_Q, device=x.device, dtype=x.dtype).view(8, 8)
    step = (q * scale.view(-1, 1, 1, 1, 1, 1)).clamp_min(1e-6)
    coef = torch.where(scale.view(-1, 1, 1, 1, 1, 1) > 0, torch.round(coef / step) * step, coef)
    blocks = d.T @ coef @ d
    y = blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, 3, H, W) / 255
    out = torch.einsum("dc,nchw->ndhw", torch.linalg.inv(ycc), y)
    return out[..., :h, :w]
