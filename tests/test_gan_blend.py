"""Transitional conditioning (issue 12; Shahbazi et al. 2022): a conditional model that is an
UNCONDITIONAL model of every class before ``cond_from`` and blends the class in until ``cond_full``
— schedule, exact unconditional phase, save/load, folding, sampling one class and bit-identical
resume across the blend, on real pbc-dev images with tiny widths."""
from __future__ import annotations

import json

import pytest
import torch

from classifiers.runtime import UserError, load_checkpoint
from wbcgen.data import CLASSES
from wbcgen.gan import Generator, create_gan, load_config, load_generator, train_gan
from wbcgen.gan.models import CondBatchNorm2d, cond_mix_at

from evalkit import kill_during_step_7

BLEND = load_config("tiny").replace(conditional=True, name="tinyblend", cond_from=2, cond_full=6, g_embed_z=True,
                                    ckpt_every=4)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _offsets(g: torch.nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in g.modules() if isinstance(m, CondBatchNorm2d)] + \
           [m.bias for m in g.modules() if isinstance(m, CondBatchNorm2d)]


def test_schedule_and_config_errors():
    assert [cond_mix_at(BLEND, s) for s in (0, 1, 2, 3, 4, 5, 6, 99)] == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1]
    assert cond_mix_at(load_config("cond"), 0) == 1.0  # no blend: conditional from the start
    with pytest.raises(UserError, match="cond_from/cond_full need a conditional"):
        load_config("fast64").replace(cond_full=10)
    with pytest.raises(UserError, match="cond_from/cond_full"):
        BLEND.replace(cond_from=6)
    with pytest.raises(UserError, match="cond_from needs cond_full"):
        load_config("cond").replace(cond_from=3)
    with pytest.raises(UserError, match="pixel D"):
        load_config("proj").replace(cond_full=10)


def test_mix_zero_is_unconditional_and_mix_one_reads_the_class():
    torch.manual_seed(0)
    G, D = create_gan(BLEND, classes=list(CLASSES))
    for p in _offsets(G):  # pretend the class offsets were learnt
        p.data.normal_(0, 0.3)
    with torch.no_grad():
        D.embed.parametrizations.weight.original.normal_(0, 1)
        G.out.weight.normal_(0, 1)  # visible images, not sigmoid(≈0)
    G.eval(), D.eval()
    z, y, y2 = torch.randn(5, G.z_dim), torch.arange(5), torch.tensor([4, 0, 1, 2, 3])
    x = torch.rand(5, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        assert torch.equal(G(z, y), G(z, y2)) and torch.equal(D(x, y), D(x, y2))  # mix 0 (initial)
        G.set_cond_mix(1.0)
        D.cond_mix.fill_(1.0)
        assert not torch.allclose(G(z, y), G(z, y2)) and not torch.allclose(D(x, y), D(x, y2))
        # the folded per-class generator follows the blend (z embedding and BN offsets scaled by mix)
        for mix in (0.4, 1.0):
            G.set_cond_mix(mix)
            torch.testing.assert_close(G.folded(3)(z), G(z, torch.full((5,), 3)), atol=2e-5, rtol=1e-4)


def test_training_blends_the_class_in_round_trips_and_resumes_bit_identically(cells, tmp_path, monkeypatch):
    # before cond_from the offsets, the z embedding's use and D's projection get no gradient: unchanged
    early = train_gan(cells, "all", config=BLEND, out_root=tmp_path / "early", steps=2, seed=5, progress=False)
    s = load_checkpoint(early / "checkpoints" / "latest.safetensors")
    torch.manual_seed(5)  # the run's seed: the same initial weights
    _, D0 = create_gan(BLEND, classes=list(CLASSES))
    assert float(s["G"]["cond_mix"]) == 0.0
    for k, v in s["G"].items():
        if k.endswith((".weight", ".bias")) and k.rsplit(".", 1)[0] + ".shared_weight" in s["G"]:
            assert not v.any(), k  # class offsets still exactly 0
    assert torch.equal(s["D"]["embed.parametrizations.weight.original"],
                       D0.state_dict()["embed.parametrizations.weight.original"])
    # across the blend: step 8 ends conditional (mix 1), the offsets moved, resume from step 4 (mix 0.5) is exact
    full = train_gan(cells, "all", config=BLEND, out_root=tmp_path / "a", steps=8, seed=5, progress=False)
    kill_during_step_7(monkeypatch, cells, "all", BLEND, tmp_path / "b", seed=5)
    resumed = train_gan(cells, "all", out_root=tmp_path / "b", resume=True, progress=False)
    a = load_checkpoint(full / "checkpoints" / "latest.safetensors")
    b = load_checkpoint(resumed / "checkpoints" / "latest.safetensors")
    assert a["step"] == b["step"] == 8 and float(a["G"]["cond_mix"]) == float(a["D"]["cond_mix"]) == 1.0
    for part in ("G", "D", "ema", "proxy"):
        for k in a.get(part, {}):
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert any(v.abs().sum() > 0 for k, v in a["G"].items() if k.endswith("bn0.weight"))
    # the exported generator: strict round trip, mix stored, one class sampled like the full model
    H = Generator.from_pretrained(full / "generator", strict=True).eval()
    gcfg = json.loads((full / "generator" / "config.json").read_text())
    assert gcfg["cond_from"] == 2 and gcfg["cond_full"] == 6 and float(H.cond_mix) == 1.0
    z = torch.randn(4, H.z_dim)
    with torch.no_grad():
        v = load_generator(full, cls="basophil")
        torch.testing.assert_close(v.folded()(z), H(z, torch.full((4,), CLASSES.index("basophil"))),
                                   atol=2e-5, rtol=1e-4)
        assert not torch.allclose(H.for_class("basophil")(z), H.for_class("lymphocyte")(z))
