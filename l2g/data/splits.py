"""A configured dataset's splits: the checked samples of a split and its class names, as the data
section of a config says (format, folders, label source). What every stage and the run report load."""

from __future__ import annotations

from pathlib import Path

from l2g.config import Config
from l2g.data.errors import DatasetError
from l2g.data.layout import Sample, class_names, load_split, split_is_listed


def split_samples(config: Config, split: str, need_masks: bool = False, need_saliency: bool = False,
                  check_images: str | None = None, decode_masks: bool = False) -> list[Sample]:
    """The checked samples of ``split`` as the data section configures them (format, folders, labels).

    ``check_images`` overrides ``data.check_images`` for stages that check every file as they read it
    ("exists": no up-front decoding pass over a split that is about to be read anyway). ``decode_masks``:
    the masks there are are decoded too when not needed (see :func:`l2g.data.layout.load_split`)."""
    data = config.data
    image_dir, mask_dir = data.folders()
    return load_split(
        data.root, split, data.num_classes, cls_list=split_cls_list(config, split), mask_dir=mask_dir,
        saliency_dir=data.saliency_dir, need_masks=need_masks, need_saliency=need_saliency,
        check_images=check_images or data.check_images, image_dir=image_dir, labels=data.labels,
        classes_file=data.classes_file, image_view=data.view, decode_masks=decode_masks,
    )


def require_num_classes(config: Config) -> None:
    """A DatasetError when ``data.num_classes`` is unset and there was no classes file to count."""
    if config.data.num_classes is None:
        data = config.data
        path = Path(data.classes_file) if data.classes_file else Path("classes.txt")
        path = path if path.is_absolute() else Path(data.root) / path
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
