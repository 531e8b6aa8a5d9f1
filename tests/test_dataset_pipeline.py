"""Each real-dataset layout end to end through the CLI on a tiny fixture: prepare (or nothing, for a
custom dataset) -> saliency where the data have none -> train (L2G + shape, 2 iterations) -> cams ->
eval-cams. Proves the formats plug into the stages, not only into load_split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dataset_makers import make_coco, make_voc, voc_mask, write_rgb
from test_cli import cli_ok as cli

from l2g.data.palette import save_mask

TINY = ["data.resize_short=40", "data.global_size=32", "views.patch_size=24", "optim.epochs=2",
        "optim.batch_size=4", "model.width=4", "cams.scales=[1.0]", "threads=1", "method.name=l2g_shape"]



def voc_dataset(base: Path, capsys) -> tuple[list[str], str]:
    truth = make_voc(base, train=4, extra_aug=1, val=2)
    cli(capsys, "prepare", "voc", "--root", base, "--no-count-check", "--quiet")
    return ([f"data.root={truth['voc']}", "data.format=voc", "data.num_classes=20",
             "data.train_split=train_aug", "cams.split=val"], "val")


def coco_dataset(base: Path, capsys) -> tuple[list[str], str]:
    root = base / "coco"
    for split, first in (("train2014", 1), ("val2014", 100)):
        make_coco(root, split, first)
    # 3 images per split are kept; a batch of 4 needs more: two more train images like the first one
    data = json.loads((root / "annotations" / "instances_train2014.json").read_text())
    for extra in range(2):
        image = dict(data["images"][0], id=50 + extra, file_name=f"COCO_train2014_{50 + extra:012d}.jpg")
        write_rgb(root / "train2014" / image["file_name"], 50 + extra)
        data["images"].append(image)
        data["annotations"].append(dict(data["annotations"][0], id=500 + extra, image_id=image["id"]))
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(data))
    cli(capsys, "prepare", "coco", "--root", root, "--no-count-check", "--quiet")
    out = cli(capsys, "saliency", "--images", root / "train2014", "--out", root / "saliency", "--quiet",
              "--list", root / "ImageSets" / "Segmentation" / "train2014.txt")
    assert "5 map(s) written" in out
    return ([f"data.root={root}", "data.format=coco", "data.num_classes=3", "data.train_split=train2014",
             "cams.split=val2014"], "val2014")


def custom_dataset(base: Path, capsys) -> tuple[list[str], str]:
    root = base / "custom"
    names = ["cat", "dog"]
    (root / "classes.txt").parent.mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    rows, val = ["image,labels"], []
    for index in range(6):
        classes = (index % 2,) if index % 3 else (0, 1)
        write_rgb(root / "images" / f"photo{index}.jpg", index)
        rows.append(f"photo{index}.jpg,{';'.join(names[c] for c in classes)}")
        if index < 2:
            save_mask(root / "masks" / f"photo{index}.png", voc_mask(classes))
            val.append(f"photo{index} {' '.join(map(str, classes))}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    (root / "val_cls.txt").write_text("\n".join(val) + "\n")
    cli(capsys, "saliency", "--images", root / "images", "--out", root / "saliency", "--quiet")
    return [f"data.root={root}", "data.format=custom", "data.num_classes=2", "cams.split=val"], "val"


@pytest.mark.parametrize("layout", [voc_dataset, coco_dataset, custom_dataset], ids=["voc", "coco", "custom"])
def test_layout_through_the_pipeline(layout, tmp_path, capsys):
    settings, split = layout(tmp_path / "data", capsys)
    overrides = [arg for setting in [*TINY, *settings] for arg in ("--set", setting)]
    run = tmp_path / "run"
    cli(capsys, "train", "synth", "--run", run, *overrides, "--quiet")
    assert (run / "checkpoints" / "final.pt").is_file()
    cli(capsys, "cams", "--run", run, "--quiet")
    out = cli(capsys, "eval-cams", "--run", run, "--quiet")
    assert "best threshold" in out
    sweep = json.loads((run / "sweep.json").read_text())
    assert sweep["split"] == split and sweep["images"] >= 2
    assert np.isfinite(sweep["best"]["miou"])
