"""DCLNN ("A CNN-based framework for blood cell classification", seed 003).

60×80×3 (height × width, the aspect ratio of the BCCD 320×240 images) →
conv3×3×32 → ReLU → conv3×3×64 → ReLU → maxpool 2 → dropout 0.25 → flatten →
FC 128 → ReLU → (dropout 0.5) → FC n_classes. Glorot-uniform init (the paper's Keras default).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from classifiers.base import Classifier, xavier_init


class DCLNN(Classifier):
    input_size = (60, 80)
    paper = "A CNN-based framework for blood cell classification (DCLNN)"

    def __init__(self, num_classes: int = 5, hidden: int = 128, dropout: float = 0.25,
                 head_dropout: float = 0.5, loss: str = "ce"):
        super().__init__()
        self._init_base(loss)
        self.num_classes = num_classes
        self.conv = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.ReLU(inplace=True),          # 60×80 → 58×78
            nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True),         # → 56×76
            nn.MaxPool2d(2), nn.Dropout(dropout),                # → 28×38
        )
        self.fc = nn.Linear(64 * 28 * 38, hidden)
        self.head_dropout = head_dropout
        self.head = nn.Linear(hidden, num_classes)
        xavier_init(self)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(torch.flatten(self.conv(x), 1)))
