"""The common base of every classifier: input size, preprocessing spec, normalisation
buffers, a ``features`` (penultimate layer) / ``head`` split and Hub save/load.

Every model takes float images in [0, 1] at its own ``input_size`` (N×3×H×W) and
normalises them itself with the per-channel mean/std stored in the buffers
``norm_mean``/``norm_std`` (set by the trainer from the training split and saved with
the weights), so a model loaded with ``from_pretrained`` is self-contained.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin

from classifiers.hubcard import CARD_TEMPLATE, DOCS_URL, LIBRARY_NAME, REPO_URL, TAGS

#: Losses a model may declare: softmax cross-entropy, one-vs-rest hinge (W-Net-SVM,
#: max(0, 1 - t·y) with t in {-1, +1}) and the multi-class (Weston-Watkins) hinge used by
#: ``--head linear-svm``.
LOSSES = ("ce", "hinge-ovr", "hinge-multiclass")


class Classifier(nn.Module, PyTorchModelHubMixin, library_name=LIBRARY_NAME, repo_url=REPO_URL, docs_url=DOCS_URL,
                 pipeline_tag="image-classification", tags=TAGS + ["image-classification"],
                 model_card_template=CARD_TEMPLATE):
    """Subclasses set ``input_size`` (h, w), build ``self.head`` (the last nn.Linear) and
    implement :meth:`trunk` (normalised images -> penultimate features)."""

    input_size: tuple[int, int] = (128, 128)
    head_dropout: float = 0.0
    paper: str = ""

    def _init_base(self, loss: str) -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss = loss
        # ImageNet-like neutral defaults; the trainer overwrites them with training-split stats
        self.register_buffer("norm_mean", torch.full((3,), 0.5))
        self.register_buffer("norm_std", torch.full((3,), 0.25))

    # ------------------------------------------------------------------ preprocessing
    @property
    def spec(self) -> dict:
        """What a caller must do before ``forward``: resize to ``input_size``, scale to [0, 1]."""
        h, w = self.input_size
        return {
            "input_size": [h, w],
            "resize": "bilinear, antialiased, to input_size (height, width)",
            "scale": "uint8 / 255 -> [0, 1]",
            "normalisation": "per-channel (x - norm_mean) / norm_std inside the model; "
                             "norm_mean/norm_std are the training split's statistics",
            "loss": self.loss,
            "feature_dim": self.feature_dim,
            "paper": self.paper,
        }

    def set_normalization(self, mean, std) -> None:
        self.norm_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.norm_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-3))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.norm_mean.view(1, 3, 1, 1)) / self.norm_std.view(1, 3, 1, 1)

    # ------------------------------------------------------------------------ forward
    def trunk(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations ("deep activation features"), N×feature_dim."""
        return self.trunk(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if self.head_dropout:
            f = F.dropout(f, self.head_dropout, self.training)
        return self.head(f)

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def reset_head(self) -> None:
        """A freshly initialised final layer (e.g. for ``--head linear-svm``)."""
        self.head.reset_parameters()


def xavier_init(module: nn.Module) -> None:
    """Glorot/Xavier-uniform weights and zero biases for every conv and linear layer."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
