"""Reading the files of one sample: the RGB image, its saliency map and its label mask.

Every failure (missing, unreadable or truncated file, out-of-range mask values) is a ``DatasetError``
whose message starts with the file path, so a broken file is found by name rather than by a stack trace
from inside PIL. Images are read in their stored pixel orientation (EXIF rotation is not applied) so that
they stay aligned with their masks and saliency maps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from l2g.data.errors import DatasetError
from l2g.data.palette import bad_mask_values, load_mask, mask_value_error
from l2g.data.pil_open import load_image

# Saliency modes that convert to 8-bit grey without guessing; 16-bit or float maps would not be /255.
SALIENCY_MODES = ("L", "LA", "P", "PA", "RGB", "RGBA", "1")
# 16-bit images are scaled to 8 bits (value / 257); 32-bit integer and float images are refused because
# their value range cannot be known.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
REFUSED_IMAGE_MODES = ("I", "F")


def image_mode_problem(path: Path, mode: str) -> str | None:
    """Why an image of PIL ``mode`` cannot be read as RGB, or None when it can."""
    if mode in REFUSED_IMAGE_MODES:
        return (f"{path}: image mode {mode} (32-bit integer or float) has no known value range; "
                "convert it to an 8-bit RGB image")
    return None


def saliency_mode_problem(path: Path, mode: str) -> str | None:
    """Why a saliency map of PIL ``mode`` cannot be read as 8-bit grey, or None when it can."""
    if mode not in SALIENCY_MODES:
        return f"{path}: a saliency map must be an 8-bit image, got mode {mode}"
    return None


def _to_rgb(path: Path, image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any 8- or 16-bit PIL mode; DatasetError for modes without a known range."""
    problem = image_mode_problem(path, image.mode)
    if problem:
        raise DatasetError(problem)
    if image.mode in SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.uint16)
        grey = ((wide.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """The image at ``path`` as (H, W, 3) uint8 RGB.

    Grey, palette and CMYK images are converted; an alpha channel is dropped (the colour under it is
    kept, not blended with a background); 16-bit grey images are scaled to 8 bits. 32-bit integer and
    float images are refused with a DatasetError, as is any file that cannot be decoded.
    """
    path = Path(path)
    return _to_rgb(path, load_image(path, "image"))


def read_saliency(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """The saliency map at ``path`` as (H, W) float32 in [0, 1] (value / 255).

    With ``size=(H, W)`` and a map of another size, the map is resized bilinearly to ``size``: the
    documented fallback for saliency maps computed at another resolution than their image.
    """
    path = Path(path)
    image = load_image(path, "saliency map")
    problem = saliency_mode_problem(path, image.mode)
    if problem:
        raise DatasetError(problem)
    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if size is None or grey.shape == tuple(size):
        return grey
    height, width = size
    resized = Image.fromarray(grey).resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def read_mask(path: str | Path, num_classes: int) -> np.ndarray:
    """The label mask at ``path`` as (H, W) uint8, checked to hold only 0..num_classes and 255 (ignore)."""
    path = Path(path)
    mask = load_mask(path)
    bad = bad_mask_values(mask, num_classes)
    if bad:
        raise mask_value_error(path, bad, num_classes)
    return mask
