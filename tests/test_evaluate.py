"""`wbcgen evaluate`, `review-kit` and `review-score` on real pbc-dev images against synthetic
cells from `wbcgen train-gan` + `wbcgen sample` (tiny config, a few steps)."""
from __future__ import annotations

import csv
import json
import re

import pytest
import torch

from evalkit import N_SYNTHETIC, chdir, cli
from wbcgen.data import CLASSES, load_cells
from wbcgen.evaluate import regimes

N_REAL = 12  # images per class in conftest's pbc_small


@pytest.fixture(scope="session")
def synthetic_dir(gan_work):
    return gan_work[1]


def _results(out):
    return json.loads((out / "results.json").read_text())


def _cm_sum(cm):
    return sum(map(sum, cm))


# --------------------------------------------------------------------------- splits
def test_regime_splits_never_test_on_synthetic(pbc_small, synthetic_dir):
    real = load_cells(pbc_small, progress=False, size=32)
    syn = load_cells(synthetic_dir, progress=False, size=32)
    assert syn.counts() == {c: N_SYNTHETIC for c in CLASSES}
    pool = regimes.make_pool(real, syn, None, (32, 32))
    s = regimes.build_splits(pool, "synthetic", folds=None)
    assert len(s) == 1 and torch.equal(s[0]["test"], pool.real) and torch.isin(s[0]["train"], pool.synthetic).all()
    assert torch.equal(s[0]["train"], pool.synthetic) and s[0]["val"].numel() == 0  # no synthetic epoch pick
    s = regimes.build_splits(pool, "real", folds=3)
    tests = torch.cat([x["test"] for x in s])
    assert sorted(tests.tolist()) == pool.real.tolist()          # every real image tested exactly once
    for x in s:
        assert not torch.isin(x["train"], pool.synthetic).any() and torch.isin(x["val"], pool.real).all()
        assert not torch.isin(x["train"], x["test"]).any() and not torch.isin(x["val"], x["test"]).any()
    s = regimes.build_splits(pool, "mixed", folds=2, mix_ratio=0.5, real_per_class=6, seed=1)
    for x in s:
        assert torch.isin(x["test"], pool.real).all() and torch.isin(x["val"], pool.real).all()
        c = regimes.split_counts(pool, x)
        for cls in CLASSES:
            assert c["real"][cls] + c["validation"][cls] <= 6
            assert c["synthetic"][cls] == round(0.5 * c["real"][cls])
    held = load_cells(pbc_small, progress=False, size=32).subset(range(0, 60, 3))
    pool_t = regimes.make_pool(real, syn, held, (32, 32))
    s = regimes.build_splits(pool_t, "mixed", folds=None, mix_ratio=100.0)
    assert torch.equal(s[0]["test"], pool_t.test)
    assert any("only 12 exist" in n for n in pool_t.notes)       # the ratio asked for more than exists


# ------------------------------------------------------------- evaluate, end to end
def test_train_on_synthetic_with_all_checks_and_dose(tmp_path, pbc_small, synthetic_dir):
    out = tmp_path / "ev"
    cli("evaluate", "--allow-overlap", "--train-on", "synthetic", "--real", pbc_small, "--synthetic", synthetic_dir,
        "--epochs", 1, "--checks", "all", "--dose", "0,1", "--folds", 2, "--splits", 3, "--review-n", 2, "--out", out,
        "--quiet")
    r = _results(out)
    n_real = N_REAL * 5
    assert r["train_on"] == "synthetic" and r["n_train_real"] == 0 and r["n_train_synthetic"] == N_SYNTHETIC * 5
    assert set(r["generator_sha256"]) == set(CLASSES)
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in r["generator_sha256"].values())
    # the classifier schema, tested on every real image and never on a synthetic one
    assert r["test"]["n"] == n_real and _cm_sum(r["test"]["confusion_matrix"]) == n_real
    assert r["per_fold"][0]["n_test"] == n_real and r["protocol"]["kind"] == "train-test"
    # no synthetic validation slice: every synthetic cell trains, the last epoch is kept (session 38)
    f0 = r["per_fold"][0]
    assert f0["n_val"] == 0 and f0["n_train"] == N_SYNTHETIC * 5 and f0["best_epoch"] == 0  # (0: none picked)
    assert r["n_train_per_class"]["validation"] == {c: 0 for c in CLASSES}
    assert 0 <= r["test"]["accuracy"] <= 1 and r["tstr_accuracy"] == r["test"]["accuracy"]
    ch = r["checks"]
    cs = ch["classify_synthetic"]        # check 1: the real-trained W-Net labels every synthetic image
    assert cs["n"] == N_SYNTHETIC * 5 and _cm_sum(cs["test"]["confusion_matrix"]) == N_SYNTHETIC * 5
    assert cs["paper"]["accuracy"] == 1.0 and set(cs["per_class_accuracy"]) == set(CLASSES)
    ref = ch["reference_classifier"]
    assert ref["trained_here"] and ref["n_train"] + ref["n_heldout"] == n_real
    assert (out / "reference" / "model.safetensors").is_file()
    assert ch["tstr"]["same_as_regime"] is True                  # check 2 is this regime
    for space in ("pixel", "features"):                          # check 3
        for cls, row in ch["cosine"][space]["per_class"].items():
            assert -1 <= row["real_synthetic"] <= 1 and -1 <= row["real_real"] <= 1
            assert row["n_synthetic"] == N_SYNTHETIC
    assert ch["cosine"]["features"]["per_class"]["basophil"]["n_real"] == ref["n_heldout"] // 5
    dom = ch["distances"]["domain"]["per_class"]                 # domain FD / KID with floors
    assert set(dom) == set(CLASSES) | {"overall"}
    for row in dom.values():
        assert row["fd"] >= 0 and row["floor"]["fd"]["mean"] >= 0 and row["matched"]["fd"]["mean"] >= 0
        assert row["kid"]["mean"] == row["kid"]["mean"]        # not NaN
    assert r["domain_fd"]["overall"] == dom["overall"]["fd"]
    inc = ch["distances"]["inception"]
    if not inc["available"]:
        assert "not available" in inc["note"] and r["fid"] is None
    assert inc["protocol"]["resize"].startswith("299×299") and "antialias=False" in inc["protocol"]["resize"]
    kit = out / "review-kit"                                     # check 4
    assert len(list((kit / "reviewer").glob("img_*.png"))) == 2 * 2 * 5 and (kit / "key.csv").is_file()
    dr = r["dose_response"]
    assert dr["ratios"] == [0.0, 1.0] and len(dr["rows"]) == 2 and dr["folds"] == 2
    assert dr["rows"][0]["n_train_synthetic_per_class"] == {c: 0 for c in CLASSES}
    assert all(v > 0 for v in dr["rows"][1]["n_train_synthetic_per_class"].values())
    n0, n1 = dr["rows"][0]["n_train"], dr["rows"][1]["n_train"]     # equal optimisation steps per ratio
    assert n1 > n0 and dr["rows"][1]["epochs"] == 1   # (both sets are under one batch: one step per epoch)
    steps = [s for row in dr["rows"] for s in row["steps_run"]]
    assert max(steps) - min(steps) <= 1 and steps[0] == dr["steps"]
    assert (out / "dose_response.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for cls in CLASSES:
        assert (out / "grids" / f"real_{cls}.png").is_file() and (out / "grids" / f"synthetic_{cls}.png").is_file()
    md = (out / "results.md").read_text()
    assert "Table 6" in md and "Check 3" in md and "Dose-response" in md


def test_train_on_real_cv_and_mixed_scarce(tmp_path, pbc_small, synthetic_dir):
    out = tmp_path / "real"
    cli("evaluate", "--train-on", "real", "--real", pbc_small, "--epochs", 1, "--folds", 2, "--out", out, "--quiet")
    r = _results(out)
    assert r["protocol"]["kind"] == "cv" and len(r["per_fold"]) == 2 and r["n_train_synthetic"] == 0
    assert _cm_sum(r["test"]["confusion_matrix"]) == N_REAL * 5
    assert r["sources"]["synthetic"] is None                     # not needed, not loaded
    out = tmp_path / "mixed"
    cli("evaluate", "--allow-overlap", "--train-on", "mixed", "--real", pbc_small, "--synthetic", synthetic_dir,
        "--epochs", 1, "--folds", 2, "--mix-ratio", 0.5, "--real-per-class", 4, "--out", out, "--quiet")
    r = _results(out)
    assert r["mix_ratio"] == 0.5 and r["real_per_class"] == 4 and _cm_sum(r["test"]["confusion_matrix"]) == 60
    per = r["n_train_per_class"]
    for c in CLASSES:
        assert per["real"][c] + per["validation"][c] == 4 and per["synthetic"][c] == round(0.5 * per["real"][c])
    assert r["n_train_synthetic"] == sum(per["synthetic"].values()) > 0


def test_test_on_folder(tmp_path, pbc_small, synthetic_dir, pbc_dir):
    import shutil

    held = tmp_path / "held"
    for cls in CLASSES:                                          # other pbc-dev images than pbc_small's
        (held / cls).mkdir(parents=True)
        for f in sorted((pbc_dir / cls).iterdir())[50:53]:
            shutil.copy(f, held / cls / f.name)
    out = tmp_path / "ev"
    cli("evaluate", "--train-on", "real", "--real", pbc_small, "--test-on", held, "--epochs", 1, "--out", out, "--quiet")
    r = _results(out)
    assert r["protocol"]["kind"] == "train-test" and r["test"]["n"] == 15 and r["sources"]["test"]["n"] == 15


def test_bare_evaluate_uses_embedded_sample_and_sample_output(gan_work):
    work, _ = gan_work
    with chdir(work):
        cli("evaluate", "--allow-overlap", "--train-on", "synthetic", "--epochs", 1, "--quiet")
        r = _results(work / "runs" / "evaluate" / "synthetic")
        again = cli("evaluate", "--allow-overlap", "--train-on", "synthetic", "--epochs", 1, ok=False)
    assert r["sources"]["real"]["n"] == 150 and r["test"]["n"] == 150 and r["n_train_synthetic"] == 60
    assert again.exit_code != 0 and "--overwrite" in again.output and "Traceback" not in again.output



def test_resume_after_interruption_equals_uninterrupted(tmp_path, pbc_small, synthetic_dir, monkeypatch):
    """Kill `evaluate` inside the dose-response's second stage (after an epoch's checkpoint),
    then `--resume`: finished stages are not retrained and results.json equals an
    uninterrupted evaluation's."""
    import classifiers.train as ct

    args = ["evaluate", "--allow-overlap", "--train-on", "real", "--real", pbc_small, "--synthetic", synthetic_dir,
            "--epochs", 1, "--folds", 2, "--dose", "0,1", "--quiet"]
    ref = tmp_path / "uninterrupted"
    cli(*args, "--out", ref)
    real_run = ct.run_protocol

    def interrupted(*a, **kw):
        if kw.get("protocol", {}).get("dose_ratio") == 1.0:
            def stop(row):
                raise KeyboardInterrupt
            kw["on_epoch_end"] = stop
        return real_run(*a, **kw)

    out = tmp_path / "ev"
    monkeypatch.setattr(ct, "run_protocol", interrupted)
    stopped = cli(*args, "--out", out, ok=False)                  # Ctrl-C: click prints "Aborted!"
    assert stopped.exit_code != 0 and "Aborted" in stopped.output
    monkeypatch.setattr(ct, "run_protocol", real_run)
    assert not (out / "results.json").exists() and (out / "dose" / "ratio-1" / "checkpoints").is_dir()
    done = {p: (out / p).stat().st_mtime_ns for p in ("train/results.json", "dose/ratio-0/results.json")}
    again = cli(*args, "--out", out, ok=False)                   # no flag: refused, nothing touched
    assert again.exit_code != 0 and "--resume" in again.output and "Traceback" not in again.output
    cli(*args, "--out", out, "--resume")
    assert {p: (out / p).stat().st_mtime_ns for p in done} == done   # finished stages were not retrained
    a, b = _results(ref), _results(out)
    assert a["test"] == b["test"] and a["per_fold"] == b["per_fold"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "run"} for r in rows]  # noqa: E731
    assert strip(a["dose_response"]["rows"]) == strip(b["dose_response"]["rows"])
    bad = cli(*args, "--out", out, "--resume", "--seed", "1", ok=False)   # another run's state: refused
    assert bad.exit_code != 0 and "different run" in bad.output and "Traceback" not in bad.output
    both = cli(*args, "--out", out, "--resume", "--overwrite", ok=False)
    assert both.exit_code != 0 and "give one of them" in both.output

def test_user_errors_are_one_sentence(tmp_path, pbc_small, synthetic_dir):
    with chdir(tmp_path):                                        # no `wbcgen sample` output here
        res = cli("evaluate", "--train-on", "synthetic", "--epochs", 1, ok=False)
    assert res.exit_code != 0 and "run `wbcgen sample` first" in res.output and "Traceback" not in res.output
    one = tmp_path / "one"
    rows = list(csv.DictReader(open(synthetic_dir / "metadata.csv", encoding="utf-8")))
    basos = [r for r in rows if r["label"] == "basophil"]
    import shutil

    (one / "basophil").mkdir(parents=True)
    for r in basos:
        shutil.copy(synthetic_dir / r["file_name"], one / r["file_name"])
    with open(one / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(basos)
    res = cli("evaluate", "--real", pbc_small, "--synthetic", one, "--epochs", 1, "--out", tmp_path / "o", ok=False)
    assert "needs at least two classes" in res.output and "only basophil" in res.output
    res = cli("evaluate", "--real", pbc_small, "--synthetic", synthetic_dir, "--checks", "5", "--out",
              tmp_path / "o2", ok=False)
    assert "unknown check '5'" in res.output
    res = cli("evaluate", "--real", tmp_path / "missing", "--out", tmp_path / "o3", ok=False)
    assert "--real" in res.output and "not a folder" in res.output


# ------------------------------------------------------------------ review kit / score
def test_review_kit_and_score_round_trip(tmp_path, pbc_small, synthetic_dir):
    kit = tmp_path / "kit"
    cli("review-kit", "--real", pbc_small, "--synthetic", synthetic_dir, "-n", 3, "--out", kit, "--seed", 5)
    imgs = sorted((kit / "reviewer").glob("*.png"))
    key = list(csv.DictReader(open(kit / "key.csv", encoding="utf-8")))
    sheet = list(csv.DictReader(open(kit / "reviewer" / "answers.csv", encoding="utf-8")))
    assert len(imgs) == len(key) == len(sheet) == 30
    assert {r["file_name"] for r in key} == {p.name for p in imgs} == {r["file_name"] for r in sheet}
    assert all(r["class"] == "" and r["source"] == "" for r in sheet)    # blank sheet, no hint
    assert not any("key" in p.name for p in (kit / "reviewer").iterdir())
    for cls in CLASSES:
        for src in ("real", "synthetic"):
            assert sum(1 for r in key if r["class"] == cls and r["source"] == src) == 3
    # a reviewer who gets every class right except two real monocytes (called NE) and one
    # synthetic basophil (called LY), leaves one image blank, and calls every image "real"
    mono_real = [r for r in key if r["class"] == "monocyte" and r["source"] == "real"][:2]
    baso_syn = [r for r in key if r["class"] == "basophil" and r["source"] == "synthetic"][0]
    blank = [r for r in key if r["class"] == "eosinophil" and r["source"] == "real"][0]
    answers = []
    for r in key:
        ans = r["class"][:2].upper()
        if r in mono_real:
            ans = "NE"
        elif r is baso_syn:
            ans = "lymphocyte"
        elif r is blank:
            ans = ""
        answers.append({"file_name": r["file_name"], "class": ans, "source": "real"})
    path = tmp_path / "answers.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["file_name", "class", "source"])
        w.writeheader()
        w.writerows(answers)
    cli("review-score", path, kit / "key.csv", "--out", tmp_path / "score.json")
    s = json.loads((tmp_path / "score.json").read_text())
    assert s["n_answered"] == 29 and s["unanswered"] == [blank["file_name"]]
    assert s["accuracy"] == pytest.approx(26 / 29)
    assert s["accuracy_real"] == pytest.approx(12 / 14) and s["accuracy_synthetic"] == pytest.approx(14 / 15)
    assert s["misclassified"] == {"real": 2, "synthetic": 1}
    assert s["per_class"]["monocyte"]["accuracy"] == pytest.approx(4 / 6)
    assert s["per_class"]["eosinophil"] == {"correct": 5, "answered": 5, "n": 6, "accuracy": 1.0}
    cm = s["confusion_matrix"]
    assert cm[4][0] == 2 and cm[2][3] == 1 and _cm_sum(cm) == 29
    sd = s["source_detection"]
    assert sd["n_guessed"] == 30 and sd["accuracy"] == 0.5 and sd["synthetic_called_real"] == 15
    assert sd["p_value_vs_chance"] == pytest.approx(1.0)
    bad = tmp_path / "bad.csv"
    bad.write_text(f"file_name,class\n{key[0]['file_name']},platelet\n")
    res = cli("review-score", bad, kit / "key.csv", ok=False)
    assert "is not a class" in res.output and "Traceback" not in res.output
    res = cli("review-kit", "--real", pbc_small, "--synthetic", synthetic_dir, "--out", kit, ok=False)
    assert "--overwrite" in res.output
