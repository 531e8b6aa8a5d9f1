"""The errors l2g raises for its user to act on, on the ground floor so that every package can raise them.

Each is an :class:`L2GError`, which the command line prints as one message (exit status 2) instead of a
traceback, and keeps the built-in type it always had (``ConfigError`` is still a ``ValueError``), so that
callers catching the built-in one keep working.
"""

from __future__ import annotations


class L2GError(Exception):
    """Base of every error whose message tells the user what to fix."""


class ConfigError(L2GError, ValueError):
    """A configuration value or key that cannot be used."""


class DatasetError(L2GError, ValueError):
    """A dataset on disk does not match the expected layout; the message names the file(s) at fault."""


class CheckpointError(L2GError, ValueError):
    """A checkpoint file that cannot be used (truncated, corrupted, or not an l2g training state)."""


class NonFiniteError(L2GError, FloatingPointError):
    """A loss term or a gradient became NaN or infinite; training stopped before the optimiser step."""


class NotEnoughDiskSpace(L2GError, OSError):
    """The disk holding an output folder has less free space than the output is estimated to need."""


class DegenerateMasksError(L2GError, ValueError):
    """Pseudo masks almost all background or all foreground: the segmentation stage would learn nothing."""


# The l2g errors that a distributed run re-creates on every rank (l2g.engine.distributed.agree), most
# specific first: another rank's error becomes the first of these in its class lineage.
USER_ERRORS: tuple[type[L2GError], ...] = (ConfigError, DatasetError, CheckpointError, NonFiniteError,
                                           NotEnoughDiskSpace)
# What the command line prints as ``l2g COMMAND: error: message`` (exit status 2) instead of a traceback.
MESSAGE_ERRORS: tuple[type[Exception], ...] = (L2GError, FileNotFoundError, FileExistsError, ValueError)
