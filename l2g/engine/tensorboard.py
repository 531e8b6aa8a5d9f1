"""Optional TensorBoard logging of a training run: ``--set runtime.tensorboard=true``.

The trainer's JSON-lines log (``<run>/train_log.jsonl``) stays the source of truth; this mirrors each of
its records into ``<run>/tensorboard/`` as scalars, through the trainer's ``on_log`` hook (rank 0 only,
so under torchrun one process writes):

- ``loss/<term>`` for every loss term of the record (``loss``, ``loss_cls``, ``loss_kt``, ...);
- ``train/lr`` (the base learning rate), ``train/epoch`` and every other logged number (``train/kt_stuck``);
- ``train/images_per_second``: images of all processes per second of wall time between two records
  (data loading, checkpoints and logging included, as a user waits for them).

A stage may add images (the classification stage: attention maps of a few training images at every
epoch end, ``runtime.tensorboard_images``). TensorBoard is an optional dependency (``pip install
'l2g[tensorboard]'``): :func:`require_tensorboard` fails with that hint before a run starts.
A resumed run continues the curves: its first event purges what the interrupted run logged after the
checkpoint it resumed from (``purge_step``), as the JSONL log is rewritten.
"""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path

import numpy as np

from l2g.config import ConfigError

TENSORBOARD_DIR = "tensorboard"
INSTALL_HINT = "pip install 'l2g[tensorboard]' (or pip install tensorboard)"


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def require_tensorboard() -> None:
    """ConfigError naming the fix when ``runtime.tensorboard`` is on and the package is missing."""
    if not tensorboard_available():
        raise ConfigError(f"runtime.tensorboard is on but the tensorboard package is not installed: {INSTALL_HINT}, "
                          "or set runtime.tensorboard=false")


def scalar_tag(key: str) -> str:
    return f"loss/{key}" if key.startswith("loss") else f"train/{key}"


class TensorBoardLogger:
    """Writes training log records (and images) to ``log_dir``; create it on rank 0 only.

    ``global_batch`` (images per iteration over all processes) turns iterations into images per second.
    The event file is opened at the first record, so a resumed run can purge the steps it redoes.
    """

    def __init__(self, log_dir: str | Path, global_batch: int) -> None:
        require_tensorboard()
        self.log_dir = Path(log_dir)
        self.global_batch = global_batch
        self.last_iteration: int | None = None
        self._last: tuple[float, int] | None = None
        self._writer = None

    def _writer_at(self, step: int):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir), purge_step=step)
        return self._writer

    def log_record(self, record: dict) -> None:
        """One record of the trainer's log (``{"epoch", "iteration", "lr", loss terms...}``)."""
        step = int(record["iteration"])
        writer = self._writer_at(step)
        for key, value in record.items():
            if key == "iteration" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                writer.add_scalar(scalar_tag(key), float(value), step)
        now = time.perf_counter()
        if self._last is not None and step > self._last[1] and now > self._last[0]:
            rate = (step - self._last[1]) * self.global_batch / (now - self._last[0])
            writer.add_scalar("train/images_per_second", rate, step)
        self._last = (now, step)
        self.last_iteration = step

    def log_images(self, images: list[tuple[str, np.ndarray]], step: int) -> None:
        """(tag, (H, W, 3) uint8 picture) pairs at ``step``."""
        writer = self._writer_at(step)
        for tag, picture in images:
            writer.add_image(tag, np.ascontiguousarray(picture), step, dataformats="HWC")
        writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
