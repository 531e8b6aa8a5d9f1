"""Typed configuration: dataclasses loaded from YAML, overridable with ``--set section.key=value``.

    schema.py      every section and key: type, default, meaning (``Config``, ``DataConfig``, ...)
    validation.py  what a value may be beyond its type (choices, rules between keys): ``ConfigError``
    loading.py     YAML files and their ``base:`` chain, shipped presets, ``--set`` overrides, ``to_dict``
    stage_keys.py  which keys each stage depends on: the pipeline's stage inputs and the resume-safe keys
    text_files.py  the dataset's small text files (class names, lists) read alike by the config and the data

Unknown keys are errors (with a "did you mean" hint), never ignored. The names below are the package's
public API: ``from l2g.config import Config, load_config`` keeps working whatever module defines them.
"""

from __future__ import annotations

from l2g.config.loading import (
    BASE_KEY,
    PRESETS_DIR,
    apply_override,
    flatten,
    from_dict,
    load_config,
    merge_configs,
    preset_names,
    read_config_file,
    resolve_base_path,
    resolve_config_path,
    save_config,
    shipped_preset,
    to_dict,
    unflatten,
)
from l2g.config.schema import (
    CamsConfig,
    Config,
    CrfConfig,
    DataConfig,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    PseudoCrfConfig,
    RuntimeConfig,
    SegConfig,
    ViewsConfig,
)
from l2g.config.validation import (
    DATA_FORMATS,
    PRETRAINED_DATASETS,
    VIEW_STRATEGIES,
    ConfigError,
    check_config,
)
from l2g.models.registry import BACKBONE_NAMES, IMAGENET_MEAN, IMAGENET_STD
from l2g.segmentation.registry import SEG_ARCH_NAMES

__all__ = [
    "BACKBONE_NAMES", "BASE_KEY", "DATA_FORMATS", "IMAGENET_MEAN", "IMAGENET_STD", "PRESETS_DIR",
    "PRETRAINED_DATASETS", "SEG_ARCH_NAMES", "VIEW_STRATEGIES",
    "CamsConfig", "Config", "ConfigError", "CrfConfig", "DataConfig", "EvalConfig", "MethodConfig", "ModelConfig",
    "OptimConfig", "PseudoCrfConfig", "RuntimeConfig", "SegConfig", "ViewsConfig", "apply_override", "check_config",
    "flatten", "from_dict", "load_config", "merge_configs", "preset_names", "read_config_file", "resolve_base_path",
    "resolve_config_path", "save_config", "shipped_preset", "to_dict", "unflatten",
]
