"""Cross-lab robustness of a classifier (W-Net; resnet18s) trained on pbc-dev (issue 14): one row per command.

Rows (cumulative): ``wnet-cpu`` (baseline recipe), ``wnet-robust`` (+ stain/blur/JPEG/
scale augmentation), ``cell`` (+ ``--crop cell`` on every dataset), ``stain-norm``
(+ Reinhard normalisation fitted on the pbc-dev training images, applied to every image);
variants: ``macenko``/``mkl`` (cell crop) and ``macenko-auto``/``mkl-auto`` (``auto`` crop) per
image, ``mkl-lab`` / ``mkl-lab-cell`` (``auto`` / cell crop, ONE MKL map per lab: zheng2018's two
sources are two labs, fitted on each lab's unlabelled images), ``mkl-lab-mild`` (mkl-lab with the source
augmentation's stain-colour part off: bench/recipes/wnet-robust-mild.toml), ``mkl-lab-scale`` (mkl-lab with
``--crop lab``: each lab's cells at the source's scale, their sizes within the lab kept), ``resnet-lab-scale``
(mkl-lab-scale with the ``resnet18s`` network instead of W-Net: recipe ``resnet18s-robust``; the few-shot
fine-tunes use the source run's network and arguments).
For each row: train on a stratified pbc-dev subset (REDUCED, EQUAL budget for every row:
``--per-class-source`` images per class, ``--epochs``), report its pbc-dev hold-out
accuracy, zero-shot accuracy / balanced accuracy on zheng2018 (400) and bccd-aug
images/TEST (400, no basophil), then the few-shot curve (recipe ``wnet-fewshot``,
K = 5, 10, 20, 50 per class, ``--fs-folds`` seeded draws, tested on the rest).

    python bench/bench_robust.py --row wnet-cpu      # and wnet-robust, cell, stain-norm
    python bench/bench_robust.py --table             # bench/robust_*.json -> markdown table

``--reuse-source`` evaluates a row's finished source run again instead of training it (the
zero-shot fields added later, or few-shot curves after a ``--fs-targets none`` run).

``--budget full`` is the issue's comparison instead: the whole of pbc-dev, the recipes' own
epochs, batch and test-time augmentation, ``wnet-fewshot``'s own schedule with 3 draws per
K, few-shot curves on zheng2018 AND bccd-aug (``--table --budget full`` prints those rows).
Explicit flags override either preset.

Data: ../shared/data (WBCGEN_SHARED_DATA overrides). Writes bench/robust_<row>.json
(bench/robust_full_<row>.json with ``--budget full``) and run folders under
runs/bench-robust/[full/]<row>/.
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
    # variants (2026-12-01): Macenko with each image's own background instead of Reinhard,
    # with and without the cell crop (which rescales a small lymphocyte to a monocyte's size)
    "macenko": ("wnet-robust", "cell", "macenko"),
    "macenko-auto": ("wnet-robust", "auto", "macenko"),
    # MKL: the optimal-transport linear map of optical-density moments (keeps three OD directions)
    "mkl": ("wnet-robust", "cell", "mkl"),
    "mkl-auto": ("wnet-robust", "auto", "mkl"),
    # one MKL map per lab (pooled over its unlabelled images) instead of per image (2026-12-02)
    "mkl-lab": ("wnet-robust", "auto", "mkl-lab"),
    "mkl-lab-cell": ("wnet-robust", "cell", "mkl-lab"),
    # mkl-lab with the source augmentation's stain-colour part off (the map handles stain)
    "mkl-lab-mild": ("bench/recipes/wnet-robust-mild.toml", "auto", "mkl-lab"),
    # mkl-lab with --crop lab: cell-centred squares at each lab's own scale (the lab's median cell
    # size), so another magnification is corrected but a monocyte stays larger than a lymphocyte
    "mkl-lab-scale": ("wnet-robust", "lab", "mkl-lab"),
    # the same with resnet18s (ResNet-18 layout at half width, global pooling) instead of W-Net (session 22)
    "resnet-lab-scale": ("resnet18s-robust", "lab", "mkl-lab"),
}
KS = (5, 10, 20, 50)
# "common" balanced accuracy leaves out classes a target has fewer images of (zheng2018: 4 basophils, so
# each few-shot draw tests 0-1 of them and a fifth of the balanced accuracy rides on one image)
MIN_COMMON = 10
# 0 = the recipe's own value (per_class_source 0: every pbc-dev image); flags given on the command line win
BUDGETS = {
    "reduced": dict(per_class_source=100, epochs=8, batch_size=32, tta=False, fs_targets="zheng2018", fs_folds=1,
                    fs_min_steps=40, fs_epochs=1, out_root=str(ROOT / "runs" / "bench-robust")),
    "full": dict(per_class_source=0, epochs=0, batch_size=0, tta=True, fs_targets="zheng2018,bccd", fs_folds=3,
                 fs_min_steps=0, fs_epochs=0, out_root=str(ROOT / "runs" / "bench-robust" / "full")),
}


def row_recipe(name: str) -> dict:
    """A row's source recipe: a bundled name, or a TOML path relative to the repository."""
    from classifiers import recipes

    return recipes.load_recipe(ROOT / name if name.endswith(".toml") else name)


def result_path(row: str, budget: str, tag: str = "") -> Path:
    """bench/robust_[BUDGET_]ROW[-TAG].json (the reduced budget keeps its 2026-11-30 names)."""
    name = row if budget == "reduced" else f"{budget}_{row}"
    return ROOT / "bench" / f"robust_{name}{'-' + tag if tag else ''}.json"


def load(crop: str, cache: Path):
    from wbcgen.data import load_cells

    kw = dict(crop=crop, size=128, cache_dir=cache, progress=False)
    pbc = load_cells(DATA / "pbc-dev", **kw)
    zheng = load_cells(DATA / "zheng2018", label_map=ZHENG_MAP, **kw)
    bccd = load_cells(DATA / "bccd-aug" / "images" / "TEST", **kw)
    return pbc, zheng, bccd


def source_network(cfg: dict) -> tuple[str, dict]:
    """A source run's network and its init arguments (from its config.json) for a fine-tune of it."""
    return cfg["model"], {k: v for k, v in cfg["model_args"].items() if k != "num_classes"}


def subset(cells, per_class: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    idx = []
    for c in range(len(cells.classes)):
        i = torch.nonzero(cells.labels == c).flatten()
        idx.append(i[torch.randperm(len(i), generator=g)[:per_class]])
    return cells.subset(torch.cat(idx).sort().values)


def sources(cells) -> dict[str, torch.Tensor]:
    """Index sets of a target set's sources when its top folders are sources rather than classes
    (zheng2018: "Dataset 1" / "Dataset 2"); empty when they are its class folders."""
    from wbcgen.data.layouts import lab_groups

    groups = lab_groups([m["path"] for m in cells.manifest], cells.labels.tolist())
    return {} if list(groups) == [""] else {s: torch.tensor(g) for s, g in groups.items()}


def labs(cells) -> list[torch.Tensor]:
    """Index sets of the labs in a target set: each source is a lab (zheng2018's two); a set whose top
    folders are its classes is one lab."""
    return list(sources(cells).values()) or [torch.arange(len(cells))]


def normalise(norm: dict | None, cells) -> torch.Tensor:
    """The target's images through the run's normaliser, lab by lab (``mkl-lab``: one map per lab)."""
    from classifiers import stain

    out = cells.images.clone()
    for g in labs(cells):
        out[g] = stain.apply(norm, cells.images[g])
    return out


def zero_shot(run_dir: Path, cells, tta: bool, adapt_stats: bool = False) -> dict:
    from classifiers import load_run

    pred = load_run(run_dir, device="cpu", tta=tta, adapt_stats=adapt_stats)
    y = torch.empty(len(cells), dtype=torch.int64)
    for g in labs(cells):   # one predict call per lab: an mkl-lab run fits that lab's map from its images
        y[g] = pred.predict(cells.images[g])
    return report(cells, y)


def common_classes(cells) -> list[str]:
    """The target's classes with at least MIN_COMMON images (zheng2018: all but the basophil)."""
    n = torch.bincount(cells.labels, minlength=len(cells.classes)).tolist()
    return [c for c, k in zip(cells.classes, n) if k >= MIN_COMMON]


def common_balanced(recall: dict, keep: list[str]) -> float:
    """Mean recall over the classes in ``keep`` (a run's recall dict may say None for an absent class)."""
    vals = [recall[c] for c in keep if recall.get(c) is not None]
    return sum(vals) / len(vals)


def few_shot_common(result: dict, keep: list[str]) -> float:
    """A few-shot curve point's common balanced accuracy: the mean over its draws."""
    from classifiers.metrics import fold_row

    folds = result.get("per_fold") or [fold_row(0, result["test"])]
    return sum(common_balanced(f["per_class_accuracy"], keep) for f in folds) / len(folds)


def report(cells, y: torch.Tensor) -> dict:
    """Accuracy, balanced accuracy, recall per class, the confusion matrix (rows: true class) and,
    where the top folders are sources rather than classes (zheng2018's Dataset 1/2), accuracy per source."""
    from classifiers import metrics

    rep = metrics.classification_report(cells.labels, y, cells.classes)
    k = len(cells.classes)
    confusion = torch.bincount(cells.labels * k + y, minlength=k * k).view(k, k)   # rows: true class
    by_source = {s: round(float((y == cells.labels)[g].float().mean()), 4) for s, g in sources(cells).items()}
    recall = {c: v["recall"] for c, v in rep["per_class"].items() if v["recall"] is not None}
    keep = common_classes(cells)
    return {"accuracy": rep["accuracy"], "balanced_accuracy": rep["balanced_accuracy"], "n": rep["n"],
            "recall": recall, "balanced_accuracy_common": common_balanced(recall, keep), "common_classes": keep,
            "confusion": confusion.tolist(), "accuracy_by_source": by_source}


def parse(argv=None) -> argparse.Namespace:
    """The command line, with ``--budget``'s preset filling every flag left out (``a.tta`` too)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", choices=list(ROWS))
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--budget", choices=list(BUDGETS), default="reduced",
                    help="reduced: the 2026-11-30 equal small budget; full: whole pbc-dev, recipe schedules")
    ap.add_argument("--per-class-source", type=int, help="pbc-dev images per class (full: all)")
    ap.add_argument("--epochs", type=int, help="source epochs (full: the recipe's)")
    ap.add_argument("--batch-size", type=int, help="source batch (full: the recipe's)")
    ap.add_argument("--fs-targets", help="few-shot curves on these (zheng2018,bccd)")
    ap.add_argument("--fs-folds", type=int, help="draws per K")
    ap.add_argument("--fs-min-steps", type=int, help="few-shot optimizer steps at least (full: the recipe's)")
    ap.add_argument("--fs-epochs", type=int, help="few-shot epochs (full: the recipe's)")
    ap.add_argument("--ks", default="5,10,20,50", help="few-shot K values")
    ap.add_argument("--fs-recipe", default="wnet-fewshot",
                    help="few-shot recipe (name or TOML); another than wnet-fewshot writes its own curve: run folders "
                         "TARGET-kK-STEM, bench/robust_[full_]ROW[-TAG]-STEM.json, the row's source reused")
    ap.add_argument("--out-root", help="run folders (default runs/bench-robust[/full])")
    ap.add_argument("--reuse-source", action="store_true",
                    help="do not train: evaluate the row's finished source run (same --budget/--tag) again")
    ap.add_argument("--adapt", action="store_true",
                    help="zero shot with test-time adaptation (activation statistics fitted per lab); results "
                         "bench/robust_[full_]ROW[-TAG]-adapt.json, no few-shot curves")
    ap.add_argument("--source-seed", type=int, default=0,
                    help="the source W-Net's training seed (its pbc-dev hold-out stays split seed 0); give a --tag")
    ap.add_argument("--tag", default="", help="a variant's name: bench/robust_[full_]ROW-TAG.json, run folder ROW-TAG")
    a = ap.parse_args(argv)
    if not a.table and not a.row:
        ap.error("give --row ROW or --table")
    if a.adapt:
        a.fs_targets = "none"   # adaptation is a zero-shot technique; the few-shot curves are the row's own
    if a.source_seed and not a.tag:
        ap.error("--source-seed: add --tag (e.g. s1) so the seed-0 row's results are kept")
    if a.fs_recipe != "wnet-fewshot" and not a.reuse_source:
        ap.error("--fs-recipe measures another few-shot curve from the row's finished source: add --reuse-source")
    for key, value in BUDGETS[a.budget].items():  # reduced: single view everywhere (CPU budget);
        if getattr(a, key, None) is None:        # full: the recipes' own evaluation and schedules
            setattr(a, key, value)
    return a


def main() -> None:
    a = parse()
    if a.table:
        print(table(a.budget, a.tag, a.out_root))
        return
    tta = a.tta
    from bench_quality import commit
    from classifiers import recipes, stain, train
    from classifiers.fewshot import few_shot
    from classifiers.transfer import for_transfer

    torch.manual_seed(0)
    recipe_name, crop, norm_method = ROWS[a.row]
    out = Path(a.out_root) / (a.row + (f"-{a.tag}" if a.tag else ""))
    if a.reuse_source and not (out / "source" / "results.json").is_file():
        raise SystemExit(f"--reuse-source: {out / 'source'} is not a finished source run")
    t0 = time.time()
    load_start = os.getloadavg()
    pbc, zheng, bccd = load(crop, ROOT / "runs" / "bench-robust" / "cache")
    src = subset(pbc, a.per_class_source) if a.per_class_source else pbc
    rec = recipes.apply_overrides(row_recipe(recipe_name), epochs=a.epochs or None,
                                  batch_size=a.batch_size or None)
    rec["eval"]["tta"] = rec["eval"]["tta"] and tta
    norm = None
    if norm_method and not a.reuse_source:  # fitted on the source training part only (the hold-out is excluded)
        from classifiers.splits import stratified_holdout

        keep, _ = stratified_holdout(src.labels, rec["protocol"]["test_fraction"], 0)
        norm = stain.fit(norm_method, src.images[keep])
        src.images = stain.apply(norm, src.images)
    # what `train-classifier --init-from RUN --recipe wnet-fewshot` trains with: transfer.lr (3e-4), not the
    # from-scratch lr (rows measured before 2026-12-02 fine-tuned at the recipe's 1.5e-3)
    fs_rec = for_transfer(recipes.load_recipe(a.fs_recipe), init_from=out / "source")
    variant = "" if a.fs_recipe == "wnet-fewshot" else Path(a.fs_recipe).stem  # another few-shot recipe's curve
    fs_rec["train"].update({k: v for k, v in (("min_steps", a.fs_min_steps), ("epochs", a.fs_epochs)) if v})
    if a.reuse_source:  # evaluate the row's finished source run again (new zero-shot fields, few-shot curves)
        res = json.loads((out / "source" / "results.json").read_text())
    else:
        res = train.holdout(rec["model"], src.images, src.labels, classes=src.classes, recipe=rec, out_dir=out / "source",
                            seed=a.source_seed, split_seed=0, overwrite=True, progress=False, device="cpu", stain_norm=norm)
    src_cfg = json.loads((out / "source" / "config.json").read_text())
    if a.reuse_source:
        norm = src_cfg.get("stain_norm") or None
    model, fs_rec["model_args"] = source_network(src_cfg)   # the fine-tunes' network and arguments are the source's
    row = {"row": a.row, "tag": a.tag, "recipe": recipe_name, "crop": crop, "stain_norm": norm_method,
           "budget": {"name": a.budget, "source_per_class": a.per_class_source or "all",
                      "epochs": rec["train"]["epochs"], "batch_size": rec["train"]["batch_size"], "tta": tta,
                      "fs_folds": a.fs_folds, "fs_min_steps": fs_rec["train"]["min_steps"], "fs_lr": fs_rec["train"]["lr"],
                      "fs_epochs": fs_rec["train"]["epochs"], "fs_recipe": a.fs_recipe,
                      "threads": torch.get_num_threads()},
           "commit": commit(), "source_n": len(src), "source_seed": a.source_seed,
           "pbc_holdout": {"accuracy": res["test"]["accuracy"], "balanced_accuracy": res["test"]["balanced_accuracy"],
                           "n": res["test"]["n"]},
           "source_seconds": res["timing"]["seconds"] if a.reuse_source else time.time() - t0,
           "source_reused": a.reuse_source,
           "crop_fallbacks": {n: sum("crop_fallback" in m for m in c.manifest)
                              for n, c in (("pbc", pbc), ("zheng", zheng), ("bccd", bccd))}}
    if a.adapt:
        from classifiers import adapt
        from classifiers.splits import stratified_holdout

        keep, held = stratified_holdout(src.labels, rec["protocol"]["test_fraction"], 0)
        if "activation_stats" not in src_cfg:
            adapt.record_run(out / "source", src.images[keep])   # a source trained before they were recorded
        row["adapt"] = adapt.METHOD
        pbc_held = zero_shot(out / "source", src.subset(held), tta, adapt_stats=True)   # its own lab, adapted
        row["pbc_holdout_adapted"] = {k: pbc_held[k] for k in ("accuracy", "balanced_accuracy", "n")}
    dest = result_path(a.row, a.budget, "-".join(filter(None, (a.tag, variant, "adapt" if a.adapt else ""))))
    before = _previous(dest) if a.reuse_source else {}

    def save():  # after every step, atomically
        row["seconds"] = time.time() - t0
        row["load_average"] = {"start": load_start, "end": os.getloadavg()}
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_text(json.dumps(row, indent=1) + "\n")
        os.replace(tmp, dest)
    for name, cells in (("zheng2018", zheng), ("bccd", bccd)):
        row[name] = {"zero_shot": zero_shot(out / "source", cells, tta, a.adapt), "few_shot": {}}
        if name not in a.fs_targets.split(","):  # --reuse-source keeps the curve an earlier run measured
            row[name]["few_shot"] = (before.get(name) or {}).get("few_shot") or {}
            save()
            continue
        save()
        images = normalise(norm, cells)
        for k in [int(v) for v in a.ks.split(",")]:
            runs = out / f"{name}-k{k}{'-' + variant if variant else ''}"
            r = few_shot(model, images, cells.labels, classes=cells.classes, recipe=fs_rec, per_class=k,
                         folds=a.fs_folds, out_dir=runs, seed=0, init_from=out / "source",
                         overwrite=True, progress=False, device="cpu", stain_norm=norm)
            s = r["fold_summary"] or {m: {"mean": r["test"][m], "std": 0.0} for m in ("accuracy", "balanced_accuracy")}
            row[name]["few_shot"][k] = {"accuracy": s["accuracy"]["mean"], "accuracy_sd": s["accuracy"]["std"],
                                        "balanced_accuracy": s["balanced_accuracy"]["mean"],
                                        "balanced_accuracy_common": few_shot_common(r, common_classes(cells))}
            print(a.row, name, k, row[name]["few_shot"][k], flush=True)
            save()
    print(json.dumps(row, indent=1))


def _previous(path: Path) -> dict:
    """The row's earlier JSON (``--reuse-source`` keeps the few-shot curves of targets it does not redo)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def zheng_common(d: dict, budget: str, tag: str, out_root: str | None = None) -> str:
    """zheng2018's common balanced accuracy, zero shot · K = 5 · 10 · 20 · 50, from the row's JSON; rows
    measured before the field existed get it from their zero-shot confusion and their few-shot run folders
    (under ``out_root``, default the budget's)."""
    z = d["zheng2018"]["zero_shot"]
    if "confusion" not in z:
        return "–"
    counts = [sum(r) for r in z["confusion"]]   # rows: true class, in the order of the recall dict
    keep = z.get("common_classes") or [c for c, n in zip(z["recall"], counts) if n >= MIN_COMMON]
    zero = z.get("balanced_accuracy_common", common_balanced(z["recall"], keep))
    out = Path(out_root or BUDGETS[budget]["out_root"]) / (d["row"] + (f"-{tag}" if tag else ""))
    curve = []
    for k in KS:
        v = (d["zheng2018"]["few_shot"].get(str(k)) or {}).get("balanced_accuracy_common")
        f = out / f"zheng2018-k{k}" / "results.json"
        if v is None and str(k) in d["zheng2018"]["few_shot"] and f.is_file():
            v = few_shot_common(json.loads(f.read_text()), keep)
        curve.append("–" if v is None else f"{100 * v:.1f}")
    return f"{100 * zero:.1f} · " + " · ".join(curve)


def table(budget: str = "reduced", tag: str = "", out_root: str | None = None) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = ["| row | pbc-dev hold-out acc | zheng2018 zero-shot acc / bal | zheng2018 few-shot K = 5 · 10 · 20 · 50 "
             f"(acc / bal) | zheng2018 bal over classes with ≥ {MIN_COMMON} images, zero shot · K = 5 · 10 · 20 · 50 "
             "| bccd zero-shot acc / bal | bccd few-shot | time, load avg |",
             "|---|---|---|---|---|---|---|---|"]
    for r in ROWS:
        f = result_path(r, budget, tag)
        if not f.is_file():
            continue
        d = json.loads(f.read_text())
        cells = [r, pct(d["pbc_holdout"]["accuracy"])]
        for ds in ("zheng2018", "bccd"):
            if ds not in d:
                cells += ["–", "–"] + ["–"] * (ds == "zheng2018")
                continue
            z = d[ds]["zero_shot"]
            cells.append(f"{pct(z['accuracy'])} / {pct(z['balanced_accuracy'])}")
            fs = d[ds]["few_shot"]
            cells.append(" · ".join(f"{pct(fs[str(k)]['accuracy'])} / {pct(fs[str(k)]['balanced_accuracy'])}"
                                    if str(k) in fs else "–" for k in KS))
            if ds == "zheng2018":
                cells.append(zheng_common(d, budget, tag, out_root))
        la = d.get("load_average", {"start": [float("nan")], "end": [float("nan")]})
        cells.append(f"{d.get('seconds', 0) / 60:.0f} min, {la['start'][0]:.1f}→{la['end'][0]:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
