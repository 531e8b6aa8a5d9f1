"""Opening image files with PIL so that every failure is a ``DatasetError`` naming the file.

PIL signals a broken file with several exception types depending on the format plugin (OSError,
SyntaxError, EOFError, ValueError), and a header that claims an enormous size with
``DecompressionBombError``, which is none of these. A file whose header claims more than
``MAX_PIXELS`` pixels is refused before any pixel is decoded: a 40-byte PNG can claim 100000 x 100000
pixels and would otherwise make the reader allocate 30 GB. Genuine images that large are not what this
toolkit is for; raise ``l2g.data.pil_open.MAX_PIXELS`` if you really have them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

from l2g.data.errors import DatasetError

# What PIL raises on missing, unidentified, truncated or corrupt files, depending on the format plugin.
PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
# PIL's own warning threshold (it only refuses at twice this); about 9500 x 9500 pixels.
MAX_PIXELS = 89_478_485


def _open(path: Path, what: str) -> Image.Image:
    """The opened (not yet decoded) image, after the size guard."""
    try:
        with warnings.catch_warnings():
            # Our own guard below replaces PIL's warning, so a too-large file is an error, not a warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: expected a {what} file, found a folder") from None
    except Image.DecompressionBombError as error:
        raise DatasetError(f"{path}: {what} refused, its header claims an enormous size ({error})") from error
    except PIL_ERRORS as error:
        raise DatasetError(f"{path}: unreadable {what} ({error})") from error
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise DatasetError(
            f"{path}: {what} refused, its header claims {width}x{height} pixels, more than the limit of "
            f"{MAX_PIXELS} (decompression-bomb guard: l2g.data.pil_open.MAX_PIXELS)"
        )
    if width < 1 or height < 1:
        image.close()
        raise DatasetError(f"{path}: {what} has no pixels ({width}x{height})")
    return image


def load_image(path: str | Path, what: str = "image") -> Image.Image:
    """The fully decoded PIL image at ``path`` (truncation is caught here, not later)."""
    path = Path(path)
    image = _open(path, what)
    try:
        with image:
            image.load()
            return image.copy()
    except PIL_ERRORS as error:
        raise DatasetError(f"{path}: unreadable or truncated {what} ({error})") from error


def decoded_info(path: str | Path, what: str = "image") -> tuple[int, int, str]:
    """(H, W, PIL mode) of an image after decoding all of it, so truncated files are caught; DatasetError
    if not. JPEGs are decoded at 1/8 scale (``draft``): the whole compressed stream is still read, at a
    fraction of the cost."""
    path = Path(path)
    image = _open(path, what)
    try:
        with image:
            width, height = image.size
            mode = image.mode
            image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
    except PIL_ERRORS as error:
        raise DatasetError(f"{path}: unreadable or truncated {what} ({error})") from error
    return height, width, mode


EXIF_ORIENTATION = 0x0112
TURNED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the picture by 90 degrees for display


def displayed_turned(path: str | Path) -> bool:
    """Whether the image's EXIF orientation turns it by 90 degrees for display (its displayed height is
    its stored width); read from the header only, False when it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.getexif().get(EXIF_ORIENTATION, 1) in TURNED_ORIENTATIONS
    except (*PIL_ERRORS, OSError):
        return False


def decoded_size(path: str | Path, what: str = "image") -> tuple[int, int]:
    """(H, W) of an image after decoding all of it (see ``decoded_info``); DatasetError if unreadable."""
    height, width, _ = decoded_info(path, what)
    return height, width
