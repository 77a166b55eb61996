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
degradation (so R sees what it was trained on), R, and a bilinear upsample back to G's size.

``mode = "stochastic"``: the same pairs, but R also gets one N(0, 1) noise map and the L1 holds only the coarse cell
(|avg_f(R(x)) − avg_f(y)| with avg_f the factor × factor area average): the paired R's full L1 regresses texture to
its mean and the patch D then sharpens that mean into contour rings along the intensity levels (sessions 26-27);
here texture is drawn from the noise and judged by D alone.

``mode = "unpaired"`` (SimGAN, Shrivastava et al. 2017, with two changes) trains R on the GENERATOR's own cells
instead of degraded real ones, so it learns the gap it has to close rather than a degradation G's cells only
resemble: input = a G cell at 64 px + one N(0, 1) noise map (detail is drawn, not contoured from the cell's
intensity levels — the paired R's onion rings); loss = hinge on an unconditional patch D (real crops of the
class's training cells vs refined crops) + ``l1`` × a BAND-LIMITED self-regularisation, |avg_f(R(x)) − avg_f(x)|
with avg_f the factor × factor area average: the coarse cell (its class) is kept, the detail above it is free.
At application no degradation. In both noisy modes the map at sampling is keyed by the cell's latent
(:func:`keyed_noise`), so sampling stays deterministic and batch-independent. The stage
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

from wbcgen.gan.order import row_hashes

SIZE = 64  # the refiner's working size (px)
MODES = ("paired", "stochastic", "unpaired")


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


def keyed_noise(key: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One N(0, 1) map per row of ``key`` at ``like``'s size, device and dtype, seeded by a hash of the row's
    float32 bytes: the same key (a latent z, or the image itself) gets the same map whatever its batch."""
    g, size = torch.Generator(), like.shape[-2:]
    maps = [torch.randn(1, *size, generator=g.manual_seed(h >> 1)) for h in row_hashes(key, salt=b"refiner")]
    return torch.stack(maps).to(device=like.device, dtype=like.dtype)


def image_noise(x: torch.Tensor) -> torch.Tensor:
    """:func:`keyed_noise` keyed by the images themselves (where no latent is known)."""
    return keyed_noise(x, x)


class Refiner(nn.Module):
    """A small fully convolutional U-Net (three scales, skips, no normalisation), residual output
    initialised to the identity; images in [-1, 1]. ``noise`` > 0: that many N(0, 1) maps are input beside
    the image (given to :meth:`forward`, or drawn from the global RNG)."""

    def __init__(self, w: int = 32, noise: int = 0):
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.noise = int(noise)
        self.inc = nn.Sequential(nn.Conv2d(3 + self.noise, w, 3, 1, 1), act)
        self.d1 = nn.Sequential(nn.Conv2d(w, 2 * w, 4, 2, 1), act)
        self.d2 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 4, 2, 1), act)
        self.mid = nn.Sequential(nn.Conv2d(4 * w, 4 * w, 3, 1, 1), act, nn.Conv2d(4 * w, 4 * w, 3, 1, 1), act)
        self.u1 = nn.Sequential(nn.Conv2d(6 * w, 2 * w, 3, 1, 1), act)
        self.u2 = nn.Sequential(nn.Conv2d(3 * w, w, 3, 1, 1), act)
        self.out = nn.Conv2d(w, 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.noise:
            noise = torch.randn_like(x[:, :self.noise]) if noise is None else noise
            a = self.inc(torch.cat([x, noise], 1))
        else:
            a = self.inc(x)
        b = self.d1(a)
        c = self.d2(b)
        c = c + self.mid(c)
        u = self.u1(torch.cat([F.interpolate(c, scale_factor=2, mode="nearest"), b], 1))
        u = self.u2(torch.cat([F.interpolate(u, scale_factor=2, mode="nearest"), a], 1))
        return (x + self.out(u)).clamp(-1, 1)


class PatchD(nn.Module):
    """Patch discriminator: (degraded, image) -> logits on a grid (receptive field ~30 px); ``cond=False``:
    image alone."""

    def __init__(self, w: int = 32, cond: bool = True):
        super().__init__()
        act = nn.LeakyReLU(0.2)
        first = [SN(nn.Conv2d(6, w, 4, 2, 1))] if cond else [  # unpaired: a full-resolution layer first, so
            SN(nn.Conv2d(3, w, 3, 1, 1)), act, SN(nn.Conv2d(w, w, 4, 2, 1))]  # pixel-period patterns are seen
        self.net = nn.Sequential(*first, act, SN(nn.Conv2d(w, 2 * w, 4, 2, 1)), act,
                                 SN(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), act, SN(nn.Conv2d(4 * w, 1, 3, 1, 1)))

    def forward(self, cond: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        return self.net(x if cond is None else torch.cat([cond, x], 1))


class DetailStage(nn.Module):
    """R applied to a generator's images in [0, 1] (any size ≥ 64 px); the identity until ``trained``."""

    def __init__(self, factor: int = 4, mode: str = "paired"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"refiner mode must be one of {MODES}")
        self.factor, self.mode = int(factor), mode
        self.net = Refiner(noise=int(mode != "paired"))
        self.register_buffer("trained", torch.zeros((), dtype=torch.uint8))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """``z``: the latents ``x`` was drawn from, which key the noise map of a noisy R (so the folded and the
        plain generator, CPU and CUDA, draw the same map); without them the images key it."""
        if not bool(self.trained):
            return x
        x64 = F.adaptive_avg_pool2d(x * 2 - 1, SIZE)
        if self.mode != "unpaired":  # an unpaired R learnt G's own cells: no degradation
            x64 = degrade(x64, self.factor)
        if self.net.noise:
            y = self.net(x64, keyed_noise(x64 if z is None else z, x64))
        else:
            y = self.net(x64)
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False) if x.shape[-1] != SIZE else y
        return ((y + 1) / 2).clamp(0, 1)


def train_refiner(images: torch.Tensor, *, steps: int, factor: int, seed: int, batch: int = 32, crop: int = 32,
                  l1: float = 10.0, blur: float = 0.0, mode: str = "paired", fakes: torch.Tensor | None = None,
                  deadline: float | None = None, clock: Callable[[], float] = time.perf_counter,
                  log: Callable[[dict], None] | None = None, device: torch.device | str = "cpu",
                  ) -> tuple[Refiner, dict]:
    """Train R (and its patch D) on ``images`` (uint8 N×3×H×W real cells) for ``steps`` steps or until
    ``clock()`` passes ``deadline``; returns R (eval mode, CPU) and a record (steps, seconds, the last 100
    steps' mean ``l1`` — the paired L1 to the real cell, or the unpaired band-limited self-regularisation).
    ``mode`` (module docstring): "paired" and "stochastic" learn from degraded ``images``; "unpaired" needs ``fakes``
    (uint8 cells a generator drew) and learns to turn them into cells like ``images``.
    ``blur`` > 0 (paired): each batch's degraded inputs are blurred further by a Gaussian of sigma ~ U(0, blur) px.
    Deterministic on CPU for a given seed and step count."""
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    if mode not in MODES or (mode == "unpaired") != (fakes is not None):
        raise ValueError(f"refiner mode must be one of {MODES}, with fakes exactly for 'unpaired'")
    unpaired, noisy = mode == "unpaired", mode != "paired"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        R, D = Refiner(noise=int(noisy)).to(dev), PatchD(cond=not unpaired).to(dev)
    real = to64(images).to(dev)
    src = to64(fakes).to(dev) if unpaired else real
    opt_r = torch.optim.Adam(R.parameters(), 2e-4, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.99))
    t0, step, rec, base = time.perf_counter(), 0, [], []

    def draw(pool: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """A batch of ``pool`` under one flip / turn, and the crop to take of it (and of what is made from it)."""
        idx = torch.randint(len(pool), (batch,), generator=gen)
        k = int(torch.randint(8, (1,), generator=gen))
        i, j = (int(v) for v in torch.randint(SIZE - crop + 1, (2,), generator=gen))
        return d4(pool[idx.to(dev)], k), lambda t: t[..., i:i + crop, j:j + crop]

    while step < steps and (deadline is None or clock() < deadline):
        if unpaired:  # G's cell + noise -> R; D: real crop vs refined crop; keep the coarse cell
            full, cut = draw(real)
            y = cut(full)
            full, cut = draw(src)
            x = cut(full)
            fake = R(x, torch.randn(x.shape[0], 1, crop, crop, generator=gen).to(dev))
            cond_real = cond_fake = None
        else:
            full, cut = draw(real)
            soft = degrade(full, factor)
            if blur > 0:  # inputs blurrier than the degradation too: a generator's cells often are
                sigma = blur * float(torch.rand((), generator=gen)) + 1e-3
                soft = TF.gaussian_blur(soft, 2 * math.ceil(3 * sigma) + 1, sigma)
            y, x = cut(full), cut(soft)
            fake = R(x, torch.randn(x.shape[0], 1, crop, crop, generator=gen).to(dev)) if noisy else R(x)
            cond_real = cond_fake = x
        loss_d = F.relu(1 - D(cond_real, y)).mean() + F.relu(1 + D(cond_fake, fake.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        adv = -D(cond_fake, fake).mean()
        if mode == "paired":
            l1_loss = (fake - y).abs().mean()
        else:  # band-limited: only the coarse cell is held (to G's cell, or to the real target); detail is free
            l1_loss = (F.avg_pool2d(fake, factor) - F.avg_pool2d(x if unpaired else y, factor)).abs().mean()
        opt_r.zero_grad(set_to_none=True)
        (adv + l1 * l1_loss).backward()
        opt_r.step()
        step += 1
        rec.append(l1_loss.item())
        base.append((x - y).abs().mean().item() if not unpaired else (fake - x).abs().mean().item())
        if log is not None and (step % 100 == 0 or step == steps):
            log({"refiner_step": step, "loss_d": round(loss_d.item(), 5), "adv": round(adv.item(), 5),
                 "l1": round(sum(rec[-100:]) / len(rec[-100:]), 5),
                 ("change" if unpaired else "l1_degraded"): round(sum(base[-100:]) / len(base[-100:]), 5),
                 "time_s": round(time.perf_counter() - t0, 2)})
    tail = slice(-min(100, len(rec)) or None, None)
    info = {"steps": step, "seconds": round(time.perf_counter() - t0, 2), "mode": mode,
            "factor": factor, "blur": blur, "batch": batch, "crop": crop, "l1_weight": l1, "n_images": len(images),
            **({"n_fakes": len(fakes)} if unpaired else {}),
            "l1": round(sum(rec[tail]) / max(1, len(rec[tail])), 5) if rec else None,
            ("change" if unpaired else "l1_degraded"):
                round(sum(base[tail]) / max(1, len(base[tail])), 5) if base else None}
    return R.cpu().eval(), info
