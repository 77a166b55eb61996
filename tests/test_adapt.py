"""Test-time adaptation (classifiers/adapt.py): activation statistics recorded by training, fitted per
lab at prediction, on real pbc-dev and zheng2018 images."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from classifiers import adapt
from classifiers.registry import create_model, list_models
from classifiers.runtime import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wnet_run(tmp_path_factory, pbc_small):
    """A W-Net trained 1 epoch on pbc_small with `wbcgen train-classifier` (no stain normaliser)."""
    from wbcgen.cli import main

    out = tmp_path_factory.mktemp("adapt") / "run"
    r = CliRunner().invoke(main, ["train-classifier", "--model", "wnet", "--data", str(pbc_small), "--protocol",
                                  "train", "--epochs", "1", "--batch-size", "16", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def zheng_lab(zheng_dir):
    from wbcgen.data.load import load_reference

    return load_reference(zheng_dir / "Dataset 1", size=128, max_images=24)


def test_training_records_the_models_activation_statistics(wnet_run, cells):
    stats = json.loads((wnet_run / "config.json").read_text())["activation_stats"]
    assert stats["method"] == "channel-stats" and stats["views"] == 8
    assert stats["layers"] == ["conv.2", "conv.6", "conv.10"]   # W-Net's three conv blocks (max-pool outputs)
    assert [len(m) for m in stats["mean"]] == [16, 32, 64] == [len(s) for s in stats["std"]]
    assert 0 < stats["n_images"] <= len(cells)
    assert all(v >= 0 for m in stats["mean"] for v in m)      # post-ReLU max-pool outputs
    assert sum(v > 0 for s in stats["std"] for v in s) > 0.5 * (16 + 32 + 64)


def test_adapting_to_the_training_images_changes_nothing(wnet_run, cells):
    """record_run measures the statistics on these images; fitted on the same images the correction is
    the identity, so adapted predictions equal plain ones."""
    import classifiers

    stats = adapt.record_run(wnet_run, cells.images)
    assert stats["n_images"] == len(cells)
    plain = classifiers.load_run(wnet_run, device="cpu", tta=False)
    pred = classifiers.load_run(wnet_run, device="cpu", tta=False, adapt_stats=True).adapt(cells.images)
    for a, b in pred._fixes:
        assert torch.allclose(a, torch.ones_like(a), atol=1e-3) and b.abs().max() < 1e-3
    assert torch.allclose(pred.logits(cells.images), plain.logits(cells.images), atol=1e-3)


def test_another_lab_is_mapped_onto_the_training_statistics(wnet_run, zheng_lab):
    """After the fit, every adapted layer's per-channel mean and std on the zheng2018 lab equal the
    training lab's (they did not before); the lab's images predicted one at a time after ``adapt`` give
    the same outputs as the whole lab in one call."""
    import classifiers

    pred = classifiers.load_run(wnet_run, device="cpu", tta=False, adapt_stats=True)
    stats, model = pred.config["activation_stats"], pred.model
    layers = adapt.stat_layers(model)
    batches = pred._batches(zheng_lab, None)
    before = adapt._moments(model, layers, batches, [0, 1, 2])
    fixes = adapt.fit(model, stats, batches, len(zheng_lab))
    after = adapt._moments(model, layers, batches, [0, 1, 2], fixes)
    for i in range(3):
        mu_s, sd_s = torch.tensor(stats["mean"][i]), torch.tensor(stats["std"][i])
        live = before[i][1] > 1e-4
        scale = float(mu_s.abs().max())
        assert (after[i][0] - mu_s)[live].abs().max() < 1e-3 * scale
        assert (after[i][1] - sd_s)[live].abs().max() < 1e-3 * scale
        assert (before[i][0] - mu_s)[live].abs().max() > 0.02 * scale   # another lab: the statistics differ
    whole = pred.logits(zheng_lab)
    pred.adapt(zheng_lab)
    alone = torch.cat([pred.logits(zheng_lab[i:i + 1]) for i in range(len(zheng_lab))])
    assert torch.allclose(alone, whole, atol=1e-3)
    assert not torch.allclose(classifiers.load_run(wnet_run, device="cpu", tta=False).logits(zheng_lab), whole,
                              atol=1e-2)


def test_adaptation_refuses_what_it_cannot_do(wnet_run, zheng_lab, tmp_path, pbc_small):
    import shutil

    import classifiers
    from wbcgen.cli import main

    pred = classifiers.load_run(wnet_run, device="cpu", adapt_stats=True)
    with pytest.raises(UserError, match="at least 8 images"):
        pred.predict(zheng_lab[:3])
    old = tmp_path / "old"
    shutil.copytree(wnet_run, old)
    cfg = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "activation_stats"}))
    with pytest.raises(UserError, match="no activation statistics"):
        classifiers.load_run(old, adapt_stats=True)
    r = CliRunner().invoke(main, ["classify", "--weights", str(old), "--data", str(pbc_small), "--adapt",
                                  "--out", str(tmp_path / "p.csv")])
    assert r.exit_code != 0 and "no activation statistics" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "p.csv").exists()
    cfg["activation_stats"]["layers"] = ["conv.2", "conv.6"]
    (old / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="do not match"):
        classifiers.load_run(old, adapt_stats=True)


def test_classify_adapt_records_the_lab(wnet_run, pbc_small, tmp_path):
    from wbcgen.cli import main

    r = CliRunner().invoke(main, ["classify", "--weights", str(wnet_run), "--data", str(pbc_small), "--adapt",
                                  "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    protocol = json.loads((tmp_path / "results.json").read_text())["protocol"]
    assert protocol["adapt"] == "channel-stats, fitted on these 60 images as one lab"
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 61


def test_classify_adapts_each_source_of_a_multi_lab_folder(wnet_run, zheng_small, tmp_path):
    """zheng2018's two sources are two labs (a real subset of each, its own layout): classify fits one
    correction per source, and its predictions equal one adapted predict call per source from Python."""
    import csv

    import classifiers
    from wbcgen.cli import main
    from wbcgen.data import load_cells

    lm = "1=neutrophil,2=lymphocyte,3=monocyte,4=eosinophil,5=basophil"
    r = CliRunner().invoke(main, ["classify", "--weights", str(wnet_run), "--data", str(zheng_small), "--label-map", lm,
                                  "--adapt", "--no-tta", "--out", str(tmp_path / "z.csv")])
    assert r.exit_code == 0, r.output
    protocol = json.loads((tmp_path / "results.json").read_text())["protocol"]
    assert protocol["adapt"] == "channel-stats, fitted per lab: Dataset 1 (30 images), Dataset 2 (12 images)"
    rows = list(csv.DictReader((tmp_path / "z.csv").open()))
    z = load_cells(zheng_small, label_map=dict(kv.split("=") for kv in lm.split(",")), progress=False)
    assert len(z) == len(rows) == 42
    pred = classifiers.load_run(wnet_run, device="cpu", tta=False, adapt_stats=True)
    expected = [None] * len(z)
    for source in ("Dataset 1", "Dataset 2"):
        idx = [i for i, m in enumerate(z.manifest) if m["path"].startswith(source)]
        for i, y in zip(idx, pred.predict(z.images[idx]).tolist()):
            expected[i] = pred.classes[y]
    by_path = {m["path"]: e for m, e in zip(z.manifest, expected)}
    assert [row["predicted"] for row in rows] == [by_path[row["path"]] for row in rows]


@pytest.mark.parametrize("name", list_models())
def test_every_model_has_layers_to_adapt_or_says_why(name, cells):
    """timm-style: every registered model either adapts (statistics on real images, a fit that reaches
    them) or refuses in one sentence (the row LSTM has no convolutional stage)."""
    from classifiers.data import resize_u8

    torch.manual_seed(0)
    model = create_model(name, 5).eval()
    try:
        layers = adapt.stat_layers(model)
    except UserError as e:
        assert name == "lstm" and "no BatchNorm or pooling layer" in str(e)
        return
    assert 1 <= len(layers) <= 6
    if model.input_size[0] > 128:
        return   # 224-px ImageNet baselines: the layer choice is checked, the maths above
    imgs = resize_u8(cells.images[:16], model.input_size)
    batches = adapt.u8_batches(imgs, "cpu", tuple(model.input_size))
    stats = adapt.source_stats(model, batches, len(imgs))
    fixes = adapt.fit(model, stats, adapt.u8_batches(imgs.flip(1), "cpu", tuple(model.input_size)), len(imgs))
    assert len(fixes) == len(layers) and all(torch.isfinite(a).all() and torch.isfinite(b).all() for a, b in fixes)


def test_a_pushed_run_adapts_like_the_original(wnet_run, zheng_lab, tmp_path):
    """push --dry-run → download: the statistics travel in config.json, the card offers --adapt, and the
    downloaded run adapts to a lab exactly as the original does."""
    import classifiers
    from wbcgen.hub import download
    from wbcgen.hub.publish import push

    push(wnet_run, "me/wnet-pbc", dry_run=True, to=tmp_path / "repo", progress=False)
    assert "wbcgen classify --weights classifier/ --data my-lab/ --adapt" in (tmp_path / "repo" / "README.md").read_text()
    download(tmp_path / "repo", tmp_path / "dl", repo_type="model", progress=False)
    got = classifiers.load_run(tmp_path / "dl", device="cpu", tta=False, adapt_stats=True).logits(zheng_lab)
    want = classifiers.load_run(wnet_run, device="cpu", tta=False, adapt_stats=True).logits(zheng_lab)
    assert torch.equal(got, want)
