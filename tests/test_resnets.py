"""resnet18s (classifiers/resnets.py, issue 14): the architecture, a real training run on pbc-dev images that
round-trips through its run folder, and a fine-tune on zheng2018 that starts from it."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import classifiers
from classifiers import recipes, train
from classifiers.base import count_parameters
from classifiers.runtime import UserError
from classifiers.transfer import for_transfer, load_init

pytestmark = pytest.mark.usefixtures("one_thread")
LABELS = {"1": "neutrophil", "2": "lymphocyte", "3": "monocyte", "4": "eosinophil", "5": "basophil"}


def test_architecture_counts_shapes_and_identity_blocks():
    torch.manual_seed(0)
    m = classifiers.create_model("resnet18s").eval()
    assert count_parameters(m) == 2_797_413
    assert count_parameters(classifiers.create_model("resnet18s", num_classes=4)) == 2_797_413 - 257
    assert m.input_size == (128, 128) and m.feature_dim == 256 and len(m.adapt_layers()) == 5
    x = torch.rand(3, 3, 128, 128)
    h = m.stem(m.normalize(x))
    sizes = [tuple(h.shape[-2:])]
    for stage in m.stages:
        # the second block of every stage starts as the identity on its (non-negative) input
        assert torch.equal(stage[1](stage[0](h)), stage[0](h))
        h = stage(h)
        sizes.append(tuple(h.shape[-2:]))
    assert sizes == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
    assert torch.allclose(m.features(x), h.mean((-2, -1)), atol=1e-6)
    with pytest.raises(UserError, match="bad arguments for model 'resnet18s'"):
        classifiers.create_model("resnet18s", depth=3)
    assert recipes.load_recipe("resnet18s-robust")["model"] == "resnet18s"
    assert recipes.default_recipe_for("resnet18s") == "resnet18s-cpu"


def test_trains_on_pbc_round_trips_and_fine_tunes_on_zheng(tmp_path, cells, zheng_dir):
    from wbcgen.data import load_cells

    rec = recipes.apply_overrides(recipes.load_recipe("resnet18s-robust"), epochs=2, batch_size=16)
    res = train.holdout("resnet18s", cells.images, cells.labels, classes=cells.classes, recipe=rec,
                        out_dir=tmp_path / "src", seed=0, progress=False)
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    assert cfg["model"] == "resnet18s" and cfg["model_args"]["dropout"] == 0.2 and res["test"]["n"] == 10
    pred = classifiers.load_run(tmp_path / "src", tta=False)
    assert type(pred.model).__name__ == "ResNetS" and not pred.model.training
    saved = load_file(str(tmp_path / "src" / "model.safetensors"))
    assert any(k.endswith("running_var") for k in saved)             # BatchNorm statistics travel with the weights
    assert all(torch.equal(saved[k], v) for k, v in pred.model.state_dict().items())
    proba = pred.predict_proba(cells.images[:9])
    assert torch.allclose(proba.sum(1), torch.ones(9), atol=1e-5)
    again = classifiers.load_run(tmp_path / "src", tta=False).predict_proba(cells.images[:9])
    assert torch.equal(proba, again)                                  # eval mode: deterministic, stats frozen

    zheng = load_cells(zheng_dir, label_map=LABELS, progress=False)
    small = zheng.subset(torch.arange(0, len(zheng), 8))
    fs = for_transfer(recipes.load_recipe("wnet-fewshot"), init_from=tmp_path / "src")
    fs["train"].update(epochs=1, min_steps=2)
    fs["model_args"] = {"dropout": 0.2}
    start = classifiers.create_model("resnet18s", len(small.classes), dropout=0.2)
    info = load_init(start, tmp_path / "src", small.classes)
    assert all(k in info["loaded"] for k in saved if not k.startswith("head."))
    ft = train.holdout("resnet18s", small.images, small.labels, classes=small.classes, recipe=fs | {"protocol": {
        "kind": "holdout", "test_fraction": 0.3}}, out_dir=tmp_path / "ft", init_from=tmp_path / "src", progress=False)
    assert 0 <= ft["test"]["accuracy"] <= 1
    tuned = load_file(str(tmp_path / "ft" / "model.safetensors"))
    assert not torch.equal(tuned["stem.0.weight"], saved["stem.0.weight"])   # the whole network trained
    with pytest.raises(UserError, match="no matching layers"):                # a W-Net is not a resnet18s start
        wnet = classifiers.create_model("wnet")
        from safetensors.torch import save_file
        save_file(wnet.state_dict(), str(tmp_path / "wnet.safetensors"))
        load_init(classifiers.create_model("resnet18s"), tmp_path / "wnet.safetensors", cells.classes)


def test_freeze_bn_keeps_the_source_statistics_while_the_network_trains(tmp_path, cells):
    rec = recipes.apply_overrides(recipes.load_recipe("resnet18s-cpu"), epochs=1, batch_size=16)
    train.holdout("resnet18s", cells.images, cells.labels, classes=cells.classes, recipe=rec, out_dir=tmp_path / "src",
                  seed=0, progress=False)
    src = load_file(str(tmp_path / "src" / "model.safetensors"))
    stats = [k for k in src if k.endswith(("running_mean", "running_var"))]
    for frozen in (True, False):
        fs = for_transfer(recipes.load_recipe("wnet-fewshot"), init_from=tmp_path / "src")
        fs["model_args"] = {"dropout": 0.2}
        fs["train"].update(epochs=1, min_steps=3, freeze_bn=frozen)
        out = tmp_path / f"ft-{frozen}"
        train.holdout("resnet18s", cells.images, cells.labels, classes=cells.classes, recipe=fs | {"protocol": {
            "kind": "holdout", "test_fraction": 0.3}}, out_dir=out, init_from=tmp_path / "src", progress=False)
        ft = load_file(str(out / "model.safetensors"))
        assert all(torch.equal(ft[k], src[k]) for k in stats) == frozen       # statistics kept only when frozen
        assert not torch.equal(ft["stages.0.0.conv1.weight"], src["stages.0.0.conv1.weight"])   # weights train
