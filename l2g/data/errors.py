"""The two dataset exceptions, in a module of their own so that every reader can raise them without
import cycles (``l2g.data.voc_layout`` re-exports both)."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset on disk does not match the expected layout; the message names the file(s) at fault."""


class DatasetWarning(UserWarning):
    """Something in the dataset is tolerated but worth knowing (e.g. a saliency map that gets resized)."""
