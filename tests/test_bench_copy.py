"""bench/diag_copy.py: the nearest-training-cell distance that tells a generator's copies from new cells."""
from __future__ import annotations

import torch

from evalkit import bench_module


def test_a_training_cell_under_any_flip_or_turn_is_a_copy_and_another_cell_is_not(cells):
    dc = bench_module("diag_copy")
    x = cells.of_class("monocyte").images
    train, other = x[:8], x[8:]
    turned = torch.stack([train[0].flip(-1), torch.rot90(train[1], 1, (-2, -1)), torch.rot90(train[2], 2, (-2, -1))])
    d = dc.nearest(torch.cat([train, turned]), train)
    assert d.shape == (11,) and float(d.max()) < 1e-6  # itself, mirrored, turned: distance 0
    far = dc.nearest(other, train)
    assert float(far.min()) > 0.03  # real cells of the same class are not copies of each other
    # the distance is the RMS over the 64-px pixels of the closest view
    a = dc.small(other[:1]).view(1, 3, 64, 64)
    views = [dc.small(train[i:i + 1]).view(1, 3, 64, 64) for i in range(8)]
    best = min(float((a - torch.rot90(v if f == 0 else v.flip(-1), k, (-2, -1))).pow(2).mean().sqrt())
               for v in views for k in range(4) for f in range(2))
    assert abs(float(far[0]) - best) < 1e-5


def test_a_blurred_cell_is_nearer_to_the_training_cells_than_the_sharp_one(cells):
    # why diag_copy reports a blurred floor: smoothness alone lowers the distance, without copying
    dc = bench_module("diag_copy")
    x = cells.of_class("neutrophil").images
    sharp, smooth = dc.nearest(x[8:], x[:8]), dc.nearest(dc.blurred(x[8:]), x[:8])
    assert dc.blurred(x[:2]).dtype == torch.uint8 and float((smooth < sharp).float().mean()) >= 0.75
