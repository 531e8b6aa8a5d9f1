"""Fault injection for the crash tests: hold the process at a chosen point so a test can SIGKILL it there.

Inactive unless the environment variable ``L2G_FAULT_HOLD`` is set, to ``EVENT:N`` where EVENT is
``write`` (the N-th atomic write of this process, after its temporary file is complete but before the
rename), ``checkpoint`` (right after the N-th training checkpoint of this process is saved) or ``step``
(right after the N-th optimiser step of this process). At that point the process prints
``l2g fault hold: EVENT N <path> pid=<pid>`` to stderr and sleeps (up to 10 minutes), so that a test sees a
known state on disk before it kills the process. Nothing else changes.

Under torchrun: ``EVENT:N@R`` holds only the process of rank R, and a comma-separated list gives one
hold per attempt of the worker group (the k-th entry in the k-th attempt, ``TORCHELASTIC_RESTART_COUNT``
= k-1; an empty entry holds nothing), so that one elastic job can be killed at several points.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ENV = "L2G_FAULT_HOLD"
HOLD_SECONDS = 600.0
_counts: dict[str, int] = {}


def _wanted() -> tuple[str, str, str | None] | None:
    """(event, count, rank or None) of this attempt's entry of the spec; None when it holds nothing."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    entries = spec.split(",")
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0)
    entry = entries[attempt].strip() if attempt < len(entries) else ""
    if not entry:
        return None
    where, _, rank = entry.partition("@")
    event, _, count = where.partition(":")
    return event, count.strip(), rank.strip() or None


def reached(event: str, path: str | Path) -> None:
    wanted = _wanted()
    if wanted is None or wanted[0] != event:
        return
    if wanted[2] is not None and wanted[2] != os.environ.get("RANK", "0"):
        return
    _counts[event] = _counts.get(event, 0) + 1
    if str(_counts[event]) == wanted[1]:
        print(f"l2g fault hold: {event} {wanted[1]} {path} pid={os.getpid()}", file=sys.stderr, flush=True)
        time.sleep(HOLD_SECONDS)
