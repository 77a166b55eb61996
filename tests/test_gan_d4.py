"""``real_d4`` (issue 12's ablation): each REAL training cell shown to D under one of the 8 flips / quarter turns,
drawn per cell and step. Real pbc-dev images, tiny widths."""
from __future__ import annotations

import pytest
import torch

from classifiers.runtime import UserError
from wbcgen.gan import load_config
from wbcgen.gan import trainer as gan_trainer
from wbcgen.gan.ddp import setup
from wbcgen.gan.order import DataOrder
from wbcgen.gan.trainer import Trainer, class_images

from evalkit import resume_matches_uninterrupted

CFG = load_config("tiny").replace(train_size=64, g_widths=[32, 16, 8, 8], d_blur_first=True, real_d4=True,
                                  ckpt_every=4, diffaug="", name="tinyd4")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _d4_all(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips / quarter turns of one C×H×W image."""
    return [torch.rot90(x.flip(-1) if j & 4 else x, j & 3, dims=(-2, -1)) for j in range(8)]


def _reals_seen(cells, cfg, monkeypatch, steps: int = 3) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The real batches D was shown (captured at diff_augment's first call of each step) and the data order's
    images for those steps."""
    seen = []
    real_fn = gan_trainer.diff_augment

    def spy(x, policy, p=1.0):
        if len(seen) < steps and (not seen or seen[-1][1] != tr.step):
            seen.append((x.detach().clone(), tr.step))
        return real_fn(x, policy, p)

    monkeypatch.setattr(gan_trainer, "diff_augment", spy)
    real = class_images(cells, "basophil")
    tr = Trainer(cfg, real, 3, setup("cpu"))
    for _ in range(steps):
        tr.train_step()
    order = DataOrder(len(real), 3)
    idx = torch.cat([order.next(cfg.batch_size) for _ in range(steps)])
    return [x for x, _ in seen], (real[idx].float() / 127.5 - 1)


def test_each_real_cell_is_one_of_its_eight_orientations(cells, monkeypatch):
    seen, expected = _reals_seen(cells, CFG, monkeypatch)
    got = torch.cat(seen)
    assert got.shape == expected.shape
    which = []
    for g, e in zip(got, expected):
        hits = [j for j, t in enumerate(_d4_all(e)) if torch.equal(g, t)]
        assert hits, "a real cell D saw is none of its 8 orientations"
        which.append(hits[0])
    # drawn per cell: 24 cells cover several orientations (all identity: probability 8^-24)
    assert len(set(which)) >= 4 and sum(j == 0 for j in which) < len(which)
    # the pixel values are those of the data (a permutation of each image's pixels, nothing resampled)
    assert torch.equal(got.flatten(1).sort(1).values, expected.flatten(1).sort(1).values)


def test_without_it_d_sees_the_cells_as_they_are(cells, monkeypatch):
    seen, expected = _reals_seen(cells, CFG.replace(real_d4=False), monkeypatch)
    assert torch.equal(torch.cat(seen), expected)


def test_real_d4_run_resumes_bit_identically(cells, tmp_path, monkeypatch):
    resume_matches_uninterrupted(monkeypatch, cells, "basophil", CFG, tmp_path, ("G", "D", "ema"))


def test_real_d4_with_a_layout_is_refused():
    with pytest.raises(UserError, match="real_d4: a layout run already"):
        CFG.replace(layout=3, layout_size=8)
