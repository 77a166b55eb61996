"""The coverage term (ed_weight; wbcgen/gan/coverage.py) on real pbc-dev cells."""
from __future__ import annotations

import json

import pytest
import torch

from wbcgen.gan import load_config, train_gan
from wbcgen.gan.coverage import coarse, energy_loss


@pytest.fixture(scope="module")
def more(tmp_path_factory, pbc_dir):
    """96 real basophils and 48 lymphocytes of pbc-dev (the shared 12-per-class subset is too small
    for a distribution), loaded as a CellSet."""
    import shutil

    from wbcgen.data import load_cells

    out = tmp_path_factory.mktemp("cov")
    for cls, n in (("basophil", 96), ("lymphocyte", 48)):
        (out / cls).mkdir()
        for f in sorted((pbc_dir / cls).iterdir())[:n]:
            shutil.copy(f, out / cls / f.name)
    return load_cells(out, progress=False)


def _x(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1


def test_energy_distance_reads_spread_and_class(more):
    """Two halves of the real basophils are near 0; one basophil repeated (a collapsed class) and the
    lymphocytes are far, the collapsed set far beyond the two halves' value; the definition written out
    point by point gives the same number; it is invariant to the image range (normalised)."""
    baso = _x(more.of_class("basophil").images[:96])
    lymph = _x(more.of_class("lymphocyte").images[:48])
    a, b = baso[:48], baso[48:]
    same = float(energy_loss(a, b))
    collapsed = float(energy_loss(a[:1].repeat(48, 1, 1, 1), b))
    other = float(energy_loss(lymph, b))
    assert abs(same) < 0.1, same
    assert collapsed > 0.5 and collapsed > 10 * abs(same), (same, collapsed)
    assert other > 0.3 and other > 5 * abs(same), (same, other)
    f, r = coarse(a, 16), coarse(b, 16)
    n = len(f)
    d = lambda u, v: float((u - v).square().sum().sqrt())  # noqa: E731
    xy = sum(d(f[i], r[j]) for i in range(n) for j in range(n)) / n**2
    xx = sum(d(f[i], f[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(d(r[i], r[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    assert same == pytest.approx((2 * xy - xx - yy) / yy, abs=1e-4)
    assert float(energy_loss(a * 0.5, b * 0.5)) == pytest.approx(same, abs=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        energy_loss(a[:1], b)


def test_energy_gradient_spreads_a_collapsed_set(more):
    """Gradient steps on the term alone, from one real basophil repeated plus tiny noise: the set's
    spread at 16 px grows towards the real cells' and the distance falls — the term widens a class."""
    real = _x(more.of_class("basophil").images[:64])
    g = torch.Generator().manual_seed(0)
    fake = (real[:1].repeat(64, 1, 1, 1) + 0.01 * torch.randn(64, 3, 128, 128, generator=g)).requires_grad_(True)
    opt = torch.optim.Adam([fake], lr=0.02)

    def spread(x: torch.Tensor) -> float:
        return float(torch.pdist(coarse(x.detach(), 16)).mean())
    start, start_ed = spread(fake), float(energy_loss(fake.detach(), real))
    for _ in range(60):
        opt.zero_grad()
        energy_loss(fake, real).backward()
        opt.step()
    assert spread(fake) > 5 * start and spread(fake) > 0.5 * spread(real), (start, spread(fake), spread(real))
    assert float(energy_loss(fake.detach(), real)) < 0.3 * start_ed


def test_ed_weight_config_refusals():
    with pytest.raises(Exception, match="ed_weight"):
        load_config("fast64").replace(ed_weight=-1.0)
    with pytest.raises(Exception, match="ed_weight"):
        load_config("cond").replace(ed_weight=1.0)
    with pytest.raises(Exception, match="ed_size"):
        load_config("fast64").replace(ed_weight=1.0, ed_size=128)


def test_energy_term_alone_trains_a_generator_to_the_class_spread(more):
    """A small generator of the fast family trained on the term ALONE (no discriminator; 60 Adam steps
    of batch 32 against real basophil batches): its distance to the real basophils falls to a fraction
    of its start and its cells at 16 px spread like the real ones — the term is a distribution target
    (a regression target would draw the mean cell, spread ~0)."""
    from wbcgen.gan import create_gan

    torch.manual_seed(0)
    G, _ = create_gan(load_config("tiny").replace(train_size=64, g_widths=[32, 16, 8, 8]))
    real = _x(more.of_class("basophil").images)
    opt = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(1)
    z_eval = torch.randn(96, G.z_dim, generator=g)

    def measure() -> tuple[float, float]:
        with torch.no_grad():
            G.eval()
            x = G(z_eval) * 2 - 1
            G.train()
        return float(energy_loss(x, real)), float(torch.pdist(coarse(x, 16)).mean())
    ed0, _ = measure()
    for _ in range(60):
        idx = torch.randint(0, len(real), (32,), generator=g)
        loss = energy_loss(G(torch.randn(32, G.z_dim, generator=g)) * 2 - 1, real[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    ed1, spread = measure()
    real_spread = float(torch.pdist(coarse(real, 16)).mean())
    assert ed1 < 0.3 * ed0, (ed0, ed1)
    assert 0.5 * real_spread < spread < 1.5 * real_spread, (spread, real_spread)


def test_ed_weight_in_a_run(cells, tmp_path):
    """Two tiny basophil runs from one seed, with and without the term (12 steps): the weight is in
    config.json, the term's run logs its energy distance (EMA cells vs the run's training cells) at each
    evaluation and the plain run none, and the term changes what G learns."""
    from wbcgen.gan.sample import load_generator

    cfg = load_config("tiny").replace(train_size=64, g_widths=[32, 16, 8, 8], eval_every=6, sample_every=6,
                                      ckpt_every=6)
    runs = {w: train_gan(cells, "basophil", config=cfg.replace(ed_weight=w), out_root=tmp_path / str(w),
                         steps=12, seed=3, progress=False) for w in (0.0, 1.0)}
    evals = [json.loads(line)["eval"] for line in (runs[1.0] / "log.jsonl").read_text().splitlines()
             if '"eval"' in line]
    assert len(evals) == 2 and all(e["ed"] > 0 for e in evals), evals
    assert not any('"ed"' in line for line in (runs[0.0] / "log.jsonl").read_text().splitlines())
    assert json.loads((runs[1.0] / "config.json").read_text())["gan"]["ed_weight"] == 1.0
    g0, g1 = (load_generator(r) for r in (runs[0.0], runs[1.0]))
    z = torch.randn(4, g0.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (g0(z) - g1(z)).abs().max() > 1e-3


def test_ed_weight_run_resumes_bit_identically(cells, tmp_path, monkeypatch):
    """The term draws no randomness: a run killed during step 7 and resumed ends with the same G and
    EMA weights as the run that was never stopped."""
    from evalkit import resume_matches_uninterrupted

    cfg = load_config("tiny").replace(train_size=64, g_widths=[32, 16, 8, 8], ed_weight=1.0, ckpt_every=4)
    resume_matches_uninterrupted(monkeypatch, cells, "basophil", cfg, tmp_path, ("G", "ema"))
