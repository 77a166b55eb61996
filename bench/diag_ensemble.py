"""Does an ensemble of independently trained GANs make more useful cells? (issue 12)

    python bench/diag_ensemble.py fast64-30min fast64-30min-g1          # label fast64-30min+fast64-30min-g1

Eilertsen et al. (2021, "Ensembles of GANs for synthetic training data generation") found that
classifiers trained on samples pooled from several independently trained GANs beat those
trained on one GAN's samples: every GAN covers a different part of the real distribution.
Here: the finished ``bench_quality.py`` rows named on the command line (each a full generator
set, trained on the same train part with a different GAN seed) give ``n / k`` cells per class
each; the pooled set is judged exactly like a row (check 1, FD ÷ floor, TSTR W-Net and WBCsNet
over 3 seeds) and appended to the table with the rows' CPU minutes SUMMED, so it is compared
at equal CPU time with a single GAN set trained for the sum.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import bench_quality as bq  # noqa: E402
from wbcgen.data import CellSet, load_cells  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402
from wbcgen.gan import find_runs, sample_to_folder  # noqa: E402


def pooled(rows: list[Path], n: int, work: Path, seed: int) -> CellSet:
    """n cells per class: n // k from each row's generators (the first rows take the remainder)."""
    parts = []
    for i, row in enumerate(rows):
        m = n // len(rows) + (1 if i < n % len(rows) else 0)
        d = sample_to_folder(find_runs(row / "gan-runs"), m, work / f"synthetic-{i}", seed=seed + i,
                             overwrite=True, progress=False)
        parts.append(load_cells(d, progress=False))
    return CellSet(images=torch.cat([p.images for p in parts]), labels=torch.cat([p.labels for p in parts]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", nargs="+", help="labels of finished bench_quality rows (OUT/LABEL/gan.json)")
    ap.add_argument("--out", default="runs/bench-quality")
    ap.add_argument("--data", default=str(bq.DATA))
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--tstr-epochs", type=int, default=5)
    ap.add_argument("--tstr-seeds", type=int, default=3)
    ap.add_argument("--real-epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--no-table", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    rows = [out / r for r in a.rows]
    gans = []
    for r in rows:
        if not (r / "gan.json").is_file():
            sys.exit(f"{r} is not a finished bench_quality row (no gan.json)")
        gans.append(json.loads((r / "gan.json").read_text()))
    label = "+".join(a.rows)
    row_dir = out / label
    row_dir.mkdir(parents=True, exist_ok=True)
    res = {"label": f"ensemble {label}", "method": "ensemble", "rows": a.rows, "date": time.strftime("%Y-%m-%d %H:%M"),
           "load_start": bq.load(), "commit": bq.commit(), "threads": a.threads, "n_per_class": a.n,
           "budget_clock": "wall",
           "minutes": sum(round(g["wall_min"]) for g in gans),
           "gan": {"cpu_min": round(sum(g["cpu_min"] for g in gans), 2),
                   "wall_min": round(sum(g["wall_min"] for g in gans), 2), "members": gans}}
    cells = load_cells(a.data, progress=False)
    split = bq.the_split(cells, out)
    train, test = apply_split(cells, split, "train"), apply_split(cells, split, "test")
    res["n_train"], res["n_test"] = len(train), len(test)
    syn = pooled(rows, a.n, row_dir, a.seed)
    res["tstr_epochs"], res["real_epochs"] = a.tstr_epochs, a.real_epochs
    res |= bq.judge(syn, train, test, real_wnet_dir=out / f"real-wnet-e{a.real_epochs}", real_epochs=a.real_epochs,
                    tstr_epochs=a.tstr_epochs, seeds=[a.seed + i for i in range(max(1, a.tstr_seeds))],
                    runs=row_dir, picture_path=ROOT / "bench" / f"quality_ensemble-{label}.png", seed=a.seed,
                    reuse=True, say=lambda j: print(f"[{label}] check 1 {j['check1']}", flush=True))
    res["load_end"] = bq.load()
    (row_dir / "results.json").write_text(json.dumps(res, indent=1))
    if not a.no_table:
        bq.append_row(Path(a.table), res)
    print(json.dumps({k: res[k] for k in ("label", "tstr_wnet", "tstr_wbcsnet", "check1")}, indent=1))


if __name__ == "__main__":
    main()
