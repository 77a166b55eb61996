"""A small residual network for 128-px cells (not from the papers; a project model for issue 14).

ResNet-18's layout (He et al. 2016: a stem, four stages of two torchvision ``BasicBlock``s, global
average pooling) at half width (32-64-128-256 channels instead of 64-512), with a 3×3 stride-2 stem
and no max-pool, so 128-px inputs end in a 4×4 map. 2.8 M parameters (W-Net: 16.8 M, 15.6 M of them in
its flatten-to-FC layer, which ties every weight to a position in the crop). On the project's 2-core CPU
it trains faster than W-Net (batch 128, bf16: ~0.33 s against ~0.63 s a step).

For :mod:`classifiers.adapt` (AdaBN-style), statistics are taken at the outputs of the stem and the four
stages (``adapt_layers``), not at each of the 20 BatchNorm layers.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, conv1x1

from classifiers.base import Classifier


class ResNetS(Classifier):
    input_size = (128, 128)
    paper = "He et al. 2016 (ResNet-18 layout at half width, 128-px stem); a wbcgen model, not a paper's"

    def __init__(self, num_classes: int = 5, widths: tuple[int, ...] = (32, 64, 128, 256), blocks: int = 2,
                 dropout: float = 0.0, loss: str = "ce"):
        super().__init__()
        self._init_base(loss)
        self.num_classes = num_classes
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        stages, cin = [], widths[0]
        for cout in widths:
            down = nn.Sequential(conv1x1(cin, cout, 2), nn.BatchNorm2d(cout))
            layers = [BasicBlock(cin, cout, 2, down)] + [BasicBlock(cout, cout) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.head_dropout = dropout
        self.head = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, BasicBlock):   # each residual branch starts at zero (Goyal et al. 2017)
                nn.init.zeros_(m.bn2.weight)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return torch.flatten(x.mean((-2, -1)), 1)

    def adapt_layers(self) -> list[nn.Module]:
        return [self.stem, *self.stages]
