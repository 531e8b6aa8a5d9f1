"""The benchmark runs end to end in its quick mode and reports every figure as a positive number.

No timing is asserted (timings depend on the machine and its load); what is asserted is that the
benchmark's two sides compute the same thing, so that its ratios compare like with like.
"""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.run import main

FIGURES = {
    "training_ratio", "training_ours_images_per_s", "training_reference_images_per_s",
    "attention_maps_ratio", "attention_maps_ours_seconds_per_image", "attention_maps_reference_seconds_per_image",
    "attention_maps_new_sizes_ratio", "sweep_ratio", "sweep_ours_seconds", "sweep_reference_seconds",
    "flops_fraction_of_fp32_peak", "training_achieved_gflops", "fp32_matmul_peak_gflops",
    "demo_peak_rss_gb", "demo_wall_seconds",
}


def test_quick_benchmark_reports_every_figure(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert main(["--quick", "--device", "cpu", "--repeats", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["summary"]) == FIGURES
    for name, value in report["summary"].items():
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (name, value)
    figures = report["figures"]
    # Same weights, same batch: the reference step and the library's step compute the same loss.
    assert figures["1_training_throughput"]["loss_abs_diff"] < 1e-5
    assert figures["1_training_throughput"]["flops_per_step"] > 0
    # The fast attention maps equal the release's eight separate passes in float32; the default (bf16 autocast
    # on a CPU with native bf16) stays within bf16's 8 significant bits of them.
    maps = figures["2_attention_maps"]
    assert maps["fp32_max_abs_diff"] < 1e-4
    assert maps["max_abs_diff"] < (0.1 if maps["ours_precision"] != "float32" else 1e-4)
    # Timed again with every call on image sizes no earlier call had (each side on its own sizes).
    assert all(maps[f"{name}_new_sizes_seconds_per_image"] > 0 for name in ("ours", "reference"))
    # Both sweeps score the same maps (the reference's are 8-bit PNGs, hence the tolerance).
    assert figures["3_threshold_sweep"]["miou_max_abs_diff"] < 0.02
    assert figures["4_5_demo"]["mode"].startswith("quick")
    printed = capsys.readouterr().out
    assert "| figure" in printed and "training step" in printed and str(out) in printed


def test_pcm_memory_benchmark_variants_give_the_same_maps():
    """benchmarks/pcm_memory.py's child pass at a tiny size, in this process (its figures are measured
    at 500x375 x 2.0 in fresh processes, not here): whole and chunked compute the same maps."""
    import argparse

    from benchmarks import pcm_memory

    results = {}
    for variant in ("whole", "chunked"):
        args = argparse.Namespace(variant=variant, height=40, width=48, scale=1.0, width_mult=0.0625, threads=1,
                                  repeats=1)
        results[variant] = pcm_memory.child(args)
    assert results["whole"]["map"] == [5, 6] and results["whole"]["affinity_entries"] == 2 * 30 * 30
    assert results["whole"]["checksum"] == pytest.approx(results["chunked"]["checksum"], rel=1e-6)
    assert all(r["peak"] >= r["peak_before"] > 0 for r in results.values())


def test_quick_scale_benchmark_reports_both_axes(tmp_path, capsys):
    from benchmarks.scale import STAGES
    from benchmarks.scale import main as scale_main

    out = tmp_path / "scale.json"
    assert scale_main(["--quick", "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    axis = report["dataset_axis"]
    assert [row["images"] for row in axis["rows"]] == [3, 6]
    assert set(axis["exponents"]) == set(STAGES) and all(math.isfinite(v) for v in axis["exponents"].values())
    for row in axis["rows"] + report["image_axis"]["rows"]:
        assert all(row[stage]["seconds"] > 0 and row[stage]["peak_rss_bytes"] > 0 for stage in STAGES)
        assert row["cams_bytes_per_image"] > 0 and row["pseudo_bytes_per_image"] > 0
    assert 0 <= report["dataset_axis"]["rows"][0]["eval_cams"]["miou"] <= 1
    assert report["train"]["iterations"] == 2
    assert set(report["image_axis"]["pixel_exponents"]) == {"cams", "eval_cams", "pseudo"}
    pcm = report["pcm_memory"]
    assert pcm["whole"]["checksum"] == pytest.approx(pcm["chunked"]["checksum"], rel=1e-6)
    printed = capsys.readouterr().out
    assert "growth exponent" in printed and "per-pixel exponent" in printed and "PCM memory" in printed


def test_gpu_check_runs_as_a_cpu_smoke_test(tmp_path, capsys):
    """benchmarks/gpu_check.py is for the next lent GPU; here its code path runs small on the CPU (gloo DDP)."""
    from benchmarks.gpu_check import main as gpu_main

    out = tmp_path / "gpu.json"
    assert gpu_main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["smoke"] and set(report["training"]) == {"fp32", "bf16", "fp16"}
    for result in report["training"].values():
        assert result["finite"] and result["images_per_s"] > 0
    assert report["ddp"]["backend"] == "gloo" and report["ddp"]["finite"]
    assert report["ddp"]["max_abs_diff_vs_plain"] < 1e-5  # one process: DDP changes nothing
    cams = report["cams"]
    assert cams["scales 2.0"]["seconds"] > 0 and 0 < cams["scales 2.0 autocast"]["max_abs_diff_vs_fp32"] < 0.2
    assert "DDP (gloo" in capsys.readouterr().out


def test_the_release_procedure_references_agree_with_l2g_on_resnet38_with_pcm():
    """The references' own ResNet-38 + PCM (the release's order: features propagated, classifier after; logits
    pooled after the PCM) and target construction reproduce l2g's loss and maps: a drift of either shows here."""
    import torch

    from benchmarks import figures
    from benchmarks.run import METHOD
    from l2g.config import load_config

    config = load_config("synth", [*METHOD, "model.backbone=resnet38", "model.width_mult=0.0625", "model.pcm=true",
                                   "model.pcm_dims=[4,8]", "model.pcm_out=12", "model.pretrained=scratch",
                                   "data.num_classes=20", "data.global_size=64", "views.n=6", "views.patch_size=48",
                                   "optim.batch_size=2", "cams.scales=[0.5,1.0]", "threads=1"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train = figures.training_throughput(config, torch.device("cpu"), 1, 0)
        maps = figures.inference_speed(config, torch.device("cpu"), [(40, 56)], 1, 0)
    finally:
        torch.set_num_threads(threads)
    assert train["loss_abs_diff"] < 1e-5 and train["pcm"]
    assert maps["fp32_max_abs_diff"] < 1e-4  # ours in float32 (the default may be bf16 here: a timing arm)


def test_gradient_precision_benchmark_measures_each_precision_against_float64(tmp_path, capsys):
    """benchmarks/gradient_precision.py at a tiny width and size: float64 is the reference, so float32
    reproduces it far more closely than bf16 autocast does at every stage, and the table names each stage."""
    from benchmarks.gradient_precision import main as gradient_precision

    out = tmp_path / "gradients.json"
    report = gradient_precision(["--width", "4", "--size", "32", "--batch", "2", "--batches", "1", "--out", str(out)])
    errors = report["errors"]
    assert set(errors) == {"float32", "float32 channels_last", "bf16", "bf16 channels_last"}
    stages = set(errors["float32"])
    assert stages == {"head"} | {f"backbone.stage{k}" for k in range(1, 6)}
    for stage in stages:
        assert errors["float32"][stage] < 1e-3, (stage, errors["float32"][stage])
        assert 10 * errors["float32"][stage] < errors["bf16"][stage], stage
        assert 10 * errors["float32"][stage] < errors["bf16 channels_last"][stage], stage
    assert json.loads(out.read_text())["errors"] == errors
    assert "| float32 |" in capsys.readouterr().out


def test_shared_run_benchmark_gives_each_method_its_own_weights(tiny_root, tmp_path, capsys, one_thread):
    from benchmarks.shared_run import main as shared_main
    from tests.test_cli import TINY_SETTINGS

    overrides = [arg for setting in TINY_SETTINGS for arg in ("--set", setting)]
    assert shared_main(["--data", str(tiny_root), "--out", str(tmp_path), "--epochs", "1", *overrides, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "both in one shared run" in printed
    assert "l2g 0, l2g_shape 0" in printed  # bit for bit
