"""Reproducibility switches of the training loop: deterministic kernels and per-process seeds."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool, device: torch.device):
    """``torch.use_deterministic_algorithms`` for the duration (restored afterwards).

    On CPUs every op l2g uses has a deterministic kernel. On GPUs some backward passes (interpolation,
    RoI align) have none: they only warn, so results there are as reproducible as those kernels allow.
    cuBLAS also needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the environment before CUDA starts.
    """
    if not enabled:
        yield
        return
    previous, benchmark = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        torch.backends.cudnn.benchmark = benchmark


def seed_process(seed: int, rank: int) -> None:
    """Seed Python, NumPy and torch for a rank > 0 from (seed, rank), so processes draw different
    numbers (rank 0 keeps the stage's own seeding, which single-process runs rely on)."""
    value = int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)
