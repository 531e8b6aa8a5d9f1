"""Which files are images: the one list of suffixes every stage accepts, and finding them.

``IMAGE_SUFFIXES`` are the formats that photos and datasets come in and that PIL reads; an image id's
file is looked for in this order (``.jpg`` first: VOC's and COCO's format). The dataset reader
(:mod:`l2g.data.layout`), ``l2g saliency`` and ``l2g predict`` all use this list. Torch- and
PIL-free, so the command line can name the suffixes in its help.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


def is_image_file(path: Path) -> bool:
    """A file with an image suffix (any case) that is not hidden (``.name``: editor and macOS clutter)."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder`` (not recursive), sorted by name."""
    return sorted(path for path in Path(folder).iterdir() if is_image_file(path))


def find_image(image_dir: Path, image_id: str) -> Path | None:
    """The image file of ``image_id``: ``<id>.jpg``, else ``<id>.png``, ... (IMAGE_SUFFIXES order); None if none."""
    for suffix in IMAGE_SUFFIXES:
        candidate = image_dir / f"{image_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None
