"""Classifier guidance of per-class GANs (``cls_weight``, issue 12): G is also trained on a frozen
classifier of every class of the training data — the learnt proxy's network — asked to see the run's
class in its fakes. On real pbc-dev images, tiny widths."""
from __future__ import annotations

import json

import pytest
import torch

from classifiers.runtime import UserError
from wbcgen.data import CLASSES
from wbcgen.gan import ddp, load_config, train_gan
from wbcgen.gan import train as gan_train
from wbcgen.gan.projected import embed
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
