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

from l2g.data.palette import load_mask
from l2g.data.voc_layout import PIL_ERRORS, DatasetError, bad_mask_values, mask_value_error

# Saliency modes that convert to 8-bit grey without guessing; 16-bit or float maps would not be /255.
SALIENCY_MODES = ("L", "LA", "P", "RGB", "RGBA", "1")


def _open_loaded(path: Path, what: str) -> Image.Image:
    """The fully decoded PIL image at ``path``; DatasetError naming the file when it cannot be read."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} not found") from None
    except PIL_ERRORS as error:
        raise DatasetError(f"{path}: unreadable or truncated {what} ({error})") from error


def read_image(path: str | Path) -> np.ndarray:
    """The image at ``path`` as (H, W, 3) uint8 RGB; grey, RGBA (alpha dropped) and palette are converted."""
    image = _open_loaded(Path(path), "image")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_saliency(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """The saliency map at ``path`` as (H, W) float32 in [0, 1] (value / 255).

    With ``size=(H, W)`` and a map of another size, the map is resized bilinearly to ``size``: the
    documented fallback for saliency maps computed at another resolution than their image.
    """
    path = Path(path)
    image = _open_loaded(path, "saliency map")
    if image.mode not in SALIENCY_MODES:
        raise DatasetError(f"{path}: a saliency map must be an 8-bit image, got mode {image.mode}")
    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if size is None or grey.shape == tuple(size):
        return grey
    height, width = size
    resized = Image.fromarray(grey).resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def read_mask(path: str | Path, num_classes: int) -> np.ndarray:
    """The label mask at ``path`` as (H, W) uint8, checked to hold only 0..num_classes and 255 (ignore)."""
    path = Path(path)
    try:
        mask = load_mask(path)
    except (FileNotFoundError, ValueError) as error:
        raise DatasetError(str(error)) from error
    bad = bad_mask_values(mask, num_classes)
    if bad:
        raise mask_value_error(path, bad, num_classes)
    return mask
