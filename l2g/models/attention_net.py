"""A classification network that produces class attention maps: backbone -> 1x1 head (C+1) -> PCM."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from l2g.models.backbones import build_backbone
from l2g.models.pcm import PixelCorrelation
from l2g.models.registry import HEAD_INITS


@dataclass
class NetOutput:
    maps: torch.Tensor  # (B, C+1, h, w): class maps + background channel (last), incl. PCM when on
    logits: torch.Tensor  # (B, C): global average pool of the C class channels of ``maps``


class AttentionNet(nn.Module):
    """Backbone + dropout + 1x1 conv to C + 1 channels (no bias) + optional PCM.

    The returned map is ``F + F_pcm`` with the PCM on (``F`` without it). The classification logits are
    the global average pool of that map's first C channels, as in the release: pooled AFTER the PCM, so
    a classification loss trains the PCM too and reaches the backbone through both terms. The background
    channel (last) takes part in no classification loss.

    ``head_init`` (``model.head_init``): "xavier", the release's Xavier-uniform (gain 1, bound
    sqrt(6 / (fan_in + fan_out))); "torch", PyTorch's default for a convolution (bound 1 / sqrt(fan_in),
    2.4x smaller than Xavier's for a 320-channel backbone and 7 outputs); "zero": every pixel starts at the
    uniform softmax. The scale matters for pretrained backbones, whose features are large (EfficientNet-Lite0:
    squared norm ~2,000 per pixel): the initial scores grow with weight scale x feature norm.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, pcm: PixelCorrelation | None = None,
                 dropout: float = 0.0, head_init: str = "xavier") -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(backbone.out_channels, num_classes + 1, 1, bias=False)
        if head_init == "xavier":
            nn.init.xavier_uniform_(self.head.weight)
        elif head_init == "zero":
            nn.init.zeros_(self.head.weight)
        elif head_init != "torch":  # "torch": keep nn.Conv2d's own initialisation
            raise ValueError(f"head_init {head_init!r}: choose from {', '.join(HEAD_INITS)}")
        self.pcm = pcm

    def forward(self, images: torch.Tensor) -> NetOutput:
        out = self.backbone(images)
        cam = self.head(self.dropout(out.features))
        maps = cam + self.pcm(cam, images, out.intermediates) if self.pcm is not None else cam
        return NetOutput(maps=maps, logits=maps[:, : self.num_classes].mean(dim=(2, 3)))


def build_attention_net(model_cfg, num_classes: int, backbone: nn.Module | None = None) -> AttentionNet:
    """An AttentionNet from a ModelConfig; pass ``backbone`` to share one between two networks."""
    backbone = backbone or build_backbone(model_cfg.backbone, model_cfg.width, model_cfg.pretrained,
                                          model_cfg.width_mult, model_cfg.freeze_bn, model_cfg.output_stride)
    pcm = None
    if model_cfg.pcm:
        pcm = PixelCorrelation(backbone.intermediate_channels, model_cfg.pcm_dims, model_cfg.pcm_out)
    return AttentionNet(backbone, num_classes, pcm, model_cfg.dropout, model_cfg.head_init)
