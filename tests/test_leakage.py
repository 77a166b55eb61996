"""The leakage guard in `wbcgen evaluate`, on real pbc-dev images and real (tiny) GANs."""
from __future__ import annotations

import json
import shutil

import pytest
from evalkit import chdir, cli

from wbcgen.data import CLASSES


@pytest.fixture(scope="module")
def leaky_test_folder(tmp_path_factory, pbc_dir, pbc_small):
    """Real pbc-dev images the gan_work GANs never saw (2 per class) plus 3 they trained on
    (2 basophils, 1 monocyte)."""
    out = tmp_path_factory.mktemp("leaky")
    for c in CLASSES:
        (out / c).mkdir()
        for f in sorted((pbc_dir / c).iterdir())[12:14]:
            shutil.copy(f, out / c / f.name)
    for c, k in (("basophil", 2), ("monocyte", 1)):
        for f in sorted((pbc_small / c).iterdir())[:k]:
            shutil.copy(f, out / c / f.name)
    return out


def test_overlap_is_refused_then_recorded_with_a_red_banner(gan_work, leaky_test_folder, tmp_path):
    _, syn = gan_work
    out = tmp_path / "ev"
    args = ["evaluate", "--train-on", "synthetic", "--real", leaky_test_folder, "--synthetic", syn,
            "--model", "wbcsnet", "--epochs", 1, "--out", out, "--quiet"]
    res = cli(*args, ok=False)
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "3 test/validation image(s) (basophil 2, monocyte 1)" in res.output and "--split" in res.output
    assert not (out / "results.json").exists()
    cli(*args, "--allow-overlap")
    r = json.loads((out / "results.json").read_text())
    assert r["leakage"]["n_overlap"] == 3 and r["leakage"]["per_class"] == {"basophil": 2, "monocyte": 1}
    assert r["leakage"]["allowed"] is True and any("LEAKAGE" in n for n in r["notes"])
    cli("report", out)
    html = (out / "report.html").read_text()
    assert 'class="leak"' in html and "LEAKAGE: 3 test/validation image(s)" in html
    from wbcgen.hub.cards import eval_summary, render_card
    from wbcgen.hub.layout import Staged

    assert eval_summary(r)["leakage"]["n_overlap"] == 3
    card = render_card(Staged(kind="evaluation", repo_type="model", files=["results.json"], info={"results": r}),
                       repo_id="me/leaky-eval")
    assert "Warning — test-set leakage:** 3 test/validation image(s)" in card and "basophil 2, monocyte 1" in card


def test_split_drives_train_gan_sample_evaluate_without_leakage(pbc_small, tmp_path):
    split = tmp_path / "split.json"
    with chdir(tmp_path):
        cli("data", "split", pbc_small, "--test-fraction", "0.25", "--seed", "0", "--out", split)
        cli("train-gan", "--cls", "all", "--data", pbc_small, "--split", split, "--config", "tiny", "--steps", 2,
            "--quiet")
        cli("sample", "-n", 6, "--quiet")
        res = cli("evaluate", "--train-on", "synthetic", "--real", pbc_small, "--split", split, "--model",
                  "wbcsnet,dclnn", "--epochs", 1, "--checks", "fid", "--splits", 2, "--out", "ev", "--quiet")
        r = json.loads((tmp_path / "ev" / "results.json").read_text())
        gen = json.loads((tmp_path / "runs" / "synthetic" / "generation.json").read_text())
        cli("report", "ev")
        html = (tmp_path / "ev" / "report.html").read_text()
    assert r["leakage"]["n_overlap"] == 0 and r["leakage"]["n_checked"] == 15 and r["test"]["n"] == 15
    assert all(g["n_train_images"] == 9 for g in gen["generators"].values())
    assert r["split"]["file"] == "split.json" and 'class="leak"' not in html
    # distances compare the synthetic cells with the 15 test images (unseen by GANs and reference W-Net)
    dom = r["checks"]["distances"]["domain"]["per_class"]
    assert all(dom[c]["n_real"] == 3 for c in CLASSES) and r["checks"]["reference_classifier"]["n_heldout"] == 15
    assert "class-balanced" in dom["overall"]["definition"] and dom["overall"]["n_real"] == 15
    # two judges, trained on the same 45 synthetic images and tested on the same 15 real ones
    assert [j["model"] for j in r["judges"]] == ["wbcsnet", "dclnn"] and r["models"] == ["wbcsnet", "dclnn"]
    dcl = json.loads((tmp_path / "ev" / "train-dclnn" / "results.json").read_text())
    assert dcl["test"]["n"] == 15 and r["judges"][1]["accuracy"] == dcl["test"]["accuracy"]
    assert "Every judge" in html and "dclnn" in html and "dclnn: real-test accuracy" in res.output
    from wbcgen.hub.cards import eval_summary

    assert [j["model"] for j in eval_summary(r)["judges"]] == ["wbcsnet", "dclnn"]


def test_unknown_training_list_warns(gan_work, pbc_small, tmp_path):
    _, syn = gan_work
    old = tmp_path / "old-synthetic"
    shutil.copytree(syn, old)
    (old / "generation.json").unlink()
    res = cli("evaluate", "--train-on", "synthetic", "--real", pbc_small, "--synthetic", old, "--model", "wbcsnet",
              "--epochs", 1, "--out", tmp_path / "ev", "--quiet")
    r = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert r["leakage"] == "unknown" and "leakage unknown" in res.output
    (tmp_path / "ev" / "report.html").unlink(missing_ok=True)
    cli("report", tmp_path / "ev")
    assert "Leakage unknown" in (tmp_path / "ev" / "report.html").read_text()


def test_classifier_run_that_saw_the_real_images_is_refused(gan_work, pbc_small, tmp_path):
    _, syn = gan_work
    clf = tmp_path / "clf"
    cli("train-classifier", "--model", "wbcsnet", "--data", pbc_small, "--protocol", "train", "--epochs", 1,
        "--out", clf, "--quiet")
    rows = (clf / "train_images.csv").read_text().splitlines()
    assert rows[0] == "path,sha256,label" and len(rows) == 61
    split = tmp_path / "s.json"
    cli("data", "split", pbc_small, "--test-fraction", "0.25", "--seed", "0", "--out", split)
    res = cli("evaluate", "--train-on", "real", "--real", pbc_small, "--synthetic", syn, "--checks",
              "classify-synthetic", "--classifier", clf, "--model", "wbcsnet", "--epochs", 1,
              "--out", tmp_path / "ev", "--allow-overlap", "--quiet", ok=True)
    r = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert r["leakage"]["classifier"]["n_overlap"] == 60
    res = cli("evaluate", "--train-on", "real", "--real", pbc_small, "--synthetic", syn, "--checks",
              "classify-synthetic", "--classifier", clf, "--model", "wbcsnet", "--epochs", 1,
              "--out", tmp_path / "ev2", "--quiet", ok=False)
    assert res.exit_code == 1 and "was trained on 60 of the real images" in res.output
