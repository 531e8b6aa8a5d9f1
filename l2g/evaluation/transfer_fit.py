"""Does the global network learn what the local network teaches? Attention transfer, region by region.

L2G's global network gets no label: it only regresses its softmax G onto the local network's targets
A (Eq. 5-6). When its maps disappoint, the first question is which side failed: are the targets poor
(the local network does not find more of the object), or does the global network not reproduce them
(it lags a teacher that is still changing, or cannot tell two classes apart)? :class:`TransferFit`
compares both on training views, split by ground truth: for every view and labelled class c, the
pixels of c's object (its discriminative part and the rest, where a dataset marks parts) and the
background. Per region:

- ``target``: mean A^c, what the local network teaches for c;
- ``global``: mean G^c, what the global network outputs for c;
- ``taught``: share of pixels whose target's surviving channel is c (keep-the-max leaves one);
- ``learnt``: share of pixels where c wins the global network's argmax.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

REGIONS = ("part", "body", "background")  # "body": object pixels off the part (all of them without parts)
QUANTITIES = ("target", "global", "taught", "learnt")


def _zeros() -> dict[str, torch.Tensor]:
    return {region: torch.zeros(len(QUANTITIES), dtype=torch.float64) for region in REGIONS}


@dataclass
class TransferFit:
    """Running sums of :data:`QUANTITIES` per region, over views and their labelled classes."""

    totals: dict[str, torch.Tensor] = field(default_factory=_zeros)
    pixels: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REGIONS, 0))

    def update(self, targets: torch.Tensor, probabilities: torch.Tensor, labels: torch.Tensor,
               masks: torch.Tensor, parts: torch.Tensor | None = None) -> None:
        """Add V views.

        ``targets`` and ``probabilities`` (V, C+1, h, w): the targets A and the global softmax G at the
        views' boxes; ``labels`` (V, C) multi-hot; ``masks`` (V, h, w) ground truth at the same
        resolution (0 background, c + 1 class c, anything else ignored); ``parts`` (V, h, w) bool, True
        on discriminative-part pixels, or None when the dataset marks no parts.
        """
        if targets.shape != probabilities.shape or targets.shape[0] != masks.shape[0]:
            raise ValueError(f"targets {tuple(targets.shape)}, probabilities {tuple(probabilities.shape)} "
                             f"and masks {tuple(masks.shape)} do not match")
        survivor = torch.where(targets.amax(dim=1) > 0, targets.argmax(dim=1), -1)  # all-zero pixel: none
        winner = probabilities.argmax(dim=1)
        for view, cls in labels.nonzero().tolist():
            own = masks[view] == cls + 1
            regions = {"body": own} if parts is None else {"part": own & parts[view], "body": own & ~parts[view]}
            regions["background"] = masks[view] == 0
            per_pixel = torch.stack([targets[view, cls], probabilities[view, cls],
                                     survivor[view] == cls, winner[view] == cls]).double()
            for name, region in regions.items():
                count = int(region.sum())
                if count:
                    self.totals[name] += per_pixel[:, region].sum(dim=1).cpu()
                    self.pixels[name] += count

    def results(self) -> dict[str, dict[str, float] | None]:
        """Per region, the mean of each quantity and the pixel count (None for a region never seen)."""
        out: dict[str, dict[str, float] | None] = {}
        for region in REGIONS:
            count = self.pixels[region]
            if not count:
                out[region] = None
                continue
            means = (self.totals[region] / count).tolist()
            out[region] = {**dict(zip(QUANTITIES, means, strict=True)), "pixels": count}
        return out
