"""The one training loop for every classifier, and the evaluation protocols around it.

``fit`` (train[/val][/test]), ``cross_validate`` (stratified k-fold), ``holdout``,
``classifiers.fewshot.few_shot`` (K per class) and ``run`` (dispatch on the recipe's protocol) all end in :func:`run_protocol`, which trains
one model per split with :func:`_train_split` and writes the run folder:

    config.json  model.safetensors  results.json  results.md  confusion_matrix.png
    log.jsonl    checkpoints/latest.safetensors

A checkpoint is written atomically after every epoch (model, optimizer, scheduler, scaler,
RNG states, sampler generator, epoch, fold, split indices, early-stopping state, finished
folds), so ``resume=True`` continues exactly where an interrupted run stopped.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from classifiers import metrics
from classifiers.data import BatchAugment, channel_stats, check_images, epoch_order, resize_u8, to_float
from classifiers.optim import build_optimizer, build_scheduler, loss_fn
from classifiers.predict import tta_logits
from classifiers.recipes import load_recipe
from classifiers.registry import create_model, model_args, model_class
from classifiers.runtime import (LOCK_NAME, CheckpointError, UserError, atomic_write_json, atomic_write_text, autocast,
                                 load_checkpoint, pick_device, rng_state, save_checkpoint, save_safetensors_atomic,
                                 seed_everything, set_rng_state)
from classifiers.splits import stratified_holdout, stratified_kfold
from classifiers.stainaug import KEYS as STAIN_KEYS
from classifiers.transfer import load_init

CKPT = "checkpoints/latest.safetensors"
ARTEFACTS = ("config.json", "model.safetensors", "results.json", "results.md", "confusion_matrix.png",
             "log.jsonl", CKPT)
SCHEMA = "wbcgen.classifier-results/1"


# ----------------------------------------------------------------------------- entry points
def fit(model_name: str, images_u8: torch.Tensor, labels, *, classes, recipe, out_dir, val=None, test=None,
        **kw) -> dict:
    """Train on (images_u8, labels); ``val``/``test`` are optional (images, labels) pairs.
    Without ``val`` a stratified ``early_stopping.val_fraction`` slice of the training set is used.
    The recipe is used as given, also with ``init_from``: fine-tuning at the recipe's ``transfer.lr`` (what
    ``train-classifier --init-from`` does) is ``recipe=classifiers.transfer.for_transfer(recipe, init_from)``."""
    recipe = _recipe(recipe)
    size = model_class(model_name).input_size
    parts = [(images_u8, labels)] + [p for p in (val, test) if p is not None]
    for im, lb in parts:
        check_images(im, lb)
    images = torch.cat([resize_u8(im, size) for im, _ in parts])
    labels_all = torch.cat([torch.as_tensor(lb, dtype=torch.int64) for _, lb in parts])
    bounds = torch.cumsum(torch.tensor([0] + [len(lb) for _, lb in parts]), 0).tolist()
    rng = [torch.arange(bounds[i], bounds[i + 1]) for i in range(len(parts))]
    split = {"train": rng[0], "val": rng[1] if val is not None else None,
             "test": rng[-1] if test is not None else None}
    protocol = {"kind": "train-test" if test is not None else "train"}
    return run_protocol(model_name, images, labels_all, classes=classes, recipe=recipe, out_dir=out_dir,
                        splits=[split], protocol=protocol, **kw)


def cross_validate(model_name: str, images_u8: torch.Tensor, labels, *, classes, recipe, out_dir,
                   folds: int | None = None, seed: int = 0, splits=None, **kw) -> dict:
    """Stratified k-fold CV (default: the recipe's ``protocol.folds``). ``splits`` may give
    precomputed (train_idx, test_idx) pairs instead."""
    recipe = _recipe(recipe)
    check_images(images_u8, labels)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    k = int(folds or recipe["protocol"]["folds"])
    splits = splits if splits is not None else stratified_kfold(labels, k, seed)
    images = resize_u8(images_u8, model_class(model_name).input_size)
    return run_protocol(model_name, images, labels, classes=classes, recipe=recipe, out_dir=out_dir, seed=seed,
                        splits=[{"train": torch.as_tensor(tr), "test": torch.as_tensor(te)} for tr, te in splits],
                        protocol={"kind": "cv", "folds": len(splits)}, **kw)


def holdout(model_name: str, images_u8: torch.Tensor, labels, *, classes, recipe, out_dir, seed: int = 0,
            test_fraction: float | None = None, split_seed: int | None = None, **kw) -> dict:
    """One stratified train/test split (``protocol.test_fraction`` of every class held out, drawn with
    ``split_seed``, default ``seed``: another training seed on the same split gives ``split_seed``)."""
    recipe = _recipe(recipe)
    check_images(images_u8, labels)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    frac = float(test_fraction or recipe["protocol"]["test_fraction"])
    split_seed = seed if split_seed is None else int(split_seed)
    keep, held = stratified_holdout(labels, frac, split_seed)
    images = resize_u8(images_u8, model_class(model_name).input_size)
    protocol = {"kind": "holdout", "test_fraction": frac} | ({"split_seed": split_seed} if split_seed != seed else {})
    return run_protocol(model_name, images, labels, classes=classes, recipe=recipe, out_dir=out_dir, seed=seed,
                        splits=[{"train": keep, "test": held}], protocol=protocol, **kw)


def run(model_name: str, images_u8, labels, *, classes, recipe, out_dir, test=None, seed: int = 0, **kw) -> dict:
    """Dispatch: explicit ``test`` → train/test; else the recipe's protocol (cv, holdout, train, few-shot)."""
    recipe = _recipe(recipe)
    kind = recipe["protocol"]["kind"]
    if test is not None or kind in ("train", "train-test"):
        return fit(model_name, images_u8, labels, classes=classes, recipe=recipe, out_dir=out_dir, test=test,
                   seed=seed, **kw)
    if kind == "few-shot":
        from classifiers.fewshot import few_shot

        return few_shot(model_name, images_u8, labels, classes=classes, recipe=recipe, out_dir=out_dir, seed=seed,
                        **kw)
    fn = cross_validate if kind == "cv" else holdout
    return fn(model_name, images_u8, labels, classes=classes, recipe=recipe, out_dir=out_dir, seed=seed, **kw)


def _recipe(recipe) -> dict:
    return load_recipe(recipe)  # dicts are completed with DEFAULTS and validated


# ------------------------------------------------------------------------------- protocol
def run_protocol(model_name: str, images: torch.Tensor, labels: torch.Tensor, *, classes, recipe: dict, out_dir,
                 splits: list[dict], protocol: dict, seed: int = 0, init_from=None, resume: bool = False,
                 overwrite: bool = False, progress: bool = True, device=None, data_info: dict | None = None,
                 on_epoch_end: Callable[[dict], Any] | None = None, stain_norm: dict | None = None) -> dict:
    """Train and evaluate one model per split (images already at the model's input size).
    ``stain_norm``: the fitted colour normaliser the images were put through
    (:mod:`classifiers.stain`); saved in config.json so ``load_run`` applies it too."""
    classes = list(classes)
    if len(classes) < 2:
        raise UserError("a classifier needs at least two classes")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
        raise UserError(f"labels must lie in 0..{len(classes) - 1} for {len(classes)} classes")
    out = Path(out_dir)
    _prepare_out(out, resume, overwrite)
    device = pick_device(device)
    fp = _fingerprint(images, labels, splits, recipe, model_name, seed, init_from, classes, stain_norm)
    state = load_checkpoint(out / CKPT) if resume and (out / CKPT).is_file() else None
    if state is not None and state.get("fingerprint") != fp:
        raise UserError(f"the checkpoint in {out} belongs to a different run (data, recipe, model, seed or splits "
                        "differ); use --overwrite to start again")
    if state is not None and not (isinstance(state.get("done"), list) and isinstance(state.get("log"), list)
                                  and isinstance(state.get("fold"), int)
                                  and isinstance(state.get("seconds"), (int, float))):
        raise CheckpointError(f"checkpoint {out / CKPT} has damaged or missing run state; pass --overwrite to start "
                              "the run again")
    if state is not None and state.get("finished") and (out / "results.json").is_file():
        return json.loads((out / "results.json").read_text())
    protocol = {**protocol, "seed": seed, "recipe": recipe["name"],
                "val_fraction": recipe["early_stopping"]["val_fraction"]}
    config = _config(model_name, classes, recipe, seed, protocol, data_info, init_from)
    config["stain_norm"] = stain_norm
    atomic_write_json(out / "config.json", config)
    done: list[dict] = state["done"] if state else []
    log: list[dict] = state["log"] if state else []
    best_fold = state.get("best_fold") if state else None
    t0 = time.time() - (state["seconds"] if state else 0.0)
    for f, split in enumerate(splits):
        if f < len(done):
            continue
        resume_state = state if state is not None and state["fold"] == f and "model" in state else None
        model, row = _train_split(model_name, images, labels, classes, recipe, split, f, len(splits), seed,
                                  device, init_from, resume_state, log, done, best_fold, fp, out, t0,
                                  progress, on_epoch_end)
        done.append(row)
        if _is_better(done, f, best_fold):
            best_fold = f
            save_safetensors_atomic(model.state_dict(), out / "model.safetensors")
        save_checkpoint({"fingerprint": fp, "fold": f + 1, "done": done, "log": log, "best_fold": best_fold,
                         "seconds": time.time() - t0, "finished": f == len(splits) - 1}, out / CKPT)
        state = None
    results = _results(model_name, classes, recipe, protocol, data_info, done, time.time() - t0, len(images))
    if results["test"] is not None:
        metrics.confusion_png(results["test"]["confusion_matrix"], classes, out / "confusion_matrix.png",
                              title=f"{model_name} · {protocol['kind']} · acc {results['test']['accuracy']:.3f}")
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", results_markdown(results))
    config["normalisation"] = _saved_normalisation(out / "model.safetensors")
    config["activation_stats"] = _activation_stats(model_name, config, images, splits[best_fold]["train"], out, device)
    atomic_write_json(out / "config.json", {**config, "status": "finished", "best_fold": best_fold})
    return results


def _activation_stats(model_name, config, images, train_idx, out: Path, device) -> dict | None:
    """The saved model's per-channel activation statistics on (at most 1,000 of) its training images,
    for test-time adaptation (:mod:`classifiers.adapt`); the images are already stain-normalised.
    None for a model without layers to adapt (the row LSTM)."""
    from safetensors.torch import load_file

    from classifiers import adapt

    model = model_class(model_name)(**config["model_args"])
    try:
        adapt.stat_layers(model)
    except UserError:
        return None
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    idx = torch.as_tensor(train_idx, dtype=torch.int64)
    idx = idx[adapt.subsample(len(idx))]
    batches = adapt.u8_batches(images[idx], device, tuple(model.input_size))
    return adapt.source_stats(model.to(device), batches, len(idx))


def _is_better(done: list[dict], f: int, best_fold: int | None) -> bool:
    """The run's model.safetensors is the split with the best validation score (the last
    split when there is no validation set)."""
    if best_fold is None:
        return True
    new, old = done[f].get("val_score"), done[best_fold].get("val_score")
    if new is None or old is None:
        return old is None
    return new > old


def _saved_normalisation(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return {"mean": fh.get_tensor("norm_mean").tolist(), "std": fh.get_tensor("norm_std").tolist()}


def _prepare_out(out: Path, resume: bool, overwrite: bool) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"output path {out} is a file, not a folder")
    existing = [a for a in ARTEFACTS if (out / a).exists()]
    own = {"checkpoints", LOCK_NAME, "train_images.csv"}  # what an interrupted start of a run leaves, and its lock
    foreign = sorted(p.name for p in out.iterdir() if p.name not in own) if out.is_dir() and not existing else []
    if foreign:
        raise UserError(f"{out} is not empty (it holds {foreign[0]}) and is not a classifier run, so nothing is "
                        "written there; choose an empty or new --out")
    if existing and not _is_classifier_run(out):
        raise UserError(f"{out} holds {existing[0]} but is not a classifier run, so it is left alone; "
                        "choose another --out")
    if existing and overwrite:
        for a in existing:
            (out / a).unlink()
    elif existing and not resume:
        raise UserError(f"{out} already holds a classifier run; pass --resume to continue it or --overwrite to replace it")
    elif existing and not (out / CKPT).is_file():
        raise UserError(f"{out} holds a run without a checkpoint to resume; pass --overwrite to replace it")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)


def _is_classifier_run(out: Path) -> bool:
    """A folder this module wrote: its config.json names a model, its recipe and classes."""
    try:
        cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return not (out / "config.json").exists() and (out / CKPT).is_file()
    return isinstance(cfg, dict) and isinstance(cfg.get("model"), str) and "recipe" in cfg and "classes" in cfg


def _fingerprint(images, labels, splits, recipe, model_name, seed, init_from, classes, stain_norm=None) -> str:
    h = hashlib.sha256()
    h.update(memoryview(images.contiguous().numpy()).cast("B"))
    h.update(labels.numpy().tobytes())
    for s in splits:
        for k in ("train", "val", "test"):
            if s.get(k) is not None:
                h.update(k.encode() + torch.as_tensor(s[k], dtype=torch.int64).numpy().tobytes())
    rec = {k: v for k, v in recipe.items() if k not in ("name", "description", "eval")}
    if not (rec.get("train") or {}).get("freeze_bn", True):   # added in session 22: runs started before still resume
        rec["train"] = {k: v for k, v in rec["train"].items() if k != "freeze_bn"}
    meta = {"recipe": rec,
            "model": model_name, "seed": seed, "init_from": str(init_from), "classes": classes}
    if stain_norm:
        meta["stain_norm"] = stain_norm
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def _config(model_name, classes, recipe, seed, protocol, data_info, init_from) -> dict:
    args = model_args(model_name, len(classes), **recipe["model_args"])
    cls = model_class(model_name)
    return {
        **args,  # top-level init args: ``<ModelClass>.from_pretrained(run_dir)`` works too
        "model": model_name, "model_args": args, "model_class": cls.__name__, "classes": classes,
        "input_size": list(cls.input_size), "normalisation": None, "recipe": recipe, "seed": seed,
        "protocol": protocol, "data": data_info or {},
        "init_from": Path(str(init_from)).name if init_from else None,  # a basename: no local path in pushed files
        "status": "running", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__},
    }


# ------------------------------------------------------------------------------ one split
def _train_split(model_name, images, labels, classes, recipe, split, fold, n_folds, seed, device, init_from,
                 state, log, done, best_fold, fp, out, t0, progress, on_epoch_end):
    t, es = recipe["train"], recipe["early_stopping"]
    fseed = seed + 1000 * fold
    seed_everything(fseed)
    gen = torch.Generator().manual_seed(fseed)
    C = len(classes)
    tr = torch.as_tensor(split["train"], dtype=torch.int64)
    va = split.get("val")
    if va is None and float(es["val_fraction"]) > 0:
        keep, held = stratified_holdout(labels[tr], float(es["val_fraction"]), fseed)
        tr, va = tr[keep], tr[held]
    te = split.get("test")
    model = create_model(model_name, C, **recipe["model_args"])
    if init_from:
        load_init(model, init_from, classes)
    else:
        model.set_normalization(*channel_stats(images[tr]))
    if t["freeze_trunk"]:
        for p in model.parameters():
            p.requires_grad_(False)
        model.reset_head()
        for p in model.head.parameters():
            p.requires_grad_(True)
    mf = torch.channels_last if (t["channels_last"] is True or (t["channels_last"] == "auto"
                                                                 and device.type == "cuda")) else torch.contiguous_format
    model.to(device=device, memory_format=mf)
    bs = int(t["batch_size"])
    steps = max(1, len(tr) // bs)
    epochs = max(int(t["epochs"]), -(-int(t["min_steps"]) // steps))
    opt = build_optimizer(model, t)
    sched = build_scheduler(opt, {**t, "epochs": epochs}, steps)
    scaler = torch.amp.GradScaler("cuda", enabled=False)  # bf16 autocast needs no loss scaling
    crit = loss_fn(model.loss if t["loss"] == "auto" else t["loss"], float(t["label_smoothing"]))
    a = recipe["augment"]
    aug = BatchAugment(a["rotate"], a["scale"], a["jitter"], a["hue"], stain={k: a[k] for k in STAIN_KEYS})
    best = {"score": None, "epoch": 0, "model": None}
    bad, epoch0, stopped = 0, 0, False
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            gen.set_state(state["gen"])
            best, bad, epoch0, stopped = state["best"], state["bad_epochs"], int(state["epoch"]), state["stopped"]
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            raise CheckpointError(f"checkpoint {out / CKPT} has damaged or missing training state "
                                  f"({type(e).__name__}); pass --overwrite to start the run again") from None
    amp, cpu16 = bool(t["amp"]), bool(t["cpu_bf16"])
    max_steps = int(t["max_steps"]) or epochs * steps
    bar = tqdm(total=min(epochs * steps, max_steps), initial=epoch0 * steps, disable=not progress, unit="batch",
               desc=f"{model_name} split {fold + 1}/{n_folds}", dynamic_ncols=True)
    for epoch in range(epoch0, epochs):
        if stopped:
            break
        te0 = time.time()
        model.train(not t["freeze_trunk"])  # a frozen trunk keeps dropout/batch-norm in eval mode
        if t["freeze_bn"]:   # fine-tuning on a few images of another lab: keep the source's BatchNorm statistics
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        order = tr[epoch_order(labels[tr], gen, bool(t["balanced_sampling"]), C)]
        tot_loss, correct, seen = 0.0, 0, 0
        n_batches = min(steps, max_steps - epoch * steps)
        for s in range(n_batches):
            bi = order[s * bs:(s + 1) * bs]
            x = aug(to_float(images[bi], device), gen).contiguous(memory_format=mf)
            y = labels[bi].to(device)
            with autocast(device, amp, cpu=cpu16):
                logits = model(x)
            loss = crit(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if float(t["grad_clip"]) > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(t["grad_clip"]))
            opt.step()
            sched.step()
            tot_loss += float(loss.detach()) * len(bi)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(bi)
            bar.update(1)
        train_s = time.time() - te0
        if n_batches <= 0:  # max_steps reached at an epoch boundary
            break
        row = {"fold": fold, "epoch": epoch + 1, "step": epoch * steps + n_batches,
               "loss": tot_loss / seen, "train_accuracy": correct / seen,
               "lr": opt.param_groups[0]["lr"], "train_seconds": train_s, "images_per_s": seen / max(train_s, 1e-9)}
        if va is not None and len(va):
            rep = evaluate(model, images, labels, va, classes, device, recipe, mf, tta=False)
            score = rep[es["metric"]]
            row |= {"val_accuracy": rep["accuracy"], "val_balanced_accuracy": rep["balanced_accuracy"]}
            if best["score"] is None or score > best["score"]:
                best = {"score": score, "epoch": epoch + 1,
                        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
                bad = 0
            else:
                bad += 1
            stopped = int(es["patience"]) > 0 and bad >= int(es["patience"])
        row["seconds"] = time.time() - te0
        log.append(row)
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if k in ("loss", "val_accuracy")})
        save_checkpoint({"fingerprint": fp, "fold": fold, "epoch": epoch + 1, "stopped": stopped,
                         "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "scaler": scaler.state_dict(), "rng": rng_state(), "gen": gen.get_state(), "best": best,
                         "bad_epochs": bad, "data_order": {"train": tr, "val": va if va is not None else torch.empty(0)},
                         "done": done, "log": log, "best_fold": best_fold, "seconds": time.time() - t0}, out / CKPT)
        atomic_write_text(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        if on_epoch_end is not None:
            on_epoch_end(dict(row))
    bar.close()
    if es["restore_best"] and best["model"] is not None:
        model.load_state_dict(best["model"])
    result = {"fold": fold, "n_train": len(tr), "n_val": 0 if va is None else len(va),
              "epochs_run": len([r for r in log if r["fold"] == fold]), "best_epoch": best["epoch"],
              "steps_run": max([r.get("step", 0) for r in log if r["fold"] == fold], default=0),
              "val_score": best["score"]}
    if te is not None and len(te):
        rep = evaluate(model, images, labels, torch.as_tensor(te), classes, device, recipe, mf)
        result = metrics.fold_row(fold, rep, **{k: v for k, v in result.items() if k != "fold"})
    return model.cpu().eval(), result


@torch.inference_mode()
def evaluate(model, images, labels, idx, classes, device, recipe, mf=torch.contiguous_format,
             tta: bool | None = None) -> dict:
    """Classification report of ``model`` on ``images[idx]`` (already at the input size).
    TTA (the recipe's ``eval.tta``) applies to test sets; validation uses single views."""
    was_training = model.training
    model.eval()
    bs = int(recipe["eval"]["batch_size"])
    tta = bool(recipe["eval"]["tta"]) if tta is None else tta
    preds = []
    for i in range(0, len(idx), bs):
        x = to_float(images[idx[i:i + bs]], device).contiguous(memory_format=mf)
        with autocast(device, bool(recipe["train"]["amp"]), cpu=bool(recipe["train"]["cpu_bf16"])):
            out = tta_logits(model, x) if tta else model(x)
        preds.append(out.float().argmax(1).cpu())
    model.train(was_training)
    return metrics.classification_report(labels[idx], torch.cat(preds), classes)


# ------------------------------------------------------------------------------- results
def _results(model_name, classes, recipe, protocol, data_info, done, seconds, n_images) -> dict:
    with_test = [r for r in done if "confusion_matrix" in r]
    test = None
    if with_test:
        cm = torch.stack([torch.tensor(r["confusion_matrix"]) for r in with_test]).sum(0)
        test = metrics.report_from_confusion(cm, classes)
    summary = {}
    if len(with_test) > 1:
        for key in ("accuracy", "balanced_accuracy", "macro_f1"):
            v = torch.tensor([r[key] for r in with_test], dtype=torch.float64)
            summary[key] = {"mean": float(v.mean()), "std": float(v.std())}
    return {
        "schema": SCHEMA, "model": model_name, "data": data_info or {"n": n_images}, "protocol": protocol,
        "classes": list(classes), "test": test, "per_fold": done, "fold_summary": summary,
        "recipe": copy.deepcopy(recipe), "timing": {"seconds": seconds},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def results_markdown(results: dict) -> str:
    """results.md: headline numbers, the per-class table and the per-fold (Table 9) table."""
    test, classes = results["test"], results["classes"]
    lines = [f"# {results['model']} — {results['protocol']['kind']}", ""]
    if test is None:
        return "\n".join(lines + ["No test images in this protocol.", ""])
    lines += [f"Accuracy {test['accuracy']:.4f} · balanced accuracy {test['balanced_accuracy']:.4f} · "
              f"macro F1 {test['macro']['f1']:.4f} · {test['n']} test images", "",
              "| class | precision | recall | specificity | F1 | NPV | support |", "|---|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    for c in classes:
        m = test["per_class"][c]
        lines.append(f"| {c} | {fmt(m['precision'])} | {fmt(m['recall'])} | {fmt(m['specificity'])} | "
                     f"{fmt(m['f1'])} | {fmt(m['npv'])} | {m['support']} |")
    lines += ["", "Per split (per-class accuracy = recall):", "", metrics.fold_table(results["per_fold"], classes)]
    return "\n".join(lines)

