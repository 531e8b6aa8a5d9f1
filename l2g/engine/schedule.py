"""How long a training stage runs: in epochs, in optimiser steps, or epochs raised to a minimum of steps;
and the expected time of the stage once its first steps are timed.

An epoch is ``images // (batch size x accumulated micro-batches x processes)`` optimiser steps, so a length
in epochs means 20 photos get 2 steps per epoch and 20,000 get 2,500: ``optim.steps`` fixes the number of steps
whatever the data size, and ``optim.min_steps`` raises a small set's epochs so that it gets at least that many
(the last epoch may stop part way: the run ends at the step count, and resumes there).
"""

from __future__ import annotations

import math
import time


def training_length(epochs: int, per_epoch: int, steps: int = 0, min_steps: int = 0) -> tuple[int, int, str]:
    """(optimiser steps in all, epochs begun, how the length was set) for ``epochs`` of ``per_epoch`` steps,
    or exactly ``steps`` when > 0, else at least ``min_steps``."""
    if steps > 0:
        total, how = steps, f"optim.steps {steps}"
    elif min_steps > epochs * per_epoch:
        total = min_steps
        how = f"optim.min_steps {min_steps}: {epochs} epochs would be {epochs * per_epoch}"
    else:
        total, how = epochs * per_epoch, f"{epochs} epochs"
    return total, math.ceil(total / per_epoch), how


def length_line(description: str, total: int, per_epoch: int, step_images: int, how: str) -> str:
    """The line printed before training: the number of steps and where it comes from."""
    epochs = total / per_epoch
    shown = f"{epochs:.0f}" if epochs == int(epochs) else f"{epochs:.1f}"
    return (f"{description}: {total} optimiser steps of {step_images} images, {shown} epochs of {per_epoch} "
            f"steps ({how})")


class StageClock:
    """Times the steps after the first (which pays for warm-up: allocation, kernels, compiling) and, once
    ``timed`` of them are done, gives the expected time of the whole stage, once."""

    def __init__(self, total: int, start: int, timed: int = 2) -> None:
        self.total, self.start, self.timed = total, start, timed
        self.began = time.time()
        self.first_done: float | None = None
        self.told = False

    def tick(self, done: int, description: str) -> str | None:
        """Called after each optimiser step (``done`` steps completed); the expected-time line, or None."""
        now = time.time()
        if done == self.start + 1:
            self.first_done = now
            return None
        if self.told or self.first_done is None or done - self.start - 1 < self.timed or done >= self.total:
            return None
        self.told = True
        per_step = (now - self.first_done) / (done - self.start - 1)
        minutes = ((now - self.began) + per_step * (self.total - done)) / 60
        return (f"{description}: {per_step:.1f} s per step: about {minutes:.0f} min for these "
                f"{self.total - self.start} steps on this machine")
