"""Projected discriminator (issue 12): a feature net learnt from the run's own images, frozen;
heads trained; resume bit-identical; the learnt-feature selection proxy — real pbc-dev images."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from classifiers.runtime import UserError, load_checkpoint
from wbcgen.data import CLASSES, load_cells
from wbcgen.gan import create_gan, find_runs, generate, load_config, load_generator, train_gan
from wbcgen.gan.projected import FeatureNet, ProjectedDiscriminator, train_feature_net
from wbcgen.gan.trainer import labelled_images

from evalkit import kill_during_step_7

ROOT = Path(__file__).resolve().parents[1]
TINY_PROJ = load_config("proj").replace(name="tinyproj", z_dim=32, g_widths=[32, 16, 8, 8, 4], batch_size=8,
                                        feat_steps=6, feat_widths=[4, 8, 8, 16], proj_width=8, eval_n=32,
                                        log_every=2, sample_every=4, eval_every=4, ckpt_every=4, ema_decay=0.99)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_proj_recipe_mirrors_preset_and_bad_combinations_are_refused():
    assert load_config(str(ROOT / "recipes" / "dcgan-proj.toml")).to_dict() == load_config("proj").to_dict()
    with pytest.raises(UserError, match="needs a conditional config"):
        load_config("fast").replace(d_arch="projected", r1_gamma=0.0)
    with pytest.raises(UserError, match="r1_gamma = 0"):
        load_config("proj").replace(r1_gamma=0.1)
    with pytest.raises(UserError, match="d_arch must be"):
        load_config("cond").replace(d_arch="patch")


def test_feature_net_learns_the_classes_and_is_frozen(pbc_dir):
    full = load_cells(pbc_dir, progress=False)  # all 3,565 cells: the held-out tenth is 357 images
    x, y = labelled_images(full, list(CLASSES))
    cfg = TINY_PROJ.replace(feat_steps=100, feat_widths=[8, 16, 16, 32])
    net, info = train_feature_net(x, y, cfg, len(CLASSES), seed=0, device=torch.device("cpu"))
    assert list(net.parameters()) == [] and len(list(net.buffers())) > 0  # frozen: weights are buffers
    assert info["steps"] == 100 and info["n_images"] == len(x) and info["held_out_images"] == int((torch.arange(len(x)) % 10 == 9).sum())
    # scored after 50 steps on the other nine tenths: far above chance (0.2; measured 0.70)
    assert info["held_out_balanced_accuracy"] > 0.5, info
    again, info2 = train_feature_net(x, y, cfg, len(CLASSES), seed=0, device=torch.device("cpu"))
    assert info2 == info and all(torch.equal(a, b) for a, b in zip(net.buffers(), again.buffers()))
    D = ProjectedDiscriminator(cfg, len(CLASSES), net)
    imgs = x[:6].float() / 127.5 - 1
    out = D(imgs, y[:6])
    # one logit per 4x4 patch per scale, four scales
    assert out.shape == (6, 4 * 16)
    # D's optimiser sees only the heads; the feature net and the random channel mixes stay fixed
    trainable = {n for n, _ in D.named_parameters()}
    assert trainable and not any(n.startswith("features.") or ".ccm." in n for n in trainable)
    assert D.embed(x[:5]).shape == (5, 16 + 16 + 32)


def test_projected_run_trains_heads_only_resumes_bit_identically_and_samples(cells, tmp_path, monkeypatch):
    cfg = TINY_PROJ
    full = train_gan(cells, "all", config=cfg, out_root=tmp_path / "a", steps=8, seed=5, progress=False)
    meta = json.loads((full / "config.json").read_text())
    assert meta["feature_net"]["steps"] == 6 and meta["feature_net"]["n_images"] == len(cells)
    ck = load_checkpoint(full / "checkpoints" / "latest.safetensors")
    fresh_net, _ = train_feature_net(*labelled_images(cells, list(CLASSES)), cfg, len(CLASSES), seed=5,
                                     device=torch.device("cpu"))
    # after 8 GAN steps the feature net in the checkpoint is still the one trained before the loop
    for k, v in fresh_net.state_dict().items():
        assert torch.equal(ck["D"][f"features.{k}"], v), k
    kill_during_step_7(monkeypatch, cells, "all", cfg, tmp_path / "b", seed=5)
    resumed = train_gan(cells, "all", out_root=tmp_path / "b", resume=True, progress=False)
    b = load_checkpoint(resumed / "checkpoints" / "latest.safetensors")
    assert ck["step"] == b["step"] == 8
    for part in ("G", "D", "ema"):
        for k in ck[part]:
            assert torch.equal(ck[part][k], b[part][k]), (part, k)
    assert json.loads((resumed / "config.json").read_text())["feature_net"] == meta["feature_net"]
    # the exported generator is an ordinary conditional generator: one class samples like a per-class run
    runs = find_runs(tmp_path / "a")
    assert set(runs) == set(CLASSES)
    img = generate(load_generator(runs["basophil"], cls="basophil"), 2, seed=0)
    assert img.shape == (2, 3, 128, 128) and img.dtype == torch.uint8
    assert torch.equal(img, generate(load_generator(full, cls="basophil"), 2, seed=0))


@pytest.mark.parametrize("key", ["cls_weight", "fm_weight"])
def test_guide_losses_use_the_projected_ds_feature_net(cells, tmp_path, key):
    """cls_weight: G's loss adds the frozen classifier's cross-entropy of the asked class; fm_weight:
    the distance of the fakes' feature statistics to the real batch's. Either is logged in loss_g
    (higher than the adversarial part alone on the same steps)."""
    plain = train_gan(cells, "all", config=TINY_PROJ, out_root=tmp_path / "p", steps=4, seed=2, progress=False)
    cls = train_gan(cells, "all", config=TINY_PROJ.replace(**{key: 1.0}), out_root=tmp_path / "c", steps=4,
                    seed=2, progress=False)
    first = [json.loads((d / "log.jsonl").read_text().splitlines()[0]) for d in (plain, cls)]
    # + CE of a 5-class classifier / + the statistics gap (several real variances) on untrained fakes
    assert first[1]["loss_g"] > first[0]["loss_g"] + 0.5
    with pytest.raises(UserError, match="conditional model needs a projected discriminator"):
        load_config("cond").replace(**{key: 1.0})


def test_create_gan_builds_a_projected_pair():
    G, D = create_gan(TINY_PROJ)
    assert isinstance(D, ProjectedDiscriminator) and isinstance(D.features, FeatureNet)
    z, y = torch.randn(3, G.z_dim), torch.tensor([0, 2, 4])
    assert D(G(z, y) * 2 - 1, y).shape == (3, 64)


def test_class_embedding_on_z_folds_exactly_and_separates_classes(tmp_path):
    from wbcgen.gan import Generator

    cfg = load_config("tiny").replace(conditional=True, g_embed_z=True, name="tinyemb")
    with pytest.raises(UserError, match="g_embed_z needs a conditional config"):
        load_config("tiny").replace(g_embed_z=True)
    torch.manual_seed(0)
    G, _ = create_gan(cfg, classes=["basophil", "eosinophil", "monocyte"])
    assert G.z_embed.weight.std() > 0.5  # N(0, 1) like z, not the 0.02 of D's embeddings
    G.train()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(3):
        G(torch.randn(6, G.z_dim), y)
    G.eval()
    z = torch.randn(6, G.z_dim)
    G.save_pretrained(tmp_path / "g")
    H = Generator.from_pretrained(tmp_path / "g", strict=True).eval()
    with torch.no_grad():
        assert torch.equal(H(z, y), G(z, y))
        for k, name in enumerate(H.classes):
            torch.testing.assert_close(H.for_class(name).folded()(z), G(z, torch.full((6,), k)), atol=2e-5, rtol=1e-4)
    # at initialisation the class moves the image about as much as z does; with cBN alone (scales
    # N(1, 0.02)) it barely does — why short CPU runs drew the same cell in every class row
    torch.manual_seed(1)
    plain, _ = create_gan(cfg.replace(g_embed_z=False), classes=["basophil", "eosinophil", "monocyte"])
    z2, y0, y1 = torch.randn(6, G.z_dim), torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.long)
    for g, lo, hi in ((G.eval(), 0.5, 10.0), (plain.eval(), 0.0, 0.2)):
        with torch.no_grad():
            by_class = float((g(z, y0) - g(z, y1)).abs().mean())
            by_z = float((g(z, y0) - g(z2, y0)).abs().mean())
        assert lo < by_class / by_z < hi, (by_class, by_z)
