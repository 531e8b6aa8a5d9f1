"""The embedded synthetic benchmark: generate data, train CAM / local / L2G / L2G + shape, infer their
attention maps, sweep the background threshold, write a comparison table and a report.

Every step skips work whose outputs already exist, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from l2g import atomic
from l2g.config import Config, load_config, to_dict
from l2g.data.cam_files import load_cams
from l2g.data.images import read_mask
from l2g.data.layout import Sample
from l2g.data.synth import PARTS_DIR, SynthSpec, write_dataset
from l2g.engine.run_paths import RunFolder
from l2g.evaluation.parts import PartBodyAttention, read_parts
from l2g.evaluation.transfer_fit import REGIONS
from l2g.method.methods import method_class
from l2g.method.registry import METHOD_NAMES, METHODS
from l2g.report.document import Table
from l2g.report.html_report import MethodResult, ReportSample, write_report
from l2g.stages.cams import infer_cams
from l2g.stages.common import dataset_class_names, split_samples, write_json
from l2g.stages.eval_cams import evaluate_cams
from l2g.stages.seg_demo import seg_table, segmentation_demo
from l2g.stages.train import train
from l2g.stages.train_shared import train_shared_groups
from l2g.stages.transfer_fit import measure_transfer_fit

FIT_IMAGES = 120  # transfer-fit sample: ~20 s per method on 2 cores


@dataclass
class DemoRow:
    method: str
    title: str
    miou: float
    threshold: float
    train_minutes: float
    total_minutes: float
    attention: dict | None = None  # mean own-class attention on parts / bodies / background
    shared_with: tuple[str, ...] = ()  # methods trained in the same run (l2g.stages.train_shared)


def demo_config(method: str, data_root: str, preset: str, overrides: list[str]) -> Config:
    return load_config(preset, [f"data.root={data_root}", f"method.name={method}", *overrides])


def run_demo(out: str | Path = "runs/demo", data_root: str | Path = "data/synth", preset: str = "synth",
             methods: tuple[str, ...] = METHOD_NAMES, overrides: list[str] | None = None,
             synth: SynthSpec | None = None, progress: bool = True, share_local: bool = True) -> list[DemoRow]:
    """The whole benchmark into ``out`` (see the module text). ``share_local``: train L2G and L2G + shape in
    one run sharing their local network when their configs allow it (:mod:`l2g.stages.train_shared`; the
    same weights as two runs, in less time)."""
    if not methods:
        raise ValueError("demo: no method given (choose from " + ", ".join(METHODS) + ")")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"demo: unknown method(s) {unknown} (choose from {', '.join(METHODS)})")
    out, data_root = Path(out), Path(data_root)
    if not (data_root / "COMPLETE").exists():
        print(f"writing the synthetic dataset to {data_root}")
        write_dataset(data_root, synth or SynthSpec(), progress=progress)
    # Listed once for the part/body diagnostic and the report; training has already decoded every file
    # of the split, and the maps, masks and part masks are checked as they are read.
    listing = demo_config(methods[-1], str(data_root), preset, overrides or [])
    samples = split_samples(listing, listing.cams.split, need_masks=True, check_images="exists")
    configs = {method: demo_config(method, str(data_root), preset, overrides or []) for method in methods}
    if share_local:
        train_shared_groups([(configs[m], out / m) for m in methods], progress)
    rows, results = [], []
    for method in methods:
        config = configs[method]
        run_dir = out / method
        started = time.time()
        if not RunFolder(run_dir).final.exists():
            train(config, run_dir, resume="auto", progress=progress)
        infer_cams(config, run_dir, progress=progress)
        sweep = evaluate_cams(config, RunFolder(run_dir).cams, progress=progress)
        metrics = json.loads(RunFolder(run_dir).metrics.read_text())
        total_minutes = (time.time() - started) / 60
        row = DemoRow(method, METHODS[method].title, sweep["best"]["miou"], sweep["best"]["threshold"],
                      metrics["minutes"], total_minutes, attention_on_parts(config, samples, RunFolder(run_dir).cams),
                      tuple(metrics.get("shared_with", ())))
        rows.append(row)
        others = ", ".join(METHODS[m].title if m in METHODS else m for m in row.shared_with)
        together = f" (one run with {others})" if others else ""
        print(f"{row.title:<20} mIoU {100 * row.miou:5.1f}  threshold {row.threshold:.2f}  "
              f"train {row.train_minutes:.1f} min{together}")
        results.append(MethodResult(method, row.title, RunFolder(run_dir).cams, sweep, row.train_minutes,
                                    run_dir / "train_log.jsonl", row.total_minutes, to_dict(config)))
    tables = [summary_table(rows)]
    fits = transfer_fits(out, [m for m in methods if method_class(m).transfers], progress)
    if fits:
        tables.append(fit_table(fits))
    text = "\n\n".join(table.to_markdown() for table in tables)
    print("\n" + text)
    write_json(out / "summary.json", {"rows": [row.__dict__ for row in rows], "transfer_fit": fits})
    atomic.write_text(out / "summary.md", text + "\n")
    seg_rows = segmentation_demo(out, rows, lambda m: demo_config(m, str(data_root), preset, overrides or []),
                                 progress)  # DeepLab on the pseudo masks of L2G + shape and CAM
    report_tables = [("Attention on object parts", attention_table(rows))]
    if fits:
        report_tables.append(("Attention transfer", tables[-1]))
    if seg_rows:
        report_tables.append((f"Segmentation: {seg_rows[0].network} on the pseudo masks", seg_table(seg_rows)))
    report = write_report(
        out / "report", results,
        [ReportSample(s.image_id, s.image_path, s.mask_path, s.labels, s.view) for s in samples],
        ["background", *dataset_class_names(listing)],
        title="l2g synthetic benchmark", num_examples=8,
        notes=["Pseudo-label mIoU on the train split of the synthetic dataset, best background threshold "
               "of each method. Maps: multi-scale + flip, ReLU, per-class max normalisation."],
        tables=report_tables, seeds=[result.config["seed"] for result in results],
        runs=[out / m for m in methods] + [out / r.method / "seg" for r in seg_rows],
    )
    print(f"report: {report}")
    return rows


def transfer_fits(out: Path, methods: list[str], progress: bool) -> dict[str, dict]:
    """``l2g transfer-fit`` of each L2G run on the first FIT_IMAGES training images (kept on rerun)."""
    fits = {}
    for method in methods:
        saved = RunFolder(out / method).transfer_fit
        fits[method] = (json.loads(saved.read_text()) if saved.exists()
                        else measure_transfer_fit(out / method, FIT_IMAGES, progress=progress))
    return fits


def fit_table(fits: dict[str, dict]) -> Table:
    """Target A^c vs global G^c per region, one row per L2G method (see l2g.evaluation.transfer_fit)."""
    regions = [r for r in REGIONS if any(fit["regions"].get(r) for fit in fits.values())]
    images = min(fit["images"] for fit in fits.values())
    rows = []
    for method, fit in fits.items():
        cells = []
        for region in regions:
            row = fit["regions"].get(region)
            cells.append("-" if row is None else f"{row['target']:.2f} / {row['global']:.2f}")
        rows.append([METHODS[method].title, *cells])
    return Table(["method", *(f"{region}: target / global" for region in regions)], rows,
                 f"Attention transfer on training views ({images} images): mean target A^c of the local network "
                 "vs mean softmax G^c of the global network, on each labelled object's part, body and the "
                 "background.")


def attention_on_parts(config: Config, samples: list[Sample], cams_dir: Path) -> dict | None:
    """Mean own-class attention on parts, bodies and background (None if the dataset marks no parts)."""
    parts_dir = Path(config.data.root) / PARTS_DIR
    if not parts_dir.is_dir():
        return None
    meter = PartBodyAttention()
    for sample in samples:
        parts = read_parts(parts_dir, sample.image_id)
        meter.update(load_cams(cams_dir, sample.image_id).as_dict(), read_mask(sample.mask_path,
                     config.data.num_classes), parts)
    return meter.results()


def _attention_cells(row: DemoRow) -> list[str]:
    return ["-" if row.attention is None or row.attention[k] is None else f"{row.attention[k]:.2f}"
            for k in ("part", "body", "background")]


def summary_table(rows: list[DemoRow]) -> Table:
    """The demo's table (terminal and summary.md)."""
    return Table(["method", "pseudo-label mIoU (train)", "best threshold", "attention part / body / background",
                  "training (min)", "total (min)"],
                 [[r.title + (" *" if r.shared_with else ""), f"{100 * r.miou:.1f}", f"{r.threshold:.2f}",
                   " / ".join(_attention_cells(r)),
                   f"{r.train_minutes:.1f}", f"{r.total_minutes:.1f}"] for r in rows],
                 "training: the classification network's training; total: training + attention maps + threshold "
                 "sweep in this invocation (a step skipped on a rerun counts zero)."
                 + (" Methods marked * trained in one run sharing their local network: each row shows that "
                    "run's minutes." if any(r.shared_with for r in rows) else ""))


def attention_table(rows: list[DemoRow]) -> Table:
    """Mean own-class attention on object parts, bodies and the background, per method (the report's)."""
    return Table(["method", "part", "body", "background"], [[r.title, *_attention_cells(r)] for r in rows],
                 "Mean attention of each labelled object's own class map on the object's small discriminative "
                 "part, on the rest of its body and on the background (train split; the synthetic dataset marks "
                 "the parts). The paper's claim: a whole-image classifier's map is strong on the part and weak "
                 "on the body, and local views spread it over the whole object.")
