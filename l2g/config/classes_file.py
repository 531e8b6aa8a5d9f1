"""How many classes a classes file names, for a config that leaves ``data.num_classes`` unset.

Standard library only (the config imports no numpy, PIL or torch). Reading and checking the names themselves
is :func:`l2g.data.labels.read_class_names`; this only counts them, reading the file the same way
(:func:`l2g.config.text_files.content_lines`) and not counting a first line that names the background.
"""

from __future__ import annotations

from pathlib import Path

from l2g.config.text_files import content_lines
from l2g.data.registry import BACKGROUND_NAMES
from l2g.errors import DatasetError


def count_class_names(root: str | Path, classes_file: str | Path | None = None) -> int | None:
    """The number of foreground class names in the classes file (``classes_file``, relative to ``root`` unless
    absolute, else ``<root>/classes.txt``); None when it does not exist or is not UTF-8 text (reading it later
    reports why)."""
    path = Path(classes_file) if classes_file is not None else Path("classes.txt")
    path = path if path.is_absolute() else Path(root) / path
    try:
        names = [text for _, text in content_lines(path)]
    except DatasetError:
        return None
    return len(names) - (bool(names) and names[0].lower() in BACKGROUND_NAMES)
