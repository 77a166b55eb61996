"""bench/diag_ceiling.py (issue 12, session 22): its 64-px view is exactly what a fast64 generator's pipeline
does to a real cell, and its resampling keeps a synthetic row's class sizes."""
import torch
import torch.nn.functional as F
from evalkit import bench_module

from wbcgen.data import CLASSES
from wbcgen.gan.models import _upsample

dc = bench_module("diag_ceiling")


def test_the_64px_view_is_the_generators_pipeline(cells):
    x = cells.images[:6]
    y = dc.through_64(x)
    assert y.shape == x.shape and y.dtype == torch.uint8
    want = _upsample(F.avg_pool2d(x.float() / 255, 2), 128)       # D's area downsample, G's fixed upsample
    assert (y.float() / 255 - want).abs().max() <= 0.5 / 255 + 1e-6
    assert (y.float() - x.float()).abs().mean() > 0.5                 # it does lose detail on real cells
    assert torch.equal(dc.through_64(y[:1]), dc.through_64(y[:1]))


def test_resample_keeps_class_sizes_and_the_unique_limit(cells):
    labels = cells.labels
    idx = dc.resample(labels, 40, seed=0)
    assert len(idx) == 40 * len(CLASSES)
    assert torch.equal(torch.bincount(labels[idx], minlength=len(CLASSES)), torch.full((len(CLASSES),), 40))
    few = dc.resample(labels, 40, seed=0, unique=3)
    for k in range(len(CLASSES)):
        assert len(set(few[labels[few] == k].tolist())) <= 3
    assert torch.equal(idx, dc.resample(labels, 40, seed=0)) and not torch.equal(idx, dc.resample(labels, 40, seed=1))


def test_the_32px_view_and_the_view_names(cells):
    x = cells.images[:6]
    y = dc.through(x, 32)
    want = _upsample(F.avg_pool2d(x.float() / 255, 4), 128)       # a 32-px generator's cell
    assert (y.float() / 255 - want).abs().max() <= 0.5 / 255 + 1e-6
    # coarser than the 64-px view: further from the real cell
    assert (y.float() - x.float()).abs().mean() > (dc.through_64(x).float() - x.float()).abs().mean() + 0.5
    assert [dc._view(v) for v in ("real", "real64", "real32", "real32-u30", "real64-u100")] == \
        [(0, 0), (64, 0), (32, 0), (32, 30), (64, 100)]
    assert dc._view("real16") is None and dc._view("real-u30") is None and dc._view("real32-ux") is None
