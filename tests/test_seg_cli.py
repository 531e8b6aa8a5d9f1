"""End-to-end tests of ``l2g seg train``, ``l2g seg eval``, ``l2g predict`` and ``l2g run`` on the tiny
synthetic dataset (tests/conftest.py), with networks and crops shrunk to seconds on one CPU thread.

The segmentation commands train on the dataset's ground-truth masks standing in for pseudo masks (any
folder of palette PNGs works), so they do not need a classification run; ``l2g run`` does the real chain.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from l2g.data.palette import load_mask
from l2g.engine import checkpoint
from l2g.stages import pipeline, seg_train
from tests.report_checks import check_report, provenance_of
from tests.test_cli import run_cli, tiny_set

SEG_SETTINGS = ["seg.arch=deeplab_small", "seg.width=4", "seg.aspp_rates=[1,2]", "seg.crop_size=32",
                "seg.epochs=2", "seg.batch_size=4", "seg.lr=0.01"]


def seg_set(*extra: str) -> list[str]:
    return [arg for setting in (*SEG_SETTINGS, *extra) for arg in ("--set", setting)]


def seg_train_cli(capsys, root: Path, run: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, "seg", "train", "synth", "--run", run, "--pseudo", root / "SegmentationClassAug",
                   *tiny_set(root), *seg_set(), *extra, "--quiet")


def split_ids(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


@pytest.fixture(scope="module")
def seg_run(tiny_root, tmp_path_factory) -> Path:
    """A finished 2-epoch segmentation run (trained once for the module)."""
    run = tmp_path_factory.mktemp("seg") / "run"
    capsys = _NoCapture()
    code, out, err = seg_train_cli(capsys, tiny_root, run)
    assert code == 0, err
    return run


class _NoCapture:
    """run_cli's capsys stand-in for a module fixture (output simply goes to the terminal)."""

    def readouterr(self) -> tuple[str, str]:
        return "", ""


def test_seg_train_writes_a_run_folder(seg_run):
    for name in ("config.yaml", "init.json", "train_log.jsonl", "train_metrics.json", "checkpoints/step-00000002.pt",
                 "checkpoints/step-00000004.pt", "checkpoints/final.pt"):  # 8 images, batch 4: 2 per epoch
        assert (seg_run / name).is_file(), name
    assert json.loads((seg_run / "init.json").read_text()) == {"pretrained": None, "from_scratch": True}
    records = [json.loads(line) for line in (seg_run / "train_log.jsonl").read_text().splitlines()]
    assert records and all(np.isfinite(r["loss"]) for r in records)
    assert records[-1]["epoch"] == 1
    final = torch.load(seg_run / "checkpoints" / "final.pt", weights_only=True)
    assert final["spec"] == {"arch": "deeplab_small", "num_classes": 4, "width": 4, "aspp_rates": [1, 2]}
    assert final["class_names"] == ["background", "ant", "bee", "crab"]


def test_seg_eval_metrics_match_the_written_predictions(seg_run, tiny_root, capsys):
    code, out, err = run_cli(capsys, "seg", "eval", "--run", seg_run, "--quiet")
    assert code == 0, err
    assert "mIoU" in out and "pixel accuracy" in out
    metrics = json.loads((seg_run / "eval_val.json").read_text())
    ids = split_ids(tiny_root, "val")
    assert metrics["images"] == len(ids) and metrics["crf"] is None
    assert 0 <= metrics["miou"] <= 1 and len(metrics["iou"]) == 4
    correct = total = 0
    for image_id in ids:
        prediction = load_mask(seg_run / "predictions" / "val" / f"{image_id}.png")
        gt = load_mask(tiny_root / "SegmentationClassAug" / f"{image_id}.png")
        assert prediction.shape == gt.shape
        valid = gt != 255
        correct += int((prediction[valid] == gt[valid]).sum())
        total += int(valid.sum())
    assert metrics["pixel_accuracy"] == pytest.approx(correct / total)

    code, out, err = run_cli(capsys, "seg", "eval", "--run", seg_run, "--crf", "--out", seg_run / "crf.json",
                             "--quiet")
    assert code == 0, err
    assert json.loads((seg_run / "crf.json").read_text())["crf"]["bi_xy_std"] == 67.0  # the deeplab preset


def _write_inputs(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    folder.mkdir()
    files = {name: folder / name for name in ("photo.jpg", "grey.png", "rgba.png", "deep.png", "wide.png")}
    Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(files["photo.jpg"])
    Image.fromarray(rng.integers(0, 256, (30, 20), dtype=np.uint8)).save(files["grey.png"])
    Image.fromarray(rng.integers(0, 256, (24, 24, 4), dtype=np.uint8), "RGBA").save(files["rgba.png"])
    Image.fromarray(rng.integers(0, 65536, (20, 28), dtype=np.uint16)).save(files["deep.png"])
    Image.fromarray(rng.integers(0, 256, (50, 900, 3), dtype=np.uint8)).save(files["wide.png"])  # > seg.max_side
    return files


def test_predict_handles_every_kind_of_image(seg_run, tmp_path, capsys):
    files = _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "predict", tmp_path / "in", "--run", seg_run, "--out", out,
                                "--set", "seg.max_side=64", "--quiet")
    assert code == 0, err
    for name, path in files.items():
        stem = Path(name).stem
        with Image.open(path) as image:
            size = image.size
        with Image.open(out / f"{stem}.png") as mask:
            assert mask.mode == "P" and mask.size == size, name  # full-size mask, also for the wide image
        with Image.open(out / f"{stem}_overlay.jpg") as picture:
            assert picture.size == size and picture.mode == "RGB", name
        assert f"{path} -> {out / f'{stem}.png'}" in stdout
    assert "background" in stdout and "%" in stdout


def test_predict_reports_bad_files_by_name_and_keeps_the_good_ones(seg_run, tmp_path, capsys):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(good)
    text = tmp_path / "readme.txt"
    text.write_text("hello")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:200])
    code, stdout, err = run_cli(capsys, "predict", text, good, cut, tmp_path / "missing.png", "--run", seg_run,
                                "--out", tmp_path / "out", "--quiet")
    assert code == 2
    assert "Traceback" not in err
    assert "3 of 4 input(s)" in err
    assert f"{text}: not an image" in err and f"{cut}: truncated" in err and "missing.png: no such image" in err
    assert (tmp_path / "out" / "good.png").is_file()


def test_predict_with_another_architecture_or_class_count_says_which(seg_run, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    code, _, err = run_cli(capsys, "predict", image, "--run", seg_run, "--out", tmp_path / "o",
                           "--set", "seg.arch=deeplab_v1_vgg16")
    assert code == 2
    assert "checkpoint is a deeplab_small network, but the config asks for deeplab_v1_vgg16" in err
    code, _, err = run_cli(capsys, "predict", image, "--run", seg_run, "--out", tmp_path / "o",
                           "--set", "data.num_classes=5")
    assert code == 2
    assert "checkpoint predicts 4 classes" in err and "config has 6" in err
    assert "Traceback" not in err


def test_seg_train_usage_errors(seg_run, tiny_root, tmp_path, capsys):
    code, _, err = seg_train_cli(capsys, tiny_root, seg_run)
    assert code == 2 and "exists" in err and "final.pt" in err
    code, _, err = run_cli(capsys, "seg", "train", "synth", "--run", tmp_path / "r", "--pseudo", tmp_path / "nothing",
                           *tiny_set(tiny_root), "--quiet")
    assert code == 2 and f"{tmp_path / 'nothing'}: pseudo-mask folder not found" in err


class Killed(BaseException):
    """A kill: unlike Ctrl-C (KeyboardInterrupt, which the command line reports), nothing handles it."""


def die_after_checkpoint(monkeypatch, folder: Path, iteration: int) -> None:
    """Make the training engine raise Killed (a kill) right after it saved the checkpoint of ``iteration``
    in ``folder``."""
    real_save = checkpoint.save_checkpoint

    def save_then_die(where, done, payload, keep):
        path = real_save(where, done, payload, keep)
        if Path(where) == folder and done == iteration:
            raise Killed
        return path

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_die)


def test_seg_train_resumed_after_a_kill_equals_an_uninterrupted_run(seg_run, tiny_root, tmp_path, capsys,
                                                                   monkeypatch):
    run = tmp_path / "killed"
    die_after_checkpoint(monkeypatch, run / "checkpoints", 3)  # epoch 2, after its first step
    with pytest.raises(Killed):
        seg_train_cli(capsys, tiny_root, run, "--set", "runtime.checkpoint_every=1")
    assert checkpoint.list_checkpoints(run / "checkpoints")[-1].name == "step-00000003.pt"
    assert not (run / "checkpoints" / "final.pt").exists()
    monkeypatch.undo()
    code, _, err = seg_train_cli(capsys, tiny_root, run)
    assert code == 2 and "holds an unfinished run" in err and "--resume" in err
    code, _, err = seg_train_cli(capsys, tiny_root, run, "--resume")  # runtime.* may change on resume
    assert code == 0, err
    assert "runtime.checkpoint_every: 1 -> 0" in err
    resumed = torch.load(run / "checkpoints" / "final.pt", weights_only=True)["model"]
    straight = torch.load(seg_run / "checkpoints" / "final.pt", weights_only=True)["model"]
    assert resumed.keys() == straight.keys()
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key
    assert (run / "train_log.jsonl").read_text() == (seg_run / "train_log.jsonl").read_text()  # one log
    code, _, err = seg_train_cli(capsys, tiny_root, run, "--resume", "--set", "seg.lr=0.5")
    assert code == 2 and "seg.lr: 0.01 -> 0.5" in err


def test_seg_train_stops_on_a_nan_loss_naming_iteration_and_images(tiny_root, tmp_path, capsys, monkeypatch):
    calls = []

    def poisoned(model, batch):
        losses = seg_train.segmentation_loss(model, batch["image"], batch["mask"])
        calls.append(batch["index"].tolist())
        return {"loss": losses["loss"] * float("nan")} if len(calls) == 2 else losses

    monkeypatch.setattr(seg_train, "segmentation_step", poisoned)
    run = tmp_path / "nan"
    code, _, err = seg_train_cli(capsys, tiny_root, run, "--set", "runtime.checkpoint_every=1")
    assert code == 2 and "Traceback" not in err
    ids = [f"train_{i:05d}" for i in calls[1]]
    assert "non-finite loss at iteration 1 (epoch 1, step 2 of 2)" in err and f"images {ids}" in err
    assert f"the last good checkpoint is {run / 'checkpoints' / 'step-00000001.pt'}" in err
    assert [p.name for p in checkpoint.list_checkpoints(run / "checkpoints")] == ["step-00000001.pt"]


def test_pseudo_mask_crf_refinement_before_training(tiny_root, tmp_path, capsys):
    run = tmp_path / "crf"
    code, _, err = seg_train_cli(capsys, tiny_root, run, "--set", "seg.epochs=1", "--set",
                                 "seg.pseudo_crf.enabled=true")
    assert code == 0, err
    ids = split_ids(tiny_root, "train")
    assert sorted(p.stem for p in (run / "pseudo_crf").glob("*.png")) == sorted(ids)
    assert json.loads((run / "train_metrics.json").read_text())["pseudo_crf"] is True


# --- l2g run -----------------------------------------------------------------------------------------------


def _count_calls(monkeypatch) -> dict[str, int]:
    """Wrap every library function the pipeline stages call with a counter."""
    names = ("train", "infer_cams", "choose_pipeline_threshold", "write_pseudo_masks", "train_segmentation",
             "evaluate_segmentation", "write_run_report")
    counts = dict.fromkeys(names, 0)
    for name in names:
        real = getattr(pipeline, name)

        def counted(*args, _name=name, _real=real, **kwargs):
            counts[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(pipeline, name, counted)
    return counts


def _mtimes(paths: list[Path]) -> list[int]:
    return [path.stat().st_mtime_ns for path in paths]


def test_run_pipeline_continues_after_kills_without_redoing_finished_stages(tiny_root, tmp_path, capsys,
                                                                          monkeypatch):
    out = tmp_path / "pipeline"
    argv = ["run", "synth", "--out", out, *tiny_set(tiny_root), *seg_set(), "--quiet", "--allow-degenerate-masks"]

    # 1. killed in the middle of segmentation training, after its first epoch
    die_after_checkpoint(monkeypatch, out / "seg" / "checkpoints", 2)
    with pytest.raises(Killed):
        run_cli(capsys, *argv)
    monkeypatch.undo()
    done = sorted(p.name for p in (out / "stages").glob("*.done.json"))
    assert done == ["cams.done.json", "pseudo.done.json", "threshold.done.json", "train.done.json"]
    assert (out / "stages" / "seg_train.started.json").is_file()
    finished = [out / "cls" / "checkpoints" / "final.pt", next((out / "cls" / "cams").glob("*.npz")),
                out / "cls" / "sweep.json", next((out / "cls" / "pseudo").glob("*.png"))]
    before = _mtimes(finished)

    # 2. rerun: the four finished stages are skipped, seg training resumes, and evaluation is killed
    counts = _count_calls(monkeypatch)

    def evaluation_killed(*args, **kwargs):
        counts["evaluate_segmentation"] += 1
        raise Killed

    monkeypatch.setattr(pipeline, "evaluate_segmentation", evaluation_killed)
    capsys.readouterr()
    with pytest.raises(Killed):
        run_cli(capsys, *argv)
    assert "seg_train (segmentation training): resuming an interrupted run" in capsys.readouterr().out
    assert counts == {"train": 0, "infer_cams": 0, "choose_pipeline_threshold": 0, "write_pseudo_masks": 0,
                      "train_segmentation": 1, "evaluate_segmentation": 1, "write_run_report": 0}
    assert _mtimes(finished) == before
    seg_final = out / "seg" / "checkpoints" / "final.pt"
    seg_before = _mtimes([seg_final])

    # 3. rerun: only evaluation and the report
    monkeypatch.undo()
    counts = _count_calls(monkeypatch)
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert counts == {"train": 0, "infer_cams": 0, "choose_pipeline_threshold": 0, "write_pseudo_masks": 0,
                      "train_segmentation": 0, "evaluate_segmentation": 1, "write_run_report": 1}
    assert _mtimes(finished) == before and _mtimes([seg_final]) == seg_before
    assert 0 <= json.loads((out / "seg" / "eval_val.json").read_text())["miou"] <= 1

    # 4. rerun: everything complete; 5. a changed inference setting reruns evaluation and the report only
    code, stdout, _ = run_cli(capsys, *argv)
    assert code == 0 and stdout.count("complete, skipped") == 7
    assert counts["evaluate_segmentation"] == 1 and counts["write_run_report"] == 1
    code, stdout, _ = run_cli(capsys, *argv[:-1], "--set", "seg.test_flip=false", "--quiet")
    assert code == 0 and "config changed (seg.test_flip)" in stdout
    assert counts == {"train": 0, "infer_cams": 0, "choose_pipeline_threshold": 0, "write_pseudo_masks": 0,
                      "train_segmentation": 0, "evaluate_segmentation": 2, "write_run_report": 2}
    # 6. runtime.* says how training runs, not what it computes (as for --resume): nothing reruns
    code, stdout, _ = run_cli(capsys, *argv[:-1], "--set", "seg.test_flip=false", "--set",
                              "runtime.checkpoint_every=3", "--quiet")
    assert code == 0 and stdout.count("complete, skipped") == 7
    assert counts["evaluate_segmentation"] == 2 and counts["write_run_report"] == 2

    _check_report(out / "report")


def _check_report(report: Path) -> None:
    page = check_report(report / "index.html", expected_tables=3, seed=0)  # summary, per-class, provenance
    assert {"threshold_curve.png", "losses.png"} <= set(page.images)
    assert any(s.startswith("train_") for s in page.images) and any(s.startswith("val_") for s in page.images)
    markdown = (report / "report.md").read_text()
    assert sorted(re.findall(r"\]\(([^)]+\.png)\)", markdown)) == sorted(page.images)
    for heading in ("Summary", "Per-class results (%)", "Training", "Config", "Provenance"):
        assert heading in page.headings and f"## {heading}" in markdown
    provenance = provenance_of(page)
    assert provenance["segmentation init"] == "from scratch"
    assert provenance["commit (training runs)"] != "not recorded"  # train_metrics.json records it


def test_run_refuses_an_unknown_stage(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", "synth", "--out", tmp_path / "p", "--until", "nope")
    assert code == 2 and "not a stage" in err
    code, _, err = run_cli(capsys, "run", "synth", "--out", tmp_path / "p", "--set", "seg.train_split=trainval")
    assert code == 2 and "cams.split='train'" in err
    assert not (tmp_path / "p").exists()


def test_help_of_the_new_commands(capsys):
    for argv in (["seg", "train", "--help"], ["predict", "--help"], ["run", "--help"], ["export-voc", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(capsys, *argv)
        assert exit_info.value.code == 0
        assert "examples:" in capsys.readouterr().out


def test_copying_a_run_keeps_it_usable(seg_run, tmp_path, capsys):
    """A run folder is self-contained: copied elsewhere, it still evaluates and predicts."""
    copy = tmp_path / "copy"
    shutil.copytree(seg_run, copy)
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    code, _, err = run_cli(capsys, "predict", image, "--run", copy, "--out", tmp_path / "o", "--quiet")
    assert code == 0, err


def test_seg_train_from_a_pretrained_file_records_it(seg_run, tiny_root, tmp_path, capsys):
    """Backbone weights from a local file (here: the backbone of an earlier run, ImageNet-style naming):
    loaded, recorded with the file's sha256, and trained at x1 while the new head gets x10."""
    trained = torch.load(seg_run / "checkpoints" / "final.pt", weights_only=True)["model"]
    weights = tmp_path / "backbone.pth"
    torch.save({k.removeprefix("backbone."): v for k, v in trained.items() if k.startswith("backbone.")}, weights)
    run = tmp_path / "pretrained"
    code, _, err = seg_train_cli(capsys, tiny_root, run, "--set", f"seg.pretrained={weights}", "--set",
                                 "seg.pretrained_dataset=coco", "--set", "seg.epochs=1")
    assert code == 0, err
    init = json.loads((run / "init.json").read_text())
    assert init["from_scratch"] is False
    assert init["pretrained"]["dataset"] == "coco" and init["pretrained"]["path"] == str(weights.resolve())
    assert init["pretrained"]["tensors_loaded"] == sum(1 for k in trained if k.startswith("backbone."))
    assert json.loads((run / "train_metrics.json").read_text())["init"] == init
    groups = torch.load(run / "checkpoints" / "step-00000002.pt", weights_only=True)["optimizer"]["param_groups"]
    assert sorted(g["lr_mult"] for g in groups) == [1.0, 2.0, 10.0, 20.0]
    head = [g for g in groups if g["lr_mult"] in (10.0, 20.0)]
    assert sum(len(g["params"]) for g in head) == 2 * 2  # the two ASPP branches' weights and biases
