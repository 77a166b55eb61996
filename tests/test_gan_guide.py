"""Classifier guidance of per-class GANs (issue 12): G is also trained on a frozen classifier of every
class of the training data — the learnt proxy's network — asked to see the run's class in its fakes
(``cls_weight``) or to match the real batch's feature statistics (``fm_weight``). On real pbc-dev
images, tiny widths."""
from __future__ import annotations

import json

import pytest
import torch

from classifiers.runtime import UserError
from wbcgen.data import CLASSES
from wbcgen.gan import ddp, load_config, train_gan
from wbcgen.gan import train as gan_train
from wbcgen.gan.projected import _fit, embed, moment_loss
from wbcgen.gan.trainer import Trainer, class_images

from evalkit import resume_matches_uninterrupted

# the default's shape (64-px training size) at tiny widths; selection stays the random-conv FD
CFG = load_config("tiny").replace(feat_steps=60, feat_widths=[8, 16, 16, 32], train_size=64,
                                  g_widths=[32, 16, 8, 8], d_blur_first=True, ckpt_every=4)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _recognised(cells, cls: str, weight: float, steps: int) -> float:
    """Share of 64 fixed-z EMA samples the run's guide classifier calls ``cls`` after ``steps``."""
    cfg = CFG.replace(cls_weight=weight, ema_decay=0.0)
    proxy = gan_train._class_proxy(cells, cls, cfg.replace(cls_weight=1.0), 3, torch.device("cpu"), trained=True)
    tr = Trainer(cfg, class_images(cells, cls), 3, ddp.Dist(), proxy=proxy)
    for _ in range(steps):
        tr.train_step()
    _, pred = embed(proxy.net, tr.generate_eval(64))
    return float((pred == proxy.target).float().mean())


def _moment_gap(cells, cls: str, weight: float, steps: int) -> float:
    """moment_loss of 64 fixed-z samples against 64 real ``cls`` cells in the run's guide classifier."""
    cfg = CFG.replace(fm_weight=weight, ema_decay=0.0)
    proxy = gan_train._class_proxy(cells, cls, cfg.replace(fm_weight=1.0), 3, torch.device("cpu"), trained=True)
    real = class_images(cells, cls)
    tr = Trainer(cfg, real, 3, ddp.Dist(), proxy=proxy)
    for _ in range(steps):
        tr.train_step()
    net = proxy.net
    with torch.no_grad():
        fake = net.stage_features(_fit(tr.generate_eval(64) * 2 - 1, net.input_size))
        ref = net.stage_features(_fit(real[:64].float() / 127.5 - 1, net.input_size))
    return float(moment_loss(fake, ref))


def test_moment_loss_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    real = [torch.randn(8, 4, 6, 6, generator=g) * 3 + 1, torch.randn(8, 2, 3, 3, generator=g)]
    assert float(moment_loss(real, real)) < 1e-6
    fake = [r.clone().requires_grad_(True) for r in real]
    sd = torch.var_mean(real[0], dim=[0, 2, 3])[0].mean().sqrt()  # stage 0's mean off by one real std:
    shifted = [fake[0] + sd, fake[1]]  # 1.0 there, 0 in stage 1
    assert float(moment_loss(shifted, real).detach()) == pytest.approx(0.5, rel=1e-4)
    scaled = [f * 10 for f in shifted], [r * 10 for r in real]  # every stage weighs alike at any scale
    assert moment_loss(*scaled).item() == pytest.approx(moment_loss(shifted, real).item(), rel=1e-4)
    moment_loss(shifted, [r.requires_grad_(True) for r in real]).backward()
    assert fake[0].grad.abs().sum() > 0 and all(r.grad is None for r in real)  # only the fakes learn


def test_feature_matching_moves_the_fakes_statistics_towards_the_real_cells(cells):
    gan_train._PROXY_CACHE.clear()
    # same seed, same data order and latents: only the feature-matching term differs
    # (measured on these images: 6.9 without, 0.64 with after 100 steps; at 40-60 steps the two curves
    # still cross. Adam makes any weight that dominates G's loss act alike: 5 and 20 give one curve)
    plain, matched = (_moment_gap(cells, "eosinophil", w, 100) for w in (0.0, 5.0))
    assert matched < 0.6 * plain, (plain, matched)


def test_guidance_makes_the_classifier_see_the_runs_class(cells):
    gan_train._PROXY_CACHE.clear()
    # same seed, same data order and latents: only the guide's term differs
    plain, guided = (_recognised(cells, "basophil", w, 60) for w in (0.0, 5.0))
    assert guided > plain + 0.5, (plain, guided)


def test_guided_run_records_its_classifier_and_resumes_bit_identically(cells, tmp_path, monkeypatch):
    cfg = CFG.replace(cls_weight=0.5)
    full, _ = resume_matches_uninterrupted(monkeypatch, cells, "lymphocyte", cfg, tmp_path, ("G", "D", "ema", "proxy"))
    meta = json.loads((full / "config.json").read_text())
    assert meta["gan"]["cls_weight"] == 0.5 and meta["feature_net"]["classes"] == list(CLASSES)
    assert meta["feature_net"]["use"] == "generator guidance (cls_weight)"
    assert "quality_proxy" not in meta or "wbcgen.gan.quality" in meta["quality_proxy"]
    evals = [json.loads(x)["eval"] for x in (full / "log.jsonl").read_text().splitlines() if '"eval"' in x]
    assert evals and all("class_acc" not in e for e in evals)  # selection is still the random-conv FD


def test_feature_matched_run_records_its_classifier_and_resumes_bit_identically(cells, tmp_path, monkeypatch):
    full, _ = resume_matches_uninterrupted(monkeypatch, cells, "monocyte", CFG.replace(fm_weight=1.0), tmp_path,
                                           ("G", "D", "ema", "proxy"))
    meta = json.loads((full / "config.json").read_text())
    assert meta["gan"]["fm_weight"] == 1.0 and meta["feature_net"]["use"] == "feature matching (fm_weight)"


def test_guidance_needs_other_classes_and_a_sound_config(cells, tmp_path):
    with pytest.raises(UserError, match="at least two classes"):
        train_gan(cells.of_class("basophil"), "basophil", config=CFG.replace(cls_weight=1.0), out_root=tmp_path,
                  steps=2, progress=False)
    with pytest.raises(UserError, match="at least two classes"):  # an ensemble too
        train_gan(cells.of_class("basophil"), "basophil", config=load_config("fast64x2").replace(cls_weight=1.0),
                  out_root=tmp_path, steps=2, progress=False)
    assert not any(tmp_path.iterdir())  # refused before any folder is made
    with pytest.raises(UserError, match="cls_weight must be >= 0"):
        CFG.replace(cls_weight=-1.0)
    with pytest.raises(UserError, match="projected discriminator"):
        load_config("cond").replace(cls_weight=1.0)
    with pytest.raises(UserError, match="fm_weight = 1 guides the basophil generator"):
        train_gan(cells.of_class("basophil"), "basophil", config=CFG.replace(fm_weight=1.0), out_root=tmp_path,
                  steps=2, progress=False)
    assert not any(tmp_path.iterdir())
    with pytest.raises(UserError, match="fm_weight must be >= 0"):
        CFG.replace(fm_weight=-0.5)
    with pytest.raises(UserError, match="projected discriminator"):
        load_config("cond").replace(fm_weight=1.0)
