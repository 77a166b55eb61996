"""Cross-lab robustness of a W-Net trained on pbc-dev (issue 14): one row per command.

Rows (cumulative): ``wnet-cpu`` (baseline recipe), ``wnet-robust`` (+ stain/blur/JPEG/
scale augmentation), ``cell`` (+ ``--crop cell`` on every dataset), ``stain-norm``
(+ Reinhard normalisation fitted on the pbc-dev training images, applied to every image).
For each row: train on a stratified pbc-dev subset (REDUCED, EQUAL budget for every row:
``--per-class-source`` images per class, ``--epochs``), report its pbc-dev hold-out
accuracy, zero-shot accuracy / balanced accuracy on zheng2018 (400) and bccd-aug
images/TEST (400, no basophil), then the few-shot curve (recipe ``wnet-fewshot``,
K = 5, 10, 20, 50 per class, ``--fs-folds`` seeded draws, tested on the rest).

    python bench/bench_robust.py --row wnet-cpu      # and wnet-robust, cell, stain-norm
    python bench/bench_robust.py --table             # bench/robust_*.json -> markdown table

Data: ../shared/data (WBCGEN_SHARED_DATA overrides). Writes bench/robust_<row>.json and
run folders under runs/bench-robust/<row>/.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WBCGEN_SHARED_DATA", ROOT.parent / "shared" / "data"))
ZHENG_MAP = {"1": "neutrophil", "2": "lymphocyte", "3": "monocyte", "4": "eosinophil", "5": "basophil"}
ROWS = {  # row: (source recipe, crop, stain norm)
    "wnet-cpu": ("wnet-cpu", "auto", None),
    "wnet-robust": ("wnet-robust", "auto", None),
    "cell": ("wnet-robust", "cell", None),
    "stain-norm": ("wnet-robust", "cell", "reinhard"),
}
KS = (5, 10, 20, 50)


def load(crop: str, cache: Path):
    from wbcgen.data import load_cells

    kw = dict(crop=crop, size=128, cache_dir=cache, progress=False)
    pbc = load_cells(DATA / "pbc-dev", **kw)
    zheng = load_cells(DATA / "zheng2018", label_map=ZHENG_MAP, **kw)
    bccd = load_cells(DATA / "bccd-aug" / "images" / "TEST", **kw)
    return pbc, zheng, bccd


def subset(cells, per_class: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    idx = []
    for c in range(len(cells.classes)):
        i = torch.nonzero(cells.labels == c).flatten()
        idx.append(i[torch.randperm(len(i), generator=g)[:per_class]])
    return cells.subset(torch.cat(idx).sort().values)


def zero_shot(run_dir: Path, cells) -> dict:
    from classifiers import load_run, metrics

    pred = load_run(run_dir, device="cpu", tta=False)
    y = pred.predict(cells.images)
    rep = metrics.classification_report(cells.labels, y, cells.classes)
    return {"accuracy": rep["accuracy"], "balanced_accuracy": rep["balanced_accuracy"], "n": rep["n"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", choices=list(ROWS))
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--per-class-source", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--fs-targets", default="zheng2018", help="few-shot curves on these (zheng2018,bccd)")
    ap.add_argument("--fs-folds", type=int, default=1)
    ap.add_argument("--fs-min-steps", type=int, default=40)
    ap.add_argument("--fs-epochs", type=int, default=1)
    ap.add_argument("--ks", default="5,10,20,50", help="few-shot K values")
    ap.add_argument("--out-root", default=str(ROOT / "runs" / "bench-robust"))
    a = ap.parse_args()
    if a.table:
        print(table())
        return
    from classifiers import recipes, stain, train
    from classifiers.fewshot import few_shot

    torch.manual_seed(0)
    recipe_name, crop, norm_method = ROWS[a.row]
    out = Path(a.out_root) / a.row
    t0 = time.time()
    load_start = os.getloadavg()
    pbc, zheng, bccd = load(crop, ROOT / "runs" / "bench-robust" / "cache")
    src = subset(pbc, a.per_class_source)
    rec = recipes.apply_overrides(recipes.load_recipe(recipe_name), epochs=a.epochs, batch_size=a.batch_size)
    rec["eval"]["tta"] = False  # single-view evaluation everywhere (CPU budget), equal for every row
    norm = None
    if norm_method:  # fitted on the source training part only (the hold-out is excluded)
        from classifiers.splits import stratified_holdout

        keep, _ = stratified_holdout(src.labels, rec["protocol"]["test_fraction"], 0)
        norm = stain.fit(norm_method, src.images[keep])
        src.images = stain.apply(norm, src.images)
    res = train.holdout("wnet", src.images, src.labels, classes=src.classes, recipe=rec, out_dir=out / "source",
                        seed=0, overwrite=True, progress=False, device="cpu", stain_norm=norm)
    row = {"row": a.row, "recipe": recipe_name, "crop": crop, "stain_norm": norm_method,
           "budget": {"source_per_class": a.per_class_source, "epochs": a.epochs, "batch_size": a.batch_size, "tta": False, "fs_folds": a.fs_folds,
                      "fs_min_steps": a.fs_min_steps, "fs_epochs": a.fs_epochs, "threads": torch.get_num_threads()},
           "pbc_holdout": {"accuracy": res["test"]["accuracy"], "balanced_accuracy": res["test"]["balanced_accuracy"],
                           "n": res["test"]["n"]},
           "source_seconds": time.time() - t0,
           "crop_fallbacks": {n: sum("crop_fallback" in m for m in c.manifest)
                              for n, c in (("pbc", pbc), ("zheng", zheng), ("bccd", bccd))}}
    fs_rec = recipes.load_recipe("wnet-fewshot")
    fs_rec["train"].update(min_steps=a.fs_min_steps, epochs=a.fs_epochs)
    dest = ROOT / "bench" / f"robust_{a.row}.json"
    save = lambda: dest.write_text(json.dumps(row, indent=1) + "\n")  # noqa: E731 - after every step
    for name, cells in (("zheng2018", zheng), ("bccd", bccd)):
        row[name] = {"zero_shot": zero_shot(out / "source", cells), "few_shot": {}}
        save()
        if name not in a.fs_targets.split(","):
            continue
        images = stain.apply(norm, cells.images)
        for k in [int(v) for v in a.ks.split(",")]:
            r = few_shot("wnet", images, cells.labels, classes=cells.classes, recipe=fs_rec, per_class=k,
                         folds=a.fs_folds, out_dir=out / f"{name}-k{k}", seed=0, init_from=out / "source",
                         overwrite=True, progress=False, device="cpu", stain_norm=norm)
            s = r["fold_summary"] or {m: {"mean": r["test"][m], "std": 0.0} for m in ("accuracy", "balanced_accuracy")}
            row[name]["few_shot"][k] = {"accuracy": s["accuracy"]["mean"], "accuracy_sd": s["accuracy"]["std"],
                                        "balanced_accuracy": s["balanced_accuracy"]["mean"]}
            print(a.row, name, k, row[name]["few_shot"][k], flush=True)
            row["seconds"] = time.time() - t0
            row["load_average"] = {"start": load_start, "end": os.getloadavg()}
            save()
    print(json.dumps(row, indent=1))


def table() -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = ["| row | pbc-dev hold-out acc | zheng2018 zero-shot acc / bal | zheng2018 few-shot K = 5 · 10 · 20 · 50 "
             "(acc / bal) | bccd zero-shot acc / bal | bccd few-shot | time, load avg |",
             "|---|---|---|---|---|---|---|"]
    for r in ROWS:
        f = ROOT / "bench" / f"robust_{r}.json"
        if not f.is_file():
            continue
        d = json.loads(f.read_text())
        cells = [r, pct(d["pbc_holdout"]["accuracy"])]
        for ds in ("zheng2018", "bccd"):
            if ds not in d:
                cells += ["–", "–"]
                continue
            z = d[ds]["zero_shot"]
            cells.append(f"{pct(z['accuracy'])} / {pct(z['balanced_accuracy'])}")
            fs = d[ds]["few_shot"]
            cells.append(" · ".join(f"{pct(fs[str(k)]['accuracy'])} / {pct(fs[str(k)]['balanced_accuracy'])}"
                                    if str(k) in fs else "–" for k in KS))
        la = d.get("load_average", {"start": [float("nan")], "end": [float("nan")]})
        cells.append(f"{d.get('seconds', 0) / 60:.0f} min, {la['start'][0]:.1f}→{la['end'][0]:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
