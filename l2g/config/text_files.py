"""The small text files that describe a dataset (class names, split and label lists), read alike everywhere:
UTF-8 (a byte-order mark is dropped), blank lines and ``#`` comments skipped.

Standard library only, in the config package because the config counts a classes file's names
(:mod:`l2g.config.classes_file`) and may not import :mod:`l2g.data`, whose readers use the same functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from l2g.errors import DatasetError


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path`` (a byte-order mark is dropped); DatasetError when missing or not text."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: unreadable ({error})") from error


def content_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped text) of the lines that are neither blank nor ``#`` comments."""
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped
