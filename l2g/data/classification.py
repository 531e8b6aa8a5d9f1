"""Training samples of the classification stage: an augmented global view, its saliency, its labels
and the boxes of its local views (sampled here so they belong to the data's random stream).

How the global view is made (``data.*``):

- ``resize_mode: short_side`` (the release's VOC loaders): the image is resized so that its short side is
  ``resize_short``, then one random ``global_size`` crop is the view. ``resize_short`` is a number, or a
  range ``[low, high]`` from which each sample draws an integer short side uniformly, bounds included
  (the release's no-saliency loader: 448-672), from the sample's own seeded random stream.
- ``resize_mode: square`` (the release's COCO loader): the whole image is resized to
  ``global_size x global_size`` (its aspect ratio is lost) and nothing is cropped.

``resize_interpolation`` / ``saliency_interpolation`` name the resampling filters of the image and the
saliency map (PIL's ``nearest``, ``bilinear``, ``bicubic``): the release's VOC loaders use bicubic and
nearest, its COCO loader bilinear for both; the library default is bilinear for both.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch.utils.data import Dataset

from l2g.config import Config
from l2g.data.images import read_image, read_saliency
from l2g.data.layout import Sample
from l2g.data.registry import INTERPOLATIONS
from l2g.data.view_boxes import sample_view_boxes


def color_jitter(image: Image.Image, jitter: tuple[float, float, float, float], rng) -> Image.Image:
    """Brightness, contrast, saturation factors in [1 - j, 1 + j] and a hue shift in [-h, h], random order."""
    brightness, contrast, saturation, hue = jitter
    steps = [
        (ImageEnhance.Brightness, brightness),
        (ImageEnhance.Contrast, contrast),
        (ImageEnhance.Color, saturation),
    ]
    for index in rng.permutation(len(steps) + 1):
        if index < len(steps):
            enhancer, amount = steps[index]
            if amount > 0:
                image = enhancer(image).enhance(rng.uniform(1 - amount, 1 + amount))
        elif hue > 0:
            h, s, v = image.convert("HSV").split()
            shift = int(round(rng.uniform(-hue, hue) * 255))
            h = h.point(lambda x, shift=shift: (x + shift) % 256)
            image = Image.merge("HSV", (h, s, v)).convert("RGB")
    return image


PIL_FILTERS = {name: Image.Resampling[name.upper()] for name in INTERPOLATIONS}


def _resample(resample: int | str) -> int:
    """A PIL resampling filter from its name (``INTERPOLATIONS``) or PIL's own constant."""
    if isinstance(resample, str):
        if resample not in PIL_FILTERS:
            raise ValueError(f"unknown interpolation {resample!r} (one of {', '.join(INTERPOLATIONS)})")
        return PIL_FILTERS[resample]
    return resample


def resize_short(array: np.ndarray, short: int, resample: int | str) -> np.ndarray:
    """``array`` (H, W[, C]) uint8 resized (PIL) so that its short side is ``short``; the long side is
    ``round(long * short / short_side)``. ``resample``: a name of ``INTERPOLATIONS`` or a PIL filter."""
    h, w = array.shape[:2]
    size = (short, max(1, round(h * short / w))) if w < h else (max(1, round(w * short / h)), short)  # PIL (w, h)
    return np.asarray(Image.fromarray(array).resize(size, _resample(resample)))


def resize_square(array: np.ndarray, size: int, resample: int | str) -> np.ndarray:
    """``array`` (H, W[, C]) uint8 resized (PIL) to ``size x size``, its aspect ratio lost."""
    return np.asarray(Image.fromarray(array).resize((size, size), _resample(resample)))


def draw_short_side(resize_short_cfg: int | tuple[int, int], rng) -> int:
    """The short side of one sample: the configured number, or an integer drawn uniformly from the
    range ``[low, high]``, both bounds included (as Python's ``random.randint`` of the release)."""
    if isinstance(resize_short_cfg, int):
        return resize_short_cfg
    low, high = resize_short_cfg
    return int(rng.integers(low, high + 1))


def random_crop_box(height: int, width: int, size: int, rng) -> tuple[int, int]:
    """Top-left corner of a size x size crop; negative offsets mean the view is padded."""
    top = int(rng.integers(0, height - size + 1)) if height >= size else -int(rng.integers(0, size - height + 1))
    left = int(rng.integers(0, width - size + 1)) if width >= size else -int(rng.integers(0, size - width + 1))
    return top, left


def crop_pad(array: np.ndarray, top: int, left: int, size: int, fill: int = 0) -> np.ndarray:
    """A size x size crop at (top, left), padded with ``fill`` where it leaves the array."""
    out = np.full((size, size, *array.shape[2:]), fill, dtype=array.dtype)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size, array.shape[0]), min(left + size, array.shape[1])
    out[y0 - top : y1 - top, x0 - left : x1 - left] = array[y0:y1, x0:x1]
    return out


def normalize(image: np.ndarray, mean, std) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float tensor normalised with mean/std given in [0, 1] units."""
    tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    return (tensor - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def multi_hot(labels: tuple[int, ...], num_classes: int) -> torch.Tensor:
    vector = torch.zeros(num_classes)
    vector[list(labels)] = 1.0
    return vector


class ClassificationDataset(Dataset):
    """Global views for training: resize short side, random crop, flip, colour jitter, normalise."""

    def __init__(self, samples: list[Sample], config: Config, use_saliency: bool, seed: int = 0,
                 region_maps: Callable[[Sample], np.ndarray] | None = None) -> None:
        self.samples = samples
        self.config = config
        self.use_saliency = use_saliency
        # Diagnostics only: (H, W, K) uint8 label maps of the image (e.g. its mask), cut and flipped with
        # the view (nearest resize) and returned as item["regions"] (K, S, S).
        self.region_maps = region_maps
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        data, views = self.config.data, self.config.views
        rng = np.random.default_rng([self.seed, self.epoch, index])  # reproducible whatever the workers
        sample = self.samples[index]
        image = read_image(sample.image_path, sample.view)
        saliency = None
        if self.use_saliency:
            saliency = (read_saliency(sample.saliency_path, image.shape[:2]) * 255).astype(np.uint8)
        if data.resize_mode == "square":
            short = None
            image = resize_square(image, data.global_size, data.resize_interpolation)
            top = left = 0
        else:
            short = draw_short_side(data.resize_short, rng)
            image = resize_short(image, short, data.resize_interpolation)
            top, left = random_crop_box(image.shape[0], image.shape[1], data.global_size, rng)
        flip = data.flip and rng.random() < 0.5
        view = Image.fromarray(crop_pad(image, top, left, data.global_size))
        if flip:
            view = view.transpose(Image.FLIP_LEFT_RIGHT)
        view = np.asarray(color_jitter(view, data.jitter, rng))
        item = {
            "image": normalize(view, data.mean, data.std),
            "labels": multi_hot(sample.labels, data.num_classes),
            "boxes": torch.from_numpy(
                sample_view_boxes((data.global_size,) * 2, views.patch_size, views.n, views.strategy, rng,
                                  views.grid_stride)
            ),
            "index": index,
        }
        if saliency is not None:
            saliency = (resize_square(saliency, data.global_size, data.saliency_interpolation) if short is None
                        else resize_short(saliency, short, data.saliency_interpolation))
            saliency = crop_pad(saliency, top, left, data.global_size).astype(np.float32)
            if flip:
                saliency = saliency[:, ::-1]
            saliency = saliency / (saliency.max() + 1e-10)  # the release's per-view max normalisation
            item["saliency"] = torch.from_numpy(np.ascontiguousarray(saliency))[None]
        if self.region_maps is not None:
            regions = self.region_maps(sample)
            regions = np.stack([resize_square(regions[..., k], data.global_size, "nearest") if short is None
                                else resize_short(regions[..., k], short, "nearest")
                                for k in range(regions.shape[-1])], axis=-1)
            regions = crop_pad(regions, top, left, data.global_size, fill=255)
            if flip:
                regions = regions[:, ::-1]
            item["regions"] = torch.from_numpy(np.ascontiguousarray(regions.transpose(2, 0, 1)))
        return item
