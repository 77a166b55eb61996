"""Model registry: ``create_model(name, num_classes=5)`` and ``list_models()``."""
from __future__ import annotations

from typing import Any

from classifiers.base import Classifier
from classifiers.baselines import RowLSTM, TorchvisionNet, load_imagenet_weights
from classifiers.dclnn import DCLNN
from classifiers.resnets import ResNetS
from classifiers.runtime import UserError
from classifiers.wbcsnet import WBCsNet, WBCsNet2
from classifiers.wnet import WNet

#: name -> (class, fixed init kwargs)
MODELS: dict[str, tuple[type[Classifier], dict[str, Any]]] = {
    "wnet": (WNet, {}),
    "wnet-svm": (WNet, {"loss": "hinge-ovr"}),
    "wbcsnet": (WBCsNet, {}),
    "wbcsnet2": (WBCsNet2, {}),
    "dclnn": (DCLNN, {}),
    "alexnet": (TorchvisionNet, {"arch": "alexnet"}),
    "vgg16": (TorchvisionNet, {"arch": "vgg16"}),
    "resnet50": (TorchvisionNet, {"arch": "resnet50"}),
    "lstm": (RowLSTM, {}),
    "resnet18s": (ResNetS, {}),
}


def list_models() -> list[str]:
    return list(MODELS)


def model_class(name: str) -> type[Classifier]:
    return _entry(name)[0]


def model_args(name: str, num_classes: int = 5, **overrides: Any) -> dict[str, Any]:
    """The JSON-able init arguments ``create_model`` uses (saved in a run's config.json)."""
    return {**_entry(name)[1], "num_classes": int(num_classes), **overrides}


def create_model(name: str, num_classes: int = 5, *, imagenet_weights: str | None = None,
                 **overrides: Any) -> Classifier:
    """A freshly initialised model. ``overrides`` are extra init args (e.g. ``dropout``);
    ``imagenet_weights`` is a local torchvision weights file (baselines only)."""
    cls = model_class(name)
    try:
        model = cls(**model_args(name, num_classes, **overrides))
    except TypeError as e:  # a recipe's model_args that this network does not take
        raise UserError(f"bad arguments for model {name!r}: {e}") from None
    if imagenet_weights is not None:
        if not isinstance(model, TorchvisionNet):
            raise UserError(f"ImageNet weights only apply to alexnet, vgg16 and resnet50, not {name}")
        load_imagenet_weights(model, imagenet_weights)
    return model


def _entry(name: str):
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]
