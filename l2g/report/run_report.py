"""The report of one pipeline run (``l2g run``): ``index.html`` + ``report.md`` + PNGs, viewable offline.

Sections: summary (pseudo-label and segmentation mIoU), the pseudo-label threshold curve, training-split
examples (image | ground truth | attention map | pseudo mask | predicted mask, with the attention colour
bar), validation examples (image | ground truth | predicted mask), a per-class IoU table (pseudo labels on
train, segmentation on val), the training curves of both stages, the config, and the provenance (commit,
seed, libraries, machine, the devices and minutes of each stage). Examples are chosen per split by
:func:`l2g.report.examples.choose_examples`, scored by the per-image mIoU of the pseudo masks (train) and
of the predicted masks (val). Missing pieces (a stage not run, an unreadable file) become marked
placeholders, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml

from l2g.config import Config, to_dict
from l2g.data.cam_files import stack_maps
from l2g.data.images import read_image
from l2g.data.layout import DatasetError, Sample
from l2g.data.palette import colorize, load_mask
from l2g.engine.run_paths import RunFolder
from l2g.report.document import Block, Cell, Code, Details, Document, Figure, Heading, Paragraph, Table
from l2g.report.examples import Example, candidates, choose_examples, image_miou
from l2g.report.formatting import (
    DASH,
    best_entry,
    describe_threshold,
    format_minutes,
    format_percent,
    format_threshold,
    hex_colour,
)
from l2g.report.html_report import class_caption, example_file, read_maps, training_blocks
from l2g.report.plots import (
    Panel,
    attention_overlay,
    plot_panels,
    plot_threshold_curve,
    read_or_none,
)
from l2g.report.provenance import provenance_rows


@dataclass(frozen=True)
class RunPaths:
    """The two runs a report shows (their files: :class:`l2g.engine.run_paths.RunFolder`)."""

    cls: RunFolder
    seg: RunFolder


def _json_or_none(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stage_rows(paths: RunPaths) -> list[list[str]]:
    """The device and training minutes of each stage, and how the segmentation network was initialised."""
    rows = []
    for title, run in (("classification", paths.cls), ("segmentation", paths.seg)):
        metrics = _json_or_none(run.metrics) or {}
        rows.append([f"{title} device", str(metrics.get("device", DASH))])
        rows.append([f"{title} training (min)", format_minutes(metrics.get("minutes"))])
    init = _json_or_none(paths.seg.init) or {}
    pretrained = init.get("pretrained")
    rows.append(["segmentation init", DASH if not init else "from scratch" if pretrained is None else
                 f"{pretrained['dataset']} weights {pretrained['path']} (sha256 {pretrained['sha256'][:12]}, "
                 f"{pretrained['tensors_loaded']}/{pretrained['tensors_in_network']} tensors)"])
    return rows


def _predict_masks(config: Config, paths: RunPaths, samples: list[Sample]) -> list[np.ndarray | None]:
    """Predicted masks of the samples with the run's final segmentation network, or None each."""
    from l2g.segmentation.inference import segment
    from l2g.segmentation.loading import load_seg_checkpoint

    try:
        model, _ = load_seg_checkpoint(paths.seg.final, config.seg,
                                       config.data.num_classes + 1)
    except (FileNotFoundError, ValueError):
        return [None] * len(samples)
    masks = []
    for sample in samples:
        image = read_or_none(partial(read_image, view=sample.view), sample.image_path)
        masks.append(None if image is None else segment(model, image, config, torch.device("cpu")).mask)
    return masks


def _attention(paths: RunPaths, sample: Sample, image: np.ndarray | None) -> np.ndarray | None:
    cams = read_maps(paths.cls.cams, sample.image_id)
    if cams is None or image is None:
        return None
    try:
        maps, _ = stack_maps(cams, image.shape[:2], resize=True)
    except (ValueError, TypeError):
        return None
    return attention_overlay(image, maps)


def _colour(mask: np.ndarray | None) -> np.ndarray | None:
    return None if mask is None else colorize(mask)


def mask_scores(samples: list[Sample], masks_of: Callable[[Sample], Path]) -> dict[str, float]:
    """Per-image mIoU of the masks ``masks_of(sample)`` (a path) against the ground truth."""
    scores = {}
    for sample in samples:
        truth, mask = read_or_none(load_mask, sample.mask_path), read_or_none(load_mask, masks_of(sample))
        if truth is not None and mask is not None and mask.shape == truth.shape:
            score = image_miou(mask, truth)
            if score is not None:
                scores[sample.image_id] = score
    return scores


def _choose(config: Config, samples: list[Sample], count: int, scores: dict[str, float]) -> list[Example[Sample]]:
    from l2g.data.splits import dataset_class_names

    names = dataset_class_names(config)
    return choose_examples(samples, lambda s: s.labels, lambda s: s.image_id, count, scores,
                           lambda c: names[c] if 0 <= c < len(names) else f"class {c}")


def _example_section(out_dir: Path, config: Config, paths: RunPaths, kind: str, split: str, samples: list[Sample],
                     count: int, threshold: float | None, class_names: list[str]) -> list[Block]:
    val = config.seg.val_split
    heading = (f"Training images ({split} split)" if kind == "train" else f"Validation images ({split} split)"
               if split == val else f"Predicted masks ({split} split: there is no {val} split)")
    blocks: list[Block] = [Heading(heading)]
    if not samples:
        return [*blocks, Paragraph("No images.")]
    masked = any(sample.mask_path is not None for sample in samples)
    if kind == "train":
        scores = mask_scores(samples, lambda s: paths.cls.pseudo / f"{s.image_id}.png")
        blocks.append(Paragraph("Scored by the per-image mIoU of the pseudo masks." if masked else
                                "No image of this split has a mask: one image per class is shown, unscored.",
                                note=True))
    else:
        scores = mask_scores(samples, lambda s: paths.seg.prediction(split, s.image_id))
        blocks.append(Paragraph("Scored by the per-image mIoU of the predicted masks (l2g seg eval)." if masked else
                                "No image of this split has a mask: the predicted masks are shown, unscored.",
                                note=True))
    examples = _choose(config, samples, count, scores)
    chosen = [e.item for e in examples]
    predicted = (_predict_masks(config, paths, chosen) if kind == "train" else
                 [read_or_none(load_mask, paths.seg.prediction(split, s.image_id)) for s in chosen])
    used: set[str] = set()
    for example, prediction in zip(examples, predicted, strict=True):
        sample = example.item
        image = read_or_none(partial(read_image, view=sample.view), sample.image_path)
        truth = "missing" if sample.mask_path is not None else "no mask"
        panels: list[Panel] = [(image, "image", "missing"),
                               (_colour(read_or_none(load_mask, sample.mask_path)), "ground truth", truth)]
        if kind == "train":
            pseudo_title = "pseudo mask" + (f" @ {threshold:.2f}" if threshold is not None else "")
            panels += [(_attention(paths, sample, image), "attention map", "missing"),
                       (_colour(read_or_none(load_mask, paths.cls.pseudo / f"{sample.image_id}.png")), pseudo_title,
                        "missing")]
        panels.append((_colour(prediction), "predicted mask", "missing"))
        file = example_file(kind, sample.image_id, used)
        plot_panels(out_dir / file, panels, colorbar=kind == "train")
        blocks += [Heading(sample.image_id, 3), class_caption(sample.labels, class_names, example.reason),
                   Figure(file, sample.image_id)]
    return blocks


def _samples(config: Config, split: str) -> list[Sample]:
    """The split's images the examples are chosen from (at most MAX_CANDIDATES, spread over it), with their
    masks where they have them."""
    from l2g.data.splits import split_samples

    try:
        return candidates(split_samples(config, split, check_images="exists"))
    except (DatasetError, FileNotFoundError):
        return []


def write_run_report(out_dir: str | Path, config: Config, cls_run: str | Path, seg_run: str | Path,
                     num_examples: int = 4, title: str = "l2g run report") -> Path:
    """Write the report into ``out_dir``; returns its ``index.html``."""
    from l2g.segmentation.registry import SEG_ARCHS

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = RunPaths(RunFolder(Path(cls_run)), RunFolder(Path(seg_run)))
    sweep = _json_or_none(paths.cls.sweep) or {}
    evaluation = _json_or_none(paths.seg.evaluation(config.seg.val_split)) or {}
    pseudo_best = best_entry(sweep) or {}
    chosen = _json_or_none(paths.cls.threshold) or {}
    threshold = (config.eval.threshold if config.eval.threshold is not None
                 else chosen.get("threshold", pseudo_best.get("threshold")))
    val_split = evaluation.get("split", config.seg.val_split)
    pseudo_rows = (f", {sweep['images']} images with masks" if sweep.get("images") and chosen.get("rule") == "masks"
                   and sweep["images"] < chosen.get("images", 0) else "")
    no_masks = "no masks"
    doc = Document(title)
    doc.add(Heading("Summary"), Table(["Result", "Background threshold", "mIoU (%)", "Pixel accuracy (%)"], [
        [f"pseudo masks ({config.method.name}), {config.cams.split} split{pseudo_rows}", format_threshold(threshold),
         format_percent(pseudo_best.get("miou")) if sweep or not chosen else no_masks,
         format_percent(pseudo_best.get("pixel_accuracy"))],
        [f"{SEG_ARCHS[config.seg.arch].title}, {val_split} split", DASH,
         no_masks if evaluation and evaluation.get("miou") is None else format_percent(evaluation.get("miou")),
         format_percent(evaluation.get("pixel_accuracy"))],
    ]))
    if chosen:
        doc.add(Paragraph(f"Threshold: {describe_threshold(chosen)}.", note=True))
    if sweep:
        plot_threshold_curve(out_dir / "threshold_curve.png", [(config.method.name, sweep)])
        doc.add(Heading("Pseudo-label mIoU vs background threshold"), Figure("threshold_curve.png", "threshold curve"))

    names = evaluation.get("class_names") or pseudo_best.get("class_names") or []
    class_names = names or ["background"]
    for kind, split in (("train", config.cams.split), ("val", val_split)):
        doc.add(*_example_section(out_dir, config, paths, kind, split, _samples(config, split), num_examples,
                                  threshold, class_names))

    def column(source: dict, key: str) -> list:
        return source.get(key) or [None] * len(names)

    doc.add(Heading("Per-class results (%)"), Table(
        ["Class", f"Pseudo-label IoU ({config.cams.split})", f"Segmentation IoU ({config.seg.val_split})",
         "Segmentation precision", "Segmentation recall"],
        [[Cell(name, swatch=hex_colour(i)), *(format_percent(column(source, key)[i]) for source, key in (
            (pseudo_best, "iou"), (evaluation, "iou"), (evaluation, "precision"), (evaluation, "recall")))]
         for i, name in enumerate(names)]))
    doc.add(*training_blocks(out_dir, [("classification stage", paths.cls.train_log),
                                       ("segmentation stage", paths.seg.train_log)]))
    doc.add(Heading("Config"), Details("The run's config (YAML)", [
        Code(yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None, width=100), "yaml")]))
    doc.add(Heading("Provenance"), Table(["", "value"], provenance_rows([config.seed], [paths.cls.root, paths.seg.root])
                                         + stage_rows(paths), "What produced this report.", text=True))
    return doc.write(out_dir)
