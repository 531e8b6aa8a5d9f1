"""torchvision's ResNet-50/101 and VGG-16 as output-stride-8 backbones, with ImageNet weights from a local
file (torchvision's own ``resnet50-*.pth`` / ``vgg16-*.pth``: the user downloads them once; we never do).

- ResNet-50/101: ``replace_stride_with_dilation=[False, True, True]`` (layer3 dilation 2, layer4 dilation 4).
  conv1 + layer1 are frozen, as IRN does for ResNet-50; BatchNorm is frozen with ``freeze_bn``.
- VGG-16 as DeepLab-LargeFOV uses it: pool4 and pool5 become 3x3 max pools with stride 1 and conv5_x is
  dilated by 2, so conv5 sees what it saw at stride 16. Nothing is frozen (DeepLab fine-tunes it all).
  The fully connected layers (fc6/fc7 of the ImageNet model) are not part of the backbone.

State-dict keys are torchvision's (``layer3.0.conv1.weight``, ``features.24.weight``), so its files load
without renaming; their classifier (``fc.*``, ``classifier.*``) is dropped.
"""

from __future__ import annotations

import torch
from torch import nn

from l2g.compat.torchvision_ops import import_torchvision
from l2g.models.base import BackboneOutput, FreezableBackbone


class TorchvisionResNet(FreezableBackbone):
    frozen_prefixes = ("conv1.", "bn1.", "layer1.")
    classifier_prefixes = ("fc.",)

    def __init__(self, name: str = "resnet101", freeze_bn: bool = True) -> None:
        super().__init__(freeze_bn)
        models = import_torchvision().models
        net = getattr(models, name)(weights=None, replace_stride_with_dilation=[False, True, True])
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = 2048
        self.intermediate_channels = (512, 1024)
        self.freeze()

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(images)))))
        stage2 = self.layer2(x)
        stage3 = self.layer3(stage2)
        return BackboneOutput(self.layer4(stage3), (stage2, stage3))


# Indices in torchvision's vgg16().features
_VGG_POOL4, _VGG_POOL5 = 23, 30
_VGG_CONV5 = (24, 26, 28)
_VGG_CONV4_3_RELU, _VGG_CONV5_3_RELU = 22, 29


class VGG16LargeFOV(FreezableBackbone):
    classifier_prefixes = ("classifier.",)

    def __init__(self) -> None:
        super().__init__(freeze_bn=False)  # VGG-16 has no BatchNorm
        vgg = import_torchvision().models.vgg
        features = vgg.make_layers(vgg.cfgs["D"])  # exactly vgg16().features, without the 120 M fc weights
        for index in (_VGG_POOL4, _VGG_POOL5):
            features[index] = nn.MaxPool2d(3, stride=1, padding=1)
        for index in _VGG_CONV5:
            features[index].dilation, features[index].padding = (2, 2), (2, 2)
        self.features = features
        self.out_channels = 512
        self.intermediate_channels = (512, 512)

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        x, taps = images, {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in (_VGG_CONV4_3_RELU, _VGG_CONV5_3_RELU):
                taps[index] = x
        return BackboneOutput(x, (taps[_VGG_CONV4_3_RELU], taps[_VGG_CONV5_3_RELU]))
