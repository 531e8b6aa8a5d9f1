"""Run one function over many independent tasks (one image each), in this process or in a process pool."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_tasks(fn: Callable[[T], R], tasks: Iterable[T], workers: int, chunksize: int = 8) -> Iterator[R]:
    """``fn`` of every task: in order in this process when ``workers <= 1``, else in ``workers`` processes
    (fork where the platform has it, spawn elsewhere) in completion order. ``fn`` must be a module-level
    function and the tasks picklable."""
    if workers <= 1:
        yield from map(fn, tasks)
        return
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with context.Pool(workers) as pool:
        yield from pool.imap_unordered(fn, tasks, chunksize=chunksize)
