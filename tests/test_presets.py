"""The paper's presets (l2g/configs/voc12_*, coco14_*): their values, the ``base:`` include they are built
with, the error a missing weights file gives, and every preset end to end with ``l2g run`` (train 2
iterations -> cams -> threshold -> pseudo -> seg train -> seg eval -> report) on a tiny VOC- or COCO-layout
dataset with a 1/16-width ResNet-38 + PCM and a small DeepLab, so a preset can never silently rot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from dataset_makers import HEIGHT, WIDTH, make_coco, make_voc, write_rgb
from PIL import Image
from test_cli import cli_ok as cli

from l2g.cli import main
from l2g.config import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS_DIR,
    Config,
    ConfigError,
    load_config,
    preset_names,
    to_dict,
)
from l2g.stages.train_shared import sharing_problem

MAIN = "voc12_resnet38_l2g_shape"
COCO = "coco14_resnet38_l2g_shape"
# Each VOC variant against the main preset: exactly these keys differ (a preset added without an entry
# here fails test_every_shipped_preset_is_covered).
VARIANTS = {
    "voc12_resnet38_cam": {"method.name": "cam"},
    "voc12_resnet38_local": {"method.name": "local"},
    "voc12_resnet38_l2g": {"method.name": "l2g"},
    "voc12_resnet38_l2g_shape_shared": {"model.shared_backbone": True},
    "voc12_resnet38_l2g_shape_global_cls": {"method.global_cls_weight": 1.0},
    "voc12_resnet38_l2g_shape_grid": {"views.strategy": "grid"},
    "voc12_resnet38_l2g_shape_random9": {"views.strategy": "random", "views.n": 9},
    "voc12_resnet38_l2g_shape_patch240": {"views.patch_size": 240},
    "voc12_resnet38_l2g_shape_patch400": {"views.patch_size": 400},
    "voc12_resnet38_l2g_shape_n2": {"views.strategy": "random", "views.n": 2},
    "voc12_resnet38_l2g_shape_n8": {"views.n": 8},
}
PAPER_PRESETS = [MAIN, COCO, *VARIANTS]
WEIGHTS = "weights/resnet38_imagenet.pth"


pytestmark = pytest.mark.usefixtures("one_thread")


def flat(config: Config) -> dict[str, object]:
    """``{"section.key": value}`` of a config (tuples as lists)."""
    return {f"{section}.{key}" if isinstance(values, dict) else section: value
            for section, values in to_dict(config).items()
            for key, value in (values.items() if isinstance(values, dict) else [(None, values)])}


# --- values ------------------------------------------------------------------------------------------------


def test_every_shipped_preset_is_covered():
    assert sorted(preset_names()) == sorted([*PAPER_PRESETS, "synth", "synth_release", "synth_efficientnet",
                                             "pretrained_l2g", "pretrained_l2g_cpu"])


def test_voc_preset_has_the_papers_and_the_releases_values():
    c = load_config(MAIN)
    assert (c.data.format, c.data.root, c.data.train_split, c.data.num_classes) == (
        "voc", "data/VOCdevkit/VOC2012", "train_aug", 20)
    assert (c.data.resize_short, c.data.global_size, c.views.patch_size) == (512, 448, 320)
    assert (c.data.resize_mode, c.data.resize_interpolation, c.data.saliency_interpolation) == (
        "short_side", "bicubic", "nearest")
    assert (c.data.mean, c.data.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert c.data.jitter == (0.3, 0.3, 0.3, 0.1) and c.data.flip is False
    assert (c.views.strategy, c.views.n, c.views.grid_stride) == ("corners+random", 6, 64)
    assert (c.model.backbone, c.model.width_mult, c.model.pretrained) == ("resnet38", 1.0, WEIGHTS)
    assert c.model.pcm and (c.model.pcm_dims, c.model.pcm_out) == ((64, 128), 192)
    assert c.model.freeze_bn and not c.model.shared_backbone
    assert (c.method.name, c.method.lam, c.method.global_cls_weight) == ("l2g_shape", 10.0, 0.0)
    assert (c.method.background, c.method.shape_form, c.shape_threshold) == ("release", "release", 0.001)
    assert c.method.shape_background == "binary"
    o = c.optim
    assert (o.lr, o.epochs, o.batch_size, o.schedule, o.step_epochs, o.step_gamma) == (1e-3, 10, 3, "step", (5,), 0.1)
    assert (o.momentum, o.nesterov, o.weight_decay, o.lr_mult, o.warmup_iters) == (0.9, True, 5e-4, (1, 2, 10, 20), 0)
    assert (c.cams.split, c.cams.scales, c.cams.flip, c.cams.upsample, c.cams.source) == (
        "train_aug", (0.5, 1.0, 1.5, 2.0), True, "bicubic", "logits")
    assert c.eval.threshold == 0.25
    s = c.seg  # the release's deeplab-pytorch configs/voc12_resnet_dplv2.yaml; COCO-pretrained (the paper)
    assert (s.arch, s.aspp_rates, s.pretrained_dataset, s.train_split, s.val_split) == (
        "deeplab_v2_resnet101", (6, 12, 18, 24), "coco", "train_aug", "val")
    assert (s.crop_size, s.batch_size, s.lr, s.head_lr_mult, s.poly_power, s.scale_range) == (
        321, 10, 2.5e-4, 10.0, 0.9, (0.5, 1.5))
    assert s.crf.enabled and s.crf.preset == "deeplab"


def test_voc_step_decay_hits_the_sixth_epoch():
    """step_epochs [5] counts epochs from 0: the lr drops at the start of the paper's 6th epoch."""
    from l2g.optim import learning_rate

    o = load_config(MAIN).optim
    per_epoch = 100
    lrs = [learning_rate(o, epoch * per_epoch, o.epochs * per_epoch, per_epoch) for epoch in range(o.epochs)]
    assert lrs[:5] == [1e-3] * 5 and lrs[5:] == pytest.approx([1e-4] * 5)


def test_coco_preset_has_the_papers_and_the_releases_values():
    c = load_config(COCO)
    assert (c.data.format, c.data.root, c.data.train_split, c.data.num_classes) == (
        "coco", "data/coco", "train2014", 80)
    assert c.data.mean == (0.471, 0.448, 0.408) and c.data.std == (0.234, 0.239, 0.242)
    assert (c.data.global_size, c.views.patch_size) == (448, 320)
    # the release's COCO loader: the whole image to 448x448, image and saliency bilinear
    assert (c.data.resize_mode, c.data.resize_interpolation, c.data.saliency_interpolation) == (
        "square", "bilinear", "bilinear")
    assert (c.views.strategy, c.views.n) == ("random", 4)
    assert (c.model.backbone, c.model.pretrained, c.model.pcm) == ("resnet38", WEIGHTS, True)
    assert (c.method.name, c.method.lam, c.method.background, c.method.shape_form) == (
        "l2g_shape", 30.0, "release", "release")
    assert c.shape_threshold == 0.1 and c.method.shape_background == "attention"  # the COCO script's A_bg*(1-S)
    o = c.optim
    assert (o.lr, o.schedule, o.poly_power, o.epochs, o.batch_size) == (0.1, "poly", 0.7, 15, 12)
    assert (o.warmup_iters, o.warmup_start_lr) == (500, 1e-5)
    # the paper's optimiser; the release's defect (weight_decay passed as SGD's momentum) is only a --set away
    assert (o.momentum, o.nesterov, o.weight_decay) == (0.9, True, 5e-4)
    assert c.cams.split == "train2014" and c.cams.source == "logits" and c.eval.threshold is None
    s = c.seg  # configs/coco_resnet_dplv2.yaml; ImageNet-pretrained for COCO (the paper)
    assert (s.arch, s.pretrained_dataset, s.train_split, s.val_split, s.batch_size) == (
        "deeplab_v2_resnet101", "imagenet", "train2014", "val2014", 20)


def test_coco_warmup_ramps_from_1e5_to_the_poly_schedule():
    from l2g.optim import learning_rate

    o = load_config(COCO).optim
    total = 10_000
    assert learning_rate(o, 0, total, 1000) == pytest.approx(1e-5)
    assert learning_rate(o, 250, total, 1000) == pytest.approx((1e-5 + 0.1) / 2)
    assert learning_rate(o, 500, total, 1000) == pytest.approx(0.1 * (1 - 500 / total) ** 0.7)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_differs_from_the_main_preset_exactly_where_stated(name):
    main_values, values = flat(load_config(MAIN)), flat(load_config(name))
    differences = {key: values[key] for key in values if values[key] != main_values[key]}
    assert differences == VARIANTS[name]


def test_variant_files_state_only_what_differs():
    """The variants use ``base:`` rather than copies, so a fix to the main preset reaches all of them."""
    folder = PRESETS_DIR
    for name in VARIANTS:
        raw = yaml.safe_load((folder / f"{name}.yaml").read_text())
        assert raw.pop("base") == MAIN
        assert sum(len(section) for section in raw.values()) <= 3, name


def test_grid_preset_takes_nine_windows():
    from l2g.data.view_boxes import sample_view_boxes

    c = load_config("voc12_resnet38_l2g_shape_grid")
    boxes = sample_view_boxes((c.data.global_size,) * 2, c.views.patch_size, c.views.n, c.views.strategy,
                              np.random.default_rng(0), c.views.grid_stride)
    assert len(boxes) == 9 and {int(b[0]) for b in boxes} == {0, 64, 128}


# --- the base: include -----------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_merges_sections_key_by_key_and_replaces_lists(tmp_path):
    write(tmp_path / "parent.yaml", "optim:\n  lr: 0.5\n  epochs: 3\n  step_epochs: [1, 2]\nseed: 4\n")
    child = write(tmp_path / "child.yaml", "base: parent\noptim:\n  lr: 0.25\n  step_epochs: [7]\n")
    config = load_config(child)
    assert (config.optim.lr, config.optim.epochs, config.optim.step_epochs, config.seed) == (0.25, 3, (7,), 4)


def test_base_is_relative_to_the_including_file_and_chains(tmp_path, monkeypatch):
    write(tmp_path / "configs" / "a.yaml", "seed: 1\noptim:\n  epochs: 2\n")
    write(tmp_path / "configs" / "sub" / "b.yaml", "base: ../a.yaml\nseed: 2\n")
    c = write(tmp_path / "configs" / "c.yaml", "base: sub/b\noptim:\n  lr: 0.3\n")
    monkeypatch.chdir(tmp_path)  # the cwd plays no part
    config = load_config(c)
    assert (config.seed, config.optim.epochs, config.optim.lr) == (2, 2, 0.3)


def test_base_names_a_shipped_preset_from_a_user_file(tmp_path):
    mine = write(tmp_path / "mine.yaml", f"base: {MAIN}\ndata:\n  root: /datasets/VOC2012\n")
    config = load_config(mine, ["model.pretrained=scratch"])
    assert config.data.root == "/datasets/VOC2012"
    assert (config.views.n, config.method.lam, config.optim.batch_size) == (6, 10.0, 3)


def test_a_null_section_keeps_the_base_section(tmp_path):
    write(tmp_path / "parent.yaml", "optim:\n  lr: 0.5\n")
    child = write(tmp_path / "child.yaml", "base: parent\noptim:\n  # lr: 0.1\n")
    assert load_config(child).optim.lr == 0.5


@pytest.mark.parametrize("files", [
    {"a.yaml": "base: a\n"},
    {"a.yaml": "base: b\n", "b.yaml": "base: c.yaml\n", "c.yaml": "base: a\n"},
], ids=["self", "three"])
def test_base_cycles_are_rejected_with_the_chain(tmp_path, files):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=r"config base cycle: .*a\.yaml -> .*a\.yaml"):
        load_config(tmp_path / "a.yaml")


def test_an_error_in_a_base_file_names_that_file(tmp_path):
    write(tmp_path / "parent.yaml", "optim:\n  lrr: 0.5\n")
    child = write(tmp_path / "child.yaml", "base: parent\n")
    with pytest.raises(ConfigError, match=r"parent\.yaml\.optim: unknown key 'lrr'.*did you mean 'lr'"):
        load_config(child)
    write(tmp_path / "parent.yaml", "optim:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"parent\.yaml\.optim\.lr: expected a finite number"):
        load_config(child)


def test_a_missing_or_malformed_base_is_an_error_naming_the_including_file(tmp_path):
    child = write(tmp_path / "child.yaml", "base: nowhere\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: base: nowhere: no such file .*presets: .*voc12_resnet38"):
        load_config(child)
    write(tmp_path / "child.yaml", "base: [a, b]\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: base must name a config file or preset"):
        load_config(child)


def test_base_is_only_a_top_level_key(tmp_path):
    child = write(tmp_path / "child.yaml", "optim:\n  base: synth\n")
    with pytest.raises(ConfigError, match="unknown key 'base'"):
        load_config(child)


# --- the weights file -------------------------------------------------------------------------------------------


def test_missing_resnet38_weights_fail_first_and_say_how_to_get_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["train", MAIN, "--run", "run", "--set", "data.root=nowhere", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: {WEIGHTS}: weights file not found" in err  # before the (also missing) dataset
    assert f"l2g convert-weights ilsvrc-cls_rna-a1_cls1000_ep-0001.params {WEIGHTS}" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


# --- every preset end to end with l2g run ------------------------------------------------------------------------

SCALE = 1 / 7  # 448 -> 64 px global views; patch, resize and grid stride shrink alike, so variants stay distinct
# A small DeepLab instead of the presets' DeepLab-v2 ResNet-101 (no weights file in CI); every other
# segmentation setting (splits, CRF, schedule) is the preset's.
TINY_SEG = ["seg.arch=deeplab_small", "seg.pretrained=scratch", "seg.width=4", "seg.aspp_rates=[1, 2]",
            "seg.crop_size=32", "seg.epochs=1", "seg.batch_size=2"]


def tiny_overrides(name: str, settings: list[str]) -> list[str]:
    c = load_config(name)
    short = c.data.resize_short
    short = [round(v * SCALE) for v in short] if isinstance(short, tuple) else round(short * SCALE)
    small = [f"data.resize_short={short}",
             f"data.global_size={round(c.data.global_size * SCALE)}",
             f"views.patch_size={round(c.views.patch_size * SCALE)}",
             f"views.grid_stride={round(c.views.grid_stride * SCALE)}",
             "model.width_mult=0.0625", "model.pretrained=scratch", "optim.epochs=1", "optim.batch_size=2",
             "data.workers=0", "threads=1", "cams.scales=[1.0]", *TINY_SEG, *settings]
    return [arg for setting in small for arg in ("--set", setting)]


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    """A prepared VOC layout: train_aug 5 images (train 4), val 2, with masks and saliency maps."""
    base = tmp_path_factory.mktemp("presets_voc")
    truth = make_voc(base, train=4, extra_aug=1, val=2)
    assert main(["prepare", "voc", "--root", str(base), "--no-count-check", "--quiet"]) == 0
    return truth["voc"]


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    """A prepared COCO layout with 80 categories (3 of them used): train2014 4 images, val2014 3, saliency maps."""
    root = tmp_path_factory.mktemp("presets_coco") / "coco"
    for split, first in (("train2014", 1), ("val2014", 100)):
        make_coco(root, split, first)
        path = root / "annotations" / f"instances_{split}.json"
        data = json.loads(path.read_text())
        data["categories"] += [{"id": 100 + i, "name": f"unused{i}"} for i in range(77)]  # 80 like COCO
        if split == "train2014":  # 3 of the 5 images are kept: one more gives 2 batches of 2
            image = dict(data["images"][0], id=50, file_name="COCO_train2014_000000000050.jpg")
            write_rgb(root / split / image["file_name"], 50)
            data["images"].append(image)
            data["annotations"].append(dict(data["annotations"][0], id=500, image_id=50))
        path.write_text(json.dumps(data))
    assert main(["prepare", "coco", "--root", str(root), "--no-count-check", "--quiet"]) == 0
    assert len((root / "classes.txt").read_text().split()) == 80
    (root / "saliency").mkdir()
    for image_id in (root / "ImageSets" / "Segmentation" / "train2014.txt").read_text().split():
        Image.fromarray(np.full((HEIGHT, WIDTH), 180, np.uint8)).save(root / "saliency" / f"{image_id}.png")
    return root


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_preset_runs_end_to_end_with_l2g_run(name, request, tmp_path, capsys):
    is_coco = name.startswith("coco14")
    root = request.getfixturevalue("coco_root" if is_coco else "voc_root")
    out = tmp_path / "out"
    printed = cli(capsys, "run", name, "--out", out, *tiny_overrides(name, [f"data.root={root}"]), "--quiet",
                  "--allow-degenerate-masks")  # a 2-step run's pseudo masks are degenerate
    # every stage ran, in order, and finished
    ran = [line.split("] ")[1].split(" ")[0] for line in printed.splitlines() if line.startswith("[")]
    assert ran == ["train", "cams", "threshold", "pseudo", "seg_train", "seg_eval", "report"]
    assert all((out / "stages" / f"{stage}.done.json").is_file() for stage in ran)
    assert (out / "report" / "index.html").is_file()
    log = [json.loads(line) for line in (out / "cls" / "train_log.jsonl").read_text().splitlines()]
    assert [entry["iteration"] for entry in log] == [0, 1]
    assert all(np.isfinite(entry["loss"]) for entry in log)

    # the run trained with the preset: only the shrinking overrides differ
    preset, trained = flat(load_config(name)), flat(load_config(out / "config.yaml"))
    shrunk = {"data.root", "data.resize_short", "data.global_size", "views.patch_size", "views.grid_stride",
              "model.width_mult", "model.pretrained", "optim.epochs", "optim.batch_size", "data.workers",
              "threads", "cams.scales", *(setting.split("=")[0] for setting in TINY_SEG)}
    assert {key for key in preset if preset[key] != trained[key]} <= shrunk

    config = load_config(name)
    expected = (root / "ImageSets" / "Segmentation" / f"{config.cams.split}.txt").read_text().split()
    assert sorted(p.stem for p in (out / "cls" / "cams").glob("*.npz")) == sorted(expected)
    assert sorted(p.stem for p in (out / "cls" / "pseudo").glob("*.png")) == sorted(expected)
    if config.eval.threshold is None:  # COCO: chosen by the sweep on the masks of cams.split
        sweep = json.loads((out / "cls" / "sweep.json").read_text())
        assert sweep["split"] == config.cams.split and sweep["images"] == len(expected)
        assert np.isfinite(sweep["best"]["miou"])
        assert "best background threshold" in printed
    metrics = json.loads((out / "seg" / f"eval_{config.seg.val_split}.json").read_text())
    val = (root / "ImageSets" / "Segmentation" / f"{config.seg.val_split}.txt").read_text().split()
    assert metrics["split"] == config.seg.val_split and metrics["images"] == len(val)
    assert metrics["crf"] is not None  # the presets' test-time CRF ran
    assert f"segmentation mIoU on {config.seg.val_split}: {100 * metrics['miou']:.1f}" in printed


def test_synth_presets_give_each_method_its_measured_length_read_out_and_precision():
    # synth: L2G without saliency trains 45 epochs and reads its raw map (its best measured setting), L2G +
    # shape 45 epochs read through the softmax (section 7), CAM and the local network 12 epochs; bf16 after
    # one float32 epoch where the CPU has it. The presets built on synth keep what was measured on them
    # (docs/synthetic-benchmark.md, section 6).
    def picked(preset: str, method: str) -> tuple:
        config = load_config(preset, [f"method.name={method}"])
        return config.optim.epochs, config.cams.source, config.amp, config.amp_warmup_epochs

    assert picked("synth", "l2g") == (45, "logits", "auto", 1.0)
    assert picked("synth", "l2g_shape") == (45, "auto", "auto", 1.0)
    for method in ("cam", "local"):
        assert picked("synth", method) == (12, "auto", "auto", 1.0)
    # ... so the demo trains L2G and L2G + shape in one run sharing their local network
    assert sharing_problem([load_config("synth", [f"method.name={m}"]) for m in ("l2g", "l2g_shape")]) is None
    assert picked("synth_efficientnet", "l2g") == (12, "logits", "cuda", 0.0)  # with lam 30: its own by_method
    for method in ("cam", "l2g", "l2g_shape"):
        if method != "l2g":
            assert picked("synth_efficientnet", method) == (4, "auto", "cuda", 0.0)
        assert picked("synth_release", method) == (30, "logits", "cuda", 0.0)
