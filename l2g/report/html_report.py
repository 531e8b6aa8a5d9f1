"""An offline report of a comparison run: one ``index.html`` (plus ``report.md``) and PNGs beside it.

The report shows, top to bottom: the summary table (best background threshold, pseudo-label mIoU and
pixel accuracy per method), the mIoU-vs-threshold curve, example panels (image, ground truth and, per
method, its attention heat map and pseudo mask at its best threshold), the per-class IoU / precision /
recall table, the training loss curves and the run's config. Everything is local: images are linked by
relative file name, there is no JavaScript and no network resource, so the folder can be zipped, copied
and opened anywhere.

Robustness is part of the contract: a method without a sample's attention file, an unreadable image or
mask, a sweep with ``None``/NaN values or no best entry, and an unreadable training log all give a
marked placeholder ("missing", "–") instead of an exception.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from l2g.data import cam_files  # noqa: E402
from l2g.data.images import read_image  # noqa: E402
from l2g.data.palette import colorize, load_mask, voc_palette  # noqa: E402
from l2g.engine.atomic import save_figure, write_text  # noqa: E402
from l2g.evaluation.sweep import pseudo_label  # noqa: E402

DASH = "–"
PANEL_INCHES = 2.0
DPI = 80
CURVE_FILE = "threshold_curve.png"
LOSSES_FILE = "losses.png"
CLASS_TABLE_NOTE = "IoU / precision / recall in %; the cell with the best IoU of each class is bold."

CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f2f2f2; }
td.name, th.name { text-align: left; }
.swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #888;
          vertical-align: middle; margin-right: 0.4em; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
.caption { color: #555; font-size: 90%; }
"""


@dataclass
class MethodResult:
    """One method's results: its attention maps on disk, its threshold sweep and optional training log."""

    name: str
    title: str
    cams_dir: Path
    sweep: dict
    minutes: float | None = None
    train_log: Path | None = None


@dataclass
class ReportSample:
    """One image to show in the example panels; ``labels`` are 0-based foreground class indices."""

    image_id: str
    image_path: Path
    mask_path: Path | None
    labels: tuple[int, ...]


# ----------------------------------------------------------------------------------------- formatting


def _number(value: object) -> float | None:
    """``value`` as a finite float, or None for None, NaN, infinities and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def format_percent(value: object) -> str:
    """A fraction in [0, 1] as a percentage with one decimal ("52.3"); "–" when undefined."""
    number = _number(value)
    return DASH if number is None else f"{100.0 * number:.1f}"


def format_threshold(value: object) -> str:
    """A background threshold with two decimals; "–" when undefined."""
    number = _number(value)
    return DASH if number is None else f"{number:.2f}"


def format_minutes(value: object) -> str:
    """Minutes with one decimal; "–" when unknown."""
    number = _number(value)
    return DASH if number is None else f"{number:.1f}"


def _pick(values: object, index: int) -> object:
    """``values[index]`` for a list-like ``values``, None when absent."""
    if isinstance(values, Sequence | np.ndarray) and not isinstance(values, str) and 0 <= index < len(values):
        return values[index]
    return None


def best_entry(sweep: dict) -> dict | None:
    """The sweep's ``best`` entry, or else the per-threshold entry with the highest defined mIoU."""
    best = sweep.get("best")
    if isinstance(best, dict):
        return best
    entries = [e for e in sweep.get("per_threshold") or [] if _number(e.get("miou")) is not None]
    return max(entries, key=lambda e: _number(e["miou"])) if entries else None


def safe_filename(text: str) -> str:
    """``text`` reduced to letters, digits, ``.``, ``-`` and ``_`` so it is a safe file-name part."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "sample"


def _hex_colour(mask_value: int) -> str:
    """The VOC palette colour of a mask value as ``#rrggbb``."""
    r, g, b = (int(c) for c in voc_palette()[mask_value % 256])
    return f"#{r:02x}{g:02x}{b:02x}"


def md_escape(text: str) -> str:
    """Text made safe for Markdown: HTML escaped (renderers pass raw HTML), pipes escaped, one line."""
    return html.escape(str(text)).replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------------------- tables


def summary_rows(methods: list[MethodResult]) -> list[list[str]]:
    """One row per method: title, best threshold, mIoU (%), pixel accuracy (%), minutes."""
    rows = []
    for method in methods:
        best = best_entry(method.sweep) or {}
        rows.append(
            [
                method.title,
                format_threshold(best.get("threshold")),
                format_percent(best.get("miou")),
                format_percent(best.get("pixel_accuracy")),
                format_minutes(method.minutes),
            ]
        )
    return rows


SUMMARY_HEADER = ["Method", "Best threshold", "mIoU (%)", "Pixel accuracy (%)", "Minutes"]


def _class_cell(best: dict | None, index: int) -> tuple[str, float | None]:
    """The "IoU / P / R" text of one class for one method, and its IoU (for highlighting the best)."""
    if best is None:
        return f"{DASH} / {DASH} / {DASH}", None
    iou = _pick(best.get("iou"), index)
    parts = [
        format_percent(v)
        for v in (iou, _pick(best.get("precision"), index), _pick(best.get("recall"), index))
    ]
    return " / ".join(parts), _number(iou)


ClassRow = tuple[str, list[str], int | None]


def class_rows(methods: list[MethodResult], class_names: list[str]) -> list[ClassRow]:
    """Per class: (name, one "IoU / P / R" cell per method, index of the method with the best IoU)."""
    bests = [best_entry(m.sweep) for m in methods]
    rows = []
    for index, name in enumerate(class_names):
        cells, ious = zip(*(_class_cell(best, index) for best in bests), strict=True) if bests else ((), ())
        scored = [(v, i) for i, v in enumerate(ious) if v is not None]
        winner = max(scored)[1] if len(scored) > 1 else None
        rows.append((name, list(cells), winner))
    return rows


def _cell(tag: str, text: str, is_name: bool) -> str:
    """One escaped table cell; name cells are left-aligned."""
    attribute = ' class="name"' if is_name else ""
    return f"<{tag}{attribute}>{html.escape(text)}</{tag}>"


def html_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain HTML table; the first column (names) is left-aligned. Cells are escaped here."""
    head = "".join(_cell("th", h, i == 0) for i, h in enumerate(header))
    body = ["<tr>" + "".join(_cell("td", c, i == 0) for i, c in enumerate(row)) + "</tr>" for row in rows]
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(body) + "\n</table>"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown pipe table."""
    lines = [
        "| " + " | ".join(md_escape(h) for h in header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _class_table_html(methods: list[MethodResult], class_names: list[str]) -> str:
    """The per-class table with a colour swatch per class and the best IoU of each row in bold."""
    head = '<th class="name">Class</th>' + "".join(
        f"<th>{html.escape(m.title)}<br><small>IoU / P / R (%)</small></th>" for m in methods
    )
    body = []
    for index, (name, cells, winner) in enumerate(class_rows(methods, class_names)):
        swatch = f'<span class="swatch" style="background:{_hex_colour(index)}"></span>'
        tds = "".join(
            f"<td><b>{html.escape(c)}</b></td>" if j == winner else f"<td>{html.escape(c)}</td>"
            for j, c in enumerate(cells)
        )
        body.append(f'<tr><td class="name">{swatch}{html.escape(name)}</td>{tds}</tr>')
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(body) + "\n</table>"


def _class_table_md(methods: list[MethodResult], class_names: list[str]) -> str:
    """The per-class table in Markdown; the swatch becomes the colour's hex code."""
    header = ["Class", "Colour"] + [f"{m.title} IoU / P / R (%)" for m in methods]
    rows = [
        [name, f"`{_hex_colour(index)}`", *cells]
        for index, (name, cells, _) in enumerate(class_rows(methods, class_names))
    ]
    return md_table(header, rows)


# ---------------------------------------------------------------------------------------- plots


def _curve_points(sweep: dict) -> tuple[list[float], list[float]]:
    """(thresholds, mIoU in %) of a sweep, NaN where the mIoU is undefined (a gap in the line)."""
    thresholds = [_number(t) for t in sweep.get("thresholds") or []]
    mious = [_number(_pick(sweep.get("miou"), i)) for i in range(len(thresholds))]
    pairs = [
        (t, math.nan if m is None else 100.0 * m)
        for t, m in zip(thresholds, mious, strict=True)
        if t is not None
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_threshold_curve(path: Path, methods: list[MethodResult]) -> Path:
    """Write mIoU (%) vs background threshold, one line per method with its best point marked."""
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for method in methods:
        xs, ys = _curve_points(method.sweep)
        best = best_entry(method.sweep) or {}
        bt, bm = _number(best.get("threshold")), _number(best.get("miou"))
        label = method.title
        if bm is not None:
            label += f" (best {100 * bm:.1f} @ {format_threshold(bt)})"
        (line,) = ax.plot(xs, ys, marker=".", markersize=4, label=label)
        if bt is not None and bm is not None:
            ax.plot(
                [bt],
                [100 * bm],
                marker="o",
                markersize=9,
                color=line.get_color(),
                markeredgecolor="black",
                linestyle="none",
            )
    ax.set_xlabel("background threshold")
    ax.set_ylabel("pseudo-label mIoU (%)")
    ax.set_title("Pseudo-label mIoU vs background threshold")
    ax.grid(True, alpha=0.3)
    if methods:
        ax.legend(fontsize=8, loc="best")
    save_and_close(fig, path)
    return path


def save_and_close(fig: plt.Figure, path: Path) -> None:
    """Save and close a figure (closing keeps memory flat over many calls)."""
    try:
        fig.tight_layout()
        save_figure(path, fig)
    finally:
        plt.close(fig)


def read_train_log(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """Loss curves from a JSON-lines log: {key: (iterations, values)} for every key starting with "loss".

    Unparsable lines and non-numeric values are skipped; a line without "iteration" uses its line number.
    """
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        step = _number(record.get("iteration"))
        step = float(number) if step is None else step
        for key, value in record.items():
            value = _number(value)
            if key.startswith("loss") and value is not None:
                xs, ys = curves.setdefault(key, ([], []))
                xs.append(step)
                ys.append(value)
    return curves


def _message_axis(ax: plt.Axes, text: str) -> None:
    """Turn an axis into a blank panel that only says ``text``."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, color="0.4", transform=ax.transAxes)


def plot_losses(path: Path, methods: list[MethodResult]) -> Path:
    """Write one subplot of loss curves per method that has a training log."""
    logged = [m for m in methods if m.train_log is not None]
    fig, axes = plt.subplots(1, len(logged), figsize=(4.2 * len(logged), 3.4), dpi=90, squeeze=False)
    for ax, method in zip(axes[0], logged, strict=True):
        ax.set_title(method.title, fontsize=10)
        try:
            curves = read_train_log(method.train_log)
        except (OSError, UnicodeDecodeError):
            _message_axis(ax, "log missing")
            continue
        if not curves:
            _message_axis(ax, "no loss values")
            continue
        for key, (xs, ys) in sorted(curves.items()):
            ax.plot(xs, ys, label=key, linewidth=1.2 if key == "loss" else 0.9)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    save_and_close(fig, path)
    return path


# ---------------------------------------------------------------------------------- example panels


def load_cams(path: Path) -> dict[int, np.ndarray] | None:
    """The {fg class index: (H, W) map} dict of the image ``path`` names (``<cams>/<id>.npz``, or its dict
    ``.npy``: :func:`l2g.data.cam_files.load_cams` reads either), or None when missing or unreadable."""
    try:
        return cam_files.load_cams(path.parent, path.stem).as_dict()
    except (OSError, ValueError):
        return None


def _resize_map(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A float map resized bilinearly to ``shape`` (H, W) when it differs."""
    if values.shape == shape:
        return values
    image = Image.fromarray(values.astype(np.float32)).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def stack_resized_maps(cams: dict[int, np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(K, H, W) maps at ``shape`` (NaN set to 0) and their (K,) mask values (class index + 1)."""
    keys = sorted(cams)
    maps = [np.nan_to_num(_resize_map(cams[k], shape), nan=0.0) for k in keys]
    stacked = np.stack(maps) if maps else np.zeros((0, *shape), dtype=np.float32)
    return stacked, np.asarray([k + 1 for k in keys], dtype=np.int64)


def attention_overlay(image: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Max over the class maps as a jet heat map blended 50/50 over the image, (H, W, 3) uint8."""
    heat = np.clip(maps.max(axis=0), 0.0, 1.0) if maps.shape[0] else np.zeros(image.shape[:2], np.float32)
    colours = matplotlib.colormaps["jet"](heat)[..., :3] * 255.0
    return (0.5 * image.astype(np.float32) + 0.5 * colours).round().astype(np.uint8)


def read_or_none(reader: Callable[[Path], np.ndarray], path: Path | None) -> np.ndarray | None:
    """``reader(path)``, or None when the path is None or the file cannot be read."""
    if path is None:
        return None
    try:
        return reader(path)
    except (OSError, ValueError):
        return None


def show_picture(ax: plt.Axes, picture: np.ndarray | None, title: str, missing: str = "missing") -> None:
    """Draw one labelled panel; a missing picture becomes a blank panel saying ``missing``."""
    ax.set_title(title, fontsize=8)
    if picture is None:
        _message_axis(ax, missing)
        return
    ax.imshow(picture, interpolation="nearest")
    ax.set_axis_off()


def _method_panels(
    method: MethodResult, sample: ReportSample, image: np.ndarray | None, shape: tuple[int, int] | None
) -> list[tuple[np.ndarray | None, str, str]]:
    """The (picture, title, placeholder) of one method's attention and pseudo-mask panels."""
    attention_title, mask_title = f"{method.title}\nattention", f"{method.title}\npseudo mask"
    cams = load_cams(Path(method.cams_dir) / f"{sample.image_id}.npy")
    if cams is None or shape is None:
        reason = "missing" if cams is None else "no image"
        return [(None, attention_title, reason), (None, mask_title, reason)]
    threshold = _number((best_entry(method.sweep) or {}).get("threshold"))
    try:
        maps, values = stack_resized_maps(cams, shape)
        mask = None if threshold is None else colorize(pseudo_label(maps, values, threshold))
    except (ValueError, TypeError):
        return [(None, attention_title, "unreadable"), (None, mask_title, "unreadable")]
    overlay = attention_overlay(image, maps) if image is not None else None
    if mask is None:
        return [(overlay, attention_title, "no image"), (None, mask_title, "no best threshold")]
    return [(overlay, attention_title, "no image"), (mask, f"{mask_title} @ {threshold:.2f}", "")]


def plot_example(path: Path, sample: ReportSample, methods: list[MethodResult]) -> Path:
    """Write one row of panels: image | ground truth | per method: attention, pseudo mask."""
    image = read_or_none(read_image, sample.image_path)
    gt = read_or_none(load_mask, sample.mask_path)
    shape = image.shape[:2] if image is not None else (gt.shape if gt is not None else None)
    panels = [
        (image, "image", "missing"),
        (
            colorize(gt) if gt is not None else None,
            "ground truth",
            "no ground truth" if sample.mask_path is None else "missing",
        ),
    ]
    for method in methods:
        panels += _method_panels(method, sample, image, shape)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(PANEL_INCHES * len(panels), PANEL_INCHES * 1.05), dpi=DPI, squeeze=False
    )
    for ax, (picture, title, missing) in zip(axes[0], panels, strict=True):
        show_picture(ax, picture, title, missing)
    save_and_close(fig, path)
    return path


def _example_files(samples: list[ReportSample]) -> list[str]:
    """One distinct ``example_<id>.png`` name per sample (a numeric suffix resolves collisions)."""
    names: list[str] = []
    for sample in samples:
        stem = f"example_{safe_filename(sample.image_id)}"
        name, count = f"{stem}.png", 1
        while name in names:
            count += 1
            name = f"{stem}_{count}.png"
        names.append(name)
    return names


def _label_caption(sample: ReportSample, class_names: list[str]) -> tuple[str, str]:
    """The image's classes as (HTML with swatches, Markdown text)."""
    names = [
        (class_names[c + 1] if 0 <= c + 1 < len(class_names) else f"class {c}", c + 1) for c in sample.labels
    ]
    html_parts = [
        f'<span class="swatch" style="background:{_hex_colour(v)}"></span>{html.escape(n)}' for n, v in names
    ]
    return ", ".join(html_parts) or DASH, ", ".join(n for n, _ in names) or DASH


# ---------------------------------------------------------------------------------------- document


def html_document(title: str, sections: list[str]) -> str:
    """Wrap the section snippets in a self-contained HTML page (inline CSS, no scripts)."""
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


def img_tag(file: str, alt: str) -> str:
    """An ``<img>`` tag for a PNG in the report folder."""
    return f'<img src="{html.escape(file)}" alt="{html.escape(alt)}">'


def _examples_sections(
    out_dir: Path, methods: list[MethodResult], samples: list[ReportSample], class_names: list[str]
) -> tuple[list[str], list[str]]:
    """Write the example PNGs; return their HTML and Markdown sections."""
    html_parts, md_parts = ["<h2>Examples</h2>"], ["## Examples", ""]
    if not samples:
        html_parts.append("<p>No examples.</p>")
        md_parts.append("No examples.")
    for sample, file in zip(samples, _example_files(samples), strict=True):
        plot_example(out_dir / file, sample, methods)
        caption_html, caption_md = _label_caption(sample, class_names)
        html_parts += [
            f"<h3>{html.escape(sample.image_id)}</h3>",
            f'<p class="caption">classes: {caption_html}</p>',
            f"<p>{img_tag(file, sample.image_id)}</p>",
        ]
        md_parts += [
            f"### {md_escape(sample.image_id)}",
            "",
            f"classes: {md_escape(caption_md)}",
            "",
            f"![{md_escape(sample.image_id)}]({file})",
            "",
        ]
    return html_parts, md_parts


def write_report(
    out_dir: Path,
    methods: list[MethodResult],
    samples: list[ReportSample],
    class_names: list[str],
    *,
    title: str = "l2g report",
    num_examples: int = 6,
    notes: list[str] | None = None,
    config_text: str | None = None,
) -> Path:
    """Write ``index.html``, ``report.md`` and their PNGs into ``out_dir``; return the index.html path.

    ``class_names`` starts with "background". The first ``num_examples`` samples (in list order) get
    example panels; each method's pseudo masks use that method's best threshold.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paragraphs = [str(n) for n in notes or []]
    html_parts = [f"<h1>{html.escape(title)}</h1>"] + [f"<p>{html.escape(p)}</p>" for p in paragraphs]
    md_parts = [f"# {md_escape(title)}", ""] + [line for p in paragraphs for line in (md_escape(p), "")]

    rows = summary_rows(methods)
    html_parts += ["<h2>Summary</h2>", html_table(SUMMARY_HEADER, rows)]
    md_parts += ["## Summary", "", md_table(SUMMARY_HEADER, rows), ""]

    plot_threshold_curve(out_dir / CURVE_FILE, methods)
    html_parts += ["<h2>mIoU vs background threshold</h2>", f"<p>{img_tag(CURVE_FILE, 'threshold curve')}</p>"]
    md_parts += ["## mIoU vs background threshold", "", f"![threshold curve]({CURVE_FILE})", ""]

    ex_html, ex_md = _examples_sections(out_dir, methods, samples[: max(num_examples, 0)], class_names)
    html_parts += ex_html
    md_parts += ex_md

    html_parts += [
        "<h2>Per-class results at each method's best threshold</h2>",
        f'<p class="caption">{CLASS_TABLE_NOTE}</p>',
        _class_table_html(methods, class_names),
    ]
    md_parts += [
        "## Per-class results at each method's best threshold",
        "",
        _class_table_md(methods, class_names),
        "",
    ]

    if any(m.train_log is not None for m in methods):
        plot_losses(out_dir / LOSSES_FILE, methods)
        html_parts += ["<h2>Training losses</h2>", f"<p>{img_tag(LOSSES_FILE, 'training losses')}</p>"]
        md_parts += ["## Training losses", "", f"![training losses]({LOSSES_FILE})", ""]

    if config_text is not None:
        html_parts += ["<h2>Config</h2>", f"<pre>{html.escape(config_text)}</pre>"]
        md_parts += ["## Config", "", "```", config_text.replace("```", "` ` `"), "```", ""]

    index = out_dir / "index.html"
    write_text(index, html_document(title, html_parts))
    write_text(out_dir / "report.md", "\n".join(md_parts))
    return index
