"""Training checkpoints: ``<run>/checkpoints/step-<iterations done, 8 digits>.pt``, newest M kept.

A checkpoint is written atomically (:mod:`l2g.atomic`) and loaded with
``torch.load(weights_only=True)``, so it holds only tensors and plain Python values: model and optimiser
state dicts, the AMP scaler's state, the position (epoch, step in epoch, iterations done), the random
number generators' states of every process, the config, and the elapsed time. A checkpoint that cannot
be read is reported and the one before it is used.
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2g import atomic
from l2g.engine.guards import ensure_free_space
from l2g.errors import CheckpointError

FORMAT = 1
_NAME = re.compile(r"^step-(\d+)\.pt$")


def step_path(folder: str | Path, iteration: int) -> Path:
    return Path(folder) / f"step-{iteration:08d}.pt"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Step checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(folder: str | Path, iteration: int, payload: dict[str, Any], keep: int) -> Path:
    """Write ``payload`` as the checkpoint of ``iteration`` and delete all but the newest ``keep``."""
    folder = Path(folder)
    existing = list_checkpoints(folder)
    estimate = existing[-1].stat().st_size if existing else _tensor_bytes(payload)
    ensure_free_space(folder, estimate, "a training checkpoint")
    path = step_path(folder, iteration)
    atomic.save_torch(path, {"format": FORMAT, **payload})
    for old in list_checkpoints(folder)[: -max(keep, 1)]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def _tensor_bytes(value: Any) -> int:
    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A training checkpoint, or :class:`CheckpointError` naming the file and what is wrong with it."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: checkpoint not found") from None
    except Exception as error:  # truncated or corrupted: unpickling raises many types
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an l2g training checkpoint (format {FORMAT})")
    return payload


def load_latest(folder: str | Path, map_location: str | torch.device = "cpu",
                warn: Callable[[str], None] | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint of ``folder`` (None when there is none at all). Unreadable ones
    are reported through ``warn`` (stderr by default) and skipped; if none is readable, an error."""
    warn = warn or (lambda message: print(message, file=sys.stderr))
    paths = list_checkpoints(folder)
    problems = []
    for path in reversed(paths):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as error:
            problems.append(str(error))
            warn(f"warning: {error}; trying the previous checkpoint")
    if paths:
        raise CheckpointError(f"{folder}: no readable checkpoint ({'; '.join(problems)})")
    return None


# --- random number generators ----------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """This process's Python, NumPy, torch and CUDA generator states, as checkpoint-safe values."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
