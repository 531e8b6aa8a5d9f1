"""Stage 3: sweep the background threshold over a split's attention maps in one pass -> sweep.json.

Every threshold is scored from one read of each image's maps and mask (:class:`ThresholdSweep`). Images
are read and scored in chunks by several workers at once (``eval.workers``, default one per core, at
most 8): each chunk fills its own sweep, and the chunks' integer counts are merged, so the result does
not depend on the number of workers, their kind or the chunking.

``eval.parallel``: ``processes`` (forked worker processes: every step of an image runs in parallel, numpy's
histogram and the zip reader included, which hold the GIL), ``threads`` (decoding and most of numpy release
the GIL, not all), or ``auto`` (default): processes on Linux for a split of at least MIN_PROCESS_IMAGES
images, threads otherwise. Processes are forked, never spawned: a spawned child would re-import the
caller's ``__main__`` (a script without a main guard, or ``python -m l2g`` itself), and the fork of this
process costs milliseconds where a fresh interpreter that imports torch costs seconds.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from l2g.config import Config
from l2g.data.errors import DatasetError
from l2g.data.sample import Sample
from l2g.engine.run_paths import RunFolder
from l2g.evaluation.sweep import ThresholdSweep, default_thresholds
from l2g.evaluation.sweep_files import score_chunk
from l2g.stages.common import dataset_class_names, split_samples, write_json

MAX_AUTO_WORKERS = 8
MAX_CHUNK = 32  # images per task: large enough to amortise a task, small enough to balance the workers
MIN_PROCESS_IMAGES = 64  # auto: below this, threads (forking workers costs more than it saves)


def sweep_workers(requested: int, images: int) -> int:
    """Workers for a sweep over ``images`` images: ``requested``, or one per CPU core (at most 8) for 0."""
    workers = requested or min(os.cpu_count() or 1, MAX_AUTO_WORKERS)
    return max(1, min(workers, images))


def chunks(items: list, workers: int) -> list[list]:
    """``items`` cut into consecutive chunks: about four per worker, at most MAX_CHUNK items each."""
    size = max(1, min(MAX_CHUNK, -(-len(items) // (4 * workers))))
    return [items[i : i + size] for i in range(0, len(items), size)]


def can_fork() -> bool:
    """Forked workers are safe here: Linux (macOS frameworks are not fork-safe; Windows cannot fork)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def _executor(parallel: str, workers: int, images: int) -> Executor | None:
    """The pool the chunks run in; None: in this thread."""
    if workers == 1:
        return None
    if parallel == "processes" and not can_fork():
        raise ValueError(f"eval.parallel=processes needs fork (Linux); on {sys.platform} use threads or auto")
    if parallel == "processes" or (parallel == "auto" and can_fork() and images >= MIN_PROCESS_IMAGES):
        # The children only read files and run numpy (no torch, whose threads a fork does not copy).
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(workers)


def evaluate_cams(config: Config, cams_dir: str | Path, *, out_path: str | Path | None = None,
                  split: str | None = None, progress: bool = True, samples: list[Sample] | None = None) -> dict:
    """Sweep the thresholds over ``split`` (every image must have a mask), or over ``samples`` of it (those
    with masks, e.g. the few images a user drew masks for); writes and returns the sweep."""
    split = split or config.cams.split
    cams_dir = Path(cams_dir)
    # Every file this stage reads (masks, maps) is checked as it is read, so decoding every image, mask
    # and saliency map up front (data.check_images=decode) would only add a second pass over the split.
    if samples is None and config.data.masks_optional:  # own images: score those that have a mask
        samples = [s for s in split_samples(config, split, check_images="exists") if s.mask_path is not None]
        if not samples:
            raise DatasetError(f"{config.data.root}: no image of split {split!r} has a mask to score the maps "
                               "against; l2g pseudo chooses the threshold from the maps without masks")
    if samples is None:
        samples = split_samples(config, split, need_masks=True, check_images="exists")
    thresholds = list(config.eval.thresholds) or default_thresholds()
    num_classes = config.data.num_classes
    sweep = ThresholdSweep(num_classes + 1, thresholds)
    workers = sweep_workers(config.eval.workers, len(samples))
    jobs = [(s.image_id, str(s.mask_path)) for s in samples]
    parts = chunks(jobs, workers)
    with tqdm(total=len(samples), desc=f"eval-cams {split}", disable=not progress) as bar:
        pool = _executor(config.eval.parallel, workers, len(samples))
        if pool is None:
            for part in parts:
                sweep.merge(score_chunk(part, str(cams_dir), num_classes, thresholds))
                bar.update(len(part))
        else:
            with pool:
                futures = {pool.submit(score_chunk, part, str(cams_dir), num_classes, thresholds): len(part)
                           for part in parts}
                try:
                    for future in as_completed(futures):
                        sweep.merge(future.result())  # re-raises a worker's error (e.g. a missing map file)
                        bar.update(futures[future])
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    results = sweep.results(["background", *dataset_class_names(config)])
    results["split"] = split
    results["images"] = len(samples)
    write_json(out_path or RunFolder(cams_dir.parent).sweep, results)
    return results
