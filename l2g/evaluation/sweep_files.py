"""The threshold sweep's work on files: read a chunk of images' masks and maps and score them.

Kept free of torch (numpy, PIL and the map reader only): the sweep's forked worker processes never touch
torch, whose threads a fork does not copy. A chunk's result is a :class:`ThresholdSweep` of integer counts, which add up
exactly whatever the chunking and the order, so the sweep's result does not depend on its workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from l2g.data.cam_files import find_cams_file, read_cams_file
from l2g.data.images import read_mask
from l2g.evaluation.sweep import ThresholdSweep

# (image id, mask path) of each image of a chunk
Job = tuple[str, str]


def score_chunk(jobs: Sequence[Job], cams_dir: str, num_classes: int, thresholds: Sequence[float]) -> ThresholdSweep:
    """One :class:`ThresholdSweep` (``num_classes`` foreground classes + background) over ``jobs``."""
    sweep = ThresholdSweep(num_classes + 1, thresholds)
    for image_id, mask_path in jobs:
        gt = read_mask(mask_path, num_classes)
        path = find_cams_file(cams_dir, image_id)
        cams = read_cams_file(path, widen=False)  # float16 maps are scored exactly without widening them
        maps = cams.maps if cams.classes.size else np.zeros((0, *gt.shape), np.float32)  # dict files: no size
        if maps.shape[1:] != gt.shape:
            raise ValueError(f"{path}: maps {maps.shape[1:]} vs mask {gt.shape} ({Path(mask_path)})")
        sweep.update(maps, cams.mask_values, gt)
    return sweep
