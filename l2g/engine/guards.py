"""Stop early and say why: non-finite losses or gradients, and a disk too full for what comes next."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from l2g.errors import NonFiniteError, NotEnoughDiskSpace


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a training loop: at which iteration, and the newest checkpoint written."""

    def __init__(self, iteration: int, last_saved: Path | None) -> None:
        super().__init__(f"interrupted at iteration {iteration}")
        self.iteration, self.last_saved = iteration, last_saved


def nonfinite_gradients(named_parameters: Iterable[tuple[str, nn.Parameter]], limit: int = 5) -> list[str]:
    """Names of (at most ``limit``) parameters whose gradient holds a NaN or an infinity."""
    bad = []
    for name, param in named_parameters:
        if param.grad is not None and not torch.isfinite(param.grad).all():
            bad.append(name)
            if len(bad) == limit:
                break
    return bad


def gradients_nonfinite(parameters: list[nn.Parameter], device: torch.device) -> torch.Tensor:
    """A 0-d bool tensor on ``device``, True when any gradient holds a NaN or an infinity: one fused test
    (the sum of the gradients' norms is finite iff every entry is), read by the caller when it must know."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros((), dtype=torch.bool, device=device)
    return ~torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum())


def format_losses(losses: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" if math.isfinite(v) else f"{k}={v}" for k, v in losses.items())


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"  # pragma: no cover - the loop always returns


def free_bytes(folder: str | Path) -> int:
    """Free space on the disk that holds ``folder`` (or its nearest existing parent)."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def ensure_free_space(folder: str | Path, needed: int, what: str, margin: float = 1.1) -> None:
    """Refuse to start writing ``what`` into ``folder`` when the disk has less than ``margin`` times
    the ``needed`` bytes free."""
    free = free_bytes(folder)
    if free < needed * margin:
        raise NotEnoughDiskSpace(
            f"{folder}: not enough disk space for {what}: about {human_bytes(needed)} needed "
            f"(+{round(100 * (margin - 1))}% margin), {human_bytes(free)} free; free some space or "
            "choose another output folder"
        )


def nonfinite_report(names: list[str], micro: list[tuple[dict, torch.Tensor]],
                     batch_ids: Callable[[dict], list[str]]) -> dict:
    """What this process knows about a step with a non-finite term: the images and terms at fault and
    the values of the first shown micro-batch. ``micro``: (host batch, loss-term values) of each
    micro-batch of the step; the images named are those of the micro-batches with a non-finite term
    (all of the step's for a gradient)."""
    reports_of = []
    for _, values in micro:
        terms = dict(zip(names, values.tolist(), strict=True))
        bad = [name for name, value in terms.items() if not math.isfinite(value)]
        reports_of.append((terms, sorted(bad, key=lambda name: name == "loss")))
    bad_micro = [i for i, (_, bad) in enumerate(reports_of) if bad]
    shown = bad_micro or list(range(len(micro)))
    return {"ids": [i for m in shown for i in batch_ids(micro[m][0])],
            "terms": sorted({t for m in shown for t in reports_of[m][1]}, key=lambda name: name == "loss"),
            "values": reports_of[shown[0]][0], "bad": bool(bad_micro)}


def nonfinite_error(where: str, reports: list[dict], mine: dict, gradient: bool, model: nn.Module,
                    last_saved: Path | None) -> NonFiniteError:
    """The error naming the step (``where``), the terms and the images of every rank's report (this
    rank's is ``mine``), or, with ``gradient``, the parameters whose gradient is not finite."""
    if gradient:
        params = nonfinite_gradients(model.named_parameters())
        ids = [i for r in reports for i in r["ids"]]
        what = (f"non-finite gradient at {where} in {', '.join(params)}; the loss terms were finite "
                f"({format_losses(mine['values'])}); images {ids}")
    else:
        bad = [(rank, r) for rank, r in enumerate(reports) if r["bad"]]
        parts = []
        for rank, r in bad:
            prefix = f"rank {rank}: " if len(reports) > 1 else ""
            parts.append(f"{prefix}{', '.join(r['terms'])} non-finite ({format_losses(r['values'])}); "
                         f"images {r['ids']}")
        what = f"non-finite loss at {where}: " + "; ".join(parts)
    kept = (f"the last good checkpoint is {last_saved}" if last_saved is not None
            else "no checkpoint was written yet")
    return NonFiniteError(f"{what}. Training stopped before the optimiser step; {kept}.")


def with_fix(error: NonFiniteError, lr_key: str, lr: float, amp: bool | str) -> NonFiniteError:
    """``error`` with what to change: a lower learning rate (``lr_key``), AMP off where it may be on, and
    how to start the stage again (the learning rate is not a value a run may resume with)."""
    amp_hint = f", or turn mixed precision off (--set amp=off; amp is {amp})" if amp not in (False, "off") else ""
    return NonFiniteError(
        f"{error}\nHow to fix it: lower the learning rate tenfold (--set {lr_key}={lr / 10:g}; it is {lr:g})"
        f"{amp_hint}. "
        "A network from random weights diverges far more easily than a pretrained one: start it from pretrained "
        "weights where there are any. The learning rate cannot change within a run: start the stage again "
        "(--overwrite; l2g run redoes a stage whose values changed by itself)."
    )
