"""WBCsNet (Shahin et al. 2017, seed 000) and WBCsNet-2 (Almotairi & Shahin, seed 002).

Both take 50×50×3 images.

* WBCsNet: conv5×5×64 (valid) → ReLU → maxpool 2 → conv5×5×256 → ReLU → maxpool 2 →
  conv3×3×512 → ReLU → FC 512 → ReLU → FC n_classes. No batch norm, no dropout.
* WBCsNet-2: a residual block of three conv5×5×64 (+BN+ReLU, zero padding) whose input
  (the first conv's output) is added back before the last ReLU → maxpool 2 →
  conv5×5×256+BN+ReLU → maxpool 2 → conv3×3×512+BN+ReLU → FC 512 → ReLU → dropout → FC.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from classifiers.base import Classifier, xavier_init

_PAPER1 = "Shahin et al., White blood cells identification system based on convolutional deep neural learning networks (CMPB 2017)"
_PAPER2 = "Almotairi & Shahin, White Blood Cells Recognition System Based on Deep Residual Network"


class WBCsNet(Classifier):
    input_size = (50, 50)
    paper = _PAPER1

    def __init__(self, num_classes: int = 5, loss: str = "ce"):
        super().__init__()
        self._init_base(loss)
        self.num_classes = num_classes
        self.conv = nn.Sequential(
            nn.Conv2d(3, 64, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),      # 50→46→23
            nn.Conv2d(64, 256, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),    # 23→19→9
            nn.Conv2d(256, 512, 3), nn.ReLU(inplace=True),                    # 9→7
        )
        self.fc = nn.Linear(512 * 7 * 7, 512)
        self.head = nn.Linear(512, num_classes)
        xavier_init(self)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(torch.flatten(self.conv(x), 1)))


def _cbr(cin: int, cout: int, k: int, pad: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=pad), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class WBCsNet2(Classifier):
    input_size = (50, 50)
    paper = _PAPER2

    def __init__(self, num_classes: int = 5, dropout: float = 0.5, loss: str = "ce"):
        super().__init__()
        self._init_base(loss)
        self.num_classes = num_classes
        self.res_in = nn.Sequential(*_cbr(3, 64, 5, 2))
        self.res_mid = nn.Sequential(*_cbr(64, 64, 5, 2))
        self.res_out = nn.Sequential(nn.Conv2d(64, 64, 5, padding=2), nn.BatchNorm2d(64))
        self.pool = nn.MaxPool2d(2)                                            # 50→25
        self.plain = nn.Sequential(*_cbr(64, 256, 5, 0), nn.MaxPool2d(2),      # 25→21→10
                                   *_cbr(256, 512, 3, 0))                      # 10→8
        self.fc = nn.Linear(512 * 8 * 8, 512)
        self.head_dropout = dropout
        self.head = nn.Linear(512, num_classes)
        xavier_init(self)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        r = self.res_in(x)
        x = torch.relu(self.res_out(self.res_mid(r)) + r)
        x = self.plain(self.pool(x))
        return torch.relu(self.fc(torch.flatten(x, 1)))
