"""Transfer learning: start a model from a trained run (or a weights file) — fine-tuning,
and ``--head linear-svm`` (a multi-class hinge head on frozen deep activation features)."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from classifiers.runtime import UserError

HEADS = ("linear-svm",)


def load_init(model: torch.nn.Module, init_from: str | Path, classes) -> dict:
    """Copy matching tensors of ``init_from`` (a run folder or a ``.safetensors`` file) into
    ``model``. The final layer is dropped (re-initialised) when the source run's classes
    differ from ``classes`` or its shape does not match. Normalisation buffers come from the
    source, so the features keep their meaning. Returns what was loaded and dropped."""
    from safetensors.torch import load_file

    from classifiers.predict import read_run_config

    path = Path(init_from)
    src_classes = None
    if path.is_file() and _is_torchvision_file(model, path):
        return _load_imagenet(model, path)
    if path.is_dir():
        cfg = read_run_config(path)
        src_classes = cfg.get("classes")
        path = path / "model.safetensors"
    elif not path.is_file():
        raise UserError(f"--init-from {init_from} is neither a classifier run folder nor a weights file")
    elif path.suffix != ".safetensors":
        raise UserError(f"--init-from {init_from} must be a run folder or a .safetensors file "
                        "(torchvision .pth files only for alexnet, vgg16 and resnet50)")
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type
        raise UserError(f"could not read weights {path} ({type(e).__name__})") from None
    own = model.state_dict()
    drop_head = src_classes is not None and list(src_classes) != list(classes)
    usable = {k: v for k, v in state.items()
              if k in own and own[k].shape == v.shape and not (drop_head and k.startswith("head."))}
    trunk = [k for k in usable if not k.startswith(("head.", "norm_"))]
    if not trunk:
        raise UserError(f"weights {path} do not fit a {type(model).__name__} (no matching layers)")
    model.load_state_dict(usable, strict=False)
    return {"loaded": sorted(usable), "dropped": sorted(set(own) - set(usable))}


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _is_torchvision_file(model, path: Path) -> bool:
    from classifiers.baselines import TorchvisionNet

    if not isinstance(model, TorchvisionNet):
        return False
    if path.suffix in (".pth", ".pt"):
        return True
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as fh:
                return not any(k.startswith("net.") for k in fh.keys())
        except Exception:  # noqa: BLE001 - reported by load_file below
            return False
    return False


def _load_imagenet(model, path: Path) -> dict:
    """torchvision ImageNet weights (local file) without the 1000-class layer, with the
    ImageNet normalisation the weights were trained with."""
    from classifiers.baselines import load_imagenet_weights

    dropped = load_imagenet_weights(model, path)
    model.set_normalization(IMAGENET_MEAN, IMAGENET_STD)
    return {"loaded": sorted(set(model.state_dict()) - set(dropped)), "dropped": dropped}


def for_transfer(recipe: dict, init_from=None, head: str | None = None) -> dict:
    """The recipe adjusted for fine-tuning (``transfer.lr``) or for a linear SVM head on a
    frozen trunk (``transfer.head_*``, multi-class hinge loss). Flags still override it."""
    r = copy.deepcopy(recipe)
    if head is not None and head not in HEADS:
        raise UserError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    if head == "linear-svm":
        tr = r["transfer"]
        r["train"].update(freeze_trunk=True, loss="hinge-multiclass", lr=tr["head_lr"],
                          weight_decay=tr["head_weight_decay"], epochs=tr["head_epochs"])
    elif init_from:
        r["train"]["lr"] = r["transfer"]["lr"]
    return r
