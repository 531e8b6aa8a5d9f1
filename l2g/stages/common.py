"""What every stage shares: the run folder, seeding, threads, JSON files; and loading a split (whose home is
:mod:`l2g.data.splits`)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from l2g import atomic
from l2g.config import Config, load_config
from l2g.data.splits import (  # noqa: F401 (the stages' path)
    dataset_class_names,
    require_num_classes,
    split_cls_list,
    split_listed,
    split_samples,
)
from l2g.engine.run_paths import RunFolder


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(config: Config) -> None:
    if config.threads > 0:
        torch.set_num_threads(config.threads)


def run_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """The config a run was trained with (``<run>/config.yaml``), with optional overrides."""
    path = RunFolder(Path(run_dir)).config
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found — is {run_dir} a run folder written by 'l2g train'?")
    return load_config(path, overrides)


def write_json(path: str | Path, payload: dict) -> None:
    """Write JSON atomically (see l2g.atomic), so a reader never sees half a file."""
    atomic.write_json(path, payload)
