"""What a config value may be beyond its type: the allowed choices and the rules between keys.

:func:`check_config` runs on every config loaded (``Config.validate``); a value that breaks a rule is a
:class:`ConfigError` naming the key, before anything runs. Torch-free: the backbone and segmentation
lists come from the registries of the packages that implement them (``l2g.<package>.registry``), which
import no torch; the lists below are the config's own.
"""

from __future__ import annotations

from typing import Any

from l2g.data.registry import (
    CAM_DTYPES,
    CAM_FORMATS,
    CHECK_MODES,
    IMAGE_VIEWS,
    INTERPOLATIONS,
    LABEL_SOURCE_NAMES,
    MASK_MODES,
    RESIZE_MODES,
    VIEW_STRATEGIES,
)
from l2g.errors import ConfigError
from l2g.method.registry import (
    BACKGROUNDS,
    MAP_RESIZES,
    MAP_UPSAMPLES,
    METHOD_NAMES,
    SHAPE_BACKGROUNDS,
    SHAPE_FORMS,
    TRANSFER_LOSSES,
    VIEW_GATES,
)
from l2g.models.registry import BACKBONE_NAMES, BACKBONES, HEAD_INITS
from l2g.segmentation.registry import CRF_PRESETS, SEG_ARCH_NAMES, SEG_ARCHS

# data.format -> default (image folder, mask folder); "{split}" is replaced by the split's name.
DATA_FORMATS = {
    "voc": ("JPEGImages", "SegmentationClassAug"),  # PASCAL VOC 2012 + SBD (l2g prepare voc)
    "synth": ("JPEGImages", "SegmentationClassAug"),  # the synthetic benchmark writes VOC layout
    "coco": ("{split}", "SegmentationClass"),  # COCO's train2014/ val2014/ + masks of l2g prepare coco
    "custom": ("images", "masks"),  # a folder of images + a label list (CSV or train_cls.txt form)
}
PRETRAINED_DATASETS = ("imagenet", "coco", "other")
SWITCH_VALUES = ("auto", "on", "off")  # runtime.channels_last / compile / pin_memory / persistent_workers
AMP_VALUES = ("auto", "cuda", "on", "off")  # amp, cams.amp (l2g.engine.precision.amp_choice)


def check_config(config: Any) -> None:
    """Raise a ConfigError for the first value of ``config`` (an :class:`l2g.config.Config`) that breaks a
    rule no type annotation can express."""
    _choice("model.backbone", config.model.backbone, BACKBONE_NAMES)
    if not config.model.width_mult > 0:
        raise ConfigError(f"model.width_mult = {config.model.width_mult}: must be > 0")
    if config.model.width_mult != 1.0 and not BACKBONES[config.model.backbone].scales:
        raise ConfigError(f"model.width_mult applies to resnet38 only, not {config.model.backbone} "
                          "(small_cnn's width is model.width)")
    strides = BACKBONES[config.model.backbone].strides
    if config.model.output_stride not in strides:
        raise ConfigError(f"model.output_stride = {config.model.output_stride}: {config.model.backbone} runs at "
                          f"{' or '.join(map(str, strides))}")
    if config.model.output_stride != 8 and config.model.pcm:
        raise ConfigError("model.pcm needs two stride-8 feature maps: use model.output_stride 8 with it")
    _choice("model.head_init", config.model.head_init, HEAD_INITS)
    _choice("method.name", config.method.name, METHOD_NAMES)
    _choice("method.background", config.method.background, BACKGROUNDS)
    _choice("method.shape_form", config.method.shape_form, SHAPE_FORMS)
    _choice("method.shape_background", config.method.shape_background, SHAPE_BACKGROUNDS)
    _choice("method.transfer_loss", config.method.transfer_loss, tuple(TRANSFER_LOSSES))
    _choice("method.view_gate", config.method.view_gate, VIEW_GATES)
    if config.method.lam_warmup_epochs < 0:
        raise ConfigError(f"method.lam_warmup_epochs = {config.method.lam_warmup_epochs}: must be >= 0")
    if config.amp_warmup_epochs < 0:
        raise ConfigError(f"amp_warmup_epochs = {config.amp_warmup_epochs}: must be >= 0 (epochs in float32 "
                          "before autocast starts)")
    _choice("views.strategy", config.views.strategy, VIEW_STRATEGIES)
    _choice("optim.schedule", config.optim.schedule, ("step", "poly"))
    _choice("cams.source", config.cams.source, ("auto", "logits", "softmax"))
    _choice("cams.upsample", config.cams.upsample, MAP_UPSAMPLES)
    _choice("cams.resize", config.cams.resize, MAP_RESIZES)
    _choice("cams.format", config.cams.format, CAM_FORMATS)
    _choice("cams.dtype", config.cams.dtype, CAM_DTYPES)
    _choice("eval.parallel", config.eval.parallel, ("auto", "processes", "threads"))
    _choice("data.check_images", config.data.check_images, CHECK_MODES)
    _choice("data.format", config.data.format, tuple(DATA_FORMATS))
    _validate_resize(config.data)
    _choice("data.labels", config.data.labels, LABEL_SOURCE_NAMES)
    _choice("data.masks", config.data.masks, MASK_MODES)
    _choice("data.image_view", config.data.image_view, IMAGE_VIEWS)
    _choice("device", config.device, ("auto", "cpu", "cuda"))
    if config.views.strategy == "corners+random" and config.views.n < 4:
        raise ConfigError("views.n must be >= 4 with strategy corners+random (four corners come first)")
    if config.views.n < 1:
        raise ConfigError("views.n must be >= 1")
    if not 0 < config.views.patch_size <= config.data.global_size:
        raise ConfigError(
            f"views.patch_size ({config.views.patch_size}) must be in 1..data.global_size "
            f"({config.data.global_size})"
        )
    if config.data.num_classes is not None and config.data.num_classes < 1:
        raise ConfigError("data.num_classes must be >= 1")
    if config.optim.batch_size < 1 or config.optim.epochs < 1 or config.optim.accumulate_steps < 1:
        raise ConfigError("optim.batch_size, optim.epochs and optim.accumulate_steps must be >= 1")
    if config.optim.steps < 0 or config.optim.min_steps < 0:
        raise ConfigError("optim.steps and optim.min_steps must be >= 0 (0: none)")
    if config.eval.workers < 0:
        raise ConfigError(f"eval.workers must be >= 0 (0 = one per CPU core), got {config.eval.workers}")
    if not config.cams.scales:
        raise ConfigError("cams.scales must list at least one scale")
    _validate_map_size(config.cams)
    _validate_seg(config.seg)
    for key, value in (("amp", config.amp), ("cams.amp", config.cams.amp)):
        if not isinstance(value, bool):
            _choice(key, value, AMP_VALUES)
    for key, value in (("runtime.channels_last", config.runtime.channels_last),
                       ("runtime.compile", config.runtime.compile),
                       ("runtime.pin_memory", config.runtime.pin_memory),
                       ("runtime.persistent_workers", config.runtime.persistent_workers)):
        if not isinstance(value, bool):
            _choice(key, value, SWITCH_VALUES)
    micro = config.runtime.micro_batch
    if micro != "auto" and (isinstance(micro, bool) or not isinstance(micro, int) or micro < 1
                            or config.optim.batch_size % micro):
        raise ConfigError(f"runtime.micro_batch must be auto or a number of images dividing optim.batch_size "
                          f"({config.optim.batch_size}), got {micro!r}")
    if config.runtime.tensorboard_images < 0:
        raise ConfigError("runtime.tensorboard_images must be >= 0")
    if config.runtime.checkpoint_every < 0 or config.runtime.keep_checkpoints < 1:
        raise ConfigError("runtime.checkpoint_every must be >= 0 and runtime.keep_checkpoints >= 1")
    if config.data.workers < -1:
        raise ConfigError("data.workers must be >= 0, or -1 for automatic")
    if config.log_every < 1:
        raise ConfigError("log_every must be >= 1")


def _validate_resize(data: Any) -> None:
    _choice("data.resize_mode", data.resize_mode, RESIZE_MODES)
    _choice("data.resize_interpolation", data.resize_interpolation, INTERPOLATIONS)
    _choice("data.saliency_interpolation", data.saliency_interpolation, INTERPOLATIONS)
    short = data.resize_short
    low, high = (short, short) if isinstance(short, int) else short
    if not 1 <= low <= high:
        raise ConfigError(f"data.resize_short = {list(short) if isinstance(short, tuple) else short}: expected a "
                          "number >= 1 or a range [low, high] with 1 <= low <= high")
    if data.global_size < 1:
        raise ConfigError("data.global_size must be >= 1")


def _validate_map_size(cams: Any) -> None:
    short, longest = cams.short_side, cams.max_side
    if isinstance(short, str) and short != "train" or isinstance(short, int) and short < 1:
        raise ConfigError(f"cams.short_side = {short!r}: expected \"train\", a number >= 1 or null (the photo's size)")
    if longest is not None and longest < 32:
        raise ConfigError(f"cams.max_side = {longest}: must be >= 32, or null (no bound)")


def _validate_seg(seg: Any) -> None:
    _choice("seg.arch", seg.arch, SEG_ARCH_NAMES)
    packaged = SEG_ARCHS[seg.arch].packaged_weights is not None
    random_weights = seg.pretrained == "scratch" or (not seg.pretrained and not packaged)
    if seg.freeze_bn is True and random_weights:
        raise ConfigError(f"seg.freeze_bn = true with random weights (seg.pretrained = {seg.pretrained or 'null'}): "
                          "frozen batch norm keeps the statistics of pretrained weights, and random ones have none, so "
                          "the network diverges. Set seg.freeze_bn=false (or null), or give seg.pretrained=PATH")
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


