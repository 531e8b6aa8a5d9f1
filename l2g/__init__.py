"""l2g: local-to-global attention transfer (L2G, CVPR 2022) for weakly supervised semantic segmentation.

The Python API (docs/api.md) is :mod:`l2g.api`, whose names are available here::

    import l2g

    config = l2g.load_config("synth", {"optim.epochs": 2})
    l2g.train(config, "runs/l2g")
    l2g.infer_cams("runs/l2g")
    maps = l2g.AttentionMapper.from_run("runs/l2g")("photo.jpg", tags=["dog"])

``import l2g`` does not import torch: the API imports it on first use, and the config (``l2g.Config``,
``l2g.ConfigError``) is imported when first named.
"""

from __future__ import annotations

from importlib import import_module, metadata
from typing import TYPE_CHECKING, Any

# The API's one list of names is l2g.api.__all__; l2g.api imports torch only inside its functions.
from l2g.api import *  # noqa: F403
from l2g.api import __all__ as _api_names

__all__ = [*_api_names, "Config", "ConfigError", "__version__"]

try:
    __version__ = metadata.version("l2g")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from l2g.config import Config, ConfigError  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in ("Config", "ConfigError"):
        value = getattr(import_module("l2g.config"), name)
    else:
        raise AttributeError(f"module 'l2g' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
