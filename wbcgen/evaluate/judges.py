"""More than one judge: ``evaluate --model wnet,wbcsnet`` trains every named classifier on
the same training/validation/test splits and reports each side by side. Synthetic cells
that help only one architecture are not what a lab needs."""
from __future__ import annotations

from classifiers.runtime import UserError


def parse_models(spec: str | list | tuple) -> list[str]:
    """``"wnet,wbcsnet"`` → ``["wnet", "wbcsnet"]`` (registry names, checked, no repeats)."""
    from classifiers.registry import model_class

    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    if not names:
        raise UserError("--model needs a classifier name, e.g. wnet or wnet,wbcsnet")
    for n in names:
        model_class(n)  # unknown model → clear error before any work
    return list(dict.fromkeys(names))


def summary_row(model: str, run: str, res: dict) -> dict:
    t = res.get("test") or {}
    return {"model": model, "run": run, "recipe": (res.get("protocol") or {}).get("recipe"),
            "accuracy": t.get("accuracy"), "balanced_accuracy": t.get("balanced_accuracy"),
            "macro_f1": (t.get("macro") or {}).get("f1"),
            "per_class_accuracy": {c: v.get("recall") for c, v in (t.get("per_class") or {}).items()}}


def run_judges(models: list[str], first: dict, *, real, synthetic, test, splits, protocol: dict, epochs, seed: int,
               out, progress: bool, device, resume: bool, resolve_recipe) -> list[dict]:
    """The first model's row (already trained) plus one run per further model, in
    ``out/train-<model>/``, on exactly the same index splits."""
    from classifiers.registry import model_class
    from classifiers.train import run_protocol
    from wbcgen.evaluate import regimes

    rows = [first]
    for m in models[1:]:
        pool = regimes.make_pool(real, synthetic, test, model_class(m).input_size)
        rec = resolve_recipe(m, None, epochs)
        res = run_protocol(m, pool.images, pool.labels, classes=pool.classes, recipe=rec, out_dir=out / f"train-{m}",
                           splits=splits, protocol={**protocol, "judge": m}, seed=seed, progress=progress,
                           device=device, overwrite=not resume, resume=resume)
        rows.append(summary_row(m, f"train-{m}", res))
    return rows
