"""Segmentation networks: DeepLab-v1 LargeFOV (VGG-16), DeepLab-v2 (ResNet-101 + ASPP), torchvision's
DeepLabV3-ResNet101, and a width-reduced DeepLab for CPUs. All output class scores at stride 8.

Every network's ``forward`` returns (B, K, ceil(H/8), ceil(W/8)) logits, K = foreground classes + 1;
callers upsample them (bilinear) to the label or image size. Nothing is ever downloaded: torchvision
models are built with ``weights=None``; pretrained weights come from a local file
(:func:`l2g.segmentation.loading.load_pretrained`). The table of networks by name is
:mod:`l2g.segmentation.registry`.
"""

from __future__ import annotations

import torch
from torch import nn

from l2g.models.small_cnn import SmallCNN


def _torchvision():
    from l2g.compat.torchvision_ops import import_torchvision

    return import_torchvision()


class SegmentationNet(nn.Module):
    """Base class: optional frozen batch norm that survives ``.train()`` (eval mode, no gradients)."""

    arch = ""

    def __init__(self) -> None:
        super().__init__()
        self.freeze_bn = False

    def set_freeze_bn(self, freeze: bool) -> None:
        self.freeze_bn = freeze
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for param in module.parameters():
                    param.requires_grad_(not freeze)
        self.train(self.training)

    def train(self, mode: bool = True) -> SegmentationNet:
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def adapt_pretrained(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Convert a pretrained state dict's tensors that need more than renaming (default: none)."""
        return state


class ASPP(nn.Module):
    """DeepLab-v2's atrous spatial pyramid pooling: parallel 3x3 convs at several rates, outputs summed."""

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate) for rate in rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return sum(branch(features) for branch in self.branches)


class DeepLabLargeFOV(SegmentationNet):
    """DeepLab-v1 LargeFOV: VGG-16 with pool4/pool5 at stride 1, conv5 dilated by 2, fc6 a 3x3 conv
    dilated by 12 with 1024 channels, fc7 1x1 1024, fc8 the classifier. No batch norm."""

    arch = "deeplab_v1_vgg16"

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        vgg = _torchvision().models.vgg
        self.features = vgg.make_layers(vgg.cfgs["D"], batch_norm=False)  # same indices as vgg16().features
        for index in (4, 9, 16):  # pool1-3: DeepLab's 3x3 stride-2 pooling (ceil(H/2) for any H)
            self.features[index] = nn.MaxPool2d(3, stride=2, padding=1)
        for index in (23, 30):  # pool4, pool5: stride 1, so the output stride stays 8
            self.features[index] = nn.MaxPool2d(3, stride=1, padding=1)
        for index in (24, 26, 28):  # conv5_x: dilation 2 makes up for pool4's lost stride
            self.features[index].dilation, self.features[index].padding = (2, 2), (2, 2)
        self.pool5a = nn.AvgPool2d(3, stride=1, padding=1)
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=12, dilation=12)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.fc8 = nn.Conv2d(1024, num_classes, 1)
        self.drop6, self.drop7 = nn.Dropout2d(0.5), nn.Dropout2d(0.5)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.pool5a(self.features(images))
        x = self.drop6(torch.relu(self.fc6(x)))
        x = self.drop7(torch.relu(self.fc7(x)))
        return self.fc8(x)

    def adapt_pretrained(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return vgg_fc_to_largefov(state)


def vgg_fc_to_largefov(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision VGG-16's fully connected fc6/fc7 decimated as DeepLab-LargeFOV did: every 4th unit, and
    fc6's 7x7 kernel sampled at every 3rd position to 3x3 (``classifier.0/3`` -> ``fc6``/``fc7``)."""
    state = dict(state)
    fc6, fc7 = state.get("classifier.0.weight"), state.get("classifier.3.weight")
    if fc6 is not None and tuple(fc6.shape) == (4096, 512 * 7 * 7):
        state["fc6.weight"] = fc6.reshape(4096, 512, 7, 7)[::4, :, ::3, ::3].contiguous()
        state["fc6.bias"] = state["classifier.0.bias"][::4].contiguous()
    if fc7 is not None and tuple(fc7.shape) == (4096, 4096):
        state["fc7.weight"] = fc7[::4, ::4].reshape(1024, 1024, 1, 1).contiguous()
        state["fc7.bias"] = state["classifier.3.bias"][::4].contiguous()
    return state


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its pooling and fc, layers 3-4 dilated (output stride 8)."""

    def __init__(self, depth: int = 101) -> None:
        super().__init__()
        resnet = getattr(_torchvision().models, f"resnet{depth}")(
            weights=None, replace_stride_with_dilation=[False, True, True])
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.out_channels = 2048

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class DeepLabV2(SegmentationNet):
    """DeepLab-v2: dilated ResNet-101 (stride 8) and ASPP rates 6/12/18/24 summed into class scores."""

    arch = "deeplab_v2_resnet101"

    def __init__(self, num_classes: int, rates: tuple[int, ...] = (6, 12, 18, 24)) -> None:
        super().__init__()
        self.backbone = ResNetBackbone(101)
        self.classifier = ASPP(self.backbone.out_channels, num_classes, rates)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images))


class DeepLabV3(SegmentationNet):
    """torchvision's DeepLabV3-ResNet101 (output stride 8), returning its stride-8 scores."""

    arch = "deeplabv3_resnet101"

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        _torchvision()
        from torchvision.models.segmentation import deeplabv3_resnet101

        net = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
        self.backbone, self.classifier = net.backbone, net.classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images)["out"])


class DeepLabSmall(SegmentationNet):
    """A width-reduced DeepLab-v2 for CPUs: l2g's small dilated CNN (stride 8) and an ASPP head."""

    arch = "deeplab_small"

    def __init__(self, num_classes: int, width: int = 16, rates: tuple[int, ...] = (2, 4, 6, 8)) -> None:
        super().__init__()
        self.backbone = SmallCNN(width)
        self.classifier = ASPP(self.backbone.out_channels, num_classes, rates)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images).features)
