"""ResNet-38: the wide ResNet (model A1 of Wu et al., "Wider or Deeper", 2019) as used by PSA, SEAM and L2G.

Pre-activation residual blocks; output stride 8: conv1a keeps full resolution, stages 2-4 halve it, stage
5 is dilated by 2 and the two bottleneck blocks 6 and 7 by 4 (where the ImageNet model would stride).

    stage      blocks            channels (width_mult 1)        stride  dilation
    conv1a     3x3 conv          64                             1
    b2         3 blocks          128                            2
    b3         3 blocks          256                            4
    b4         6 blocks          512                            8
    b5         3 blocks          1024 (inner 512)               8       2 (first conv of b5: 1)
    b6         1 bottleneck      2048 (inner 512, 1024)         8       4, dropout 0.3
    b7         1 bottleneck      4096 (inner 1024, 2048)        8       4, dropout 0.5
    bn7 + ReLU                   4096 = the features

The PCM reads ``conv4`` (512 channels: the BN-ReLU of b4's output, as b5 sees it) and ``conv5`` (1024: the
BN-ReLU of b5's output). As in the release, conv1a and stage 2 are frozen and every BatchNorm is frozen
(eval mode, no gradient) — only with ``freeze_bn``, on by default.

Module names follow the MXNet parameter names (``res4b1_branch2a`` -> ``b4_1.conv_branch2a``), which are
also the keys of the PyTorch files the PSA/SEAM/L2G code wrote, so those load unchanged.
``width_mult`` scales every channel count (tests use 1/16 for a network that runs on 32 px in milliseconds).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from l2g.models.base import BackboneOutput, FreezableBackbone

# (stage, number of blocks, inner channels, output channels, stride of the first block, dilation, first
#  dilation) for the plain blocks of stages 2-5.
_PLAIN_STAGES = (
    (2, 3, 128, 128, 2, 1, 1),
    (3, 3, 256, 256, 2, 1, 1),
    (4, 6, 512, 512, 2, 1, 1),
    (5, 3, 512, 1024, 1, 2, 1),
)


class ResBlock(nn.Module):
    """Pre-activation block: BN-ReLU, then two 3x3 convs; a 1x1 conv shortcut when the shape changes."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int | None = None) -> None:
        super().__init__()
        first = dilation if first_dilation is None else first_dilation
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, mid_ch, 3, stride, padding=first, dilation=first, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(mid_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv_branch1 = None
        if in_ch != out_ch or stride != 1:
            self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output and its input after BN-ReLU (what the release calls ``x_bn_relu``)."""
        pre = F.relu(self.bn_branch2a(x))
        shortcut = x if self.conv_branch1 is None else self.conv_branch1(pre)
        branch = self.conv_branch2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(pre))))
        return shortcut + branch, pre


class BottleneckBlock(nn.Module):
    """Pre-activation bottleneck 1x1 -> 3x3 (dilated) -> 1x1 with dropout before the last two convs."""

    def __init__(self, in_ch: int, mids: tuple[int, int], out_ch: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, mids[0], 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mids[0])
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(mids[0], mids[1], 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(mids[1])
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(mids[1], out_ch, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = F.relu(self.bn_branch2a(x))
        branch = F.relu(self.bn_branch2b1(self.conv_branch2a(pre)))
        branch = F.relu(self.bn_branch2b2(self.conv_branch2b1(self.dropout_2b1(branch))))
        branch = self.conv_branch2b2(self.dropout_2b2(branch))
        return self.conv_branch1(pre) + branch, pre


class ResNet38(FreezableBackbone):
    """The release's ResNet-38 backbone (see the module docstring); ``width_mult`` shrinks it for tests."""

    stride = 8
    frozen_prefixes = ("conv1a.", "b2.", "b2_1.", "b2_2.")  # the release never trains these

    def __init__(self, width_mult: float = 1.0, freeze_bn: bool = True) -> None:
        super().__init__(freeze_bn)

        def ch(base: int) -> int:
            return max(1, round(base * width_mult))

        self.conv1a = nn.Conv2d(3, ch(64), 3, padding=1, bias=False)
        in_ch = ch(64)
        self.block_names: list[str] = []
        for stage, count, mid, out, stride, dilation, first_dilation in _PLAIN_STAGES:
            for index in range(count):
                name = f"b{stage}" if index == 0 else f"b{stage}_{index}"
                block = ResBlock(in_ch, ch(mid), ch(out), stride if index == 0 else 1, dilation,
                                 first_dilation if index == 0 else None)
                self.add_module(name, block)
                self.block_names.append(name)
                in_ch = ch(out)
        self.b6 = BottleneckBlock(ch(1024), (ch(512), ch(1024)), ch(2048), dilation=4, dropout=0.3)
        self.b7 = BottleneckBlock(ch(2048), (ch(1024), ch(2048)), ch(4096), dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(ch(4096))
        self.out_channels = ch(4096)
        self.intermediate_channels = (ch(512), ch(1024))
        self.freeze()

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        x = self.conv1a(images)
        conv4 = None
        for name in self.block_names:
            x, pre = self.run_stage(getattr(self, name), x)
            if name == "b5":
                conv4 = pre
        x, conv5 = self.b6(x)
        x, _ = self.b7(x)
        return BackboneOutput(F.relu(self.bn7(x)), (conv4, conv5))


# --- MXNet names --------------------------------------------------------------------------------------

_BN_SUFFIX = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_var"}
_BLOCK = re.compile(r"^b(\d)(?:_(\d))?$")


def mxnet_name(torch_key: str) -> str | None:
    """The MXNet ``.params`` name of one of our ResNet-38 state-dict keys (None: not in MXNet files).

    ``conv1a.weight``                 <- ``arg:conv1a_weight``
    ``b{S}.conv_branch{B}.weight``    <- ``arg:res{S}a_branch{B}_weight``     (first block of stage S)
    ``b{S}_{K}.conv_branch{B}.weight``<- ``arg:res{S}b{K}_branch{B}_weight``  (K-th further block)
    ``b{S}[_{K}].bn_branch{B}.weight|bias`` <- ``arg:bn{S}a|b{K}_branch{B}_gamma|beta``
    ``b{S}[_{K}].bn_branch{B}.running_mean|running_var`` <- ``aux:bn{...}_moving_mean|moving_var``
    ``bn7.*``                         <- ``arg:bn7_gamma|beta``, ``aux:bn7_moving_mean|moving_var``
    BatchNorm's ``num_batches_tracked`` has no MXNet counterpart; ``arg:linear1000_weight|bias`` (the
    ImageNet classifier) has no counterpart here and is dropped.
    """
    parts = torch_key.split(".")
    if parts[-1] == "num_batches_tracked":
        return None
    if torch_key == "conv1a.weight":
        return "arg:conv1a_weight"
    if parts[0] == "bn7" and len(parts) == 2:
        suffix = _BN_SUFFIX[parts[1]]
        return f"{'aux' if suffix.startswith('moving') else 'arg'}:bn7_{suffix}"
    match = _BLOCK.match(parts[0])
    if not match or len(parts) != 3:
        raise KeyError(f"{torch_key}: not a ResNet-38 parameter")
    stage, index = match.group(1), match.group(2)
    block = f"{stage}a" if index is None else f"{stage}b{index}"
    kind, branch = parts[1].split("_", 1)  # conv_branch2a -> conv, branch2a
    if kind == "conv":
        return f"arg:res{block}_{branch}_weight"
    suffix = _BN_SUFFIX[parts[2]]
    return f"{'aux' if suffix.startswith('moving') else 'arg'}:bn{block}_{branch}_{suffix}"


def mxnet_name_map(model: nn.Module) -> dict[str, str]:
    """``{MXNet name: our state-dict key}`` for every tensor of ``model`` that MXNet files hold."""
    names = {}
    for key in model.state_dict():
        name = mxnet_name(key)
        if name is not None:
            names[name] = key
    return names


IGNORED_MXNET_NAMES = ("arg:linear1000_weight", "arg:linear1000_bias")  # the ImageNet classifier
