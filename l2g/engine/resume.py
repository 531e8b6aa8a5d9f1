"""What resuming a training run needs, kept beside the loop (:mod:`l2g.engine.trainer`): the state a
checkpoint holds, loading the newest readable one back into the model, optimiser, grad scaler and
random generators, and the log cut back to the checkpoint's iteration.

A checkpoint records how it was trained (processes, batch size per process, accumulated micro-batches,
iterations per epoch); a run resumed with other values is refused, because its batches would differ from
an uninterrupted run's. Every rank loads the file rank 0 chose; only rank 0 writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from l2g import atomic, faults
from l2g.engine import checkpoint, distributed


def load_resume_state(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, precision, settings,
                      iterations_per_epoch: int) -> tuple[int, float, Path | None]:
    """Load the newest readable checkpoint of ``folder`` into model, optimiser, scaler and RNGs (every rank
    the same file, chosen by rank 0); returns (iterations done, seconds spent, path), or (0, 0.0, None)
    when there is none."""
    ctx = distributed.current()
    loaded: dict[str, Any] = {}

    def choose() -> str | None:
        found = checkpoint.load_latest(folder, ctx.device)
        if found is None:
            return None
        loaded["state"] = found[1]  # rank 0 keeps what it validated instead of reading it twice
        return str(found[0])

    chosen = distributed.main_first(choose)
    if chosen is None:
        return 0, 0.0, None
    path = Path(chosen)
    state = loaded.get("state") or checkpoint.load_checkpoint(path, ctx.device)
    s = settings
    written = (state.get("world_size"), state.get("batch_size"), state.get("accumulate_steps", 1),
               state.get("iterations_per_epoch"))
    if written != (ctx.world_size, s.batch_size, s.accumulate_steps, iterations_per_epoch):
        raise ValueError(
            f"{path}: written by {written[0]} process(es) x batch {written[1]} x {written[2]} accumulated "
            f"micro-batch(es) with {written[3]} iterations per epoch; this run has {ctx.world_size} x "
            f"{s.batch_size} x {s.accumulate_steps} with {iterations_per_epoch}. Resume with the same number "
            "of processes, batch size per process (optim.batch_size; seg.batch_size for segmentation), "
            "optim.accumulate_steps and training images.")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if precision.scaler is not None and state.get("scaler"):
        precision.scaler.load_state_dict(state["scaler"])
    checkpoint.restore_rng(state["rng"][ctx.rank])
    return int(state["iteration"]), float(state.get("seconds", 0.0)), path


def open_log(path: Path, start_iteration: int) -> IO[str] | None:
    """The training log ``path`` opened for appending, keeping only records of iterations before
    ``start_iteration`` (a resumed run rewrites what the interrupted one logged after its checkpoint);
    rank 0 only (None elsewhere)."""
    if not distributed.current().is_main:
        return None
    kept = []
    if start_iteration > 0 and path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by the crash
            if isinstance(record, dict) and record.get("iteration", start_iteration) < start_iteration:
                kept.append(line)
    atomic.write_text(path, "".join(line + "\n" for line in kept))
    return path.open("a")


def save_state(folder: Path, done: int, per_epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
               precision, settings, config: dict[str, Any], seconds: float) -> Path | None:
    """Write the checkpoint after ``done`` iterations (rank 0; every rank's RNG state gathered into it),
    keeping the newest ``settings.keep_checkpoints``; returns its path on rank 0, None elsewhere."""
    ctx = distributed.current()
    rngs = distributed.all_gather_object(checkpoint.capture_rng())
    if not ctx.is_main:
        return None
    s = settings
    payload = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scaler": precision.scaler.state_dict() if precision.scaler is not None else None,
        "iteration": done, "epoch": done // per_epoch, "step": done % per_epoch,
        "iterations_per_epoch": per_epoch, "world_size": ctx.world_size, "batch_size": s.batch_size,
        "accumulate_steps": s.accumulate_steps,
        "rng": rngs, "config": config, "seconds": seconds,
    }
    saved = checkpoint.save_checkpoint(folder, done, payload, s.keep_checkpoints)
    faults.reached("checkpoint", saved)
    return saved
