"""Fault injection for the crash tests: hold the process at a chosen point so a test can SIGKILL it there.

Inactive unless the environment variable ``L2G_FAULT_HOLD`` is set, to ``EVENT:N`` where EVENT is
``write`` (the N-th atomic write of this process, after its temporary file is complete but before the
rename) or ``checkpoint`` (right after the N-th training checkpoint of this process is saved). At that
point the process prints ``l2g fault hold: EVENT N <path>`` to stderr and sleeps (up to 10 minutes), so
that a test sees a known state on disk before it kills the process. Nothing else changes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ENV = "L2G_FAULT_HOLD"
HOLD_SECONDS = 600.0
_counts: dict[str, int] = {}


def reached(event: str, path: str | Path) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    wanted, _, count = spec.partition(":")
    if wanted != event:
        return
    _counts[event] = _counts.get(event, 0) + 1
    if str(_counts[event]) == count.strip():
        print(f"l2g fault hold: {event} {count} {path}", file=sys.stderr, flush=True)
        time.sleep(HOLD_SECONDS)
