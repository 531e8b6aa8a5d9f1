"""Stage 6: evaluate a trained segmentation network on a split with ground truth -> ``<run>/eval_<split>.json``.

Same evaluator as the pseudo labels (:class:`l2g.evaluation.confusion.ConfusionMatrix`: one confusion
matrix over the whole split, 255 ignored): mIoU, per-class IoU / precision / recall, pixel accuracy.
Predicted masks are written to ``<run>/predictions/<split>/<id>.png`` (VOC palette) for inspection.
Under torchrun each process segments its share of the images; the confusion matrices are summed and
rank 0 writes the metrics, the same numbers and files as one process.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tqdm import tqdm

from l2g.config import Config
from l2g.data.images import read_image, read_mask
from l2g.data.palette import save_mask
from l2g.engine import distributed
from l2g.engine.run_paths import RunFolder
from l2g.evaluation.confusion import ConfusionMatrix
from l2g.segmentation.crf import crf_params
from l2g.segmentation.inference import segment
from l2g.segmentation.loading import load_seg_checkpoint
from l2g.stages.common import set_threads, split_listed, split_samples, write_json


def evaluate_segmentation(config: Config, run_dir: str | Path, *, split: str | None = None,
                          checkpoint: str | Path | None = None, out_path: str | Path | None = None,
                          crf: bool | None = None, progress: bool = True, without_masks: str = "error") -> dict:
    """Evaluate and return the metrics dict (also written as JSON); ``crf`` overrides ``seg.crf.enabled``.

    ``without_masks="error"``: every image of the split needs a mask. ``"predict"`` (``l2g run``): the images
    with masks are scored, every image is segmented, and a split without any mask gives predictions only
    (``miou`` None); a split that is not listed at all is replaced by ``cams.split`` (the images the
    network was trained on: still worth looking at), which the metrics' ``split`` says."""
    run_dir = Path(run_dir)
    split = requested = split or config.seg.val_split
    ctx = distributed.setup(config.device)
    set_threads(config)
    if without_masks == "predict":
        if not split_listed(config, split):
            split = config.cams.split
        samples = distributed.main_first(lambda: split_samples(config, split))
    else:
        samples = distributed.main_first(lambda: split_samples(config, split, need_masks=True))
    checkpoint = Path(checkpoint) if checkpoint else RunFolder(run_dir).final
    model, saved = load_seg_checkpoint(checkpoint, config.seg, config.data.num_classes + 1, ctx.device)
    use_crf = config.seg.crf.enabled if crf is None else crf
    matrix = ConfusionMatrix(config.data.num_classes + 1)
    predictions = RunFolder(run_dir).predictions(split)
    with distributed.agreed():
        for sample in tqdm(distributed.shard(samples, ctx), desc=f"seg eval {split}",
                           disable=not (progress and ctx.is_main)):
            result = segment(model, read_image(sample.image_path, sample.view), config, ctx.device, crf=use_crf)
            if sample.mask_path is not None:
                matrix.update(result.mask, read_mask(sample.mask_path, config.data.num_classes))
            save_mask(predictions / f"{sample.image_id}.png", result.mask)
    matrix.matrix = sum(distributed.all_gather_object(matrix.matrix))  # counts of every rank's images
    scored = sum(sample.mask_path is not None for sample in samples)
    metrics = matrix.metrics(saved["class_names"]) if scored else {"miou": None, "class_names": saved["class_names"]}
    metrics.update({
        "split": split, "images": len(samples), "images_scored": scored, "checkpoint": str(checkpoint),
        "arch": config.seg.arch,
        "test_scales": list(config.seg.test_scales), "test_flip": config.seg.test_flip,
        "crf": dataclasses.asdict(crf_params(config.seg.crf)) if use_crf else None,
        "max_side": config.seg.max_side, "predictions": str(predictions),
    })
    if ctx.is_main:
        write_json(out_path or run_dir / f"eval_{requested}.json", metrics)
    distributed.barrier()
    return metrics


def format_metrics(metrics: dict) -> str:
    """A per-class IoU table (percent) followed by mIoU and pixel accuracy, for the terminal."""
    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    lines = [f"{'class':<16}{'IoU':>7}{'prec.':>7}{'recall':>7}"]
    for name, iou, precision, recall in zip(metrics["class_names"], metrics["iou"], metrics["precision"],
                                            metrics["recall"], strict=True):
        lines.append(f"{name:<16}{percent(iou):>7}{percent(precision):>7}{percent(recall):>7}")
    lines.append(f"{'mIoU':<16}{percent(metrics['miou']):>7}")
    lines.append(f"{'pixel accuracy':<16}{percent(metrics['pixel_accuracy']):>7}")
    return "\n".join(lines)
