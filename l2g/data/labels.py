"""Image-level labels in every form users already have, read into one shape: {image id: class indices}.

Class indices are 0-based FOREGROUND indices (mask value minus 1), sorted and unique. The sources:

``cls_txt``  the authors' ``train_cls.txt`` form: ``<id> <c> <c> ...`` with 0-based indices.
``csv``      ``image,label1;label2`` with class NAMES from the classes file (or 0-based indices when
             there is no classes file); the image column is a file name in the image folder (``cat.jpg``)
             or an id; an optional header row starting with ``image`` is skipped.
``npy``      ``cls_labels.npy`` as IRN writes it (int keys: ``2007000032`` for ``2007_000032``) or as SEAM
             writes it (string keys ``'2007_000032'``): a pickled dict {id: C-vector of 0/1}. It is read
             with an unpickler that only builds numpy arrays and scalars, so a hostile file cannot run code.
``xml``      ``Annotations/<id>.xml`` (PASCAL VOC): the classes of all ``<object><name>`` entries,
             difficult and truncated objects included (as IRN derives its ``cls_labels.npy``).
``masks``    the classes present in the label mask (values 1..C; 0 and 255 are not classes).

Every problem is a ``DatasetError`` naming the file (and line or key) at fault. The CSV reader is
:mod:`l2g.data.csv_labels`; the readers by source name are :mod:`l2g.data.label_sources`.
"""

from __future__ import annotations

import difflib
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from l2g.atomic import write_text
from l2g.config.text_files import content_lines
from l2g.data.errors import DatasetError
from l2g.data.image_files import IMAGE_SUFFIXES
from l2g.data.palette import IGNORE_INDEX, bad_mask_values, load_mask, mask_value_error
from l2g.data.registry import BACKGROUND_NAMES
from l2g.data.safe_npy import READ_ERRORS, load_npy_object

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
INTEGER = re.compile(r"-?[0-9]+")


@dataclass
class LabelTable:
    """Labels read from one source: {id: classes} in file order, the file or folder they came from and
    its kind (one of LABEL_SOURCES), and for CSV lists the image file name each row gives (so ``cat.png``
    is used even when a ``cat.jpg`` also exists)."""

    labels: dict[str, tuple[int, ...]]
    path: Path
    kind: str
    files: dict[str, str] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return f"{self.path} ({self.kind})"


def check_num_classes(num_classes: int) -> None:
    """C must leave room for background (0) and the ignore index (255) in a uint8 mask."""
    if not 1 <= num_classes < IGNORE_INDEX:
        raise ValueError(f"num_classes must be in 1..{IGNORE_INDEX - 1}, got {num_classes}")


def _parse_classes(path: Path, number: int, words: list[str], num_classes: int) -> tuple[int, ...]:
    """The sorted unique class indices of one class-list line, checked against ``num_classes``."""
    classes = set()
    for word in words:
        if not INTEGER.fullmatch(word):  # int() would also take "1_0", "+3" and non-ASCII digits
            raise DatasetError(f"{path}:{number}: class {word!r} is not an integer")
        value = int(word)
        if not 0 <= value < num_classes:
            raise DatasetError(
                f"{path}:{number}: class id {value} outside the {num_classes} configured classes "
                f"(expected 0-based foreground indices 0..{num_classes - 1})"
            )
        classes.add(value)
    return tuple(sorted(classes))


def _first_seen_check(path: Path, number: int, image_id: str, first_seen: dict[str, int]) -> None:
    if image_id in first_seen:
        raise DatasetError(
            f"{path}:{number}: image id {image_id!r} listed twice (first on line {first_seen[image_id]})"
        )
    first_seen[image_id] = number


def read_class_list(path: str | Path, num_classes: int,
                    problems: list[str] | None = None) -> dict[str, tuple[int, ...]]:
    """Image-level labels from a ``<id> <c> <c> ...`` file, as {image id: sorted unique class indices}.

    Each ``c`` is a 0-based foreground index (mask value minus 1). The dict keeps file order. A line with
    an id and no classes is allowed and gives ``()``: such an image contributes only negatives to the
    classification loss, which is legitimate but usually means a labelling gap, so check such ids.
    Raises DatasetError (message: ``<path>:<line>: what is wrong``) for a non-integer class, a class
    outside 0..num_classes-1, an id listed twice, and a file without any ids. With ``problems`` every bad line
    is added to it instead (the first one of an id listed twice is kept) and the other lines are returned.
    """
    check_num_classes(num_classes)
    path = Path(path)
    labels: dict[str, tuple[int, ...]] = {}
    first_seen: dict[str, int] = {}
    bad = 0
    for number, text in content_lines(path):
        image_id, *words = text.split()
        try:
            _first_seen_check(path, number, image_id, first_seen)
            labels[image_id] = ()  # collected: the line's image is still checked (a bad class is reported)
            labels[image_id] = _parse_classes(path, number, words, num_classes)
        except DatasetError as error:
            if problems is None:
                raise
            problems.append(str(error))
            bad += 1
    if not labels and not bad:
        raise DatasetError(f"{path}: no image ids (the file is empty)")
    return labels




def read_class_names(path: str | Path, num_classes: int) -> list[str]:
    """The C foreground class names of a classes file (one per line), checked for count and duplicates.

    A first line naming the background (``background`` or ``_background_``, any case: the VOC convention,
    and what labelme writes) is accepted and dropped; the file then holds C + 1 lines.
    """
    path = Path(path)
    names: list[str] = []
    for number, text in content_lines(path):
        if text in names:
            raise DatasetError(f"{path}:{number}: class name {text!r} listed twice")
        names.append(text)
    leading_background = bool(names) and names[0].lower() in BACKGROUND_NAMES
    if leading_background and len(names) == num_classes + 1:
        return names[1:]
    if len(names) != num_classes:
        counted = (f"{len(names)} lines, the first naming the background, so {len(names) - 1} class names"
                   if leading_background else f"{len(names)} class names")
        raise DatasetError(f"{path}: {counted} for {num_classes} configured classes (data.num_classes counts the "
                           "foreground classes; a first line 'background' or '_background_' is optional; leave "
                           "data.num_classes unset (null) to take the count from this file)")
    if leading_background:
        raise DatasetError(f"{path}: the first of its {len(names)} lines names the background ({names[0]!r}), "
                           f"leaving {len(names) - 1} class names for {num_classes} configured classes: "
                           "data.num_classes counts the foreground classes only")
    return names


def _class_index(names: dict[str, int], name: str, where: str, names_file: str) -> int:
    """The index of class ``name``; DatasetError with a "did you mean" hint for an unknown name."""
    if name in names:
        return names[name]
    close = difflib.get_close_matches(name, list(names), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DatasetError(f"{where}: unknown class name {name!r}{hint}; the classes are listed in {names_file}")


def image_id_of(name: str) -> str:
    """The image id of a file name: the name without a known image suffix."""
    path = Path(name)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else name


# --- cls_labels.npy (IRN / SEAM) --------------------------------------------------------------------------

def _load_npy_object(path: Path) -> object:
    """The object stored in an ``.npy`` file, unpickled without running arbitrary code."""
    try:
        return load_npy_object(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except READ_ERRORS as error:
        raise DatasetError(f"{path}: not a readable cls_labels.npy ({error})") from error


def npy_key_to_id(key: object) -> str:
    """The image id of a ``cls_labels.npy`` key: IRN's int 2007000032 -> '2007_000032'; strings as they are.

    IRN turns ``2007_000032`` into an int by dropping the underscore, so any 10-digit int key is read
    back as ``YYYY_NNNNNN``; other ints (e.g. COCO image numbers) become their decimal text.
    """
    if isinstance(key, (bytes, np.bytes_)):
        return bytes(key).decode("utf-8")
    if isinstance(key, (str, np.str_)):
        return str(key)
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        text = str(int(key))
        return f"{text[:4]}_{text[4:]}" if len(text) == 10 else text
    raise TypeError(f"key {key!r} of type {type(key).__name__} is neither an int nor a string")


def read_npy_labels(path: str | Path, num_classes: int) -> LabelTable:
    """Labels from an IRN or SEAM ``cls_labels.npy``: a dict {id: C-vector of 0/1}.

    Raises DatasetError for a file that is not such a dict, a vector of the wrong length, a value other
    than 0 or 1 (NaN included), a key that is neither int nor string, and an id present twice (an int
    and a string key for the same image).
    """
    check_num_classes(num_classes)
    path = Path(path)
    table = _load_npy_object(path)
    if not isinstance(table, dict):
        kind = f"array of shape {table.shape}" if isinstance(table, np.ndarray) else type(table).__name__
        raise DatasetError(
            f"{path}: expected a dict {{image id: {num_classes}-vector}} saved with np.save "
            f"(IRN/SEAM cls_labels.npy), got {kind}"
        )
    if not table:
        raise DatasetError(f"{path}: no image ids (the dict is empty)")
    labels: dict[str, tuple[int, ...]] = {}
    for key, value in table.items():
        try:
            image_id = npy_key_to_id(key)
        except (TypeError, UnicodeDecodeError) as error:
            raise DatasetError(f"{path}: {error}") from None
        if image_id in labels:
            raise DatasetError(f"{path}: image id {image_id!r} present twice (as key {key!r} and another key)")
        labels[image_id] = _npy_vector(path, key, value, num_classes)
    return LabelTable(labels, path, "npy")


def _npy_vector(path: Path, key: object, value: object, num_classes: int) -> tuple[int, ...]:
    """The class indices of one multi-hot vector, checked for length and 0/1 values."""
    try:
        vector = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: key {key!r}: value is not a numeric vector") from None
    if vector.shape != (num_classes,):
        raise DatasetError(
            f"{path}: key {key!r}: label vector of shape {vector.shape}, expected ({num_classes},) for "
            f"{num_classes} configured classes"
        )
    if not np.all((vector == 0) | (vector == 1)):
        bad = np.unique(vector[(vector != 0) & (vector != 1)]).tolist()  # NaN listed once
        raise DatasetError(f"{path}: key {key!r}: label values must be 0 or 1, got {bad}")
    return tuple(int(i) for i in np.flatnonzero(vector))


# --- labels derived per image (Annotations XML, masks) ----------------------------------------------------


def xml_labels(path: Path, names: list[str]) -> tuple[int, ...]:
    """The classes of the ``<object><name>`` entries of a VOC annotation file."""
    index_of = {name: index for index, name in enumerate(names)}
    try:
        root = ElementTree.parse(path).getroot()
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    except (ElementTree.ParseError, OSError) as error:
        raise DatasetError(f"{path}: unreadable annotation XML ({error})") from error
    classes = set()
    for number, obj in enumerate(root.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DatasetError(f"{path}: object {number} has no <name>")
        classes.add(_class_index(index_of, name, f"{path}: object {number}", "the class names"))
    return tuple(sorted(classes))


def mask_labels(path: Path, num_classes: int) -> tuple[int, ...]:
    """The classes present in a label mask (values 1..C); DatasetError for values outside 0..C and 255."""
    mask = load_mask(path)
    bad = bad_mask_values(mask, num_classes)
    if bad:
        raise mask_value_error(path, bad, num_classes)
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256)[1 : num_classes + 1])
    return tuple(int(index) for index in present)


def derived_labels(
    ids: list[str], path_of, read, problems: list[str], progress: bool = False, desc: str = "labels"
) -> dict[str, tuple[int, ...]]:
    """{id: read(path_of(id))} for every id (XML or mask per image); each failure is appended to
    ``problems`` rather than raised, so that one error can list them all."""
    from tqdm import tqdm

    labels = {}
    for image_id in tqdm(ids, desc=desc, disable=not progress, leave=False):
        try:
            labels[image_id] = read(path_of(image_id))
        except DatasetError as error:
            problems.append(str(error))
    return labels


# --- writing -------------------------------------------------------------------------------------------


def format_class_list(labels: dict[str, tuple[int, ...]]) -> str:
    """The ``<id> <c> <c> ...`` text of ``labels`` (file order kept)."""
    return "".join(" ".join([image_id, *map(str, classes)]) + "\n" for image_id, classes in labels.items())


def write_class_list(path: str | Path, labels: dict[str, tuple[int, ...]]) -> Path:
    """Write ``labels`` in the ``train_cls.txt`` form, atomically."""
    write_text(path, format_class_list(labels))
    return Path(path)


def write_id_list(path: str | Path, ids: Iterable[str]) -> Path:
    """Write one id per line, atomically."""
    write_text(path, "".join(f"{image_id}\n" for image_id in ids))
    return Path(path)
