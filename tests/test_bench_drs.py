"""bench/diag_drs.py (issue 12, session 38): each member's own discriminator scores its own pool, the members keep
their share of the row's cells, ``top`` keeps the highest logits, ``sir`` is seeded, and a pool of 1 is the row's
own cells. Real pbc-dev basophils, a tiny two-member ensemble trained for a few steps."""
from __future__ import annotations

import pytest
import torch

from classifiers.runtime import load_checkpoint
from wbcgen.gan import load_config, load_generator, train_gan
from wbcgen.gan.models import member_index
from wbcgen.gan.sample import class_seed, generate, latents

from evalkit import bench_module

dd = bench_module("diag_drs")
TWO = load_config("tiny").replace(members=2, name="tinyens")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def run(cells, tmp_path_factory):
    return train_gan(cells, "basophil", config=TWO, out_root=tmp_path_factory.mktemp("drs"), steps=6, seed=5,
                     progress=False)


def test_each_member_is_judged_by_its_own_discriminator(run):
    ds = dd.member_discriminators(run)
    assert len(ds) == 2 and not any(p.requires_grad for d in ds for p in d.parameters())
    for j, d in enumerate(ds):
        state = load_checkpoint(run / "members" / "gan" / "basophil" / f"m{j}" / "checkpoints" / "best.safetensors")
        assert all(torch.equal(v, state["D"][k]) for k, v in d.state_dict().items())
    x = generate(load_generator(run), 16, seed=1)
    a, b = dd.logits(ds[0], x), dd.logits(ds[1], x)
    assert a.shape == (16,) and torch.isfinite(a).all() and not torch.allclose(a, b)  # two different Ds
    assert torch.equal(a, dd.logits(ds[0], x, batch=8))  # minibatch-std groups of 4 do not straddle the batches


def test_selection_keeps_member_shares_and_orders_by_logit(run):
    n, pool = 40, 3
    top, st_top = dd.select_class(run, "basophil", n, pool, "top", 1.0, 0)
    sir, st_sir = dd.select_class(run, "basophil", n, pool, "sir", 1.0, 0)
    z = latents(n, load_generator(run).z_dim, class_seed(0, "basophil"))
    share = [int((member_index(z, 2) == j).sum()) for j in range(2)]
    for st in (st_top, st_sir):
        assert [m["kept"] for m in st] == share and sum(m["pool"] for m in st) == n * pool
    assert top.shape == sir.shape == (n, 3, 128, 128) and top.dtype == torch.uint8
    for t, s in zip(st_top, st_sir):  # the highest logits: no other choice of k has a higher mean
        assert t["logit_kept"] >= s["logit_kept"] - 1e-6 and t["logit_kept"] >= t["logit_pool"] - 1e-6
    again, _ = dd.select_class(run, "basophil", n, pool, "sir", 1.0, 0)
    assert torch.equal(again, sir)  # seeded
    own, st = dd.select_class(run, "basophil", n, 1, "top", 1.0, 0)  # a pool of 1: the row's own cells
    assert torch.equal(own, generate(load_generator(run), n, seed=class_seed(0, "basophil")))
    assert [m["kept_from_row"] for m in st] == share


def test_choose_is_topk_or_a_seeded_weighted_draw():
    s = torch.tensor([0.0, 5.0, 1.0, 4.0, 2.0])
    assert dd.choose(s, 2, "top", 1.0, 0).tolist() == [1, 3]
    picks = torch.stack([torch.bincount(dd.choose(s, 1, "sir", 1.0, k), minlength=5) for k in range(400)]).sum(0)
    assert picks[1] > picks[3] > picks[0]  # weights exp(score): 5 > 4 > 0
    cool = torch.stack([torch.bincount(dd.choose(s, 1, "sir", 100.0, k), minlength=5) for k in range(400)]).sum(0)
    assert cool.min() > 40  # a high temperature: close to uniform


def test_a_row_without_generators_is_one_sentence(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(dd.__file__), "no-such-row", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "no-such-row" in r.stderr and "run the row first" in r.stderr
    assert "Traceback" not in r.stderr
