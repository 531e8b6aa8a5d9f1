"""Tests for l2g.report.html_report: the offline HTML / Markdown report and its PNGs."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from l2g.data.palette import save_mask
from l2g.report.html_report import (
    MethodResult,
    ReportSample,
    best_entry,
    format_percent,
    read_train_log,
    safe_filename,
    write_report,
)

CLASS_NAMES = ["background", "aeroplane", "bicycle", "bird"]
HEIGHT, WIDTH = 24, 32
THRESHOLDS = [0.2, 0.3, 0.4]


def _entry(threshold: float, miou: float | None, iou: list) -> dict:
    """One per-threshold entry in the sweep format."""
    return {
        "threshold": threshold,
        "miou": miou,
        "iou": iou,
        "precision": [0.9, 0.8, None, 0.7],
        "recall": [0.95, 0.6, None, float("nan")],
        "pixel_accuracy": 0.875,
        "class_names": CLASS_NAMES,
    }


def _sweep(mious: list, best_index: int | None) -> dict:
    """A fabricated sweep result with a None IoU (class absent) in every entry."""
    pairs = enumerate(zip(THRESHOLDS, mious, strict=True))
    entries = [_entry(t, m, [0.8, 0.5, None, 0.3 + i / 10]) for i, (t, m) in pairs]
    return {
        "thresholds": THRESHOLDS,
        "miou": mious,
        "per_threshold": entries,
        "best": entries[best_index] if best_index is not None else None,
        "class_names": CLASS_NAMES,
    }


def _make_samples(root: Path) -> list[ReportSample]:
    """Three images with masks; the third has no ground truth."""
    rng = np.random.default_rng(0)
    samples = []
    for index, labels in enumerate([(0,), (0, 2), (1,)]):
        image_id = f"2007_00{index}"
        image_path = root / "images" / f"{image_id}.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(image_path)
        mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        for k, label in enumerate(labels):
            mask[4 + 6 * k : 10 + 6 * k, 5:20] = label + 1
        mask[0, 0] = 255
        mask_path = root / "masks" / f"{image_id}.png"
        save_mask(mask_path, mask)
        samples.append(ReportSample(image_id, image_path, None if index == 2 else mask_path, labels))
    return samples


def _write_cams(cams_dir: Path, samples: list[ReportSample], skip: set[str]) -> None:
    """Save a dict of (H, W) float32 maps per sample, except for the ids in ``skip``."""
    cams_dir.mkdir(parents=True, exist_ok=True)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    for sample in samples:
        if sample.image_id in skip:
            continue
        maps = {}
        for k, label in enumerate(sample.labels):
            blob = np.exp(-((ys - 7 - 6 * k) ** 2 + (xs - 12) ** 2) / 30.0)
            maps[label] = blob.astype(np.float32)
        np.save(cams_dir / f"{sample.image_id}.npy", maps)


@pytest.fixture
def report(tmp_path: Path) -> tuple[Path, list[MethodResult], list[ReportSample]]:
    """Write a report with two methods (one lacking a cams file) and return (index, methods, samples)."""
    samples = _make_samples(tmp_path / "data")
    _write_cams(tmp_path / "cams_cam", samples, skip=set())
    _write_cams(tmp_path / "cams_l2g", samples, skip={samples[1].image_id})
    log = tmp_path / "train_l2g.jsonl"
    records = [
        {"epoch": 0, "iteration": i, "lr": 0.01, "loss": 2.0 / i, "loss_cls": 1.0 / i, "loss_kt": None}
        for i in range(1, 6)
    ]
    log.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n", encoding="utf-8")
    cam_sweep, l2g_sweep = _sweep([0.4, 0.5234, None], 1), _sweep([0.55, 0.612, 0.6], 1)
    methods = [
        MethodResult("cam", "CAM baseline", tmp_path / "cams_cam", cam_sweep, minutes=1.25),
        MethodResult("l2g", "L2G <ours>", tmp_path / "cams_l2g", l2g_sweep, train_log=log),
    ]
    index = write_report(
        tmp_path / "report",
        methods,
        samples,
        CLASS_NAMES,
        title="test report",
        notes=["Made on a CPU & in a hurry."],
        config_text="lr: 0.01\nname: <x>",
    )
    return index, methods, samples


def test_report_files_and_images(report):
    index, _, samples = report
    assert index.name == "index.html" and index.is_file()
    assert (index.parent / "report.md").is_file()
    text = index.read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert "threshold_curve.png" in sources and "losses.png" in sources
    assert len([s for s in sources if s.startswith("example_")]) == len(samples)
    for source in sources:
        path = index.parent / source
        assert path.is_file() and path.stat().st_size > 0, source
        with Image.open(path) as image:
            assert image.width > 0 and image.height > 0
    markdown = (index.parent / "report.md").read_text(encoding="utf-8")
    for source in sources:
        assert f"({source})" in markdown
    assert "<script" not in text.lower() and "http" not in text.lower()


def test_summary_and_class_tables(report):
    index, _, _ = report
    text = index.read_text(encoding="utf-8")
    markdown = (index.parent / "report.md").read_text(encoding="utf-8")
    summary = text[text.index("<h2>Summary</h2>") : text.index("</table>")]
    assert "CAM baseline" in summary and "L2G &lt;ours&gt;" in summary  # titles are escaped
    assert "52.3" in summary and "61.2" in summary and "87.5" in summary and "1.2" in summary
    assert "| CAM baseline | 0.30 | 52.3 | 87.5 | 1.2 |" in markdown
    assert "| L2G &lt;ours&gt; | 0.30 | 61.2 | 87.5 | – |" in markdown
    per_class = text[text.index("Per-class") :]
    for name in CLASS_NAMES:
        assert name in per_class
    assert "50.0 / 80.0 / 60.0" in per_class  # aeroplane: IoU / P / R
    assert "–" in per_class  # None and NaN become a dash
    assert "Made on a CPU &amp; in a hurry." in text
    assert "<pre>lr: 0.01\nname: &lt;x&gt;</pre>" in text


def test_no_logs_no_losses_and_no_best(tmp_path):
    samples = _make_samples(tmp_path / "data")
    method = MethodResult("cam", "CAM", tmp_path / "nowhere", _sweep([None, None, None], None))
    index = write_report(tmp_path / "out", [method], samples, CLASS_NAMES, num_examples=2)
    text = index.read_text(encoding="utf-8")
    assert "losses.png" not in text and not (tmp_path / "out" / "losses.png").exists()
    assert len(re.findall(r'<img src="example_', text)) == 2
    assert "<td>–</td>" in text


def test_helpers():
    assert format_percent(0.5234) == "52.3"
    assert format_percent(None) == format_percent(float("nan")) == "–"
    assert safe_filename("a/b c..png") == "a_b_c..png"
    assert safe_filename("../") == "sample"
    sweep = _sweep([0.1, 0.3, 0.2], None)
    assert best_entry(sweep)["threshold"] == 0.3


def test_read_train_log(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"iteration": 10, "loss": 1.5, "lr": 0.1}\n\n{"loss": 1.0, "loss_x": "nan?"}\n')
    curves = read_train_log(log)
    assert list(curves) == ["loss"]
    assert curves["loss"] == ([10.0, 2.0], [1.5, 1.0])
