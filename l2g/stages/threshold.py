"""The background threshold of the pseudo masks when ``eval.threshold`` is not set, with or without masks.

``l2g run`` (and :func:`choose_pipeline_threshold`) picks it by the first rule that applies (after
``eval.threshold``, which always wins):

``masks``  every image of ``cams.split`` that has a ground-truth mask (all of them, or a handful: a user
           who draws masks for 20 images gets them used) is scored over the threshold grid
           (:func:`l2g.stages.eval_cams.evaluate_cams`), and the best threshold is taken;
``otsu``   no image has a mask: Otsu's threshold of the pooled histogram of each pixel's strongest
           attention (over the image's labelled classes), the value that best separates the confident
           object pixels from the rest. It needs nothing but the maps.

The choice and its evidence go to ``<cls run>/threshold.json`` (``rule``, ``threshold``, the number of
images with masks, and the foreground fraction the threshold gives). Pseudo masks that come out almost
all foreground or all background (:func:`pseudo_mask_warning`: above HIGH_FOREGROUND or below LOW_FOREGROUND
of their labelled pixels) are degenerate: ``l2g pseudo`` warns about them, with what to change, and
``l2g run`` stops before the segmentation stage (:func:`check_pseudo_masks`) unless told to go on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from l2g.config import Config
from l2g.data.cam_files import load_cams
from l2g.data.palette import IGNORE_INDEX, load_mask
from l2g.engine.run_paths import RunFolder
from l2g.errors import DegenerateMasksError
from l2g.evaluation.sweep import default_thresholds
from l2g.stages.common import split_samples, write_json

BINS = 256
# Pseudo masks with more foreground than this (or less than LOW) say the threshold does not fit the maps.
HIGH_FOREGROUND, LOW_FOREGROUND = 0.95, 0.02


def strongest_attention_histogram(cams_dir: str | Path, image_ids: list[str], bins: int = BINS) -> np.ndarray:
    """Counts of each pixel's largest map value (over the image's labelled classes) in ``bins`` bins of [0, 1],
    over all images; an image without labelled classes adds zeros (all background)."""
    counts = np.zeros(bins, dtype=np.int64)
    for image_id in image_ids:
        maps = load_cams(cams_dir, image_id).maps
        if not maps.shape[0]:
            continue
        strongest = np.clip(maps.astype(np.float32).max(axis=0), 0.0, 1.0)
        counts += np.bincount(np.minimum((strongest * bins).astype(np.int64), bins - 1).ravel(), minlength=bins)
    return counts


def otsu_threshold(counts: np.ndarray) -> float:
    """Otsu's threshold of a histogram over [0, 1]: the bin edge maximising the between-class variance.
    Values on the grid of ``default_thresholds`` are not enforced; the result is rounded to 0.01."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("no attention-map pixels to choose a threshold from")
    bins = len(counts)
    centres = (np.arange(bins) + 0.5) / bins
    weight_low = np.cumsum(counts)[:-1]
    weight_high = total - weight_low
    sum_low = np.cumsum(counts * centres)[:-1]
    mean_low = sum_low / np.maximum(weight_low, 1e-12)
    mean_high = (np.sum(counts * centres) - sum_low) / np.maximum(weight_high, 1e-12)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    edge = (int(np.argmax(between)) + 1) / bins  # the upper edge of the last "background" bin
    grid = default_thresholds()
    return round(float(np.clip(edge, grid[0], 0.95)), 2)


def foreground_fraction(counts: np.ndarray, threshold: float) -> float:
    """The share of pixels whose strongest attention exceeds ``threshold`` (what the pseudo masks call foreground)."""
    bins = len(counts)
    first = int(np.ceil(threshold * bins))
    return float(counts[first:].sum() / max(counts.sum(), 1))


def choose_pipeline_threshold(config: Config, cls_run: str | Path, progress: bool = True) -> dict:
    """Choose the threshold of ``cams.split`` by the module's rules; writes and returns ``threshold.json``."""
    from l2g.stages.eval_cams import evaluate_cams

    cls_run = Path(cls_run)
    split = config.cams.split
    samples = split_samples(config, split, check_images="exists")
    record: dict = {"split": split, "images": len(samples)}
    counts = strongest_attention_histogram(RunFolder(cls_run).cams, [s.image_id for s in samples])
    masked = [s for s in samples if s.mask_path is not None]
    record["images_with_masks"] = len(masked)
    if masked:  # scored even with eval.threshold set: the report shows the curve and the pseudo-label mIoU
        best = evaluate_cams(config, RunFolder(cls_run).cams, split=split, samples=masked, progress=progress)["best"]
        record.update(rule="masks", threshold=best["threshold"], miou_on_masked_images=best["miou"])
    else:
        record.update(rule="otsu", threshold=otsu_threshold(counts))
    if config.eval.threshold is not None:
        record.update(rule="eval.threshold", threshold=config.eval.threshold)
    record["foreground_fraction"] = foreground_fraction(counts, record["threshold"])
    write_json(RunFolder(cls_run).threshold, record)
    return record


def pseudo_mask_foreground(pseudo_dir: str | Path) -> tuple[int, int]:
    """(foreground pixels, labelled pixels) of the pseudo masks in ``pseudo_dir`` (ignore pixels left out)."""
    foreground = total = 0
    for path in sorted(Path(pseudo_dir).glob("*.png")):
        mask = load_mask(path)
        valid = mask != IGNORE_INDEX
        foreground += int(np.count_nonzero(valid & (mask > 0)))
        total += int(np.count_nonzero(valid))
    return foreground, total


def pseudo_mask_warning(pseudo_dir: str | Path, threshold: float) -> str | None:
    """A warning when the pseudo masks in ``pseudo_dir`` are almost all foreground or all background."""
    foreground, total = pseudo_mask_foreground(pseudo_dir)
    if not total:
        return None
    share = foreground / total
    if share > HIGH_FOREGROUND:
        return (f"the pseudo masks in {pseudo_dir} are {100 * share:.0f}% foreground at threshold {threshold:.2f}: "
                "the segmentation network will learn to paint everything. Raise the threshold (--set "
                "eval.threshold=T, or l2g pseudo --threshold T), or give masks for a few images so the threshold is "
                "chosen on them; and check the labels (an image tagged with a class it does not show gets it "
                "painted over)")
    if share < LOW_FOREGROUND and threshold <= default_thresholds()[0]:
        return (f"the pseudo masks in {pseudo_dir} are {100 * (1 - share):.0f}% background even at threshold "
                f"{threshold:.2f}: the attention maps are empty, so the classification stage did not find the "
                "objects (see its warnings and kt_stuck in cls/train_log.jsonl); train it longer (optim.epochs) or "
                "with another optim.lr, or with saliency maps (method.name=l2g_shape), and check that the labels "
                "name what the images show, before the later stages")
    if share < LOW_FOREGROUND:
        return (f"the pseudo masks in {pseudo_dir} are {100 * (1 - share):.0f}% background at threshold "
                f"{threshold:.2f}: lower the threshold (--set eval.threshold=T, or l2g pseudo --threshold T), or "
                "give masks for a few images so the threshold is chosen on them")
    return None


def warn_pseudo_masks(pseudo_dir: str | Path, threshold: float) -> None:
    """Print :func:`pseudo_mask_warning`'s warning, if any, to stderr."""
    warning = pseudo_mask_warning(pseudo_dir, threshold)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def check_pseudo_masks(pseudo_dir: str | Path, threshold: float, allow: bool = False) -> None:
    """Before the segmentation stage trains on them: raise :class:`~l2g.errors.DegenerateMasksError` when the
    pseudo masks are degenerate (:func:`pseudo_mask_warning`), with the measured share, what to change and
    how to go on; with ``allow`` only warn."""
    warning = pseudo_mask_warning(pseudo_dir, threshold)
    if warning is None:
        return
    if allow:
        print(f"warning: {warning}; training the segmentation network on them anyway (--allow-degenerate-masks)",
              file=sys.stderr)
        return
    foreground, total = pseudo_mask_foreground(pseudo_dir)
    raise DegenerateMasksError(
        f"degenerate pseudo masks: {100 * foreground / total:.2f}% of their {total} labelled pixels are foreground "
        f"(the pipeline stops below {100 * LOW_FOREGROUND:.0f}% and above {100 * HIGH_FOREGROUND:.0f}%, before the "
        f"segmentation stage). {warning[0].upper()}{warning[1:]}. Then rerun the same command: the complete stages "
        "are skipped and those a changed setting depends on are redone. To train the segmentation network on these "
        "masks anyway, add --allow-degenerate-masks (Python: run_pipeline(..., allow_degenerate_masks=True))")
