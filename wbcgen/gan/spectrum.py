"""Spectral matching: the fakes' power spectrum pulled towards the real cells'.

GANs learn low frequencies first (spectral bias); in a CPU budget of a few hundred steps the
per-class generators draw smooth cells where real ones have 1-2 px granules, chromatin and sharp
membranes: at 64 px their power above a quarter of the sampling rate is 100-1000× below the real
cells' (README, session 24). Durall et al. (CVPR 2020, "Watch your up-convolution") regularise G
with the power spectrum; here G gets

    spec_weight × mean over colour channels c and 2-D frequencies f of (log P_fake(c, f) − log P_real(c, f))²

where P is the mean power of a batch of fakes, or of every training cell of the run under its eight
flips / quarter turns (computed once: a fixed target), of the 2-D FFT of the Hann-windowed,
mean-removed image at the training size, in an opponent colour space (luminance, red-green,
yellow-blue). Per frequency rather than per ring, so detail cannot be paid for with a few stripes
along the axes; opponent channels rather than RGB, so it cannot be paid for with colour fringes (both
seen with a per-ring RGB version). Over batch means only: it says how much detail of which scale,
not where — D still judges what the detail looks like.
"""
import math

import torch
import torch.nn.functional as F

# orthonormal opponent transform: luminance, red-green, yellow-blue
_OPP = torch.tensor([[1 / math.sqrt(3)] * 3, [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
                     [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)]])


def power_map(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean power (3 × size × size, opponent channels, unshifted FFT layout) of RGB images ``x``
    (N×3×H×W, any range), area-downsampled to ``size`` px first."""
    x = x.float()
    if x.shape[-1] != size:
        x = F.adaptive_avg_pool2d(x, size)
    x = torch.einsum("oc,nchw->nohw", _OPP.to(x.device), x)
    x = x - x.mean(dim=(2, 3), keepdim=True)
    w = torch.hann_window(size, periodic=False, device=x.device)
    return torch.fft.fft2(x * (w[:, None] * w[None, :])).abs().square().mean(0)


def real_log_power(images: torch.Tensor, size: int, image_size: int | None = None,
                   chunk: int = 128) -> torch.Tensor:
    """log mean power map of uint8 training images under their 8 flips / quarter turns, in G's
    [-1, 1] range: the fixed target. With ``image_size`` the images first take a ``size``-px
    generator's own path (area-downsampled to ``size``, bilinear back to ``image_size``), so a
    perfect G matches it."""
    tot = None
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].float() / 127.5 - 1
        if image_size and image_size != size:
            x = F.interpolate(F.adaptive_avg_pool2d(x, size), size=(image_size, image_size), mode="bilinear",
                              align_corners=False)
        for v in (x, x.transpose(2, 3)):
            for k in range(4):
                part = power_map(torch.rot90(v, k, (2, 3)), size) * len(x)
                tot = part if tot is None else tot + part
    return torch.log(tot / (8 * len(images)) + 1e-8)


def spectral_loss(fake: torch.Tensor, target_log: torch.Tensor, size: int) -> torch.Tensor:
    """Squared log-power distance of a batch of fakes (in [-1, 1]) to the real target."""
    return (torch.log(power_map(fake, size) + 1e-8) - target_log).square().mean()


def ring_profile(log_map: torch.Tensor) -> torch.Tensor:
    """Per channel, the mean of a log power map over rings of integer radius (C × size//2+1):
    for reading a map (tests, diagnostics), not for training."""
    n = log_map.shape[-1]
    f = torch.fft.fftfreq(n, device=log_map.device) * n
    r = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).round().long().clamp(max=n // 2).flatten()
    count = torch.bincount(r, minlength=n // 2 + 1).float()
    out = torch.zeros(log_map.shape[0], len(count), device=log_map.device).index_add_(1, r, log_map.flatten(1))
    return out / count
