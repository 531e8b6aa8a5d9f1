"""Reading a dataset laid out like PASCAL VOC, with every problem found before training starts.

The layout (paths relative to ``<root>``)::

    JPEGImages/<id>.jpg                      RGB images (.jpg; .png or .jpeg are accepted when the .jpg
                                             is absent)
    SegmentationClassAug/<id>.png            label masks: 0 = background, 1..C = classes, 255 = ignore
                                             (palette or 8-bit grey PNG); folder name configurable
    saliency/<id>.png                        8-bit grey saliency maps (class-agnostic), same name as the
                                             image; folder name configurable
    ImageSets/Segmentation/<split>.txt       one image id per line (blank lines and lines starting
                                             with ``#`` are skipped)
    ImageSets/Segmentation/<split>_cls.txt   the authors' ``train_cls.txt`` format: ``<id> <c> <c> ...``
                                             where each ``c`` is a 0-based FOREGROUND class index
                                             (0..C-1), i.e. the mask value minus 1; path configurable
    classes.txt                              optional: the C foreground class names, one per line

Every configurable path may be given relative to ``<root>`` or absolute. When ``<split>.txt`` is absent
but the class list exists, the class list's ids (in file order) are the split.

Why validate up front: a missing or broken file otherwise surfaces as a crash in a data-loader worker
hours into training. ``load_split`` checks the whole split and raises a single ``DatasetError`` that
lists the problems, each starting with the path of the offending file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from l2g.data.palette import IGNORE_INDEX, load_mask

IMAGE_DIR = "JPEGImages"
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")
SPLIT_DIR = Path("ImageSets") / "Segmentation"
CLASS_NAMES_FILE = "classes.txt"
MAX_LISTED_PROBLEMS = 20
MAX_LISTED_WARNINGS = 5
CHECK_MODES = ("exists", "decode")
# What PIL raises on missing, unidentified, truncated or corrupt files, depending on the format plugin.
PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError)


class DatasetError(ValueError):
    """A dataset on disk does not match the expected layout; the message names the file(s) at fault."""


class DatasetWarning(UserWarning):
    """Something in the dataset is tolerated but worth knowing (e.g. a saliency map that gets resized)."""


@dataclass(frozen=True)
class Sample:
    """One image of a split: where its files are and its image-level labels.

    ``labels`` are 0-based foreground class indices (mask value minus 1), sorted and unique.
    ``mask_path`` / ``saliency_path`` are None when the file does not exist (and was not required).
    """

    image_id: str
    image_path: Path
    labels: tuple[int, ...]
    mask_path: Path | None
    saliency_path: Path | None


def _content_lines(path: Path) -> Iterable[tuple[int, str]]:
    """(1-based line number, stripped text) of the lines that are neither blank nor ``#`` comments."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: unreadable ({error})") from error
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def _check_num_classes(num_classes: int) -> None:
    """C must leave room for background (0) and the ignore index (255) in a uint8 mask."""
    if not 1 <= num_classes < IGNORE_INDEX:
        raise ValueError(f"num_classes must be in 1..{IGNORE_INDEX - 1}, got {num_classes}")


def read_id_list(path: str | Path) -> list[str]:
    """The image ids of a split file, one per line, in file order.

    Raises DatasetError for a missing file, a file without ids, a line with more than one word and an
    id listed twice (a duplicate would silently weight that image twice).
    """
    path = Path(path)
    first_seen: dict[str, int] = {}
    for number, text in _content_lines(path):
        if len(text.split()) != 1:
            raise DatasetError(f"{path}:{number}: expected one image id per line, got {text!r}")
        if text in first_seen:
            raise DatasetError(
                f"{path}:{number}: image id {text!r} listed twice (first on line {first_seen[text]})"
            )
        first_seen[text] = number
    if not first_seen:
        raise DatasetError(f"{path}: no image ids (the file is empty)")
    return list(first_seen)


def _parse_classes(path: Path, number: int, words: list[str], num_classes: int) -> tuple[int, ...]:
    """The sorted unique class indices of one class-list line, checked against ``num_classes``."""
    classes = set()
    for word in words:
        try:
            value = int(word)
        except ValueError:
            raise DatasetError(f"{path}:{number}: class {word!r} is not an integer") from None
        if not 0 <= value < num_classes:
            raise DatasetError(
                f"{path}:{number}: class id {value} outside the {num_classes} configured classes "
                f"(expected 0-based foreground indices 0..{num_classes - 1})"
            )
        classes.add(value)
    return tuple(sorted(classes))


def read_class_list(path: str | Path, num_classes: int) -> dict[str, tuple[int, ...]]:
    """Image-level labels from a ``<id> <c> <c> ...`` file, as {image id: sorted unique class indices}.

    Each ``c`` is a 0-based foreground index (mask value minus 1). The dict keeps file order. A line with
    an id and no classes is allowed and gives ``()``: such an image contributes only negatives to the
    classification loss, which is legitimate but usually means a labelling gap, so check such ids.
    Raises DatasetError (message: ``<path>:<line>: what is wrong``) for a non-integer class, a class
    outside 0..num_classes-1, an id listed twice, and a file without any ids.
    """
    _check_num_classes(num_classes)
    path = Path(path)
    labels: dict[str, tuple[int, ...]] = {}
    first_seen: dict[str, int] = {}
    for number, text in _content_lines(path):
        image_id, *words = text.split()
        if image_id in first_seen:
            raise DatasetError(
                f"{path}:{number}: image id {image_id!r} listed twice (first on line {first_seen[image_id]})"
            )
        first_seen[image_id] = number
        labels[image_id] = _parse_classes(path, number, words, num_classes)
    if not labels:
        raise DatasetError(f"{path}: no image ids (the file is empty)")
    return labels


def class_names(root: str | Path, num_classes: int) -> list[str]:
    """The C foreground class names from ``<root>/classes.txt``, else ``["class0", "class1", ...]``."""
    _check_num_classes(num_classes)
    path = Path(root) / CLASS_NAMES_FILE
    if not path.exists():
        return [f"class{index}" for index in range(num_classes)]
    names = [text for _, text in _content_lines(path)]
    if len(names) != num_classes:
        raise DatasetError(f"{path}: {len(names)} class names for {num_classes} configured classes")
    return names


def _resolve(root: Path, path: str | Path) -> Path:
    """``path`` as given when absolute, else relative to the dataset root."""
    path = Path(path)
    return path if path.is_absolute() else root / path


def find_image(image_dir: Path, image_id: str) -> Path | None:
    """The image file of ``image_id``: ``<id>.jpg``, else ``<id>.png``, else ``<id>.jpeg``; None if none."""
    for suffix in IMAGE_SUFFIXES:
        candidate = image_dir / f"{image_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _split_ids(split_path: Path, cls_path: Path) -> list[str]:
    """The ids of the split: its id list, or the class list's ids when there is no id list."""
    if split_path.exists():
        return read_id_list(split_path)
    if cls_path.exists():
        return _class_list_ids(cls_path)
    raise DatasetError(f"{split_path}: split list not found, and no class list at {cls_path} to fall back on")


def _class_list_ids(path: Path) -> list[str]:
    """The image ids of a class-list file, in file order (no class parsing)."""
    return [text.split()[0] for _, text in _content_lines(path)]


def _optional_dir(root: Path, name: str | Path, what: str, needed: bool, problems: list[str]) -> Path | None:
    """The resolved folder, or None when it is missing (a problem only when its files are needed)."""
    folder = _resolve(root, name)
    if folder.is_dir():
        return folder
    if needed:
        problems.append(f"{folder}: {what} folder not found")
    return None


def _optional_file(
    folder: Path | None, image_id: str, what: str, needed: bool, problems: list[str]
) -> Path | None:
    """``<folder>/<id>.png`` when it exists; a missing one is a problem only when needed."""
    if folder is None:
        return None
    path = folder / f"{image_id}.png"
    if path.is_file():
        return path
    if needed:
        problems.append(f"{path}: {what} for image id {image_id!r} not found")
    return None


def load_split(
    root: str | Path,
    split: str,
    num_classes: int,
    *,
    cls_list: str | Path | None = None,
    mask_dir: str | Path = "SegmentationClassAug",
    saliency_dir: str | Path = "saliency",
    need_masks: bool = False,
    need_saliency: bool = False,
    check_images: str = "exists",
) -> list[Sample]:
    """The samples of ``split``, after checking the whole split on disk.

    Reads the id list (or falls back to the class list's ids), the labels and resolves every path. All
    problems are collected and raised as one DatasetError (the first 20 listed, plus the total): an id
    without an image, an id missing from the class list, a needed mask or saliency map that is missing.
    ``check_images="decode"`` also decodes every image, mask and saliency map, and reports unreadable
    files, masks whose size differs from their image (when masks are needed) and mask values outside
    0..C and 255. A saliency map whose size differs from its image is only warned about (one
    DatasetWarning for the whole split): it is resized at load time by ``read_saliency``.
    """
    _check_num_classes(num_classes)
    if check_images not in CHECK_MODES:
        raise ValueError(f"check_images must be one of {CHECK_MODES}, got {check_images!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found")
    cls_path = _resolve(root, cls_list if cls_list is not None else SPLIT_DIR / f"{split}_cls.txt")
    ids = _split_ids(root / SPLIT_DIR / f"{split}.txt", cls_path)
    labels = read_class_list(cls_path, num_classes)

    problems: list[str] = []
    image_dir = root / IMAGE_DIR
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: image folder not found")
    masks = _optional_dir(root, mask_dir, "mask", need_masks, problems)
    saliency = _optional_dir(root, saliency_dir, "saliency", need_saliency, problems)

    samples = []
    for image_id in ids:
        image_path = find_image(image_dir, image_id)
        if image_path is None:
            tried = ", ".join(IMAGE_SUFFIXES[1:])
            problems.append(
                f"{image_dir / image_id}.jpg: image for id {image_id!r} not found (also tried {tried})"
            )
        if image_id not in labels:
            problems.append(f"{cls_path}: no labels for image id {image_id!r}")
        mask_path = _optional_file(masks, image_id, "mask", need_masks, problems)
        saliency_path = _optional_file(saliency, image_id, "saliency map", need_saliency, problems)
        if image_path is not None:
            samples.append(Sample(image_id, image_path, labels.get(image_id, ()), mask_path, saliency_path))

    resized = _decode_check(samples, num_classes, need_masks, problems) if check_images == "decode" else []
    _raise_problems(root, split, problems)
    _warn_resized(resized)  # only for a split that loads: the error would list what matters first
    return samples


def _raise_problems(root: Path, split: str, problems: list[str]) -> None:
    """One DatasetError listing the first problems and the total count, if there are any."""
    if not problems:
        return
    listed = "\n".join(f"  - {problem}" for problem in problems[:MAX_LISTED_PROBLEMS])
    more = len(problems) - MAX_LISTED_PROBLEMS
    tail = f"\n  ... and {more} more" if more > 0 else ""
    raise DatasetError(f"{root}: {len(problems)} problem(s) in split {split!r}:\n{listed}{tail}")


def _warn_resized(paths: list[Path]) -> None:
    """One warning for all saliency maps whose size differs from their image."""
    if not paths:
        return
    shown = ", ".join(str(path) for path in paths[:MAX_LISTED_WARNINGS])
    more = f" (and {len(paths) - MAX_LISTED_WARNINGS} more)" if len(paths) > MAX_LISTED_WARNINGS else ""
    warnings.warn(
        f"{len(paths)} saliency map(s) differ in size from their image and will be resized bilinearly at "
        f"load time: {shown}{more}",
        DatasetWarning,
        stacklevel=3,
    )


def decoded_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image after decoding all of it, so truncated files are caught; DatasetError if not.

    JPEGs are decoded at 1/8 scale (``draft``): the whole compressed stream is still read, at a fraction
    of the cost.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
    except PIL_ERRORS as error:
        raise DatasetError(f"{path}: unreadable or truncated image ({error})") from error
    return height, width


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


def _check_mask(path: Path, size: tuple[int, int], num_classes: int) -> str | None:
    """What is wrong with one mask (unreadable, wrong size, bad values), or None."""
    try:
        mask = load_mask(path)
    except (FileNotFoundError, ValueError) as error:
        return str(error)
    if mask.shape != size:
        return f"{path}: mask is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image is {size[0]}x{size[1]}"
    bad = bad_mask_values(mask, num_classes)
    return str(mask_value_error(path, bad, num_classes)) if bad else None


def _decode_check(
    samples: list[Sample], num_classes: int, need_masks: bool, problems: list[str]
) -> list[Path]:
    """Decode every file of every sample, appending problems; returns saliency maps of another size."""
    resized = []
    for sample in samples:
        try:
            size = decoded_size(sample.image_path)
        except DatasetError as error:
            problems.append(str(error))
            size = None
        if need_masks and sample.mask_path is not None and size is not None:
            problem = _check_mask(sample.mask_path, size, num_classes)
            if problem:
                problems.append(problem)
        if sample.saliency_path is not None:
            try:
                saliency_size = decoded_size(sample.saliency_path)
            except DatasetError as error:
                problems.append(str(error))
                continue
            if size is not None and saliency_size != size:
                resized.append(sample.saliency_path)
    return resized
