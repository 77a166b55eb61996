"""Differentiable Augmentation (Zhao et al., NeurIPS 2020) for data-efficient GANs.

The discriminator only ever sees augmented images — real *and* generated, with the same
random transforms family — and the transforms are differentiable, so G gets gradients
through them. Because D never sees an un-augmented image, the augmentations cannot leak
into what G learns to generate (unlike augmenting only the real set).

Images are in [-1, 1] (D's input range), shape B×C×H×W. Randomness comes from the global
torch RNG, so it is captured in checkpoints and resumes bit-identically.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def _saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + mean


def _contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + mean


def color(x: torch.Tensor) -> torch.Tensor:
    return _contrast(_saturation(_brightness(x)))


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size, filling with zeros."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    ty = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    # gather in NHWC; the permuted result is a channels_last view (what D wants on CUDA)
    return padded.permute(0, 2, 3, 1)[gb, gx, gy].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero a random square of ``ratio`` × the image size in every image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    oy = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    gx = torch.arange(ch, device=x.device).view(1, -1, 1) + ox - ch // 2
    gy = torch.arange(cw, device=x.device).view(1, 1, -1) + oy - cw // 2
    gb = torch.arange(b, device=x.device).view(-1, 1, 1).expand(b, ch, cw)
    gx = gx.clamp(0, h - 1).expand(b, ch, cw)
    gy = gy.clamp(0, w - 1).expand(b, ch, cw)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


POLICIES = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: str, p: float = 1.0) -> torch.Tensor:
    """Apply the comma-separated ``policy`` (e.g. ``"color,translation,cutout"``).

    ``p < 1`` (adaptive augmentation, ADA): each transform is applied to each image with
    probability ``p`` (``p = 1`` is plain DiffAugment and draws exactly the same random numbers)."""
    for name in filter(None, (q.strip() for q in policy.split(","))):
        fn = POLICIES[name]
        if name == "color" and x.size(1) > 3:  # extra channels (a layout) move with the image, keep their values
            fn = _on_rgb(fn)
        if p >= 1:
            x = fn(x)
        elif p > 0:
            keep = torch.rand(x.size(0), 1, 1, 1, device=x.device) < p
            x = torch.where(keep, fn(x), x)
    return x


def _on_rgb(fn):
    return lambda x: torch.cat([fn(x[:, :3]), x[:, 3:]], 1)
