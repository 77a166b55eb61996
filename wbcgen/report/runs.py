"""Report sections for a classifier run and for a GAN run."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from wbcgen.report import html as H
from wbcgen.report.curves import classifier_curves, gan_curves, read_log

#: The papers' headline accuracies (SPEC §4; private or other data sets, 10-fold CV).
PAPER_ACCURACY = {"wnet": 0.97, "wnet-svm": 0.95, "alexnet": 0.84, "vgg16": 0.44, "resnet50": 0.51, "lstm": 0.83,
                  "wbcsnet": 0.961, "wbcsnet2": 0.968}


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def classifier_sections(run: Path) -> tuple[list[str], str]:
    from wbcgen.report.evaluation import _per_class_table

    cfg, res = _json(run / "config.json"), _json(run / "results.json")
    model = res.get("model") or cfg.get("model", "?")
    classes = res.get("classes") or cfg.get("classes") or []
    body = []
    test = res.get("test")
    paper = PAPER_ACCURACY.get(model)
    kpis = [("model", model), ("protocol", (res.get("protocol") or cfg.get("protocol") or {}).get("kind", "?")),
            ("accuracy", H.pct(test["accuracy"]) if test else "–"),
            ("balanced accuracy", H.pct(test["balanced_accuracy"]) if test else "–"),
            ("paper accuracy", H.pct(paper) if paper else "–")]
    body.append("".join(f"<span class=\"kpi\">{H.esc(k)}<b>{H.esc(v)}</b></span>" for k, v in kpis))
    if paper:
        body.append("<p class=\"paper\">Paper numbers: private 6,562-image data (W-Net family) or the WBCsNet "
                    "papers' sets, 10-fold CV — a different data set, shown for orientation only.</p>")
    if test:
        body.append("<h2>Test results</h2>" + _per_class_table(test, classes))
        body.append(H.confusion(test["confusion_matrix"], classes, "ours"))
    else:
        body.append(H.note("This run has no test images (protocol 'train'), so there are no test metrics."))
    folds = res.get("per_fold") or []
    if len(folds) > 1:
        rows = [[f"Fold-{r['fold']}"] + [H.pct(r["per_class_accuracy"].get(c)) for c in classes]
                + [H.pct(r["accuracy"]), H.pct(r["balanced_accuracy"])] for r in folds if "per_class_accuracy" in r]
        body.append("<h2>Per fold (the W-Net paper's Table 9 layout)</h2>"
                    + H.table([""] + [c[:2].upper() + "." for c in classes] + ["Acc.", "Bal. acc."], rows))
    body.append("<h2>Training curves</h2>" + (classifier_curves(run / "log.jsonl", "loss and validation accuracy")
                                              or H.note("no log.jsonl in this run")))
    rec = res.get("recipe") or cfg.get("recipe") or {}
    body.append("<h2>Recipe</h2>" + H.table(["section", "settings"], [[k, json.dumps(v)] for k, v in rec.items()
                                                                      if isinstance(v, dict)], cls="kv"))
    return body, f"wbcgen classifier run — {model}"


# --------------------------------------------------------------------------------- GAN
def _gan_class(run: Path, cfg: dict) -> str | None:
    for k in ("cls", "class", "class_name", "label"):
        if isinstance(cfg.get(k), str):
            return cfg[k]
    from wbcgen.data import CLASSES

    for part in reversed(run.resolve().parts):
        if part in CLASSES:
            return part
    return None


def real_images(run: Path, cfg: dict, cls: str | None, real=None):
    """``(cells, caption)`` — the real cells the GAN report shows — or ``(None, why not)``.

    config.json names the training folder by its basename only (never a local path), so the
    images are found by sha256 against the run's ``train_images.csv``: in ``real`` (the
    folder the user gives, ``wbcgen report --real``), else in a folder of that name under
    the working directory, else in the embedded sample — the last two only when they hold
    every training image. Without a training list (an older run) the ``real`` folder's
    images of the class are shown, and the caption says they may not be the training images.
    """
    from classifiers.runtime import UserError
    from wbcgen.data import load_cells
    from wbcgen.provenance import read_train_images

    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    name = data.get("name") or data.get("source") or data.get("path")
    pre = data.get("preprocessing") or {}
    kw = {k: pre[k] for k in ("crop", "size", "layout") if pre.get(k) is not None}
    classes = [c for c in (cfg.get("classes") or []) if isinstance(c, str)] if cls == "all" else [cls]
    rows = read_train_images(run)
    wanted = {r["sha256"] for r in rows if r.get("label") in classes} if rows is not None else None
    tries = [("given", real)] if real is not None else []
    if real is None and name and Path(str(name)).name == str(name) and Path(str(name)).is_dir():
        tries.append(("found", Path(str(name))))
    if real is None:
        tries.append(("embedded", None))
    for how, src in tries:
        try:
            cells = load_cells(src, progress=False, **kw)
        except UserError as e:
            if how == "given":
                return None, f"real images not shown: {e}"
            continue
        where = "the embedded PBC sample" if src is None else Path(src).name
        if wanted is None:
            if how != "given":
                break
            cells = cells.subset([i for i, m in enumerate(cells.manifest or []) if m.get("label") in classes]) \
                if cells.manifest else cells.of_class(classes[0])
            return cells, f"real {', '.join(classes)} from {where} (the run has no train_images.csv, so these " \
                          "may not be the images it trained on)"
        hit = [i for i, m in enumerate(cells.manifest or []) if m.get("sha256") in wanted]
        n_found = len({cells.manifest[i]["sha256"] for i in hit})
        if hit and (how == "given" or n_found == len(wanted)):
            return cells.subset(hit), (f"real {', '.join(classes)}: {n_found} of the run's {len(wanted)} training "
                                       f"images, found in {where} by sha256 (train_images.csv)")
        if how == "given":
            return None, (f"real images not shown: none of the run's {len(wanted)} training images is in "
                          f"{where}")
    return None, (f"real images not shown: the run names its training folder by name only ({name or 'unknown'}); "
                  "pass `wbcgen report RUN --real FOLDER` to show its training images")


def _real_grid(run: Path, cfg: dict, cls: str | None, real=None, n: int = 16) -> str:
    """A grid of the run's real training images (see :func:`real_images`)."""
    if cls is None:
        return ""
    from wbcgen.evaluate.pictures import grid_png

    cells, caption = real_images(run, cfg, cls, real)
    if cells is None:
        return H.note(caption)
    g = torch.Generator().manual_seed(0)
    if cls == "all":  # a conditional model: a few real cells of each of its classes, one row per class
        parts = [cells.of_class(c) for c in cfg.get("classes") or [] if c in cells.classes]
        imgs = [p.images[torch.randperm(len(p), generator=g)[:8]] for p in parts if len(p)]
        if not imgs:
            return H.note(caption)
        return H.figure(H.img_bytes(grid_png(torch.cat(imgs)), "real cells"), caption)
    if len(cells) == 0:
        return H.note(caption)
    idx = torch.randperm(len(cells), generator=g)[:n]
    return H.figure(H.img_bytes(grid_png(cells.images[idx]), f"real {cls}"), caption)


def _sample_grid(run: Path, cls: str | None) -> str:
    samples = sorted((run / "samples").glob("*.png")) if (run / "samples").is_dir() else []
    if samples:
        return H.figure(H.img_file(samples[-1], f"synthetic {cls}"), f"synthetic {cls or ''} ({samples[-1].name})")
    gen = run / "generator"
    if gen.is_dir():
        try:
            from wbcgen.evaluate.pictures import grid_png
            from wbcgen.gan import generate, load_generator  # type: ignore[attr-defined]

            imgs = generate(load_generator(run), 16, seed=0)
            return H.figure(H.img_bytes(grid_png(imgs), "synthetic"), f"synthetic {cls or ''} (fresh, seed 0)")
        except Exception as e:  # noqa: BLE001 - the report still renders without it
            return H.note(f"could not sample the generator ({type(e).__name__}: {e})")
    return H.note("no samples/ folder and no generator/ in this run")


def gan_sections(run: Path, real=None) -> tuple[list[str], str]:
    cfg = _json(run / "config.json")
    cls = _gan_class(run, cfg)
    rows = []
    for name in ("log.jsonl", "losses.jsonl", "losses.csv", "log.csv"):
        rows = read_log(run / name)
        if rows:
            break
    body = [f"<h2>Real and synthetic {H.esc(cls or '')} cells, side by side</h2>",
            f"<div class=\"pair\">{_real_grid(run, cfg, cls, real)}{_sample_grid(run, cls)}</div>",
            "<h2>Loss curves</h2>", gan_curves(rows)]
    steps = [r.get("step") for r in rows if isinstance(r.get("step"), (int, float))]
    flat = {k: v for k, v in cfg.items() if isinstance(v, (str, int, float, bool)) or v is None}
    nested = {k: json.dumps(v)[:300] for k, v in cfg.items() if isinstance(v, (dict, list))}
    rows_cfg = [[k, v] for k, v in {**flat, **nested}.items()]
    body.append("<h2>Configuration</h2>" + H.table(["key", "value"], rows_cfg, cls="kv"))
    if steps:
        body.append(f"<p class=\"meta\">{len(rows)} log rows, last step {int(max(steps))}.</p>")
    return body, f"wbcgen GAN run — {cls or run.name}"
