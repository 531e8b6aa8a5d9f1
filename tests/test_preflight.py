"""Files that LATER stages read are checked before the first training iteration (l2g.stages.preflight):
``l2g run`` fails at once, naming the file; ``l2g train`` fails on the class names and warns about the
rest. A file that no stage of the run will read is not required."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from l2g.config import load_config
from l2g.stages import seg_train
from l2g.stages.preflight import check_later_inputs, later_input_problems
from tests.test_cli import run_cli, tiny_set
from tests.test_seg_cli import seg_set

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def root(tiny_root, tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(tiny_root, copy)
    return copy


def ids(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def run_argv(root: Path, out: Path, *extra: str) -> list[object]:
    # tiny runs make degenerate pseudo masks: the flag lets those that get that far go on
    return ["run", "synth", "--out", out, *tiny_set(root), *seg_set("seg.epochs=1"), *extra, "--quiet",
            "--allow-degenerate-masks"]


def nothing_trained(out: Path) -> bool:
    return not (out / "cls" / "checkpoints").exists()


def test_run_stops_before_training_on_a_missing_val_mask(root, tmp_path, capsys):
    missing = root / "SegmentationClassAug" / f"{ids(root, 'val')[1]}.png"
    missing.unlink()
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, *run_argv(root, out))
    assert code == 2 and nothing_trained(out)
    assert "segmentation evaluation scores split 'val' against its masks" in err
    assert f"{missing}: mask for image id" in err and "not found" in err


def test_run_stops_before_training_on_a_corrupt_val_mask_when_decoding(root, tmp_path, capsys):
    broken = root / "SegmentationClassAug" / f"{ids(root, 'val')[0]}.png"
    broken.write_bytes(broken.read_bytes()[:40])  # truncated
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, *run_argv(root, out))  # data.check_images=decode is the default
    assert code == 2 and nothing_trained(out) and str(broken) in err
    # with check_images=exists the file exists, so nothing is decoded up front: the run gets past it
    # (until the threshold stage here, which does not read val masks)
    code, printed, err = run_cli(capsys, *run_argv(root, out, "--set", "data.check_images=exists", "--until",
                                                   "threshold"))
    assert code == 0, err


def test_run_checks_a_corrupt_mask_of_the_training_split_scored_by_eval_cams(root, tmp_path, capsys):
    broken = root / "SegmentationClassAug" / f"{ids(root, 'train')[0]}.png"
    broken.write_bytes(broken.read_bytes()[:40])
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, *run_argv(root, out, "--until", "threshold"))
    assert code == 2 and nothing_trained(out)
    assert "eval-cams scores split 'train' against its masks" in err and str(broken) in err


def test_masks_of_the_labelled_split_are_needed_only_without_eval_threshold(root, tmp_path, capsys):
    for image_id in ids(root, "train"):
        (root / "SegmentationClassAug" / f"{image_id}.png").unlink()
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, *run_argv(root, out, "--until", "pseudo"))
    assert code == 2 and nothing_trained(out)
    assert "set eval.threshold to skip it" in err
    # with eval.threshold the pipeline labels the split without scoring it: no masks needed
    code, printed, err = run_cli(capsys, *run_argv(root, out, "--until", "pseudo", "--set", "eval.threshold=0.3"))
    assert code == 0, err
    assert "background threshold 0.30 (eval.threshold)" in printed
    assert len(list((out / "cls" / "pseudo").glob("*.png"))) == len(ids(root, "train"))


def test_run_names_a_missing_segmentation_weights_file_before_training(root, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, *run_argv(root, out, "--set", "seg.arch=deeplab_v2_resnet101", "--set",
                                             "seg.pretrained=weights/resnet101.pth"))
    assert code == 2 and nothing_trained(out)
    assert "weights/resnet101.pth: segmentation weights file not found (seg.pretrained" in err
    assert "resnet101-63fe2227.pth" in err and "--set seg.pretrained=scratch" in err
    # a stage that is not run does not need it
    code, _, err = run_cli(capsys, *run_argv(root, out, "--set", "seg.pretrained=weights/resnet101.pth",
                                             "--until", "train"))
    assert code == 0, err


def test_a_bad_classes_file_stops_train_before_anything_is_written(root, tmp_path, capsys):
    (root / "classes.txt").write_text("cat\ndog\n")  # 2 names for 3 classes
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "synth", "--run", run, *tiny_set(root), "--quiet")
    assert code == 2 and not run.exists()
    assert f"{root / 'classes.txt'}: 2 class names for 3 configured classes" in err


def test_train_warns_about_missing_masks_and_trains(root, tmp_path, capsys):
    missing = root / "SegmentationClassAug" / f"{ids(root, 'train')[0]}.png"
    missing.unlink()
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "synth", "--run", run, *tiny_set(root), "--quiet")
    assert code == 0, err
    assert "warning: a later stage will fail: eval-cams scores split 'train'" in err and str(missing) in err
    assert (run / "checkpoints" / "final.pt").is_file()


def test_a_classes_file_with_a_background_line_runs_through_eval_cams(root, tmp_path, capsys):
    names = (root / "classes.txt").read_text().split()
    (root / "classes.txt").write_text("\n".join(["_background_", *names]) + "\n")  # labelme's form
    run = tmp_path / "run"
    for argv in (["train", "synth", "--run", run, *tiny_set(root)], ["cams", "--run", run],
                 ["eval-cams", "--run", run]):
        code, printed, err = run_cli(capsys, *argv, "--quiet")
        assert code == 0, err
    assert json.loads((run / "sweep.json").read_text())["class_names"] == ["background", *names]
    assert names[0] in printed


def test_scratch_warning_for_a_large_deeplab_only(root, capsys):
    config = load_config("synth", [f"data.root={root}", "data.num_classes=3", "seg.arch=deeplab_v2_resnet101",
                                   "seg.pretrained=scratch"])
    assert later_input_problems(config, ["seg_train"]) == []
    check_later_inputs(config, ["seg_train"])
    err = capsys.readouterr().err
    assert "warning: DeepLab-v2 ASPP (ResNet-101) trains from random weights (seg.pretrained=scratch)" in err
    record = seg_train._initialise(None, config)
    assert record["from_scratch"] and "random weights" in record["warning"]
    assert "random weights" in capsys.readouterr().err  # printed by l2g seg train as well
    config.seg.arch = "deeplab_small"  # the CPU network has no pretrained weights to miss
    check_later_inputs(config, ["seg_train"])
    assert capsys.readouterr().err == "" and "warning" not in seg_train._initialise(None, config)


def test_a_deeplab_pytorch_weights_file_is_refused_with_a_hint(tmp_path):
    """The release's deeplab-pytorch files (caffe-converted, their own naming) do not load: the error says so."""
    import torch

    from l2g.config import SegConfig
    from l2g.segmentation.loading import build_seg_model, load_pretrained

    path = tmp_path / "deeplabv1_resnet101-coco.pth"
    torch.save({"base.layer1.conv1.conv.weight": torch.zeros(64, 3, 7, 7), "base.aspp.c0.weight": torch.zeros(1)},
               path)
    model = build_seg_model(SegConfig(arch="deeplab_small", width=4, aspp_rates=(1, 2)), 4)
    with pytest.raises(ValueError, match=r"no tensor of this file fits .* deeplab-pytorch \(caffe-converted\) file"):
        load_pretrained(model, path)
