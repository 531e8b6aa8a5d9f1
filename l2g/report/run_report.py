"""The report of one pipeline run (``l2g run``): ``index.html`` + ``report.md`` + PNGs, viewable offline.

Sections: summary (pseudo-label and segmentation mIoU), the pseudo-label threshold curve, training-split
examples (image | ground truth | attention map | pseudo mask | predicted mask), validation examples
(image | ground truth | predicted mask), a per-class IoU table (pseudo labels on train, segmentation on
val), the loss curves of both training stages, the config and the environment (versions, device).
Missing pieces (a stage not run, an unreadable file) become marked placeholders, never an exception.
"""

from __future__ import annotations

import html
import json
import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import yaml

from l2g.config import Config, to_dict
from l2g.data.images import read_image
from l2g.data.palette import colorize, load_mask
from l2g.data.voc_layout import DatasetError, Sample
from l2g.engine.atomic import write_text
from l2g.report.html_report import (
    DASH,
    DPI,
    PANEL_INCHES,
    MethodResult,
    attention_overlay,
    best_entry,
    format_percent,
    format_threshold,
    html_document,
    html_table,
    img_tag,
    load_cams,
    md_escape,
    md_table,
    plot_losses,
    plot_threshold_curve,
    read_or_none,
    safe_filename,
    save_and_close,
    show_picture,
    stack_resized_maps,
)


@dataclass
class RunPaths:
    """Where a pipeline run keeps what the report shows."""

    cls_run: Path
    seg_run: Path

    @property
    def sweep(self) -> Path:
        return self.cls_run / "sweep.json"

    @property
    def cams(self) -> Path:
        return self.cls_run / "cams"

    @property
    def pseudo(self) -> Path:
        return self.cls_run / "pseudo"


def _json_or_none(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def environment(paths: RunPaths) -> list[list[str]]:
    """(name, value) rows: Python, platform, library versions, CPU threads, and the devices the stages used."""
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    rows = [["python", sys.version.split()[0]], ["platform", platform.platform()],
            ["torch", torch.__version__], ["torchvision", version("torchvision")], ["numpy", np.__version__],
            ["pydensecrf2", version("pydensecrf2")], ["CPU cores", str(os.cpu_count())],
            ["torch threads", str(torch.get_num_threads())],
            ["CUDA", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"]]
    for title, run in (("classification", paths.cls_run), ("segmentation", paths.seg_run)):
        metrics = _json_or_none(run / "train_metrics.json") or {}
        rows.append([f"{title} device", str(metrics.get("device", DASH))])
        rows.append([f"{title} training minutes", f"{metrics['minutes']:.1f}" if "minutes" in metrics else DASH])
    init = _json_or_none(paths.seg_run / "init.json") or {}
    pretrained = init.get("pretrained")
    rows.append(["segmentation init", DASH if not init else "from scratch" if pretrained is None else
                 f"{pretrained['dataset']} weights {pretrained['path']} (sha256 {pretrained['sha256'][:12]}, "
                 f"{pretrained['tensors_loaded']}/{pretrained['tensors_in_network']} tensors)"])
    return rows


def _predict_panels(config: Config, paths: RunPaths, samples: list[Sample]) -> list[np.ndarray | None]:
    """Predicted masks (colourised) of the samples with the run's final segmentation network, or None each."""
    from l2g.segmentation.inference import segment
    from l2g.segmentation.models import load_seg_checkpoint

    try:
        model, _ = load_seg_checkpoint(paths.seg_run / "checkpoints" / "final.pt", config.seg,
                                       config.data.num_classes + 1)
    except (FileNotFoundError, ValueError):
        return [None] * len(samples)
    pictures = []
    for sample in samples:
        image = read_or_none(read_image, sample.image_path)
        pictures.append(None if image is None else colorize(segment(model, image, config, torch.device("cpu")).mask))
    return pictures


def _attention(paths: RunPaths, sample: Sample, image: np.ndarray | None) -> np.ndarray | None:
    cams = load_cams(paths.cams / f"{sample.image_id}.npy")
    if cams is None or image is None:
        return None
    try:
        maps, _ = stack_resized_maps(cams, image.shape[:2])
    except (ValueError, TypeError):
        return None
    return attention_overlay(image, maps)


def _plot_row(path: Path, panels: list[tuple[np.ndarray | None, str]]) -> None:
    fig, axes = plt.subplots(1, len(panels), figsize=(PANEL_INCHES * len(panels), PANEL_INCHES * 1.05), dpi=DPI,
                             squeeze=False)
    for ax, (picture, title) in zip(axes[0], panels, strict=True):
        show_picture(ax, picture, title)
    save_and_close(fig, path)


def _colour_mask(path: Path | None) -> np.ndarray | None:
    mask = read_or_none(load_mask, path)
    return None if mask is None else colorize(mask)


def _example_rows(out_dir: Path, config: Config, paths: RunPaths, train: list[Sample], val: list[Sample],
                  threshold: float | None) -> tuple[list[str], list[str]]:
    html_parts, md_parts = [], []
    sections = [("train", f"Training images ({config.cams.split} split)", train),
                ("val", f"Validation images ({config.seg.val_split} split)", val)]
    for kind, heading, samples in sections:
        html_parts.append(f"<h2>{html.escape(heading)}</h2>")
        md_parts += [f"## {md_escape(heading)}", ""]
        if not samples:
            html_parts.append("<p>No images.</p>")
            md_parts += ["No images.", ""]
            continue
        predicted = (_predict_panels(config, paths, samples) if kind == "train" else
                     [_colour_mask(paths.seg_run / "predictions" / config.seg.val_split / f"{s.image_id}.png")
                      for s in samples])
        for sample, prediction in zip(samples, predicted, strict=True):
            image = read_or_none(read_image, sample.image_path)
            panels = [(image, "image"), (_colour_mask(sample.mask_path), "ground truth")]
            if kind == "train":
                pseudo_title = "pseudo mask" + (f" @ {threshold:.2f}" if threshold is not None else "")
                panels += [(_attention(paths, sample, image), "attention map"),
                           (_colour_mask(paths.pseudo / f"{sample.image_id}.png"), pseudo_title)]
            panels.append((prediction, "predicted mask"))
            file = f"{kind}_{safe_filename(sample.image_id)}.png"
            _plot_row(out_dir / file, panels)
            html_parts += [f"<h3>{html.escape(sample.image_id)}</h3>", f"<p>{img_tag(file, sample.image_id)}</p>"]
            md_parts += [f"### {md_escape(sample.image_id)}", "", f"![{md_escape(sample.image_id)}]({file})", ""]
    return html_parts, md_parts


def _samples(config: Config, split: str, count: int) -> list[Sample]:
    from l2g.stages.common import split_samples

    try:
        return split_samples(config, split, need_masks=True)[:count]
    except (DatasetError, FileNotFoundError):
        return []


def write_run_report(out_dir: str | Path, config: Config, cls_run: str | Path, seg_run: str | Path,
                     num_examples: int = 4, title: str = "l2g run report") -> Path:
    """Write the report into ``out_dir``; returns its ``index.html``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = RunPaths(Path(cls_run), Path(seg_run))
    sweep = _json_or_none(paths.sweep) or {}
    evaluation = _json_or_none(paths.seg_run / f"eval_{config.seg.val_split}.json") or {}
    pseudo_best = best_entry(sweep) or {}
    threshold = config.eval.threshold if config.eval.threshold is not None else pseudo_best.get("threshold")
    from l2g.segmentation.models import ARCH_TITLES

    summary = [
        [f"pseudo masks ({config.method.name}), {config.cams.split} split", format_threshold(threshold),
         format_percent(pseudo_best.get("miou")), format_percent(pseudo_best.get("pixel_accuracy"))],
        [f"{ARCH_TITLES[config.seg.arch]}, {config.seg.val_split} split", DASH,
         format_percent(evaluation.get("miou")), format_percent(evaluation.get("pixel_accuracy"))],
    ]
    header = ["Result", "Background threshold", "mIoU (%)", "Pixel accuracy (%)"]
    html_parts = [f"<h1>{html.escape(title)}</h1>", "<h2>Summary</h2>", html_table(header, summary)]
    md_parts = [f"# {md_escape(title)}", "", "## Summary", "", md_table(header, summary), ""]

    if sweep:
        plot_threshold_curve(out_dir / "threshold_curve.png", [MethodResult("cls", config.method.name, paths.cams,
                                                                            sweep)])
        html_parts += ["<h2>Pseudo-label mIoU vs background threshold</h2>",
                       f"<p>{img_tag('threshold_curve.png', 'threshold curve')}</p>"]
        md_parts += ["## Pseudo-label mIoU vs background threshold", "", "![threshold curve](threshold_curve.png)", ""]

    train = _samples(config, config.cams.split, num_examples)
    val = _samples(config, config.seg.val_split, num_examples)
    ex_html, ex_md = _example_rows(out_dir, config, paths, train, val, threshold)
    html_parts += ex_html
    md_parts += ex_md

    names = evaluation.get("class_names") or pseudo_best.get("class_names") or []
    rows = [[name, format_percent((pseudo_best.get("iou") or [None] * len(names))[i]),
             format_percent((evaluation.get("iou") or [None] * len(names))[i]),
             format_percent((evaluation.get("precision") or [None] * len(names))[i]),
             format_percent((evaluation.get("recall") or [None] * len(names))[i])] for i, name in enumerate(names)]
    header = ["Class", f"Pseudo-label IoU ({config.cams.split})", f"Segmentation IoU ({config.seg.val_split})",
              "Segmentation precision", "Segmentation recall"]
    html_parts += ["<h2>Per-class results (%)</h2>", html_table(header, rows)]
    md_parts += ["## Per-class results (%)", "", md_table(header, rows), ""]

    logs = [MethodResult(name, title, Path(), {}, train_log=run / "train_log.jsonl")
            for name, title, run in (("cls", "classification stage", paths.cls_run),
                                     ("seg", "segmentation stage", paths.seg_run))]
    plot_losses(out_dir / "losses.png", logs)
    html_parts += ["<h2>Training losses</h2>", f"<p>{img_tag('losses.png', 'training losses')}</p>"]
    md_parts += ["## Training losses", "", "![training losses](losses.png)", ""]

    env = environment(paths)
    config_text = yaml.safe_dump(to_dict(config), sort_keys=False)
    html_parts += ["<h2>Environment</h2>", html_table(["", "value"], env),
                   "<h2>Config</h2>", f"<pre>{html.escape(config_text)}</pre>"]
    md_parts += ["## Environment", "", md_table(["", "value"], env), "", "## Config", "", "```yaml",
                 config_text.rstrip(), "```", ""]
    index = out_dir / "index.html"
    write_text(index, html_document(title, html_parts))  # atomic: a reader never sees half a report
    write_text(out_dir / "report.md", "\n".join(md_parts))
    return index
