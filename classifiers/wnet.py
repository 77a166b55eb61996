"""W-Net (Jung et al. 2019/2021, seeds 001 and 004) and W-Net-SVM.

128×128×3 → [conv3×3 (same) → ReLU → maxpool 2 → dropout 0.6] × (16, 32, 64 filters)
→ flatten 16,384 → FC 1,024 → ReLU → dropout 0.6 → FC n_classes.
16,806,949 trainable parameters for 5 classes, Xavier-initialised.
W-Net-SVM is the same network trained with a one-vs-rest hinge loss instead of softmax.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from classifiers.base import Classifier, xavier_init


class WNet(Classifier):
    input_size = (128, 128)
    paper = "Jung et al., W-Net: A CNN-based Architecture for White Blood Cells Image Classification (2019)"

    def __init__(self, num_classes: int = 5, dropout: float = 0.6, loss: str = "ce"):
        super().__init__()
        self._init_base(loss)
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        cin = 3
        for cout in (16, 32, 64):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                       nn.Dropout(dropout)]
            cin = cout
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(64 * 16 * 16, 1024)
        self.head_dropout = dropout
        self.head = nn.Linear(1024, num_classes)
        xavier_init(self)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(torch.flatten(self.conv(x), 1)))
