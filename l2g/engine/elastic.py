"""Jobs that torchrun's elastic agent restarts (``--max-restarts``): forming the process group again, and
knowing that this process belongs to a restarted worker group of the job that began a run.

Why :func:`round_store` exists. torchrun's workers meet through a TCPStore that the agent hosts
(``TORCHELASTIC_USE_AGENT_STORE=True``, torch's default since 2.4), and the agent keeps that one store for
every restart of the worker group. ``init_process_group`` keeps its keys under a prefix that is the same in
every attempt (the group's name, ``0``), so the processes of a restarted group read the addresses (gloo)
or the unique id (NCCL) that the dead processes of the previous attempt published: they connect to ports
nobody listens on any more ("connection refused"), or wait for peers that never answer. torch's own
prefix, ``TORCHELASTIC_RESTART_COUNT``, cannot be used instead: on several machines the agents count
restarts differently (a healthy node restarts for a membership change without counting it; see
pytorch/pytorch#135712). So the processes of a group agree on a fresh prefix through the store itself:
rank 0 takes a new generation number, and answers every other rank's hello (a random token only that
process knows, so an answer cannot be stale) with it. Answers to a dead process's leftover hello are
harmless: nobody waits for them.

The same store carries a failing rank's error to the others (:func:`publish_error`, :func:`peer_error`):
when a rank stops with an error, the others meet a broken collective ("connection closed by peer"), and
report the first rank's error instead of that.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from datetime import timedelta

import torch.distributed as dist

RESTART_COUNT_ENV = "TORCHELASTIC_RESTART_COUNT"
RUN_ID_ENV = "TORCHELASTIC_RUN_ID"
_POLL_SECONDS = 0.02
_ERROR_KEY = "error"
_store: dist.Store | None = None  # this attempt's store (keys of this attempt only), once joined


def restart_count() -> int:
    """How often torchrun has restarted this worker group (0 outside torchrun or in its first attempt)."""
    value = os.environ.get(RESTART_COUNT_ENV, "")
    return int(value) if value.isdigit() else 0


def job_id() -> str | None:
    """The torchrun job this process belongs to (``TORCHELASTIC_RUN_ID``: a fresh id for each
    ``--standalone`` job, the ``--rdzv_id`` otherwise); None outside torchrun."""
    return os.environ.get(RUN_ID_ENV) or None


def uses_agent_store() -> bool:
    """True under torchrun when the workers meet through the agent's store, which outlives restarts."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


def round_store(rank: int, world_size: int, timeout: timedelta) -> dist.Store:
    """A store for ``init_process_group`` that only this attempt's processes share (see the module text):
    the agent's store under the prefix ``l2g/round<generation>/``."""
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    store = dist.TCPStore(addr, port, world_size, is_master=False, timeout=timeout)
    global _store
    generation = _lead(store, world_size, timeout) if rank == 0 else _follow(store, rank, timeout)
    _store = dist.PrefixStore(f"l2g/round{generation}/", store)
    return _store


def publish_error(rank: int, message: str) -> None:
    """Leave this rank's error for the other ranks of the attempt (the first one published stays)."""
    if _store is None:
        return
    # the agent's store may be gone already: the error is printed by this rank anyway
    with contextlib.suppress(Exception):
        _store.compare_set(_ERROR_KEY, "", json.dumps({"rank": rank, "message": message}))


def peer_error(wait_seconds: float = 3.0) -> str | None:
    """Another rank's published error as ``(rank R) message``, waiting up to ``wait_seconds`` for it (a
    broken collective is seen as soon as the failing process exits, just after it published); None when
    none was published."""
    if _store is None:
        return None
    try:
        _store.wait([_ERROR_KEY], timedelta(seconds=wait_seconds))
        report = json.loads(_store.get(_ERROR_KEY))
    except Exception:  # nothing published (timeout), or the store is gone
        return None
    return f"(rank {report['rank']}) {report['message']}"


def _lead(store: dist.Store, world_size: int, timeout: timedelta) -> str:
    """Rank 0: take a new generation and give it to every other rank; returns once all have it."""
    generation = str(store.add("l2g/generation", 1))
    answered: dict[int, bytes] = {}
    waiting = set(range(1, world_size))
    deadline = time.monotonic() + timeout.total_seconds()
    while waiting:
        for rank in sorted(waiting):
            if store.check([f"l2g/joined/{generation}/{rank}"]):
                waiting.discard(rank)
                continue
            if store.check([f"l2g/hello/{rank}"]):
                token = store.get(f"l2g/hello/{rank}")
                if answered.get(rank) != token:  # a new hello (or a dead process's: answering it is harmless)
                    store.set(f"l2g/answer/{token.decode()}", generation)
                    answered[rank] = token
        if waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank(s) {sorted(waiting)} did not join the process group within "
                                   f"{timeout.total_seconds():.0f} s")
            time.sleep(_POLL_SECONDS)
    return generation


def _follow(store: dist.Store, rank: int, timeout: timedelta) -> str:
    """Rank > 0: say hello with a token of its own, wait for rank 0's answer (the generation)."""
    token = uuid.uuid4().hex
    store.set(f"l2g/hello/{rank}", token)
    store.wait([f"l2g/answer/{token}"], timeout)
    generation = store.get(f"l2g/answer/{token}").decode()
    store.set(f"l2g/joined/{generation}/{rank}", "1")
    return generation
