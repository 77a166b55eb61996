"""Load a trained run folder and predict: ``classifiers.load_run(run_dir) -> Predictor``."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from classifiers import adapt
from classifiers.data import check_images
from classifiers.registry import model_class
from classifiers.runtime import UserError, autocast, memory_format, pick_device


class Predictor:
    """Batched CPU/GPU inference for a trained classifier.

    Images are uint8 N×3×H×W of any size; each batch is resized to the model's input size
    inside, after the run's colour normaliser (``config["stain_norm"]``, if it has one; an ``mkl-lab``
    normaliser treats the images of one call as one lab's, unless :meth:`adapt` fixed the lab's map).
    ``adapt_stats=True``: test-time adaptation (:mod:`classifiers.adapt`): the images of one call are one
    lab's, and the network's per-channel activation statistics on them are mapped onto the training
    lab's before predicting (or once, by :meth:`adapt`).
    ``predict_proba`` returns softmax probabilities (for hinge-loss models: the
    softmax of the SVM margins, a score and not a calibrated probability).
    """

    def __init__(self, model: torch.nn.Module, config: dict, device: str | torch.device | None = None,
                 batch_size: int = 128, tta: bool | None = None, adapt_stats: bool = False):
        self.device = pick_device(str(device) if device is not None else None)
        self.model = model.to(self.device).eval()
        self.config = config
        self.classes = tuple(config.get("classes") or [str(i) for i in range(model.num_classes)])
        self.batch_size = int(batch_size)
        recipe = config.get("recipe") or {}
        self.tta = bool(recipe.get("eval", {}).get("tta", False)) if tta is None else tta
        train = recipe.get("train", {})
        self._amp, self._cpu16 = bool(train.get("amp", True)), bool(train.get("cpu_bf16", False))
        cl = train.get("channels_last", "auto")
        self._mf = torch.channels_last if cl is True else memory_format(self.device)
        self.stain_norm = config.get("stain_norm") or None
        self.adapt_stats, self._fixes = bool(adapt_stats), None
        if self.adapt_stats:
            adapt.check(self.model, config.get("activation_stats"))

    @torch.inference_mode()
    def _run(self, images: torch.Tensor, fn, mixed: bool = True) -> torch.Tensor:
        from classifiers.stain import for_set

        check_images(images)
        outs = []
        norm = for_set(self.stain_norm, images)   # mkl-lab: one map for the whole call, not per batch
        fixes = self._lab_fixes(images, norm) if len(images) else None
        with adapt.applied(self.model, fixes):
            for x in self._batches(images, norm)():
                with autocast(self.device, self._amp and mixed, cpu=self._cpu16):
                    outs.append(fn(x).float().cpu())
        if not outs:
            return torch.empty(0)
        return torch.cat(outs)

    def _batches(self, images: torch.Tensor, norm: dict | None):
        return adapt.u8_batches(images, self.device, tuple(self.model.input_size), self.batch_size, norm, self._mf)

    def _lab_fixes(self, images: torch.Tensor, norm: dict | None) -> list | None:
        """Test-time adaptation's corrections: fixed by :meth:`adapt`, else fitted on these images."""
        if not self.adapt_stats:
            return None
        if self._fixes is not None:
            return self._fixes
        return adapt.fit(self.model, self.config["activation_stats"], self._batches(images, norm), len(images))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """The uint8 images the network sees: the run's stain normalisation applied (if any)."""
        from classifiers.stain import apply

        return apply(self.stain_norm, images)

    def adapt(self, images: torch.Tensor) -> "Predictor":
        """Fix what is fitted per lab from these unlabelled images of the lab (every later call uses it,
        also on one image at a time): the ``mkl-lab`` normaliser's stain map and, with ``adapt_stats``,
        the activation corrections. A predictor with neither is unchanged."""
        from classifiers.stain import for_set

        check_images(images)
        self.stain_norm = for_set(self.stain_norm, images, refit=True)
        self._fixes = None
        if self.adapt_stats:
            with torch.inference_mode():
                self._fixes = self._lab_fixes(images, self.stain_norm)
        return self

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Raw outputs N×C (averaged over the 8 dihedral views when TTA is on)."""
        if self.tta:
            return self._run(images, lambda x: tta_logits(self.model, x))
        return self._run(images, self.model)

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        out = self.logits(images)
        return out.softmax(1) if len(out) else torch.empty(0, len(self.classes))

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        out = self.logits(images)
        return out.argmax(1) if len(out) else torch.empty(0, dtype=torch.int64)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations N×D (no TTA), always in fp32 (no bf16 autocast): the
        distances computed from them must agree between machines."""
        out = self._run(images, self.model.features, mixed=False)
        return out if len(out) else torch.empty(0, self.model.feature_dim)


def tta_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean logits over the 8 rotations/flips of a square batch (cells have no orientation)."""
    if x.shape[-1] != x.shape[-2]:
        return model(x)
    total = 0
    for flip in (False, True):
        y = x.flip(-1) if flip else x
        for k in range(4):
            total = total + model(torch.rot90(y, k, (-2, -1)))
    return total / 8


def read_run_config(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file() or not (run_dir / "model.safetensors").is_file():
        raise UserError(f"{run_dir} is not a finished classifier run (config.json and model.safetensors expected)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{cfg_path} is not valid JSON") from None
    if "model" not in config or "model_args" not in config:
        raise UserError(f"{cfg_path} is not a classifier run config (no 'model'/'model_args')")
    return config


def load_model(run_dir: str | Path):
    """(model, config) of a run folder; the weights are read from model.safetensors."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    model = model_class(config["model"])(**config["model_args"])
    try:
        state = load_file(str(run_dir / "model.safetensors"))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type
        raise UserError(f"{run_dir / 'model.safetensors'} is corrupt ({type(e).__name__})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{run_dir / 'model.safetensors'} does not match model {config['model']!r} "
                        f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    return model.eval(), config


def load_run(run_dir: str | Path, device: str | torch.device | None = None, batch_size: int = 128,
             tta: bool | None = None, adapt_stats: bool = False) -> Predictor:
    """A :class:`Predictor` for a trained run folder (``config.json`` + ``model.safetensors``)."""
    model, config = load_model(run_dir)
    return Predictor(model, config, device=device, batch_size=batch_size, tta=tta, adapt_stats=adapt_stats)
