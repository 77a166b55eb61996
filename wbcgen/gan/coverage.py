"""Coverage: the fakes' coarse layout pulled towards the spread of the real cells (``ed_weight``).

In a CPU budget of a few hundred steps a per-class generator draws a NARROW class: precision 0.6-0.9
but coverage 0.07-0.09 against a real-vs-real floor of 0.96 (judge W-Net features; README, session
41), and a W-Net trained on such a class learns its centre only. What that W-Net needs is the cell's
shape, size and colour (real cells through a 32-px bottleneck still train it to 93 %), so G also gets

    ed_weight × ED(fakes, reals) / E‖Y − Y'‖

the energy distance (Székely & Rizzo 2013; the Cramér GAN's, Bellemare et al. 2017, here in a fixed
space) between the batch of fakes and the real batch, both area-downsampled to ``ed_size`` px:
ED = 2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ over the pairs of the batches (diagonals left out), divided by
the real batch's own mean distance (detached) so that the weight does not depend on the image range
or size. ED ≥ 0 and is 0 only when the two distributions are equal; unlike a regression loss its
optimum is the real distribution itself, not its mean: the −E‖X − X'‖ term pushes the fakes apart, the
2 E‖X − Y‖ term pulls them towards real cells — at 16 px, where only layout, size and colour are
left, so D alone still judges the detail. Cost: one pooling and two small distance matrices a step.
"""
import torch
import torch.nn.functional as F


def _mean_dist(a: torch.Tensor, b: torch.Tensor, same: bool) -> torch.Tensor:
    """Mean Euclidean distance over the pairs of rows of ``a`` and ``b`` (the diagonal left out when
    ``same``)."""
    d = torch.cdist(a, b)
    if not same:
        return d.mean()
    n = len(a)
    return (d.sum() - d.diagonal().sum()) / max(n * (n - 1), 1)


def coarse(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images (N×C×H×W) area-downsampled to ``size`` px, flattened to N×(C·size²), float32."""
    x = x.float()
    if x.shape[-1] != size:
        x = F.adaptive_avg_pool2d(x, size)
    return x.flatten(1)


def energy_loss(fake: torch.Tensor, real: torch.Tensor, size: int = 16) -> torch.Tensor:
    """Energy distance between ``fake`` and ``real`` (N×C×H×W, the same range) at ``size`` px, over the
    real batch's mean pairwise distance; ``real`` carries no gradient."""
    if len(fake) < 2 or len(real) < 2:
        raise ValueError("the energy distance needs at least 2 fakes and 2 real images")
    f, r = coarse(fake, size), coarse(real, size).detach()
    rr = _mean_dist(r, r, same=True)
    ed = 2 * _mean_dist(f, r, same=False) - _mean_dist(f, f, same=True) - rr
    return ed / rr.clamp_min(1e-6)
