"""Precision / recall / density / coverage (wbcgen.metrics.prdc) on real pbc-dev cells: the
definitions against a plain loop, and what each metric says about a same-class set, another class,
and a prototype generator (one cell drawn again and again)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from wbcgen.gan import quality
from wbcgen.metrics import prdc, prdc_means, prdc_report


def _features(folder, n: int) -> torch.Tensor:
    """n real cells of one class in the fixed random-conv features of the GAN's selection proxy."""
    files = sorted(folder.iterdir())[:n]
    x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((128, 128)))) for f in files])
    return quality.features(x.permute(0, 3, 1, 2).contiguous()).double()


@pytest.fixture(scope="module")
def feats(pbc_dir):
    return {c: _features(pbc_dir / c, 120) for c in ("basophil", "eosinophil")}


def _reference(real: np.ndarray, fake: np.ndarray, k: int) -> dict:
    """The definitions of Naeem et al. (2020) written out point by point."""
    def radius(x, i):
        d = sorted(np.linalg.norm(x - x[i], axis=1))
        return d[k]  # d[0] is the point itself
    rr = [radius(real, i) for i in range(len(real))]
    fr = [radius(fake, j) for j in range(len(fake))]
    dist = np.array([[np.linalg.norm(r - f) for f in fake] for r in real])
    return {"precision": np.mean([any(dist[i, j] < rr[i] for i in range(len(real))) for j in range(len(fake))]),
            "recall": np.mean([any(dist[i, j] < fr[j] for j in range(len(fake))) for i in range(len(real))]),
            "density": np.mean([sum(dist[i, j] < rr[i] for i in range(len(real))) for j in range(len(fake))]) / k,
            "coverage": np.mean([dist[i].min() < rr[i] for i in range(len(real))])}


def test_prdc_equals_the_definitions(feats):
    real, fake = feats["basophil"][:50], feats["eosinophil"][:40]
    for k in (3, 5):
        got, want = prdc(real, fake, k), _reference(real.numpy(), fake.numpy(), k)
        assert got == pytest.approx(want, abs=1e-12), k


def test_prdc_tells_fidelity_from_diversity(feats):
    bas, eos = feats["basophil"], feats["eosinophil"]
    same = prdc(bas[:60], bas[60:])  # two halves of one class: what a perfect generator scores
    assert all(same[m] >= 0.7 for m in ("precision", "recall", "coverage")), same
    assert 0.6 <= same["density"] <= 1.5, same
    other = prdc(bas[:60], eos[:60])  # another class: the cells are unlike the real ones
    assert other["precision"] < same["precision"] - 0.15 and other["density"] < same["density"] - 0.5, other
    assert other["coverage"] < same["coverage"] - 0.4, other
    # a prototype generator: one real basophil drawn 60 times with a little noise. Every cell is
    # real-looking (precision 1) but the set covers almost none of the real cells
    g = torch.Generator().manual_seed(0)
    proto = bas[60] + 1e-3 * torch.randn(60, bas.shape[1], generator=g, dtype=torch.float64)
    p = prdc(bas[:60].clone().index_copy_(0, torch.tensor([0]), bas[60:61]), proto)
    assert p["precision"] == 1.0 and p["recall"] <= 0.1 and p["coverage"] < same["coverage"] - 0.5, p
    assert p["density"] > 1.0  # the prototype sits in several real balls at once


def test_prdc_report_floor_and_matched(feats):
    bas, eos = feats["basophil"], feats["eosinophil"]
    r = prdc_report(bas[:80], bas[80:], seed=1, splits=4)
    assert r["k"] == 5 and r["n_real"] == 80 and r["n_synthetic"] == 40 and r["n_matched"] == [40, 40]
    for part in ("floor", "matched"):
        for m in ("precision", "recall", "density", "coverage"):
            v = r[part][m]
            assert v["ci95"][0] <= v["mean"] <= v["ci95"][1], (part, m, v)
    assert r["matched"]["coverage"]["mean"] >= r["floor"]["coverage"]["mean"] - 0.25  # real cells at the floor
    worse = prdc_report(bas[:80], eos[:80], seed=1, splits=4)
    assert worse["matched"]["coverage"]["mean"] < r["floor"]["coverage"]["mean"] - 0.3
    assert prdc_report(bas[:80], eos[:80], seed=1, splits=4) == worse  # seeded
    assert prdc_report(bas[:10], eos[:10])["floor"] is None  # half of 10 is not more than k = 5
    tiny = prdc_report(bas[:4], eos[:40])  # too few for any ball: a note, never an exception
    assert tiny["all"] is None and tiny["floor"] is None and "more than k=5" in tiny["note"]
    assert prdc_means(r["floor"]) == {m: r["floor"][m]["mean"] for m in ("precision", "recall", "density", "coverage")}
    assert prdc_means(tiny["floor"]) is None


def test_prdc_refuses_bad_inputs(feats):
    bas = feats["basophil"]
    with pytest.raises(ValueError, match="more than k=5"):
        prdc(bas[:5], bas[5:20])
    with pytest.raises(ValueError, match="one width"):
        prdc(bas[:20], bas[:20, :10])


def test_evaluate_distances_and_report_carry_prdc(feats):
    from wbcgen.evaluate.checks import _per_class_distances
    from wbcgen.report.evaluation import _prdc

    bas, eos = feats["basophil"], feats["eosinophil"]
    f_real, y_real = torch.cat([bas[:60], eos[:8]]), torch.tensor([0] * 60 + [1] * 8)
    f_syn, y_syn = torch.cat([bas[60:], eos[60:]]), torch.tensor([0] * 60 + [1] * 60)
    d = _per_class_distances(f_real, y_real, f_syn, y_syn, ["basophil", "eosinophil"], seed=0, splits=3)
    assert d["basophil"]["prdc"] == prdc_report(bas[:60], bas[60:], seed=0, splits=3)
    assert "prdc" not in d["eosinophil"]  # 8 real cells: half is not more than k = 5
    html = _prdc(d)
    assert html.count("<tr>") == 2 and "basophil" in html and "eosinophil" not in html  # header + one class
    m = d["basophil"]["prdc"]
    assert f"{m['matched']['coverage']['mean']:.2f} / {m['floor']['coverage']['mean']:.2f}" in html
