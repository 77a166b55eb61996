"""Dose-response: real-test accuracy per class against the synthetic:real ratio.

Every ratio uses the same real training/test splits (same seed), with ``--real-per-class``
setting how scarce real images are; ratio 0 is the real-only baseline. The answer to "how
many synthetic basophils are worth one real one" is read off where a class's curve crosses
the accuracy a larger real set gives.
"""
from __future__ import annotations

from pathlib import Path

from classifiers.runtime import UserError, atomic_write_bytes
from wbcgen.evaluate import regimes
from wbcgen.evaluate.pictures import COLOURS, line_plot_png


def parse_doses(spec) -> list[float]:
    if spec is None or spec == "":
        return []
    try:
        vals = [float(x) for x in (spec.split(",") if isinstance(spec, str) else spec)]
    except ValueError:
        raise UserError(f"--dose takes comma-separated ratios such as 0,0.5,1,2,4, got {spec!r}") from None
    if any(v < 0 for v in vals):
        raise UserError("--dose ratios must be ≥ 0")
    return sorted(set(vals))


def run_dose(pool: regimes.Pool, doses: list[float], *, model: str, recipe: dict, out_dir: Path, folds: int | None,
             holdout: float, real_per_class: int | None, seed: int, progress: bool, device=None,
             keep_weights: bool = False, resume: bool = False) -> dict:
    """Train one regime per ratio (mixed; ratio 0 = real only) and tabulate per-class accuracy.

    Every ratio gets the same number of optimisation steps: a fixed epoch count would give
    larger (more synthetic) training sets more gradient steps and confound the curve. The
    budget is the recipe's epochs over the largest training set, counted in steps as the
    trainer takes them (``T = E · max(1, n_max // batch)``, full batches); every ratio trains
    for exactly ``T`` steps (``epochs_r = ceil(T / steps_per_epoch_r)``, stopped at ``T``).
    """
    import copy

    from classifiers.train import run_protocol

    if len(pool.synthetic) == 0 and any(d > 0 for d in doses):
        raise UserError("--dose needs synthetic images; run `wbcgen sample` first or give --synthetic PATH")
    vf = float(recipe["early_stopping"]["val_fraction"])
    plans = [(r, regimes.build_splits(pool, "mixed" if r > 0 else "real", folds=folds, holdout=holdout, mix_ratio=r,
                                      real_per_class=real_per_class, seed=seed, val_fraction=vf)) for r in doses]
    bs = int(recipe["train"]["batch_size"])
    sizes = {r: max(1, len(splits[0]["train"])) for r, splits in plans}
    # steps per epoch as the trainer counts them, for the smallest fold of each ratio
    per_epoch = {r: min(max(1, len(s["train"]) // bs) for s in splits) for r, splits in plans}
    n_max, base_epochs = max(sizes.values()), int(recipe["train"]["epochs"])
    budget = base_epochs * max(per_epoch.values())
    kind = "train-test" if pool.test is not None else ("cv" if folds else "holdout")
    rows = []
    for r, splits in plans:
        rec = copy.deepcopy(recipe)
        rec["train"]["epochs"] = -(-budget // per_epoch[r])
        rec["train"]["max_steps"] = budget
        run_dir = out_dir / f"ratio-{r:g}"
        res = run_protocol(model, pool.images, pool.labels, classes=pool.classes, recipe=rec, out_dir=run_dir,
                           splits=splits, protocol={"kind": kind, "folds": len(splits), "dose_ratio": r},
                           seed=seed, progress=progress, device=device, overwrite=not resume, resume=resume)
        counts = regimes.split_counts(pool, splits[0])
        test = res["test"]
        rows.append({"ratio": r, "accuracy": test["accuracy"], "balanced_accuracy": test["balanced_accuracy"],
                     "macro_f1": test["macro"]["f1"],
                     "per_class_accuracy": {c: v["recall"] for c, v in test["per_class"].items()},
                     "n_train_real_per_class": counts["real"], "n_train_synthetic_per_class": counts["synthetic"],
                     "epochs": rec["train"]["epochs"], "steps": budget,
                     "steps_run": [f.get("steps_run") for f in res.get("per_fold", [])],
                     "n_train": sizes[r], "run": f"dose/{run_dir.name}"})
        _trim(run_dir, keep_weights)
    classes = list(pool.classes)
    series = {c: [row["per_class_accuracy"][c] for row in rows] for c in classes}
    series["overall"] = [row["balanced_accuracy"] for row in rows]
    png = line_plot_png([row["ratio"] for row in rows], series,
                        title=f"Dose-response: real-test accuracy vs synthetic:real ratio "
                              f"(real per class: {real_per_class or 'all'})",
                        xlabel="synthetic : real images per class", ylabel="accuracy (recall)",
                        colours=dict(zip(classes, COLOURS)))
    atomic_write_bytes(out_dir.parent / "dose_response.png", png)
    return {"ratios": [row["ratio"] for row in rows], "rows": rows, "real_per_class": real_per_class,
            "folds": folds, "holdout": None if folds else holdout, "model": model, "plot": "dose_response.png",
            "definition": "per-class accuracy = recall on held-out real images; overall = balanced accuracy; "
                          "ratio r adds round(r × n_real_c) synthetic images of each class c to the real training "
                          "images (capped at what exists); every ratio trains for the same number of optimisation "
                          f"steps ({budget} = {base_epochs} epochs of the largest training set, {n_max} images, "
                          f"batch {bs}); the real training and validation images are the same at every ratio",
            "steps": budget}


def _trim(run_dir: Path, keep_weights: bool) -> None:
    """Dose runs keep results, logs and their small finished resume state (no weights in it);
    the weights go unless asked for."""
    if not keep_weights:
        (run_dir / "model.safetensors").unlink(missing_ok=True)
