"""Segmentation networks: DeepLab-v1 LargeFOV (VGG-16), DeepLab-v2 (ResNet-101 + ASPP), torchvision's
DeepLabV3-ResNet101, and a width-reduced DeepLab for CPUs. All output class scores at stride 8.

Every network's ``forward`` returns (B, K, ceil(H/8), ceil(W/8)) logits, K = foreground classes + 1;
callers upsample them (bilinear) to the label or image size. Nothing is ever downloaded: torchvision
models are built with ``weights=None``; pretrained weights come from a local file (:func:`load_pretrained`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from l2g.config import SegConfig
from l2g.engine.markers import file_digest
from l2g.models.backbones import SmallCNN

ARCH_TITLES = {
    "deeplab_small": "DeepLab-small (width-reduced, CPU)",
    "deeplab_v1_vgg16": "DeepLab-v1 LargeFOV (VGG-16)",
    "deeplab_v2_resnet101": "DeepLab-v2 ASPP (ResNet-101)",
    "deeplabv3_resnet101": "DeepLabV3 (ResNet-101, torchvision)",
}
FROZEN_BN_BY_DEFAULT = ("deeplab_v2_resnet101",)  # DeepLab-v2 fine-tunes with batch norm statistics fixed


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


def model_spec(seg: SegConfig, num_classes: int) -> dict:
    """What fixes a network's shape (stored in checkpoints, compared on load). ``num_classes`` counts
    background."""
    spec: dict = {"arch": seg.arch, "num_classes": num_classes}
    if seg.arch == "deeplab_small":
        spec["width"] = seg.width
    if seg.arch in ("deeplab_small", "deeplab_v2_resnet101"):
        spec["aspp_rates"] = list(seg.aspp_rates)
    return spec


def build_seg_model(seg: SegConfig, num_classes: int) -> SegmentationNet:
    """The configured network with ``num_classes`` outputs (background included), batch norm frozen or
    not per ``seg.freeze_bn`` (None: frozen for DeepLab-v2 only)."""
    if seg.arch == "deeplab_small":
        model: SegmentationNet = DeepLabSmall(num_classes, seg.width, tuple(seg.aspp_rates))
    elif seg.arch == "deeplab_v1_vgg16":
        model = DeepLabLargeFOV(num_classes)
    elif seg.arch == "deeplab_v2_resnet101":
        model = DeepLabV2(num_classes, tuple(seg.aspp_rates))
    elif seg.arch == "deeplabv3_resnet101":
        model = DeepLabV3(num_classes)
    else:
        raise ValueError(f"unknown segmentation network {seg.arch!r} (available: {', '.join(ARCH_TITLES)})")
    freeze = seg.freeze_bn if seg.freeze_bn is not None else seg.arch in FROZEN_BN_BY_DEFAULT
    model.set_freeze_bn(freeze)
    return model


# --- pretrained weights from a local file -----------------------------------------------------------

SCRATCH = "scratch"  # seg.pretrained value: random initialisation, chosen explicitly
# What a missing seg.pretrained file should hold, per network (appended to the error).
_HOW_TO_GET = {
    "deeplab_v1_vgg16": "torchvision's ImageNet VGG-16 file (vgg16-397923af.pth)",
    "deeplab_v2_resnet101": "torchvision's ImageNet ResNet-101 file (resnet101-63fe2227.pth, with "
                            "seg.pretrained_dataset=imagenet), or a COCO-pretrained ResNet-101 / DeepLab in "
                            "torchvision naming (seg.pretrained_dataset=coco)",
    "deeplabv3_resnet101": "torchvision's ImageNet ResNet-101 file (resnet101-63fe2227.pth), or torchvision's "
                           "COCO-trained deeplabv3_resnet101 file",
}


def scratch_warning(seg: SegConfig) -> str | None:
    """The warning for a large DeepLab trained from random weights (None where that is expected)."""
    if seg.pretrained not in (None, "", SCRATCH) or seg.arch == "deeplab_small":
        return None
    how = _HOW_TO_GET.get(seg.arch, "a local weights file")
    return (f"{ARCH_TITLES[seg.arch]} trains from random weights (seg.pretrained="
            f"{seg.pretrained or 'null'}): DeepLab's published results start from ImageNet or COCO weights, "
            f"so expect a far lower mIoU; give {how} with --set seg.pretrained=PATH")


def check_seg_weights(seg: SegConfig) -> None:
    """Fail early (before any training) when ``seg.pretrained`` names a file that does not exist."""
    if seg.pretrained in (None, "", SCRATCH):
        return
    path = Path(seg.pretrained)
    if not path.is_file():
        how = _HOW_TO_GET.get(seg.arch)
        raise FileNotFoundError(
            f"{path}: segmentation weights file not found (seg.pretrained, for {ARCH_TITLES[seg.arch]}); weights "
            "are never downloaded" + (f". Put {how} there or pass --set seg.pretrained=PATH" if how else
                                      ". Pass --set seg.pretrained=PATH")
            + "; --set seg.pretrained=scratch trains from random weights")


def _tensor_dict(raw: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: the object itself or its 'state_dict' / 'model' entry."""
    for _ in range(2):
        if isinstance(raw, dict) and not any(torch.is_tensor(v) for v in raw.values()):
            raw = raw.get("state_dict", raw.get("model"))
    if not isinstance(raw, dict) or not any(torch.is_tensor(v) for v in raw.values()):
        raise ValueError(f"{path}: no state dict of tensors found in this file")
    return {k.removeprefix("module."): v for k, v in raw.items() if torch.is_tensor(v)}


def _renamings(key: str) -> list[str]:
    """Candidate names in our networks for a pretrained tensor's name: as is, under ``backbone.``, and
    without its first component (``Scale.`` of caffe-converted DeepLab weights, ``model.`` ...)."""
    tail = key.split(".", 1)[1] if "." in key else key
    return [key, f"backbone.{key}", tail, f"backbone.{tail}"]


def load_pretrained(model: SegmentationNet, path: str | Path, dataset: str = "imagenet") -> dict:
    """Initialise ``model`` from a local weights file; returns metadata for the run (path, sha256, what
    was loaded). ImageNet classification weights (torchvision ResNet-101 / VGG-16 naming) fill the
    backbone; COCO-pretrained segmentation weights may fill the head too when the class count matches.
    Each tensor is matched by name (with the renamings of :func:`_renamings`) and shape; a file of which
    nothing fits is an error naming the network.
    """
    path = Path(path)
    if not path.is_file():
        check_seg_weights(SegConfig(arch=model.arch, pretrained=str(path)))
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling raises many types for a corrupt or foreign file
        raise ValueError(f"{path}: unreadable weights file ({type(error).__name__}: {error})") from error
    state = model.adapt_pretrained(_tensor_dict(raw, path))
    target = model.state_dict()
    # One renaming for the whole file (the one that fits most tensors), so names cannot cross-match.
    best: dict[str, str] = {}
    for choice in range(4):
        matched = {}
        for key, value in state.items():
            name = _renamings(key)[choice]
            if name in target and target[name].shape == value.shape:
                matched[name] = key
        if len(matched) > len(best):
            best = matched
    if not best:
        caffe = any(key.startswith(("base.", "aspp.c")) or ".conv1.conv." in key for key in state)
        hint = ("; it looks like a deeplab-pytorch (caffe-converted) file, which l2g does not read: give a file in "
                "torchvision naming (docs/fidelity.md, 'Segmentation weights')" if caffe else "")
        raise ValueError(f"{path}: no tensor of this file fits {ARCH_TITLES[model.arch]} (by name and shape); "
                         f"first names in the file: {list(state)[:5]}{hint}")
    model.load_state_dict({name: state[key] for name, key in best.items()}, strict=False)
    loaded = sorted(best)
    return {
        "path": str(path.resolve()),
        "sha256": file_digest(path),
        "dataset": dataset,
        "tensors_loaded": len(loaded),
        "tensors_in_network": len(target),
        "not_loaded": [name for name in target if name not in best][:50],
        "loaded_names": loaded,
    }


# --- checkpoints ---------------------------------------------------------------------------------------


def load_seg_checkpoint(path: str | Path, seg: SegConfig, num_classes: int,
                        device: torch.device | str = "cpu") -> tuple[SegmentationNet, dict]:
    """The network of a run's ``checkpoints/final.pt``, checked against the configured architecture and
    class count: a mismatch is a ValueError saying which (never a wall of missing-key names). The step
    checkpoints hold the training state without the network's spec and are refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained segmentation network (run 'l2g seg train' first)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: unreadable checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(checkpoint, dict) or "spec" not in checkpoint:
        kind = ("a classification-stage checkpoint ('l2g train')" if isinstance(checkpoint, dict)
                and "method" in checkpoint else "not a segmentation checkpoint written by 'l2g seg train'")
        raise ValueError(f"{path}: {kind}")
    expected, found = model_spec(seg, num_classes), checkpoint["spec"]
    if found.get("arch") != expected["arch"]:
        raise ValueError(f"{path}: checkpoint is a {found.get('arch')} network, but the config asks for "
                         f"{expected['arch']} (seg.arch)")
    if found.get("num_classes") != expected["num_classes"]:
        raise ValueError(f"{path}: checkpoint predicts {found.get('num_classes')} classes (background included), "
                         f"but the config has {expected['num_classes']} (data.num_classes + 1)")
    for key in ("width", "aspp_rates"):
        if found.get(key) != expected.get(key):
            raise ValueError(f"{path}: checkpoint has {key}={found.get(key)}, the config seg.{key}={expected.get(key)}")
    model = build_seg_model(seg, num_classes)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise ValueError(f"{path}: weights do not fit {ARCH_TITLES[seg.arch]} ({str(error)[:300]})") from error
    return model.to(device).eval(), checkpoint
