"""What every stage shares: the run folder, the device, seeding, loading a split."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from l2g.config import Config, load_config
from l2g.data.voc_layout import Sample, class_names, load_split, split_is_listed
from l2g.engine import atomic


def pick_device(config: Config) -> torch.device:
    """The configured device (a GPU when ``auto`` finds one); under torchrun each process takes GPU
    LOCAL_RANK of its node. One rule for every stage: :func:`l2g.engine.distributed.setup`'s."""
    from l2g.engine import distributed

    return distributed.setup(config.device).device


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


def split_samples(config: Config, split: str, need_masks: bool = False, need_saliency: bool = False,
                  check_images: str | None = None) -> list[Sample]:
    """The checked samples of ``split`` as the data section configures them (format, folders, labels).

    ``check_images`` overrides ``data.check_images`` for stages that check every file as they read it
    ("exists": no up-front decoding pass over a split that is about to be read anyway)."""
    data = config.data
    image_dir, mask_dir = data.folders()
    return load_split(
        data.root, split, data.num_classes, cls_list=split_cls_list(config, split), mask_dir=mask_dir,
        saliency_dir=data.saliency_dir, need_masks=need_masks, need_saliency=need_saliency,
        check_images=check_images or data.check_images, image_dir=image_dir, labels=data.labels,
        classes_file=data.classes_file, image_view=data.view,
    )


def require_num_classes(config: Config) -> None:
    """A DatasetError when ``data.num_classes`` is unset and there was no classes file to count."""
    if config.data.num_classes is None:
        data = config.data
        path = Path(data.classes_file) if data.classes_file else Path("classes.txt")
        path = path if path.is_absolute() else Path(data.root) / path
        from l2g.data.errors import DatasetError

        raise DatasetError(f"{path}: not found, and data.num_classes is not set: write the class names there, one "
                           "per line, or give their number with --set data.num_classes=C")


def split_listed(config: Config, split: str) -> bool:
    """Whether the dataset lists ``split`` at all (an id list or a label list of its own)."""
    return split_is_listed(config.data.root, split, split_cls_list(config, split))


def split_cls_list(config: Config, split: str) -> str | None:
    """data.cls_list where it applies to ``split``: always for a .npy or a "{split}" path, else the train split."""
    cls_list = config.data.cls_list
    if cls_list is None:
        return None
    if split == config.data.train_split or "{split}" in cls_list or cls_list.lower().endswith(".npy"):
        return cls_list
    return None


def dataset_class_names(config: Config) -> list[str]:
    """The C foreground class names of the configured dataset (classes file, else class0, class1, ...)."""
    return class_names(config.data.root, config.data.num_classes, config.data.classes_file)


def write_json(path: str | Path, payload: dict) -> None:
    """Write JSON atomically (see l2g.engine.atomic), so a reader never sees half a file."""
    atomic.write_json(path, payload)
