"""Tests for l2g.report: the offline HTML / Markdown reports, their tables, figures and examples.

The HTML is read as a browser would (tests/report_checks.py): visible text, tables, images."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from l2g.data.palette import save_mask
from l2g.engine.file_names import safe_filename
from l2g.report.document import Cell, Document, Heading, Paragraph, Table
from l2g.report.examples import candidates, choose_examples, image_miou
from l2g.report.formatting import best_entry, format_percent
from l2g.report.html_report import MethodResult, ReportSample, maps_file, write_report
from l2g.report.plots import read_train_log
from l2g.stages.demo import DemoRow, attention_table, fit_table
from l2g.stages.seg_demo import SegDemoRow, seg_table
from tests.report_checks import check_report, parse_page, provenance_of, table_with_header

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
        save_maps(maps_file(cams_dir, sample.image_id), maps)


def save_maps(path: Path, maps: dict[int, np.ndarray]) -> None:
    """An attention-map file as ``l2g cams`` writes it (the report reads it with its reader)."""
    from l2g.data.cam_files import save_cams

    save_cams(path, maps)


CONFIG = {"seed": 3, "method": {"name": "cam", "lam": 10.0}, "optim": {"lr": 0.01, "epochs": 2}}


def _log(path: Path, with_kt: bool) -> Path:
    """A JSONL log whose loss_kt is ~100x smaller than loss_cls (flat on a linear axis), plus kt_stuck."""
    records = []
    for i in range(1, 7):
        record = {"epoch": 0, "iteration": i, "lr": 0.01, "loss": 2.0 / i, "loss_cls": 1.0 / i}
        if with_kt:
            record.update({"loss_kt": 0.01 / i, "kt_stuck": 0.1 * i})
        records.append(record)
    path.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[MethodResult], list[ReportSample]]:
    """Write a report with two methods (one lacking a cams file) and return (index, methods, samples);
    written once for the module (the tests only read it)."""
    tmp_path = tmp_path_factory.mktemp("report")
    samples = _make_samples(tmp_path / "data")
    _write_cams(tmp_path / "cams_cam", samples, skip=set())
    _write_cams(tmp_path / "cams_l2g", samples, skip={samples[1].image_id})
    cam_sweep, l2g_sweep = _sweep([0.4, 0.5234, None], 1), _sweep([0.55, 0.612, 0.6], 1)
    methods = [
        MethodResult("cam", "CAM baseline", tmp_path / "cams_cam", cam_sweep, minutes=1.25, total_minutes=2.5,
                     train_log=_log(tmp_path / "cam.jsonl", False), config=CONFIG),
        MethodResult("l2g", "L2G <ours>", tmp_path / "cams_l2g", l2g_sweep,
                     train_log=_log(tmp_path / "l2g.jsonl", True),
                     config={**CONFIG, "method": {"name": "l2g", "lam": 10.0}, "optim": {"lr": 0.02, "epochs": 2}}),
    ]
    rows = [DemoRow("cam", "CAM baseline", 0.5234, 0.3, 1.25, 2.5, {"part": 0.8, "body": 0.2, "background": 0.1}),
            DemoRow("l2g", "L2G <ours>", 0.612, 0.3, 1.0, 2.0, {"part": 0.7, "body": 0.5, "background": 0.1})]
    fits = {"l2g": {"images": 3, "regions": {"part": {"target": 0.9, "global": 0.8}, "body": None,
                                             "background": {"target": 0.1, "global": 0.2}}}}
    seg_rows = [SegDemoRow("l2g", "L2G <ours>", 0.612, 0.3, 0.55, 0.9, 0.5, "DeepLab-small")]
    index = write_report(
        tmp_path / "report", methods, samples, CLASS_NAMES, title="test report", notes=["Made on a CPU & in a hurry."],
        tables=[("Attention on object parts", attention_table(rows)), ("Attention transfer", fit_table(fits)),
                ("Segmentation", seg_table(seg_rows))],
        seeds=[3, 3],
    )
    return index, methods, samples


def test_report_reads_right_in_a_browser(report):
    index, _, samples = report
    # summary, attention on parts, transfer fit, DeepLab, per-class, config differences, provenance
    page = check_report(index, expected_tables=7, seed=3)
    assert {"threshold_curve.png", "losses.png", "kt_stuck.png"} <= set(page.images)
    assert len([s for s in page.images if s.startswith("example_")]) == len(samples)
    markdown = (index.parent / "report.md").read_text(encoding="utf-8")
    for source in page.images:
        assert f"({source})" in markdown
    assert "Made on a CPU & in a hurry." in "".join(page.text)  # escaped in the source, plain on screen
    assert "Made on a CPU &amp; in a hurry." in index.read_text(encoding="utf-8")


def test_each_table_is_rendered_once_from_one_structure(report):
    index, _, _ = report
    page = parse_page(index)
    markdown = (index.parent / "report.md").read_text(encoding="utf-8")
    summary = table_with_header(page, "Method")
    assert summary.headers == ["Method", "Best threshold", "mIoU (%)", "Pixel accuracy (%)", "Training (min)",
                               "Total (min)"]
    assert summary.rows == [["CAM baseline", "0.30", "52.3", "87.5", "1.2", "2.5"],
                            ["L2G <ours>", "0.30", "61.2", "87.5", "–", "–"]]
    assert "| CAM baseline | 0.30 | 52.3 | 87.5 | 1.2 | 2.5 |" in markdown
    assert "| L2G &lt;ours&gt; | 0.30 | 61.2 | 87.5 | – | – |" in markdown
    per_class = table_with_header(page, "Class")
    assert [row[0] for row in per_class.rows] == CLASS_NAMES
    assert per_class.rows[1][1:] == ["50.0 / 80.0 / 60.0", "50.0 / 80.0 / 60.0"]  # aeroplane: IoU / P / R
    assert per_class.rows[2][1] == "– / – / –"  # None and NaN become a dash
    assert "<b>40.0 / 70.0 / –</b>" in index.read_text()  # bird: L2G's IoU (0.4) beats CAM's (0.3)
    deeplab = table_with_header(page, "pseudo masks from")
    assert deeplab.headers[2] == "DeepLab-small: val mIoU (%)" and deeplab.rows == [
        ["L2G <ours>", "61.2", "55.0", "90.0", "0.5"]]
    parts = table_with_header(page, "method")
    assert parts.rows[0] == ["CAM baseline", "0.80", "0.20", "0.10"]


def test_config_shows_what_differs_and_what_is_shared(report):
    index, _, _ = report
    page = parse_page(index)
    differing = table_with_header(page, "Key")
    assert differing.headers == ["Key", "CAM baseline", "L2G <ours>"]
    assert differing.rows == [["method.name", "cam", "l2g"], ["optim.lr", "0.01", "0.02"]]
    shared = "".join(page.pre_text)
    assert "lam: 10.0" in shared and "epochs: 2" in shared and "seed: 3" in shared
    assert "name:" not in shared and "lr:" not in shared  # shown in the table only, not under a wrong method


def test_provenance_names_the_commit_seed_torch_and_machine(report):
    provenance = provenance_of(parse_page(report[0]))
    assert provenance["seed"] == "3"
    assert provenance["training device(s)"] == "not recorded"  # no run folder was given
    assert "cores" in provenance["machine"]


def test_no_logs_no_training_section_and_no_best(tmp_path):
    samples = _make_samples(tmp_path / "data")
    method = MethodResult("cam", "CAM", tmp_path / "nowhere", _sweep([None, None, None], None))
    index = write_report(tmp_path / "out", [method], samples, CLASS_NAMES, num_examples=2)
    page = check_report(index, expected_tables=3)  # summary, per-class, provenance (no config given)
    assert "losses.png" not in page.images and not (tmp_path / "out" / "losses.png").exists()
    assert len([s for s in page.images if s.startswith("example_")]) == 2
    assert table_with_header(page, "Method").rows == [["CAM", "–", "–", "–", "–", "–"]]


def test_table_renders_cells_to_both_formats():
    table = Table(["Name", "a|b"], [[Cell("x <y>", swatch="#ff0000"), Cell("1", bold=True)]], "note & more")
    assert table.to_markdown().splitlines() == ["| Name | a\\|b |", "|:---|---:|",
                                                "| `#ff0000` x &lt;y&gt; | **1** |", "", "*note &amp; more*"]
    rendered = table.to_html()
    assert '<span class="swatch" style="background:#ff0000"></span>x &lt;y&gt;' in rendered
    assert "<td><b>1</b></td>" in rendered and '<p class="note">note &amp; more</p>' in rendered
    with pytest.raises(ValueError, match="2 cells for 1 headers"):
        Table(["only"], [["a", "b"]])
    doc = Document("T", [Heading("H"), Paragraph(["a ", Cell("b", bold=True)])])
    assert doc.to_markdown() == "# T\n\n## H\n\na **b**\n"


def test_choose_examples_covers_classes_then_the_hardest():
    # (id, labels, score): classes 0..2; per class the median-scored image is the typical one
    items = [("a", (0,), 0.9), ("b", (0,), 0.5), ("c", (0,), 0.1), ("d", (1,), 0.7), ("e", (1, 2), 0.6),
             ("f", (2,), 0.05), ("g", (0, 1, 2), 0.8)]
    scores = {i: s for i, _, s in items}
    picked = choose_examples(items, lambda t: t[1], lambda t: t[0], 4, scores, lambda c: "abc"[c])
    # class 0: scores sorted 0.1 (c), 0.5 (b), 0.8 (g), 0.9 (a): lower median -> b; class 1: d 0.7, e 0.6,
    # g 0.8 -> d; class 2: f 0.05, e 0.6, g 0.8 -> e; then one hard slot (4 // 3): f, the lowest unpicked
    assert [e.item[0] for e in picked] == ["b", "d", "e", "f"]
    assert picked[0].reason.startswith("typical a: median image mIoU 50%")
    assert picked[-1].reason.startswith("hard case: image mIoU 5%")
    # without scores: the first image of each class, then the most crowded ones
    unscored = choose_examples(items, lambda t: t[1], lambda t: t[0], 4)
    assert [e.item[0] for e in unscored] == ["a", "d", "e", "g"]
    assert choose_examples(items, lambda t: t[1], lambda t: t[0], 0) == []
    assert candidates(list(range(10)), 4) == [0, 2, 5, 7] and candidates([1, 2], 4) == [1, 2]


def test_image_miou():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 255]], np.uint8)
    assert image_miou(truth, truth) == 1.0
    prediction = np.array([[0, 0, 0, 1], [0, 0, 1, 2]], np.uint8)
    # background: 4 / 5, class 1: 2 / 3 (the ignored pixel does not count)
    assert image_miou(prediction, truth) == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert image_miou(prediction, np.full_like(truth, 255)) is None


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
