"""l2g: local-to-global attention transfer (L2G, CVPR 2022) for weakly supervised semantic segmentation.

The Python API (docs/api.md) is :mod:`l2g.api`, whose names are available here::

    import l2g

    config = l2g.load_config("synth", {"optim.epochs": 2})
    l2g.train(config, "runs/l2g")
    l2g.infer_cams("runs/l2g")
    maps = l2g.AttentionMapper.from_run("runs/l2g")("photo.jpg", tags=["dog"])

They are imported on first use, so ``import l2g`` does not import torch.
"""

from __future__ import annotations

from importlib import import_module, metadata
from typing import TYPE_CHECKING, Any

API_NAMES = (
    "AttentionMapper", "Segmenter", "evaluate_cams", "evaluate_segmentation", "export_voc", "infer_cams",
    "list_presets", "load_config", "load_run_config", "make_pseudo_masks", "predict", "run_pipeline", "train",
    "train_segmentation",
)
__all__ = [*API_NAMES, "Config", "ConfigError", "__version__"]

try:
    __version__ = metadata.version("l2g")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from l2g.api import (  # noqa: F401
        AttentionMapper,
        Segmenter,
        evaluate_cams,
        evaluate_segmentation,
        export_voc,
        infer_cams,
        list_presets,
        load_config,
        load_run_config,
        make_pseudo_masks,
        predict,
        run_pipeline,
        train,
        train_segmentation,
    )
    from l2g.config import Config, ConfigError  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in API_NAMES:
        value = getattr(import_module("l2g.api"), name)
    elif name in ("Config", "ConfigError"):
        value = getattr(import_module("l2g.config"), name)
    else:
        raise AttributeError(f"module 'l2g' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
