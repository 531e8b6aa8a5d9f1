"""Numbers and names as a report prints them; anything undefined (None, NaN, missing) becomes a dash."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from l2g.data.palette import voc_palette

DASH = "–"


def number(value: object) -> float | None:
    """``value`` as a finite float, or None for None, NaN, infinities and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def format_percent(value: object) -> str:
    """A fraction in [0, 1] as a percentage with one decimal ("52.3"); "–" when undefined."""
    value = number(value)
    return DASH if value is None else f"{100.0 * value:.1f}"


def format_threshold(value: object) -> str:
    """A background threshold with two decimals; "–" when undefined."""
    value = number(value)
    return DASH if value is None else f"{value:.2f}"


def format_minutes(value: object) -> str:
    """Minutes with one decimal; "–" when unknown."""
    value = number(value)
    return DASH if value is None else f"{value:.1f}"


def pick(values: object, index: int) -> object:
    """``values[index]`` for a list-like ``values``, None when absent."""
    if isinstance(values, Sequence | np.ndarray) and not isinstance(values, str) and 0 <= index < len(values):
        return values[index]
    return None


def best_entry(sweep: dict) -> dict | None:
    """The sweep's ``best`` entry, or else the per-threshold entry with the highest defined mIoU."""
    best = sweep.get("best")
    if isinstance(best, dict):
        return best
    entries = [e for e in sweep.get("per_threshold") or [] if number(e.get("miou")) is not None]
    return max(entries, key=lambda e: number(e["miou"])) if entries else None


def hex_colour(mask_value: int) -> str:
    """The VOC palette colour of a mask value as ``#rrggbb``."""
    r, g, b = (int(c) for c in voc_palette()[mask_value % 256])
    return f"#{r:02x}{g:02x}{b:02x}"


def describe_threshold(record: dict) -> str:
    """One line saying which background threshold was chosen (``cls/threshold.json``'s record), how, and on
    what evidence."""
    threshold = f"background threshold {record['threshold']:.2f}"
    share = f"{100 * record['foreground_fraction']:.0f}% of pixels foreground"
    if record["rule"] == "masks":
        masked, images = record["images_with_masks"], record["images"]
        where = f"the {masked} of {images} images with masks" if masked < images else f"split {record['split']!r}"
        return (f"best {threshold} on {where}: pseudo-label mIoU {100 * record['miou_on_masked_images']:.1f}; "
                f"{share}")
    if record["rule"] == "otsu":
        return (f"{threshold} from the maps (Otsu's rule: no image of split {record['split']!r} has a mask; "
                f"masks for a few images make the choice better); {share}")
    return f"{threshold} (eval.threshold); {share}"
