"""The one GAN training loop (every config, CPU or CUDA, one process or DDP).

Per step: D sees ``cat([aug(real), aug(G(z))])`` in one forward (non-saturating logistic
loss), then G is updated through D on the same fakes; an EMA copy of G is kept for
sampling. All randomness (z, DiffAugment, dropout) comes from the torch RNG, and the data
order from ``(seed, epoch)``, so a checkpoint + ``resume`` continues bit-identically on CPU.

A conditional config trains ONE model for several classes (``cls="all"``, run folder
``gan/all/<run-id>/``): class-balanced batches, G and D see the batch's class indices
(fakes get the labels of the real batch). ``minutes`` stops training at a wall-clock
budget; the step reached is recorded as the run's ``total_steps``, so ``resume`` and the
log continue by steps from there.
"""
from __future__ import annotations

import copy
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import wbcgen
from classifiers.runtime import (UserError, atomic_write_json, autocast, load_checkpoint, rng_state,
                                 save_checkpoint, seed_everything, set_rng_state)
from wbcgen.gan import ddp, quality
from wbcgen.gan.config import GanConfig, load_config
from wbcgen.gan.diffaug import diff_augment
from wbcgen.gan.models import Discriminator, Generator
from wbcgen.gan.order import BalancedOrder, DataOrder  # noqa: F401  (DataOrder: re-exported)
from wbcgen.provenance import (TRAIN_IMAGES, identify_source, image_rows, read_train_images, train_images_hash,
                               write_train_images)
from wbcgen.gan.runs import (append_jsonl, new_run_dir, newest_run, read_run_config, save_grid,
                             truncate_log, RUN_KIND)

CKPT_FORMAT = "wbcgen-gan-checkpoint-1"


class TrainingDiverged(UserError):
    """A loss became NaN/Inf; the last good checkpoint is kept."""


def class_images(cells, cls: str) -> torch.Tensor:
    """uint8 N×3×128×128 images of one class (resized when the data set has another size)."""
    if cls not in cells.classes:
        raise UserError(f"unknown class {cls!r}; choose from {', '.join(cells.classes)}")
    imgs = cells.of_class(cls).images
    if len(imgs) == 0:
        raise UserError(f"the data set {cells.source or '(in memory)'} has no {cls} images to train on")
    if tuple(imgs.shape[-2:]) != (128, 128):
        x = F.interpolate(imgs.float(), size=(128, 128), mode="bilinear", antialias=True, align_corners=False)
        imgs = x.round().clamp(0, 255).to(torch.uint8)
    return imgs.contiguous()


def labelled_images(cells, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images of several classes and their indices into ``classes``."""
    parts = [class_images(cells, c) for c in classes]
    labels = torch.cat([torch.full((len(p),), k, dtype=torch.long) for k, p in enumerate(parts)])
    return torch.cat(parts), labels


def total_steps(cfg: GanConfig, n: int, batch: int, steps: int | None, epochs: float | None) -> int:
    if steps is not None and epochs is not None:
        raise UserError("give either --steps or --epochs, not both")
    if steps is not None:
        out = steps
    elif epochs is not None:
        out = math.ceil(epochs * n / batch)
    else:
        out = cfg.steps or math.ceil(cfg.epochs * n / batch)
    if out < 1:
        raise UserError(f"the number of training steps must be positive (got {out})")
    return int(out)


class Trainer:
    def __init__(self, cfg: GanConfig, real: torch.Tensor, seed: int, dist: ddp.Dist,
                 labels: torch.Tensor | None = None, classes: list[str] | None = None):
        self.cfg, self.seed, self.dist, self.dev = cfg, seed, dist, dist.device
        if cfg.conditional and (labels is None or not classes):
            raise UserError("a conditional GAN config trains one model for several classes (use --cls all)")
        self.classes = list(classes) if cfg.conditional else []
        if cfg.batch_size % dist.world:
            raise UserError(f"batch size {cfg.batch_size} is not divisible by the {dist.world} processes")
        self.mf = torch.channels_last  # faster with oneDNN on CPU too (measured), and on CUDA
        seed_everything(seed)  # same initial weights on every rank
        extra = {"classes": self.classes} if self.classes else {}
        self.G = Generator(cfg.to_dict() | extra).to(self.dev, memory_format=self.mf)
        self.D = Discriminator(cfg, len(self.classes)).to(self.dev, memory_format=self.mf)
        self.ema = copy.deepcopy(self.G).eval().requires_grad_(False) if cfg.ema_decay > 0 else None
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=betas)
        self.scaler = torch.amp.GradScaler(self.dev.type, enabled=False)  # bf16 needs no scaling
        self.g_run, self.d_run = self.G, self.D
        if dist.active:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.dev.index] if self.dev.type == "cuda" else None
            self.g_run, self.d_run = DDP(self.G, device_ids=ids), DDP(self.D, device_ids=ids)
        self.d_plain = self.D
        if cfg.compile and self.dev.type == "cuda":
            self.g_run, self.d_run = torch.compile(self.g_run), torch.compile(self.d_run)
            self.d_plain = torch.compile(self.D)
        self.real = real.to(self.dev)
        self.labels = labels.to(self.dev) if self.classes else None
        self.order = BalancedOrder(labels, len(self.classes), seed) if self.classes else DataOrder(len(real), seed)
        self.step, self.best = 0, {"fd": None, "step": None}
        # a different random stream per rank for z / augmentation / dropout
        torch.manual_seed(seed + 7919 * dist.rank)
        g = torch.Generator().manual_seed(seed)
        self.eval_z = torch.randn(max(cfg.eval_n, 64), cfg.z_dim, generator=g)
        k = len(self.classes)
        # conditional: eval images cycle through the classes; the real reference is balanced too
        self.eval_y = torch.arange(len(self.eval_z)) % k if k else None
        ref = real[:2000] if not k else torch.cat([real[labels == c][:2000 // k] for c in range(k)])
        self.real_feats = quality.features(ref) if dist.main else None

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, float]:
        cfg, dev, w = self.cfg, self.dev, self.dist.world
        idx = self.order.next(cfg.batch_size).chunk(w)[self.dist.rank]
        real = (self.real[idx].float() / 127.5 - 1).contiguous(memory_format=self.mf)
        b = len(idx)
        z = torch.randn(b, cfg.z_dim, device=dev)
        y = (self.labels[idx.to(dev)],) if self.classes else ()  # fakes get the real batch's classes
        yy = (torch.cat([y[0], y[0]]),) if y else ()
        r1 = cfg.r1_gamma > 0 and self.step % cfg.r1_every == 0  # lazy R1 (StyleGAN2)
        with autocast(dev, cfg.amp):
            fake = self.g_run(z, *y) * 2 - 1
            real_in = diff_augment(real, cfg.diffaug)
            if r1:
                real_in = real_in.detach().requires_grad_(True)
            logits = self.d_run(torch.cat([real_in, diff_augment(fake.detach(), cfg.diffaug)]), *yy).float()
        loss_d = F.softplus(-logits[:b]).mean() + F.softplus(logits[b:]).mean()
        if r1:  # penalise D's gradient on (augmented) real images: a smoother D, fewer artefacts
            (grad,) = torch.autograd.grad(logits[:b].sum(), real_in, create_graph=True)
            loss_d = loss_d + grad.float().square().sum(dim=[1, 2, 3]).mean() * (cfg.r1_gamma / 2 * cfg.r1_every)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        self.D.requires_grad_(False)
        with autocast(dev, cfg.amp):
            logits_g = self.d_plain(diff_augment(fake, cfg.diffaug), *y).float()
        loss_g = F.softplus(-logits_g).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.D.requires_grad_(True)
        self.step += 1
        if self.ema is not None:
            self._update_ema()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
                "d_real": torch.sigmoid(logits[:b].detach()).mean(), "d_fake": torch.sigmoid(logits[b:].detach()).mean()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))  # warm-up for short runs
        for pe, p in zip(self.ema.parameters(), self.G.parameters()):
            pe.lerp_(p, 1 - decay)
        for be, b in zip(self.ema.buffers(), self.G.buffers()):
            be.copy_(b)

    def sampler(self) -> torch.nn.Module:
        return self.ema if self.ema is not None else self.G

    # ----------------------------------------------------------------- quality
    @torch.inference_mode()
    def generate_eval(self, n: int, y: torch.Tensor | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """Fixed-z images from the EMA generator (conditional: classes ``y``, default
        ``eval_y``); uses no global randomness."""
        g = self.sampler()
        was_training = g.training
        g.eval()
        z_all = self.eval_z[:n] if z is None else z
        if not self.classes:
            f = g.folded().to(self.dev, memory_format=self.mf)
            out = torch.cat([f(z.to(self.dev)).float().cpu() for z in z_all.split(128)])
        else:
            y = self.eval_y[:n] if y is None else y
            out = torch.empty(len(z_all), 3, self.cfg.image_size, self.cfg.image_size)
            for k in y.unique().tolist():  # one BN-folded generator per class
                f = g.folded(k).to(self.dev, memory_format=self.mf)
                sel = torch.nonzero(y == k).flatten()
                out[sel] = torch.cat([f(z.to(self.dev)).float().cpu() for z in z_all[sel].split(128)])
        g.train(was_training)
        return out

    def grid_images(self) -> tuple[torch.Tensor, int]:
        """The fixed-z sample grid: 64 images, or 8 per class (one row each) when conditional."""
        if not self.classes:
            return self.generate_eval(64), 8
        k = len(self.classes)
        # the same 8 latents in every row: columns show what the class label changes
        return self.generate_eval(8 * k, torch.arange(k).repeat_interleave(8), self.eval_z[:8].repeat(k, 1)), 8

    def evaluate(self) -> dict:
        imgs = self.generate_eval(self.cfg.eval_n)
        feats = quality.features(imgs)
        fd = quality.frechet_distance(*quality.stats(feats), *quality.stats(self.real_feats))
        div = quality.diversity(feats) / max(quality.diversity(self.real_feats), 1e-12)
        return {"fd": round(fd, 6), "diversity_ratio": round(div, 4), "collapsed": div < self.cfg.collapse_ratio}

    # -------------------------------------------------------------- checkpoints
    def state_dict(self, gather: bool = True) -> dict:
        """Everything needed to continue. ``gather`` collects every rank's RNG (a collective:
        all ranks must call it); without it only this rank's RNG is stored."""
        rngs = ddp.gather(torch.get_rng_state(), self.dist) if gather else [torch.get_rng_state()]
        state = {
            "format": CKPT_FORMAT, "step": self.step, "seed": self.seed, "config": self.cfg.to_dict(),
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": rng_state(), "rng_ranks": rngs, "world": len(rngs),
            "data": self.order.state_dict(), "best": dict(self.best),
        }
        if self.dev.type == "cuda":
            cuda = torch.cuda.get_rng_state(self.dev)
            state["cuda_rng_ranks"] = ddp.gather(cuda, self.dist) if gather else [cuda]
        return state

    def load_state_dict(self, s: dict) -> None:
        if s.get("format") != CKPT_FORMAT:
            raise UserError("the checkpoint is not a wbcgen GAN training checkpoint")
        try:
            self.G.load_state_dict(s["G"])
            self.D.load_state_dict(s["D"])
            if self.ema is not None:
                self.ema.load_state_dict(s["ema"])
            self.opt_g.load_state_dict(s["opt_g"])
            self.opt_d.load_state_dict(s["opt_d"])
            if s["scaler"]:
                self.scaler.load_state_dict(s["scaler"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise UserError(f"the checkpoint does not fit this GAN config ({type(e).__name__})") from None
        self.order.load_state_dict(s["data"])
        self.step, self.best = int(s["step"]), dict(s["best"])
        if int(s["world"]) == self.dist.world:
            set_rng_state(s["rng"])
            torch.set_rng_state(s["rng_ranks"][self.dist.rank])
            if self.dev.type == "cuda" and "cuda_rng_ranks" in s:
                torch.cuda.set_rng_state(s["cuda_rng_ranks"][self.dist.rank], self.dev)
        else:  # a different number of processes: continue, but not bit-identically
            torch.manual_seed(self.seed + 7919 * self.dist.rank + 104729 * self.step)


def _cells_of(cells, cls: str, classes: list[str] | None):
    """The images a run trains on: one class, or every class of a conditional run."""
    if not classes:
        return cells.of_class(cls)
    return cells.subset(torch.nonzero(torch.isin(cells.labels, torch.tensor(
        [cells.classes.index(c) for c in classes]))).flatten())


def _data_record(cells, cls: str, n: int, data_hash: str, split: dict | None, classes=None) -> dict:
    """What config.json says about the training data: the folder's basename (never a local
    path), the manifest hash, the training list's hash and the recognised source/licence."""
    rows = image_rows(_cells_of(cells, cls, classes))
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


def train_gan(cells, cls: str, *, config="fast", out_root="runs", steps: int | None = None,
              epochs: float | None = None, batch_size: int | None = None, seed: int = 0,
              resume: bool | str | Path = False, progress: bool = True, run_name: str | None = None,
              overwrite: bool = False, device: str | None = None, minutes: float | None = None,
              split: dict | None = None) -> Path:
    """Train one class's GAN; returns the run folder ``<out_root>/gan/<cls>/<run-id>``.

    ``cls="all"`` with a conditional config (``"cond"``) trains ONE model for every class
    the data has (``<out_root>/gan/all/<run-id>``). ``resume=True`` continues the newest run
    of ``cls`` under ``out_root`` (``resume=PATH``: that run) with its own config and seed;
    ``steps``/``epochs`` then set the new total length. ``minutes``: a wall-clock budget
    (with ``steps``/``epochs`` too: whichever ends first; when resuming: this many more
    minutes); the step it stops at becomes the run's recorded ``total_steps``.
    ``split`` (what :func:`wbcgen.data.split_info` returns) is recorded in config.json when
    ``cells`` is the train part of a split file.
    """
    if minutes is not None and not minutes > 0:
        raise UserError(f"--minutes must be positive (got {minutes})")
    deadline = time.perf_counter() + 60 * minutes if minutes else None
    dist = ddp.setup(device)
    try:
        return _train(cells, cls, config, Path(out_root), steps, epochs, batch_size, seed, resume,
                      progress, run_name, overwrite, dist, deadline, minutes, split)
    finally:
        ddp.teardown(dist)


def _data(cells, cls: str, cfg: GanConfig, classes: list[str] | None = None):
    """``(images, labels or None, classes or None)`` for a per-class or a conditional run."""
    if cfg.conditional:
        if cls != "all":
            raise UserError(f"the {cfg.name!r} config is class-conditional: it trains one model for all "
                            f"classes (use --cls all, not {cls})")
        if classes is None:
            counts = cells.counts()
            classes = [c for c in cells.classes if counts.get(c, 0) > 0]
        if len(classes) < 2:
            raise UserError("a conditional GAN needs images of at least two classes")
        real, labels = labelled_images(cells, classes)
        return real, labels, list(classes)
    if cls == "all":
        raise UserError(f"the {cfg.name!r} config trains one class per run; give a class (the CLI's "
                        f"--cls all trains one run per class) or use a conditional config such as cond")
    return class_images(cells, cls), None, None


_UNBOUNDED = 2 ** 62  # the step limit of a run bounded by --minutes only


def _train(cells, cls, config, out_root, steps, epochs, batch_size, seed, resume, progress, run_name,
           overwrite, dist, deadline=None, minutes=None, split=None) -> Path:
    data_hash = cells.manifest_hash()
    ckpt = None
    if resume:
        run_dir = _resolve_resume(resume, out_root, cls)
        meta = read_run_config(run_dir)
        if meta["data"]["manifest_hash"] != data_hash:
            raise UserError(f"cannot resume {run_dir}: it was trained on different data (manifest hash differs)")
        cfg, seed = load_config(meta["gan"]), int(meta["seed"])
        real, labels, classes = _data(cells, meta["cls"], cfg, meta.get("classes"))
        ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.safetensors")
        if steps or epochs:
            total = total_steps(cfg, len(real), cfg.batch_size, steps, epochs)
        elif minutes:
            total = _UNBOUNDED
        elif meta.get("total_steps") is None:
            raise UserError(f"{run_dir} was stopped before the end of its time budget; resume it with "
                            f"--steps N or --minutes M")
        else:
            total = meta["total_steps"]
    else:
        cfg = load_config(config)
        if batch_size is not None:
            cfg = cfg.replace(batch_size=int(batch_size))
        real, labels, classes = _data(cells, cls, cfg)
        total = total_steps(cfg, len(real), cfg.batch_size, steps, epochs) if (steps or epochs or not minutes) \
            else _UNBOUNDED
        run_dir = Path(ddp.broadcast_text(str(new_run_dir(out_root, cls, cfg.name, seed, run_name, overwrite))
                                          if dist.main else "", dist))
        meta = {"kind": RUN_KIND, "cls": cls, "run_id": run_dir.name, "seed": seed, "total_steps": total,
                "gan": cfg.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "data": _data_record(cells, cls, len(real), data_hash, split, classes),
                "world_size": dist.world, "device": dist.device.type, "torch": torch.__version__,
                "wbcgen": wbcgen.__version__,
                "quality_proxy": "Frechet distance of eval_n EMA samples vs the class's real images in "
                                 "wbcgen.gan.quality features (wbcgen-fixed-v1); lower is better"}
        if classes:
            meta["classes"] = classes
            meta["data"]["n_images_per_class"] = {c: int((labels == k).sum()) for k, c in enumerate(classes)}
            meta["data"]["sampling"] = "class-balanced"
    meta["total_steps"] = None if total == _UNBOUNDED else total
    if minutes:  # every budgeted session, in order; the stop step is filled in at the end
        meta["budget"] = meta.get("budget", []) + [{"minutes": minutes, "stopped_at_step": None, "stopped_by": None}]
    tr = Trainer(cfg, real, seed, dist, labels, classes)
    log, ck_dir = run_dir / "log.jsonl", run_dir / "checkpoints"
    if ckpt is not None:
        tr.load_state_dict(ckpt)
        del ckpt
        if dist.main:
            truncate_log(log, tr.step)
    if dist.main:
        atomic_write_json(run_dir / "config.json", meta)
        if not resume:
            write_train_images(run_dir, image_rows(_cells_of(cells, cls, classes)))
    bar = _bar(tr, total, deadline, minutes, cls, progress and dist.main)
    t0, seen, acc = time.perf_counter(), 0, []
    while tr.step < total:
        out = tr.train_step()
        seen += cfg.batch_size
        acc.append(torch.stack([out["loss_d"], out["loss_g"], out["d_real"], out["d_fake"]]))
        if not ddp.all_true(bool(torch.isfinite(acc[-1][:2]).all()), dist):
            bar.close()
            raise TrainingDiverged(
                f"training diverged at step {tr.step} (loss_d={float(out['loss_d']):.4g}, "
                f"loss_g={float(out['loss_g']):.4g}); the last good checkpoint is {ck_dir / 'latest.safetensors'} "
                f"(resume it with a lower learning rate or another seed)")
        # a time budget ends the run at this step on every rank (the stop step is recorded below)
        timed_out = deadline is not None and not ddp.all_true(time.perf_counter() < deadline, dist)
        s, last = tr.step, tr.step == total or timed_out
        if deadline is not None:
            bar.n = min(bar.total, round(bar.total - (deadline - time.perf_counter()), 1))
            bar.set_postfix_str(f"step {s}", refresh=False)
        bar.update(0 if deadline is not None else 1)
        if dist.main and (s % cfg.log_every == 0 or last):
            m = torch.stack(acc).mean(0).tolist()
            acc, dt = [], time.perf_counter() - t0
            rec = {"step": s, "epoch": round(tr.order.epochs_done, 4), "loss_d": round(m[0], 6),
                   "loss_g": round(m[1], 6), "d_real": round(m[2], 4), "d_fake": round(m[3], 4),
                   "img_per_s": round(seen / dt, 2), "time_s": round(dt, 2)}
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
        _export(tr, cfg, cls, run_dir, meta, time.perf_counter() - t0, seen)
    ddp.barrier(dist)
    return run_dir


def _bar(tr: Trainer, total: int, deadline, minutes, cls: str, enabled: bool):
    if deadline is None:
        return tqdm(total=total, initial=tr.step, desc=f"train-gan {cls}", unit="step", dynamic_ncols=True,
                    disable=not enabled, file=sys.stderr)
    # a time budget: the bar runs over the budget's seconds, so its ETA is the budget's end
    budget = round(max(deadline - time.perf_counter(), 0.0) + 0.5)
    return tqdm(total=budget, desc=f"train-gan {cls} ({minutes:g} min)", unit="s", dynamic_ncols=True,
                disable=not enabled, file=sys.stderr,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")


def _evaluate(tr: Trainer, cls: str, s: int, total: int, log: Path) -> bool:
    """Quality proxy + collapse check at step ``s``; True when this is the best step so far."""
    ev = tr.evaluate()
    best = tr.best["fd"] is None or ev["fd"] < tr.best["fd"]
    if best:
        tr.best = {"fd": ev["fd"], "step": s}
    append_jsonl(log, {"step": s, "eval": ev | {"best": best}})
    # an untrained G is trivially "collapsed": warn once samples had been diverse, or late
    tr.was_diverse = getattr(tr, "was_diverse", False) or not ev["collapsed"]
    if ev["collapsed"] and (tr.was_diverse or s >= total // 4):
        tqdm.write(f"warning: {cls} samples look collapsed at step {s} (diversity {ev['diversity_ratio']:.2f} "
                   f"of the real images'); try more augmentation, a lower learning rate or an earlier "
                   f"checkpoint", file=sys.stderr)
    return best


def _link(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _export(tr: Trainer, cfg: GanConfig, cls: str, run_dir: Path, meta: dict, wall: float, seen: int) -> None:
    """``generator/`` via save_pretrained (EMA weights of the best or the final step) + summary.json."""
    state, step = tr.sampler().state_dict(), tr.step
    if cfg.export == "best" and tr.best["step"] is not None and (run_dir / "checkpoints" / "best.safetensors").is_file():
        best = load_checkpoint(run_dir / "checkpoints" / "best.safetensors")
        state, step = (best["ema"] if tr.ema is not None else best["G"]), int(best["step"])
    extra = {"classes": tr.classes} if tr.classes else {}
    g = Generator(cfg.to_dict() | {"cls": cls, "run_id": run_dir.name, "step": step} | extra)
    g.load_state_dict(state)
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
        "best": tr.best, "budget": meta.get("budget"),
        "generator_sha256": file_sha256(run_dir / "generator" / "model.safetensors"),
        "train_images_sha256": train_images_hash(rows) if rows else None, "n_train_images": len(rows) or None,
        "data_source": meta["data"].get("data_source"), "license": meta["data"].get("license"),
        "wall_s_this_session": round(wall, 2), "img_per_s_this_session": round(seen / max(wall, 1e-9), 2)})
