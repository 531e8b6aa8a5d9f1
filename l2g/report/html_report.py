"""An offline report comparing methods (the synthetic demo's): ``index.html`` + ``report.md`` + PNGs.

Top to bottom: the summary table (best background threshold, pseudo-label mIoU, pixel accuracy, training
and total minutes per method), tables the caller adds (the demo: attention on object parts, attention
transfer, DeepLab on the pseudo masks), the mIoU-vs-threshold curve, example panels (image, ground truth
and, per method, its attention heat map with a colour bar and its pseudo mask at its best threshold),
the per-class IoU / precision / recall table, the training curves (losses on a log axis, kt_stuck), the
config (what differs between methods, then what they share) and the provenance (commit, seed, torch,
machine). Every table is one :class:`~l2g.report.document.Table`, rendered to both files.

Examples are chosen by :func:`l2g.report.examples.choose_examples`: one typical image per class and the
hardest images, scored by the per-image mIoU of the best method's pseudo masks.

Robustness is part of the contract: a method without a sample's attention file, an unreadable image or
mask, a sweep with ``None``/NaN values or no best entry, and an unreadable training log all give a
marked placeholder ("missing", "–") instead of an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import yaml

from l2g.config import flatten, unflatten
from l2g.data.cam_files import stack_maps
from l2g.data.images import read_image
from l2g.data.palette import colorize, load_mask
from l2g.engine.file_names import safe_filename
from l2g.evaluation.sweep import pseudo_label
from l2g.report.document import Block, Cell, Code, Details, Document, Figure, Heading, Paragraph, Table
from l2g.report.examples import Example, candidates, choose_examples, image_miou
from l2g.report.formatting import (
    DASH,
    best_entry,
    format_minutes,
    format_percent,
    format_threshold,
    hex_colour,
    number,
    pick,
)
from l2g.report.plots import (
    Panel,
    attention_overlay,
    logs_with,
    plot_kt_stuck,
    plot_losses,
    plot_panels,
    plot_threshold_curve,
    read_or_none,
)
from l2g.report.provenance import provenance_rows

CURVE_FILE = "threshold_curve.png"
LOSSES_FILE = "losses.png"
STUCK_FILE = "kt_stuck.png"
CLASS_TABLE_NOTE = "IoU / precision / recall in %; the best IoU of each class is bold."
SUMMARY_NOTE = ("Training: minutes of the classification network's training (train_metrics.json). Total: "
                "minutes of training, attention maps and threshold sweep in the invocation that made them "
                "(a step skipped on a rerun counts zero).")


@dataclass
class MethodResult:
    """One method's results: its attention maps on disk, its threshold sweep, optional log and config."""

    name: str
    title: str
    cams_dir: Path
    sweep: dict
    minutes: float | None = None  # training minutes
    train_log: Path | None = None
    total_minutes: float | None = None  # training + maps + sweep
    config: dict | None = None  # the run's config as plain dicts (l2g.config.to_dict)


@dataclass
class ReportSample:
    """One image the report may show; ``labels`` are 0-based foreground class indices."""

    image_id: str
    image_path: Path
    mask_path: Path | None
    labels: tuple[int, ...]
    view: str = "stored"  # how the image is read (l2g.data.sample.Sample.view)


# --- attention maps ----------------------------------------------------------------------------------


def maps_file(cams_dir: Path, image_id: str) -> Path:
    """Where ``l2g cams`` keeps an image's maps (the one place the report names that file)."""
    from l2g.data.cam_files import cams_filename

    return Path(cams_dir) / cams_filename(image_id)


def read_maps(cams_dir: Path, image_id: str) -> dict[int, np.ndarray] | None:
    """An image's {class index: map} through :func:`l2g.data.cam_files.load_cams` (l2g's ``.npz``, or a
    dict ``.npy`` through its restricted unpickler); None when missing or unreadable."""
    from l2g.data.cam_files import load_cams

    try:
        return load_cams(cams_dir, image_id).as_dict()
    except (OSError, ValueError):
        return None


def pseudo_mask(method: MethodResult, image_id: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The method's pseudo mask of an image at its best threshold, None when maps or threshold lack."""
    cams = read_maps(method.cams_dir, image_id)
    threshold = number((best_entry(method.sweep) or {}).get("threshold"))
    if cams is None or threshold is None:
        return None
    try:
        maps, values = stack_maps(cams, shape, resize=True)
        return pseudo_label(maps, values, threshold)
    except (ValueError, TypeError):
        return None


def pseudo_mask_scores(method: MethodResult, samples: Sequence[ReportSample]) -> dict[str, float]:
    """Per-image mIoU of the method's pseudo masks against the ground truth (images lacking either left out)."""
    scores = {}
    for sample in samples:
        truth = read_or_none(load_mask, sample.mask_path)
        mask = None if truth is None else pseudo_mask(method, sample.image_id, truth.shape)
        score = None if mask is None else image_miou(mask, truth)
        if score is not None:
            scores[sample.image_id] = score
    return scores


# --- tables ----------------------------------------------------------------------------------------


def summary_table(methods: list[MethodResult]) -> Table:
    rows = []
    for method in methods:
        best = best_entry(method.sweep) or {}
        rows.append([method.title, format_threshold(best.get("threshold")), format_percent(best.get("miou")),
                     format_percent(best.get("pixel_accuracy")), format_minutes(method.minutes),
                     format_minutes(method.total_minutes)])
    return Table(["Method", "Best threshold", "mIoU (%)", "Pixel accuracy (%)", "Training (min)", "Total (min)"],
                 rows, SUMMARY_NOTE)


def _class_cell(best: dict | None, index: int) -> tuple[str, float | None]:
    if best is None:
        return f"{DASH} / {DASH} / {DASH}", None
    iou = pick(best.get("iou"), index)
    parts = [format_percent(v) for v in (iou, pick(best.get("precision"), index), pick(best.get("recall"), index))]
    return " / ".join(parts), number(iou)


def class_table(methods: list[MethodResult], class_names: list[str]) -> Table:
    """Per class (with its colour): one "IoU / P / R" cell per method, the best IoU of the row in bold."""
    bests = [best_entry(m.sweep) for m in methods]
    rows = []
    for index, name in enumerate(class_names):
        cells = [_class_cell(best, index) for best in bests]
        scored = [(iou, j) for j, (_, iou) in enumerate(cells) if iou is not None]
        winner = max(scored)[1] if len(scored) > 1 else None
        rows.append([Cell(name, swatch=hex_colour(index)),
                     *(Cell(text, bold=j == winner) for j, (text, _) in enumerate(cells))])
    return Table(["Class", *(f"{m.title}: IoU / P / R (%)" for m in methods)], rows, CLASS_TABLE_NOTE)


def config_blocks(configs: list[tuple[str, dict]]) -> list[Block]:
    """The keys whose values differ between the runs (a table), then the settings they share (YAML)."""
    if not configs:
        return []
    flats = [(title, flatten(config)) for title, config in configs]
    keys = list(dict.fromkeys(k for _, flat in flats for k in flat))
    missing = object()
    differing = [k for k in keys if len({repr(flat.get(k, missing)) for _, flat in flats}) > 1]
    blocks: list[Block] = [Heading("Config")]
    if len(configs) > 1:
        rows = [[key, *(DASH if key not in flat else yaml.safe_dump(flat[key], default_flow_style=True).strip()
                        .removesuffix("...").strip() for _, flat in flats)] for key in differing]
        blocks.append(Table(["Key", *(title for title, _ in flats)], rows,
                            "The only keys whose values differ between the methods' runs.", text=True))
    shared = unflatten({k: v for k, v in flats[0][1].items() if k not in differing})
    text = yaml.safe_dump(shared, sort_keys=False, default_flow_style=None, width=100)  # short lists on one line
    summary = "Settings shared by every run (YAML)" if len(configs) > 1 else "Settings (YAML)"
    blocks.append(Details(summary, [Code(text, "yaml")]))
    return blocks


def provenance_table(seeds: Sequence[int], runs: Sequence[Path] = ()) -> Table:
    return Table(["", "value"], provenance_rows(list(seeds), list(runs)),
                 "What produced this report. Results of the synthetic benchmark hold per machine and per seed.",
                 text=True)


# --- examples --------------------------------------------------------------------------------------


def _method_panels(method: MethodResult, sample: ReportSample, image: np.ndarray | None,
                   shape: tuple[int, int] | None) -> list[Panel]:
    attention_title, mask_title = f"{method.title}\nattention", f"{method.title}\npseudo mask"
    cams = read_maps(method.cams_dir, sample.image_id)
    if cams is None or shape is None:
        reason = "missing" if cams is None else "no image"
        return [(None, attention_title, reason), (None, mask_title, reason)]
    threshold = number((best_entry(method.sweep) or {}).get("threshold"))
    try:
        maps, values = stack_maps(cams, shape, resize=True)
        mask = None if threshold is None else colorize(pseudo_label(maps, values, threshold))
    except (ValueError, TypeError):
        return [(None, attention_title, "unreadable"), (None, mask_title, "unreadable")]
    overlay = attention_overlay(image, maps) if image is not None else None
    if mask is None:
        return [(overlay, attention_title, "no image"), (None, mask_title, "no best threshold")]
    return [(overlay, attention_title, "no image"), (mask, f"{mask_title} @ {threshold:.2f}", "")]


def plot_example(path: Path, sample: ReportSample, methods: list[MethodResult]) -> Path:
    """One row: image | ground truth | per method: attention, pseudo mask | attention colour bar."""
    image = read_or_none(partial(read_image, view=sample.view), sample.image_path)
    truth = read_or_none(load_mask, sample.mask_path)
    shape = image.shape[:2] if image is not None else (truth.shape if truth is not None else None)
    panels: list[Panel] = [
        (image, "image", "missing"),
        (colorize(truth) if truth is not None else None, "ground truth",
         "no ground truth" if sample.mask_path is None else "missing"),
    ]
    for method in methods:
        panels += _method_panels(method, sample, image, shape)
    return plot_panels(path, panels, colorbar=bool(methods))


def example_file(kind: str, image_id: str, used: set[str]) -> str:
    """A distinct ``<kind>_<id>.png`` name (a numeric suffix resolves collisions of cleaned ids)."""
    stem = f"{kind}_{safe_filename(image_id)}"
    name, count = f"{stem}.png", 1
    while name in used:
        count += 1
        name = f"{stem}_{count}.png"
    used.add(name)
    return name


def class_caption(labels: Sequence[int], class_names: list[str], reason: str) -> Paragraph:
    """'classes: ■ ant, ■ bee — chosen: typical ant ...' with the classes' colour swatches."""
    parts: list[str | Cell] = ["classes: "]
    for number_, label in enumerate(labels):
        name = class_names[label + 1] if 0 <= label + 1 < len(class_names) else f"class {label}"
        parts += ([", "] if number_ else []) + [Cell(name, swatch=hex_colour(label + 1))]
    if not labels:
        parts.append(DASH)
    parts.append(f" — chosen as {reason}")
    return Paragraph(parts, note=True)


def example_blocks(out_dir: Path, methods: list[MethodResult], examples: list[Example[ReportSample]],
                   class_names: list[str]) -> list[Block]:
    blocks: list[Block] = [Heading("Examples")]
    if not examples:
        return [*blocks, Paragraph("No examples.")]
    blocks.append(Paragraph("One typical image per class (the median per-image mIoU among the images holding "
                            "it) and the hardest images (the lowest), scored by the pseudo masks of the "
                            "method with the best mIoU. The attention panels blend the colour bar's colour "
                            "50/50 over the image.", note=True))
    used: set[str] = set()
    for example in examples:
        sample = example.item
        file = example_file("example", sample.image_id, used)
        plot_example(out_dir / file, sample, methods)
        blocks += [Heading(sample.image_id, 3), class_caption(sample.labels, class_names, example.reason),
                   Figure(file, sample.image_id)]
    return blocks


def choose_report_examples(methods: list[MethodResult], samples: list[ReportSample], class_names: list[str],
                           count: int) -> list[Example[ReportSample]]:
    """Examples scored by the pseudo masks of the method with the best mIoU (see the module docstring)."""
    samples = candidates(samples)
    ranked = [m for m in methods if number((best_entry(m.sweep) or {}).get("miou")) is not None]
    reference = max(ranked, key=lambda m: number(best_entry(m.sweep)["miou"])) if ranked else None
    scores = pseudo_mask_scores(reference, samples) if reference is not None else {}

    def name(label: int) -> str:
        return class_names[label + 1] if 0 <= label + 1 < len(class_names) else f"class {label}"

    return choose_examples(samples, lambda s: s.labels, lambda s: s.image_id, count, scores, name)


# --- the document ----------------------------------------------------------------------------------


def training_blocks(out_dir: Path, logs: list[tuple[str, Path | None]]) -> list[Block]:
    """Loss curves (log axis) and, for runs that log it, kt_stuck."""
    if not any(log is not None for _, log in logs):
        return []
    plot_losses(out_dir / LOSSES_FILE, logs)
    blocks: list[Block] = [Heading("Training"),
                           Figure(LOSSES_FILE, "training losses", "Loss terms of train_log.jsonl on a log axis.")]
    stuck = logs_with(logs, "kt_stuck")
    if stuck:
        plot_kt_stuck(out_dir / STUCK_FILE, stuck)
        blocks.append(Figure(STUCK_FILE, "kt_stuck", "kt_stuck: the share of pixels the local network teaches a "
                             "class where the global softmax is >= 0.999 sure of another channel; l2g train "
                             "warns when it stays at 0.5 or more."))
    return blocks


def write_report(out_dir: Path, methods: list[MethodResult], samples: list[ReportSample], class_names: list[str],
                 *, title: str = "l2g report", num_examples: int = 6, notes: list[str] | None = None,
                 tables: Sequence[tuple[str, Table]] = (), seeds: Sequence[int] = (),
                 runs: Sequence[Path] = ()) -> Path:
    """Write ``index.html``, ``report.md`` and their PNGs into ``out_dir``; return the index.html path.

    ``class_names`` starts with "background". ``tables`` are (heading, table) sections shown after the
    summary. ``num_examples`` images are chosen from ``samples`` (see :func:`choose_report_examples`).
    ``seeds`` and the training ``runs`` (their train_metrics.json: device, commit) go into the provenance.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = Document(title, [Paragraph(str(note)) for note in notes or []])
    doc.add(Heading("Summary"), summary_table(methods))
    for heading, table in tables:
        doc.add(Heading(heading), table)
    plot_threshold_curve(out_dir / CURVE_FILE, [(m.title, m.sweep) for m in methods])
    doc.add(Heading("mIoU vs background threshold"), Figure(CURVE_FILE, "threshold curve"))
    examples = choose_report_examples(methods, samples, class_names, max(num_examples, 0))
    doc.add(*example_blocks(out_dir, methods, examples, class_names))
    doc.add(Heading("Per-class results at each method's best threshold"), class_table(methods, class_names))
    doc.add(*training_blocks(out_dir, [(m.title, m.train_log) for m in methods]))
    doc.add(*config_blocks([(m.title, m.config) for m in methods if m.config is not None]))
    doc.add(Heading("Provenance"), provenance_table(seeds, runs))
    return doc.write(out_dir)
