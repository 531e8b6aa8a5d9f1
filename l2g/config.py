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
VIEW_STRATEGIES = ("corners+random", "random", "grid")


class ConfigError(ValueError):
    """A configuration value or key that cannot be used."""


@dataclass
class DataConfig:
    root: str = "data/synth"
    train_split: str = "train"
    cls_list: str | None = None  # default: ImageSets/Segmentation/<split>_cls.txt
    mask_dir: str = "SegmentationClassAug"
    saliency_dir: str = "saliency"
    num_classes: int = 6  # foreground classes C (the network has C + 1 output channels)
    resize_short: int = 128  # release: 512
    global_size: int = 112  # release: 448
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.1)  # brightness, contrast, saturation, hue
    flip: bool = True
    workers: int = 0
    check_images: str = "decode"  # "exists" or "decode": how hard to validate files before training


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
    pretrained: str | None = None  # local weights file; never downloaded


@dataclass
class MethodConfig:
    name: str = "l2g_shape"  # cam | local | l2g | l2g_shape
    lam: float = 10.0  # weight of the knowledge-transfer loss (VOC 10, COCO 30)
    background: str = "complement"  # local background target: "release" (its own channel) or "complement"
    shape_form: str = "paper"  # "release" (always B*S) or "paper" (Eq. 7: fall back to A on empty saliency)
    shape_threshold: float | None = None  # binarisation of targets; None: 0.001 (release) / 0.1 (paper)
    global_cls_weight: float = 0.0  # paper ablation: a global classification loss hurts; logged anyway


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


@dataclass
class CamsConfig:
    split: str = "train"
    scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    flip: bool = True
    upsample: str = "bicubic"  # release: bicubic
    # Which output becomes the attention map: "logits" (release: raw scores F), "softmax" (G, Eq. 5), or
    # "auto": softmax for networks trained by attention transfer (l2g, l2g_shape), logits otherwise.
    source: str = "auto"


@dataclass
class EvalConfig:
    thresholds: tuple[float, ...] = ()  # empty: 0.05..0.60 step 0.01
    threshold: float | None = None  # pseudo masks: None = best threshold of the sweep
    workers: int = 0  # threads reading and scoring images in the sweep; 0 = one per CPU core (at most 8)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    cams: CamsConfig = field(default_factory=CamsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = False  # mixed precision (GPU only; bf16 where supported)
    threads: int = 0  # torch CPU threads, 0 = torch's default
    log_every: int = 10

    def validate(self) -> Config:
        """Check values that no type annotation can express; returns self for chaining."""
        _choice("method.name", self.method.name, METHODS)
        _choice("method.background", self.method.background, ("release", "complement"))
        _choice("method.shape_form", self.method.shape_form, ("release", "paper"))
        _choice("views.strategy", self.views.strategy, VIEW_STRATEGIES)
        _choice("optim.schedule", self.optim.schedule, ("step", "poly"))
        _choice("cams.source", self.cams.source, ("auto", "logits", "softmax"))
        _choice("cams.upsample", self.cams.upsample, ("bicubic", "bilinear"))
        _choice("data.check_images", self.data.check_images, ("exists", "decode"))
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
        if self.optim.batch_size < 1 or self.optim.epochs < 1:
            raise ConfigError("optim.batch_size and optim.epochs must be >= 1")
        if self.eval.workers < 0:
            raise ConfigError(f"eval.workers must be >= 0 (0 = one per CPU core), got {self.eval.workers}")
        if not self.cams.scales:
            raise ConfigError("cams.scales must list at least one scale")
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


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} = {value!r}: must be one of {', '.join(allowed)}")


# --- loading, overriding, saving -------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """A Config from a YAML file (or the defaults when ``path`` is None) plus ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from error
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    config = from_dict(Config, raw, where=str(path) if path else "config")
    for item in overrides or []:
        apply_override(config, item)
    return config.validate()


def resolve_config_path(name: str | Path) -> Path:
    """A config path as given, or the name of a preset shipped in ``l2g/configs``."""
    path = Path(name)
    if path.exists():
        return path
    preset = Path(__file__).parent / "configs" / (path.name if path.suffix else f"{path.name}.yaml")
    if preset.exists():
        return preset
    presets = ", ".join(sorted(p.stem for p in preset.parent.glob("*.yaml")))
    raise ConfigError(f"{name}: no such config file, and no preset of that name (presets: {presets})")


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
            setattr(target, name, _coerce(hint, yaml.safe_load(text), f"--set {dotted}"))
        else:
            target = getattr(target, name)
            if not dataclasses.is_dataclass(target):
                raise ConfigError(f"--set {dotted}: {name!r} is a value, not a section")


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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


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
                errors.append(str(error))
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
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {hint}")  # pragma: no cover - a programming error
