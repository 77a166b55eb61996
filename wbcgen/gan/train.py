"""The one GAN training loop (every config, CPU or CUDA, one process or DDP); the step itself
is :class:`wbcgen.gan.trainer.Trainer`. All randomness (z, DiffAugment, dropout) comes from the torch RNG, and the data
order from ``(seed, epoch)``, so a checkpoint + ``resume`` continues bit-identically on CPU.

A conditional config trains ONE model for several classes (``cls="all"``, run folder
``gan/all/<run-id>/``): class-balanced batches, G and D see the batch's class indices
(fakes get the labels of the real batch). ``minutes`` stops training at a wall-clock
budget; the step reached is recorded as the run's ``total_steps``, so ``resume`` and the
log continue by steps from there.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

import wbcgen
from classifiers.runtime import (CheckpointError, UserError, atomic_write_json, autocast_dtype,
                                 check_batch_memory, load_checkpoint, pick_device, run_lock, save_checkpoint)
from wbcgen.gan import ddp
from wbcgen.gan.config import GanConfig, load_config
from wbcgen.gan.models import Generator
from wbcgen.gan.order import DataOrder  # noqa: F401  (re-exported)
from wbcgen.outputs import remove_stub
from wbcgen.gan.runs import (append_jsonl, new_run_dir, newest_run, read_run_config, run_age, save_grid,
                             truncate_log, RUN_KIND)
from wbcgen.gan.projected import frozen_feature_net, train_feature_net
from wbcgen.gan.refiner import train_refiner
from wbcgen.gan.trainer import (CKPT_FORMAT, ClassProxy, Trainer, TrainingDiverged, class_images,  # noqa: F401
                                labelled_images, total_steps)
from wbcgen.provenance import (TRAIN_IMAGES, identify_source, image_rows, read_train_images, train_images_hash,
                               write_train_images)


POOLED = "pooled"  # the pseudo-class of an unconditional run on every class's images (pre-training)


def _cells_of(cells, cls: str, classes: list[str] | None):
    """The images a run trains on: one class, every class of a conditional run, or all (pooled)."""
    if cls == POOLED:
        return _cells_of(cells, "all", cells.present_classes())
    if not classes:
        return cells.of_class(cls)
    return cells.subset(torch.nonzero(torch.isin(cells.labels, torch.tensor(
        [cells.classes.index(c) for c in classes]))).flatten())


def _data_record(cells, n: int, data_hash: str, split: dict | None, rows: list[dict]) -> dict:
    """What config.json says about the training data: the folder's basename (never a local
    path), the manifest hash, the training list's hash and the recognised source/licence."""
    name = Path(cells.source).name if cells.source else None
    source, license_ = identify_source([r["sha256"] for r in rows], name)
    return {"name": name, "n_images": n, "manifest_hash": data_hash, "preprocessing": cells.preprocessing,
            "split": split, "train_images": TRAIN_IMAGES, "train_images_sha256": train_images_hash(rows),
            "n_train_images": len(rows), "data_source": source, "license": license_}


def _resolve_resume(resume, out_root, cls) -> Path:
    if resume is True:
        run = newest_run(out_root, cls, need="checkpoint")
        if run is None:
            raise UserError(f"nothing to resume: no {cls} run with a checkpoint under {Path(out_root) / 'gan' / cls}")
        return run
    run = Path(resume)
    if not (run / "checkpoints" / "latest.safetensors").is_file():
        raise UserError(f"cannot resume {run}: it has no checkpoints/latest.safetensors")
    return run


def train_gan(cells, cls: str, *, config=None, out_root="runs", steps: int | None = None,
              epochs: float | None = None, batch_size: int | None = None, seed: int = 0,
              resume: bool | str | Path = False, progress: bool = True, run_name: str | None = None,
              overwrite: bool = False, device: str | None = None, minutes: float | None = None,
              split: dict | None = None, init_from: str | Path | None = None) -> Path:
    """Train one class's GAN; returns the run folder ``<out_root>/gan/<cls>/<run-id>``.

    ``cls="all"`` with a conditional config (``"cond"``) trains ONE model for every class
    the data has (``<out_root>/gan/all/<run-id>``). ``resume=True`` continues the newest run
    of ``cls`` under ``out_root`` (``resume=PATH``: that run) with its own config and seed;
    ``steps``/``epochs`` then set the new total length. ``minutes``: a wall-clock budget
    (with ``steps``/``epochs`` too: whichever ends first; when resuming: this many more
    minutes); the step it stops at becomes the run's recorded ``total_steps``.
    ``split`` (what :func:`wbcgen.data.split_info` returns) is recorded in config.json when
    ``cells`` is the train part of a split file. ``cls="pooled"`` (per-class configs) trains one
    unconditional model on every class's images; ``init_from`` (a run folder) starts a new run from
    that run's last G, D and EMA weights (fresh optimisers; its training images join this run's
    ``train_images.csv``: the generator has seen them). The run folder is locked
    (``.wbcgen.lock``) while training; a failed start leaves no stub.
    """
    if minutes is not None and not minutes > 0:
        raise UserError(f"--minutes must be positive (got {minutes})")
    pick_device(device)  # a bad --device fails before anything is created
    if not resume:  # so does a config the data cannot serve
        _check_guide(cells, cls, load_config(config))
    ens = _ensemble_job(config, resume, Path(out_root), cls)
    if ens is not None:  # members > 1: k runs of this loop, sampled as one (wbcgen/gan/ensemble.py)
        from wbcgen.gan.ensemble import train_ensemble

        if init_from is not None:
            raise UserError("an ensemble config (members > 1) trains its members from scratch: drop init_from "
                            "(pretrain)")
        return train_ensemble(cells, cls, config=config, out_root=out_root, minutes=minutes, steps=steps,
                              epochs=epochs, seed=seed, resume=ens if resume else False, run_name=run_name,
                              overwrite=overwrite, split=split, progress=progress, device=device,
                              batch_size=batch_size)
    deadline = budget_clock() + 60 * minutes if minutes else None
    dist = ddp.setup(device)
    try:
        with contextlib.ExitStack() as lock:
            return _train(cells, cls, config, Path(out_root), steps, epochs, batch_size, seed, resume,
                          progress, run_name, overwrite, dist, lock, deadline, minutes, split, init_from)
    finally:
        ddp.teardown(dist)


def _ensemble_job(config, resume, out_root: Path, cls: str) -> "Path | bool | None":
    """Whether this call trains an ensemble: True for a fresh run of a ``members > 1`` config; the
    ensemble run to continue when resuming one (the newest unfinished ensemble, unless a plain run
    with a checkpoint is newer); None otherwise."""
    from wbcgen.gan.ensemble import is_ensemble, newest_unfinished

    if not resume:
        return True if load_config(config).members > 1 else None
    if resume is not True:
        return Path(resume) if is_ensemble(Path(resume)) else None
    ens, plain = newest_unfinished(out_root, cls), newest_run(out_root, cls, need="checkpoint")
    if ens is None or (plain is not None and run_age(plain) > run_age(ens)):
        return None
    return ens


def _data(cells, cls: str, cfg: GanConfig, classes: list[str] | None = None):
    """``(images, labels or None, classes or None)`` for a per-class or a conditional run."""
    if cfg.conditional:
        if cls != "all":
            raise UserError(f"the {cfg.name!r} config is class-conditional: it trains one model for all "
                            f"classes (use --cls all, not {cls})")
        if classes is None:
            classes = cells.present_classes()
        if len(classes) < 2:
            raise UserError("a conditional GAN needs images of at least two classes")
        real, labels = labelled_images(cells, classes)
        return real, labels, list(classes)
    if cls == "all":
        raise UserError(f"the {cfg.name!r} config trains one class per run; give a class (the CLI's "
                        f"--cls all trains one run per class) or use a conditional config such as cond")
    if cls == POOLED:  # every class's images, no labels: the shared start of per-class runs
        return labelled_images(cells, cells.present_classes())[0], None, None
    return class_images(cells, cls), None, None


_PROXY_CACHE: dict = {}  # the last few per-class classifiers: the runs of --cls all train each seed's once


def _class_proxy(cells, cls: str, cfg: GanConfig, seed: int, device, trained: bool) -> ClassProxy | None:
    """A per-class run's classifier of every class of ``cells`` (the run's training data, never a test
    image) trained for ``feat_steps``: the ``select = "learnt"`` proxy and the ``cls_weight`` / ``fm_weight`` guide;
    ``trained=False`` (a resume) gives an untrained frozen net of the right shape for the checkpoint
    to load into. None when neither is asked for or (proxy only) the data has one class."""
    if cfg.select != "learnt" and not cfg.guided:
        return None
    present = cells.present_classes()
    _check_guide(cells, cls, cfg)
    if len(present) < 2 or cls not in present:
        return None
    if not trained:
        return ClassProxy(frozen_feature_net(cfg, len(present)), present.index(cls), {})
    key = (cells.manifest_hash(), tuple(present), cfg.feat_steps, tuple(cfg.feat_widths), seed, str(device))
    if key not in _PROXY_CACHE:
        if len(_PROXY_CACHE) >= 4:  # an ensemble's members have seeds s, s+1, ...: keep each one's
            _PROXY_CACHE.pop(next(iter(_PROXY_CACHE)))
        imgs, labels = labelled_images(cells, present)
        net, info = train_feature_net(imgs, labels, cfg, len(present), seed, torch.device(device))
        _PROXY_CACHE[key] = (net, info | {"classes": present})
    net, info = _PROXY_CACHE[key]
    use = [u for u, on in (("checkpoint selection", cfg.select == "learnt"),
                           ("generator guidance (cls_weight)", cfg.cls_weight > 0),
                           ("feature matching (fm_weight)", cfg.fm_weight > 0)) if on]
    return ClassProxy(net, present.index(cls), info | {"use": ", ".join(use)})


def _check_guide(cells, cls: str, cfg: GanConfig) -> None:
    """A per-class guide (``cls_weight``, ``fm_weight``) needs a classifier of several classes, so data
    with at least two."""
    if cfg.guided and not cfg.conditional and cls != POOLED and len(cells.present_classes()) < 2:
        key = "cls_weight" if cfg.cls_weight else "fm_weight"
        raise UserError(f"{key} = {getattr(cfg, key):g} guides the {cls} generator with a classifier of every "
                        "class of the training data: give data with at least two classes (the generator still "
                        "trains on its own class only)")


def _check_batch(cfg: GanConfig, device) -> None:
    # G + D activations and gradients: about 16 float copies of an image per sample (measured order)
    check_batch_memory(cfg.batch_size, 16 * 4 * 3 * cfg.image_size ** 2, device, "--batch-size")


# The clock of --minutes: wall-clock seconds (what a user means). bench/bench_quality.py --cpu-budget
# swaps in process CPU seconds so that ablation rows taken side by side get equal CPU.
budget_clock = time.perf_counter


def train_precision(cfg: GanConfig, device: torch.device) -> str:
    """What the training steps compute in: "bf16" (autocast) or "fp32" — recorded in config.json."""
    return "fp32" if autocast_dtype(device, cfg.amp, cfg.cpu_bf16) is None else "bf16"


def budget_share(deadline: float | None, runs_left: int) -> float | None:
    """Minutes for the next of ``runs_left`` per-class runs sharing a budget that ends at ``deadline``
    (a ``budget_clock`` time): an equal share of what is LEFT, so the one-off cost of the first run
    (the learnt proxy) and any overshoot are spread over all classes; past the end, one step each."""
    if deadline is None:
        return None
    return max((deadline - budget_clock()) / 60 / runs_left, 1e-3)


_UNBOUNDED = 2 ** 62  # the step limit of a run bounded by --minutes only


def _train(cells, cls, config, out_root, steps, epochs, batch_size, seed, resume, progress, run_name,
           overwrite, dist, lock, deadline=None, minutes=None, split=None, init_from=None) -> Path:
    data_hash = cells.manifest_hash()
    ckpt = None
    inputs = {"--data": cells.source} if cells.source else {}
    if resume and init_from is not None:
        raise UserError("a resumed run continues from its own checkpoint: drop init_from")
    if resume:
        run_dir = _resolve_resume(resume, out_root, cls)
        if dist.main:
            lock.enter_context(run_lock(run_dir))
        meta = read_run_config(run_dir)
        check_same_data(run_dir, meta, data_hash)
        cfg, seed = load_config(meta["gan"]), int(meta["seed"])
        real, labels, classes = _data(cells, meta["cls"], cfg, meta.get("classes"))
        ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.safetensors")
        done = ckpt.get("step") if isinstance(ckpt, dict) else None
        if not isinstance(done, int):
            raise CheckpointError(f"checkpoint {run_dir / 'checkpoints' / 'latest.safetensors'} has no step count; "
                                  "it is corrupt or not a wbcgen GAN checkpoint")
        if steps or epochs:
            total = total_steps(cfg, len(real), cfg.batch_size, steps, epochs)
        elif minutes:  # up to the config's cap; a run already there trains the M minutes past it
            total = cfg.max_steps if cfg.max_steps > done else _UNBOUNDED
        elif meta.get("total_steps") is None:
            raise UserError(f"{run_dir} was stopped before the end of its time budget; resume it with "
                            f"--steps N or --minutes M")
        else:
            total = meta["total_steps"]
        if total < done:
            raise UserError(f"{run_dir} has already trained {done} steps; --steps/--epochs must give at least "
                            f"{done} steps in total (got {total})")
        return _fit(cells, cfg, run_dir, meta, total, ckpt, real, labels, classes, seed, progress, dist,
                    deadline, minutes, cls)
    else:
        cfg = load_config(config)
        if batch_size is not None:
            cfg = cfg.replace(batch_size=int(batch_size))
        real, labels, classes = _data(cells, cls, cfg)
        _check_batch(cfg, dist.device)
        init, rows = _init_state(init_from, cfg) if init_from is not None else (None, None)
        rows = _union(image_rows(_cells_of(cells, cls, classes)), rows)
        total = total_steps(cfg, len(real), cfg.batch_size, steps, epochs) if (steps or epochs or not minutes) \
            else (cfg.max_steps or _UNBOUNDED)
        run_dir = Path(ddp.broadcast_text(str(new_run_dir(out_root, cls, cfg.name, seed, run_name, overwrite, inputs,
                                                          lock))
                                          if dist.main else "", dist))
        meta = run_meta(cls, cfg, run_dir, seed, total, _data_record(cells, len(real), data_hash, split, rows)) | {
            "world_size": dist.world, "device": dist.device.type, "precision": train_precision(cfg, dist.device),
            "quality_proxy": "Frechet distance of eval_n EMA samples vs the class's real images in "
                             "wbcgen.gan.quality features (wbcgen-fixed-v1); lower is better"}
        if init is not None:
            meta["init_from"] = init["record"]
        if classes:
            meta["classes"] = classes
            meta["data"]["n_images_per_class"] = {c: int((labels == k).sum()) for k, c in enumerate(classes)}
            meta["data"]["sampling"] = "class-balanced"
    try:
        return _fit(cells, cfg, run_dir, meta, total, None, real, labels, classes, seed, progress, dist,
                    deadline, minutes, cls, rows=rows, init=init)
    except BaseException:
        if dist.main:
            lock.close()
            remove_stub(run_dir, existed=False)  # only a tree of empty folders is removed
        raise


def run_meta(cls: str, cfg: GanConfig, run_dir: Path, seed: int, total, data: dict) -> dict:
    """The ``config.json`` fields every GAN run folder has (a plain run and an ensemble add their own)."""
    return {"kind": RUN_KIND, "cls": cls, "run_id": run_dir.name, "seed": seed, "total_steps": total,
            "gan": cfg.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "data": data,
            "torch": torch.__version__, "wbcgen": wbcgen.__version__}


def check_same_data(run_dir: Path, meta: dict, data_hash: str) -> None:
    """A resume continues on the data the run was trained on (its manifest hash), or refuses."""
    if meta["data"]["manifest_hash"] != data_hash:
        raise UserError(f"cannot resume {run_dir}: it was trained on different data (manifest hash differs)")


def _init_state(init_from, cfg: GanConfig) -> tuple[dict, list[dict]]:
    """The weights (G, D, EMA) of ``init_from``'s last checkpoint and the images they have seen."""
    src = Path(init_from)
    ck = src / "checkpoints" / "latest.safetensors"
    if not ck.is_file():
        raise UserError(f"cannot start from {src}: it has no checkpoints/latest.safetensors")
    state = load_checkpoint(ck)
    meta = read_run_config(src)
    rows = read_train_images(src)
    if rows is None:
        raise UserError(f"cannot start from {src}: it has no {TRAIN_IMAGES} (which images its weights have seen)")
    record = {"run_id": src.name, "cls": meta.get("cls"), "step": int(state.get("step", 0)),
              "config": meta.get("gan", {}).get("name"), "train_images_sha256": train_images_hash(rows)}
    return {"G": state["G"], "D": state["D"], "ema": state.get("ema", {}), "record": record}, rows


def _union(rows: list[dict], more: list[dict] | None) -> list[dict]:
    """``rows`` and then every row of ``more`` whose image is not among them."""
    seen = {r["sha256"] for r in rows}
    return rows + [r for r in (more or []) if r["sha256"] not in seen]


def _fit(cells, cfg, run_dir, meta, total, ckpt, real, labels, classes, seed, progress, dist, deadline, minutes,
         cls, rows=None, init=None) -> Path:
    fresh = ckpt is None
    end = deadline  # the run's end; with a refiner the GAN stops refine_share of the budget earlier
    deadline = gan_deadline(cfg, deadline, minutes)
    meta["total_steps"] = None if total == _UNBOUNDED else total
    if minutes:  # every budgeted session, in order; the stop step is filled in at the end
        meta["budget"] = meta.get("budget", []) + [{"minutes": minutes, "stopped_at_step": None, "stopped_by": None}]
    proxy = _class_proxy(cells, cls, cfg, seed, dist.device, trained=fresh) if not classes else None
    tr = Trainer(cfg, real, seed, dist, labels, classes, resume=not fresh, proxy=proxy)
    if init is not None:
        tr.load_weights(init, f"run {init['record']['run_id']}")
    if tr.feature_net_info is not None and (fresh or "feature_net" not in meta):
        meta["feature_net"] = tr.feature_net_info
    if cfg.select == "learnt":
        meta["quality_proxy"] = (
            "Frechet distance of eval_n EMA samples vs the class's real images in the pooled features of the "
            "run's feature net (a classifier of the training data's classes, config.json feature_net); "
            "lower is better" if tr.proxy_net is not None else
            "Frechet distance in wbcgen.gan.quality features (wbcgen-fixed-v1): select = 'learnt' scores a "
            "run of one class of data with at least two classes, or a conditional run")
    if cfg.guided and tr.guide_net is None:  # a pooled run has no class for the classifier to pull towards
        meta["guide"] = (f"off: cls_weight / fm_weight guide a run of one class; this {cls} run trains on every "
                         "class's images, so G trains on D alone")
        if fresh and dist.main:
            tqdm.write(f"note: {meta['guide']}")
    log, ck_dir = run_dir / "log.jsonl", run_dir / "checkpoints"
    if ckpt is not None:
        try:
            tr.load_state_dict(ckpt)
        except UserError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            raise CheckpointError(f"checkpoint {ck_dir / 'latest.safetensors'} has damaged or missing training "
                                  f"state ({type(e).__name__}: {' '.join(str(e).split())[:80]}); it cannot be "
                                  "resumed") from None
        del ckpt
        if dist.main:
            truncate_log(log, tr.step)
    if dist.main:
        atomic_write_json(run_dir / "config.json", meta)
        if fresh:
            write_train_images(run_dir, rows)
    bar = _bar(tr, total, deadline, minutes, cls, progress and dist.main)
    t0, seen, acc = time.perf_counter(), 0, []
    while tr.step < total:
        out = tr.train_step()
        seen += cfg.batch_size
        acc.append(torch.stack([out["loss_d"], out["loss_g"], out["d_real"], out["d_fake"]]
                               + ([out["d_recon"]] if "d_recon" in out else [])))
        if not ddp.all_true(bool(torch.isfinite(acc[-1][:2]).all()), dist):
            bar.close()
            raise TrainingDiverged(
                f"training diverged at step {tr.step} (loss_d={float(out['loss_d']):.4g}, "
                f"loss_g={float(out['loss_g']):.4g}); the last good checkpoint is {ck_dir / 'latest.safetensors'} "
                f"(resume it with a lower learning rate or another seed)")
        # a time budget ends the run at this step on every rank (the stop step is recorded below)
        timed_out = deadline is not None and not ddp.all_true(budget_clock() < deadline, dist)
        s, last = tr.step, tr.step == total or timed_out
        if deadline is not None:
            bar.n = min(bar.total, round(bar.total - (deadline - budget_clock()), 1))
            bar.set_postfix_str(f"step {s}", refresh=False)
        bar.update(0 if deadline is not None else 1)
        if dist.main and (s % cfg.log_every == 0 or last):
            m = torch.stack(acc).mean(0).tolist()
            acc, dt = [], time.perf_counter() - t0
            rec = {"step": s, "epoch": round(tr.order.epochs_done, 4), "loss_d": round(m[0], 6),
                   "loss_g": round(m[1], 6), "d_real": round(m[2], 4), "d_fake": round(m[3], 4),
                   "img_per_s": round(seen / dt, 2), "time_s": round(dt, 2)}
            if len(m) > 4:  # d_recon: D's reconstruction loss on the real inputs (unweighted)
                rec["d_recon"] = round(m[4], 6)
            if cfg.ada_target:
                rec |= {"ada_p": round(tr.ada_p, 5), "ada_rt": tr.ada_rt and round(tr.ada_rt, 4)}
            append_jsonl(log, rec)
            if deadline is None:
                bar.set_postfix(loss_d=f"{m[0]:.3f}", loss_g=f"{m[1]:.3f}")
        if dist.main and (s % cfg.sample_every == 0 or last):
            imgs, nrow = tr.grid_images()
            save_grid(imgs, run_dir / "samples" / f"step_{s:06d}.png", nrow=nrow)
        best = dist.main and (s % cfg.eval_every == 0 or last) and _evaluate(tr, cls, s, total, log)
        if s % cfg.ckpt_every == 0 or last:
            state = tr.state_dict()  # every rank joins the RNG gather
            if dist.main:
                save_checkpoint(state, ck_dir / "latest.safetensors")
                if best:  # the same state: a hard link instead of a second write
                    _link(ck_dir / "latest.safetensors", ck_dir / "best.safetensors")
                    best = False
            del state
        if best:
            save_checkpoint(tr.state_dict(gather=False), ck_dir / "best.safetensors")
        if last:
            break
    bar.close()
    if minutes or meta["total_steps"] is None:  # record where the budget stopped: resume continues by steps
        meta["total_steps"] = tr.step
        if minutes:
            meta["budget"][-1].update(stopped_at_step=tr.step, stopped_by="minutes" if tr.step < total else "steps")
    if dist.main:
        atomic_write_json(run_dir / "config.json", meta)
        _export(tr, cfg, cls, run_dir, meta, time.perf_counter() - t0, seen, seed, end, progress)
    ddp.barrier(dist)
    return run_dir


def _bar(tr: Trainer, total: int, deadline, minutes, cls: str, enabled: bool):
    if deadline is None:
        return tqdm(total=total, initial=tr.step, desc=f"train-gan {cls}", unit="step", dynamic_ncols=True,
                    disable=not enabled, file=sys.stderr)
    # a time budget: the bar runs over the budget's seconds, so its ETA is the budget's end
    budget = round(max(deadline - budget_clock(), 0.0) + 0.5)
    return tqdm(total=budget, desc=f"train-gan {cls} ({minutes:g} min)", unit="s", dynamic_ncols=True,
                disable=not enabled, file=sys.stderr,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")


def _evaluate(tr: Trainer, cls: str, s: int, total: int, log: Path) -> bool:
    """Quality proxy + collapse check at step ``s``; True when this is the best step so far."""
    ev = tr.evaluate()
    best = tr.best["fd"] is None or _rank(ev) < _rank(tr.best)
    if best:
        tr.best = {"fd": ev["fd"], "step": s} | ({"class_acc": ev["class_acc"]} if "class_acc" in ev else {})
    append_jsonl(log, {"step": s, "eval": ev | {"best": best}})
    # an untrained G is trivially "collapsed": warn once samples had been diverse, or late
    tr.was_diverse = getattr(tr, "was_diverse", False) or not ev["collapsed"]
    if ev["collapsed"] and (tr.was_diverse or s >= total // 4):
        tqdm.write(f"warning: {cls} samples look collapsed at step {s} (diversity {ev['diversity_ratio']:.2f} "
                   f"of the real images'); try more augmentation, a lower learning rate or an earlier "
                   f"checkpoint", file=sys.stderr)
    return best


def _rank(ev: dict) -> tuple:
    """Lower is better. The learnt proxy: first how often the classifier sees the asked class in the
    fakes, in steps of 0.05 (~ its sampling noise at 256 images), then the FD — an early, blurred
    G can be close in feature statistics while drawing cells the classifier calls another class
    (fast64-learnt-b128-60min: monocyte step 100, FD 40 but class_acc 0.73, vs step 350, FD 60 and
    0.996). Otherwise the FD alone."""
    acc = ev.get("class_acc")
    return (-round(acc / 0.05) if acc is not None else 0, ev["fd"])


def _link(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def gan_deadline(cfg: GanConfig, deadline: float | None, minutes: float | None) -> float | None:
    """Where a run's GAN training stops: its budget's end, less ``refine_share`` of it for the refiner."""
    if deadline is None or not cfg.refine_steps or not minutes:
        return deadline
    return deadline - cfg.refine_share * 60 * minutes


@torch.no_grad()
def generator_cells(g: Generator, n: int, seed: int) -> torch.Tensor:
    """``n`` uint8 cells drawn by ``g`` without its refiner (what an unpaired refiner learns to refine), from the
    latents of ``seed``; a conditional ``g`` draws its classes in turn. Leaves ``g``'s mode and the RNG as they were."""
    from wbcgen.gan.sample import latents

    was, out = g.training, []
    g.eval()
    for i in range(0, n, 256):
        z = latents(min(256, n - i), g.z_dim, seed=seed + 7919, start=i)
        y = (torch.arange(i, i + len(z)) % len(g.classes)) if g.classes else None
        out.append((g._draw(z, y, None).clamp(0, 1) * 255).round().to(torch.uint8))
    g.train(was)
    return torch.cat(out)


def train_detail(g: Generator, cfg: GanConfig, images: torch.Tensor, seed: int, deadline: float | None,
                 run_dir: Path, progress: bool) -> dict | None:
    """Train the detail refiner of a ``refine_steps`` config (wbcgen/gan/refiner.py) on the run's real
    training cells ``images`` (uint8) into ``g`` — ``refine_steps`` steps or until ``deadline`` (the
    run's budget) — logging to ``refiner_log.jsonl``; returns its record (None without a refiner)."""
    if g.refiner is None:
        return None
    log = run_dir / "refiner_log.jsonl"
    log.unlink(missing_ok=True)
    bar = tqdm(total=cfg.refine_steps, desc=f"refiner {g.config.get('cls', '')}".rstrip(), unit="step",
               dynamic_ncols=True, disable=not progress, file=sys.stderr)

    def record(r: dict) -> None:
        append_jsonl(log, r)
        bar.update(r["refiner_step"] - bar.n)

    fakes = generator_cells(g, max(2048, len(images)), seed) if cfg.refine_mode == "unpaired" else None
    R, info = train_refiner(images.cpu(), steps=cfg.refine_steps, factor=cfg.refine_factor, blur=cfg.refine_blur,
                            mode=cfg.refine_mode, fakes=fakes, seed=seed, deadline=deadline, clock=budget_clock, log=record)
    bar.close()
    g.refiner.net.load_state_dict(R.state_dict())
    g.refiner.trained.fill_(1)
    return info


def _export(tr: Trainer, cfg: GanConfig, cls: str, run_dir: Path, meta: dict, wall: float, seen: int, seed: int = 0,
            deadline: float | None = None, progress: bool = False) -> None:
    """``generator/`` via save_pretrained (EMA weights of the best or the final step, then the detail refiner
    trained when the config has one) + summary.json."""
    state, step = tr.sampler().state_dict(), tr.step
    if cfg.export == "best" and tr.best["step"] is not None and (run_dir / "checkpoints" / "best.safetensors").is_file():
        best = load_checkpoint(run_dir / "checkpoints" / "best.safetensors")
        state, step = (best["ema"] if tr.ema is not None else best["G"]), int(best["step"])
    g = Generator(cfg.to_dict() | {"cls": cls, "run_id": run_dir.name, "step": step} | tr.g_extra)
    g.load_state_dict(state)
    refiner = train_detail(g, cfg, tr.real, seed, deadline, run_dir, progress)
    tmp = run_dir / ".generator.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    g.cpu().save_pretrained(tmp)
    rows = read_train_images(run_dir) or []
    write_train_images(tmp, rows, with_paths=False)  # travels with the weights: sha256 + label only
    shutil.rmtree(run_dir / "generator", ignore_errors=True)
    tmp.rename(run_dir / "generator")
    from wbcgen.gan.sample import file_sha256

    atomic_write_json(run_dir / "summary.json", {
        "cls": cls, **({"classes": tr.classes} if tr.classes else {}), "steps": tr.step, "exported_step": step,
        "best": tr.best, "budget": meta.get("budget"), **({"refiner": refiner} if refiner else {}),
        "generator_sha256": file_sha256(run_dir / "generator" / "model.safetensors"),
        "train_images_sha256": train_images_hash(rows) if rows else None, "n_train_images": len(rows) or None,
        "data_source": meta["data"].get("data_source"), "license": meta["data"].get("license"),
        "wall_s_this_session": round(wall, 2), "img_per_s_this_session": round(seen / max(wall, 1e-9), 2)})
