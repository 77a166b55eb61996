"""``wbcgen train-classifier`` and ``wbcgen classify``: the classifier suite on the command line."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import click

from classifiers.runtime import UserError, run_lock
from wbcgen.outputs import refuse_overlap, remove_stub

from .common import data_options, load_from_options, split_options, user_errors

DATA_KEYS = ("layout", "aliases", "label_map", "ignore_unknown", "crop", "size", "cache_dir")


def _data_info(cells, test=None) -> dict:
    info = {"source": Path(cells.source).name, "n": len(cells), "counts": cells.counts(),
            "absent_classes": cells.absent_classes(), "manifest_sha256": cells.manifest_hash(),
            "preprocessing": cells.preprocessing, "skipped": len(cells.skipped)}
    if test is not None:
        info["test"] = {"source": Path(test.source).name, "n": len(test), "counts": test.counts(),
                        "manifest_sha256": test.manifest_hash()}
    return info


@click.command("train-classifier")
@click.option("--model", "model_name", default=None, metavar="NAME",
              help="wnet, wnet-svm, wbcsnet, wbcsnet2, dclnn, alexnet, vgg16, resnet50 or lstm. "
                   "Default: the recipe's model, else wnet.")
@data_options
@click.option("--recipe", default=None, metavar="NAME|FILE",
              help="Recipe name in recipes/ (e.g. wnet-paper) or a TOML file. Default: <model>-cpu.")
@click.option("--folds", type=int, default=None, help="Stratified k-fold cross-validation with K folds.")
@click.option("--test", "test_path", default=None, metavar="PATH",
              help="Train on --data, test on this folder (train/test protocol).")
@click.option("--protocol", type=click.Choice(["cv", "holdout", "train"]), default=None,
              help="Override the recipe's protocol (train = no test set).")
@split_options
@click.option("--per-class", type=int, default=None, metavar="K",
              help="Few-shot protocol: train on K images per class, test on the rest; --folds F draws (default: the recipe's).")
@click.option("--stain-norm", type=click.Choice(["reinhard", "macenko", "mkl", "mkl-lab", "none"]), default=None,
              help="Colour-normalise every image at load time, fitted on --stain-ref (default: --data); saved in the run. "
                   "mkl-lab: one MKL map per lab, fitted on that lab's images (--data is one lab, or each of its top "
                   "folders that holds several classes is one). "
                   "Default: the --init-from run's normaliser, else none.")
@click.option("--stain-ref", default=None, metavar="IMAGE|DIR",
              help="Reference image or folder for --stain-norm (default: the training images of --data).")
@click.option("--splits", "splits_file", default=None, metavar="FILE", hidden=True,
              help="An index-based folds file from an older `wbcgen data split` (cross-validation only).")
@click.option("--epochs", type=int, default=None, help="Override the recipe's epochs.")
@click.option("--batch-size", type=int, default=None, help="Override the recipe's batch size.")
@click.option("--lr", type=float, default=None, help="Override the recipe's (peak) learning rate.")
@click.option("--out", "out", default=None, metavar="DIR",
              help="Run folder. Default: runs/classifiers/<model>.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run in --out.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for splits, init, sampling, augmentation.")
@click.option("--init-from", default=None, metavar="RUN|WEIGHTS",
              help="Start from a trained run folder or .safetensors file (fine-tuning).")
@click.option("--head", type=click.Choice(["linear-svm"]), default=None,
              help="Freeze the trunk and train a multi-class hinge (linear SVM) head on its features.")
@click.option("--imagenet-weights", default=None, metavar="FILE",
              help="Local torchvision ImageNet weights (.pth/.safetensors) for alexnet/vgg16/resnet50; "
                   "nothing is ever downloaded.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def train_classifier_cmd(model_name, recipe, folds, test_path, protocol, split_file, fold, per_class, stain_norm,
                         stain_ref, splits_file, epochs, batch_size, lr, out, resume, overwrite, seed, init_from, head,
                         imagenet_weights, device, quiet, data, **opts):
    """Train a classifier and evaluate it (k-fold CV, hold-out or train/test).

    Writes config.json, model.safetensors, results.json (per-class and macro metrics,
    per-fold table), results.md, confusion_matrix.png, log.jsonl and a checkpoint after
    every epoch (--resume continues an interrupted run).

    \b
    Examples:
      wbcgen train-classifier --model wnet --epochs 2                # embedded sample, quick look
      wbcgen train-classifier --model wnet --data ../shared/data/pbc-dev --recipe wnet-cpu
      wbcgen train-classifier --model wnet --data ../shared/data/pbc-dev --folds 10
      wbcgen train-classifier --model wnet --data pbc --test other-lab --out runs/wnet-tt
      wbcgen train-classifier --model wnet --data ../shared/data/pbc-dev --split pbc-split.json   # its train/test
      wbcgen train-classifier --model wnet --data zheng --label-map 1=neutrophil,2=lymphocyte,3=monocyte,4=eosinophil,5=basophil \\
          --init-from runs/classifiers/wnet --recipe wnet-finetune --out runs/wnet-zheng-ft
      wbcgen train-classifier --model wnet --data zheng --label-map ... --init-from runs/classifiers/wnet --head linear-svm
      wbcgen train-classifier --data zheng --label-map ... --init-from RUN --recipe wnet-fewshot --per-class 20 --folds 3
      wbcgen train-classifier --data pbc --recipe wnet-robust --crop lab --stain-norm mkl-lab   # other labs
    """
    import classifiers
    from classifiers import recipes
    from classifiers.transfer import for_transfer

    if recipe is None:
        name = model_name or "wnet"
        classifiers.model_class(name)  # unknown model names fail here, before any loading
        recipe = recipes.default_recipe_for(name)
    rec = recipes.load_recipe(recipe)
    model_name = model_name or rec["model"]
    classifiers.model_class(model_name)
    if model_name != rec["model"]:
        rec["model_args"] = {}  # the recipe's init args belong to its own network
    rec["model"] = model_name
    if imagenet_weights and init_from:
        raise UserError("use either --init-from or --imagenet-weights, not both")
    init_from = init_from or imagenet_weights
    rec = for_transfer(rec, init_from, head)
    if split_file and (folds is not None or test_path or splits_file or protocol is not None or per_class is not None):
        raise UserError("--split FILE sets the training and test images; drop --folds, --test, --splits, --protocol "
                        "and --per-class (make the split with `wbcgen data split --per-class N` instead)")
    if fold is not None and not split_file:
        raise UserError("--fold needs --split FILE")
    few = per_class is not None or rec["protocol"]["kind"] == "few-shot"
    if per_class is not None and (test_path or protocol is not None):
        raise UserError("--per-class selects the few-shot protocol; it cannot be combined with --test or --protocol")
    if folds is not None and not few and (test_path or protocol not in (None, "cv")):
        raise UserError("--folds selects cross-validation; it cannot be combined with --test or another --protocol")
    if splits_file:
        if few:
            raise UserError("--splits gives cross-validation folds; it cannot be combined with --per-class")
        folds = _splits_folds(splits_file, folds, test_path, protocol)
    rec = recipes.apply_overrides(rec, epochs=epochs, batch_size=batch_size, lr=lr, folds=folds, per_class=per_class,
                                  protocol="few-shot" if few else "cv" if folds is not None else protocol)
    out = Path(out or Path("runs") / "classifiers" / model_name)
    _check_start(out, rec, model_name, device, init_from, data, test_path, opts.get("cache_dir"))
    cells = load_from_options(data, progress=not quiet, **opts)
    if len(cells) == 0:
        raise UserError(f"no images were loaded from {data or 'the embedded sample'}")
    test = load_from_options(test_path, progress=not quiet, **opts) if test_path else None
    if init_from:  # a bad --init-from / --imagenet-weights fails here, before the run folder exists
        from classifiers.registry import create_model
        from classifiers.transfer import load_init

        load_init(create_model(model_name, len(cells.classes), **rec["model_args"]), init_from, cells.classes)
    norm = _stain_norm(stain_norm, stain_ref, init_from, _norm_fit_images(cells, test, rec, split_file, seed), opts,
                       seed)
    if norm is not None:
        cells.images = _normalise_per_lab(norm, cells)
        if test is not None:
            test.images = _normalise_per_lab(norm, test)
    kw = dict(classes=cells.classes, recipe=rec, out_dir=out, seed=seed, init_from=init_from, resume=resume,
              overwrite=overwrite, progress=not quiet, device=device, data_info=_data_info(cells, test),
              stain_norm=norm)
    existed = out.exists()
    try:
        with run_lock(out):
            res, trained = _train(model_name, cells, test, rec, seed, splits_file, split_file, fold, kw)
    except BaseException:
        remove_stub(out, existed)  # a failed start leaves no empty run folder behind
        raise
    if trained is not None:
        record_training_images(out, cells, trained)
    _echo_summary(res, out)


def _train(model_name, cells, test, rec, seed, splits_file, split_file, fold, kw):
    """(results, the training indices of each fold or None) for the chosen protocol."""
    import torch

    from classifiers import train
    from classifiers.splits import stratified_holdout

    everything = torch.arange(len(cells))
    if split_file:
        return _run_split(model_name, cells, split_file, fold, kw)
    if test is not None:
        return train.fit(model_name, cells.images, cells.labels, test=(test.images, test.labels), **kw), [everything]
    if rec["protocol"]["kind"] == "cv":
        splits = _splits(cells, rec["protocol"]["folds"], seed, splits_file)
        res = train.cross_validate(model_name, cells.images, cells.labels, splits=splits, **kw)
        return res, [torch.as_tensor(tr) for tr, _ in splits]
    res = train.run(model_name, cells.images, cells.labels, **kw)
    kind = rec["protocol"]["kind"]
    if kind == "few-shot":  # the draws classifiers.fewshot made (same seed): their union is recorded
        return res, [_few_shot_union(cells, rec, seed)]
    return res, [
        stratified_holdout(cells.labels, float(rec["protocol"]["test_fraction"]), seed)[0]
        if kind == "holdout" else everything]


def _few_shot_union(cells, rec: dict, seed: int):
    """Every image any few-shot draw trained on (``classifiers.fewshot.few_shot_splits`` with
    the run's per-class K, folds and seed): the images behind the run's weights and more."""
    import torch

    from classifiers.fewshot import few_shot_splits

    p = rec["protocol"]
    splits, _ = few_shot_splits(torch.as_tensor(cells.labels, dtype=torch.int64), int(p["per_class"]),
                                int(p["folds"]), seed, len(cells.classes))
    return torch.unique(torch.cat([s["train"] for s in splits]))


def _splits_folds(splits_file, folds, test_path, protocol) -> int:
    """--splits FILE means cross-validation over the file's folds."""
    if test_path or protocol not in (None, "cv"):
        raise UserError("--splits gives cross-validation folds; it cannot be combined with --test or --protocol "
                        f"{protocol}")
    try:
        n = len(json.loads(Path(splits_file).read_text(encoding="utf-8"))["test_folds"])
    except FileNotFoundError:
        raise UserError(f"--splits file {splits_file} does not exist") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read splits file {splits_file} ({type(e).__name__}); make one with "
                        "`wbcgen data split`") from None
    if folds is not None and folds != n:
        raise UserError(f"--folds {folds} does not match the {n} folds in --splits {splits_file}")
    return n


def _check_start(out: Path, rec: dict, model_name: str, device: str, init_from, data, test_path, cache_dir) -> None:
    """Everything that can be checked before images are read or the run folder is made."""
    import classifiers
    from classifiers.runtime import check_batch_memory, pick_device

    dev = pick_device(None if device == "auto" else device)
    h, w = classifiers.model_class(model_name).input_size
    check_batch_memory(int(rec["train"]["batch_size"]), 32 * 4 * 3 * h * w, dev, "--batch-size")
    if init_from and not Path(init_from).exists():
        raise UserError(f"--init-from/--imagenet-weights {init_from} is neither a classifier run folder nor a "
                        "weights file: nothing exists there")
    if cache_dir and Path(cache_dir).exists() and not Path(cache_dir).is_dir():
        raise UserError(f"--cache-dir {cache_dir} is a file, not a folder")
    inputs = {"--data": data, "--test": test_path}
    if init_from and Path(init_from).is_dir():
        inputs["--init-from"] = init_from
    refuse_overlap(out, "--out", inputs)


def record_training_images(out: Path, cells, trained: list) -> None:
    """``<run>/train_images.csv`` (path,sha256,label): the images the saved model trained on
    (its best fold's training + validation images), for evaluate's leakage guard
    (``--classifier RUN``). Written here, not by ``classifiers/``, which knows no manifests."""
    import json

    import torch

    from wbcgen.provenance import image_rows, write_train_images

    if not cells.manifest:
        return
    try:
        best = json.loads((out / "config.json").read_text()).get("best_fold") or 0
    except (OSError, ValueError):
        best = 0
    idx = trained[min(int(best), len(trained) - 1)]
    write_train_images(out, image_rows(cells.subset(torch.sort(torch.as_tensor(idx)).values)))


def _run_split(model_name, cells, split_file, fold, kw) -> dict:
    """Train on the split's train part (its val part, if any, for early stopping) and test on
    its test part; a split with K folds and no --fold runs all K (cross-validation)."""
    import torch

    import classifiers
    from classifiers.data import resize_u8
    from classifiers.train import run_protocol
    from wbcgen.data import load_split, split_indices, split_info

    split = load_split(split_file)
    k = int(split.get("folds") or 1)
    todo = [fold] if fold is not None else list(range(k))
    runs, trained = [], []
    for f in todo:
        idx = split_indices(cells, split, f)
        if len(idx["train"]) == 0 or len(idx["test"]) == 0:
            raise UserError(f"fold {f} of {split_file} has no training or no test images in this data")
        runs.append({"train": idx["train"], "test": idx["test"], **({"val": idx["val"]} if len(idx["val"]) else {})})
        trained.append(torch.cat([idx["train"], idx["val"]]))
    info = split_info(split, split_file, fold, "train")
    kw = dict(kw)
    kw["data_info"] = {**kw["data_info"], "split": info}
    images = resize_u8(cells.images, classifiers.model_class(model_name).input_size)
    protocol = {"kind": "cv" if len(runs) > 1 else "train-test", "folds": len(runs), "split": info}
    return run_protocol(model_name, images, cells.labels, splits=runs, protocol=protocol, **kw), trained


def _norm_fit_images(cells, test, rec, split_file, seed):
    """The images a normaliser without --stain-ref is fitted on: --data, without the hold-out test part of
    the holdout protocol (the split train.holdout draws with the same seed), so no test image shapes it.
    (Cross-validation fits on all of --data: one normaliser serves every fold.)"""
    if test is None and not split_file and rec["protocol"]["kind"] == "holdout":
        from classifiers.splits import stratified_holdout

        keep, _ = stratified_holdout(cells.labels, float(rec["protocol"]["test_fraction"]), seed)
        return cells.images[keep]
    return cells.images


def _stain_norm(method, ref, init_from, fit_images, opts, seed):
    """The colour normaliser of this run: fitted on --stain-ref or ``fit_images`` (from --data),
    inherited from an --init-from run folder, or None."""
    from classifiers import stain

    if method is None:
        if ref:
            raise UserError("--stain-ref needs --stain-norm reinhard, macenko, mkl or mkl-lab")
        if init_from and Path(init_from, "config.json").is_file():
            from classifiers.predict import read_run_config

            return read_run_config(init_from).get("stain_norm") or None
        return None
    if method == "none":
        return None
    if ref:
        from wbcgen.data.load import load_reference, reference_record

        images = load_reference(ref, crop=opts["crop"], size=opts["size"])
    else:
        images = fit_images
    norm = stain.fit(method, images, seed=seed)  # the fitted statistics: all a saved run needs to re-apply it
    # never the local path (a folder name can name a cohort, and configs are pushed to the Hub)
    norm["reference"] = reference_record(ref) if ref else "training data (--data)"
    return norm


def _splits(cells, folds, seed, splits_file):
    """Duplicate-aware stratified folds (exact duplicate images always share a fold)."""
    from wbcgen.data import load_splits, stratified_kfold

    if splits_file:
        return load_splits(splits_file, cells.labels)
    groups = [m.get("sha256", str(i)) for i, m in enumerate(cells.manifest)] if cells.manifest else None
    return stratified_kfold(cells.labels, int(folds), seed, groups=groups)


def _echo_summary(res: dict, out: Path) -> None:
    test = res.get("test")
    if test:
        click.echo(f"accuracy {test['accuracy']:.4f}  balanced accuracy {test['balanced_accuracy']:.4f}  "
                   f"macro F1 {test['macro']['f1']:.4f}  ({test['n']} test images)")
        for c, m in test["per_class"].items():
            rec = "–" if m["recall"] is None else f"{m['recall']:.3f}"
            click.echo(f"  {c:<11} recall {rec}  support {m['support']}")
    click.echo(f"run folder: {out}  (results.json, results.md, confusion_matrix.png, model.safetensors)")


@click.command("classify")
@click.option("--weights", required=True, metavar="RUN_DIR", help="A trained run folder (from train-classifier).")
@data_options
@click.option("--out", "out", default="predictions.csv", show_default=True, metavar="CSV",
              help="Predictions file; results.json is written beside it for labelled data.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--tta/--no-tta", default=None, help="8-view rotation/flip averaging (default: as trained).")
@click.option("--adapt", is_flag=True,
              help="Test-time adaptation to --data's lab: map the network's per-channel activation statistics on "
                   "these images onto those of its training images (AdaBN-style, no labels used; at least 8 "
                   "images of one lab, with a class mix not far from the training set's).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@user_errors
def classify_cmd(weights, out, batch_size, tta, adapt, device, overwrite, data, **opts):
    """Predict the class of every image in --data with a trained classifier.

    Writes a CSV (path, label, predicted, one probability column per class) and, since
    the folder's labels are known, results.json with the same metrics as training.
    A run trained with --stain-norm mkl-lab fits its colour map on each lab's images in --data
    (the folder, or each top folder that holds several classes: zheng2018's Dataset 1 / 2);
    --adapt fits the activation statistics per lab too.

    \b
    Examples:
      wbcgen classify --weights runs/classifiers/wnet                # embedded sample
      wbcgen classify --weights runs/classifiers/wnet --data ../shared/data/pbc-dev --out pbc.csv
      wbcgen classify --weights runs/classifiers/wnet --data synthetic/ --out synth.csv --overwrite
      wbcgen classify --weights runs/classifiers/wnet --data other-lab/ --adapt --out other.csv
      wbcgen classify --weights runs/classifiers/wnet --data ../shared/data/zheng2018 \\
          --label-map 1=neutrophil,2=lymphocyte,3=monocyte,4=eosinophil,5=basophil --adapt   # two labs
    """
    import torch

    import classifiers
    from classifiers import metrics
    from classifiers.runtime import atomic_write_json, atomic_write_text

    out = Path(out)
    results_path = out.parent / "results.json"
    for p in (out, results_path):
        if p.exists() and (p.is_dir() or p.suffix.lower() != (".csv" if p == out else ".json")):
            raise UserError(f"{p} exists and is not a file classify writes, so it is left alone; choose another --out")
        if p.exists() and not overwrite:
            raise UserError(f"{p} already exists; pass --overwrite to replace it")
    pred = classifiers.load_run(weights, device=None if device == "auto" else device, batch_size=batch_size, tta=tta,
                                adapt_stats=adapt)
    cells = load_from_options(data, **opts)
    missing = [c for c, n in cells.counts().items() if n and c not in pred.classes]
    if missing:
        raise UserError(f"the model was not trained on class(es) {', '.join(missing)}")
    y_true = torch.tensor([pred.classes.index(cells.classes[i]) for i in cells.labels.tolist()], dtype=torch.int64)
    labs = _labs(cells) if adapt or (pred.stain_norm or {}).get("method") == "mkl-lab" else {"": range(len(cells))}
    proba = torch.empty(len(cells), len(pred.classes))
    for idx in labs.values():   # one predict call per lab: its stain map and activation statistics
        idx = torch.as_tensor(list(idx), dtype=torch.int64)
        proba[idx] = pred.predict_proba(cells.images[idx])
    y_pred = proba.argmax(1)
    fitted = (f"fitted on these {len(cells)} images as one lab" if len(labs) == 1 else
              "fitted per lab: " + ", ".join(f"{name} ({len(idx)} images)" for name, idx in labs.items()))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "label", "predicted"] + [f"p_{c}" for c in pred.classes])
    for i in range(len(cells)):
        path = cells.manifest[i]["path"] if cells.manifest else str(i)
        w.writerow([path, pred.classes[y_true[i]], pred.classes[y_pred[i]]] + [f"{v:.6f}" for v in proba[i].tolist()])
    atomic_write_text(out, buf.getvalue())
    report = metrics.classification_report(y_true, y_pred, pred.classes)
    atomic_write_json(results_path, {
        "schema": "wbcgen.classifier-results/1", "model": pred.config["model"], "data": _data_info(cells),
        "protocol": {"kind": "predict", "weights": Path(weights).name, "tta": pred.tta,
                     **({"stain_map": f"mkl-lab, {fitted}"} if (pred.stain_norm or {}).get("method") == "mkl-lab" else {}),
                     **({"adapt": f"channel-stats, {fitted}"} if adapt else {})},
        "classes": list(pred.classes),
        "test": report, "per_fold": [],
    })
    click.echo(f"{len(cells)} images: accuracy {report['accuracy']:.4f}, balanced accuracy "
               f"{report['balanced_accuracy']:.4f} -> {out}, {results_path}")


def _normalise_per_lab(norm: dict, cells):
    """``cells.images`` through the run's colour normaliser; ``mkl-lab`` fits its map on each lab of the
    set (:func:`_labs`: zheng2018's two sources are two labs), as ``classify`` does."""
    import torch

    from classifiers.stain import apply

    if norm.get("method") != "mkl-lab":
        return apply(norm, cells.images)
    out = cells.images.clone()
    for idx in _labs(cells).values():
        idx = torch.as_tensor(list(idx), dtype=torch.int64)
        out[idx] = apply(norm, cells.images[idx])
    return out


def _labs(cells) -> dict:
    """The labs of --data (``wbcgen.data.layouts.lab_groups``): top folders that each hold several classes
    are sources, one lab each (zheng2018's ``Dataset 1`` / ``Dataset 2``); otherwise the folder is one lab."""
    from wbcgen.data.layouts import lab_groups

    if not cells.manifest:
        return {"": range(len(cells))}
    return lab_groups([m["path"] for m in cells.manifest], cells.labels.tolist())


def register(group: click.Group) -> None:
    group.add_command(train_classifier_cmd)
    group.add_command(classify_cmd)
