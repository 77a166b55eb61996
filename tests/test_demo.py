"""`wbcgen demo`: the whole pipeline on the embedded sample, at the smallest settings."""
from __future__ import annotations

import json

from click.testing import CliRunner

from wbcgen.cli import main
from wbcgen.data import CLASSES, load_cells


def test_demo_runs_every_stage_on_the_embedded_sample(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(main, ["demo", "--gan-steps", "3", "-n", "6", "--epochs", "1", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "train on synthetic, test on real: accuracy" in res.output
    for cls in CLASSES:
        assert (out / "gan" / cls / "demo" / "generator" / "model.safetensors").is_file()
    syn = load_cells(out / "synthetic", progress=False)
    assert syn.counts() == {c: 6 for c in CLASSES}
    r = json.loads((out / "evaluate" / "results.json").read_text())
    assert r["train_on"] == "synthetic" and r["n_train_synthetic"] == 30 and r["n_train_real"] == 0
    # tested on the held-out 30 % of the sample (9 per class), which the GANs never saw
    assert sum(map(sum, r["test"]["confusion_matrix"])) == 45 and r["leakage"]["n_overlap"] == 0
    assert all(json.loads(p.read_text())["data"]["n_train_images"] == 21
               for p in (out / "gan").glob("*/demo/config.json"))
    assert 0.0 <= r["test"]["accuracy"] <= 1.0
    assert (out / "evaluate" / "report.html").stat().st_size > 10_000
    again = CliRunner().invoke(main, ["demo", "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output and "Traceback" not in again.output
