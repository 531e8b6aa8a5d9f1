"""The networks of the references, written for the benchmark without l2g's model code, so that the benchmark
sees a drift between l2g and the release's procedure (its loss and map checks would then fail).

- :class:`ReleaseResNet38`: the wide ResNet-38 (model A1 of Wu et al.) as PSA / SEAM / the L2G release use
  it: pre-activation blocks, output stride 8 (stage 5 dilated by 2, the two bottlenecks by 4, dropout 0.3
  and 0.5 before their last two convolutions), the BN-ReLU of stage 4's and 5's outputs (``conv4``,
  ``conv5``) and of the last block (``conv6``) returned as a dict. Parameter names are the published
  ones (``b4_3.conv_branch2a``, from MXNet's ``res4b3_branch2a``), so l2g's state dicts load by name.
- :class:`ReferenceSmallCNN`: the synthetic demo's small CNN (widths w, 2w, 4w, 8w, conv-BN-ReLU, stride 8,
  dilated last stages), which the release does not have; loaded from l2g's weights in parameter order.
- :class:`ReleaseNet`: backbone -> 1x1 classifier ``fc8`` (C + 1 channels, no bias) -> the release's PCM:
  the image (bilinear, corners aligned) and the projections ``f8_3`` / ``f8_4`` of the detached conv4 /
  conv5 features make the embedding ``f9``, divided by (its L2 norm + 1e-5); the affinity ReLU(f^T f),
  divided by (its column sums + 1e-5), propagates the 4096-channel conv6 FEATURES, and ``fc8`` is applied
  to the result (the release's order; l2g propagates the C + 1 class scores, the same linear map). The
  map is ``fc8(conv6) + fc8(PCM(conv6))`` and the logits pool its first C channels (average pooling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels)


class _Block(nn.Module):
    """A pre-activation residual block: plain (two 3x3 convs) or bottleneck (1x1, 3x3, 1x1 with dropout)."""

    def __init__(self, in_ch: int, out_ch: int, mids: tuple[int, ...], stride: int, dilation: int,
                 first_dilation: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bottleneck = len(mids) == 2
        self.bn_branch2a = _bn(in_ch)
        if self.bottleneck:
            self.conv_branch2a = nn.Conv2d(in_ch, mids[0], 1, bias=False)
            self.bn_branch2b1 = _bn(mids[0])
            self.dropout_2b1 = nn.Dropout2d(dropout)
            self.conv_branch2b1 = nn.Conv2d(mids[0], mids[1], 3, padding=dilation, dilation=dilation, bias=False)
            self.bn_branch2b2 = _bn(mids[1])
            self.dropout_2b2 = nn.Dropout2d(dropout)
            self.conv_branch2b2 = nn.Conv2d(mids[1], out_ch, 1, bias=False)
        else:
            self.conv_branch2a = nn.Conv2d(in_ch, mids[0], 3, stride, padding=first_dilation,
                                           dilation=first_dilation, bias=False)
            self.bn_branch2b1 = _bn(mids[0])
            self.conv_branch2b1 = nn.Conv2d(mids[0], out_ch, 3, padding=dilation, dilation=dilation, bias=False)
        self.has_projection = self.bottleneck or in_ch != out_ch or stride != 1
        if self.has_projection:
            self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_bn_relu = F.relu(self.bn_branch2a(x))
        branch1 = self.conv_branch1(x_bn_relu) if self.has_projection else x
        y = self.conv_branch2a(x_bn_relu)
        y = F.relu(self.bn_branch2b1(y))
        if self.bottleneck:
            y = self.conv_branch2b1(self.dropout_2b1(y))
            y = F.relu(self.bn_branch2b2(y))
            y = self.conv_branch2b2(self.dropout_2b2(y))
        else:
            y = self.conv_branch2b1(y)
        return branch1 + y, x_bn_relu


class ReleaseResNet38(nn.Module):
    """ResNet-38 returning ``{"conv4", "conv5", "conv6"}`` (see the module docstring); BatchNorm frozen."""

    out_channels_base = 4096
    stride = 8

    def __init__(self, width_mult: float = 1.0) -> None:
        super().__init__()

        def c(n: int) -> int:
            return max(1, round(n * width_mult))

        self.conv1a = nn.Conv2d(3, c(64), 3, padding=1, bias=False)
        self.order: list[str] = []
        previous = c(64)
        # stage: (blocks, inner, out, first stride, dilation, first block's dilation)
        for stage, (blocks, inner, out, stride, dilation, first) in {
            2: (3, 128, 128, 2, 1, 1), 3: (3, 256, 256, 2, 1, 1), 4: (6, 512, 512, 2, 1, 1),
            5: (3, 512, 1024, 1, 2, 1),
        }.items():
            for i in range(blocks):
                name = f"b{stage}" if i == 0 else f"b{stage}_{i}"
                setattr(self, name, _Block(previous, c(out), (c(inner),), stride if i == 0 else 1, dilation,
                                           first if i == 0 else dilation))
                self.order.append(name)
                previous = c(out)
        self.b6 = _Block(c(1024), c(2048), (c(512), c(1024)), 1, 4, 4, dropout=0.3)
        self.b7 = _Block(c(2048), c(4096), (c(1024), c(2048)), 1, 4, 4, dropout=0.5)
        self.bn7 = _bn(c(4096))
        self.channels = (c(512), c(1024), c(4096))
        # The release never trains conv1a and stage 2, nor any BatchNorm (statistics or affine parameters).
        frozen = [self.conv1a, self.b2, self.b2_1, self.b2_2]
        frozen += [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        for module in frozen:
            for param in module.parameters():
                param.requires_grad_(False)

    def train(self, mode: bool = True) -> ReleaseResNet38:
        super().train(mode)
        for module in self.modules():  # the release keeps every BatchNorm in eval mode
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def forward_as_dict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.conv1a(x)
        out: dict[str, torch.Tensor] = {}
        for name in self.order:
            x, x_bn_relu = getattr(self, name)(x)
            if name == "b5":
                out["conv4"] = x_bn_relu
        x, out["conv5"] = self.b6(x)
        x, _ = self.b7(x)
        out["conv6"] = F.relu(self.bn7(x))
        return out


class ReferenceSmallCNN(nn.Module):
    """The demo's small CNN (l2g's ``small_cnn``), rebuilt; BatchNorm trains, as l2g's."""

    stride = 8

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        # (in, out, stride, dilation) of every conv-BN-ReLU, in order
        plan = [(3, w, 1, 1), (w, w, 2, 1), (w, 2 * w, 1, 1), (2 * w, 2 * w, 2, 1), (2 * w, 4 * w, 1, 1),
                (4 * w, 4 * w, 2, 1), (4 * w, 4 * w, 1, 2), (4 * w, 8 * w, 1, 2), (8 * w, 8 * w, 1, 4)]
        self.layers = nn.ModuleList()
        for cin, cout, stride, dilation in plan:
            self.layers.append(nn.ModuleList([
                nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False), _bn(cout)]))
        self.channels = (4 * w, 8 * w, 8 * w)

    def forward_as_dict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for index, (conv, bn) in enumerate(self.layers):
            x = F.relu(bn(conv(x)))
            if index == 5:
                out["conv4"] = x
            elif index == 7:
                out["conv5"] = x
        out["conv6"] = x
        return out


class ReleaseNet(nn.Module):
    """Backbone + ``fc8`` + optional PCM with the release's forward: ``(map, logits)``."""

    def __init__(self, backbone: nn.Module, num_classes: int, pcm: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        c4, c5, c6 = backbone.channels
        self.fc8 = nn.Conv2d(c6, num_classes + 1, 1, bias=False)
        self.pcm = pcm is not None
        if pcm is not None:
            dim_a, dim_b, dim = pcm
            self.f8_3 = nn.Conv2d(c4, dim_a, 1, bias=False)
            self.f8_4 = nn.Conv2d(c5, dim_b, 1, bias=False)
            self.f9 = nn.Conv2d(3 + dim_a + dim_b, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.backbone.forward_as_dict(x)
        cam = self.fc8(d["conv6"])
        if self.pcm:
            n, _, h, w = d["conv6"].shape
            image = F.interpolate(x, (h, w), mode="bilinear", align_corners=True)
            f = self.f9(torch.cat([image, self.f8_3(d["conv4"].detach()), self.f8_4(d["conv5"].detach())], dim=1))
            f = f.view(n, -1, h * w)
            f = f / (torch.norm(f, dim=1, keepdim=True) + 1e-5)
            affinity = F.relu(f.transpose(1, 2) @ f)
            affinity = affinity / (affinity.sum(dim=1, keepdim=True) + 1e-5)
            propagated = (d["conv6"].view(n, -1, h * w) @ affinity).view(n, -1, h, w)
            cam = cam + self.fc8(propagated)
        logits = F.avg_pool2d(cam[:, :-1], kernel_size=cam.shape[2:]).flatten(1)
        return cam, logits


PROJECT_TO_RELEASE = {"head.": "fc8.", "pcm.project_a.": "f8_3.", "pcm.project_b.": "f8_4.", "pcm.embed.": "f9."}


def build_reference_net(model_config, num_classes: int, project_state: dict[str, torch.Tensor]) -> ReleaseNet:
    """The reference network of an l2g model config (small_cnn or resnet38, PCM or not), holding the weights
    of ``project_state`` (an l2g AttentionNet's state dict): by name for ResNet-38 and the head/PCM (the
    release's names), in order for the small CNN."""
    if model_config.backbone == "resnet38":
        backbone: nn.Module = ReleaseResNet38(model_config.width_mult)
    elif model_config.backbone == "small_cnn":
        backbone = ReferenceSmallCNN(model_config.width)
    else:
        raise ValueError(f"the benchmark's reference has no {model_config.backbone} network")
    pcm = (*model_config.pcm_dims, model_config.pcm_out) if model_config.pcm else None
    net = ReleaseNet(backbone, num_classes, pcm)
    renamed = {}
    for key, value in project_state.items():
        for old, new in PROJECT_TO_RELEASE.items():
            if key.startswith(old):
                renamed[new + key[len(old):]] = value
                break
    mine = net.state_dict()
    backbone_keys = [k for k in mine if k.startswith("backbone.")]
    theirs = [k for k in project_state if k.startswith("backbone.")]
    if model_config.backbone == "resnet38":
        for key in theirs:
            renamed[key] = project_state[key]
    else:  # in order: both build conv, BN, conv, BN, ...
        if len(backbone_keys) != len(theirs):
            raise ValueError(f"{len(backbone_keys)} reference vs {len(theirs)} l2g backbone tensors")
        for ref_key, key in zip(backbone_keys, theirs, strict=True):
            renamed[ref_key] = project_state[key]
    bad = [k for k in mine if k not in renamed or renamed[k].shape != mine[k].shape]
    if bad:
        raise ValueError(f"reference network: l2g weights do not fit {bad[:3]}")
    net.load_state_dict(renamed)
    return net
