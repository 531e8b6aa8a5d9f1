"""Loading a config: YAML files and their ``base:`` chain, the shipped presets, ``--set`` overrides, and
back to plain dicts and YAML.

Unknown keys are errors (with a "did you mean" hint), never ignored: a typo in a YAML file must not
silently train with a default. Every value is checked against its type in :mod:`l2g.config.schema`
(converted only where that is lossless), then the whole config by :mod:`l2g.config.validation`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from l2g.config.schema import Config, DataConfig
from l2g.config.validation import ConfigError
from l2g.method.registry import METHOD_NAMES


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """A Config from a YAML file (or the defaults when ``path`` is None) plus ``key=value`` overrides.

    A file may start from another with a top-level ``base:`` key (see :func:`read_config_file`), and may
    give one method its own settings under ``by_method:`` (applied when ``method.name`` is that method, after
    the file and before the overrides, so ``--set`` still wins; a file built on it with ``base:`` that sets
    a key itself wins over the base's per-method value of that key).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        raw = read_config_file(path)
    by_method = raw.pop(BY_METHOD_KEY, None) or {}
    where = str(path) if path else "config"
    config = _with_overrides(from_dict(Config, raw, where=where), overrides)
    section = by_method.get(config.method.name)
    if section:  # the method is known only now (a --set may choose it): rebuild with its section
        config = _with_overrides(from_dict(Config, merge_configs(raw, section),
                                           where=f"{where}: {BY_METHOD_KEY}.{config.method.name}"), overrides)
    return config.validate()


def _with_overrides(config: Config, overrides: list[str] | None) -> Config:
    for item in overrides or []:
        apply_override(config, item)
    return config


BASE_KEY = "base"
# Per-method settings of a config file: {method name: sections as at the top level}, e.g. a longer training
# for l2g only. Not a field of Config: a run's saved config.yaml holds the resolved values.
BY_METHOD_KEY = "by_method"


def _check_by_method(value: Any, path: Path) -> None:
    """``by_method:`` of one file: a mapping from method names to config sections (method.name excluded)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {BY_METHOD_KEY} must map method names to settings, got {value!r}")
    for name, section in value.items():
        if name not in METHOD_NAMES:
            raise ConfigError(f"{path}: {BY_METHOD_KEY}: unknown method {name!r} (choose from "
                              f"{', '.join(METHOD_NAMES)}){_did_you_mean(str(name), METHOD_NAMES)}")
        from_dict(Config, section or {}, where=f"{path}: {BY_METHOD_KEY}.{name}")  # its shape, keys and types first
        if "name" in ((section or {}).get("method") or {}):
            raise ConfigError(f"{path}: {BY_METHOD_KEY}.{name} sets method.name: a method's own settings cannot "
                              "choose another method")


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
    by_method = raw.pop(BY_METHOD_KEY, None)
    from_dict(Config, raw, where=str(path))  # unknown keys and wrong types, named with this file
    if by_method is not None:
        _check_by_method(by_method, path)
        raw[BY_METHOD_KEY] = by_method
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: {BASE_KEY} must name a config file or preset, got {base!r}")
    inherited = read_config_file(resolve_base_path(base, path), chain)
    if BY_METHOD_KEY in inherited:  # a key this file sets wins over the base's per-method value of it
        own = {key: value for key, value in raw.items() if key != BY_METHOD_KEY}
        inherited[BY_METHOD_KEY] = {name: _without(section or {}, own)
                                    for name, section in inherited[BY_METHOD_KEY].items()}
    return merge_configs(inherited, raw)


def _without(section: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    """``section`` less every key that ``keys`` sets (nested mappings compared key by key)."""
    kept = {}
    for key, value in section.items():
        if key not in keys:
            kept[key] = value
        elif isinstance(value, dict) and isinstance(keys[key], dict):
            kept[key] = _without(value, keys[key])
    return kept


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


PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"  # l2g/configs


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


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}`` (of :func:`to_dict`'s nested dicts)."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def unflatten(flat: dict[str, object]) -> dict:
    """``{"optim.lr": 1}`` -> ``{"optim": {"lr": 1}}``."""
    nested: dict = {}
    for dotted, value in flat.items():
        *parents, last = dotted.split(".")
        target = nested
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return nested


def save_config(config: Config, path: str | Path) -> None:
    from l2g.atomic import write_text

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
