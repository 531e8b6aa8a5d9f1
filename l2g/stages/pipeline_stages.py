"""The names of ``l2g run``'s stages, in order. A module of its own, free of torch, because the command
line lists them (``l2g run --until``) before anything heavy is imported; :mod:`l2g.stages.pipeline`
defines what each stage does, in this order."""

from __future__ import annotations

STAGE_NAMES = ("train", "cams", "threshold", "pseudo", "seg_train", "seg_eval", "report")
