"""Data of the segmentation stage: training pairs (image, pseudo mask) with DeepLab's augmentation, and
the check that a pseudo-mask folder covers a split. (A user's photos are read by
:func:`l2g.data.images.read_user_image`.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from l2g.config import Config
from l2g.data.classification import normalize
from l2g.data.errors import listed
from l2g.data.images import read_image, read_mask
from l2g.data.layout import PIL_ERRORS, DatasetError, Sample
from l2g.data.palette import IGNORE_INDEX
from l2g.data.pil_open import displayed_turned

MAX_LISTED = 10


def pseudo_mask_paths(samples: list[Sample], pseudo_dir: str | Path) -> list[Path]:
    """``<pseudo_dir>/<id>.png`` for every sample, checked to exist and to have its image's size (read
    from the file headers, so this is quick). One DatasetError lists every problem."""
    pseudo_dir = Path(pseudo_dir)
    if not pseudo_dir.is_dir():
        raise FileNotFoundError(f"{pseudo_dir}: pseudo-mask folder not found (run 'l2g pseudo' first)")
    paths, problems = [], []
    for sample in samples:
        path = pseudo_dir / f"{sample.image_id}.png"
        paths.append(path)
        if not path.is_file():
            problems.append(f"{path}: pseudo mask missing")
            continue
        try:
            with Image.open(path) as mask, Image.open(sample.image_path) as image:
                width, height = image.size
                if sample.view == "displayed" and displayed_turned(sample.image_path):
                    width, height = height, width  # the stages read it turned by its EXIF orientation
                if mask.size != (width, height):
                    problems.append(f"{path}: pseudo mask is {mask.size[1]}x{mask.size[0]} (HxW) but its image "
                                    f"{sample.image_path} is {height}x{width}")
        except PIL_ERRORS as error:
            problems.append(f"{path}: unreadable ({error})")
    if problems:
        raise DatasetError(f"{pseudo_dir}: {len(problems)} problem(s) with the pseudo masks of "
                           f"{len(samples)} images:\n{listed(problems, MAX_LISTED)}")
    return paths


def _resize(array: np.ndarray, scale: float, resample: int) -> np.ndarray:
    height, width = array.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(array).resize(size, resample))


def _pad_to(array: np.ndarray, size: int, value: float) -> np.ndarray:
    """Pad bottom/right to at least size x size with ``value``."""
    pad_h, pad_w = max(size - array.shape[0], 0), max(size - array.shape[1], 0)
    if not pad_h and not pad_w:
        return array
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, constant_values=value)


class SegmentationDataset(Dataset):
    """Training pairs: random scale (``seg.scale_range``), pad (image with the mean colour, mask with 255),
    random ``seg.crop_size`` crop, random flip, normalise. Reproducible per (seed, epoch, index)."""

    def __init__(self, samples: list[Sample], mask_paths: list[Path], config: Config, seed: int = 0) -> None:
        self.samples, self.mask_paths = samples, mask_paths
        self.config, self.seed, self.epoch = config, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        seg, data = self.config.seg, self.config.data
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image = read_image(self.samples[index].image_path, self.samples[index].view)
        mask = read_mask(self.mask_paths[index], data.num_classes)
        scale = rng.uniform(*seg.scale_range)
        image, mask = _resize(image, scale, Image.BILINEAR), _resize(mask, scale, Image.NEAREST)
        tensor = normalize(image, data.mean, data.std).permute(1, 2, 0).numpy()  # pad with 0 = the mean colour
        tensor, mask = _pad_to(tensor, seg.crop_size, 0.0), _pad_to(mask, seg.crop_size, IGNORE_INDEX)
        top = int(rng.integers(0, tensor.shape[0] - seg.crop_size + 1))
        left = int(rng.integers(0, tensor.shape[1] - seg.crop_size + 1))
        tensor = tensor[top : top + seg.crop_size, left : left + seg.crop_size]
        mask = mask[top : top + seg.crop_size, left : left + seg.crop_size]
        if seg.flip and rng.random() < 0.5:
            tensor, mask = tensor[:, ::-1], mask[:, ::-1]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(tensor.transpose(2, 0, 1))),
            "mask": torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64)),
            "index": index,
        }
