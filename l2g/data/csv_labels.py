"""Image-level labels from a CSV list (``image,label1;label2``): see :mod:`l2g.data.labels` for the forms.

Every bad row of a file is reported in one DatasetError (unknown class names each with a "did you mean"
hint, a row with too many columns, an image listed twice), so one rerun fixes them all; rows without
labels are accepted (an image that shows none of the classes) and warned about together. Given a list
of ``problems``, the reader adds the bad rows to it instead and returns the rows it could read, so that
:func:`l2g.data.layout.load_split` lists them with the split's file problems in one error.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

from l2g.config.text_files import read_text
from l2g.data.errors import DatasetError, DatasetWarning, listed
from l2g.data.labels import (
    LabelTable,
    _class_index,
    _first_seen_check,
    _parse_classes,
    check_num_classes,
    image_id_of,
)

CSV_HEADER_WORDS = ("image", "images", "file", "filename", "image_id", "id")


def _check_file_name(path: Path, number: int, name: str) -> None:
    if not name:
        raise DatasetError(f"{path}:{number}: empty image name")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise DatasetError(
            f"{path}:{number}: image {name!r} must be a plain file name inside the image folder (no folders)"
        )


def read_csv_labels(
    path: str | Path, num_classes: int, names: list[str] | None = None, names_file: str = "the classes file",
    problems: list[str] | None = None,
) -> LabelTable:
    """Labels from ``image,label1;label2`` rows (see the module docstring).

    With ``names`` the labels are class names; without, 0-based indices. Raises DatasetError for an
    unknown name, an index out of range, an image listed twice, a row with more than two columns and a
    file without rows. With ``problems`` the bad rows are added to it instead of raised, and the table
    holds the rows that could be read (a row with an unknown name keeps its image and its known names;
    a repeated image keeps its first row).
    """
    check_num_classes(num_classes)
    path = Path(path)
    index_of = {name: index for index, name in enumerate(names)} if names is not None else None
    reader = csv.reader(io.StringIO(read_text(path)))
    labels: dict[str, tuple[int, ...]] = {}
    files: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    bad_rows: list[str] = []  # every bad row, reported together: one rerun fixes them all
    unlabelled: list[str] = []
    first_row = True
    try:
        for row in reader:
            number = reader.line_num
            cells = [cell.strip() for cell in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            is_header = first_row and cells[0].lower() in CSV_HEADER_WORDS
            first_row = False
            if is_header:
                continue
            try:
                image_id, classes = _csv_row(path, number, cells, num_classes, index_of, names_file, first_seen,
                                             bad_rows, unlabelled)
            except DatasetError as error:
                bad_rows.append(str(error))
                continue
            labels[image_id] = classes
            if image_id != cells[0]:  # a file name, not a bare id: use exactly that file
                files[image_id] = cells[0]
    except csv.Error as error:
        bad_rows.append(f"{path}:{reader.line_num}: not a valid CSV row ({error})")
    if bad_rows and problems is not None:
        problems.extend(bad_rows)
    elif bad_rows:
        raise DatasetError(f"{path}: {len(bad_rows)} problem(s):\n{listed(bad_rows)}" if len(bad_rows) > 1
                           else bad_rows[0])
    if not labels and not bad_rows:
        raise DatasetError(f"{path}: no images listed (the file is empty)")
    if unlabelled:  # legitimate (the image only teaches what is absent), but usually a forgotten label
        warnings.warn(f"{len(unlabelled)} image(s) without labels, used as showing none of the classes (check that "
                      f"no label was forgotten): {', '.join(unlabelled[:5])}" + (" ..." if len(unlabelled) > 5 else ""),
                      DatasetWarning, stacklevel=2)
    return LabelTable(labels, path, "csv", files)


def _csv_row(path: Path, number: int, cells: list[str], num_classes: int, index_of: dict[str, int] | None,
             names_file: str, first_seen: dict[str, int], problems: list[str],
             unlabelled: list[str]) -> tuple[str, tuple[int, ...]]:
    """(image id, classes) of one CSV row; its unknown class names are each added to ``problems`` (the
    row's other problems are raised), a row without labels to ``unlabelled``."""
    if len(cells) > 2:
        raise DatasetError(f"{path}:{number}: expected 2 columns 'image,label1;label2', got {len(cells)} "
                           f"(separate labels with ';', not ',')")
    name = cells[0]
    _check_file_name(path, number, name)
    image_id = image_id_of(name)
    _first_seen_check(path, number, image_id, first_seen)
    tokens = [token.strip() for token in (cells[1] if len(cells) > 1 else "").split(";") if token.strip()]
    if not tokens:
        unlabelled.append(f"{path}:{number}: {name}")
    if index_of is None:
        return image_id, _parse_classes(path, number, tokens, num_classes)
    classes = set()
    for token in tokens:
        try:
            classes.add(_class_index(index_of, token, f"{path}:{number}", names_file))
        except DatasetError as error:
            problems.append(str(error))
    return image_id, tuple(sorted(classes))
