"""Spectral matching (spec_weight; wbcgen/gan/spectrum.py) on real pbc-dev basophils."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from wbcgen.gan import load_config, train_gan
from wbcgen.gan.sample import generate, load_generator
from wbcgen.gan.spectrum import power_map, real_log_power, ring_profile, spectral_loss


@pytest.fixture(scope="module")
def basophils(cells):
    return cells.of_class("basophil").images[:48]


def test_spectrum_measures_detail_and_is_symmetric(basophils):
    """Blurring real cells removes high-frequency power and keeps the low; the target is the same
    under a transpose or a mirror (the eight flips / quarter turns of every cell); the real cells
    through G's own 64-px path are at the target, their blurred copies far from it."""
    x = basophils.float() / 127.5 - 1
    sharp = ring_profile(power_map(x, 64).log())[0]                     # luminance
    soft = ring_profile(power_map(TF.gaussian_blur(x, 9, 2.0), 64).log())[0]
    assert sharp.shape == (33,)
    assert (sharp[1:3] - soft[1:3]).abs().max() < 0.3                   # the cell's shape: nearly unchanged
    assert (sharp[20:] - soft[20:]).min() > 2.0                          # granules / edges: > 7x the power
    target = real_log_power(basophils, 64, 128)
    assert target.shape == (3, 64, 64)
    torch.testing.assert_close(target, target.transpose(1, 2), rtol=0, atol=1e-4)
    torch.testing.assert_close(target, target[:, :, (-torch.arange(64)) % 64], rtol=0, atol=1e-4)
    via_g = F.interpolate(F.adaptive_avg_pool2d(x, 64), size=(128, 128), mode="bilinear", align_corners=False)
    near = spectral_loss(via_g, target, 64)
    blurred = spectral_loss(TF.gaussian_blur(via_g, 9, 2.0), target, 64)
    assert near < 0.1 and blurred > 20 * near, (near, blurred)
    g = via_g.clone().requires_grad_(True)
    spectral_loss(TF.gaussian_blur(g, 9, 2.0), target, 64).backward()
    assert g.grad.abs().sum() > 0


def test_spec_weight_config_refusals():
    with pytest.raises(Exception, match="spec_weight"):
        load_config("fast64").replace(spec_weight=-1.0)
    with pytest.raises(Exception, match="spec_weight"):
        load_config("cond").replace(spec_weight=1.0)


def test_spec_weight_trains_detail_into_g(cells, tmp_path):
    """Two small fast64 basophil runs from the same seed, with and without the spectral term (100
    steps, raw G exported): the term's run logs its spectral distance at every evaluation, falling,
    and draws cells much nearer the real cells' spectrum than the run without it."""
    cfg = load_config("fast64").replace(g_widths=[32, 16, 8, 8], d_widths=[8, 16, 32, 64], batch_size=16,
                                         eval_every=50, eval_n=32, sample_every=50, ckpt_every=50,
                                         export="final", ema_decay=0.0)
    runs = {w: train_gan(cells, "basophil", config=cfg.replace(spec_weight=w), out_root=tmp_path / str(w),
                         steps=100, seed=3, progress=False) for w in (0.0, 1.0)}
    target = real_log_power(cells.of_class("basophil").images, 64, 128)
    dist = {w: float(spectral_loss(generate(load_generator(r), 64, seed=1).float() / 127.5 - 1, target, 64))
            for w, r in runs.items()}
    assert dist[1.0] < 0.5 * dist[0.0], dist          # measured: 7.9 vs 32.0
    evals = [json.loads(line)["eval"] for line in (runs[1.0] / "log.jsonl").read_text().splitlines()
             if '"eval"' in line]
    assert len(evals) == 2 and evals[1]["spec"] < 0.5 * evals[0]["spec"]
    assert not any('"spec"' in line for line in (runs[0.0] / "log.jsonl").read_text().splitlines())
    assert json.loads((runs[1.0] / "config.json").read_text())["gan"]["spec_weight"] == 1.0


def test_diag_spec_reads_real_cells_as_detailed_and_blurred_ones_as_not(basophils):
    """bench/diag_spec.py: real cells through the 64-px path sit at the target (deficit ~0 nats), the
    same cells blurred miss most of the fine detail."""
    from evalkit import bench_module

    ds = bench_module("diag_spec")
    target = real_log_power(basophils, 64, 128)
    real = ds.measure(ds.through_64(basophils), target, batch=len(basophils))
    soft = ds.measure(TF.gaussian_blur(basophils, 9, 2.0), target, batch=len(basophils))
    assert abs(real["hf_deficit_nats"]) < 0.3 and real["dist"] < 0.1, real
    assert soft["hf_deficit_nats"] < -2.0 and soft["dist"] > 20 * real["dist"], soft


def test_spec_weight_run_resumes_bit_identically(cells, tmp_path, monkeypatch):
    """The spectral target is a pure function of the training images: a run killed during step 7
    and resumed ends with the same G and EMA weights as the run that was never stopped."""
    from evalkit import resume_matches_uninterrupted

    cfg = load_config("tiny").replace(train_size=64, g_widths=[32, 16, 8, 8], spec_weight=1.0, ckpt_every=4)
    resume_matches_uninterrupted(monkeypatch, cells, "basophil", cfg, tmp_path, ("G", "ema"))
