"""A detail refiner learnt from real cells: the last stage of a ``refine_steps > 0`` generator.

The per-class generators learn a cell's layout within a CPU budget but draw it smooth: at 64 px their
power above a quarter of the sampling rate is 100-1000× below the real cells' (README, sessions 24-25).
A spectral loss on G put noise-like texture on every class. This stage instead learns, from the run's
own REAL training cells only, how fine detail sits on a coarse cell (pix2pix, Isola et al. 2017, as a
super-resolution-style refiner): input = a real cell with its detail removed (``factor`` × ``factor``
area average, bilinear back to 64 px), target = the cell at 64 px; hinge loss on a conditional patch
discriminator (spectral norm) + ``l1`` × L1, on random 32-px crops under the 8 flips / quarter turns.
R is fully convolutional and unnormalised (it trains on crops and is applied to whole cells), its output
is the input plus a residual whose last conv starts at zero.

Applied after G (:class:`DetailStage`): G's image, area-averaged to 64 px, goes through the same
degradation (so R sees what it was trained on), R, and a bilinear upsample back to G's size. The stage
is off (the identity) until trained: G trains without it, ``train-gan`` trains R after the GAN (in the
run's budget) and saves it inside the generator's weights (``refiner.*``), so ``sample``, ``evaluate``,
``push`` and ``from_pretrained`` see one generator. bench/diag_refine.py and bench/RESULTS.md (sessions
25-26) have the measurements.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch.nn.utils import spectral_norm as SN

SIZE = 64  # the refiner's working size (px)


def to64(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or float in [0, 255]) N×3×H×W cells -> float N×3×64×64 in [-1, 1] (area average)."""
    return F.adaptive_avg_pool2d(images.float() / 127.5 - 1, SIZE)


def degrade(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Remove the detail above the (64 / factor)-px sampling rate: factor × factor area average, bilinear back."""
    return F.interpolate(F.avg_pool2d(x, factor), size=x.shape[-2:], mode="bilinear", align_corners=False)


def d4(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the eight flips / quarter turns (``k`` in 0..7) of a batch."""
    x = torch.rot90(x, k % 4, (-2, -1))
    return x.flip(-1) if k >= 4 else x


class Refiner(nn.Module):
    """A small fully convolutional U-Net (three scales, skips, no normalisation), residual output
    initialised to the identity; images in [-1, 1]."""

    def __init__(self, w: int = 32):
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.inc = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1), act)
        self.d1 = nn.Sequential(nn.Conv2d(w, 2 * w, 4, 2, 1), act)
        self.d2 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 4, 2, 1), act)
        self.mid = nn.Sequential(nn.Conv2d(4 * w, 4 * w, 3, 1, 1), act, nn.Conv2d(4 * w, 4 * w, 3, 1, 1), act)
        self.u1 = nn.Sequential(nn.Conv2d(6 * w, 2 * w, 3, 1, 1), act)
        self.u2 = nn.Sequential(nn.Conv2d(3 * w, w, 3, 1, 1), act)
        self.out = nn.Conv2d(w, 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.inc(x)
        b = self.d1(a)
        c = self.d2(b)
        c = c + self.mid(c)
        u = self.u1(torch.cat([F.interpolate(c, scale_factor=2, mode="nearest"), b], 1))
        u = self.u2(torch.cat([F.interpolate(u, scale_factor=2, mode="nearest"), a], 1))
        return (x + self.out(u)).clamp(-1, 1)


class PatchD(nn.Module):
    """Conditional patch discriminator: (degraded, image) -> logits on a grid (receptive field ~30 px)."""

    def __init__(self, w: int = 32):
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.net = nn.Sequential(SN(nn.Conv2d(6, w, 4, 2, 1)), act, SN(nn.Conv2d(w, 2 * w, 4, 2, 1)), act,
                                 SN(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), act, SN(nn.Conv2d(4 * w, 1, 3, 1, 1)))

    def forward(self, cond: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([cond, x], 1))


class DetailStage(nn.Module):
    """R applied to a generator's images in [0, 1] (any size ≥ 64 px); the identity until ``trained``."""

    def __init__(self, factor: int = 4):
        super().__init__()
        self.factor = int(factor)
        self.net = Refiner()
        self.register_buffer("trained", torch.zeros((), dtype=torch.uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.trained):
            return x
        y = self.net(degrade(F.adaptive_avg_pool2d(x * 2 - 1, SIZE), self.factor))
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False) if x.shape[-1] != SIZE else y
        return ((y + 1) / 2).clamp(0, 1)


def train_refiner(images: torch.Tensor, *, steps: int, factor: int, seed: int, batch: int = 32, crop: int = 32,
                  l1: float = 10.0, blur: float = 0.0, deadline: float | None = None,
                  clock: Callable[[], float] = time.perf_counter,
                  log: Callable[[dict], None] | None = None, device: torch.device | str = "cpu",
                  ) -> tuple[Refiner, dict]:
    """Train R (and its patch D) on ``images`` (uint8 N×3×H×W real cells) for ``steps`` steps or until
    ``clock()`` passes ``deadline``; returns R (eval mode, CPU) and {steps, seconds, l1, l1_degraded}.
    ``blur`` > 0: each batch's degraded inputs are blurred further by a Gaussian of sigma ~ U(0, blur) px (at 64 px).
    Deterministic on CPU for a given seed and step count."""
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        R, D = Refiner().to(dev), PatchD().to(dev)
    real = to64(images).to(dev)
    opt_r = torch.optim.Adam(R.parameters(), 2e-4, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.99))
    t0, step, rec, base = time.perf_counter(), 0, [], []
    while step < steps and (deadline is None or clock() < deadline):
        idx = torch.randint(len(real), (batch,), generator=gen)
        k = int(torch.randint(8, (1,), generator=gen))
        i, j = (int(v) for v in torch.randint(SIZE - crop + 1, (2,), generator=gen))
        full = d4(real[idx.to(dev)], k)
        soft = degrade(full, factor)
        if blur > 0:  # inputs blurrier than the degradation too: a generator's cells often are
            sigma = blur * float(torch.rand((), generator=gen)) + 1e-3
            soft = TF.gaussian_blur(soft, 2 * math.ceil(3 * sigma) + 1, sigma)
        y, x = full[..., i:i + crop, j:j + crop], soft[..., i:i + crop, j:j + crop]
        fake = R(x)
        loss_d = F.relu(1 - D(x, y)).mean() + F.relu(1 + D(x, fake.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        adv, l1_loss = -D(x, fake).mean(), (fake - y).abs().mean()
        opt_r.zero_grad(set_to_none=True)
        (adv + l1 * l1_loss).backward()
        opt_r.step()
        step += 1
        rec.append(l1_loss.item())
        base.append((x - y).abs().mean().item())
        if log is not None and (step % 100 == 0 or step == steps):
            log({"refiner_step": step, "loss_d": round(loss_d.item(), 5), "adv": round(adv.item(), 5),
                 "l1": round(sum(rec[-100:]) / len(rec[-100:]), 5),
                 "l1_degraded": round(sum(base[-100:]) / len(base[-100:]), 5),
                 "time_s": round(time.perf_counter() - t0, 2)})
    tail = slice(-min(100, len(rec)) or None, None)
    info = {"steps": step, "seconds": round(time.perf_counter() - t0, 2), "factor": factor, "blur": blur,
            "batch": batch, "crop": crop, "l1_weight": l1, "n_images": len(images),
            "l1": round(sum(rec[tail]) / max(1, len(rec[tail])), 5) if rec else None,
            "l1_degraded": round(sum(base[tail]) / max(1, len(base[tail])), 5) if base else None}
    return R.cpu().eval(), info
