"""``wbcgen evaluate``: are synthetic cells useful? One call, one ``results.json``.

>>> from wbcgen.evaluate import run_evaluation
>>> res = run_evaluation("synthetic", real="../shared/data/pbc-dev", synthetic="runs/synthetic",
...                      checks="all", dose="0,0.5,1,2,4", real_per_class=50, out_dir="runs/eval")

Output folder::

    results.json      the classifier suite's results schema for the regime, extended with
                      train_on, n_train_real, n_train_synthetic, generator_sha256, checks,
                      dose_response, paper numbers and compute
    results.md        the headline tables
    train/            the regime's classifier run (classifiers.train.run_protocol)
    reference/        the real-trained W-Net used by checks 1, 3 and the distances
    tstr/             check 2 when the regime is not already "synthetic"
    dose/ratio-R/     one run per dose ratio; dose_response.png
    review-kit/       check 4 (wbcgen review-kit)
    grids/            real and synthetic sample grids per class (for the report)

Every classifier stage keeps its (small, finished) resume state in ``<stage>/checkpoints``,
so ``resume=True`` (``wbcgen evaluate --resume``) after an interruption skips the finished
stages, continues the interrupted one from its last epoch and ends with the same
``results.json`` as an uninterrupted call. A stage whose data, recipe, seed or splits
changed is refused by the classifier suite's fingerprint check.
"""
from __future__ import annotations

import csv
import os
import platform
import sys
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from classifiers.runtime import (UserError, atomic_write_bytes, atomic_write_json, atomic_write_text, pick_device,
                                 run_lock)
from wbcgen.evaluate import checks as _checks
from wbcgen.evaluate import dose as _dose
from wbcgen.evaluate import judges, paper, regimes
from wbcgen.evaluate.pictures import grid_png
from wbcgen.evaluate.summary import headline, results_markdown
from wbcgen.outputs import output_kind, refuse_overlap, remove_stub, write_marker

SCHEMA = "wbcgen.evaluation/1"
OWNED = ("results.json", "results.md", "train", "reference", "tstr", "dose", "review-kit", "grids",
         "dose_response.png", "report.html")


def default_synthetic_path() -> Path:
    """Where ``wbcgen sample`` writes by default (its ``--out`` default, relative to the
    working directory): the synthetic set ``evaluate`` and ``review-kit`` read by default."""
    return Path("runs") / "synthetic"


def generator_hashes(path) -> dict[str, str | list[str]]:
    """``{class: generator sha256}`` read from a ``wbcgen sample`` folder's metadata.csv."""
    meta = Path(path) / "metadata.csv" if path is not None else None
    if meta is None or not meta.is_file():
        return {}
    out: dict[str, set] = {}
    with open(meta, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("generator_sha256"):
                out.setdefault(row.get("label", ""), set()).add(row["generator_sha256"])
    return {k: (sorted(v)[0] if len(v) == 1 else sorted(v)) for k, v in sorted(out.items())}


def _load(src, what: str, progress: bool, load_kw: dict):
    from wbcgen.data import CellSet, load_cells

    if isinstance(src, CellSet):
        return src
    cells = load_cells(src, progress=progress, **load_kw)
    if len(cells) == 0:
        raise UserError(f"the {what} set {src or 'embedded sample'} holds no readable images")
    return cells


def _prepare_out(out: Path, overwrite: bool, resume: bool = False) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"output path {out} is a file, not a folder")
    if resume and overwrite:
        raise UserError("--resume continues an evaluation and --overwrite replaces it; give one of them")
    taken = [p for p in OWNED if (out / p).exists()] + sorted(
        p.name for p in out.glob("train-*") if p.is_dir() and (p / "config.json").is_file())
    if taken and output_kind(out) != "evaluation":
        raise UserError(f"{out} holds {taken[0]} but is not a wbcgen evaluation, so it is left alone; "
                        "choose another --out")
    if resume:
        out.mkdir(parents=True, exist_ok=True)
    elif taken and not overwrite:
        raise UserError(f"{out} already holds an evaluation ({', '.join(taken)}); pass --resume to continue it "
                        "or --overwrite to replace it")
    for p in [] if resume else taken:
        shutil.rmtree(out / p) if (out / p).is_dir() and not (out / p).is_symlink() else (out / p).unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, "evaluation")


def _source_info(cells, path) -> dict:
    # folder basenames and the manifest hash only: a local path can name a patient cohort
    return {"path": Path(path).name if isinstance(path, (str, os.PathLike)) else
            ("embedded PBC sample" if path is None else "(in memory)"),
            "source": Path(cells.source).name if cells.source else None, "n": len(cells), "counts": cells.counts(),
            "image_size": list(cells.image_size),
            "manifest_sha256": cells.manifest_hash() if cells.manifest else None,
            "skipped": len(cells.skipped)}


def _resolve_recipe(model: str, recipe, epochs):
    from classifiers.recipes import apply_overrides, default_recipe_for, load_recipe

    r = load_recipe(recipe if recipe is not None else default_recipe_for(model))
    return apply_overrides(r, epochs=epochs)


def _say(progress: bool, msg: str) -> None:
    """A one-line stage header on stderr (the stages themselves show tqdm bars with ETAs)."""
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(f"wbcgen evaluate: {msg}", file=sys.stderr)


def _folds(folds: int | None, rec: dict) -> int | None:
    """``--folds K`` (≥ 2) → K-fold CV; else the recipe's protocol: its folds for ``cv``,
    ``None`` (one stratified hold-out of ``test_fraction``) for ``holdout``/``train``."""
    if folds is not None:
        if folds < 2:
            raise UserError(f"--folds must be at least 2, got {folds}")
        return int(folds)
    return int(rec["protocol"]["folds"]) if rec["protocol"]["kind"] == "cv" else None


def _write_grids(out: Path, real, synthetic, n: int = 16, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for k, cls in enumerate(real.classes):
        for name, cells in (("real", real), ("synthetic", synthetic)):
            if cells is None:
                continue
            idx = (cells.labels == k).nonzero().flatten()
            idx = idx[torch.randperm(len(idx), generator=g)[:n]]
            if len(idx):
                atomic_write_bytes(out / "grids" / f"{name}_{cls}.png", grid_png(cells.images[idx]))


def run_evaluation(train_on: str = "synthetic", *, real=None, synthetic=None, test_on=None, model: str = "wnet",
                   recipe=None, epochs: int | None = None, folds: int | None = None, mix_ratio: float = 1.0,
                   real_per_class: int | None = None, checks=None, dose=None, classifier=None,
                   inception_weights=None, review_n: int = 10, splits: int = 20, out_dir="runs/evaluate",
                   seed: int = 0, overwrite: bool = False, resume: bool = False, progress: bool = True,
                   device=None, load_kw: dict | None = None, split=None, fold: int | None = None,
                   allow_overlap: bool = False) -> dict:
    """Run one training regime (+ optional checks and dose-response) and write ``results.json``.

    ``real``/``synthetic``/``test_on`` are folders (or CellSets). ``real=None`` is the
    embedded PBC sample; ``synthetic=None`` is :func:`default_synthetic_path`. ``split`` (a
    split file or dict from ``wbcgen data split``, ``fold`` for one with folds) divides
    ``real``: training (and validation) images from its train/val parts, tests on its test
    part. Test and validation images that a generator (or ``classifier``) trained on are
    refused (:mod:`wbcgen.evaluate.leakage`) unless ``allow_overlap``, which records them in
    ``results["leakage"]``. See the module docstring for the output folder and ``resume``.
    """
    t_start = time.time()
    wall: dict[str, float] = {}
    check_list = _checks.parse_checks(checks)
    doses = _dose.parse_doses(dose)
    if train_on not in regimes.REGIMES:
        raise UserError(f"--train-on must be one of {', '.join(regimes.REGIMES)}, got {train_on!r}")
    if mix_ratio < 0:
        raise UserError("--mix-ratio must be ≥ 0")
    if real_per_class is not None and real_per_class < 1:
        raise UserError("--real-per-class must be at least 1")
    if fold is not None and split is None:
        raise UserError("--fold needs --split FILE")
    load_kw = dict(load_kw or {})
    out = Path(out_dir)
    models = judges.parse_models(model)
    model = models[0]
    if len(models) > 1 and recipe is not None:
        raise UserError("--recipe applies to one model; with several --model names each uses its <model>-cpu recipe")
    rec = _resolve_recipe(model, recipe, epochs)
    k_folds = _folds(folds, rec)
    holdout = float(rec["protocol"]["test_fraction"])
    for src, flag in ((real, "--real"), (synthetic, "--synthetic"), (test_on, "--test-on")):
        if isinstance(src, (str, os.PathLike)) and not str(src).startswith("hf://") and not Path(src).is_dir():
            raise UserError(f"{flag} {src} is not a folder")
    need_syn = train_on != "real" or bool(check_list) or any(d > 0 for d in doses)
    syn_path = synthetic
    if synthetic is None and need_syn:
        syn_path = default_synthetic_path()
        if not syn_path.is_dir():
            raise UserError(f"no synthetic images at {syn_path}: run `wbcgen sample` first (after `wbcgen train-gan`), "
                            "or give --synthetic PATH")
    device = pick_device(device)
    if classifier is not None and check_list and any(
            x in check_list for x in ("classify-synthetic", "cosine", "fid")):
        import classifiers

        classifiers.load_run(classifier, device=device)  # not a classifier run → fail before any training
    refuse_overlap(out, "--out", {"--real": real if isinstance(real, (str, os.PathLike)) else None,
                                  "--synthetic": syn_path if isinstance(syn_path, (str, os.PathLike)) else None,
                                  "--test-on": test_on if isinstance(test_on, (str, os.PathLike)) else None})
    existed = out.exists()
    with run_lock(out):
        try:
            _prepare_out(out, overwrite, resume)
            return _evaluate(train_on, out, real, syn_path, test_on, model, rec, k_folds, holdout, mix_ratio,
                             real_per_class, check_list, doses, classifier, inception_weights, review_n, splits,
                             seed, progress, device, epochs, load_kw, wall, t_start, resume,
                             models=models, split=split, fold=fold, allow_overlap=allow_overlap)
        except BaseException:
            remove_stub(out, existed)
            raise


def _evaluate(train_on, out, real, syn_path, test_on, model, rec, k_folds, holdout, mix_ratio, real_per_class,
              check_list, doses, classifier, inception_weights, review_n, splits, seed, progress, device, epochs,
              load_kw, wall, t_start, resume, *, models, split, fold, allow_overlap) -> dict:
    from classifiers.registry import model_class
    from classifiers.train import run_protocol

    t = time.time()
    real_cells = _load(real, "real", progress, load_kw)
    syn_cells = _load(syn_path, "synthetic", progress, load_kw) if syn_path is not None else None
    test_cells = _load(test_on, "test", progress, load_kw) if test_on is not None else None
    split_rec = None
    if split is not None:
        real_cells, test_cells, split_rec = _apply_split(real_cells, test_cells, split, fold)
    wall["load"] = time.time() - t

    pool = regimes.make_pool(real_cells, syn_cells, test_cells, model_class(model).input_size)
    vf = float(rec["early_stopping"]["val_fraction"])
    split_list = regimes.build_splits(pool, train_on, folds=k_folds, holdout=holdout, mix_ratio=mix_ratio,
                                      real_per_class=real_per_class, seed=seed, val_fraction=vf)
    leak = _guard(pool, real_cells, syn_cells, test_cells, syn_path, split_list, train_on, check_list, doses,
                  k_folds, holdout, mix_ratio, real_per_class, seed, vf, classifier, allow_overlap, split_rec)
    t = time.time()
    _say(progress, f"training {model} on {train_on} images ({len(split_list)} split(s))")
    kind = "train-test" if (train_on == "synthetic" or test_cells is not None) else ("cv" if k_folds else "holdout")
    protocol = {"kind": kind, "folds": len(split_list), "train_on": train_on,
                **({"test_fraction": holdout} if kind == "holdout" else {}),
                "test_on": ("split test part" if split_rec else "--test-on set") if test_cells is not None
                else "real images", **({"split": split_rec} if split_rec else {})}
    res = run_protocol(model, pool.images, pool.labels, classes=pool.classes, recipe=rec, out_dir=out / "train",
                       splits=split_list, protocol=protocol, seed=seed, progress=progress, device=device,
                       overwrite=not resume, resume=resume, data_info={"real": Path(real_cells.source).name,
                                                  "synthetic": Path(syn_cells.source).name if syn_cells else None})
    if len(models) > 1:
        _say(progress, f"training the other judges ({', '.join(models[1:])}) on the same splits")
        judge_rows = judges.run_judges(models, judges.summary_row(model, "train", res), real=real_cells,
                                       synthetic=syn_cells, test=test_cells, splits=split_list, protocol=protocol,
                                       epochs=epochs, seed=seed, out=out, progress=progress, device=device,
                                       resume=resume, resolve_recipe=_resolve_recipe)
    wall["regime"] = time.time() - t
    counts = [regimes.split_counts(pool, s) for s in split_list]
    res = {**res, "schema": SCHEMA, "classifier_schema": res.get("schema"), "train_on": train_on,
           "n_train_real": sum(counts[0]["real"].values()),
           "n_train_synthetic": sum(counts[0]["synthetic"].values()),
           "n_train_per_class": counts[0], "n_train_per_split": [
               {"real": sum(c["real"].values()), "synthetic": sum(c["synthetic"].values())} for c in counts],
           "generator_sha256": generator_hashes(syn_path) if syn_cells is not None else {},
           "mix_ratio": mix_ratio if train_on == "mixed" else None, "real_per_class": real_per_class,
           "split": split_rec, "leakage": leak, "models": models,
           "judges": judge_rows if len(models) > 1 else None,
           "sources": {"real": _source_info(real_cells, real),
                       "synthetic": _source_info(syn_cells, syn_path) if syn_cells is not None else None,
                       "test": _source_info(test_cells, test_on) if test_cells is not None else None},
           "train_run": "train", "notes": list(pool.notes), "checks": {}, "paper": paper.ALL}

    if check_list:
        _run_checks(res, check_list, out, real_cells, syn_cells, pool, model, rec, k_folds, classifier,
                    inception_weights, review_n, splits, seed, progress, device, epochs, wall, resume,
                    compare=test_cells if split_rec else None)
    if doses:
        t = time.time()
        _say(progress, f"dose-response at ratios {', '.join(f'{d:g}' for d in doses)}")
        res["dose_response"] = _dose.run_dose(pool, doses, model=model, recipe=rec, out_dir=out / "dose",
                                              folds=k_folds, holdout=holdout, real_per_class=real_per_class, seed=seed,
                                              progress=progress, device=device, resume=resume)
        wall["dose"] = time.time() - t
    _write_grids(out, real_cells, syn_cells, seed=seed)
    res["notes"] = list(dict.fromkeys(pool.notes))
    res.update(headline(res))
    wall["total"] = time.time() - t_start
    res["compute"] = {"device": str(device), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                      "platform": platform.platform(), "torch": torch.__version__, "wall_seconds": wall}
    res["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(out / "results.json", res)
    atomic_write_text(out / "results.md", results_markdown(res))
    return res


def _guard(pool, real_cells, syn_cells, test_cells, syn_path, split_list, train_on, check_list, doses, k_folds,
           holdout, mix_ratio, real_per_class, seed, vf, classifier, allow_overlap, split_rec=None):
    """Every test/validation split this evaluation will use, checked against the training
    lists of the generators and of ``--classifier`` (see :mod:`wbcgen.evaluate.leakage`)."""
    from wbcgen.evaluate import leakage

    if syn_cells is not None and str(syn_path).startswith("hf://"):  # a Hub dataset: its downloaded folder
        syn_path = Path(syn_cells.source)
    shas = [m.get("sha256") for m in real_cells.manifest] + [None] * (len(syn_cells) if syn_cells else 0) + \
        ([m.get("sha256") for m in test_cells.manifest] if test_cells is not None else [])
    # the splits whose classifiers learn from synthetic images: their test/validation images
    # must be ones the generators never saw
    with_syn = list(split_list) if train_on != "real" else []
    if syn_cells is not None and "tstr" in check_list and train_on != "synthetic":
        with_syn += regimes.build_splits(pool, "synthetic", folds=k_folds, seed=seed)
    dose_splits = [s for r in doses if r > 0 for s in regimes.build_splits(
        pool, "mixed", folds=k_folds, holdout=holdout, mix_ratio=r, real_per_class=real_per_class, seed=seed,
        val_fraction=vf)]
    with_syn += dose_splits
    needs_features = any(x in check_list for x in ("classify-synthetic", "cosine", "fid"))
    clf = classifier if (classifier is not None and needs_features) else None
    leak = leakage.guard(shas, pool, with_syn, syn_path, uses_generators=syn_cells is not None and bool(with_syn),
                         allow_overlap=allow_overlap, classifier=clf,
                         compared=pool.test if (split_rec and pool.test is not None) else pool.real,
                         classifier_shas=leakage.classifier_list(clf) if clf else None, notes=pool.notes)
    if isinstance(leak, dict) and syn_cells is not None and (train_on == "mixed" or any(r > 0 for r in doses)):
        extra = leakage.beyond_real_train(shas, pool, split_list if train_on == "mixed" else dose_splits, syn_path)
        if extra is not None:
            leak["beyond_real_train"] = extra
            if extra["n"] and real_per_class is not None:
                pool.notes.append(f"the generators trained on {extra['n']} real images outside the classifier's "
                                  f"{real_per_class}-per-class real training set: the synthetic cells carry "
                                  "information from more real cells than the classifier saw (a split made with "
                                  "`wbcgen data split --per-class N` gives both the same images)")
    return leak


def _apply_split(real_cells, test_cells, split, fold):
    """(training cells = train + val parts, test cells = test part, split record)."""
    from wbcgen.data import load_split, split_indices, split_info

    if test_cells is not None:
        raise UserError("--split sets the test images (its test part); drop --test-on")
    sp = split if isinstance(split, dict) else load_split(split)
    idx = split_indices(real_cells, sp, fold)
    if len(idx["test"]) == 0:
        raise UserError("the split's test part holds none of the real images")
    train = torch.sort(torch.cat([idx["train"], idx["val"]])).values
    return (real_cells.subset(train), real_cells.subset(idx["test"]),
            split_info(sp, None if isinstance(split, dict) else split, fold, "test"))


def _run_checks(res, check_list, out, real_cells, syn_cells, pool, model, rec, k_folds, classifier,
                inception_weights, review_n, splits, seed, progress, device, epochs, wall, resume=False,
                compare=None) -> None:
    """``compare`` (with --split: the test part) is what synthetic images are compared with in
    checks 1/3/fid; the reference W-Net then trains on all of ``real_cells``."""
    from classifiers.train import run_protocol

    c = res["checks"]
    if any(x in check_list for x in ("classify-synthetic", "cosine", "fid")):
        t = time.time()
        _say(progress, "reference W-Net (real-trained) for checks 1, 3 and the distances")
        ref_rec = rec if model == "wnet" else _resolve_recipe("wnet", None, epochs)
        pred, info, held = _checks.reference_classifier(real_cells, out_dir=out / "reference", recipe=ref_rec,
                                                        seed=seed, classifier=classifier, progress=progress,
                                                        device=device, resume=resume, compare=compare)
        c["reference_classifier"] = info
        wall["reference"] = time.time() - t
        t = time.time()
        _say(progress, f"checks: {', '.join(x for x in check_list if x not in ('tstr', 'review'))}")
        if "classify-synthetic" in check_list:
            c["classify_synthetic"] = _checks.classify_synthetic(pred, syn_cells)
        cmp_cells = compare if compare is not None else real_cells
        f_real = pred.features(cmp_cells.images[held])
        f_syn = pred.features(syn_cells.images)
        y_real = cmp_cells.labels[held]
        if "cosine" in check_list:
            c["cosine"] = _checks.cosine(cmp_cells, syn_cells, f_real, y_real, f_syn)
        if "fid" in check_list:
            c["distances"] = _checks.distances(cmp_cells, syn_cells, f_real, y_real, f_syn, ref_info=info,
                                               inception_weights=inception_weights, seed=seed, splits=splits,
                                               progress=progress, device=device)
        wall["checks"] = time.time() - t
    if "tstr" in check_list:
        t = time.time()
        if res["train_on"] != "synthetic":
            _say(progress, "check 2: training on synthetic, testing on real")
        if res["train_on"] == "synthetic":
            c["tstr"] = {"run": "train", "test": res["test"], "same_as_regime": True, "paper": paper.TABLE6}
        else:
            sp = regimes.build_splits(pool, "synthetic", folds=k_folds, seed=seed)
            r = run_protocol(model, pool.images, pool.labels, classes=pool.classes, recipe=rec, out_dir=out / "tstr",
                             splits=sp, protocol={"kind": "train-test", "train_on": "synthetic"}, seed=seed,
                             progress=progress, device=device, overwrite=not resume, resume=resume)
            c["tstr"] = {"run": "tstr", "test": r["test"], "same_as_regime": False, "paper": paper.TABLE6,
                         "n_train_synthetic": len(sp[0]["train"])}
        wall["tstr"] = time.time() - t
    if "review" in check_list:
        from wbcgen.review import make_review_kit

        make_review_kit(real_cells, syn_cells, review_n, out / "review-kit", seed=seed, overwrite=True)
        c["review"] = {"kit": "review-kit", "n_per_class": review_n,
                       "how": "give review-kit/reviewer/ to the expert; then "
                              "`wbcgen review-score review-kit/reviewer/answers.csv review-kit/key.csv`",
                       "paper": paper.TABLE8}
