"""Stage 3: sweep the background threshold over a split's attention maps in one pass -> sweep.json.

Every threshold is scored from one read of each image's maps and mask (:class:`ThresholdSweep`), and
images are read and scored by several threads at once (file decoding and numpy release the GIL): each
thread fills its own sweep over a shard of the images, and the shards' integer counts are merged, so
the result does not depend on the number of threads.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from l2g.config import Config
from l2g.data.images import read_mask
from l2g.data.voc_layout import Sample
from l2g.evaluation.sweep import ThresholdSweep, default_thresholds
from l2g.stages.cams import load_cams
from l2g.stages.common import dataset_class_names, split_samples, write_json

MAX_AUTO_WORKERS = 8


def stack_maps(cams: dict[int, np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(K, H, W) maps and their mask values (class index + 1) from a cams dict; an image without
    labelled classes gives (0, *shape) maps, which label every pixel background."""
    keys = sorted(cams)
    if not keys:
        return np.zeros((0, *shape), np.float32), np.zeros(0, np.int64)
    return np.stack([cams[k] for k in keys]), np.array(keys, np.int64) + 1


def sweep_workers(requested: int, images: int) -> int:
    """Threads for a sweep over ``images`` images: ``requested``, or one per CPU core (at most 8) for 0."""
    workers = requested or min(os.cpu_count() or 1, MAX_AUTO_WORKERS)
    return max(1, min(workers, images))


def _score_images(sweep: ThresholdSweep, samples: list[Sample], cams_dir: Path, num_classes: int, bar) -> None:
    for sample in samples:
        gt = read_mask(sample.mask_path, num_classes)
        maps, labels = stack_maps(load_cams(cams_dir / f"{sample.image_id}.npy"), gt.shape)
        if maps.shape[1:] != gt.shape:
            raise ValueError(f"{cams_dir / sample.image_id}.npy: maps {maps.shape[1:]} vs mask {gt.shape}")
        sweep.update(maps, labels, gt)
        bar.update()


def evaluate_cams(config: Config, cams_dir: str | Path, out_path: str | Path | None = None,
                  split: str | None = None, progress: bool = True) -> dict:
    split = split or config.cams.split
    cams_dir = Path(cams_dir)
    # Every file this stage reads (masks, maps) is checked as it is read, so decoding every image, mask
    # and saliency map up front (data.check_images=decode) would only add a second pass over the split.
    samples = split_samples(config, split, need_masks=True, check_images="exists")
    thresholds = list(config.eval.thresholds) or default_thresholds()
    num_classes = config.data.num_classes
    sweep = ThresholdSweep(num_classes + 1, thresholds)
    workers = sweep_workers(config.eval.workers, len(samples))
    with tqdm(total=len(samples), desc=f"eval-cams {split}", disable=not progress) as bar:
        if workers == 1:
            _score_images(sweep, samples, cams_dir, num_classes, bar)
        else:
            shards = [ThresholdSweep(num_classes + 1, thresholds) for _ in range(workers)]
            with ThreadPoolExecutor(workers) as pool:
                jobs = [pool.submit(_score_images, shard, samples[i::workers], cams_dir, num_classes, bar)
                        for i, shard in enumerate(shards)]
                for job in jobs:
                    job.result()  # re-raises a worker's error (e.g. a missing map file) here
            for shard in shards:
                sweep.merge(shard)
    results = sweep.results(["background", *dataset_class_names(config)])
    results["split"] = split
    results["images"] = len(samples)
    write_json(out_path or cams_dir.parent / "sweep.json", results)
    return results
