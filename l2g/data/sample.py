"""One image of a split, as every stage sees it: its id, its files and its image-level labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    """One image of a split: where its files are and its image-level labels.

    ``labels`` are 0-based foreground class indices (mask value minus 1), sorted and unique.
    ``mask_path`` / ``saliency_path`` are None when the file does not exist (and was not required).
    ``view`` is how every stage reads the image (:func:`l2g.data.images.read_image`): "stored" (the pixels as
    stored: VOC, COCO, whose masks match them) or "displayed" (EXIF orientation applied: own photos).
    """

    image_id: str
    image_path: Path
    labels: tuple[int, ...]
    mask_path: Path | None
    saliency_path: Path | None
    view: str = "stored"
