"""The report's figures: threshold curves, training curves, rows of example panels with a colour bar.

Every figure is written atomically and closed (memory stays flat over many calls). Missing inputs become
panels that say so, never an exception.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from l2g.atomic import save_figure  # noqa: E402
from l2g.report.formatting import best_entry, format_threshold, number, pick  # noqa: E402

PANEL_INCHES = 2.0
DPI = 80
ATTENTION_COLORMAP = "jet"
STUCK_WARNING = 0.5  # l2g.method.diagnostics.StuckMonitor's default threshold
LOG_INDEX_KEYS = ("epoch", "iteration")

Panel = tuple[np.ndarray | None, str, str]  # (picture or None, title, what to say when it is None)


def save_and_close(fig: plt.Figure, path: Path) -> None:
    try:
        fig.tight_layout()
        save_figure(path, fig)
    finally:
        plt.close(fig)


def message_axis(ax: plt.Axes, text: str) -> None:
    """Turn an axis into a blank panel that only says ``text``."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, color="0.4", transform=ax.transAxes)


# --- threshold curve -------------------------------------------------------------------------------


def curve_points(sweep: dict) -> tuple[list[float], list[float]]:
    """(thresholds, mIoU in %) of a sweep, NaN where the mIoU is undefined (a gap in the line)."""
    thresholds = [number(t) for t in sweep.get("thresholds") or []]
    mious = [number(pick(sweep.get("miou"), i)) for i in range(len(thresholds))]
    pairs = [(t, math.nan if m is None else 100.0 * m) for t, m in zip(thresholds, mious, strict=True) if t is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_threshold_curve(path: Path, curves: list[tuple[str, dict]]) -> Path:
    """mIoU (%) vs background threshold, one line per (title, sweep) with its best point marked."""
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for title, sweep in curves:
        xs, ys = curve_points(sweep)
        best = best_entry(sweep) or {}
        bt, bm = number(best.get("threshold")), number(best.get("miou"))
        label = title + (f" (best {100 * bm:.1f} @ {format_threshold(bt)})" if bm is not None else "")
        (line,) = ax.plot(xs, ys, marker=".", markersize=4, label=label)
        if bt is not None and bm is not None:
            ax.plot([bt], [100 * bm], marker="o", markersize=9, color=line.get_color(), markeredgecolor="black",
                    linestyle="none")
    ax.set_xlabel("background threshold")
    ax.set_ylabel("pseudo-label mIoU (%)")
    ax.set_title("Pseudo-label mIoU vs background threshold")
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize=8, loc="best")
    save_and_close(fig, path)
    return path


# --- training curves -------------------------------------------------------------------------------


def read_log_series(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """Every numeric column of a JSON-lines training log: {key: (iterations, values)}.

    Unparsable lines and non-numeric values are skipped; a line without "iteration" uses its line number.
    """
    series: dict[str, tuple[list[float], list[float]]] = {}
    for line_number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        step = number(record.get("iteration"))
        step = float(line_number) if step is None else step
        for key, value in record.items():
            value = number(value)
            if key not in LOG_INDEX_KEYS and value is not None:
                xs, ys = series.setdefault(key, ([], []))
                xs.append(step)
                ys.append(value)
    return series


def read_train_log(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """The loss curves of a training log (keys starting with "loss")."""
    return {k: v for k, v in read_log_series(path).items() if k.startswith("loss")}


def _series_or_message(ax: plt.Axes, log: Path | None) -> dict[str, tuple[list[float], list[float]]] | None:
    if log is None:
        message_axis(ax, "no training log")
        return None
    try:
        return read_log_series(log)
    except (OSError, UnicodeDecodeError):
        message_axis(ax, "log missing")
        return None


def plot_losses(path: Path, logs: list[tuple[str, Path | None]]) -> Path:
    """One panel of loss curves per (title, log), on a log axis: the terms differ by orders of magnitude
    (L2G's loss_kt is ~100x smaller than loss_cls and would be a flat line on a linear axis)."""
    fig, axes = plt.subplots(1, len(logs), figsize=(4.2 * len(logs), 3.4), dpi=90, squeeze=False)
    for ax, (title, log) in zip(axes[0], logs, strict=True):
        ax.set_title(title, fontsize=10)
        series = _series_or_message(ax, log)
        if series is None:
            continue
        losses = {k: v for k, v in series.items() if k.startswith("loss")}
        positive = {k: v for k, v in losses.items() if any(y > 0 for y in v[1])}
        if not positive:
            message_axis(ax, "no loss values")
            continue
        for key, (xs, ys) in sorted(positive.items()):
            label = f"{key} (logged, not trained)" if key == "loss_cls_global" else key
            ax.plot(xs, ys, label=label, linewidth=1.4 if key == "loss" else 0.9)
        ax.set_yscale("log", nonpositive="mask")
        plain = FuncFormatter(lambda value, _: f"{value:.3g}")  # 0.67, not 6.7 x 10^-1
        ax.yaxis.set_major_formatter(plain)
        values = [y for _, ys in positive.values() for y in ys if y > 0]
        if max(values) < 10 * min(values):  # within a decade only minor ticks are labelled
            ax.yaxis.set_minor_formatter(plain)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss (log scale)")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7)
    save_and_close(fig, path)
    return path


def logs_with(logs: list[tuple[str, Path | None]], key: str) -> list[tuple[str, tuple[list[float], list[float]]]]:
    """(title, series) of the logs that have a column ``key``."""
    found = []
    for title, log in logs:
        if log is None:
            continue
        try:
            series = read_log_series(log)
        except (OSError, UnicodeDecodeError):
            continue
        if key in series:
            found.append((title, series[key]))
    return found


def plot_kt_stuck(path: Path, series: list[tuple[str, tuple[list[float], list[float]]]]) -> Path:
    """kt_stuck over training, one line per L2G run, with the level at which ``l2g train`` warns."""
    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=90)
    for title, (xs, ys) in series:
        ax.plot(xs, ys, label=title, linewidth=1.1)
    ax.axhline(STUCK_WARNING, color="0.3", linestyle="--", linewidth=0.9, label=f"warning level ({STUCK_WARNING})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("iteration")
    ax.set_ylabel("kt_stuck")
    ax.set_title("Share of taught class pixels where the global network is stuck")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save_and_close(fig, path)
    return path


# --- example panels --------------------------------------------------------------------------------


def read_or_none(reader: Callable[[Path], np.ndarray], path: Path | None) -> np.ndarray | None:
    """``reader(path)``, or None when the path is None or the file cannot be read."""
    if path is None:
        return None
    try:
        return reader(path)
    except (OSError, ValueError):
        return None


def attention_overlay(image: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Max over the class maps as a heat map (ATTENTION_COLORMAP, 0..1) blended 50/50 over the image."""
    heat = np.clip(maps.max(axis=0), 0.0, 1.0) if maps.shape[0] else np.zeros(image.shape[:2], np.float32)
    colours = matplotlib.colormaps[ATTENTION_COLORMAP](heat)[..., :3] * 255.0
    return (0.5 * image.astype(np.float32) + 0.5 * colours).round().astype(np.uint8)


def show_picture(ax: plt.Axes, picture: np.ndarray | None, title: str, missing: str = "missing") -> None:
    ax.set_title(title, fontsize=8)
    if picture is None:
        message_axis(ax, missing)
        return
    ax.imshow(picture, interpolation="nearest")
    ax.set_axis_off()


def plot_panels(path: Path, panels: list[Panel], colorbar: bool) -> Path:
    """One row of panels; with ``colorbar``, a bar at the right end giving the attention scale (the
    overlays blend that colour 50/50 with the image)."""
    widths = [1.0] * len(panels) + ([0.08] if colorbar else [])
    inches = PANEL_INCHES * len(panels) + (0.9 if colorbar else 0.0)
    fig, axes = plt.subplots(1, len(widths), figsize=(inches, PANEL_INCHES * 1.1), dpi=DPI, squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, (picture, title, missing) in zip(axes[0], panels, strict=False):
        show_picture(ax, picture, title, missing)
    if colorbar:
        mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=ATTENTION_COLORMAP)
        bar = fig.colorbar(mappable, cax=axes[0][-1])
        bar.set_label("attention (max over classes)", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    save_and_close(fig, path)
    return path
