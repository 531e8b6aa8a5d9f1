"""The Python API (l2g.api, re-exported by ``import l2g``) end to end on the tiny synthetic dataset.

One classification run (L2G + shape, TensorBoard on) and one segmentation run are trained once for the
module through the API; the inference objects must give what the commands write for the same images
(``l2g cams`` files read with l2g.stages.cams.load_cams, ``l2g predict`` masks), from a path, a PIL image
and a numpy array alike. The TensorBoard events and the VOC server export are checked on the same runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import l2g
from l2g.config import ConfigError
from l2g.data.cam_files import FLOAT16_MAX_ERROR, load_cams
from l2g.data.layout import DatasetError
from l2g.data.palette import load_mask, voc_palette
from tests.test_cli import TINY_SETTINGS, run_cli, tiny_set

pytestmark = pytest.mark.usefixtures("one_thread")

SEG_SETTINGS = {"seg.arch": "deeplab_small", "seg.width": 4, "seg.aspp_rates": [1, 2], "seg.crop_size": 32,
                "seg.epochs": 1, "seg.batch_size": 4}


def tiny(root: Path, **extra: object) -> dict:
    settings = dict(item.split("=", 1) for item in TINY_SETTINGS)
    parsed = {key: yaml.safe_load(value) for key, value in settings.items()}
    return {**parsed, "data.root": str(root), **SEG_SETTINGS, **extra}


def split_ids(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


@pytest.fixture(scope="module")
def cls_run(tiny_root, tmp_path_factory) -> Path:
    """A finished L2G + shape run (2 epochs of 2 iterations, logged every iteration, TensorBoard on) and
    its attention maps of the train split, made through the API."""
    pytest.importorskip("tensorboard")
    run = tmp_path_factory.mktemp("api") / "l2g_shape"
    config = l2g.load_config("synth", tiny(tiny_root, **{"method.name": "l2g_shape", "optim.epochs": 2,
                                                           "log_every": 1, "runtime.tensorboard": True}))
    assert l2g.train(config, run, progress=False) == run / "checkpoints" / "final.pt"
    assert l2g.infer_cams(run, progress=False) == run / "cams"
    return run


@pytest.fixture(scope="module")
def seg_run(tiny_root, tmp_path_factory) -> Path:
    """A finished 1-epoch segmentation run, trained on the ground-truth masks (standing in for pseudo masks)."""
    run = tmp_path_factory.mktemp("api") / "seg"
    l2g.train_segmentation(l2g.load_config("synth", tiny(tiny_root)), run, tiny_root / "SegmentationClassAug",
                           progress=False)
    return run


def test_import_l2g_does_not_import_torch():
    code = ("import sys, l2g; l2g.load_config('synth'); print('torch' in sys.modules, "
            "all(name in dir(l2g) for name in l2g.__all__))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


def test_load_config_takes_a_mapping_or_key_value_strings():
    from_mapping = l2g.load_config("synth", {"optim.lr": 1e-3, "cams.scales": [1.0, 0.5], "data.root": "/x/{split}"})
    from_strings = l2g.load_config("synth", ["optim.lr=1e-3", "cams.scales=[1.0, 0.5]", "data.root=/x/{split}"])
    assert from_mapping == from_strings
    assert from_mapping.optim.lr == 1e-3 and from_mapping.cams.scales == (1.0, 0.5)
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        l2g.load_config("synth", {"optim.lrr": 1})
    assert "synth" in l2g.list_presets()


def test_attention_mapper_gives_the_maps_l2g_cams_wrote(cls_run, tiny_root):
    mapper = l2g.AttentionMapper.from_run(cls_run, device="cpu")
    assert mapper.class_names == ["ant", "bee", "crab"]
    labels = {line.split()[0]: [int(c) for c in line.split()[1:]]
              for line in (tiny_root / "ImageSets" / "Segmentation" / "train_cls.txt").read_text().splitlines()}
    for image_id in split_ids(tiny_root, "train")[:3]:
        path = tiny_root / "JPEGImages" / f"{image_id}.jpg"
        written = load_cams(cls_run / "cams", image_id).as_dict()
        tags = [mapper.class_names[c] for c in labels[image_id]]
        maps = mapper(path, tags=tags)
        assert list(maps) == tags
        for tag, index in zip(tags, labels[image_id], strict=True):
            assert maps[tag].dtype == np.float32 and maps[tag].shape == written[index].shape
            np.testing.assert_allclose(maps[tag], written[index], atol=FLOAT16_MAX_ERROR + 1e-5)  # stored float16
        with Image.open(path) as image:
            from_pil = mapper(image, tags=tags)
            from_array = mapper(np.asarray(image.convert("RGB")), tags=tags)
        for tag in tags:
            np.testing.assert_array_equal(from_pil[tag], maps[tag])
            np.testing.assert_array_equal(from_array[tag], maps[tag])
    assert mapper.maps_by_index(path, [0]).keys() == {0}


def test_attention_mapper_refuses_unknown_tags_and_bad_images(cls_run, tiny_root):
    mapper = l2g.AttentionMapper.from_run(cls_run, device="cpu")
    image = tiny_root / "JPEGImages" / f"{split_ids(tiny_root, 'train')[0]}.jpg"
    with pytest.raises(ValueError, match=r"unknown tag 'bea' \(did you mean 'bee'\?\); this run's classes: ant, bee"):
        mapper(image, tags=["bea"])
    with pytest.raises(ValueError, match="out of range 0..2"):
        mapper(image, tags=[3])
    with pytest.raises(TypeError, match="dtype float32: expected uint8"):
        mapper(np.zeros((8, 8, 3), np.float32), tags=["ant"])
    with pytest.raises(ValueError, match=r"shape \(8, 8, 2\)"):
        mapper(np.zeros((8, 8, 2), np.uint8), tags=["ant"])
    with pytest.raises(DatasetError, match="nowhere.jpg: image not found"):
        mapper(image.parent / "nowhere.jpg", tags=["ant"])


def test_stage_functions_write_what_the_commands_write(cls_run, tmp_path):
    sweep = l2g.evaluate_cams(cls_run, out_path=tmp_path / "sweep.json", progress=False)
    assert 0 <= sweep["best"]["miou"] <= 1 and (tmp_path / "sweep.json").is_file()
    out = l2g.make_pseudo_masks(cls_run, threshold=0.3, out_dir=tmp_path / "pseudo", progress=False)
    assert len(list(out.glob("*.png"))) == 8
    with pytest.raises(FileNotFoundError, match="config.yaml: not found"):
        l2g.infer_cams(tmp_path / "not_a_run")


def test_tensorboard_events_mirror_the_log(cls_run):
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(cls_run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    expected = {"loss/loss", "loss/loss_cls", "loss/loss_kt", "loss/loss_cls_global", "train/lr", "train/epoch",
                "train/kt_stuck", "train/images_per_second"}
    assert expected <= set(tags["scalars"])
    records = [json.loads(line) for line in (cls_run / "train_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1, 2, 3]
    for key in ("loss", "loss_kt", "kt_stuck", "lr"):
        logged = events.Scalars(scalar_key := ("loss/" if key.startswith("loss") else "train/") + key)
        assert [e.step for e in logged] == [0, 1, 2, 3], scalar_key
        np.testing.assert_allclose([e.value for e in logged], [r[key] for r in records], rtol=1e-6)
    assert [e.step for e in events.Scalars("train/images_per_second")] == [1, 2, 3]  # from the second record
    assert all(e.value > 0 for e in events.Scalars("train/images_per_second"))
    # attention maps of up to runtime.tensorboard_images training images at each epoch's last iteration
    image_tags = [t for t in tags["images"] if t.startswith("attention/")]
    assert 1 <= len(image_tags) <= 4
    for tag in image_tags:
        assert [e.step for e in events.Images(tag)] == [1, 3]


def test_tensorboard_curves_of_a_resumed_run_have_each_step_once(tiny_root, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = l2g.load_config("synth", tiny(tiny_root, **{"method.name": "cam", "log_every": 1, "optim.epochs": 2,
                                                         "runtime.tensorboard": True, "runtime.tensorboard_images": 0}))
    run = tmp_path / "run"
    l2g.train(config, run, progress=False)
    # as if killed after logging iterations 2 and 3 but before saving their checkpoint: the resumed run
    # redoes them, and TensorBoard must show each step once (as train_log.jsonl does)
    for name in ("checkpoints/step-00000004.pt", "checkpoints/final.pt", "train_metrics.json"):
        (run / name).unlink()
    l2g.train(config, run, resume=True, progress=False)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("loss/loss")] == [0, 1, 2, 3]
    assert events.Tags()["images"] == []  # runtime.tensorboard_images=0: scalars only


def test_tensorboard_off_writes_nothing(seg_run):
    assert (seg_run / "train_log.jsonl").is_file()
    assert not (seg_run / "tensorboard").exists()


def test_tensorboard_on_without_the_package_fails_before_training(tiny_root, tmp_path, monkeypatch, capsys):
    from l2g.engine import tensorboard

    monkeypatch.setattr(tensorboard.importlib.util, "find_spec", lambda name: None)
    run = tmp_path / "run"
    config = l2g.load_config("synth", tiny(tiny_root, **{"runtime.tensorboard": True}))
    with pytest.raises(ConfigError, match=r"tensorboard package is not installed: pip install 'l2g\[tensorboard\]'"):
        l2g.train(config, run, progress=False)
    assert not run.exists()  # refused before the run folder was touched
    code, _, err = run_cli(capsys, "seg", "train", "synth", "--run", run, "--pseudo",
                           tiny_root / "SegmentationClassAug", *tiny_set(tiny_root), "--set",
                           "runtime.tensorboard=true", "--quiet")
    assert code == 2 and "runtime.tensorboard=false" in err and not run.exists()


def test_segmenter_gives_the_masks_l2g_predict_wrote(seg_run, tiny_root, tmp_path):
    ids = split_ids(tiny_root, "val")
    paths = [tiny_root / "JPEGImages" / f"{i}.jpg" for i in ids]
    result = l2g.predict(seg_run, paths, tmp_path / "masks", progress=False)
    assert not result.failed and len(result.written) == len(paths)
    segmenter = l2g.Segmenter.from_run(seg_run, device="cpu")
    assert segmenter.class_names == ["background", "ant", "bee", "crab"]
    for path in paths:
        written = load_mask(tmp_path / "masks" / f"{path.stem}.png")
        mask = segmenter(path)
        assert mask.dtype == np.uint8 and mask.shape == written.shape
        np.testing.assert_array_equal(mask, written)
        with Image.open(path) as image:
            np.testing.assert_array_equal(segmenter(image), written)
            np.testing.assert_array_equal(segmenter(np.asarray(image)), written)
    grey = np.asarray(Image.open(paths[0]).convert("L"))
    assert segmenter(grey).shape == grey.shape  # (H, W) grey arrays are converted like grey images


def test_export_voc_archive_holds_the_servers_layout(seg_run, tiny_root, tmp_path, capsys):
    ids = split_ids(tiny_root, "val")
    archive = l2g.export_voc(seg_run, tmp_path / "results.tar.gz", split="val", progress=False)
    segmenter = l2g.Segmenter.from_run(seg_run, device="cpu")
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        assert [m.name for m in members] == [f"results/VOC2012/Segmentation/comp6_val_cls/{i}.png" for i in ids]
        for member, image_id in zip(members, ids, strict=True):
            with Image.open(tar.extractfile(member)) as png:
                assert png.format == "PNG" and png.mode == "P"  # indexed: pixel value = class index
                assert np.array_equal(np.asarray(png.getpalette()[:12]), voc_palette(4).reshape(-1))
                values = np.asarray(png)
            expected = segmenter(tiny_root / "JPEGImages" / f"{image_id}.jpg")
            np.testing.assert_array_equal(values, expected)  # raw indices at the image's size
            assert values.max() <= 3
    # the command: same archive content, comp5 folder; the masks made above are reused
    code, out, err = run_cli(capsys, "export-voc", "--run", seg_run, "--out", tmp_path / "c5.tar", "--split", "val",
                             "--competition", "comp5", "--quiet")
    assert code == 0, err
    assert f"{tmp_path / 'c5.tar'}: {len(ids)} masks" in out
    with tarfile.open(tmp_path / "c5.tar") as tar:
        assert tar.getnames() == [f"results/VOC2012/Segmentation/comp5_val_cls/{i}.png" for i in ids]


def test_export_voc_errors_name_the_problem(seg_run, tiny_root, tmp_path):
    with pytest.raises(ValueError, match="must end with .tar.gz, .tgz, .tar"):
        l2g.export_voc(seg_run, tmp_path / "results.zip", split="val")
    with pytest.raises(ValueError, match="comp5, comp6"):
        l2g.export_voc(seg_run, tmp_path / "r.tar", split="val", competition="comp4")
    with pytest.raises(DatasetError, match="test.txt"):  # the tiny dataset has no test split
        l2g.export_voc(seg_run, tmp_path / "r.tar")
    broken = tmp_path / "data"
    shutil.copytree(tiny_root, broken)
    missing = split_ids(broken, "val")[1]
    (broken / "JPEGImages" / f"{missing}.jpg").unlink()
    with pytest.raises(DatasetError, match=f"(?s)1 image.*{missing}.jpg"):
        l2g.export_voc(seg_run, tmp_path / "r.tar", split="val", overrides={"data.root": str(broken)})
