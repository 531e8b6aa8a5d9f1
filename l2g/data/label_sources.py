"""The readers of image-level labels (``data.labels``), one per source of :data:`l2g.data.registry.LABEL_SOURCES`.

A source is a label list, one file for the whole split (``cls_txt``, ``csv``, ``npy``), or one file per
image (``xml``: ``Annotations/<id>.xml``, ``masks``: the label mask); ``auto`` takes the first that
exists (see :mod:`l2g.data.layout`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from l2g.data.csv_labels import read_csv_labels
from l2g.data.labels import LabelTable, mask_labels, read_class_list, read_npy_labels, xml_labels
from l2g.data.registry import LABEL_SOURCES

# A label list (one file for the split): (path, C, class names or None, where the names are, problems) ->
# LabelTable; a reader that checks row by row (csv, cls_txt) adds its bad rows to ``problems`` when given one
# and returns the rows it read; npy raises at its first problem.
# One file per image (<id>.xml, <id>.png): (file, C, class names) -> the image's classes.


def read_cls_txt(path: Path, num_classes: int, names: list[str] | None, names_file: str,
                 problems: list[str] | None = None) -> LabelTable:
    return LabelTable(read_class_list(path, num_classes, problems), path, "cls_txt")


def read_csv(path: Path, num_classes: int, names: list[str] | None, names_file: str,
             problems: list[str] | None = None) -> LabelTable:
    return read_csv_labels(path, num_classes, names, names_file, problems)


def read_npy(path: Path, num_classes: int, names: list[str] | None, names_file: str,
             problems: list[str] | None = None) -> LabelTable:
    return read_npy_labels(path, num_classes)


def read_xml(path: Path, num_classes: int, names: list[str] | None) -> tuple[int, ...]:
    return xml_labels(path, names)


def read_mask(path: Path, num_classes: int, names: list[str] | None) -> tuple[int, ...]:
    return mask_labels(path, num_classes)


def label_reader(source: str) -> Callable:
    """The reader of the label source ``source`` (a key of LABEL_SOURCES)."""
    return globals()[LABEL_SOURCES[source].reader]
