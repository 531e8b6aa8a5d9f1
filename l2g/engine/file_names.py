"""File names l2g makes from text it does not control (image ids, the stems of a user's files)."""

from __future__ import annotations

import re


def safe_filename(text: str) -> str:
    """``text`` reduced to letters, digits, ``.``, ``-`` and ``_`` so it is a safe file-name part."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "sample"
