"""Where does an attention map look? Mean attention on an object's discriminative part vs its body.

The paper's claim is that a whole-image classifier's CAM is strong on the small discriminative parts of
an object and weak on the rest, and that local views spread attention over the whole object. When a
dataset marks its parts (the synthetic benchmark writes ``parts/<id>.png``) this is measured directly:
for every labelled object, the mean of its own class map over its part pixels and over its body pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class PartBodyAttention:
    """Running means of a class's own attention on its part pixels, body pixels and the background."""

    part_sum: float = 0.0
    part_pixels: int = 0
    body_sum: float = 0.0
    body_pixels: int = 0
    background_sum: float = 0.0
    background_pixels: int = 0

    def update(self, cams: dict[int, np.ndarray], mask: np.ndarray, parts: np.ndarray) -> None:
        """Add one image: ``cams`` {0-based class: HxW map}, ``mask`` (0 background, c+1 class c, 255
        ignored) and ``parts`` (bool HxW, True on discriminative-part pixels)."""
        background = mask == 0
        for cls, heat in cams.items():
            own = mask == cls + 1
            part, body = own & parts, own & ~parts
            self.part_sum += float(heat[part].sum())
            self.part_pixels += int(part.sum())
            self.body_sum += float(heat[body].sum())
            self.body_pixels += int(body.sum())
            self.background_sum += float(heat[background].sum())
            self.background_pixels += int(background.sum())

    def results(self) -> dict[str, float | None]:
        """Mean attention on parts, bodies and background (None where no pixel was seen)."""

        def mean(total: float, count: int) -> float | None:
            return total / count if count else None

        return {"part": mean(self.part_sum, self.part_pixels), "body": mean(self.body_sum, self.body_pixels),
                "background": mean(self.background_sum, self.background_pixels)}


def read_parts(parts_dir: str | Path, image_id: str) -> np.ndarray:
    """The part map of ``image_id`` (``<parts_dir>/<id>.png``) as a bool (H, W) array."""
    return np.asarray(Image.open(Path(parts_dir) / f"{image_id}.png")) > 127
