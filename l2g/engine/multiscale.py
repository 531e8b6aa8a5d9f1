"""Test-time multi-scale + flip averaging, the one mechanism behind the attention maps of ``l2g cams``
(:func:`l2g.method.attention_maps.multiscale_maps`) and the masks of segmentation inference
(:func:`l2g.segmentation.inference.predict_probs`).

Each caller gives its inputs (one per scale, already resized its way) and what one pass computes (the
attention maps need only some channels and a softmax before resizing, DeepLab's scores are resized and
then softmaxed); the averaging itself is here: the plain and the mirrored input of a scale go through
the network as one batch of two, the mirrored output is flipped back and added to the plain one, the
sum optionally brought to the image's size (``finish``) and accumulated, and the total divided by the
number of passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def average_passes(inputs: Iterable[torch.Tensor], flip: bool, run_pass: Callable[[torch.Tensor], torch.Tensor],
                   finish: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Mean over ``inputs`` (each (1, 3, h, w), one per scale) and, with ``flip``, their mirror images.

    ``run_pass(batch)`` maps a (B, 3, h, w) batch (B = 2 with ``flip``: plain, mirrored) to (B, K, h', w')
    outputs; ``finish`` maps a scale's (K, h', w') sum of plain + flipped-back output to (K, H, W), the
    common size (every scale's sum must have it when ``finish`` is None). Returns (K, H, W).
    """
    total, scales = None, 0
    for scaled in inputs:
        batch = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
        outputs = run_pass(batch)
        summed = outputs[0] + outputs[1].flip(-1) if flip else outputs[0]
        if finish is not None:
            summed = finish(summed)
        total = summed if total is None else total.add_(summed)
        scales += 1
    if total is None:
        raise ValueError("multi-scale inference needs at least one scale")
    return total / (scales * (2 if flip else 1))
