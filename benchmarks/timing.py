"""Timing helpers: interleaved repeats (so that a load change on a shared machine hits both sides of a
ratio alike), device synchronisation, medians, and the machine's measured matrix-multiply peak."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a wall-clock interval covers the work it launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int,
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function: ``warmup`` untimed rounds, then ``repeats`` rounds in which
    every function runs once in turn (A B A B ..., not A A B B)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def matmul_peak(device: torch.device, size: int, dtype: torch.dtype = torch.float32, repeats: int = 5) -> dict:
    """Measured FLOP/s of a ``size`` x ``size`` matrix multiply (2 n^3 FLOPs), median of ``repeats``."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    times = interleaved({"matmul": lambda: torch.mm(a, b)}, device, repeats, warmup=2)["matmul"]
    seconds = median(times)
    return {"size": size, "dtype": str(dtype).replace("torch.", ""), "seconds": seconds,
            "flops_per_s": 2 * size**3 / seconds}

