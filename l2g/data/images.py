"""Reading the files of one sample: the RGB image, its saliency map and its label mask.

Every failure (missing, unreadable or truncated file, out-of-range mask values) is a ``DatasetError``
whose message starts with the file path, so a broken file is found by name rather than by a stack trace
from inside PIL.

Images: one reader, :func:`read_image`, and one conversion of every PIL mode to RGB (:func:`to_rgb`),
for two views of a file:

``stored`` (dataset images: every training and evaluation stage)
    the pixels as stored, which is what masks, saliency maps and pseudo masks are aligned with: EXIF
    orientation is not applied, an alpha channel is dropped (the colour under it, which the masks
    label, is kept), 16-bit images are scaled to 8 bits, 32-bit integer and float images are refused
    (a value range that cannot be known must not be guessed per image of a training set).
``displayed`` (a user's photos: ``l2g predict``, :class:`l2g.api.Segmenter`)
    the picture as a viewer shows it: EXIF orientation applied, transparency composited over white,
    16-bit images scaled to 8 bits like stored ones, 32-bit integer and float images rescaled (0..65535
    as 16-bit, anything else min-max), the first frame of a multi-frame file.

8-bit RGB, grey, palette and CMYK files without EXIF orientation or alpha (every VOC and COCO JPEG)
read the same in both views.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from l2g.data.errors import DatasetError
from l2g.data.palette import bad_mask_values, load_mask, mask_value_error
from l2g.data.pil_open import PIL_ERRORS, load_image

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


VIEWS = ("stored", "displayed")
ALPHA_MODES = ("RGBA", "LA", "PA")


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def _sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    """Integer values 0..65535 onto 0..255: round(v / 257), exactly (no v / 257 falls on a .5)."""
    return ((values.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)


def to_rgb(image: Image.Image, view: str = "displayed", path: Path | None = None) -> np.ndarray:
    """A PIL image of any mode as (H, W, 3) uint8 RGB, in ``view`` (see the module docstring). In the
    ``stored`` view a 32-bit integer or float image is a DatasetError naming ``path``."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    mode = image.mode
    if view == "displayed" and (mode in ALPHA_MODES or (mode == "P" and "transparency" in image.info)):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    if mode in SIXTEEN_BIT_MODES:
        return _grey_to_rgb(_sixteen_to_eight(np.asarray(image, dtype=np.uint16)))
    if mode in REFUSED_IMAGE_MODES:
        if view == "stored":
            raise DatasetError(image_mode_problem(path or Path("image"), mode))
        values = np.asarray(image, dtype=np.float64)
        if mode == "I" and values.min() >= 0 and values.max() <= 65535 and values.max() > 255:
            return _grey_to_rgb(_sixteen_to_eight(values))  # a 16-bit image stored as 32-bit
        if values.max() > 255 or values.min() < 0:
            low, high = values.min(), values.max()
            values = (values - low) / max(high - low, 1e-12) * 255.0
        return _grey_to_rgb(np.clip(np.round(values), 0, 255).astype(np.uint8))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_image(path: str | Path, view: str = "stored") -> np.ndarray:
    """The image at ``path`` as (H, W, 3) uint8 RGB, in ``view`` (see the module docstring).

    ``stored`` (default, dataset images): any file that cannot be decoded is a DatasetError naming it.
    ``displayed`` (a user's photo): a missing file is a FileNotFoundError, anything else that cannot be
    used a ValueError naming the file and what is wrong (not an image, truncated, too large).
    """
    path = Path(path)
    if view == "displayed":
        return to_rgb(_open_displayed(path), "displayed")
    return to_rgb(load_image(path, "image"), "stored", path)


def read_user_image(path: str | Path) -> np.ndarray:
    """A user's photo as displayed: :func:`read_image` with ``view="displayed"``."""
    return read_image(path, "displayed")


def _open_displayed(path: Path) -> Image.Image:
    """The decoded picture of ``path`` as a viewer shows it (EXIF orientation applied, first frame)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened) or opened.copy()
    except Image.DecompressionBombError as error:
        raise ValueError(f"{path}: image too large to decode safely ({error})") from error
    except PIL_ERRORS as error:
        text = str(error).lower()
        truncated = "truncated" in text or "broken" in text
        reason = "truncated or corrupt image" if truncated else "not an image PIL can read"
        raise ValueError(f"{path}: {reason} ({error})") from error


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
