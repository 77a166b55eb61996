"""Baselines of the W-Net paper (seed 001 §3.3–3.6): AlexNet, VGG16, ResNet50 (torchvision
architectures, 224×224, random init) and the row-sequence LSTM (128×128).

ImageNet weights are used only when the caller passes a *local* weights file
(``create_model("resnet50", imagenet_weights="resnet50.safetensors")``); nothing is ever
downloaded. ``.safetensors`` files are read directly; torchvision ``.pth`` files are read
with ``torch.load(weights_only=True)`` (no arbitrary unpickling). The 1000-class layer is
dropped.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from classifiers.base import Classifier
from classifiers.runtime import UserError

ARCHS = ("alexnet", "vgg16", "resnet50")


class TorchvisionNet(Classifier):
    """A torchvision classification network whose last linear layer is ``self.head``."""

    input_size = (224, 224)
    paper = "Jung et al. 2021 (seed 001) baselines"

    def __init__(self, arch: str = "resnet50", num_classes: int = 5, loss: str = "ce"):
        super().__init__()
        if arch not in ARCHS:
            raise UserError(f"unknown torchvision architecture {arch!r}; choose one of {', '.join(ARCHS)}")
        self._init_base(loss)
        self.arch, self.num_classes = arch, num_classes
        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if arch == "resnet50":
            self.head, net.fc = net.fc, nn.Identity()
        else:  # alexnet / vgg16: classifier = [..., Linear(4096, n)]
            self.head, net.classifier[6] = net.classifier[6], nn.Identity()
        self.net = net

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def adapt_layers(self) -> list[nn.Module]:
        """Test-time adaptation's layers (:mod:`classifiers.adapt`): ResNet's four stage outputs (its 53
        BatchNorm layers would cost 53 passes over a lab), the pooling stages of the others."""
        if self.arch == "resnet50":
            return [self.net.layer1, self.net.layer2, self.net.layer3, self.net.layer4]
        return [m for m in self.net.modules() if isinstance(m, (nn.MaxPool2d, nn.AdaptiveAvgPool2d))]


def load_imagenet_weights(model: TorchvisionNet, path: str | Path) -> list[str]:
    """Load a local torchvision ImageNet state dict into ``model`` except its final layer.
    Returns the names of the keys that were not loaded."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ImageNet weights file {path} does not exist (weights are never downloaded)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise UserError(f"could not read ImageNet weights {path}: {type(e).__name__}") from None
    final = "fc." if model.arch == "resnet50" else "classifier.6."
    own = model.state_dict()
    mapped = {f"net.{k}": v for k, v in sd.items() if not k.startswith(final)}
    usable = {k: v for k, v in mapped.items() if k in own and own[k].shape == v.shape}
    if len(usable) < len([k for k in own if k.startswith("net.")]) // 2:
        raise UserError(f"{path} does not look like torchvision {model.arch} weights")
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))


class RowLSTM(Classifier):
    """Image rows as a sequence: 128 steps of 128·3 = 384 features, one LSTM layer of 32
    units, the last hidden state → FC n_classes (seed 001 §3.6)."""

    input_size = (128, 128)
    paper = "Jung et al. 2021 (seed 001) §3.6 RNN baseline"

    def __init__(self, num_classes: int = 5, hidden: int = 32, loss: str = "ce"):
        super().__init__()
        self._init_base(loss)
        self.num_classes = num_classes
        self.lstm = nn.LSTM(input_size=3 * self.input_size[1], hidden_size=hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        seq = x.permute(0, 2, 3, 1).reshape(n, h, w * c)  # row r = its pixels' RGB values
        _, (h_n, _) = self.lstm(seq)
        return h_n[-1]
