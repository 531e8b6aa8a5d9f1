"""Writing files so that a reader never sees half of one: write a temporary name, then rename.

``os.replace`` is atomic on POSIX within one file system, so a job killed mid-write leaves either the
old file, or no file, plus at worst a hidden ``.<name>.partial-<pid>`` file that the next run ignores
(and that ``remove_partials`` cleans up).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

PARTIAL_MARK = ".partial-"


def partial_path(path: Path) -> Path:
    """The temporary name used while ``path`` is being written (hidden, same folder, unique per process)."""
    return path.with_name(f".{path.name}{PARTIAL_MARK}{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file to ``path``. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def remove_partials(folder: str | Path) -> int:
    """Delete the temporary files a killed writer left in ``folder``; returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for leftover in folder.glob(f".*{PARTIAL_MARK}*"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed
