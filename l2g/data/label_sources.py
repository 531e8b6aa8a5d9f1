"""The sources of image-level labels (``data.labels``), each with its reader from :mod:`l2g.data.labels`.

A source is a label list, one file for the whole split (``cls_txt``, ``csv``, ``npy``), or one file per
image (``xml``: ``Annotations/<id>.xml``, ``masks``: the label mask); ``auto`` takes the first that
exists (see :mod:`l2g.data.voc_layout`). ``LABEL_SOURCES`` is what the config accepts.
"""

from __future__ import annotations

from pathlib import Path

from l2g.data.csv_labels import read_csv_labels
from l2g.data.labels import LabelTable, mask_labels, read_class_list, read_npy_labels, xml_labels


def _cls_txt_table(path: Path, num_classes: int, names: list[str] | None, names_file: str) -> LabelTable:
    return LabelTable(read_class_list(path, num_classes), path, "cls_txt")


def _csv_table(path: Path, num_classes: int, names: list[str] | None, names_file: str) -> LabelTable:
    return read_csv_labels(path, num_classes, names, names_file)


def _npy_table(path: Path, num_classes: int, names: list[str] | None, names_file: str) -> LabelTable:
    return read_npy_labels(path, num_classes)


# A label list (one file for the split): (path, C, class names or None, where the names are) -> LabelTable.
LIST_READERS = {"cls_txt": _cls_txt_table, "csv": _csv_table, "npy": _npy_table}
# One file per image (<id>.xml, <id>.png): (file, C, class names) -> the image's classes; and its suffix.
IMAGE_READERS = {
    "xml": (lambda path, num_classes, names: xml_labels(path, names), ".xml"),
    "masks": (lambda path, num_classes, names: mask_labels(path, num_classes), ".png"),
}
NAMED_SOURCES = ("csv", "xml")  # sources that give class names, read with the classes file
LABEL_SOURCES = ("auto", *LIST_READERS, *IMAGE_READERS)
