"""``l2g prepare voc`` on a tiny VOCdevkit written by the test: every label source gives the same lists,
counts are checked, and the result loads through the config (data.format=voc)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from dataset_makers import make_voc

from l2g.cli import main
from l2g.config import load_config
from l2g.data.errors import DatasetError
from l2g.data.labels import VOC_CLASSES, read_class_list
from l2g.data.layout import read_id_list
from l2g.data.palette import save_mask
from l2g.data.prepare_voc import EXPECTED_COUNTS, count_problems, find_voc_root, prepare_voc
from l2g.data.splits import dataset_class_names, split_samples

SPLITS = ("train_aug", "train", "val")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_voc(tmp_path_factory.mktemp("voc"))


@pytest.fixture
def voc(pristine: dict, tmp_path: Path) -> dict:
    """A fresh copy of the tiny VOC (tests write into it)."""
    base = tmp_path / "data"
    shutil.copytree(pristine["voc"].parents[1], base)
    return {**pristine, "voc": base / "VOCdevkit" / "VOC2012", "base": base}


def cls_file(voc: Path, split: str) -> Path:
    return voc / "ImageSets" / "Segmentation" / f"{split}_cls.txt"


def expected(truth: dict, split: str) -> dict:
    return {image_id: truth["labels"][image_id] for image_id in truth[split]}


def run(voc: dict, **kwargs) -> tuple[Path, list, list[str]]:
    lines: list[str] = []
    root, summaries = prepare_voc(voc["base"], count_check=False, progress=False, log=lines.append, **kwargs)
    return root, summaries, lines


@pytest.mark.parametrize(
    ("labels", "given"),
    [("auto", None), ("xml", None), ("masks", None), ("npy", "irn_cls_labels.npy"),
     ("npy", "seam_cls_labels.npy"), ("auto", "train_cls.txt")],
)
def test_every_label_source_writes_the_true_labels(voc, labels, given):
    cls_labels = voc["downloads"] / given if given else None
    root, summaries, _ = run(voc, labels=labels, cls_labels=cls_labels)
    assert root == voc["voc"]
    for split in SPLITS:
        assert read_class_list(cls_file(root, split), 20) == expected(voc, split)
    assert [s.images for s in summaries] == [len(voc[s]) for s in SPLITS]


def test_train_cls_txt_covering_train_aug_only_falls_back_for_val(voc):
    _, summaries, lines = run(voc, cls_labels=voc["downloads"] / "train_cls.txt")
    sources = {s.split: s.labels_from for s in summaries}
    assert sources["train_aug"].endswith("train_cls.txt (cls_txt)")
    assert sources["train"].endswith("train_cls.txt (cls_txt)")
    assert sources["val"].endswith("Annotations (xml)")
    assert any("val" in line and "has no labels for 3 of the 3 val ids" in line for line in lines)


def test_an_explicit_source_that_misses_ids_is_an_error(voc):
    with pytest.raises(DatasetError, match=r"train_cls\.txt \(cls_txt\) has no labels for 3 of the 3 val ids"):
        run(voc, labels="cls_txt", cls_labels=voc["downloads"] / "train_cls.txt")


def test_train_aug_is_derived_from_the_augmented_masks_minus_val(voc):
    _, summaries, lines = run(voc)
    path = voc["voc"] / "ImageSets" / "Segmentation" / "train_aug.txt"
    assert read_id_list(path) == voc["train_aug"]
    assert summaries[0].list_derived and not summaries[1].list_derived
    assert any("derived" in line and "7 ids" in line for line in lines)
    assert (voc["voc"] / "classes.txt").read_text().split() == list(VOC_CLASSES)


def test_missing_saliency_maps_are_noted(voc):
    (voc["voc"] / "saliency" / f"{voc['train'][0]}.png").unlink()
    _, summaries, lines = run(voc)
    assert [s.saliency for s in summaries] == [6, 3, 3]
    assert any(line.startswith("note: train_aug: 6 of 7 images have a saliency map") for line in lines)
    assert not any(line.startswith("note: val") for line in lines)


def test_rerun_keeps_the_written_lists(voc):
    run(voc, labels="xml")
    before = cls_file(voc["voc"], "val").stat().st_mtime_ns
    _, summaries, _ = run(voc)  # auto now finds the split's own <split>_cls.txt first
    assert all(not s.cls_written for s in summaries)
    assert cls_file(voc["voc"], "val").stat().st_mtime_ns == before


def test_count_check(voc):
    with pytest.raises(DatasetError) as info:
        prepare_voc(voc["base"], progress=False, log=lambda _: None)
    message = str(info.value)
    assert "train_aug: 7 images, expected 10,582" in message and "val: 3 images, expected 1,449" in message
    assert "--no-count-check" in message
    assert count_problems(dict(EXPECTED_COUNTS)) == []
    assert count_problems({"train": 1463, "other": 5}) == ["train: 1,463 images, expected 1,464"]


def test_root_may_be_any_level_of_vocdevkit(voc):
    for given in (voc["base"], voc["base"] / "VOCdevkit", voc["voc"]):
        assert find_voc_root(given) == voc["voc"]
    with pytest.raises(DatasetError, match="no PASCAL VOC 2012 here"):
        find_voc_root(voc["downloads"])


def test_wrong_labels_in_masks_are_reported_by_file(voc):
    bad = voc["voc"] / "SegmentationClassAug" / f"{voc['val'][0]}.png"
    save_mask(bad, np.full((8, 8), 30, np.uint8))
    with pytest.raises(DatasetError, match=rf"{bad.name}: mask values \[30\] outside 0..20"):
        run(voc, labels="masks")


def test_missing_image_is_reported(voc):
    (voc["voc"] / "JPEGImages" / f"{voc['train'][1]}.jpg").unlink()
    with pytest.raises(DatasetError, match=rf"{voc['train'][1]}\.jpg: image for id"):
        run(voc)


def test_cli_then_training_config_loads_every_split(voc, capsys):
    code = main(["prepare", "voc", "--root", str(voc["base"]), "--no-count-check", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"data.root={voc['voc']}" in out and "train_aug" in out
    config = load_config(None, [f"data.root={voc['voc']}", "data.format=voc", "data.num_classes=20",
                                "data.train_split=train_aug"])
    for split in SPLITS:
        samples = split_samples(config, split, need_masks=True, need_saliency=True)
        assert {s.image_id: s.labels for s in samples} == expected(voc, split)
        assert all(s.mask_path is not None and s.saliency_path is not None for s in samples)
    assert dataset_class_names(config) == list(VOC_CLASSES)


def test_cli_count_error_exits_2(voc, capsys):
    code = main(["prepare", "voc", "--root", str(voc["voc"]), "--quiet"])
    assert code == 2
    assert "l2g prepare: error:" in capsys.readouterr().err
