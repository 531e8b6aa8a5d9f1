"""The seed benchmark (benchmarks/seeds.py): its statistics by hand, and a tiny end-to-end run of 2 seeds."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.seeds import SeedRun, Variant, main, mean_std, paired_differences, summarize

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["data.num_classes=3", "data.resize_short=40", "data.global_size=32", "views.patch_size=24",
        "optim.epochs=1", "optim.batch_size=4", "model.width=4", "cams.scales=[1.0]", "threads=1"]


def test_mean_and_sample_std_by_hand():
    # values 0.40, 0.44, 0.48: mean 0.44, deviations -.04, 0, .04 -> sum of squares .0032 / (3 - 1) -> std .04
    mean, std = mean_std([0.40, 0.44, 0.48])
    assert mean == pytest.approx(0.44) and std == pytest.approx(0.04)
    assert mean_std([0.5]) == (0.5, 0.0)
    assert all(math.isnan(v) for v in mean_std([]))


def test_paired_differences_by_hand():
    # seed 0: .45 - .40 = +.05; seed 1: .41 - .42 = -.01; seed 2: .50 - .43 = +.07 (seed 3: CAM only, left out)
    # mean (.05 - .01 + .07) / 3 = .03667; deviations .01333, -.04667, .03333 -> squares sum .003467 / 2
    # -> std sqrt(.0017333) = .041633; wins: 2 of 3
    runs = [SeedRun("cam", 0, .40, .3, 1), SeedRun("cam", 1, .42, .3, 1), SeedRun("cam", 2, .43, .3, 1),
            SeedRun("cam", 3, .39, .3, 1),
            SeedRun("l2g", 0, .45, .3, 1), SeedRun("l2g", 1, .41, .3, 1), SeedRun("l2g", 2, .50, .3, 1)]
    diff = paired_differences(runs, "l2g", "cam")
    assert diff["seeds"] == [0, 1, 2]
    assert diff["differences"] == pytest.approx([0.05, -0.01, 0.07])
    assert diff["mean"] == pytest.approx(0.036667, abs=1e-6)
    assert diff["std"] == pytest.approx(0.041633, abs=1e-6)
    assert (diff["wins"], diff["n"]) == (2, 3)
    summary = summarize(runs, ["cam", "l2g"], "cam")
    assert summary["cam"]["mean"] == pytest.approx((.40 + .42 + .43 + .39) / 4)
    assert "vs_reference" not in summary["cam"] and summary["l2g"]["vs_reference"] == diff


def test_variant_parsing():
    assert Variant.parse("cam") == Variant("cam", "cam", ())
    assert Variant.parse("kl=l2g method.transfer_loss=kl 'cams.scales=[1.0, 2.0]'") == Variant(
        "kl", "l2g", ("method.transfer_loss=kl", "cams.scales=[1.0, 2.0]"))
    with pytest.raises(ValueError, match="unknown method"):
        Variant.parse("x=l2gg")
    with pytest.raises(ValueError, match="key=value"):
        Variant.parse("x=l2g lam")


def test_two_seeds_end_to_end(tiny_root, tmp_path, capsys):
    out = tmp_path / "seeds"
    args = ["--seeds", "2", "--out", str(out), "--data", str(tiny_root), "--quiet", "--variant", "cam",
            "--variant", "kl=l2g method.transfer_loss=kl"]
    for setting in TINY:
        args += ["--set", setting]
    assert main(args) == 0
    report = json.loads((out / "seeds.json").read_text())
    assert report["seeds"] == [0, 1] and report["reference"] == "cam"
    assert [(r["label"], r["seed"]) for r in report["runs"]] == [("cam", 0), ("kl", 0), ("cam", 1), ("kl", 1)]
    # every number in the summary is the one its run's sweep.json holds, and the seed reached the config
    miou = {}
    for label in ("cam", "kl"):
        for seed in (0, 1):
            run = out / f"seed{seed}" / label
            miou[label, seed] = json.loads((run / "sweep.json").read_text())["best"]["miou"]
            config = (run / "config.yaml").read_text()
            assert f"seed: {seed}" in config
            assert ("transfer_loss: kl" in config) == (label == "kl")
    summary = report["summary"]
    for label in ("cam", "kl"):
        assert summary[label]["miou"] == pytest.approx([miou[label, 0], miou[label, 1]])
        assert summary[label]["mean"] == pytest.approx((miou[label, 0] + miou[label, 1]) / 2)
        assert summary[label]["std"] == pytest.approx(abs(miou[label, 0] - miou[label, 1]) / math.sqrt(2))
    # the synthetic set marks parts: each variant gets the part / body / background attention, averaged
    per_run = {(r["label"], r["seed"]): r["extra"]["attention"] for r in report["runs"]}
    for label in ("cam", "kl"):
        for key in ("part", "body", "background"):
            values = [per_run[label, s][key] for s in (0, 1)]
            assert 0 <= summary[label]["attention"][key] <= 1
            assert summary[label]["attention"][key] == pytest.approx(sum(values) / 2)
    diffs = [miou["kl", s] - miou["cam", s] for s in (0, 1)]
    assert summary["kl"]["vs_reference"]["differences"] == pytest.approx(diffs)
    assert summary["kl"]["vs_reference"]["wins"] == sum(d > 0 for d in diffs)
    # the two seeds trained different networks (initialisation and augmentation follow the seed)
    weights = [(out / f"seed{s}" / "cam" / "checkpoints" / "final.pt").read_bytes() for s in (0, 1)]
    assert weights[0] != weights[1]
    markdown = (out / "seeds.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| kl |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"{100 * summary['kl']['mean']:.1f} ± {100 * summary['kl']['std']:.1f}"
    assert cells[2] == f"{100 * miou['kl', 0]:.1f} / {100 * miou['kl', 1]:.1f}"
    assert cells[3].startswith(f"{100 * (diffs[0] + diffs[1]) / 2:+.1f} ± ")
    assert cells[4] == f"{sum(d > 0 for d in diffs)}/2"
    # the release's fixed threshold (0.25) is read from each run's sweep; the transfer run gets its target fit
    for label in ("cam", "kl"):
        sweeps = [json.loads((out / f"seed{s}" / label / "sweep.json").read_text()) for s in (0, 1)]
        at = [sw["miou"][[round(t, 2) for t in sw["thresholds"]].index(0.25)] for sw in sweeps]
        assert summary[label]["fixed"]["miou"] == pytest.approx(at)
        assert cells_of(markdown, label)[5] == f"{100 * sum(at) / 2:.1f}"
    assert "fit" not in summary["cam"] and cells_of(markdown, "cam")[-1] == "-"
    fit = summary["kl"]["fit"]
    assert set(fit) == {"part", "body", "background"}
    assert all(0 <= fit[r][k] <= 1 for r in fit for k in ("target", "global"))
    saved = json.loads((out / "seed0" / "kl" / "transfer_fit.json").read_text())
    assert per_run_fit(report, "kl", 0)["body"]["global"] == pytest.approx(saved["regions"]["body"]["global"])
    # a rerun finds every step done and reproduces the table
    assert main(args) == 0
    assert (out / "seeds.md").read_text() == markdown


def cells_of(markdown: str, label: str) -> list[str]:
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))
    return [c.strip() for c in row.strip("|").split("|")]


def per_run_fit(report: dict, label: str, seed: int) -> dict:
    return next(r["extra"]["fit"] for r in report["runs"] if r["label"] == label and r["seed"] == seed)
