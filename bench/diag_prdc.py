"""Fidelity or diversity? (issue 12, session 41): precision / recall / density / coverage of one GAN run's cells.

For each run folder given (a per-class run, e.g. a ``bench_curve.py`` member under
``runs/bench-quality/curve-runs/gan/<class>/<run>``), its latest checkpoint's EMA generator (``--weights G``: the
raw generator) draws ``-n`` cells, judged against the class's real TEST cells of bench_quality's split (neither
the GAN nor the judge saw them) in two feature spaces:

* the train-part W-Net of bench_quality (``OUT/real-wnet-e8``): check 1, FD ÷ floor and PRDC — what a row records;
* the fixed random-conv features of the GAN's selection proxy (``wbcgen.gan.quality``): PRDC in features that no
  classifier shaped (a classifier's features squeeze images unlike its training images together, which reads
  as low diversity).

PRDC at matched sizes with the real-vs-real floor (``wbcgen.metrics.prdc_report``, 10 half-splits). One JSON line
per run in ``--json``; a 16-cell grid per run in ``--grids``.

    python bench/diag_prdc.py runs/bench-quality/curve-runs/gan/basophil/curve-fast64x2-member-s0
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_quality as bq  # noqa: E402
from classifiers.runtime import load_checkpoint  # noqa: E402
from wbcgen.data import CLASSES, load_cells  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402
from wbcgen.gan import Generator, generate, quality  # noqa: E402
from wbcgen.gan.runs import read_run_config, save_grid  # noqa: E402
from wbcgen.metrics import prdc_means, prdc_report  # noqa: E402


def judge_run(run: Path, weights: str, pred, test, n: int) -> tuple[dict, torch.Tensor]:
    meta = read_run_config(run)
    k = CLASSES.index(meta["cls"])
    ck = load_checkpoint(run / "checkpoints" / "latest.safetensors")
    G = Generator(meta["gan"])
    G.load_state_dict(ck[weights])
    x = generate(G.eval(), n, seed=12345, device="cpu")  # bench_curve's latents
    real = test.images[test.labels == k]
    d = bq.class_distance(pred.features(real).double(), pred.features(x).double(), k)
    q = prdc_report(quality.features(real).double(), quality.features(x).double(), seed=k, splits=10)
    rec = {"run": str(run), "class": meta["cls"], "config": meta["gan"]["name"], "weights": weights,
           "step": int(ck["step"]), "check1": round(float((pred.predict(x) == k).float().mean()), 4),
           "fd_ratio": d["fd_ratio"], "prdc_wnet": d.get("prdc_matched"), "prdc_wnet_floor": d.get("prdc_floor"),
           "prdc_randconv": prdc_means(q["matched"]), "prdc_randconv_floor": prdc_means(q["floor"])}
    return rec, x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--weights", choices=("ema", "G"), default="ema")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench-quality", help="bench_quality's folder (split.json, real-wnet-e8)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "diag_prdc.jsonl"))
    ap.add_argument("--grids", default="runs/diag-prdc")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    cells = load_cells(bq.DATA, progress=False)
    split = bq.the_split(cells, out)
    train, test = apply_split(cells, split, "train"), apply_split(cells, split, "test")
    pred, _ = bq.real_wnet(train, test, out / "real-wnet-e8", 8, 0)
    for run in a.runs:
        rec, x = judge_run(run, a.weights, pred, test, a.n)
        rec |= {"load": bq.load(), "commit": bq.commit()}
        print(json.dumps(rec), flush=True)
        with open(a.json, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        Path(a.grids).mkdir(parents=True, exist_ok=True)
        save_grid(x[:16].float() / 255, Path(a.grids) / f"{run.parent.name}_{run.name}_{a.weights}.png")


if __name__ == "__main__":
    main()
