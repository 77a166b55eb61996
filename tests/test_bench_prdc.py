"""bench/diag_prdc.py (issue 12, session 41): a run's EMA (or raw) generator judged by check 1, FD ÷ floor and
precision / recall / density / coverage in the judge W-Net's and the random-conv features, against real test
cells that neither the GAN nor the judge saw. Real pbc-dev cells, a tiny GAN and a one-epoch W-Net."""
from __future__ import annotations

import shutil

import pytest
import torch

from classifiers.runtime import load_checkpoint
from wbcgen.data import load_cells
from wbcgen.gan import Generator, generate, quality, train_gan
from wbcgen.metrics import prdc_report

from evalkit import bench_module

dp = bench_module("diag_prdc")
bq = bench_module("bench_quality")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def unseen(pbc_dir, tmp_path_factory):
    """24 real cells per class that pbc_small (the first 12 of each class) does not hold."""
    out = tmp_path_factory.mktemp("unseen")
    for d in sorted(p for p in pbc_dir.iterdir() if p.is_dir()):
        (out / d.name).mkdir()
        for f in sorted(d.iterdir())[12:36]:
            shutil.copy(f, out / d.name / f.name)
    return load_cells(out, progress=False)


def test_judge_run_on_real_unseen_cells(cells, unseen, tmp_path):
    run = train_gan(cells, "basophil", config="tiny", out_root=tmp_path / "gan", steps=3, seed=1, progress=False)
    pred, _ = bq.real_wnet(cells, unseen, tmp_path / "real-wnet-e1", 1, 0)
    assert not {m["sha256"] for m in cells.manifest} & {m["sha256"] for m in unseen.manifest}  # never seen
    rec, x = dp.judge_run(run, "ema", pred, unseen, 40)
    assert x.shape == (40, 3, 128, 128) and x.dtype == torch.uint8
    assert rec["class"] == "basophil" and rec["step"] == 3 and rec["weights"] == "ema" and rec["config"] == "tiny"
    # the same cells and numbers, computed here directly
    ck = load_checkpoint(run / "checkpoints" / "latest.safetensors")
    G = Generator(__import__("json").loads((run / "config.json").read_text())["gan"])
    G.load_state_dict(ck["ema"])
    assert torch.equal(generate(G.eval(), 40, seed=12345, device="cpu"), x)
    real = unseen.images[unseen.labels == 2]
    assert rec["check1"] == round(float((pred.predict(x) == 2).float().mean()), 4)
    q = prdc_report(quality.features(real).double(), quality.features(x).double(), seed=2, splits=10)
    assert rec["prdc_randconv"] == {m: v["mean"] for m, v in q["matched"].items()}
    assert set(rec["prdc_wnet"]) == {"precision", "recall", "density", "coverage"}
    assert rec["prdc_wnet_floor"]["coverage"] > rec["prdc_wnet"]["coverage"]  # 3 steps: nowhere near real cells
    raw, xg = dp.judge_run(run, "G", pred, unseen, 40)
    G.load_state_dict(ck["G"])
    assert raw["weights"] == "G" and torch.equal(generate(G.eval(), 40, seed=12345, device="cpu"), xg)
