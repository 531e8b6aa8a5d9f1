"""``l2g prepare coco`` on a tiny COCO-layout fixture: category mapping, the overlap and crowd rules,
dropped images, resumability, atomic writes, and loading the result with data.format=coco."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from dataset_makers import COCO_NAMES, HEIGHT, WIDTH, make_coco, rle_of

from l2g.cli import main
from l2g.config import load_config
from l2g.data.coco_json import CocoImage, Instance, read_instances, rle_string_counts
from l2g.data.errors import DatasetError
from l2g.data.labels import read_class_list
from l2g.data.layout import read_id_list
from l2g.data.palette import IGNORE_INDEX, load_mask
from l2g.data.prepare_coco import MASK_DIR, prepare_coco, semantic_mask
from l2g.data.splits import dataset_class_names, split_samples


@pytest.fixture
def coco(tmp_path: Path) -> dict:
    root = tmp_path / "coco"
    return {"root": root, "train2014": make_coco(root, "train2014", 1), "val2014": make_coco(root, "val2014", 100)}


def prepare(root: Path, **kwargs):
    lines: list[str] = []
    out, summaries = prepare_coco(root, count_check=False, progress=False, log=lines.append, **kwargs)
    return out, summaries, lines


def mask_of(root: Path, image_id: str) -> np.ndarray:
    return load_mask(root / MASK_DIR / f"{image_id}.png")


def test_masks_lists_and_classes(coco):
    root = coco["root"]
    out, summaries, lines = prepare(root)
    assert out == root
    assert (root / "classes.txt").read_text().split() == COCO_NAMES  # ids 1, 3, 90 sorted -> 1, 2, 3
    for split in ("train2014", "val2014"):
        truth = coco[split]
        sets = root / "ImageSets" / "Segmentation"
        assert read_id_list(sets / f"{split}.txt") == truth["kept"]
        assert read_class_list(sets / f"{split}_cls.txt", 3) == truth["labels"]
        for dropped in truth["dropped"]:
            assert not (root / MASK_DIR / f"{dropped}.png").exists()
    assert [(s.images, s.kept, s.written, s.skipped) for s in summaries] == [(5, 3, 3, 0), (5, 3, 3, 0)]
    assert any("3 images kept, the paper has 82,081" in line for line in lines)


def test_smaller_instance_wins_whatever_the_annotation_order(coco):
    prepare(coco["root"])
    first = mask_of(coco["root"], coco["train2014"]["kept"][0])
    assert first.shape == (HEIGHT, WIDTH)
    assert first[15, 15] == 1  # the small person square (listed first) stays on top of the car
    assert first[5, 5] == 2 and first[25, 35] == 2  # the large car elsewhere
    assert first[31, 39] == 0


def test_crowd_regions_are_background_or_ignored(coco, tmp_path):
    root = coco["root"]
    prepare(root)
    crowd = coco["train2014"]["crowd"]
    second = mask_of(root, coco["train2014"]["kept"][1])
    assert np.all(second[crowd] == 0) and second[10, 10] == 3  # the toothbrush polygon
    with pytest.raises(DatasetError, match="other options"):
        prepare(root, crowd="ignore")  # masks already there were drawn with crowd=background
    prepare(root, crowd="ignore", overwrite=True)
    second = mask_of(root, coco["train2014"]["kept"][1])
    assert np.all(second[crowd] == IGNORE_INDEX) and second[10, 10] == 3


def test_compressed_rle_and_degenerate_polygons(coco):
    prepare(coco["root"])
    fifth = mask_of(coco["root"], coco["train2014"]["kept"][2])
    car = coco["train2014"]["car"]
    assert np.all(fifth[car] == 2) and np.all(fifth[~car] == 0)  # the 2-point "polygon" drew nothing
    assert read_instances(coco["train2014"]["json"]).degenerate_polygons == 1


def test_resumable_and_atomic(coco):
    root = coco["root"]
    prepare(root)
    kept = coco["train2014"]["kept"]
    first = root / MASK_DIR / f"{kept[0]}.png"
    stamp = first.stat().st_mtime_ns
    (root / MASK_DIR / f"{kept[1]}.png").unlink()
    leftover = root / MASK_DIR / f".{kept[2]}.png.12345-deadbeef.partial"
    leftover.write_bytes(b"half a png")  # what a killed writer leaves
    _, summaries, _ = prepare(root)
    assert [(s.written, s.skipped) for s in summaries] == [(1, 2), (0, 3)]
    assert first.stat().st_mtime_ns == stamp
    assert not leftover.exists()
    assert not [p for p in (root / MASK_DIR).iterdir() if p.name.startswith(".") and "partial" in p.name]


def test_load_with_coco_format(coco):
    prepare(coco["root"])
    config = load_config(None, [f"data.root={coco['root']}", "data.format=coco", "data.num_classes=3",
                                "data.train_split=train2014"])
    for split in ("train2014", "val2014"):
        samples = split_samples(config, split, need_masks=True)
        assert {s.image_id: s.labels for s in samples} == coco[split]["labels"]
        assert all(s.image_path.parent.name == split for s in samples)
    assert dataset_class_names(config) == COCO_NAMES


def test_counts_are_checked_before_any_mask_is_written(coco):
    with pytest.raises(DatasetError, match=r"train2014: 3 images kept, the paper has 82,081"):
        prepare_coco(coco["root"], progress=False, log=lambda _: None)
    assert not (coco["root"] / MASK_DIR).exists()


def test_missing_image_is_reported_before_conversion(coco):
    missing = coco["root"] / "val2014" / f"{coco['val2014']['kept'][1]}.jpg"
    missing.unlink()
    with pytest.raises(DatasetError, match=rf"{missing.name}: image not found"):
        prepare(coco["root"])


def test_cli_end_to_end_with_workers(coco, capsys):
    code = main(["prepare", "coco", "--root", str(coco["root"]), "--no-count-check", "--workers", "2", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "data.format=coco" in out
    assert len(list((coco["root"] / MASK_DIR).glob("*.png"))) == 6
    coco["train2014"]["json"].write_text('{"images": [')  # truncated JSON
    code = main(["prepare", "coco", "--root", str(coco["root"]), "--no-count-check", "--quiet"])
    assert code == 2
    assert "instances_train2014.json: not a readable COCO annotation JSON" in capsys.readouterr().err


def test_overlap_rule_on_hand_made_instances():
    """Two overlapping squares: the smaller one wins; equal areas: the higher annotation id wins."""
    image = CocoImage(1, "a.jpg", 10, 10, [
        Instance(7, 1, False, [[0.0, 0.0, 8.0, 0.0, 8.0, 8.0, 0.0, 8.0]]),  # 8x8, class 1
        Instance(3, 2, False, [[4.0, 4.0, 10.0, 4.0, 10.0, 10.0, 4.0, 10.0]]),  # 6x6, class 2
    ])
    mask = semantic_mask(image)
    assert mask[5, 5] == 2 and mask[1, 1] == 1 and mask[9, 9] == 2
    same = CocoImage(1, "b.jpg", 10, 10, [
        Instance(9, 1, False, [[0.0, 0.0, 6.0, 0.0, 6.0, 6.0, 0.0, 6.0]]),
        Instance(2, 2, False, [[3.0, 3.0, 9.0, 3.0, 9.0, 9.0, 3.0, 9.0]]),
    ])
    assert semantic_mask(same)[4, 4] == 1  # same area: id 2 drawn first, id 9 on top


def test_rle_string_decoder_matches_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 30)))) < rng.random()
        compressed = rle_of(mask, compressed=True)
        assert rle_string_counts(compressed["counts"]) == rle_of(mask, compressed=False)["counts"]
    for bad in ("\x7f", "0P", "a" * 3 + "\x01"):
        with pytest.raises(ValueError):
            rle_string_counts(bad)


def test_hostile_json_entries_are_named(tmp_path):
    base = {"images": [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 10}],
            "categories": [{"id": 5, "name": "x"}]}
    cases = {
        "odd number of coordinates": {"id": 1, "image_id": 1, "category_id": 5, "segmentation": [[1, 2, 3, 4, 5]]},
        "unknown category_id 6": {"id": 1, "image_id": 1, "category_id": 6, "segmentation": [[0, 0, 5, 0, 5, 5]]},
        "unknown image_id 2": {"id": 1, "image_id": 2, "category_id": 5, "segmentation": [[0, 0, 5, 0, 5, 5]]},
        "far outside": {"id": 1, "image_id": 1, "category_id": 5, "segmentation": [[0, 0, 1e9, 0, 5, 5]]},
        "cover 99 pixels": {"id": 1, "image_id": 1, "category_id": 5, "segmentation": {"size": [10, 10],
                                                                                         "counts": [50, 49]}},
        "RLE size": {"id": 1, "image_id": 1, "category_id": 5, "segmentation": {"size": [5, 5], "counts": [25]}},
        "iscrowd must be 0 or 1": {"id": 1, "image_id": 1, "category_id": 5, "iscrowd": 2, "segmentation": []},
        r"unknown image_id \[\]": {"id": 1, "image_id": [], "category_id": 5, "segmentation": []},  # unhashable
        r"unknown category_id \{\}": {"id": 1, "image_id": 1, "category_id": {}, "segmentation": []},
    }
    for expected, annotation in cases.items():
        path = tmp_path / "instances.json"
        path.write_text(json.dumps({**base, "annotations": [annotation]}))
        with pytest.raises(DatasetError, match=expected) as info:
            read_instances(path)
        assert str(path) in str(info.value)
    huge = {**base, "annotations": []}
    huge["images"] = [{"id": 1, "file_name": "a.jpg", "height": 100_000, "width": 100_000}]
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(huge))
    with pytest.raises(DatasetError, match="decompression-bomb guard"):
        read_instances(path)
    assert os.path.getsize(path) < 200
