"""Backbones: anything that maps an image batch to a stride-8 feature map.

A backbone returns a :class:`BackboneOutput` with the final features and two intermediate feature maps
at the same stride (what the PCM consumes: conv4/conv5 of ResNet-38 in the release). Later backbones
(ResNet-38, VGG-16, ResNet-101, EfficientNet-Lite0) plug in through :func:`build_backbone`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


@dataclass
class BackboneOutput:
    features: torch.Tensor  # (B, out_channels, H / 8, W / 8)
    intermediates: tuple[torch.Tensor, torch.Tensor]  # two earlier stride-8 maps, for the PCM


class Backbone(Protocol):
    out_channels: int
    intermediate_channels: tuple[int, int]
    stride: int

    def __call__(self, images: torch.Tensor) -> BackboneOutput: ...

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """Parameters loaded from pretrained weights (their lr multiplier is x1/x2, not x10/x20)."""
        ...


def _conv(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A small VGG-like CNN, output stride 8 with a dilated last stage, trained from scratch.

    Widths w, 2w, 4w, 8w; about 0.4 M parameters at w=16. Meant for the synthetic benchmark on a CPU.
    """

    stride = 8

    def __init__(self, width: int = 16) -> None:
        super().__init__()
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

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return []  # trained from scratch


def build_backbone(name: str, width: int = 16, pretrained: str | None = None) -> nn.Module:
    """The backbone called ``name``; ``pretrained`` is a local weights file (never downloaded)."""
    if name == "small_cnn":
        backbone = SmallCNN(width)
    else:
        raise ValueError(f"unknown backbone {name!r} (available: small_cnn)")
    if pretrained:
        state = torch.load(pretrained, map_location="cpu", weights_only=True)
        missing, unexpected = backbone.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"{pretrained}: weights do not fit backbone {name} (unexpected: {unexpected[:5]})")
    return backbone
