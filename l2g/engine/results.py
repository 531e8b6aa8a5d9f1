"""What a training run reports: :class:`TrainResult` (from :meth:`l2g.engine.trainer.Trainer.fit`) and the record
of a finished run, ``<run>/train_metrics.json`` (:func:`run_metrics`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def run_metrics(seconds: float, iterations: int, images: int, device: torch.device | str, processes: int,
                settings: Any, precision: str, precision_reason: str, **metrics: Any) -> dict[str, Any]:
    """The record of a finished training run (``<run>/train_metrics.json``), then ``metrics``."""
    return {
        "minutes": seconds / 60, "iterations": iterations, "images": images, "device": str(device),
        "processes": processes, "global_batch": settings.batch_size * settings.accumulate_steps * processes,
        "accumulate_steps": settings.accumulate_steps, "precision": precision, "precision_reason": precision_reason,
        **metrics,
    }


@dataclass
class TrainResult:
    iterations: int  # total iterations of the run
    start_iteration: int  # where this call started (0, or the resumed checkpoint's position)
    seconds: float  # training time, summed over interrupted and resumed parts
    last_checkpoint: Path | None
    resumed_from: Path | None
    precision: str
    precision_reason: str = ""
