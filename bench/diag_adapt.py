"""Which activations to adapt, and how (issue 14, session 18): the probe behind ``classify --adapt``.

For a finished ``bench_robust.py --budget full`` row's source W-Net: zero-shot accuracy on zheng2018
(per source = per lab) and bccd-aug, and on pbc-dev's own hold-out, with the lab's per-channel
activation statistics mapped onto the source's at chosen layers (sequentially, each layer measured
with the earlier ones corrected; statistics over the 8 rotations/flips; source statistics over
pbc-dev's whole training part). Modes: ``none``; ``c1``/``c2``/``c3`` (one conv block's output),
``c123`` (the three conv blocks — what ``classify --adapt`` does); suffix ``-std`` maps mean and std,
without it the mean only.

    python bench/diag_adapt.py mkl-lab-scale none,c1,c3,c123,c123-std      # ~15 min, 2 threads
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_robust as br  # noqa: E402
from classifiers import adapt, load_run  # noqa: E402
from classifiers.splits import stratified_holdout  # noqa: E402
from classifiers.stain import for_set  # noqa: E402
from wbcgen.data import load_cells  # noqa: E402

LAYERS = {"c1": [0], "c2": [1], "c3": [2], "c123": [0, 1, 2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("row")
    ap.add_argument("modes", help="comma-separated: none, c1, c2, c3, c123, each optionally -std")
    ap.add_argument("--out-root", default="runs/bench-robust")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = json.loads(br.result_path(a.row, "full").read_text())
    kw = dict(crop=res["crop"], size=128, cache_dir=Path(a.out_root) / "cache", progress=False)
    pbc = load_cells(br.DATA / "pbc-dev", **kw)
    z = load_cells(br.DATA / "zheng2018", label_map=br.ZHENG_MAP, **kw)
    bccd = load_cells(br.DATA / "bccd-aug" / "images" / "TEST", **kw)
    pred = load_run(Path(a.out_root) / "full" / a.row / "source", device="cpu", tta=True)
    model = pred.model
    layers = adapt.stat_layers(model)   # W-Net's three conv blocks
    keep, held = stratified_holdout(pbc.labels, 0.2, 0)

    def batches(images):
        return pred._batches(images, for_set(pred.stain_norm, images))

    t = time.time()
    src = adapt._moments(model, layers, batches(pbc.images[keep]), [0, 1, 2])
    print(f"source statistics: {time.time() - t:.0f} s", flush=True)

    def fixes_for(images, mode):
        if mode == "none":
            return None
        fixes: list = [None] * 3
        for i in LAYERS[mode.split("-")[0]]:
            mu_t, sd_t = adapt._moments(model, layers, batches(images), [i], fixes)[i]
            mu_s, sd_s = src[i]
            s = (sd_s / sd_t.clamp_min(1e-4)) if mode.endswith("-std") else torch.ones_like(mu_s)
            fixes[i] = (s, mu_s - s * mu_t)
        return fixes

    def evaluate(name, cells, groups):
        for mode in a.modes.split(","):
            y = torch.empty(len(cells), dtype=torch.int64)
            for g in groups:
                with adapt._hooks(layers, fixes_for(cells.images[g], mode)):
                    y[g] = pred.predict(cells.images[g])
            r = br.report(cells, y)
            print(f"{name:8s} {mode:8s} acc {r['accuracy']:.3f} bal {r['balanced_accuracy']:.3f} "
                  f"4-class {r['balanced_accuracy_common']:.3f} {r['accuracy_by_source']} "
                  + " ".join(f"{c[:2]} {v:.2f}" for c, v in r["recall"].items()), flush=True)

    evaluate("zheng", z, br.labs(z))
    evaluate("bccd", bccd, br.labs(bccd))
    evaluate("pbc-held", pbc.subset(held), [torch.arange(len(held))])


if __name__ == "__main__":
    main()
