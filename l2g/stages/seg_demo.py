"""The segmentation end of the synthetic demo: DeepLab-small trained on the pseudo masks of L2G + shape
and of the CAM baseline, evaluated on the val split, next to the pseudo-label mIoU that fed it.

Called by :func:`l2g.stages.demo.run_demo` after the classification methods. For each method it writes
``<out>/<method>/pseudo/`` (pseudo masks at the method's best threshold), ``<out>/<method>/seg/`` (the
segmentation run, resumable) and adds a table to ``summary.md`` and a ``segmentation`` list to
``summary.json``. Training is skipped when the run's final checkpoint exists; evaluation always reruns
(seconds).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from l2g import atomic
from l2g.config import Config
from l2g.engine.run_paths import RunFolder
from l2g.report.document import Table
from l2g.segmentation.registry import SEG_ARCHS
from l2g.stages.common import write_json
from l2g.stages.pseudo import write_pseudo_masks
from l2g.stages.seg_eval import evaluate_segmentation
from l2g.stages.seg_train import train_segmentation

SEG_DEMO_METHODS = ("l2g_shape", "cam")  # the paper's method and the baseline it improves on


class _Row(Protocol):  # what the demo's per-method rows provide
    method: str
    title: str
    miou: float
    threshold: float


@dataclass
class SegDemoRow:
    method: str
    title: str
    pseudo_miou: float  # pseudo labels, train split, best threshold
    threshold: float
    seg_miou: float  # DeepLab trained on those pseudo labels, val split
    seg_pixel_accuracy: float
    seg_train_minutes: float
    network: str = ""  # the segmentation network's title (SEG_ARCHS[...].title)


def segmentation_demo(out: str | Path, rows: list[_Row], config_of: Callable[[str], Config],
                      progress: bool = True) -> list[SegDemoRow]:
    """Train and evaluate the segmentation network on the pseudo masks of the demo's L2G + shape and CAM
    runs (those of them in ``rows``; ``config_of(method)`` is the demo's config of a method); print the
    table and add it to the summary files."""
    out = Path(out)
    by_method = {row.method: row for row in rows}
    seg_rows = []
    for method in [m for m in SEG_DEMO_METHODS if m in by_method]:
        row = by_method[method]
        config = config_of(method)
        cls_run, seg_run = RunFolder(out / method), RunFolder(out / method / "seg")
        if not seg_run.final.exists():
            write_pseudo_masks(config, cls_run.cams, cls_run.pseudo, row.threshold, progress=progress)
            train_segmentation(config, seg_run.root, cls_run.pseudo, resume="auto", progress=progress)
        metrics = evaluate_segmentation(config, seg_run.root, progress=progress)
        minutes = json.loads(seg_run.metrics.read_text())["minutes"]
        seg_rows.append(SegDemoRow(method, row.title, row.miou, row.threshold, metrics["miou"],
                                   metrics["pixel_accuracy"], minutes, SEG_ARCHS[config.seg.arch].title))
        print(f"{row.title:<20} segmentation val mIoU {100 * metrics['miou']:5.1f}  (pseudo labels "
              f"{100 * row.miou:.1f})  seg train {minutes:.1f} min")
    if not seg_rows:
        return seg_rows
    table = seg_table(seg_rows).to_markdown()
    print("\n" + table)
    summary_md, summary_json = out / "summary.md", out / "summary.json"
    previous = summary_md.read_text() if summary_md.exists() else ""
    atomic.write_text(summary_md, previous + "\n" + table + "\n")
    payload = json.loads(summary_json.read_text()) if summary_json.exists() else {}
    payload["segmentation"] = [asdict(r) for r in seg_rows]
    write_json(summary_json, payload)
    return seg_rows


def seg_table(rows: list[SegDemoRow]) -> Table:
    """Pseudo-label mIoU next to the val mIoU of the network trained on those pseudo masks."""
    network = rows[0].network if rows else "segmentation"
    return Table(["pseudo masks from", "pseudo-label mIoU (train)", f"{network}: val mIoU (%)",
                  "val pixel accuracy (%)", "segmentation training (min)"],
                 [[r.title, f"{100 * r.pseudo_miou:.1f}", f"{100 * r.seg_miou:.1f}",
                   f"{100 * r.seg_pixel_accuracy:.1f}", f"{r.seg_train_minutes:.1f}"] for r in rows],
                 "The segmentation network trained on each method's pseudo masks (at its best threshold), "
                 "evaluated on the val split's ground truth.")
