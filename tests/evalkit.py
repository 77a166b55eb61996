"""Shared set-up for the evaluate/report tests: a real pbc-dev subset and synthetic cells made
by the real pipeline (`wbcgen train-gan --config tiny` for a few steps, then `wbcgen sample`),
run in a scratch working directory so the commands' default locations are exercised; and
``bench_module`` for the tests of the bench/ scripts."""
from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path

from click.testing import CliRunner

from wbcgen.cli import main

GAN_STEPS = 3          # a few steps of the tiny config: real generators, not trained to quality
N_SYNTHETIC = 12       # images per class


@contextmanager
def chdir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def cli(*args: str, ok: bool = True):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, f"wbcgen {' '.join(map(str, args))} failed:\n{res.output}"
    return res


def make_synthetic(work: Path, real_dir: Path) -> Path:
    """Train tiny GANs for every class on ``real_dir`` and sample with the commands' defaults
    (cwd = ``work``); returns the folder `wbcgen sample` wrote."""
    from wbcgen.evaluate import default_synthetic_path

    with chdir(work):
        cli("train-gan", "--cls", "all", "--data", real_dir, "--config", "tiny", "--steps", GAN_STEPS,
            "--seed", "0")
        cli("sample", "-n", N_SYNTHETIC, "--seed", "0")
        out = work / default_synthetic_path()
    assert (out / "metadata.csv").is_file(), f"`wbcgen sample` wrote no metadata.csv in {out}"
    return out


def kill_during_step_7(monkeypatch, cells, cls: str, cfg, out_root, seed: int) -> None:
    """Start an 8-step ``train_gan`` run into ``out_root`` that dies during step 7, as a killed
    process would (its last checkpoint is step 4); resume it with ``train_gan(resume=True)``."""
    import pytest

    from wbcgen.gan import train_gan
    from wbcgen.gan.trainer import Trainer

    step = Trainer.train_step

    def killed_at_7(self):
        if self.step == 6:
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(Trainer, "train_step", killed_at_7)
    with pytest.raises(KeyboardInterrupt):
        train_gan(cells, cls, config=cfg, out_root=out_root, steps=8, seed=seed, progress=False)
    monkeypatch.setattr(Trainer, "train_step", step)


def resume_matches_uninterrupted(monkeypatch, cells, cls: str, cfg, root, parts: tuple[str, ...], seed: int = 5):
    """An 8-step run into ``root/a`` against one killed during step 7 into ``root/b`` and resumed, each
    start as a fresh process would (no cached per-class classifier): asserts both end at step 8 with
    identical ``parts`` of their checkpoints; returns (uninterrupted, resumed) run folders."""
    import torch

    from classifiers.runtime import load_checkpoint
    from wbcgen.gan import train as gan_train
    from wbcgen.gan import train_gan

    gan_train._PROXY_CACHE.clear()
    full = train_gan(cells, cls, config=cfg, out_root=root / "a", steps=8, seed=seed, progress=False)
    gan_train._PROXY_CACHE.clear()
    kill_during_step_7(monkeypatch, cells, cls, cfg, root / "b", seed=seed)
    gan_train._PROXY_CACHE.clear()
    resumed = train_gan(cells, cls, out_root=root / "b", resume=True, progress=False)
    a, b = (load_checkpoint(r / "checkpoints" / "latest.safetensors") for r in (full, resumed))
    assert a["step"] == b["step"] == 8
    for part in parts:
        assert a[part].keys() == b[part].keys(), part
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    return full, resumed


def bench_module(name: str):
    """bench/NAME.py as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
