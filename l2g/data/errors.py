"""The dataset warning, in a module of its own so that every reader can raise it (and ``DatasetError``,
whose home is :mod:`l2g.errors`) without import cycles (``l2g.data.layout`` re-exports both), and the
list of problems their messages show."""

from __future__ import annotations

from collections.abc import Sequence

from l2g.errors import DatasetError as DatasetError  # its home is l2g.errors; imported from here by the readers


class DatasetWarning(UserWarning):
    """Something in the dataset is tolerated but worth knowing (e.g. a saliency map that gets resized)."""


def listed(items: Sequence[str], limit: int | None = None) -> str:
    """``items`` as an indented list for an error message, one ``  - item`` line each: the first
    ``limit`` of them, then ``  ... and N more`` for the rest."""
    shown = items if limit is None else items[:limit]
    lines = [f"  - {item}" for item in shown]
    if len(items) > len(shown):
        lines.append(f"  ... and {len(items) - len(shown)} more")
    return "\n".join(lines)
