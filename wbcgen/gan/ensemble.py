"""GAN ensembles (``members = k`` in a config): k generators per class (or per conditional model)
trained independently and sampled as one — Eilertsen et al. 2021, "Ensembles of GANs for
synthetic training data generation": a classifier trained on cells pooled from several GANs
beats one trained on a single GAN's cells, because each GAN covers a different part of the
real distribution (and fails in different ways).

Run folder ``<out_root>/gan/<cls>/<run-id>/`` (``"kind": "wbcgen-gan-run"``, ``"ensemble"``):

* ``members/gan/<cls>/m0`` … ``m{k-1}``: ordinary run folders trained by the one GAN training
  loop (:func:`wbcgen.gan.train.train_gan`) with seeds ``seed``, ``seed + 1``, …; with a time
  budget each gets an equal share of what is left when it starts;
* once every member has its ``generator/``: ``generator/`` (ONE :class:`Generator` holding the
  members' weights as ``members.<j>.*``; each latent is drawn by the member a hash of it names,
  :func:`wbcgen.gan.models.member_index`), ``samples/ensemble.png``, ``summary.json``.

``sample``, ``evaluate``, ``report`` and ``push`` see an ordinary run with a generator.
``resume`` continues the members that have no ``generator/`` yet and starts the missing ones.

``audition = p`` (> members): p candidates ``m0`` … ``m{p-1}`` train ``audition_steps`` each, the
selection proxy ranks them, and only the ``members`` best continue and make the generator
(:func:`_audition`; ``config.json`` ``audition`` holds every candidate's score and the choice).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from classifiers.runtime import UserError, atomic_write_json, pick_device, run_lock
from wbcgen.gan import train as gan_train
from wbcgen.gan.config import GanConfig, load_config
from wbcgen.gan.models import Generator
from wbcgen.gan.runs import _is_run, new_run_dir, read_evals, read_run_config, run_age, save_grid
from wbcgen.provenance import image_rows, read_train_images, train_images_hash, write_train_images

MEMBERS = "members"


def is_ensemble(run: Path) -> bool:
    try:
        return bool(read_run_config(run).get("ensemble"))
    except UserError:
        return False


def member_dir(run: Path, cls: str, j: int) -> Path:
    return run / MEMBERS / "gan" / cls / f"m{j}"


def newest_unfinished(out_root: str | Path, cls: str) -> Path | None:
    """The newest ensemble run of ``cls`` under ``out_root`` that has no ``generator/`` yet."""
    d = Path(out_root) / "gan" / cls
    runs = [p for p in d.iterdir() if p.is_dir() and _is_run(p) and is_ensemble(p)
            and not (p / "generator" / "model.safetensors").is_file()] if d.is_dir() else []
    return max(runs, key=run_age) if runs else None


def train_ensemble(cells, cls: str, *, config=None, out_root="runs", minutes: float | None = None,
                   steps: int | None = None, epochs: float | None = None, seed: int = 0,
                   resume: bool | str | Path = False, run_name: str | None = None, overwrite: bool = False,
                   split: dict | None = None, **kw) -> Path:
    """Train (or, with ``resume``, continue) the ensemble run of ``cls``; returns its folder.
    ``kw`` goes to every member's :func:`wbcgen.gan.train.train_gan` (``progress``, ``device``,
    ``batch_size``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("an ensemble config (members > 1) trains in one process; run it without torchrun")
    end = gan_train.budget_clock() + 60 * minutes if minutes else None
    with contextlib.ExitStack() as lock:
        if resume:
            run = newest_unfinished(out_root, cls) if resume is True else Path(resume)
            if run is None or not is_ensemble(run):
                raise UserError(f"nothing to resume: no unfinished {cls} ensemble run under {Path(out_root) / 'gan' / cls}")
            lock.enter_context(run_lock(run))
            meta = read_run_config(run)
            gan_train.check_same_data(run, meta, cells.manifest_hash())
            cfg, seed = load_config(meta["gan"]), int(meta["seed"])
            steps, epochs = steps or meta.get("steps"), epochs or meta.get("epochs")  # the members' length
            if not (steps or epochs or minutes):
                raise UserError(f"{run} was stopped before the end of its time budget; resume it with --steps N "
                                "or --minutes M")
        else:
            cfg = load_config(config)
            if kw.get("batch_size") is not None:
                cfg = cfg.replace(batch_size=int(kw["batch_size"]))
            check_audition_steps(cfg, steps)
            inputs = {"--data": cells.source} if cells.source else {}
            run = new_run_dir(out_root, cls, cfg.name, seed, run_name, overwrite, inputs, lock)
            if not (steps or epochs or minutes):  # the config's own length, recorded for --resume
                steps, epochs = cfg.steps or None, cfg.epochs or None
            meta = _meta(cells, cls, cfg, run, seed, split, kw.get("device")) | {
                "steps": steps, "epochs": epochs, "minutes": minutes}
            atomic_write_json(run / "config.json", meta)
        one = cfg.replace(members=1, audition=0, refine_steps=0)  # the refiner is the ensemble's, trained once
        deadline = gan_train.gan_deadline(cfg, end, minutes)

        def member(j: int, share, steps, epochs) -> None:   # start or continue member j
            m = member_dir(run, cls, j)
            if (m / "checkpoints" / "latest.safetensors").is_file():
                gan_train.train_gan(cells, cls, resume=m, minutes=share, steps=steps, epochs=epochs, split=split,
                                    **{k: v for k, v in kw.items() if k != "batch_size"})
            else:
                gan_train.train_gan(cells, cls, config=one, out_root=run / MEMBERS, run_name=m.name, seed=seed + j,
                                    minutes=share, steps=steps, epochs=epochs, split=split, overwrite=True, **kw)

        if cfg.audition:
            _audition(run, cfg, cls, meta, member, deadline, steps, epochs)
        else:
            for j in range(cfg.members):
                if not (member_dir(run, cls, j) / "generator" / "model.safetensors").is_file():
                    member(j, gan_train.budget_share(deadline, cfg.members - j), steps, epochs)
        assemble(run, cfg, cls, meta, cells, end, kw.get("progress", True))
    return run


def check_audition_steps(cfg: GanConfig, steps: int | None) -> None:
    """An auditioning ensemble cannot stop before its candidates are scored (train-gan checks this
    before loading any image, train_ensemble again)."""
    if cfg.audition and steps and steps < cfg.audition_steps:
        raise UserError(f"--steps {steps} is shorter than the config's audition ({cfg.audition_steps} steps "
                        "per candidate); give more steps or use --minutes")


def _audition(run: Path, cfg: GanConfig, cls: str, meta: dict, member, deadline, steps, epochs) -> None:
    """``audition = p``: train p candidates to ``audition_steps`` (each at most an equal share of the
    budget with the members still to come), rank them by the selection proxy at their last step
    (:func:`wbcgen.gan.train._rank`: the learnt proxy's class accuracy, then the FD), and continue
    the ``members`` best on what is left. ``config.json`` records the scores, the choice and which
    members have been continued, so a resume picks up in either phase."""
    au = meta.get("audition")
    if au is None:
        p, s = cfg.audition, cfg.audition_steps
        for j in range(p):
            m = member_dir(run, cls, j)
            done = (m / "summary.json").is_file() and json.loads((m / "summary.json").read_text())["steps"] >= s
            if not done:
                member(j, gan_train.budget_share(deadline, p - j + cfg.members), s, None)
        scores = [_last_eval(member_dir(run, cls, j)) | {"member": f"m{j}", "seed": int(meta["seed"]) + j}
                  for j in range(p)]
        chosen = sorted(sorted(range(p), key=lambda j: (gan_train._rank(scores[j]), j))[:cfg.members])
        au = {"candidates": p, "steps": s, "proxy": cfg.select, "scores": scores,
              "chosen": chosen, "continued": []}
        meta.update(audition=au, members=[str(member_dir(run, cls, j).relative_to(run)) for j in chosen],
                    member_seeds=[int(meta["seed"]) + j for j in chosen])
        atomic_write_json(run / "config.json", meta)
    todo = [j for j in au["chosen"] if j not in au["continued"]]
    for n, j in enumerate(todo):
        member(j, gan_train.budget_share(deadline, len(todo) - n), steps, epochs)
        au["continued"].append(j)
        atomic_write_json(run / "config.json", meta)


def _last_eval(m: Path) -> dict:
    """A member's last selection-proxy record (``log.jsonl``): step, fd and, with the learnt proxy, class_acc."""
    evals = read_evals(m)
    if not evals:
        raise UserError(f"ensemble candidate {m} has no quality evaluation in its log.jsonl; it cannot be ranked")
    last = evals[-1]
    ev = last["eval"]
    return {"step": last["step"], "fd": ev["fd"]} | ({"class_acc": ev["class_acc"]} if "class_acc" in ev else {})


def _meta(cells, cls: str, cfg: GanConfig, run: Path, seed: int, split, device=None) -> dict:
    classes = cells.present_classes() if cfg.conditional else None
    dev = pick_device(device)
    rows = image_rows(gan_train._cells_of(cells, cls, classes))
    data = gan_train._data_record(cells, len(rows), cells.manifest_hash(), split, rows)
    meta = gan_train.run_meta(cls, cfg, run, seed, None, data) | {
        "ensemble": True, "members": [str(member_dir(run, cls, j).relative_to(run)) for j in range(cfg.members)],
        "member_seeds": [seed + j for j in range(cfg.members)], "device": "n/a",
        "precision": gan_train.train_precision(cfg, dev)}  # what every member's steps compute in
    if classes:
        meta["classes"] = classes
    return meta


def assemble(run: Path, cfg: GanConfig, cls: str, meta: dict, cells=None, deadline: float | None = None,
             progress: bool = False) -> Path:
    """Write ``generator/`` (every member's exported weights in one model and, with ``refine_steps``, the
    detail refiner trained on ``cells`` — the run's training data — until ``deadline``),
    ``samples/ensemble.png`` and ``summary.json`` once every member is done."""
    members = [member_dir(run, cls, j) for j in (meta.get("audition") or {}).get("chosen", range(cfg.members))]
    state, rows, summaries = {}, [], []
    for j, m in enumerate(members):
        gen = m / "generator"
        if not (gen / "model.safetensors").is_file():
            raise UserError(f"ensemble member {m} has no generator/ yet; resume the run")
        state |= {f"members.{j}.{k}": v for k, v in load_file(str(gen / "model.safetensors")).items()}
        rows = gan_train._union(rows, read_train_images(m) or read_train_images(gen))  # the run's list has paths
        summaries.append(json.loads((m / "summary.json").read_text(encoding="utf-8")))
    extra = {"classes": meta["classes"]} if meta.get("classes") else {}
    # every member's bank holds the maps of the class's training cells (the same images)
    lay = {"layout_n": len(state["members.0.layout_bank"])} if cfg.layout else {}
    g = Generator(cfg.to_dict() | {"cls": cls, "run_id": run.name,
                                   "steps": [s["exported_step"] for s in summaries]} | extra | lay)
    if g.refiner is not None:  # untrained until below: the members hold G's weights only
        state |= {f"refiner.{k}": v for k, v in g.refiner.state_dict().items()}
    g.load_state_dict(state, strict=True)
    refiner = None
    if g.refiner is not None:
        if cells is None:
            raise UserError(f"{run}: its config has a detail refiner; assembling needs the training data")
        images = gan_train._data(cells, cls, cfg, meta.get("classes"))[0]
        refiner = gan_train.train_detail(g, cfg, images, int(meta["seed"]), deadline, run, progress)
    tmp = run / ".generator.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    g.cpu().eval().save_pretrained(tmp)
    write_train_images(tmp, rows, with_paths=False)
    write_train_images(run, rows, with_paths=all("path" in r for r in rows))
    shutil.rmtree(run / "generator", ignore_errors=True)
    tmp.rename(run / "generator")
    _grid(g, run, extra.get("classes"))
    from wbcgen.gan.sample import file_sha256

    atomic_write_json(run / "summary.json", {
        "cls": cls, **extra, "members": [{"run": str(m.relative_to(run)), "steps": s["steps"],
                                          "exported_step": s["exported_step"], "budget": s.get("budget")}
                                         for m, s in zip(members, summaries)],
        **({"refiner": refiner} if refiner else {}),
        "generator_sha256": file_sha256(run / "generator" / "model.safetensors"),
        "train_images_sha256": train_images_hash(rows) if rows else None, "n_train_images": len(rows) or None,
        "data_source": meta["data"].get("data_source"), "license": meta["data"].get("license")})
    return run / "generator"


@torch.no_grad()
def _grid(g: Generator, run: Path, classes) -> None:
    """64 cells from fixed latents (8 per class row for a conditional ensemble)."""
    from wbcgen.gan.sample import latents

    z = latents(64, g.z_dim, seed=0)
    if classes:
        y = torch.arange(len(classes)).repeat_interleave(8)
        x = g(z[:len(y)], y)
    else:
        x = g(z)
    save_grid(x, run / "samples" / "ensemble.png")
