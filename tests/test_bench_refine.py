"""bench/diag_refine.py (issue 12, session 25): applies the product's refiner stage (wbcgen/gan/refiner.py,
tested in test_gan_refiner.py) to a folder of uint8 cells."""
import torch
from evalkit import bench_module

from wbcgen.gan.refiner import Refiner, train_refiner

dr = bench_module("diag_refine")


def test_refine_keeps_uint8_shape_and_an_identity_refiner_only_degrades(cells):
    x = cells.images[:6]
    for factor in (2, 4):
        deg = dr.degraded(x, factor)
        assert deg.dtype == torch.uint8 and deg.shape == x.shape
        assert torch.equal(dr.refine(Refiner(), x, factor), deg)       # zero-initialised residual: degradation only
        assert (deg.float() - x.float()).abs().mean() > (1.5 if factor == 2 else 3.0)
    R, _ = train_refiner(cells.images, steps=30, factor=4, seed=0, batch=8)
    assert (dr.refine(R, x, 4).float() - dr.degraded(x, 4).float()).abs().mean() > 0.1
