"""``wbcgen train-gan`` and ``wbcgen sample``: per-class DCGANs on the command line."""
from __future__ import annotations

import os
import time
from pathlib import Path

import click

from classifiers.runtime import UserError

from .common import data_options, load_from_options, split_options, split_part, user_errors


def parse_classes(text: str | None, available=None) -> list[str]:
    """``basophil`` | ``basophil,eosinophil`` | ``all`` → class names (validated)."""
    from wbcgen.data import CLASSES

    if text is None or text.strip().lower() == "all":
        return list(available if available is not None else CLASSES)
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not names:
        raise UserError("--cls needs a class name, a comma list or 'all'")
    for n in names:
        if n not in CLASSES:
            raise UserError(f"unknown class {n!r}; choose from {', '.join(CLASSES)} or all")
    return list(dict.fromkeys(names))


@click.command("train-gan")
@click.option("--cls", "cls_text", required=True, metavar="CLASS[,CLASS…]|all",
              help="Class(es) to train one GAN each for (a conditional config: all, one model).")
@data_options
@split_options
@click.option("--config", default=None, metavar="fast64|fast64x2|fast|cond|proj|paper|tiny|FILE",
              help="GAN config: a preset or a TOML/JSON file (see recipes/dcgan-*.toml). Default: fast64x2 "
                   "(an ensemble: two fast64 generators per class, each on half the budget; the quality "
                   "benchmark's best). fast64: one per-class generator learnt at 64 px. "
                   "cond: ONE class-conditional model for all classes (--cls all).")
@click.option("--steps", type=int, default=None, help="Training steps (total, also when resuming).")
@click.option("--epochs", type=float, default=None, help="Training length in passes over the class's images.")
@click.option("--minutes", type=float, default=None, metavar="M",
              help="Wall-clock training budget, shared over the classes of per-class runs (a conditional "
                   "model gets all of it); with --steps/--epochs whichever ends first. The step reached is "
                   "recorded, so --resume continues by steps.")
@click.option("--batch-size", type=int, default=None, help="Global batch size (split over DDP processes).")
@click.option("--out", "out_root", default="runs", show_default=True, metavar="DIR",
              help="Runs go to DIR/gan/<class>/<run-id>/.")
@click.option("--name", "run_name", default=None, metavar="RUN_ID", help="Run folder name (default: time-config-seed).")
@click.option("--resume", is_flag=True, help="Continue the newest run of each class from checkpoints/latest "
              "(with --cls all: the conditional run when it is the newest).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder of the same --name.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--threads", type=int, default=None,
              help="CPU threads for torch (default: torch's choice; 1 is faster on a busy machine).")
@user_errors
def train_gan_cmd(cls_text, config, steps, epochs, minutes, batch_size, out_root, run_name, resume, seed, device,
                  overwrite, quiet, threads, split_file, fold, **data_opts):
    """Train one DCGAN per class (or one conditional model); writes OUT/gan/<class>/<run-id>/.

    \b
    Each run folder holds config.json, log.jsonl (both losses), samples/step_*.png
    (fixed-z grids), checkpoints/latest + best (.safetensors, best by a Fréchet-distance
    quality proxy) and generator/ (model.safetensors + config.json) for `wbcgen sample`.

    \b
    Examples:
      wbcgen train-gan --cls basophil                     # embedded sample, a few CPU minutes
      wbcgen train-gan --cls all --data ../shared/data/pbc-dev --steps 3000
      wbcgen train-gan --cls all --data ../shared/data/pbc-dev --minutes 60    # 12 min per class
      wbcgen train-gan --cls all --config fast64x2 --minutes 60   # 2 generators per class, 6 min each
      wbcgen train-gan --cls all --config cond --minutes 60   # one model: OUT/gan/all/<run-id>/
      wbcgen train-gan --cls basophil --config paper      # the paper's DCGAN (very slow)
      wbcgen train-gan --cls basophil --resume --steps 2000
      wbcgen train-gan --cls all --data ../shared/data/pbc-dev --split pbc-split.json   # train part only
      torchrun --nproc_per_node 2 --no-python wbcgen train-gan --cls basophil   # DDP
    """
    from wbcgen.gan.schedule import train_gans

    if steps is not None and epochs is not None:
        raise UserError("give either --steps or --epochs, not both")
    _threads(threads)
    if resume and (config is not None or batch_size is not None or run_name is not None):
        raise UserError("--resume continues a run with its own config; drop --config, --batch-size and --name")
    parse_classes(cls_text)  # fail on a typo before loading any images
    _check_early(device, run_name)
    if minutes is not None and not minutes > 0:
        raise UserError(f"--minutes must be positive (got {minutes})")
    conditional = _conditional(config, resume, out_root, steps)
    if conditional and cls_text.strip().lower() != "all":
        raise UserError("a conditional config trains one model for all classes: use --cls all")
    cells, split = split_part(load_from_options(progress=not quiet, **data_opts), split_file, fold, "train")
    present = cells.present_classes()
    classes = parse_classes(cls_text, available=present)
    for c in classes:
        if c not in present:
            raise UserError(f"the data set has no {c} images (it has {', '.join(present) or 'none'})")
    for c in [c for c in cells.classes if c not in present and cls_text.strip().lower() == "all"]:
        click.echo(f"skipping {c}: no images in the data set", err=True)
    t0 = [time.perf_counter()]
    short = {}

    def done(c, run):
        if os.environ.get("RANK", "0") == "0" and (run / "generator").is_dir():  # once under torchrun
            click.echo(f"{c}: {run}  ({time.perf_counter() - t0[0]:.0f} s)")
            if minutes:  # minutes it would take to reach the config's cap (what it took if it did)
                short[c] = _shortfall(c, run) or (time.perf_counter() - t0[0]) / 60
        t0[0] = time.perf_counter()

    # per-class runs share --minutes (each an equal part of what is left; a `pretrain` config first
    # trains one pooled model that starts them all); a conditional model gets all of it
    train_gans(cells, ["all"] if conditional else classes, config=config, out_root=out_root, minutes=minutes,
               steps=steps, epochs=epochs, batch_size=batch_size, seed=seed, resume=resume, progress=not quiet,
               run_name=run_name, overwrite=overwrite, device=None if device == "auto" else device, split=split,
               on_done=done)
    if any(isinstance(v, dict) for v in short.values()):  # the budget ended before a config's best step
        need = sum(v["minutes_needed"] if isinstance(v, dict) else v for v in short.values())
        click.echo(f"this CPU needs about --minutes {need:.0f} for these generators to reach their best step "
                   f"(or give --steps); with --minutes {minutes:g} their cells are rougher", err=True)


def _shortfall(c: str, run) -> dict | None:
    """Tell the user when --minutes stopped a run's generators before its config's ``max_steps``."""
    from wbcgen.gan.runs import budget_shortfall, read_run_config

    s = budget_shortfall(run, int(read_run_config(run)["gan"].get("max_steps") or 0))
    if s:
        click.echo(f"{c}: the budget stopped its generator(s) at step {'/'.join(map(str, s['steps']))} of the "
                   f"config's {s['max_steps']} (its cells are best there); at this speed that takes about "
                   f"{s['minutes_needed']:.1f} min instead of {s['minutes']:.1f}", err=True)
    return s


def _conditional(config, resume: bool, out_root, steps: int | None = None) -> bool:
    """Is this a class-conditional (one model for all classes) training? (A fresh run's config is
    checked against --steps here, before any image is loaded.)"""
    from wbcgen.gan import load_config
    from wbcgen.gan.ensemble import check_audition_steps

    if resume:  # --resume --cls all: the conditional run when it is newer than every per-class run
        from wbcgen.data import CLASSES
        from wbcgen.gan.runs import newest_run

        cond = newest_run(out_root, "all", need="checkpoint")
        mtime = lambda p: (p / "config.json").stat().st_mtime  # noqa: E731
        return cond is not None and all(p is None or mtime(p) < mtime(cond)
                                        for p in (newest_run(out_root, c, need="checkpoint") for c in CLASSES))
    cfg = load_config(config)
    check_audition_steps(cfg, steps)  # before loading any image
    return cfg.conditional


@click.command("sample")
@click.option("-n", "n", type=int, default=1000, show_default=True, help="Images per class.")
@click.option("--cls", "cls_text", default=None, metavar="CLASS[,CLASS…]|all",
              help="Classes to sample (default: every class with a trained generator).")
@click.option("--from", "source", default=None, metavar="PATH",
              help="A run folder, a folder of runs (train-gan --out DIR) or a generator folder. "
                   "Default: the newest run per class under runs/.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", default="runs/synthetic", show_default=True, metavar="DIR")
@click.option("--batch-size", type=int, default=250, show_default=True,
              help="Images per forward pass (keep it fixed to reproduce files bit for bit).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--overwrite", is_flag=True, help="Replace samples already in --out.")
@click.option("--quiet", is_flag=True, help="Print only the output folder.")
@click.option("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice).")
@user_errors
def sample_cmd(n, cls_text, source, seed, out_dir, batch_size, device, overwrite, quiet, threads):
    """Write N synthetic 128×128 PNGs per class plus a metadata.csv the data layer reads.

    \b
    The same --seed gives byte-identical files. Output layout:
      OUT/<class>/<class>_000000.png …   OUT/metadata.csv
      (file_name,label,seed,index,generator_sha256)

    \b
    Examples:
      wbcgen sample -n 1000                                # newest run of every trained class
      wbcgen sample -n 1000 --cls basophil --from runs/gan/basophil/<run-id> --out synthetic
      wbcgen sample -n 200 --from my_runs --seed 3         # what train-gan --out my_runs wrote
      wbcgen sample -n 1000 --from me/wbc-dcgan            # a Hub model repo
      wbcgen data inspect runs/synthetic                   # read them back
    """
    from wbcgen.gan import find_runs, sample_to_folder

    if n < 1:
        raise UserError(f"-n must be a positive number of images per class (got {n})")
    if batch_size < 1:
        raise UserError(f"--batch-size must be positive (got {batch_size})")
    _threads(threads)
    _check_early(device)
    wanted = parse_classes(cls_text) if cls_text else None
    root = Path(source) if source else Path("runs")
    if source and not root.exists():
        from wbcgen import hub

        if hub.is_repo_id(source):  # a Hub model repo: fetched (safetensors + JSON only) into the cache
            root = hub.resolve_generator_source(source)
    if not root.exists():
        what = "--from" if source else "the default runs folder"
        raise UserError(f"{what} {root} does not exist; train a generator with wbcgen train-gan first or pass --from PATH")
    if (root / "wbcgen.json").is_file():  # a downloaded / dry-run Hub repo: check its manifest first
        from wbcgen import hub

        hub.resolve_generator_source(root)
    runs = find_runs(root)
    if wanted is None:
        wanted = list(runs)
        if not wanted:
            raise UserError(f"no trained generator found under {root}; run wbcgen train-gan --cls CLASS first")
    missing = [c for c in wanted if c not in runs]
    if missing:
        raise UserError(f"no trained {', '.join(missing)} generator under {root} "
                        f"(found: {', '.join(runs) or 'none'})")
    timings: dict = {}
    out = sample_to_folder({c: runs[c] for c in wanted}, n, out_dir, seed, batch_size=batch_size,
                           device=None if device == "auto" else device, overwrite=overwrite,
                           progress=not quiet, timings=timings)
    if not quiet:
        for c, t in timings.items():
            click.echo(f"{c}: {t['n']} images from {runs[c]}  (generate {t['generate_s']:.2f} s, "
                       f"write {t['write_s']:.2f} s)")
    click.echo(str(out))


def _check_early(device: str, name: str | None = None) -> None:
    """Flags that can be checked before any image is read or any folder is made."""
    from classifiers.runtime import pick_device
    from wbcgen.outputs import plain_name

    pick_device(None if device == "auto" else device)
    if name is not None:
        plain_name(name, "--name")


def _threads(n: int | None) -> None:
    if n is not None:
        if n < 1:
            raise UserError(f"--threads must be positive (got {n})")
        import torch

        torch.set_num_threads(n)


def register(group: click.Group) -> None:
    group.add_command(train_gan_cmd)
    group.add_command(sample_cmd)
