"""wbcgen.metrics: Fréchet distance against closed forms, parity with torchmetrics and
torch-fidelity, KID, cosine similarity, and safe Inception loading."""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

from wbcgen import metrics
from wbcgen.metrics import inception


def _rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------ Fréchet distance
def test_frechet_matches_closed_form_for_diagonal_gaussians():
    r = _rng(1)
    for dim in (1, 7, 256):
        mu1, mu2 = r.normal(size=dim), r.normal(size=dim) * 3
        v1, v2 = r.uniform(0.01, 5, dim), r.uniform(0.01, 5, dim)
        closed = float(((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum())
        got = metrics.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
        assert got == pytest.approx(closed, rel=1e-10, abs=1e-10)
    # identical Gaussians: exactly zero, never negative
    s = np.diag(r.uniform(0.1, 2, 50))
    assert metrics.frechet_distance(np.ones(50), s, np.ones(50), s) == pytest.approx(0.0, abs=1e-9)


def test_frechet_matches_closed_form_for_rotated_commuting_covariances():
    r = _rng(2)
    dim = 64
    q, _ = np.linalg.qr(r.normal(size=(dim, dim)))
    a, b = r.uniform(0.0, 3, dim), r.uniform(0.0, 3, dim)   # includes near-singular directions
    a[:5] = 0.0                                            # and exactly singular ones
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = r.normal(size=dim), r.normal(size=dim)
    closed = float(((mu1 - mu2) ** 2).sum() + (a + b - 2 * np.sqrt(a * b)).sum())
    got = metrics.frechet_distance(mu1, s1, mu2, s2)
    assert math.isfinite(got) and got == pytest.approx(closed, rel=1e-8)


def test_frechet_from_features_agrees_across_routes_and_converges():
    r = _rng(3)
    # n < D: sample-space (nuclear norm) route vs the D×D statistics route
    f1, f2 = r.normal(size=(40, 300)), r.normal(size=(55, 300)) * 1.5 + 0.3
    via_stats = metrics.frechet_distance(*metrics.gaussian_stats(f1), *metrics.gaussian_stats(f2))
    assert metrics.frechet_distance_features(f1, f2) == pytest.approx(via_stats, rel=1e-9)
    # n >> D: converges to the population closed form
    mu, v = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 4.0, 0.25, 2.0])
    g1 = r.normal(size=(200_000, 4))
    g2 = mu + r.normal(size=(200_000, 4)) * np.sqrt(v)
    closed = float((mu ** 2).sum() + (1 + v - 2 * np.sqrt(v)).sum())
    assert metrics.frechet_distance_features(g1, g2) == pytest.approx(closed, rel=0.02)


@pytest.mark.parametrize("n1,n2", [(2, 2), (2, 3), (3, 500), (7, 7)])
def test_small_classes_never_give_nan_or_complex(n1, n2):
    r = _rng(4)
    f1 = np.abs(r.normal(size=(n1, 1024))).astype(np.float32)   # ReLU-like, rank-deficient covariances
    f2 = np.abs(r.normal(size=(n2, 1024))).astype(np.float32)
    d = metrics.frechet_distance_features(f1, f2)
    assert isinstance(d, float) and math.isfinite(d) and d >= 0
    rep = metrics.distance_report(f1, f2, splits=3, kid_subsets=5)
    for v in (rep["fd"], rep["kid"]["mean"]):
        assert isinstance(v, float) and math.isfinite(v)
    if n1 >= 4:
        assert math.isfinite(rep["floor"]["fd"]["mean"]) and rep["floor"]["n"] == [n1 // 2, n1 - n1 // 2]
    else:
        assert rep["floor"] is None and "floor" in rep["notes"][0]
    # the same set against itself: FD 0 (up to round-off), never negative
    assert 0 <= metrics.frechet_distance_features(f1, f1) < 1e-6 * max(1.0, float((f1 ** 2).sum()))


def test_distance_report_handles_missing_class_and_orders_floor_below_shifted():
    r = _rng(5)
    rep = metrics.distance_report(r.normal(size=(1, 16)), r.normal(size=(30, 16)))
    assert rep["fd"] is None and rep["kid"] is None and "needs ≥ 2" in rep["notes"][0]
    real = r.normal(size=(120, 16))
    rep_same = metrics.distance_report(real, r.normal(size=(120, 16)), splits=8, kid_subsets=20)
    rep_shift = metrics.distance_report(real, r.normal(size=(120, 16)) + 1.0, splits=8, kid_subsets=20)
    assert rep_shift["fd"] > 10 * rep_same["fd"]
    assert rep_shift["matched"]["fd"]["mean"] > rep_shift["floor"]["fd"]["mean"] + 10
    lo, hi = rep_shift["matched"]["fd"]["ci95"]
    assert lo <= rep_shift["matched"]["fd"]["mean"] <= hi
    assert rep_shift["kid"]["mean"] > rep_same["kid"]["mean"]
    assert rep_same["preferred"] == "kid"


def test_frechet_parity_with_torchmetrics_and_torch_fidelity():
    from torch_fidelity.metric_fid import fid_statistics_to_metric
    from torchmetrics.image.fid import _compute_fid

    r = _rng(6)
    f1, f2 = r.normal(size=(300, 64)), r.normal(size=(250, 64)) * 1.2 + 0.1
    (m1, s1), (m2, s2) = metrics.gaussian_stats(f1), metrics.gaussian_stats(f2)
    ours = metrics.frechet_distance(m1, s1, m2, s2)
    tm = float(_compute_fid(torch.tensor(m1), torch.tensor(s1), torch.tensor(m2), torch.tensor(s2)))
    tf = fid_statistics_to_metric({"mu": m1, "sigma": s1}, {"mu": m2, "sigma": s2}, False)
    assert ours == pytest.approx(tm, rel=1e-8)
    assert ours == pytest.approx(tf["frechet_inception_distance"], rel=1e-8)
    assert ours == pytest.approx(metrics.torchmetrics_fid(torch.tensor(f1), torch.tensor(f2)), rel=1e-8)


def test_kid_parity_with_torch_fidelity_and_torchmetrics():
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torchmetrics.image.kid import poly_mmd

    r = _rng(7)
    f1, f2 = r.normal(size=(80, 32)), r.normal(size=(90, 32)) + 0.2
    ours = metrics.kid(f1, f2, subsets=17, subset_size=50, seed=11)
    tf = kid_features_to_metric(torch.tensor(f1), torch.tensor(f2), kid_subsets=17, kid_subset_size=50, rng_seed=11,
                                verbose=False, kid_kernel="poly", kid_kernel_poly_degree=3,
                                kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
    assert ours["mean"] == pytest.approx(tf["kernel_inception_distance_mean"], rel=1e-10)
    assert ours["std"] == pytest.approx(tf["kernel_inception_distance_std"], rel=1e-8)
    one = metrics.kid(f1[:40], f2[:40], subsets=1, subset_size=40)
    assert one["mean"] == pytest.approx(float(poly_mmd(torch.tensor(f1[:40]), torch.tensor(f2[:40]))), rel=1e-10)


# ------------------------------------------------------------------ cosine similarity
def test_mean_pairwise_cosine_equals_brute_force_on_real_images(pbc_small):
    from wbcgen.data import load_cells

    cells = load_cells(pbc_small, progress=False, size=32)
    x = cells.images[:20]
    y = cells.images[20:35]
    xn = x.reshape(20, -1).double()
    xn = xn / xn.norm(dim=1, keepdim=True)
    yn = y.reshape(15, -1).double()
    yn = yn / yn.norm(dim=1, keepdim=True)
    gram = xn @ xn.T
    assert metrics.mean_pairwise_cosine(x) == pytest.approx(float((gram.sum() - gram.trace()) / (20 * 19)), rel=1e-12)
    assert metrics.mean_pairwise_cosine(x, y) == pytest.approx(float((xn @ yn.T).mean()), rel=1e-12)
    tab = metrics.cosine_table(cells.images, cells.labels, cells.images.flip(-1), cells.labels, cells.classes)
    for c, row in tab["per_class"].items():
        assert row["n_real"] == 12 and 0.5 < row["real_real"] <= 1
        assert row["difference_pct"] == pytest.approx(100 * (row["real_real"] - row["real_synthetic"]) / row["real_real"])
    assert tab["mean_difference_pct"] == pytest.approx(np.mean([r["difference_pct"] for r in tab["per_class"].values()]))


# ------------------------------------------------------------------ Inception loading
@contextlib.contextmanager
def _no_weights_load():
    """Build torch-fidelity's Inception with random weights (its loader neither downloads nor unpickles)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    old_url, old_load = tfi.load_state_dict_from_url, tfi.FeatureExtractorInceptionV3.load_state_dict
    tfi.load_state_dict_from_url = lambda *a, **k: None
    tfi.FeatureExtractorInceptionV3.load_state_dict = lambda self, sd, *a, **k: None
    try:
        yield tfi
    finally:
        tfi.load_state_dict_from_url, tfi.FeatureExtractorInceptionV3.load_state_dict = old_url, old_load


def test_missing_inception_weights_say_so_in_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("WBCGEN_INCEPTION_WEIGHTS", raising=False)
    net, info = metrics.load_inception()
    assert net is None and info["available"] is False
    assert info["note"].count(". ") == 0 and info["note"].endswith(".") and "not available" in info["note"]
    with pytest.raises(Exception, match="does not exist"):
        metrics.load_inception(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="cannot read Inception weights"):
        metrics.load_inception(bad)


def test_inception_features_match_torch_fidelity_extractor(tmp_path, pbc_small):
    """Pipeline parity without the real weights: the same (random) state dict, loaded safely
    by wbcgen from safetensors, gives torch-fidelity's own features (uint8 input, TF1 resize)."""
    from safetensors.torch import save_file

    from wbcgen.data import load_cells

    torch.manual_seed(0)
    with _no_weights_load() as tfi:
        ref = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    for k, v in sd.items():   # sane BN statistics so activations are non-trivial
        if k.endswith("running_var"):
            v.fill_(1.0)
    ref.load_state_dict = tfi.torch.nn.Module.load_state_dict.__get__(ref)
    ref.load_state_dict(sd)
    ref.eval()
    path = tmp_path / "inception.safetensors"
    save_file(sd, str(path))
    net, info = metrics.load_inception(path)
    assert info["available"] and len(info["weights_sha256"]) == 64
    imgs = load_cells(pbc_small, progress=False).images[:4]
    ours = metrics.inception_features(net, imgs, batch_size=2)
    with torch.inference_mode():
        theirs = ref(imgs)[0].double()
    assert ours.shape == (4, inception.FEATURE_DIM)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_fid_parity_with_torch_fidelity_real_weights(pbc_small):
    path = metrics.find_inception_weights()
    if path is None:
        pytest.skip("the FID Inception-v3 weights are not on this machine (no network to fetch them; put "
                    "weights-inception-2015-12-05-6726825d.pth in $TORCH_HOME/hub/checkpoints or set "
                    "WBCGEN_INCEPTION_WEIGHTS)")
    import torch_fidelity.feature_extractor_inceptionv3 as tfi
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    from wbcgen.data import load_cells

    cells = load_cells(pbc_small, progress=False)
    a, b = cells.images[:30], cells.images[30:60]
    net, _ = metrics.load_inception(path)
    fa, fb = metrics.inception_features(net, a), metrics.inception_features(net, b)
    sd = inception._read_state_dict(path)
    with inception._patched(tfi, "load_state_dict_from_url", lambda *x, **k: sd):
        ref = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    with torch.inference_mode():
        ta, tb = ref(a)[0], ref(b)[0]
    tf = fid_statistics_to_metric(fid_features_to_statistics(ta), fid_features_to_statistics(tb), False)
    ours = metrics.frechet_distance_features(fa, fb)
    assert ours == pytest.approx(tf["frechet_inception_distance"], rel=1e-3)
