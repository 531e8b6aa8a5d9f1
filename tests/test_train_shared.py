"""One run training L2G and L2G + shape from one local network gives each the weights of its own run."""

from __future__ import annotations

import json

import pytest
import torch

from l2g.config import load_config
from l2g.engine.run_paths import RunFolder
from l2g.stages.train import train
from l2g.stages.train_shared import (
    member_records,
    progress_terms,
    shared_groups,
    shared_run_dir,
    sharing_problem,
    train_shared,
)
from l2g.stages.transfer_fit import measure_transfer_fit
from tests.test_cli import TINY_SETTINGS

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(root, method: str, *extra: str):
    # Two epochs: the synth preset's float32 epoch, then bf16 autocast where the CPU has native bf16.
    return load_config("synth", [*TINY_SETTINGS, f"data.root={root}", f"method.name={method}", "optim.epochs=2",
                                 "seed=3", *extra])


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.fixture(scope="module")
def runs(tiny_root, tmp_path_factory):
    """The same two methods trained alone and in one shared run (L2G with its own lambda and read-out)."""
    base = tmp_path_factory.mktemp("shared")
    configs = [tiny(tiny_root, "l2g", "method.lam=7", "cams.source=logits"), tiny(tiny_root, "l2g_shape")]
    for config in configs:
        train(config, base / "alone" / config.method.name, progress=False)
    finals = train_shared(configs, [base / "together" / c.method.name for c in configs], progress=False)
    return base, configs, finals


def test_each_member_gets_the_weights_of_its_own_run(runs):
    base, configs, finals = runs
    for config, final in zip(configs, finals, strict=True):
        alone = weights(RunFolder(base / "alone" / config.method.name).final)
        together = weights(final)
        assert alone.keys() == together.keys()
        for key in alone:
            torch.testing.assert_close(together[key], alone[key], rtol=0, atol=0, msg=key)  # bit for bit
    # The local networks of both members are one network, equal to either run's own.
    l2g_local = {k: v for k, v in weights(_step(base / "together" / "l2g")).items() if k.startswith("local.")}
    own_local = {k: v for k, v in weights(_step(base / "alone" / "l2g_shape")).items() if k.startswith("local.")}
    for key, value in own_local.items():
        torch.testing.assert_close(l2g_local[key], value, rtol=0, atol=1e-6, msg=key)


def _step(run_dir):
    return sorted(RunFolder(run_dir).checkpoints.glob("step-*.pt"))[-1]


def test_member_folders_read_like_their_own_runs(runs):
    base, configs, _ = runs
    for config in configs:
        alone, together = RunFolder(base / "alone" / config.method.name), RunFolder(base / "together" /
                                                                                    config.method.name)
        assert load_config(together.config) == load_config(alone.config)
        own = [json.loads(line) for line in alone.train_log.read_text().splitlines()]
        shared = [json.loads(line) for line in together.train_log.read_text().splitlines()]
        assert [r["iteration"] for r in shared] == [r["iteration"] for r in own]
        assert set(shared[0]) == set(own[0])  # its own terms under their own names, no other member's
        for mine, theirs in zip(shared, own, strict=True):
            assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
            assert mine["loss_kt"] == pytest.approx(theirs["loss_kt"], rel=1e-5)
        metrics = json.loads(together.metrics.read_text())
        assert metrics["shared_with"] == [c.method.name for c in configs if c is not config]
        assert metrics["iterations"] == json.loads(alone.metrics.read_text())["iterations"]
    # l2g transfer-fit reads a member's step checkpoint as it reads a run's own.
    fit = measure_transfer_fit(base / "together" / "l2g_shape", images=2, progress=False)
    own = measure_transfer_fit(base / "alone" / "l2g_shape", images=2, progress=False)
    assert fit["regions"].keys() == own["regions"].keys()
    for region, row in own["regions"].items():
        assert fit["regions"][region] == pytest.approx(row, abs=1e-5), region


def test_a_finished_shared_run_is_not_trained_again(runs, capsys):
    base, configs, finals = runs
    before = [path.stat().st_mtime_ns for path in finals]
    again = train_shared(configs, [base / "together" / c.method.name for c in configs], progress=False)
    assert again == finals and [path.stat().st_mtime_ns for path in again] == before


def test_the_shared_log_names_each_members_terms(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text(json.dumps({"epoch": 0, "iteration": 0, "lr": 0.1, "loss": 3.0, "a/loss": 1.0, "a/loss_kt": 0.5,
                               "b/loss": 2.0, "b/loss_kt": 0.25}) + "\n")
    assert member_records(log, "b") == [{"epoch": 0, "iteration": 0, "lr": 0.1, "loss": 2.0, "loss_kt": 0.25}]
    # the progress bar shows the summed loss and each member's transfer loss, not every term twice
    assert progress_terms({"loss": 3.0, "a/loss": 1.0, "a/loss_kt": 0.5, "b/kt_stuck": 0.0, "b/loss_kt": 0.25}) == {
        "loss": 3.0, "a/loss_kt": 0.5, "b/loss_kt": 0.25}


def test_which_runs_can_share(tiny_root, tmp_path):
    l2g, shape = tiny(tiny_root, "l2g"), tiny(tiny_root, "l2g_shape", "method.lam=3", "cams.scales=[0.5,1.0]")
    assert sharing_problem([l2g, shape]) is None
    assert "optim.lr" in sharing_problem([l2g, tiny(tiny_root, "l2g_shape", "optim.lr=0.1")])
    assert "optim.epochs" in sharing_problem([l2g, tiny(tiny_root, "l2g_shape", "optim.epochs=3")])
    assert "seed" in sharing_problem([l2g, tiny(tiny_root, "l2g_shape", "seed=4")])
    assert "trains no global network" in sharing_problem([l2g, tiny(tiny_root, "cam")])
    assert "shared_backbone" in sharing_problem([l2g, tiny(tiny_root, "l2g_shape", "model.shared_backbone=true")])
    assert sharing_problem([l2g]) == "fewer than two runs"

    cam = tiny(tiny_root, "cam")
    longer = tiny(tiny_root, "l2g", "optim.epochs=5")
    runs = [(cam, tmp_path / "cam"), (l2g, tmp_path / "l2g"), (longer, tmp_path / "long"), (shape, tmp_path / "shape")]
    assert shared_groups(runs) == [[runs[1], runs[3]]]
    (tmp_path / "shape").mkdir()
    (tmp_path / "shape" / "config.yaml").write_text("{}")  # a separate run of its own: resumed alone
    assert shared_groups(runs) == []
    assert shared_run_dir([tmp_path / "l2g", tmp_path / "shape"]) == tmp_path / "l2g+shape"


def test_a_member_folder_holding_something_else_is_refused_before_training(tiny_root, tmp_path):
    (tmp_path / "l2g_shape").mkdir()
    (tmp_path / "l2g_shape" / "notes.txt").write_text("mine")
    configs = [tiny(tiny_root, "l2g"), tiny(tiny_root, "l2g_shape")]
    with pytest.raises(ValueError, match="not empty"):
        train_shared(configs, [tmp_path / "l2g", tmp_path / "l2g_shape"], progress=False)
    assert not (tmp_path / "l2g+l2g_shape").exists()
    with pytest.raises(ValueError, match="differ in optim.lr"):
        train_shared([configs[0], tiny(tiny_root, "l2g_shape", "optim.lr=0.1")], [tmp_path / "a", tmp_path / "b"],
                     progress=False)


def test_the_demo_trains_them_apart_when_asked(tiny_root, tmp_path):
    from l2g.cli import main

    settings = [arg for setting in [*TINY_SETTINGS, "optim.epochs=1"] for arg in ("--set", setting)]
    argv = ["demo", "--out", tmp_path / "apart", "--data", tiny_root, "--methods", "l2g,l2g_shape", *settings,
            "--quiet", "--separate-runs"]
    assert main([str(arg) for arg in argv]) == 0
    assert sorted(p.name for p in (tmp_path / "apart").iterdir() if p.is_dir()) == ["l2g", "l2g_shape", "report"]
    assert "shared_with" not in json.loads(RunFolder(tmp_path / "apart" / "l2g").metrics.read_text())


def test_the_seed_benchmark_shares_unless_asked_not_to(tiny_root, tmp_path):
    from benchmarks.seeds import main

    settings = [arg for setting in [*TINY_SETTINGS, "optim.epochs=1"] for arg in ("--set", setting)]
    common = ["--seeds", "1", "--data", str(tiny_root), "--fit-images", "0", "--quiet", "--variant", "l2g",
              "--variant", "shape=l2g_shape", *settings]
    assert main(["--out", str(tmp_path / "shared"), *common]) == 0
    assert main(["--out", str(tmp_path / "apart"), *common, "--separate-runs"]) == 0
    assert (tmp_path / "shared" / "seed0" / "l2g+shape" / "checkpoints" / "final.pt").exists()
    assert not (tmp_path / "apart" / "seed0" / "l2g+shape").exists()
    assert json.loads(RunFolder(tmp_path / "shared" / "seed0" / "shape").metrics.read_text())["shared_with"] == ["l2g"]
    # the same weights either way, so the same table
    runs = [json.loads((tmp_path / mode / "seeds.json").read_text())["runs"] for mode in ("shared", "apart")]
    assert [r["miou"] for r in runs[0]] == [r["miou"] for r in runs[1]]


def test_a_killed_shared_run_resumes_to_the_same_weights(tiny_root, tmp_path, capsys):
    """``l2g demo`` SIGKILLed inside the shared run (after its 6th of 8 checkpoints), then run again: it
    resumes the shared run, and each member ends with the weights of its own uninterrupted run."""
    from tests.test_reliability import held_subprocess, sigkill, weights

    settings = [*TINY_SETTINGS, "optim.batch_size=2", "optim.epochs=2", "runtime.checkpoint_every=1"]
    argv = ["demo", "--out", tmp_path / "demo", "--data", tiny_root, "--methods", "l2g,l2g_shape",
            *[arg for setting in settings for arg in ("--set", setting)], "--quiet"]
    proc = held_subprocess(argv, "checkpoint:6")
    sigkill(proc)
    shared = tmp_path / "demo" / "l2g+l2g_shape"
    assert sorted(p.name for p in (shared / "checkpoints").glob("step-*.pt"))[-1] == "step-00000006.pt"
    assert not (tmp_path / "demo" / "l2g").exists()  # members are written only when the shared run ends

    from l2g.cli import main

    assert main([str(arg) for arg in argv]) == 0
    assert json.loads(RunFolder(tmp_path / "demo" / "l2g").metrics.read_text())["iterations"] == 8
    for method in ("l2g", "l2g_shape"):
        config = load_config("synth", [*settings, f"data.root={tiny_root}", f"method.name={method}"])
        train(config, tmp_path / "alone" / method, progress=False)
        alone = weights(RunFolder(tmp_path / "alone" / method).final)
        resumed = weights(RunFolder(tmp_path / "demo" / method).final)
        assert all(torch.equal(alone[k], resumed[k]) for k in alone), [k for k in alone
                                                                        if not torch.equal(alone[k], resumed[k])]
