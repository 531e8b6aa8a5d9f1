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


class _Taught:
    """What both diagnostics read from one step: the global softmax and, per pixel, the channel the targets
    teach (the one with the largest target value, when that value is positive)."""

    def __init__(self, global_crops: torch.Tensor, targets: torch.Tensor) -> None:
        if global_crops.shape != targets.shape:
            raise ValueError(f"global crops {tuple(global_crops.shape)} vs targets {tuple(targets.shape)}")
        self.probabilities = torch.softmax(global_crops.detach().float(), dim=1)
        best, self.winner = targets.detach().float().max(dim=1)
        self.positive = best > 0

    def stuck_share(self, confidence: float) -> torch.Tensor:
        taught = self.positive & (self.winner < self.probabilities.shape[1] - 1)
        confident, choice = self.probabilities.max(dim=1)
        stuck = taught & (confident >= confidence) & (choice != self.winner)
        return stuck.sum().float() / taught.sum().clamp(min=1).float()

    def contrast(self) -> torch.Tensor:
        channels = self.probabilities.shape[1]
        taught = torch.nn.functional.one_hot(self.winner, channels).movedim(-1, 1) & self.positive.unsqueeze(1)
        classes, background = taught[:, :-1], taught[:, -1:]  # (V, C, h, w), (V, 1, h, w)
        class_count, background_count = classes.sum(dim=(2, 3)), background.sum(dim=(2, 3))
        pairs = (class_count > 0) & (background_count > 0)  # (V, C)
        class_probabilities = self.probabilities[:, :-1]
        where_taught = (class_probabilities * classes).sum(dim=(2, 3)) / class_count.clamp(min=1)
        where_background = (class_probabilities * background).sum(dim=(2, 3)) / background_count.clamp(min=1)
        if not bool(pairs.any()):
            return self.probabilities.new_ones(())
        return where_taught[pairs].mean() / where_background[pairs].mean().clamp(min=1e-12)


def stuck_share(global_crops: torch.Tensor, targets: torch.Tensor, confidence: float = STUCK_CONFIDENCE
                ) -> torch.Tensor:
    """Share of the taught class pixels where the global network is confidently wrong.

    ``global_crops`` (V, C+1, h, w) raw global scores cut at the views (as Eq. 6 receives them),
    ``targets`` (V, C+1, h, w) the local targets, background channel last. A pixel is *taught a class*
    when its largest target value is positive and lies on a class channel; it is *stuck* when the global
    softmax gives at least ``confidence`` to another channel. Returns a 0-dim tensor in [0, 1]; 0 when
    no pixel is taught a class (nothing can be stuck).
    """
    with torch.no_grad():
        return _Taught(global_crops, targets).stuck_share(confidence)


def taught_contrast(global_crops: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """How much more the global softmax gives a class where the targets teach it than where they teach
    background, in the same view: does the global map localise what it is taught?

    Same pixels as :func:`stuck_share`: a pixel is taught the channel of its largest target value when that
    value is positive. For every view v and class c taught somewhere in v, beside pixels taught background:
    ``a_vc`` = mean probability of c over the pixels taught c, ``b_vc`` = mean probability of c over the
    pixels taught background. Returns ``mean(a) / mean(b)`` over those pairs (0-dim, no gradient): about 1
    for a global network that gives every pixel the same answer (collapsed), well above 1 for one that
    follows its targets. 1 when no view has such a pair (nothing to compare).
    """
    with torch.no_grad():
        return _Taught(global_crops, targets).contrast()


def transfer_diagnostics(global_crops: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """``kt_stuck`` (:func:`stuck_share`) and ``kt_contrast`` (:func:`taught_contrast`) of one step, from one
    softmax and one reading of the targets: what an L2G step logs."""
    with torch.no_grad():
        taught = _Taught(global_crops, targets)
        return {"kt_stuck": taught.stuck_share(STUCK_CONFIDENCE), "kt_contrast": taught.contrast()}


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


class ContrastMonitor:
    """Says once, at the end of training, when the global network's maps do not localise what it is taught.

    Feed it every log record (``{"iteration": ..., "kt_contrast": ...}``); :meth:`finish` judges the mean of
    the last ``window`` logged values of ``kt_contrast`` (:func:`taught_contrast`): below ``level`` the global
    network gives each class about as much probability where it is taught background as where it is taught
    the class, and its attention maps will miss the objects or cover everything. Judged at the end only and
    over a full window: before the global network has learnt anything it is near 1 too
    (docs/reliability.md has the measurements that set ``level``).
    """

    def __init__(self, window: int = 10, level: float = 1.1, advice: str = "") -> None:
        self.window = window
        self.level = level
        self.advice = advice
        self.recent: deque[tuple[int, float]] = deque(maxlen=window)

    def update(self, record: dict) -> None:
        if "kt_contrast" in record:
            self.recent.append((record.get("iteration", -1), float(record["kt_contrast"])))

    def finish(self) -> str | None:
        if len(self.recent) < self.window:
            return None  # too short a run to judge
        mean = sum(value for _, value in self.recent) / len(self.recent)
        if mean >= self.level:
            return None
        first, last = self.recent[0][0], self.recent[-1][0]
        return (f"attention transfer failed: over iterations {first}-{last} the global network gave each class "
                f"{mean:.2f}x the probability where its targets teach it than where they teach background "
                f"(kt_contrast in train_log.jsonl; below {self.level} it does not localise what it is taught), "
                "so its attention maps will miss the objects or cover everything."
                + (f" {self.advice}" if self.advice else ""))


CONTRAST_ADVICE = (
    "Measured on a pretrained backbone: over 12 epochs lam 100 made the global network collapse where lam 30 "
    "(pretrained_l2g's setting for L2G) let it fit its targets, and 4 epochs at lam 100 kept it localising; try a "
    "lower method.lam or optim.lr, fewer optim.epochs, or saliency maps (method.name=l2g_shape). "
    "docs/synthetic-benchmark.md, section 6.")


def stuck_advice(transfer_loss: str, lam_warmup_epochs: float, head_init: str = "xavier") -> str:
    """What a user whose transfer got stuck should change, given the run's ``method`` and head settings."""
    if transfer_loss == "mse":
        return ("To fix it: --set method.transfer_loss=kl (a soft cross-entropy with Eq. 6's fixed point, whose "
                "gradient does not vanish there). For pretrained backbones the preset pretrained_l2g also sets "
                "model.head_init=zero (uniform softmax at the start), method.lam=30 (100 with saliency) and "
                "method.lam_warmup_epochs=1, so that the global network fits its targets without "
                "oscillating. What was measured: docs/synthetic-benchmark.md.")
    changes = [*([] if head_init == "zero" else ["--set model.head_init=zero (the release's Xavier head made the "
                                                 "kl transfer oscillate with a pretrained backbone)"]),
               "a lower optim.lr", *([] if lam_warmup_epochs > 0 else ["method.lam_warmup_epochs=1"])]
    return ("This run already uses method.transfer_loss=kl, which keeps a gradient there, so it may still recover "
            f"(watch kt_stuck in train_log.jsonl); if it does not, try {'; or '.join(changes)}. "
            "What was measured: docs/synthetic-benchmark.md.")
