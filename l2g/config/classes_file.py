"""How many classes a classes file names, for a config that leaves ``data.num_classes`` unset.

Standard library only (the config imports no numpy, PIL or torch). Reading and checking the names themselves
is :func:`l2g.data.labels.read_class_names`; this only counts them, with the same conventions: blank lines
and ``#`` comments skipped, a first line naming the background not counted.
"""

from __future__ import annotations

from pathlib import Path

from l2g.data.registry import BACKGROUND_NAMES


def count_class_names(root: str | Path, classes_file: str | Path | None = None) -> int | None:
    """The number of foreground class names in the classes file (``classes_file``, relative to ``root`` unless
    absolute, else ``<root>/classes.txt``); None when it does not exist or is not UTF-8 text (reading it later
    reports why)."""
    path = Path(classes_file) if classes_file is not None else Path("classes.txt")
    path = path if path.is_absolute() else Path(root) / path
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    names = [text for text in (line.strip() for line in lines) if text and not text.startswith("#")]
    return len(names) - (bool(names) and names[0].lower() in BACKGROUND_NAMES)
