"""Does the TSTR yardstick's classifier recipe decide the W-Net column? (issue 12, session 37)

``bench_quality.py`` trains its TSTR W-Net for 5 epochs of ``wnet-cpu`` (a CPU-sized proxy); ``wbcgen evaluate
--train-on synthetic`` trains the recipe's 20. The synthetic-validation accuracy of the 5-epoch W-Nets is still
rising at epoch 5 (0.77-0.99) and three classifier seeds on one synthetic set spread by up to 20 points. Here a
finished row's synthetic set (``runs/bench-quality/ROW/synthetic``, the row's 1,000 cells per class) is judged
again with another recipe, at the row's classifier seeds, against the same real test part — no generator is
trained, nothing is chosen on the test part (``acq`` and ``e20`` were fixed before either ran; ``last5`` was added
after ``e20`` was seen restoring epoch 2):

- ``e20``  ``wnet-cpu`` at its own 20 epochs: what ``wbcgen evaluate --train-on synthetic`` reports;
- ``acq``  5 epochs of ``bench/recipes/wnet-tstr-acq.toml`` (``wnet-robust``'s acquisition augmentation);
- ``last5`` 5 epochs of ``wnet-cpu`` ending with the LAST epoch's weights (``restore_best = false``): the same
  training as the row's own classifiers (same synthetic validation slice held out, same seeds), only the epoch
  that the synthetic validation slice chose is not restored — is selecting on held-out synthetic cells what
  moves the column?
- ``last20`` 20 epochs of ``wnet-cpu`` ending with the LAST epoch's weights: ``e20`` without its pick — separates
  the long schedule from ``e20``'s epoch-2 restores (added in session 38, after ``e20`` and ``last5``);
- ``base`` 5 epochs of ``wnet-cpu`` (the row's own column, read back from the row when present).

``ROW`` may be ``real``: 1,000 training-part cells per class drawn with replacement (``diag_ceiling.py``'s
ceiling), to check that a variant does not lower what real cells teach.

    python bench/diag_tstr_recipe.py acq fast64x2-bf16-g2-cpu118 fastgan64x2-recon03-g2 real
    python bench/diag_tstr_recipe.py e20 fast64x2-bf16-g2-cpu118
    python bench/diag_tstr_recipe.py last5 fast64x2-bf16-g2-cpu118 fast64x2-b88-g2
    python bench/diag_tstr_recipe.py last20 fast64x2-bf16-g2-cpu118

One line per (variant, row) in bench/diag_tstr_recipe.jsonl; classifier runs under runs/diag-tstr/VARIANT/ROW/
(finished ones are read back, not retrained).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_quality as bq  # noqa: E402
from diag_ceiling import resample  # noqa: E402
from classifiers.recipes import deep_merge  # noqa: E402
from wbcgen.data import load_cells  # noqa: E402
from wbcgen.data.splits import apply_split  # noqa: E402

VARIANTS = {"base": ("wnet-cpu", 5, {}), "e20": ("wnet-cpu", 20, {}),
            "acq": (str(ROOT / "bench" / "recipes" / "wnet-tstr-acq.toml"), 5, {}),
            "last5": ("wnet-cpu", 5, {"early_stopping": {"restore_best": False}}),
            "last20": ("wnet-cpu", 20, {"early_stopping": {"restore_best": False}})}


def variant_recipe(variant: str) -> dict:
    name, epochs, over = VARIANTS[variant]
    return deep_merge(bq.recipe(name, epochs), over)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variant", choices=sorted(VARIANTS))
    ap.add_argument("rows", nargs="+", help="labels under --out (their synthetic/ folder), or 'real'")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-quality"))
    ap.add_argument("--tstr-seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    for row in a.rows:  # every row checked before minutes of loading and training
        if row != "real" and not (out / row / "synthetic").is_dir():
            raise SystemExit(f"{row}: {out / row / 'synthetic'} does not exist (run the row first)")
    cells = load_cells(bq.DATA, progress=False)
    split = bq.the_split(cells, out)
    train, test = apply_split(cells, split, "train"), apply_split(cells, split, "test")
    seeds = list(range(a.tstr_seeds))
    rec = variant_recipe(a.variant)
    for row in a.rows:
        if row == "real":
            idx = resample(train.labels, 1000, seed=0)
            images, labels, base = train.images[idx], train.labels[idx], None
        else:
            syn = load_cells(out / row / "synthetic", progress=False)
            images, labels = syn.images, syn.labels
            res = out / row / "results.json"
            base = json.loads(res.read_text()).get("tstr_wnet") if res.is_file() else None
        t0, load0 = time.time(), os.getloadavg()
        # base: the row's own classifiers (read back, not retrained); the others: their own folders
        runs = out / row if a.variant == "base" and row != "real" else ROOT / "runs" / "diag-tstr" / a.variant / row
        rep = bq.tstr_report("wnet", rec, images, labels, test, runs / "tstr-wnet", seeds, reuse=True)
        line = {"variant": a.variant, "recipe": rec["name"], "epochs": rec["train"]["epochs"], "row": row,
                "n_train": len(images), "n_test": len(test), "tstr_wnet": rep, "base_tstr_wnet": base,
                "minutes": round((time.time() - t0) / 60, 1), "load_average": [load0, os.getloadavg()],
                "commit": bq.commit(), "threads": a.threads}
        paired = bq.paired(rep, base)
        paired = f" paired {paired}" if paired else ""
        print(a.variant, row, "W-Net", bq.tstr_cell(rep), paired, flush=True)
        with open(ROOT / "bench" / "diag_tstr_recipe.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
