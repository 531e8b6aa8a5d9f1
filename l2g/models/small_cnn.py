"""The small CNN backbone of the synthetic benchmark: trained from scratch on a CPU in minutes."""

from __future__ import annotations

import torch
from torch import nn

from l2g.models.base import BackboneOutput, FreezableBackbone


def _conv(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class SmallCNN(FreezableBackbone):
    """A small VGG-like CNN, output stride 8 with a dilated last stage, trained from scratch.

    Widths w, 2w, 4w, 8w; about 0.4 M parameters at w=16. Meant for the synthetic benchmark on a CPU.
    Its BatchNorm trains (it has no pretrained statistics to keep).
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__(freeze_bn=False)
        w = width
        self.stage1 = nn.Sequential(_conv(3, w), _conv(w, w, stride=2))  # 1/2
        self.stage2 = nn.Sequential(_conv(w, 2 * w), _conv(2 * w, 2 * w, stride=2))  # 1/4
        self.stage3 = nn.Sequential(_conv(2 * w, 4 * w), _conv(4 * w, 4 * w, stride=2))  # 1/8
        self.stage4 = nn.Sequential(_conv(4 * w, 4 * w, dilation=2), _conv(4 * w, 8 * w, dilation=2))
        self.stage5 = nn.Sequential(_conv(8 * w, 8 * w, dilation=4))
        self.out_channels = 8 * w
        self.intermediate_channels = (4 * w, 8 * w)

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        x = self.stage3(self.stage2(self.stage1(images)))
        mid = self.stage4(x)
        return BackboneOutput(self.stage5(mid), (x, mid))
