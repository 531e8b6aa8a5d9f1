"""Signs that attention transfer has stopped working, computed from what the loss already compares.

Eq. 6 regresses the global network's *softmax* onto the local targets. The gradient of a softmax output
with respect to the scores is ``p_k (delta_kj - p_j)``: once one channel holds nearly all the
probability at a pixel, every entry is tiny, so a global network that is confidently wrong there gets
almost no gradient to become right. A cross-entropy loss (the CAM baseline's) has no such dead zone,
which is why a backbone can train fine as CAM and still collapse under L2G: large pretrained features let
the first optimiser steps, taught mostly background by the early targets, push every pixel's background
score far above the class scores, and the global network then never follows the local network's class
maps (measured in docs/synthetic-benchmark.md, "Why the pretrained global network collapses").
"""

from __future__ import annotations

from collections import deque

import torch

# At p >= 0.999 every entry of the softmax Jacobian is below 0.001: Eq. 6 hardly moves such a pixel.
STUCK_CONFIDENCE = 0.999


def stuck_share(global_crops: torch.Tensor, targets: torch.Tensor, confidence: float = STUCK_CONFIDENCE
                ) -> torch.Tensor:
    """Share of the taught class pixels where the global network is confidently wrong.

    ``global_crops`` (V, C+1, h, w) raw global scores cut at the views (as Eq. 6 receives them),
    ``targets`` (V, C+1, h, w) the local targets, background channel last. A pixel is *taught a class*
    when its largest target value is positive and lies on a class channel; it is *stuck* when the global
    softmax gives at least ``confidence`` to another channel. Returns a 0-dim tensor in [0, 1]; 0 when
    no pixel is taught a class (nothing can be stuck).
    """
    if global_crops.shape != targets.shape:
        raise ValueError(f"global crops {tuple(global_crops.shape)} vs targets {tuple(targets.shape)}")
    with torch.no_grad():
        probabilities = torch.softmax(global_crops.float(), dim=1)
        best, winner = targets.float().max(dim=1)
        taught = (best > 0) & (winner < targets.shape[1] - 1)
        confident, choice = probabilities.max(dim=1)
        stuck = taught & (confident >= confidence) & (choice != winner)
        return stuck.sum().float() / taught.sum().clamp(min=1).float()


class StuckMonitor:
    """Watches the logged ``kt_stuck`` values and says once when the transfer looks stuck.

    Feed it every log record (``{"iteration": ..., "kt_stuck": ...}``); :meth:`update` returns a warning
    the first time the mean over the last ``window`` records reaches ``threshold``, else None. An
    untrained global network is not confident, so early records do not trip it. Measured: the synthetic
    demo's L2G run logs at most 0.40, at most 0.27 over 5 records, 0.02 at the end; the collapsed
    EfficientNet-Lite0 run logs 1.0 from iteration 10 on.
    """

    def __init__(self, threshold: float = 0.5, window: int = 5, advice: str = "") -> None:
        self.threshold = threshold
        self.window = window
        self.advice = advice  # what to change, appended to the warning (see stuck_advice)
        self.recent: deque[float] = deque(maxlen=window)
        self.warning: str | None = None

    def update(self, record: dict) -> str | None:
        if self.warning is not None or "kt_stuck" not in record:
            return None
        self.recent.append(float(record["kt_stuck"]))
        share = sum(self.recent) / len(self.recent)
        if len(self.recent) < self.window or share < self.threshold:
            return None
        self.warning = (
            f"attention transfer is stuck at iteration {record.get('iteration', '?')}: on {share:.0%} of the "
            f"pixels where the local network teaches a class, the global network's softmax is at least "
            f"{STUCK_CONFIDENCE} sure of another channel (mean of the last {self.window} logged values of "
            "kt_stuck in train_log.jsonl). Eq. 6 compares softmax outputs, whose gradient vanishes where they "
            "saturate, so the global network is unlikely to recover and its attention maps will miss the "
            "objects." + (f" {self.advice}" if self.advice else "")
        )
        return self.warning


def stuck_advice(transfer_loss: str, lam_warmup_epochs: float, head_init: str = "xavier") -> str:
    """What a user whose transfer got stuck should change, given the run's ``method`` and head settings."""
    if transfer_loss == "mse":
        return ("To fix it: --set method.transfer_loss=kl (a soft cross-entropy with Eq. 6's fixed point, whose "
                "gradient does not vanish there). For pretrained backbones the preset pretrained_l2g also sets "
                "model.head_init=zero (uniform softmax at the start), method.lam=100 and "
                "method.lam_warmup_epochs=1, so that the global network fits its targets within a short "
                "schedule. What was measured: docs/synthetic-benchmark.md.")
    changes = [*([] if head_init == "zero" else ["--set model.head_init=zero (the release's Xavier head made the "
                                                 "kl transfer oscillate with a pretrained backbone)"]),
               "a lower optim.lr", *([] if lam_warmup_epochs > 0 else ["method.lam_warmup_epochs=1"])]
    return ("This run already uses method.transfer_loss=kl, which keeps a gradient there, so it may still recover "
            f"(watch kt_stuck in train_log.jsonl); if it does not, try {'; or '.join(changes)}. "
            "What was measured: docs/synthetic-benchmark.md.")
