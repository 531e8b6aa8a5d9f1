"""Attention targets that the local network teaches the global network (paper Sec. 3.3-3.4).

All maps have C + 1 channels: the C classes first, the background channel LAST (as in the release,
whose classification logits pool only the first C channels). Functions are pure: tensors in,
tensors out, nothing learned. Targets are computed in float32 whatever the input dtype: under float16
autocast the local maps arrive in float16, where the max normalisation's 1e-8 rounds to 0 and a channel
without a positive value would divide 0 by 0.
"""

from __future__ import annotations

import torch

from l2g.method.registry import SHAPE_BACKGROUNDS, VIEW_GATES


def normalize_attention(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 2: ``A^c = ReLU(F^c) / max(ReLU(F^c))`` per sample and channel. ``maps`` (B, K, h, w)."""
    positive = maps.clamp(min=0)
    return positive / (positive.amax(dim=(2, 3), keepdim=True) + eps)


def keep_the_max(maps: torch.Tensor) -> torch.Tensor:
    """At every pixel keep only the largest channel's value; the others become 0.

    Ties go to the first channel (argmax), so exactly one channel keeps its value per pixel.
    """
    best = maps.argmax(dim=1, keepdim=True)
    return torch.zeros_like(maps).scatter_(1, best, maps.gather(1, best))


def view_presence(local_logits: torch.Tensor, gate: str) -> torch.Tensor | None:
    """How present the local classifier finds each class on each view, for ``method.view_gate``.

    ``local_logits`` (V, C) are the local network's pooled class scores of V views. ``gate``:
    ``"off"`` -> None (no gating, the release); ``"soft"`` -> ``sigmoid(s)``; ``"hard"`` -> 1 where
    ``sigmoid(s) > 0.5`` (``s > 0``), else 0. Detached: gating says where to teach, it is not trained.
    """
    if gate not in VIEW_GATES:
        raise ValueError(f"unknown view gate {gate!r} (one of {', '.join(VIEW_GATES)})")
    if gate == "off":
        return None
    scores = local_logits.detach().float()
    return torch.sigmoid(scores) if gate == "soft" else (scores > 0).float()


def attention_targets(
    local_maps: torch.Tensor, labels: torch.Tensor, background: str = "release", eps: float = 1e-8,
    presence: torch.Tensor | None = None,
) -> torch.Tensor:
    """The attention target A of each local view (detached), as in the authors' release.

    ``local_maps`` (V, C+1, h, w) is the local network's output for V views, ``labels`` (V, C) the
    multi-hot image labels each view inherits. Steps: ReLU and per-channel max normalisation (Eq. 2);
    channels of classes absent from the label zeroed (the background channel is never zeroed);
    then :func:`keep_the_max`.

    ``presence`` (V, C) in [0, 1], optional (:func:`view_presence`): each view's class channels are
    multiplied by it after the label zeroing. Why: every view inherits all image labels, so a view that
    holds no object of a labelled class still gets that class's max-normalised value 1.0 somewhere
    (on background or on another object); the local classifier's own score on the view says whether
    the class is there. With ``complement`` the background then takes the pixels the gated class loses.

    ``background`` chooses the background channel before keep-the-max:
    - ``"release"``: the local network's own background channel, normalised like the others. No loss
      trains it (the classification logits pool only the C class channels), so it is whatever the
      backbone's features project to; it still wins keep-the-max wherever classes are weak.
    - ``"complement"``: ``1 - max_c A^c`` over the present classes: background is where no present
      class attends. Every pixel's target then has one channel >= 0.5, so the softmax of the global
      network is never regressed onto an all-zero column (see method-notes.md, pitfalls).
    """
    num_classes = labels.shape[1]
    if local_maps.shape[1] != num_classes + 1:
        raise ValueError(f"local maps have {local_maps.shape[1]} channels, expected C + 1 = {num_classes + 1}")
    maps = normalize_attention(local_maps.detach().float(), eps)
    weights = labels.to(maps.dtype)
    if presence is not None:
        if presence.shape != labels.shape:
            raise ValueError(f"presence {tuple(presence.shape)} does not match labels {tuple(labels.shape)}")
        weights = weights * presence.to(maps.dtype)
    classes = maps[:, :num_classes] * weights[:, :, None, None]
    if background == "release":
        back = maps[:, num_classes:]
    elif background == "complement":
        back = 1.0 - classes.amax(dim=1, keepdim=True) if num_classes else torch.ones_like(maps[:, :1])
    else:
        raise ValueError(f"unknown background mode {background!r}")
    return keep_the_max(torch.cat([classes, back], dim=1))


def shape_targets(
    targets: torch.Tensor, saliency: torch.Tensor, threshold: float, form: str = "paper",
    background: str = "binary",
) -> torch.Tensor:
    """Shape transfer targets (Eq. 7).

    ``targets`` (V, C+1, h, w) from :func:`attention_targets`; ``saliency`` (V, 1, h, w) in [0, 1], the
    view's saliency crop resized (nearest) to the map. ``B = targets > threshold``; class channels get
    ``B * S``. The background channel gets, with ``background``:

    - ``"binary"``: ``B_bg * (1 - S)``, the binarised background target (the release's VOC script, and
      Eq. 7 read literally);
    - ``"attention"``: ``A_bg * (1 - S)``, the background target's own value (the release's COCO script).

    ``form`` says what a view with an empty saliency crop gets:

    - ``"release"``: the same as any view (then every class target is 0 and only the background
      survives); the release's threshold is 0.001 (VOC script) or 0.1 (COCO script).
    - ``"paper"``: Eq. 7 as written: a view with an empty saliency crop (``|S_i| = 0``) keeps its
      plain attention target ``A_i`` instead; the paper's threshold is "e.g. 0.1".
    """
    if saliency.shape[1] != 1 or saliency.shape[2:] != targets.shape[2:] or saliency.shape[0] != targets.shape[0]:
        raise ValueError(f"saliency {tuple(saliency.shape)} does not fit targets {tuple(targets.shape)}")
    if background not in SHAPE_BACKGROUNDS:
        raise ValueError(f"unknown shape transfer background {background!r} (one of {', '.join(SHAPE_BACKGROUNDS)})")
    targets, saliency = targets.float(), saliency.float()
    binary = (targets > threshold).to(targets.dtype)
    back = binary[:, -1:] if background == "binary" else targets[:, -1:]
    shaped = torch.cat([binary[:, :-1] * saliency, back * (1.0 - saliency)], dim=1)
    if form == "release":
        return shaped
    if form == "paper":
        empty = saliency.flatten(1).sum(dim=1) == 0
        return torch.where(empty[:, None, None, None], targets, shaped)
    raise ValueError(f"unknown shape transfer form {form!r}")
