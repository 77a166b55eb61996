"""Test-time adaptation to another lab: per-channel activation statistics (AdaBN-style).

A network trained on one lab's cells sees another lab's through shifted activations (stain, focus,
camera). AdaBN (Li et al. 2016) re-estimates BatchNorm statistics on the new domain's unlabelled
images; W-Net has no BatchNorm, so the same idea is applied at the output of chosen layers: every
channel's mean and standard deviation over the new lab's images are mapped onto those the network
saw on its training images, layer after layer (each layer's statistics measured with the layers
before it already corrected). No labels are used; the classes' mix of the lab should not be far
from the training set's (a lab of only neutrophils would be pulled towards the training mix).

Statistics are pooled over the 8 rotations/flips of each image (cells have no orientation), so
they do not depend on whether prediction uses TTA. A training run records its statistics in
``config.json["activation_stats"]`` (:func:`source_stats`); :class:`classifiers.Predictor` with
``adapt_stats=True`` fits the correction on the images of each call (one lab) or once by ``adapt()``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable

import torch
import torch.nn as nn

from classifiers.runtime import UserError

METHOD = "channel-stats"
MIN_IMAGES = 8          # fewer images of a lab give statistics too noisy to correct with
MAX_SOURCE_IMAGES = 1000


def stat_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose outputs are standardised: the model's own choice (``adapt_layers``), else its
    BatchNorm layers (AdaBN proper), else the outputs of its pooling stages (W-Net's three conv blocks)."""
    if hasattr(model, "adapt_layers"):
        wanted = {id(m) for m in model.adapt_layers()}
        return [(n, m) for n, m in model.named_modules() if id(m) in wanted]
    for kinds in ((nn.BatchNorm2d,), (nn.MaxPool2d, nn.AdaptiveAvgPool2d)):
        found = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]
        if found:
            return found
    raise UserError(f"{type(model).__name__} has no BatchNorm or pooling layer to adapt")


def views(x: torch.Tensor) -> Iterable[torch.Tensor]:
    """The 8 dihedral views of a square batch (one view for a non-square one)."""
    if x.shape[-1] != x.shape[-2]:
        yield x
        return
    for flip in (False, True):
        y = x.flip(-1) if flip else x
        for k in range(4):
            yield torch.rot90(y, k, (-2, -1))


@contextmanager
def _hooks(layers, fixes=None, record=None):
    """Apply ``fixes[i] = (scale, shift)`` to layer i's output; accumulate moments of the layers in
    ``record`` (index -> [sum, sum of squares, count]) after the fix."""
    handles = []

    def hook(i):
        def fn(_mod, _inp, out):
            if fixes is not None and i < len(fixes) and fixes[i] is not None:
                a, b = fixes[i]
                shape = (1, -1) + (1,) * (out.dim() - 2)
                out = out * a.to(out).view(shape) + b.to(out).view(shape)
            if record is not None and i in record:
                d = out.detach().float().transpose(0, 1).reshape(out.shape[1], -1)
                acc = record[i]
                acc[0] = acc[0] + d.sum(1).double().cpu()
                acc[1] = acc[1] + (d * d).sum(1).double().cpu()
                acc[2] += d.shape[1]
            return out
        return fn
    try:
        for i, (_, m) in enumerate(layers):
            handles.append(m.register_forward_hook(hook(i)))
        yield
    finally:
        for h in handles:
            h.remove()


def _moments(model, layers, batches: Callable[[], Iterable[torch.Tensor]], which: list[int], fixes=None):
    record = {i: [torch.zeros(()), torch.zeros(()), 0] for i in which}
    with torch.inference_mode(), _hooks(layers, fixes, record):
        for x in batches():
            for v in views(x):
                model(v)
    out = {}
    for i, (s, s2, n) in record.items():
        if n == 0:
            raise UserError("no images to measure activation statistics on")
        mean = s / n
        out[i] = (mean.float(), (s2 / n - mean * mean).clamp_min(0).sqrt().float())
    return out


def source_stats(model: nn.Module, batches: Callable[[], Iterable[torch.Tensor]], n_images: int) -> dict:
    """Per-channel mean/std at every :func:`stat_layers` output over ``batches()`` (float model inputs,
    8 views each): what ``config.json["activation_stats"]`` holds."""
    layers = stat_layers(model)
    mom = _moments(model.eval(), layers, batches, list(range(len(layers))))
    return {"method": METHOD, "layers": [n for n, _ in layers], "views": 8, "n_images": int(n_images),
            "mean": [mom[i][0].tolist() for i in range(len(layers))],
            "std": [mom[i][1].tolist() for i in range(len(layers))]}


def fit(model: nn.Module, stats: dict, batches: Callable[[], Iterable[torch.Tensor]], n_images: int) -> list:
    """(scale, shift) per layer mapping these images' statistics onto ``stats`` (the training lab's),
    layer by layer. ``batches()`` yields the lab's float model inputs and is called once per layer."""
    if n_images < MIN_IMAGES:
        raise UserError(f"test-time adaptation needs at least {MIN_IMAGES} images of the lab, got {n_images}")
    layers = stat_layers(model)
    check(model, stats)
    fixes: list = []
    for i in range(len(layers)):
        mu_t, sd_t = _moments(model.eval(), layers, batches, [i], fixes)[i]
        mu_s, sd_s = torch.tensor(stats["mean"][i]), torch.tensor(stats["std"][i])
        a = sd_s / sd_t.clamp_min(1e-4)
        a = torch.where(sd_t > 1e-4, a, torch.ones_like(a))   # a channel dead on this lab stays as it is
        fixes.append((a, mu_s - a * mu_t))
    return fixes


def check(model: nn.Module, stats: dict | None) -> None:
    if not stats or stats.get("method") != METHOD:
        raise UserError("this run has no activation statistics (it was trained before test-time adaptation "
                        "existed); train it again, or record them with classifiers.adapt.record_run")
    names = [n for n, _ in stat_layers(model)]
    if stats.get("layers") != names or any(len(m) != len(s) for m, s in zip(stats["mean"], stats["std"])):
        raise UserError("the run's activation statistics do not match its model's layers")


@contextmanager
def applied(model: nn.Module, fixes: list | None):
    """The model with the fitted corrections hooked in (a no-op for ``fixes=None``)."""
    if fixes is None:
        yield model
        return
    with _hooks(stat_layers(model), fixes):
        yield model


def u8_batches(images_u8: torch.Tensor, device, size, batch_size: int = 128, norm: dict | None = None,
               memory_format=torch.contiguous_format) -> Callable[[], Iterable[torch.Tensor]]:
    """A re-callable generator of float model inputs from uint8 images (``norm``: a fitted stain map
    to apply first, as :func:`classifiers.stain.for_set` returns it)."""
    from classifiers.data import to_float
    from classifiers.stain import apply

    def gen():
        for i in range(0, len(images_u8), batch_size):
            yield to_float(apply(norm, images_u8[i:i + batch_size]), device, size, memory_format)
    return gen


def subsample(n: int, limit: int = MAX_SOURCE_IMAGES, seed: int = 0) -> torch.Tensor:
    """At most ``limit`` of ``n`` indices, a fixed draw (statistics of 1,000 images x 8 views are exact
    enough and cost seconds)."""
    if n <= limit:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


def record_run(run_dir, images_u8: torch.Tensor) -> dict:
    """Add ``activation_stats`` to a finished run that predates them, measured on ``images_u8`` (its
    training images as they were loaded; the run's stain normaliser is applied as at prediction);
    config.json is rewritten atomically."""
    from pathlib import Path

    from classifiers.predict import load_model
    from classifiers.runtime import atomic_write_json
    from classifiers.stain import for_set

    model, config = load_model(run_dir)
    idx = subsample(len(images_u8))
    images = images_u8[idx]
    batches = u8_batches(images, "cpu", tuple(model.input_size), norm=for_set(config.get("stain_norm"), images))
    config["activation_stats"] = source_stats(model, batches, len(images))
    atomic_write_json(Path(run_dir) / "config.json", config)
    return config["activation_stats"]
