"""Layout generators (``layout = K``, issue 12): each cell drawn on a real training cell's layout map
(area fractions of the run's K dominant CIELAB stain colours), D judging (image, layout) pairs, the
maps in the weights. Real pbc-dev images, tiny widths."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from classifiers.runtime import UserError
from wbcgen.gan import Generator, generate, load_config, load_generator, train_gan
from wbcgen.gan import layout as lay
from wbcgen.gan.diffaug import color, cutout, diff_augment, translation
from wbcgen.gan.sample import latents
from wbcgen.gan.trainer import class_images

from evalkit import resume_matches_uninterrupted

# the default's shape (64-px training size) at tiny widths, with 3-colour layouts on an 8-px grid
CFG = load_config("tiny").replace(train_size=64, g_widths=[32, 16, 8, 8], d_blur_first=True, layout=3,
                                  layout_size=8, ckpt_every=4, name="tinylay")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_palette_and_maps_describe_real_cells(cells):
    x = class_images(cells, "neutrophil")
    x64 = F.avg_pool2d(x.float(), 2).round().to(torch.uint8)
    pal = lay.fit_palette(x64, 4, seed=0)
    assert pal.shape == (4, 3) and torch.all(pal[1:, 0] > pal[:-1, 0])  # sorted dark -> light (L*)
    assert 15 < pal[0, 0] < 45 and pal[0, 2] < -25  # the darkest colour: the violet nucleus
    assert pal[-1, 0] > 80  # the lightest: the plasma background
    assert torch.equal(pal, lay.fit_palette(x64, 4, seed=0))  # deterministic for a seed
    maps = lay.layout_maps(x64, pal, 16)
    assert maps.shape == (len(x), 4, 16, 16) and maps.dtype == torch.uint8
    assert (maps.int().sum(1) - 255).abs().max() <= 2  # fractions of each grid cell (rounded)
    # PBC crops centre the white cell: the nucleus colour fills the centre, not the border
    nuc = maps[:, 0].float() / 255
    centre, border = nuc[:, 5:11, 5:11].mean(), torch.cat([nuc[:, :2].flatten(1), nuc[:, -2:].flatten(1)], 1).mean()
    assert centre > 0.3 and border < 0.1, (centre, border)
    bank = lay.build_bank(x, 4, 16, 64, seed=0)
    assert torch.equal(bank, maps)  # the bank is the maps of the training cells as D sees them (64 px)


def test_a_latent_names_its_layout_whatever_its_batch():
    bank = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    z = latents(64, 16, seed=1)
    a = lay.pick(bank, z)
    assert a.shape == (64, 3, 8, 8) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(a[10:20], lay.pick(bank, z[10:20]))  # a row's layout depends on that row only
    seen = set()
    for row in a:  # every picked layout is one bank map under one of the 8 flips / quarter turns
        hits = [(i, t) for i in range(5) for t in range(8)
                if torch.equal(lay.d4(bank[i:i + 1].float() / 255, torch.tensor([t]))[0], row)]
        assert hits
        seen.add(hits[0])
    assert len({i for i, _ in seen}) == 5 and len({t for _, t in seen}) >= 6


def test_colour_augmentation_leaves_the_layout_channels_alone():
    torch.manual_seed(0)
    img = torch.rand(4, 3, 32, 32) * 2 - 1
    torch.manual_seed(7)
    out = diff_augment(torch.cat([img, img], 1), "color,translation,cutout")
    torch.manual_seed(7)  # the same random numbers, one transform at a time
    coloured = color(img)
    torch.manual_seed(7)
    color(img)
    both = cutout(translation(torch.cat([coloured, img], 1)))
    assert torch.equal(out, both)
    assert not torch.equal(out[:, :3], out[:, 3:])  # the image's colours moved, the layout's did not
    torch.manual_seed(7)  # three channels: exactly the old DiffAugment
    a = diff_augment(img, "color,translation,cutout")
    torch.manual_seed(7)
    assert torch.equal(a, cutout(translation(color(img))))


@pytest.fixture(scope="module")
def lay_run(cells, tmp_path_factory):
    out = tmp_path_factory.mktemp("lay_runs")
    run = train_gan(cells, "eosinophil", config=CFG.replace(members=2), out_root=out, steps=6, seed=3,
                    progress=False)
    return out, run


def test_layout_run_carries_its_bank_and_round_trips_strictly(cells, lay_run, tmp_path):
    out, run = lay_run
    G = load_generator(run)
    real = class_images(cells, "eosinophil")
    assert G.config["layout_n"] == len(real) == 12
    for j, m in enumerate(G.members):  # each member: the maps of the same 12 cells, its own palette seed
        assert torch.equal(m.layout_bank, lay.build_bank(real, 3, 8, 64, seed=3 + j))
        assert m.blocks[0][0].in_channels == CFG.g_widths[0] + 3 and m.out.in_channels == CFG.g_widths[-1] + 3
    G.save_pretrained(tmp_path / "g")
    G2 = Generator.from_pretrained(tmp_path / "g", strict=True)
    assert all(torch.equal(v, G2.state_dict()[k]) for k, v in G.state_dict().items())
    with pytest.raises(ValueError, match="layout_n"):
        Generator(CFG.to_dict())
    # sampling: deterministic, the folded sampler draws what G draws, and the layout steers the cell
    a = generate(G, 8, seed=4)
    assert torch.equal(a, generate(G, 8, seed=4)) and torch.equal(a[:3], generate(G, 3, seed=4))
    m = G.members[0]
    with torch.no_grad():
        for p in m.parameters():  # a few steps leave tiny members nearly blank: make them draw
            p.normal_(0, 0.3)
        z = latents(6, m.z_dim, seed=2)
        x = m(z)
        assert torch.allclose(x, m.folded()(z), atol=1e-5)
        assert torch.allclose(x, m(z, layout=lay.pick(m.layout_bank, z)), atol=1e-6)
        other = m(z, layout=lay.pick(m.layout_bank, z).flip(0))
        assert (x - other).abs().mean() > 1e-3


def test_layout_run_samples_and_pushes_like_any_run(lay_run, tmp_path):
    from click.testing import CliRunner

    from wbcgen.cli import main
    from wbcgen.hub import load_generator_from_hub, push

    out, run = lay_run
    res = CliRunner().invoke(main, ["sample", "-n", "5", "--from", str(out), "--out", str(tmp_path / "syn"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "syn").rglob("*.png"))) == 5
    repo = tmp_path / "repo"
    push(out, "me/wbc-lay", dry_run=True, to=repo, progress=False)
    assert json.loads((repo / "eosinophil" / "config.json").read_text())["layout"] == 3
    G = load_generator_from_hub(repo, "eosinophil")
    assert torch.equal(generate(G, 4, seed=2), generate(load_generator(run), 4, seed=2))


def test_layout_run_resumes_bit_identically(cells, tmp_path, monkeypatch):
    full, _ = resume_matches_uninterrupted(monkeypatch, cells, "basophil", CFG, tmp_path, ("G", "D", "ema"))
    meta = json.loads((full / "config.json").read_text())
    assert meta["gan"]["layout"] == 3 and meta["gan"]["layout_size"] == 8


@pytest.mark.parametrize("change", [dict(conditional=True), dict(pretrain=0.2), dict(layout=1), dict(layout=9),
                                    dict(layout_size=64), dict(layout_size=12), dict(layout_size=2)])
def test_layout_refuses_what_it_cannot_do(change):
    with pytest.raises(UserError, match="layout needs"):
        CFG.replace(**change)


def test_create_gan_says_a_layout_generator_comes_from_its_training_cells():
    from wbcgen.gan import create_gan

    with pytest.raises(UserError, match="made by train_gan"):
        create_gan(CFG)
