"""What every stage shares: the run folder, the device, seeding, loading a split."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from l2g.config import Config, load_config
from l2g.data.voc_layout import Sample, load_split
from l2g.engine import atomic


def pick_device(config: Config) -> torch.device:
    """The configured device; under torchrun each process takes GPU LOCAL_RANK of its node."""
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0") or 0))
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(config: Config) -> None:
    if config.threads > 0:
        torch.set_num_threads(config.threads)


def run_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """The config a run was trained with (``<run>/config.yaml``), with optional overrides."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found — is {run_dir} a run folder written by 'l2g train'?")
    return load_config(path, overrides)


def split_samples(config: Config, split: str, need_masks: bool = False, need_saliency: bool = False) -> list[Sample]:
    data = config.data
    cls_list = data.cls_list if split == data.train_split else None
    return load_split(
        data.root, split, data.num_classes, cls_list=cls_list, mask_dir=data.mask_dir,
        saliency_dir=data.saliency_dir, need_masks=need_masks, need_saliency=need_saliency,
        check_images=data.check_images,
    )


def write_json(path: str | Path, payload: dict) -> None:
    """Write JSON atomically (see l2g.engine.atomic), so a reader never sees half a file."""
    atomic.write_json(path, payload)
