"""Several GAN runs under one command: every class of ``--cls all`` (or a list), sharing one
``--minutes`` budget — what `wbcgen train-gan` and the quality benchmark call.

* a conditional config: ONE run (``gan/all/<run-id>``) with the whole budget;
* per-class configs: one run per class, each given an equal part of the budget LEFT when it
  starts (:func:`wbcgen.gan.train.budget_share`);
* ``pretrain = f`` (per-class configs, two or more classes, a fresh start): first one
  unconditional run on every class's images pooled (``gan/pooled/<run-id>``) for ``f`` of the
  budget (with ``--steps``/``--epochs``: as long as one class's run), then every class's run
  starts from its last G, D and EMA weights (fine-tuning, as in Wang et al. 2018,
  "Transferring GANs"): what all cells share — background, red cells, stain, a round cell with a
  nucleus — is learnt once from all ~2,850 images instead of five times from ~330–900.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from wbcgen.gan import train as gan_train
from wbcgen.gan.config import load_config


def train_gans(cells, classes: list[str], *, config=None, out_root="runs", minutes: float | None = None,
               steps: int | None = None, epochs: float | None = None, seed: int = 0, resume=False,
               on_done: Callable[[str, Path], None] | None = None, **kw) -> dict[str, Path]:
    """Train ``classes`` (per-class runs, or one conditional run) and return ``{cls or "all": run}``
    (with ``"pooled"``: the pre-training run). ``kw`` goes to :func:`wbcgen.gan.train_gan`
    (``progress``, ``device``, ``split``, ``run_name``, ``overwrite``, ``batch_size``);
    ``on_done(cls, run)`` is called after each run."""
    cfg = None if resume else load_config(config)
    if cfg is not None and kw.get("batch_size") is not None:
        cfg = cfg.replace(batch_size=int(kw.pop("batch_size")))
    conditional = cfg.conditional if cfg is not None else classes == ["all"]  # resume: the caller's choice
    jobs = ["all"] if conditional else list(classes)
    deadline = gan_train.budget_clock() + 60 * minutes if minutes else None
    runs: dict[str, Path] = {}

    def run(cls: str, share, init_from=None) -> Path:
        r = gan_train.train_gan(cells, cls, config=cfg, out_root=out_root, minutes=share, steps=steps, epochs=epochs,
                                seed=seed, resume=resume, init_from=init_from, **kw)
        runs[cls] = r
        if on_done is not None:
            on_done(cls, r)
        return r

    init = None
    if cfg is not None and cfg.pretrain and not conditional and len(jobs) > 1:
        init = run(gan_train.POOLED, cfg.pretrain * minutes if minutes else None)
    for i, c in enumerate(jobs):
        run(c, gan_train.budget_share(deadline, len(jobs) - i), init)
    return runs
