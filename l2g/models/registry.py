"""The backbones l2g builds, by name: one table of what each is built from, the input normalisation
its weights expect and the weights it starts from. Torch-free (the builders import their module when
called), so the config validates ``model.backbone`` and fills ``data.mean`` / ``data.std`` without
importing torch. :func:`l2g.models.backbones.build_backbone` builds an entry with its weights.

    name                module                          normalisation   default weights (model.pretrained: null)
    small_cnn           l2g.models.small_cnn            ImageNet        random (from scratch)
    resnet38            l2g.models.resnet38             ImageNet        random; a local .params / .pth file
    resnet50/resnet101  l2g.models.torchvision_backbones  ImageNet      random; torchvision's .pth file
    vgg16               l2g.models.torchvision_backbones  ImageNet      random; torchvision's .pth file
    efficientnet_lite0  l2g.models.efficientnet         0.5 / 0.5       ImageNet, shipped on PyPI
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from l2g.models.base import FreezableBackbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Inputs scaled to [-1, 1]: what TensorFlow-trained weights (EfficientNet-Lite) expect.
UNIT_MEAN = UNIT_STD = (0.5, 0.5, 0.5)

# model.head_init: the head's initial weights (l2g.models.attention_net.AttentionNet): "xavier" (the
# release's), "torch" (nn.Conv2d's own), "zero".
HEAD_INITS = ("xavier", "torch", "zero")

Builder = Callable[[int, float, bool, int], "FreezableBackbone"]  # (width, width_mult, freeze_bn, output_stride)


@dataclass(frozen=True)
class BackboneEntry:
    """How to build one backbone and what it expects.

    ``build(width, width_mult, freeze_bn, output_stride)`` makes it with random weights, at one of ``strides``
    (``model.output_stride``); ``packaged_weights()`` gives
    the path of ImageNet weights that ship with a Python package (what ``model.pretrained: null`` and
    ``imagenet`` load), or is None where only a local file can provide them; ``weights_hint`` says
    where such a file comes from (appended to the error for a missing one); ``scales`` is whether
    ``model.width_mult`` applies.
    """

    build: Builder
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    packaged_weights: Callable[[], str] | None = None
    weights_hint: str = ""
    scales: bool = False
    strides: tuple[int, ...] = (8,)


def _small_cnn(width: int, width_mult: float, freeze_bn: bool, output_stride: int) -> FreezableBackbone:
    from l2g.models.small_cnn import SmallCNN

    return SmallCNN(width)


def _resnet38(width: int, width_mult: float, freeze_bn: bool, output_stride: int) -> FreezableBackbone:
    from l2g.models.resnet38 import ResNet38

    return ResNet38(width_mult, freeze_bn)


def _torchvision_resnet(depth: int) -> Builder:
    def build(width: int, width_mult: float, freeze_bn: bool, output_stride: int) -> FreezableBackbone:
        from l2g.models.torchvision_backbones import TorchvisionResNet

        return TorchvisionResNet(f"resnet{depth}", freeze_bn)

    return build


def _vgg16(width: int, width_mult: float, freeze_bn: bool, output_stride: int) -> FreezableBackbone:
    from l2g.models.torchvision_backbones import VGG16LargeFOV

    return VGG16LargeFOV()


def _efficientnet_lite0(width: int, width_mult: float, freeze_bn: bool, output_stride: int) -> FreezableBackbone:
    from l2g.models.efficientnet import EfficientNetLite0

    return EfficientNetLite0(freeze_bn, output_stride)


def _efficientnet_weights() -> str:
    from l2g.models.efficientnet import packaged_weights_path

    return packaged_weights_path()


BACKBONES: dict[str, BackboneEntry] = {
    "small_cnn": BackboneEntry(_small_cnn),
    "resnet38": BackboneEntry(
        _resnet38, scales=True,
        weights_hint=". Convert the release's ImageNet file once: l2g convert-weights "
                     "ilsvrc-cls_rna-a1_cls1000_ep-0001.params {path} (no MXNet needed), or set model.pretrained "
                     "to the .params file itself"),
    "resnet50": BackboneEntry(_torchvision_resnet(50),
                              weights_hint=". Give torchvision's ImageNet file (resnet50-*.pth) by its local path"),
    "resnet101": BackboneEntry(_torchvision_resnet(101),
                               weights_hint=". Give torchvision's ImageNet file (resnet101-*.pth) by its local path"),
    "vgg16": BackboneEntry(_vgg16, weights_hint=". Give torchvision's ImageNet file (vgg16-*.pth) by its local path"),
    "efficientnet_lite0": BackboneEntry(_efficientnet_lite0, UNIT_MEAN, UNIT_STD,
                                        packaged_weights=_efficientnet_weights, strides=(8, 16)),
}
BACKBONE_NAMES = tuple(BACKBONES)


def backbone_entry(name: str) -> BackboneEntry:
    """The entry of ``name``; ValueError listing the backbones for an unknown one."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r} (available: {', '.join(BACKBONES)})")
    return BACKBONES[name]
