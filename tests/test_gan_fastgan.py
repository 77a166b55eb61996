"""FastGAN's few-shot components (Liu et al. 2021; issue 12's ablation): skip-layer excitation in G (``g_sle``)
and a self-supervised D that rebuilds its real inputs (``d_recon``). Real pbc-dev basophils, tiny widths."""
from __future__ import annotations

import json

import pytest
import torch

from classifiers.runtime import UserError
from wbcgen.gan import load_config, train_gan
from wbcgen.gan.models import Discriminator, Generator, SkipExcite
from wbcgen.gan.sample import generate, load_generator
from wbcgen.gan.trainer import class_images

from evalkit import resume_matches_uninterrupted

CFG = load_config("tiny").replace(train_size=64, g_widths=[32, 16, 8, 8], d_blur_first=True, g_sle=True,
                                  d_recon=1.0, ckpt_every=4, name="tinyfastgan")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_fastgan_settings_are_checked():
    with pytest.raises(UserError, match="g_sle needs the fast family"):
        load_config("paper").replace(g_sle=True)
    with pytest.raises(UserError, match="d_recon must be >= 0"):
        load_config("fast64").replace(d_recon=-1.0)
    with pytest.raises(UserError, match="d_recon"):
        load_config("proj").replace(d_recon=1.0)
    with pytest.raises(UserError, match="d_recon"):
        load_config("paper").replace(d_recon=1.0)
    # off by default: the default's networks are unchanged
    G, D = Generator(load_config("fast64").to_dict()), Discriminator(load_config("fast64"))
    assert G.sle is None and D.decoders is None


def test_sle_gates_the_fine_stages_and_round_trips(cells, tmp_path):
    """A trained g_sle run: one gate per block two upsamplings above a stage (the 8- and 16-px features gate the 32-
    and 64-px blocks); a shut gate zeroes its block's features; the folded copy draws the same cells; sampling is
    reproducible and batch-independent; the saved generator reloads strictly."""
    run = train_gan(cells, "basophil", config=CFG, out_root=tmp_path / "r", steps=8, seed=5, progress=False)
    G = load_generator(run).eval()
    assert [type(m) for m in G.sle] == [SkipExcite, SkipExcite]
    assert [m.squeeze.in_channels for m in G.sle] == [32, 16] and [m.excite.out_channels for m in G.sle] == [8, 8]
    z = torch.randn(6, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = G(z)
        torch.testing.assert_close(G.folded()(z), x, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(G(z[2:4]), x[2:4], atol=1e-6, rtol=0)
        seen = []
        hook = G.out.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
        G(z)
        bias = G.sle[1].excite.bias.clone()
        G.sle[1].excite.bias.fill_(-40.0)                 # the 64-px block's gate shut ...
        shut = G(z)
        G.sle[1].excite.bias.copy_(bias)
        hook.remove()
    open_, closed = seen
    assert open_.shape[-1] == 66 and open_.abs().max() > 1e-3    # the 64-px features (+ the replicate margin)
    assert closed.abs().max() < 1e-9                              # ... multiplies them by ~0
    assert not torch.equal(shut, x)
    assert torch.equal(generate(G, 5, seed=2)[:3], generate(G, 3, seed=2))
    G.save_pretrained(tmp_path / "gen")
    H = Generator.from_pretrained(tmp_path / "gen", strict=True).eval()
    assert torch.equal(generate(H, 3, seed=2), generate(G, 3, seed=2))


def test_d_recon_loss_is_from_the_real_inputs_only(cells):
    """The reconstruction term sees only the first ``recon`` rows (the real ones): other fakes beside the same
    reals give the same loss; it trains the decoders and D's stages up to the 1/8 stage, never D's head."""
    torch.manual_seed(0)
    D = Discriminator(CFG).eval()  # eval: spectral norm's power iteration does not step between the two calls
    real = class_images(cells, "basophil")[:8].float() / 127.5 - 1
    fake_a, fake_b = torch.rand(8, 3, 128, 128) * 2 - 1, torch.zeros(8, 3, 128, 128)
    torch.manual_seed(1)
    logits_a, rec_a = D(torch.cat([real, fake_a]), recon=8)
    torch.manual_seed(1)
    logits_b, rec_b = D(torch.cat([real, fake_b]), recon=8)
    assert logits_a.shape == (16, 1) and torch.equal(logits_a[:8], logits_b[:8])
    assert torch.equal(rec_a, rec_b) and 0.05 < float(rec_a.detach()) < 2.0
    rec_a.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in D.decoders.parameters())
    assert D.head.parametrizations.weight.original.grad is None
    with pytest.raises(ValueError, match="no decoders"):
        Discriminator(CFG.replace(d_recon=0.0))(real, recon=8)


def test_d_learns_to_rebuild_real_cells_and_logs_it(cells, tmp_path):
    """40 steps on real basophils: the logged reconstruction loss falls by a third; the default logs none."""
    cfg = CFG.replace(log_every=5, sample_every=40, eval_every=40, ckpt_every=40)
    run = train_gan(cells, "basophil", config=cfg, out_root=tmp_path / "r", steps=40, seed=3, progress=False)
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    rec = [r["d_recon"] for r in log if "d_recon" in r]
    assert len(rec) == 8 and rec[-1] < 0.67 * rec[0], rec
    off = train_gan(cells, "basophil", config=cfg.replace(d_recon=0.0), out_root=tmp_path / "o", steps=5, seed=3,
                    progress=False)
    assert not any("d_recon" in x for x in (off / "log.jsonl").read_text().splitlines())


def test_fastgan_run_resumes_bit_identically(cells, tmp_path, monkeypatch):
    resume_matches_uninterrupted(monkeypatch, cells, "basophil", CFG, tmp_path, ("G", "D", "ema"))
