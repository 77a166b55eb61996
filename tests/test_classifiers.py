"""The classifier suite (issue #3) on real pbc-dev / zheng2018 images: models, metrics,
splits, augmentation, recipes, the trainer (CV, resume, transfer), load_run and the CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

import classifiers
from classifiers import metrics, recipes, train
from classifiers.base import count_parameters
from classifiers.data import BatchAugment, resize_u8
from classifiers.runtime import UserError
from classifiers.splits import stratified_holdout, stratified_kfold

TINY = {"train": {"epochs": 1, "batch_size": 16}, "protocol": {"folds": 2}}


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, cells):
    """A real 2-fold, 1-epoch W-Net cross-validation on 60 pbc-dev images."""
    out = tmp_path_factory.mktemp("cv") / "run"
    res = train.cross_validate("wnet", cells.images, cells.labels, classes=cells.classes, recipe=TINY,
                               out_dir=out, seed=0, progress=False, data_info={"source": "pbc_small"})
    return out, res


# --------------------------------------------------------------------------------- models
def test_wnet_has_exactly_the_papers_parameter_count():
    assert count_parameters(classifiers.create_model("wnet")) == 16_806_949
    assert count_parameters(classifiers.create_model("wnet-svm")) == 16_806_949
    assert count_parameters(classifiers.create_model("wnet", num_classes=4)) == 16_806_949 - 1025
    m = classifiers.create_model("wnet")
    bound = math.sqrt(6 / (16384 + 1024))  # Xavier-uniform bound of the 16,384 → 1,024 layer
    assert m.fc.weight.abs().max() <= bound and m.fc.weight.abs().max() > 0.9 * bound
    assert m.input_size == (128, 128) and m.spec["loss"] == "ce" and m.spec["feature_dim"] == 1024


@pytest.mark.parametrize("name", classifiers.list_models())
def test_every_model_trains_on_its_own_input_size(name):
    torch.manual_seed(0)
    model = classifiers.create_model(name).train()
    h, w = model.input_size
    assert model.spec["input_size"] == [h, w]
    x = torch.rand(2, 3, h, w)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 3])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert model.eval().features(x).shape == (2, model.feature_dim)


def test_registry_names_and_errors():
    assert classifiers.list_models() == ["wnet", "wnet-svm", "wbcsnet", "wbcsnet2", "dclnn", "alexnet", "vgg16",
                                         "resnet50", "lstm", "resnet18s"]
    with pytest.raises(UserError, match="unknown model 'wnet3'"):
        classifiers.create_model("wnet3")
    with pytest.raises(UserError, match="does not exist"):
        classifiers.create_model("resnet50", imagenet_weights="/nonexistent/resnet50.pth")
    with pytest.raises(UserError, match="only apply"):
        classifiers.create_model("wnet", imagenet_weights="x.pth")


def test_imagenet_weights_come_only_from_a_local_file(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src = torchvision.models.resnet50(weights=None).state_dict()  # stands in for a local ImageNet file
    save_file({k: v.contiguous() for k, v in src.items()}, str(tmp_path / "resnet50.safetensors"))
    m = classifiers.create_model("resnet50", imagenet_weights=str(tmp_path / "resnet50.safetensors"))
    assert torch.equal(m.net.conv1.weight, src["conv1.weight"]) and m.head.out_features == 5
    assert torch.equal(m.net.layer4[2].bn3.running_var, src["layer4.2.bn3.running_var"])
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="could not read"):
        classifiers.create_model("resnet50", imagenet_weights=str(tmp_path / "junk.safetensors"))


def test_hub_mixin_round_trip(tmp_path):
    m = classifiers.create_model("lstm", num_classes=4)
    m.set_normalization([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    m.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and json.loads((tmp_path / "config.json").read_text())["num_classes"] == 4
    back = type(m).from_pretrained(tmp_path).eval()
    x = torch.rand(3, 3, 128, 128)
    assert torch.equal(back(x), m.eval()(x)) and back.norm_mean.tolist() == pytest.approx([0.1, 0.2, 0.3])


# ------------------------------------------------------------------------ metrics & splits
def test_metrics_match_torchmetrics_and_hand_counts():
    from torchmetrics.functional.classification import (multiclass_f1_score, multiclass_precision,
                                                        multiclass_recall, multiclass_specificity)

    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 5, (300,), generator=g)
    p = torch.where(torch.rand(300, generator=g) < 0.7, t, torch.randint(0, 5, (300,), generator=g))
    rep = metrics.classification_report(t, p, ["a", "b", "c", "d", "e"])
    for fn, key in [(multiclass_precision, "precision"), (multiclass_recall, "recall"),
                    (multiclass_f1_score, "f1"), (multiclass_specificity, "specificity")]:
        assert rep["macro"][key] == pytest.approx(float(fn(p, t, 5, average="macro")), abs=1e-6)
        per = fn(p, t, 5, average=None)
        assert [rep["per_class"][c][key] for c in "abcde"] == pytest.approx(per.tolist(), abs=1e-6)
    assert rep["accuracy"] == pytest.approx(float((t == p).double().mean()))
    cm = torch.tensor(rep["confusion_matrix"])
    assert cm.sum() == 300 and cm[2, 4] == int(((t == 2) & (p == 4)).sum())
    tn = 300 - cm[:, 0].sum() - cm[0].sum() + cm[0, 0]
    assert rep["per_class"]["a"]["npv"] == pytest.approx(float(tn / (300 - cm[:, 0].sum())))


def test_metrics_absent_class_is_null_not_zero():
    rep = metrics.classification_report([0, 0, 1, 1], [0, 1, 1, 2], ["x", "y", "z"])
    assert rep["per_class"]["z"]["recall"] is None and rep["per_class"]["z"]["support"] == 0
    assert rep["balanced_accuracy"] == pytest.approx(0.5)  # mean recall over x and y only (0.5 each)
    assert rep["macro"]["precision"] == pytest.approx((1.0 + 0.5) / 2)


def test_stratified_splits_are_deterministic_and_balanced():
    labels = torch.tensor([0] * 23 + [1] * 11 + [2] * 7)
    folds = stratified_kfold(labels, 5, seed=3)
    tests = torch.cat([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(len(labels)))
    for tr, te in folds:
        assert set(tr.tolist()).isdisjoint(te.tolist())
        for c, n in enumerate([23, 11, 7]):
            assert abs(int((labels[te] == c).sum()) - n / 5) < 1
    assert all(torch.equal(a[1], b[1]) for a, b in zip(folds, stratified_kfold(labels, 5, seed=3)))
    keep, held = stratified_holdout(labels, 0.2, seed=0)
    assert len(held) == 5 + 2 + 1 and len(keep) + len(held) == len(labels)


# ------------------------------------------------------------------------- augmentation
def test_dihedral_augmentation_is_exact_and_colour_jitter_stays_in_range(cells):
    x = cells.images[:16].float() / 255
    g = torch.Generator().manual_seed(0)
    codes = (torch.rand(16, 8, generator=torch.Generator().manual_seed(0))[:, 0] * 8).long()
    y = BatchAugment("dihedral")(x, g)
    for i in range(16):
        ref = x[i].flip(-1) if codes[i] >= 4 else x[i]
        assert torch.equal(y[i], torch.rot90(ref, int(codes[i]) % 4, (-2, -1)))
    z = BatchAugment("any", (0.9, 1.1), jitter=0.2, hue=0.05)(x, g)
    assert z.shape == x.shape and z.min() >= 0 and z.max() <= 1 and not torch.equal(z, x)
    r = resize_u8(cells.images[:4], (60, 80))
    assert r.shape == (4, 3, 60, 80) and r.dtype == torch.uint8


# ------------------------------------------------------------------------------ recipes
def test_bundled_recipes_load_and_paper_settings_are_exact(tmp_path):
    names = recipes.list_recipes()
    for model in classifiers.list_models():
        assert recipes.default_recipe_for(model) is not None, model
    for n in names:
        r = recipes.load_recipe(n)
        classifiers.model_class(r["model"])
    p = recipes.load_recipe("wnet-paper")
    assert (p["train"]["batch_size"], p["train"]["optimizer"], p["train"]["lr"], p["train"]["epochs"],
            p["protocol"]["kind"], p["protocol"]["folds"]) == (5, "adam", 1e-4, 500, "cv", 10)
    assert recipes.load_recipe("wnet-svm-paper")["model"] == "wnet-svm"
    o = recipes.apply_overrides(recipes.load_recipe("wnet-cpu"), epochs=3, folds=4, protocol="cv")
    assert o["train"]["epochs"] == 3 and o["protocol"] == {**o["protocol"], "kind": "cv", "folds": 4}
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nepochs = 2\nlearning_rate = 0.1\n')
    with pytest.raises(UserError, match="unknown recipe key 'train.learning_rate'"):
        recipes.load_recipe(bad)
    with pytest.raises(UserError, match="no recipe named"):
        recipes.load_recipe("no-such-recipe")


# ------------------------------------------------------------------------------ trainer
def test_two_fold_cv_on_real_images_writes_results_json(cv_run, cells):
    out, res = cv_run
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(res))
    assert {"model", "data", "protocol", "classes", "test", "per_fold"} <= set(saved)
    assert saved["model"] == "wnet" and saved["protocol"]["kind"] == "cv" and saved["protocol"]["folds"] == 2
    assert saved["classes"] == list(cells.classes)
    test = saved["test"]
    assert {"accuracy", "balanced_accuracy", "macro", "per_class", "confusion_matrix"} <= set(test)
    assert {"precision", "recall", "f1", "specificity"} <= set(test["macro"])
    cm = torch.tensor(test["confusion_matrix"])
    assert cm.shape == (5, 5) and int(cm.sum()) == len(cells) == 60
    assert cm.sum(1).tolist() == [12] * 5
    values = [test["accuracy"], test["balanced_accuracy"], *test["macro"].values()]
    for c in cells.classes:
        pc = test["per_class"][c]
        assert {"precision", "recall", "f1", "specificity", "support"} <= set(pc) and pc["support"] == 12
        values += [v for k, v in pc.items() if k != "support"]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert len(saved["per_fold"]) == 2 and sum(f["n_test"] for f in saved["per_fold"]) == 60
    assert test["accuracy"] == pytest.approx(float(cm.diag().sum()) / 60)
    assert "| Fold-1 |" in (out / "results.md").read_text()
    with Image.open(out / "confusion_matrix.png") as im:
        assert im.format == "PNG" and im.width > 300
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == "wnet" and cfg["status"] == "finished" and cfg["input_size"] == [128, 128]
    assert len(cfg["normalisation"]["mean"]) == 3 and cfg["recipe"]["train"]["epochs"] == 1
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
    assert (out / train.CKPT).is_file()


def test_load_run_predictor(cv_run, cells):
    out, _ = cv_run
    pred = classifiers.load_run(out)
    assert pred.classes == cells.classes and pred.config["model"] == "wnet"
    assert count_parameters(pred.model) == 16_806_949
    proba = pred.predict_proba(cells.images[:7])
    assert proba.shape == (7, 5) and torch.allclose(proba.sum(1), torch.ones(7), atol=1e-5)
    assert torch.equal(pred.predict(cells.images[:7]), proba.argmax(1))
    assert pred.features(cells.images[:3]).shape == (3, 1024)
    big = torch.nn.functional.interpolate(cells.images[:2].float(), size=(200, 180)).to(torch.uint8)
    assert pred.predict_proba(big).shape == (2, 5)  # any input size is resized inside
    with pytest.raises(UserError, match="does not exist"):
        classifiers.load_run(out / "missing")
    with pytest.raises(UserError, match="uint8"):
        pred.predict(cells.images[:2].float())


def test_resumed_run_ends_with_the_same_weights(tmp_path, cells):
    rec = {"train": {"epochs": 2, "batch_size": 12}, "augment": {"rotate": "dihedral", "jitter": 0.1},
           "protocol": {"folds": 2}, "early_stopping": {"val_fraction": 0.2}}
    kw = dict(classes=cells.classes, recipe=rec, seed=5, progress=False)
    ref = train.cross_validate("dclnn", cells.images, cells.labels, out_dir=tmp_path / "a", **kw)

    class Interrupt(Exception):
        pass

    def stop_at(fold, epoch):
        def cb(row):
            if (row["fold"], row["epoch"]) == (fold, epoch):
                raise Interrupt
        return cb

    with pytest.raises(Interrupt):  # dies after fold 0, epoch 1
        train.cross_validate("dclnn", cells.images, cells.labels, out_dir=tmp_path / "b", on_epoch_end=stop_at(0, 1), **kw)
    with pytest.raises(Interrupt):  # resumed, dies again in the second fold
        train.cross_validate("dclnn", cells.images, cells.labels, out_dir=tmp_path / "b", resume=True,
                             on_epoch_end=stop_at(1, 1), **kw)
    res = train.cross_validate("dclnn", cells.images, cells.labels, out_dir=tmp_path / "b", resume=True, **kw)
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert res["test"] == ref["test"] and [f["val_score"] for f in res["per_fold"]] == [f["val_score"] for f in ref["per_fold"]]
    with pytest.raises(UserError, match="already holds"):
        train.cross_validate("dclnn", cells.images, cells.labels, out_dir=tmp_path / "b", **kw)
    with pytest.raises(UserError, match="different run"):
        train.cross_validate("dclnn", cells.images, cells.labels, out_dir=tmp_path / "b", resume=True,
                             **{**kw, "seed": 6})


def test_transfer_fine_tune_and_linear_svm_head(tmp_path, cv_run, zheng_dir):
    from wbcgen.data import load_cells

    src, _ = cv_run
    zheng = load_cells(zheng_dir, label_map={"1": "neutrophil", "2": "lymphocyte", "3": "monocyte",
                                                           "4": "eosinophil", "5": "basophil"}, progress=False)
    small = zheng.subset(torch.arange(0, len(zheng), 8))  # 50 images of both zheng2018 sets
    rec = {"train": {"epochs": 1, "batch_size": 8}, "protocol": {"kind": "holdout", "test_fraction": 0.3}}
    from classifiers.transfer import for_transfer
    svm = for_transfer(recipes.load_recipe(rec), init_from=src, head="linear-svm")
    assert svm["train"]["freeze_trunk"] and svm["train"]["loss"] == "hinge-multiclass"
    svm["train"]["epochs"] = 1
    res = train.holdout("wnet", small.images, small.labels, classes=small.classes, recipe=svm, out_dir=tmp_path / "svm",
                        init_from=src, progress=False)
    assert res["test"]["n"] > 0
    before, after = load_file(str(src / "model.safetensors")), load_file(str(tmp_path / "svm" / "model.safetensors"))
    trunk = [k for k in before if not k.startswith("head.")]
    assert all(torch.equal(before[k], after[k]) for k in trunk)  # frozen trunk, source normalisation
    assert not torch.equal(before["head.weight"], after["head.weight"])
    ft = train.holdout("wnet", small.images, small.labels, classes=small.classes,
                       recipe=for_transfer(recipes.load_recipe(rec), init_from=src), out_dir=tmp_path / "ft",
                       init_from=src, progress=False)
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["init_from"] == src.name  # a basename: no local path
    assert 0 <= ft["test"]["accuracy"] <= 1
    with pytest.raises(UserError, match="neither"):
        train.holdout("wnet", small.images, small.labels, classes=small.classes, recipe=rec,
                      out_dir=tmp_path / "x", init_from=tmp_path / "nope", progress=False)


# ---------------------------------------------------------------------------------- CLI
def test_cli_train_resume_classify_and_errors(tmp_path, pbc_small):
    from wbcgen.cli import main

    runner = CliRunner()
    out = tmp_path / "run"
    args = ["train-classifier", "--model", "wbcsnet", "--data", str(pbc_small), "--folds", "2", "--epochs", "1",
            "--batch-size", "16", "--out", str(out), "--quiet"]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "balanced accuracy" in r.output and (out / "results.json").is_file()
    r = runner.invoke(main, args)
    assert r.exit_code != 0 and "--resume" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, args + ["--resume"])
    assert r.exit_code == 0, r.output
    csv_path = tmp_path / "p" / "pred.csv"
    r = runner.invoke(main, ["classify", "--weights", str(out), "--data", str(pbc_small), "--out", str(csv_path)])
    assert r.exit_code == 0, r.output
    rows = csv_path.read_text().splitlines()
    assert len(rows) == 61 and rows[0].startswith("path,label,predicted,p_neutrophil")
    assert json.loads((tmp_path / "p" / "results.json").read_text())["test"]["n"] == 60
    r = runner.invoke(main, ["classify", "--weights", str(out), "--data", str(pbc_small), "--out", str(csv_path)])
    assert r.exit_code != 0 and "--overwrite" in r.output
    for bad, msg in [(["train-classifier", "--model", "wnet9"], "unknown model 'wnet9'"),
                     (["classify", "--weights", str(tmp_path / "none")], "does not exist"),
                     (["train-classifier", "--folds", "2", "--test", str(pbc_small)], "cannot be combined"),
                     (["train-classifier", "--recipe", str(tmp_path / "missing.toml")], "does not exist"),
                     (["train-classifier", "--head", "linear-svm", "--init-from", str(tmp_path / "nope"),
                       "--data", str(pbc_small), "--out", str(tmp_path / "h"), "--quiet"], "neither")]:
        r = runner.invoke(main, bad)
        assert r.exit_code != 0 and msg in r.output and "Traceback" not in r.output, (bad, r.output)
    for cmd in ("train-classifier", "classify"):
        r = runner.invoke(main, [cmd, "--help"])
        assert r.exit_code == 0 and "Examples:" in r.output
