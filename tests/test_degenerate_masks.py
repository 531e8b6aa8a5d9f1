"""Degenerate pseudo masks (almost all background or all foreground) stop ``l2g run`` before the segmentation
stage, with the measured share and what to change; ``--allow-degenerate-masks`` (``allow_degenerate_masks=True``
in Python) goes on; rerunning after the fix continues where the run stopped, as after any other stop."""

from __future__ import annotations

import numpy as np
import pytest

import l2g
from l2g.data.palette import save_mask
from l2g.errors import DegenerateMasksError
from l2g.stages.threshold import check_pseudo_masks
from tests.test_cli import TINY_SETTINGS, run_cli, tiny_set
from tests.test_cli_help import help_text

pytestmark = pytest.mark.usefixtures("one_thread")

# CAM's maps are normalised per class, so the threshold moves their foreground share over (0, 1): at 1.0 no
# pixel exceeds it (all background, the stop), at 0.5 about 70% of the tiny set's pixels do (no stop).
CAM = ["method.name=cam", "seg.epochs=1"]


def ran(printed: str) -> dict[str, str]:
    """{stage: what the pipeline did with it} from its ``[i/7] stage (...): what`` lines."""
    lines = [line.split("] ", 1)[1] for line in printed.splitlines() if line.startswith("[")]
    return {line.split(" ")[0]: line.split("): ", 1)[1] for line in lines}


def run_argv(root, out, *extra: str) -> list[object]:
    return ["run", "synth", "--out", out, *tiny_set(root), *[a for s in CAM for a in ("--set", s)], *extra, "--quiet"]


def test_run_stops_before_seg_train_on_all_background_masks_and_goes_on_after_the_fix(tiny_root, tmp_path, capsys):
    out = tmp_path / "p"
    empty = ("--set", "eval.threshold=1.0")

    # --until pseudo: the masks are what was asked for; only a warning
    code, printed, err = run_cli(capsys, *run_argv(tiny_root, out, *empty, "--until", "pseudo"))
    assert code == 0, err
    assert "100% background at threshold 1.00" in err and "lower the threshold" in err

    # the whole run: stops before seg_train, saying how much foreground there is and what to change
    code, printed, err = run_cli(capsys, *run_argv(tiny_root, out, *empty))
    assert code == 2 and "Traceback" not in err
    assert "l2g run: error: degenerate pseudo masks: 0.00% of their" in err
    assert "the pipeline stops below 2% and above 95%, before the segmentation stage" in err
    assert "lower the threshold (--set eval.threshold=T" in err and "--allow-degenerate-masks" in err
    assert ran(printed) == dict.fromkeys(["train", "cams", "threshold", "pseudo"], "complete, skipped")
    assert not (out / "seg").exists() and not (out / "stages" / "seg_train.started.json").exists()
    assert (out / "stages" / "pseudo.done.json").is_file()

    # the Python API stops the same way
    config = l2g.load_config("synth", [*TINY_SETTINGS, f"data.root={tiny_root}", *CAM, "eval.threshold=1.0"])
    with pytest.raises(DegenerateMasksError, match="0.00% of their"):
        l2g.run_pipeline(config, out, progress=False)
    assert not (out / "seg").exists()

    # the flag: the same masks, and the segmentation network trained on them
    code, printed, err = run_cli(capsys, *run_argv(tiny_root, out, *empty, "--allow-degenerate-masks", "--until",
                                                   "seg_train"))
    assert code == 0, err
    assert ran(printed) == {**dict.fromkeys(["train", "cams", "threshold", "pseudo"], "complete, skipped"),
                            "seg_train": "running (not done yet)"}
    assert "training the segmentation network on them anyway (--allow-degenerate-masks)" in err
    assert (out / "seg" / "checkpoints" / "final.pt").is_file()

    # fixed (a threshold the maps exceed on part of the image): the threshold and the masks are redone, and
    # the segmentation stage after them, without the flag; training and maps are kept
    code, printed, err = run_cli(capsys, *run_argv(tiny_root, out, "--set", "eval.threshold=0.5"))
    assert code == 0, err
    stages = ran(printed)
    assert stages["train"] == stages["cams"] == "complete, skipped"
    assert stages["threshold"].startswith("running (config changed (eval.threshold))")
    assert all(stages[name] == "running (an earlier stage was redone)" for name in ("pseudo", "seg_train"))
    assert "degenerate" not in err and "background at threshold" not in err
    assert (out / "report" / "index.html").is_file()


def test_the_check_names_the_share_and_all_foreground_advice_and_the_flag_only_warns(tmp_path, capsys):
    for index in range(3):
        save_mask(tmp_path / f"{index}.png", np.ones((8, 8), np.uint8))
    with pytest.raises(DegenerateMasksError) as stopped:
        check_pseudo_masks(tmp_path, 0.05)
    message = str(stopped.value)
    assert message.startswith("degenerate pseudo masks: 100.00% of their 192 labelled pixels are foreground")
    assert "Raise the threshold" in message and "check the labels" in message
    assert "rerun the same command" in message and "--allow-degenerate-masks" in message

    capsys.readouterr()
    check_pseudo_masks(tmp_path, 0.05, allow=True)
    err = capsys.readouterr().err
    assert err.startswith("warning: the pseudo masks in") and "anyway (--allow-degenerate-masks)" in err

    # ignore pixels do not count, and a balanced set passes silently
    mask = np.full((8, 8), 255, np.uint8)
    mask[:4], mask[4:6] = 0, 1
    for index in range(3):
        save_mask(tmp_path / f"{index}.png", mask)
    check_pseudo_masks(tmp_path, 0.3)
    assert capsys.readouterr().err == ""


def test_run_help_names_the_flag(capsys):
    text = " ".join(help_text(capsys, ["run"]).split())
    assert "--allow-degenerate-masks train the segmentation network even on pseudo masks that are almost all" in text
    assert "stop the run before seg_train" in text
