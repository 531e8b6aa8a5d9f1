"""End-to-end tests of the ``l2g`` command on a tiny synthetic dataset (see conftest.py).

Stages run in-process through ``l2g.cli.main``; only ``--help`` goes through the installed console
script. Training is shrunk with ``--set`` overrides to a few seconds per run on one CPU thread.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from l2g.cli import main
from tests.report_checks import check_report, table_with_header

METHODS = ("cam", "local", "l2g", "l2g_shape")

# The one list of overrides that makes every stage tiny (data.root is added separately: demo sets it).
TINY_SETTINGS = [
    "data.num_classes=3",
    "data.resize_short=40",
    "data.global_size=32",
    "views.patch_size=24",
    "optim.epochs=1",
    "optim.batch_size=4",
    "model.width=4",
    "cams.scales=[1.0]",
    "threads=1",
    "seg.width=4",
    "seg.aspp_rates=[1,2]",
    "seg.crop_size=32",
    "seg.epochs=1",
    "seg.batch_size=4",
]


def tiny_set(root: Path | None = None) -> list[str]:
    """``--set`` arguments of TINY_SETTINGS, plus ``data.root`` when given."""
    settings = [*TINY_SETTINGS, *([f"data.root={root}"] if root is not None else [])]
    return [arg for setting in settings for arg in ("--set", setting)]


def run_cli(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()  # drop whatever was printed before
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def cli_ok(capsys: pytest.CaptureFixture, *argv: object) -> str:
    """``main(argv)`` in-process, which must succeed: its stdout."""
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    return out


def train_cli(capsys, root: Path, run: Path, method: str, *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, "train", "synth", "--run", run, "--set", f"method.name={method}", *tiny_set(root),
                   *extra, "--quiet")


def read_labels(cls_file: Path) -> dict[str, set[int]]:
    """{image id: class ids} of a ``train_cls.txt``-style file."""
    labels = {}
    for line in cls_file.read_text().splitlines():
        if line.strip():
            image_id, *classes = line.split()
            labels[image_id] = {int(c) for c in classes}
    return labels


def train_labels(root: Path) -> dict[str, set[int]]:
    return read_labels(root / "ImageSets" / "Segmentation" / "train_cls.txt")


def image_size(root: Path, image_id: str) -> tuple[int, int]:
    """(H, W) of a dataset image."""
    with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as image:
        return image.height, image.width


def markdown_tables(text: str) -> list[list[str]]:
    """The pipe tables of a Markdown text, each as its list of lines."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def copy_dataset(root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    return copy


# --- synth ---------------------------------------------------------------------------------------


def test_synth_writes_layout(tmp_path, capsys):
    out = tmp_path / "synth"
    code, stdout, _ = run_cli(capsys, "synth", "--out", out, "--train", 5, "--val", 2, "--classes", 3, "--quiet")
    assert code == 0
    assert str(out) in stdout
    assert (out / "COMPLETE").is_file()
    assert len(list((out / "JPEGImages").glob("*.jpg"))) == 7
    assert len(list((out / "SegmentationClassAug").glob("*.png"))) == 7
    assert len(list((out / "saliency").glob("*.png"))) == 7
    assert (out / "classes.txt").read_text().split() == ["ant", "bee", "crab"]
    sets = out / "ImageSets" / "Segmentation"
    for split, count in (("train", 5), ("val", 2)):
        ids = sets.joinpath(f"{split}.txt").read_text().split()
        assert len(ids) == count
        labels = read_labels(sets / f"{split}_cls.txt")
        assert list(labels) == ids
        for image_id, classes in labels.items():
            assert classes, image_id
            assert classes <= {0, 1, 2}, image_id
            assert (out / "JPEGImages" / f"{image_id}.jpg").is_file()
            assert (out / "SegmentationClassAug" / f"{image_id}.png").is_file()
            assert (out / "saliency" / f"{image_id}.png").is_file()


# --- the pipeline, per method ----------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_pipeline(method, tiny_root, tmp_path, capsys):
    run = tmp_path / method
    labels = train_labels(tiny_root)

    code, stdout, err = train_cli(capsys, tiny_root, run, method)
    assert code == 0, err
    assert "final.pt" in stdout
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "final.pt").is_file()
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert records
    assert all(math.isfinite(record["loss"]) for record in records)

    # cams: one pickle-free .npz per train image holding exactly its labels, float16 maps at its size in [0, 1]
    code, _, err = run_cli(capsys, "cams", "--run", run, "--quiet")
    assert code == 0, err
    cams_dir = run / "cams"
    assert sorted(p.stem for p in cams_dir.glob("*.npz")) == sorted(labels)
    assert not list(cams_dir.glob("*.npy"))
    for image_id, classes in labels.items():
        with np.load(cams_dir / f"{image_id}.npz", allow_pickle=False) as archive:
            assert sorted(archive.files) == ["classes", "maps"]
            stored, maps = archive["classes"], archive["maps"]
        assert maps.dtype == np.float16 and maps.shape[0] == len(stored)
        assert stored.tolist() == sorted(classes), image_id
        for key, cam in zip(stored.tolist(), maps.astype(np.float32), strict=True):
            assert cam.shape == image_size(tiny_root, image_id), (image_id, key)
            assert np.isfinite(cam).all()
            assert cam.min() >= 0 and cam.max() <= 1 + 1e-6, (image_id, key)
            assert cam.max() == pytest.approx(1.0, abs=1e-5) or cam.max() == 0, (image_id, key)

    # eval-cams: a sweep with a best threshold
    code, stdout, err = run_cli(capsys, "eval-cams", "--run", run, "--quiet")
    assert code == 0, err
    assert "best threshold" in stdout
    sweep = json.loads((run / "sweep.json").read_text())
    best = sweep["best"]
    assert best["threshold"] in sweep["thresholds"]
    assert 0 <= best["miou"] <= 1
    assert sweep["images"] == len(labels)

    # pseudo masks at the best threshold: palette PNGs holding background and the image's classes only
    code, _, err = run_cli(capsys, "pseudo", "--run", run, "--quiet")
    assert code == 0, err
    pseudo_dir = run / "pseudo"
    assert sorted(p.stem for p in pseudo_dir.glob("*.png")) == sorted(labels)
    for image_id, classes in labels.items():
        with Image.open(pseudo_dir / f"{image_id}.png") as picture:
            assert picture.mode == "P"
            mask = np.array(picture)
        assert mask.shape == image_size(tiny_root, image_id)
        assert set(np.unique(mask).tolist()) <= {0, *(c + 1 for c in classes)}, image_id

    # no map exceeds 1.0, and ties go to background: all masks are background
    code, _, err = run_cli(capsys, "pseudo", "--run", run, "--threshold", "1.0", "--quiet")
    assert code == 0, err
    for image_id in labels:
        with Image.open(pseudo_dir / f"{image_id}.png") as picture:
            assert not np.array(picture).any(), image_id


# --- usage errors --------------------------------------------------------------------------------


def test_train_into_finished_run_is_refused(tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = train_cli(capsys, tiny_root, run, "cam")
    assert code == 0, err
    final = run / "checkpoints" / "final.pt"
    mtime = final.stat().st_mtime_ns
    code, _, err = train_cli(capsys, tiny_root, run, "cam")
    assert code == 2
    assert "exists" in err
    assert str(final) in err
    assert final.stat().st_mtime_ns == mtime


def test_train_logs_kt_stuck_and_reports_a_stuck_transfer(tiny_root, tmp_path, capsys, monkeypatch):
    from l2g.method.diagnostics import StuckMonitor

    code, _, err = train_cli(capsys, tiny_root, tmp_path / "quiet", "l2g")
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "quiet" / "train_log.jsonl").read_text().splitlines()]
    assert all(0.0 <= record["kt_stuck"] <= 1.0 for record in records)
    assert json.loads((tmp_path / "quiet" / "train_metrics.json").read_text())["warnings"] == []
    # The wiring from the log to the user: a monitor that trips on anything must be heard and recorded.
    monkeypatch.setattr("l2g.stages.train.StuckMonitor", lambda **kw: StuckMonitor(threshold=0.0, window=1, **kw))
    code, _, err = train_cli(capsys, tiny_root, tmp_path / "loud", "l2g")
    assert code == 0, err
    assert "warning: attention transfer is stuck at iteration 0" in err
    assert "set method.transfer_loss=kl" in err  # it says what to change
    warnings = json.loads((tmp_path / "loud" / "train_metrics.json").read_text())["warnings"]
    assert len(warnings) == 1 and warnings[0] in err


def test_train_logs_kt_contrast_and_reports_a_failed_transfer_at_the_end(tiny_root, tmp_path, capsys, monkeypatch):
    from l2g.method.diagnostics import ContrastMonitor

    # Any contrast is below a bar of 1000: the wiring from the log to the user must say so and record it.
    monkeypatch.setattr("l2g.stages.train.ContrastMonitor", lambda **kw: ContrastMonitor(window=1, level=1000.0, **kw))
    code, _, err = train_cli(capsys, tiny_root, tmp_path / "run", "l2g")
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert all(record["kt_contrast"] > 0 for record in records)
    assert "warning: attention transfer failed" in err and "fewer optim.epochs" in err
    warnings = json.loads((tmp_path / "run" / "train_metrics.json").read_text())["warnings"]
    assert len(warnings) == 1 and warnings[0] in err


def test_unknown_override_key_suggests(tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "synth", "--run", run, "--set", "method.nme=l2g", *tiny_set(tiny_root),
                           "--quiet")
    assert code == 2
    assert "did you mean" in err
    assert "'name'" in err
    assert not run.exists()


def test_unknown_yaml_key_is_an_error(tiny_root, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(f"data:\n  root: {tiny_root}\n  num_classes: 3\noptim:\n  epoch: 1\n")
    code, _, err = run_cli(capsys, "train", config, "--run", tmp_path / "run", "--quiet")
    assert code == 2
    assert "unknown key 'epoch'" in err
    assert str(config) in err
    assert not (tmp_path / "run").exists()


def test_cams_without_run_config(tmp_path, capsys):
    folder = tmp_path / "not_a_run"
    folder.mkdir()
    code, _, err = run_cli(capsys, "cams", "--run", folder, "--quiet")
    assert code == 2
    assert str(folder / "config.yaml") in err
    assert "l2g train" in err
    assert not (folder / "cams").exists()


# --- broken datasets -----------------------------------------------------------------------------


def _delete_image(root: Path) -> Path:
    path = root / "JPEGImages" / "train_00003.jpg"
    path.unlink()
    return path


def _corrupt_image(root: Path) -> Path:
    path = root / "JPEGImages" / "train_00002.jpg"
    path.write_bytes(b"this is not a JPEG at all" * 40)
    return path


def _bad_class_id(root: Path) -> Path:
    path = root / "ImageSets" / "Segmentation" / "train_cls.txt"
    lines = path.read_text().splitlines()
    lines[1] = f"{lines[1].split()[0]} 7"
    path.write_text("\n".join(lines) + "\n")
    return path


def _delete_saliency(root: Path) -> Path:
    path = root / "saliency" / "train_00005.png"
    path.unlink()
    return path


@pytest.mark.parametrize(
    ("breaker", "method", "expected"),
    [
        (_delete_image, "cam", "not found"),
        (_corrupt_image, "cam", "unreadable"),
        (_bad_class_id, "cam", "class id 7"),
        (_delete_saliency, "l2g_shape", "saliency map"),
    ],
    ids=["missing-jpeg", "garbage-jpeg", "class-id-7", "missing-saliency"],
)
def test_broken_dataset_names_the_file(breaker, method, expected, tiny_root, tmp_path, capsys):
    root = copy_dataset(tiny_root, tmp_path)
    bad_file = breaker(root)
    run = tmp_path / "run"
    code, _, err = train_cli(capsys, root, run, method)
    assert code == 2, err
    assert str(bad_file) in err
    assert expected in err
    assert "Traceback" not in err
    assert not (run / "checkpoints").exists()


# --- demo ----------------------------------------------------------------------------------------


def test_demo_then_rerun_skips_training(tiny_root, tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", out, "--data", tiny_root, *tiny_set(), "--quiet"]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "writing the synthetic dataset" not in stdout  # the tiny dataset is complete: reused

    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert [row["method"] for row in rows] == list(METHODS)
    for row in rows:
        assert 0 <= row["miou"] <= 1
        # the synthetic set marks its parts, so every method gets the part / body / background diagnostic
        assert set(row["attention"]) == {"part", "body", "background"}
        assert all(0 <= value <= 1 for value in row["attention"].values()), row["attention"]
    summary = (out / "summary.md").read_text()
    methods_table, fit_table, seg_table = markdown_tables(summary)
    assert len(methods_table) == 1 + 1 + 4  # header, separator, one line per method
    # L2G and L2G + shape differ only in their transfer and read-out here: one run trained both
    assert (out / "l2g+l2g_shape" / "checkpoints" / "final.pt").exists()
    assert [row["shared_with"] for row in rows] == [[], [], ["l2g_shape"], ["l2g"]]
    assert [line.split(" | ")[0] for line in methods_table[2:]] == [
        "| CAM baseline", "| Local network only", "| L2G *", "| L2G + shape *"]
    assert "L2G + shape" in "".join(methods_table)
    # attention transfer fit of the two methods that have one: target vs global softmax per region
    assert "Attention transfer" in summary
    assert sum(line.startswith("| L2G |") for line in fit_table) == 1
    assert sum(line.startswith("| L2G + shape |") for line in fit_table) == 1
    fits = json.loads((out / "summary.json").read_text())["transfer_fit"]
    assert set(fits) == {"l2g", "l2g_shape"}
    for fit in fits.values():
        assert fit["regions"]["background"]["pixels"] > 0
        assert all(0 <= fit["regions"]["background"][key] <= 1 for key in ("target", "global"))
    # the segmentation end: DeepLab trained on the L2G + shape and CAM pseudo masks, evaluated on val
    seg_rows = json.loads((out / "summary.json").read_text())["segmentation"]
    assert [row["method"] for row in seg_rows] == ["l2g_shape", "cam"]
    for row in seg_rows:
        assert 0 <= row["seg_miou"] <= 1
        assert row["pseudo_miou"] == next(r["miou"] for r in rows if r["method"] == row["method"])
    assert [line.split(" | ")[0] for line in seg_table[2:]] == ["| L2G + shape", "| CAM baseline"]

    # the report as a browser shows it: summary, attention on parts, transfer fit, DeepLab, per-class,
    # config differences and provenance are tables; every figure is a PNG; the metadata is there
    page = check_report(out / "report" / "index.html", expected_tables=7, seed=0)
    deeplab = table_with_header(page, "pseudo masks from")
    assert [row[0] for row in deeplab.rows] == ["L2G + shape", "CAM baseline"]
    assert deeplab.rows[0][2] == f"{100 * seg_rows[0]['seg_miou']:.1f}"
    # the config keys that differ: the method's name, and the read-out the synth preset gives l2g (by_method;
    # its 45 epochs are overridden by the tiny settings)
    differing = table_with_header(page, "Key")
    assert [row[0] for row in differing.rows] == ["method.name", "cams.source"]
    assert differing.rows[0][1:] == list(METHODS)
    assert differing.rows[1][1:] == ["auto", "auto", "logits", "auto"]
    summary_table = table_with_header(page, "Method")
    assert summary_table.headers[-2:] == ["Training (min)", "Total (min)"]
    assert any(name.startswith("example_") for name in page.images)
    assert "losses.png" in page.images and "kt_stuck.png" in page.images  # the L2G runs log kt_stuck

    checkpoints = {m: out / m / "checkpoints" / "final.pt" for m in METHODS}
    checkpoints.update({f"{m}/seg": out / m / "seg" / "checkpoints" / "final.pt" for m in ("l2g_shape", "cam")})
    checkpoints.update({f"{m}/fit": out / m / "transfer_fit.json" for m in ("l2g", "l2g_shape")})  # kept too
    mtimes = {m: path.stat().st_mtime_ns for m, path in checkpoints.items()}
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    # Training was skipped: no checkpoint was rewritten (a timing comparison would be flaky on a busy CPU).
    assert {m: path.stat().st_mtime_ns for m, path in checkpoints.items()} == mtimes
    assert len(json.loads((out / "summary.json").read_text())["rows"]) == 4


# --- the console script ----------------------------------------------------------------------------


def _console_script() -> str:
    script = Path(sys.executable).with_name("l2g")
    if script.exists():
        return str(script)
    found = shutil.which("l2g")
    if found is None:
        pytest.skip("the l2g console script is not installed")
    return found


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"]], ids=["l2g", "l2g-train"])
def test_console_script_help(argv):
    result = subprocess.run([_console_script(), *argv], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "examples:" in result.stdout
    assert "l2g train synth --run runs/l2g_shape" in result.stdout
    assert "--set" in result.stdout


@pytest.mark.parametrize("argv", [["--help"], ["synth", "--train", "2", "--val", "1", "--quiet"]],
                         ids=["help", "synth"])
def test_closed_output_pipe_ends_quietly(argv, tmp_path):
    # `l2g ... | head -1`: the reader closes its end before we print. The work is still done (the
    # dataset written), and no traceback reaches stderr.
    if argv[0] == "synth":
        argv = [*argv, "--out", str(tmp_path / "synth")]
    process = subprocess.Popen([_console_script(), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    process.stdout.close()
    err = process.stderr.read()
    code = process.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    if argv[0] == "synth":  # our handler: the status of a process that SIGPIPE ended
        assert code == 141, err
        assert (tmp_path / "synth" / "COMPLETE").exists()


def test_building_the_cli_does_not_import_torch():
    # Every command module is imported to register its parser; torch costs about a second to import and
    # `l2g --help` / `l2g synth` do not need it, so command modules import it inside their handlers.
    code = "import sys; from l2g.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
