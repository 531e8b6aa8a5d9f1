"""Label masks: palette PNGs in the PASCAL VOC colour map (index 255 = ignore, drawn white), read, written
and checked for values outside the classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from l2g.data.errors import DatasetError
from l2g.data.pil_open import load_image

IGNORE_INDEX = 255


def voc_palette(num_entries: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: a (num_entries, 3) uint8 array built from the bits of each index."""
    palette = np.zeros((num_entries, 3), dtype=np.uint8)
    for index in range(num_entries):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):  # spread the index bits over the high bits of r, g, b
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (r, g, b)
    return palette


def colorize(mask: np.ndarray) -> np.ndarray:
    """An (H, W) label mask as an (H, W, 3) RGB picture in VOC colours."""
    return voc_palette()[mask.astype(np.uint8)]


def save_mask(path: str | Path, mask: np.ndarray, sync_folder: bool = True) -> None:
    """Write an (H, W) uint8 label mask as a palette PNG (what VOC's SegmentationClass uses), atomically
    (``sync_folder``: see :mod:`l2g.atomic`)."""
    if mask.ndim != 2:
        raise ValueError(f"{path}: a label mask must be 2-D, got shape {mask.shape}")
    from l2g.atomic import save_image

    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(voc_palette().reshape(-1).tolist())
    save_image(path, image, "PNG", sync_folder=sync_folder)  # atomic: a crash never leaves half a mask


def load_mask(path: str | Path) -> np.ndarray:
    """Read a label mask PNG as (H, W) uint8 label indices.

    Palette and 8-bit grey PNGs are read as indices; an RGB mask is refused because its colours would
    have to be guessed back into labels, and a 16-bit mask because its values would have to be squeezed
    into 0..255. Every failure is a DatasetError (a ValueError) naming the file.
    """
    image = load_image(path, "label mask")
    if image.mode not in ("P", "L"):
        raise DatasetError(f"{path}: a label mask must be a palette or 8-bit PNG, got mode {image.mode}")
    return np.array(image, dtype=np.uint8)


def bad_mask_values(mask: np.ndarray, num_classes: int) -> list[int]:
    """The values of ``mask`` that are neither 0..num_classes nor the ignore index, sorted."""
    mask = np.asarray(mask)
    # Two byte-wide comparisons over the mask; the values are only gathered when some are bad.
    bad = (mask > num_classes) & (mask != IGNORE_INDEX)
    if mask.dtype.kind == "i":
        bad |= mask < 0
    if not bad.any():
        return []
    return [int(value) for value in np.unique(mask[bad])]


def mask_value_error(path: Path, bad: list[int], num_classes: int) -> DatasetError:
    """The error for a mask with out-of-range values, naming the file and the values."""
    return DatasetError(
        f"{path}: mask values {bad} outside 0..{num_classes} and {IGNORE_INDEX} (ignore) "
        f"for {num_classes} configured classes"
    )
