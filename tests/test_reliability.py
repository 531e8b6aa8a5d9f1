"""What happens when things go wrong, end to end through the ``l2g`` command on the tiny dataset.

Processes that must die are real subprocesses killed with SIGKILL; ``L2G_FAULT_HOLD`` (see
l2g/faults.py) parks them at a known point first so the kill lands mid-epoch / mid-write every
time. Everything else runs in-process through ``l2g.cli.main``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import run_cli, tiny_set

from l2g.config import load_config
from l2g.data.layout import load_split
from l2g.engine.loader import epoch_permutation
from l2g.method.methods import CamMethod
from l2g.stages import seg_train
from l2g.stages.cams import estimate_cams_bytes

ROOT = Path(__file__).resolve().parents[1]


def train_args(root: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "synth", "--run", str(run), *tiny_set(root), "--set", "optim.batch_size=2", *extra, "--quiet"]


def sets(*settings: str) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


def held_subprocess(argv: list[str], hold: str) -> subprocess.Popen:
    """Start ``python -m l2g ARGV`` parked at ``hold`` (EVENT:N), return once it is parked there."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "L2G_FAULT_HOLD": hold, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "l2g", *map(str, argv)], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    watchdog = threading.Timer(180, proc.kill)  # never hang the test suite
    watchdog.start()
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("l2g fault hold:"):
                return proc
    finally:
        watchdog.cancel()
    proc.wait()
    raise AssertionError(f"the process ended (code {proc.returncode}) before {hold}:\n{''.join(seen)[-3000:]}")


def sigkill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def log_iterations(run: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained_run(tiny_root, tmp_path_factory) -> Path:
    """A finished tiny CAM run (read-only for the tests)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main_quiet(train_args(tiny_root, run, *sets("method.name=cam"))) == 0
    return run


def main_quiet(argv: list[str]) -> int:
    from l2g.cli import main

    return main([str(a) for a in argv])


# --- exact resume after SIGKILL ---------------------------------------------------------------------


def kill_resume_and_compare(capsys, argv, reference: Path, killed: Path, before_resume=lambda: None) -> None:
    """Train ``argv(run_dir, *extra)`` (8 images, batch 2: 4 iterations per epoch, 8 in all, a checkpoint
    after each) into ``reference`` uninterrupted, and into ``killed`` SIGKILLed after its 6th checkpoint
    (epoch 2, step 2 of 4) then resumed with --resume; both must end alike to the bit."""
    common = sets("runtime.checkpoint_every=1", "runtime.deterministic=true", "log_every=1")
    code, _, err = run_cli(capsys, *argv(reference, *common))
    assert code == 0, err

    proc = held_subprocess(argv(killed, *common), "checkpoint:6")
    sigkill(proc)
    checkpoints = killed / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step-*.pt")) == ["step-00000005.pt", "step-00000006.pt"]
    assert not (checkpoints / "final.pt").exists()

    before_resume()
    code, _, err = run_cli(capsys, *argv(killed, *common, "--resume"))
    assert code == 0, err
    a, b = weights(reference / "checkpoints" / "final.pt"), weights(checkpoints / "final.pt")
    assert a.keys() == b.keys()
    assert any(k.endswith("running_var") for k in a)  # batch-norm statistics are part of what must agree
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    # the whole training state, momentum included, and the log (rewritten after the checkpoint) agree
    sa = torch.load(reference / "checkpoints" / "step-00000008.pt", weights_only=True)
    sb = torch.load(checkpoints / "step-00000008.pt", weights_only=True)
    for index, state in sa["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], sb["optimizer"]["state"][index]["momentum_buffer"])
    assert (killed / "train_log.jsonl").read_text() == (reference / "train_log.jsonl").read_text()
    assert log_iterations(killed) == list(range(8))


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tiny_root, tmp_path, capsys):
    def argv(run: Path, *extra: str) -> list[str]:
        return train_args(tiny_root, run, *sets("method.name=l2g", "optim.epochs=2"), *extra)

    kill_resume_and_compare(capsys, argv, tmp_path / "reference", tmp_path / "killed")


def test_seg_sigkill_mid_epoch_then_resume_is_bit_identical(tiny_root, tmp_path, capsys, monkeypatch):
    """``l2g seg train`` on the tiny set's ground truth as pseudo masks; its batch norm trains."""
    settings = sets("seg.arch=deeplab_small", "seg.width=4", "seg.aspp_rates=[1,2]", "seg.crop_size=32",
                    "seg.epochs=2", "seg.batch_size=2", "seg.lr=0.01")

    def argv(run: Path, *extra: str) -> list[str]:
        return ["seg", "train", "synth", "--run", run, "--pseudo", tiny_root / "SegmentationClassAug",
                *tiny_set(tiny_root), *settings, *extra, "--quiet"]

    steps = []

    def count_steps() -> None:
        monkeypatch.setattr(seg_train, "segmentation_step", lambda model, batch: steps.append(1) or
                            seg_train.segmentation_loss(model, batch["image"], batch["mask"]))

    reference, killed = tmp_path / "reference", tmp_path / "killed"
    kill_resume_and_compare(capsys, argv, reference, killed, before_resume=count_steps)
    assert len(steps) == 2  # only iterations 6 and 7 were trained again: it continued mid-epoch
    assert (killed / "init.json").read_text() == (reference / "init.json").read_text()


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    common = sets("method.name=cam", "runtime.checkpoint_every=1", "log_every=1")
    code, _, err = run_cli(capsys, *train_args(tiny_root, run, *common))
    assert code == 0, err
    newest = run / "checkpoints" / "step-00000004.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    code, _, err = run_cli(capsys, *train_args(tiny_root, run, *common, "--set", "optim.epochs=2", "--resume"))
    assert code == 0, err
    assert f"{newest}: unreadable checkpoint" in err
    assert "trying the previous checkpoint" in err
    assert "optim.epochs: 1 -> 2" in err
    assert log_iterations(run) == list(range(8))  # resumed after iteration 3 (step-00000003.pt)
    assert (run / "checkpoints" / "step-00000008.pt").is_file()
    final = run / "checkpoints" / "final.pt"
    mtime = final.stat().st_mtime_ns
    code, _, err = run_cli(capsys, *train_args(tiny_root, run, *common, "--set", "optim.epochs=2", "--resume"))
    assert code == 0, err
    assert final.stat().st_mtime_ns == mtime  # finished with these epochs: nothing to do

    for path in (run / "checkpoints").glob("step-*.pt"):
        path.write_bytes(b"garbage")
    code, _, err = run_cli(capsys, *train_args(tiny_root, run, *common, "--set", "optim.epochs=3", "--resume"))
    assert code == 2
    assert "no readable checkpoint" in err
    assert "Traceback" not in err


# --- attention maps: killed mid-write, rerun ----------------------------------------------------------


def test_cams_killed_mid_write_then_rerun_gives_the_full_set(trained_run, tmp_path, capsys):
    # float32: its maps are the same bytes in any process; bf16 kernels may round differently per thread count
    reference, out, fp32 = tmp_path / "reference", tmp_path / "cams", ("--set", "cams.amp=off")
    code, _, err = run_cli(capsys, "cams", "--run", trained_run, "--out", reference, *fp32, "--quiet")
    assert code == 0, err
    names = sorted(p.name for p in reference.glob("*.npz"))
    assert len(names) == 8

    # atomic writes of the stage: 1 = its start marker, 2.. = maps; park before renaming the third map
    proc = held_subprocess(["cams", "--run", trained_run, "--out", out, *fp32, "--quiet"], "write:4")
    sigkill(proc)
    assert len(list(out.glob("*.npz"))) == 2
    assert len(list(out.glob(".*.partial"))) == 1  # the map being written: never under its real name
    assert not (out / "l2g-done.json").exists()

    code, _, err = run_cli(capsys, "cams", "--run", trained_run, "--out", out, *fp32, "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.npz")) == names
    for name in names:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert not list(out.glob(".*.partial"))
    done = json.loads((out / "l2g-done.json").read_text())
    assert done["files"] == {name: (out / name).stat().st_size for name in names}

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, _, err = run_cli(capsys, "cams", "--run", trained_run, "--out", out, *fp32, "--quiet")
    assert code == 0, err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes  # done: nothing rewritten


def test_cams_with_other_inputs_are_rewritten(trained_run, tmp_path, capsys):
    out = tmp_path / "cams"
    code, _, err = run_cli(capsys, "cams", "--run", trained_run, "--out", out, "--quiet")
    assert code == 0, err
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.npz")}
    code, _, err = run_cli(capsys, "cams", "--run", trained_run, "--out", out, "--set", "cams.scales=[0.5]", "--quiet")
    assert code == 0, err
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.npz")}
    assert after.keys() == before.keys()
    assert all(after[name][1] != before[name][1] for name in before)  # every map rewritten...
    assert any(after[name][0] != before[name][0] for name in before)  # ...with the new scales
    assert json.loads((out / "l2g-done.json").read_text())["inputs"]["scales"] == [0.5]


# --- guards ------------------------------------------------------------------------------------------------


def test_nan_loss_stops_naming_iteration_term_and_images(tiny_root, tmp_path, capsys, monkeypatch):
    original, calls = CamMethod.losses, []

    def poisoned(self, batch):
        losses = original(self, batch)
        calls.append(1)
        if len(calls) == 3:  # iteration 2: the third batch
            losses["loss_cls"] = torch.tensor(float("nan"))
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(CamMethod, "losses", poisoned)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, *train_args(tiny_root, run, *sets("method.name=cam", "runtime.checkpoint_every=1")))
    assert code == 2
    assert "non-finite loss at iteration 2" in err
    assert "loss_cls" in err
    samples = load_split(tiny_root, "train", 3)
    batch = [samples[i].image_id for i in epoch_permutation(0, 0, len(samples))[4:6]]
    assert f"images {batch}" in err
    last_good = run / "checkpoints" / "step-00000002.pt"
    assert f"the last good checkpoint is {last_good}" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000001.pt", "step-00000002.pt"]
    assert "Traceback" not in err


def test_cams_refused_when_the_disk_is_too_small(trained_run, tmp_path, capsys, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=1000))
    out = tmp_path / "cams"
    code, _, err = run_cli(capsys, "cams", "--run", trained_run, "--out", out, "--quiet")
    assert code == 2
    assert "not enough disk space for the attention maps of 8 images" in err
    assert "KB needed" in err and "1.0 KB free" in err
    assert not list(out.glob("*.npz"))


def test_cams_size_estimate_is_close_to_the_real_size(trained_run, tiny_root, tmp_path, capsys):
    out = tmp_path / "cams"
    code, _, err = run_cli(capsys, "cams", "--run", trained_run, "--out", out, "--quiet")
    assert code == 0, err
    actual = sum(p.stat().st_size for p in out.glob("*.npz"))
    estimate = estimate_cams_bytes(load_split(tiny_root, "train", 3))
    assert 0.75 * actual < estimate < 1.33 * actual


# --- run folders ---------------------------------------------------------------------------------------------


def test_run_folder_needs_resume_or_overwrite(trained_run, tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "checkpoints" / "final.pt").unlink()  # an unfinished run
    config = run / "config.yaml"
    code, _, err = run_cli(capsys, *train_args(tiny_root, run, *sets("method.name=cam")))
    assert code == 2
    assert f"holds an unfinished run ({config} exists)" in err and "--resume" in err and "--overwrite" in err

    # resuming with a change that alters what is trained is refused, naming the key and the safe ones
    code, _, err = run_cli(capsys, *train_args(tiny_root, run, *sets("method.name=cam", "optim.lr=0.5"), "--resume"))
    assert code == 2
    assert "optim.lr: 0.002 -> 0.5" in err and "optim.epochs" in err
    assert not (run / "checkpoints" / "final.pt").exists()

    (run / "stale.txt").write_text("from the old run")
    code, _, err = run_cli(capsys, *train_args(tiny_root, run, *sets("method.name=cam", "optim.lr=0.5"),
                                                "--overwrite"))
    assert code == 0, err
    assert not (run / "stale.txt").exists()
    assert load_config(config).optim.lr == 0.5


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tiny_root, tmp_path, capsys):
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    code, _, err = run_cli(capsys, *train_args(tiny_root, folder, "--overwrite"))
    assert code == 2
    assert "not an l2g run" in err
    assert (folder / "thesis.tex").read_text() == "years of work"


def test_amp_on_cpu_trains_in_bfloat16(tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, *train_args(tiny_root, run, *sets("method.name=l2g", "amp=on",
                                                                     "amp_warmup_epochs=0")))
    assert code == 0, err
    metrics = json.loads((run / "train_metrics.json").read_text())
    assert metrics["precision"] == "bfloat16 autocast"  # from the first step; CPU training keeps its layout
    assert metrics["precision_reason"] == "amp on (set in the config)"
    losses = [json.loads(line)["loss"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert losses and np.isfinite(losses).all()


def test_resume_needs_a_run_and_resume_auto_starts_one(tiny_root, tmp_path, capsys):
    """Plain --resume of a folder without a run is an error (a mistyped path must not start over), the
    same in l2g train, l2g seg train and l2g run; --resume auto starts a run there, then continues it."""
    missing, empty = tmp_path / "typo", tmp_path / "empty"
    empty.mkdir()
    seg = ["--pseudo", tiny_root / "SegmentationClassAug", *sets("seg.arch=deeplab_small")]
    for command in (["train", "synth"], ["seg", "train", "synth", *seg], ["run", "synth"]):
        for folder, what in ((missing, "does not exist"), (empty, "holds no")):
            code, _, err = run_cli(capsys, *command, "--out", folder, *tiny_set(tiny_root), "--resume", "--quiet")
            assert code == 2, (command, err)
            assert f"{folder}: {what}" in err and "--resume auto" in err, (command, err)
    assert not missing.exists() and not any(empty.iterdir())

    run = tmp_path / "auto"
    code, _, err = run_cli(capsys, *train_args(tiny_root, run, *sets("method.name=cam"), "--resume", "auto"))
    assert code == 0, err
    final = run / "checkpoints" / "final.pt"
    mtime = final.stat().st_mtime_ns
    code, _, err = run_cli(capsys, *train_args(tiny_root, run, *sets("method.name=cam"), "--resume", "auto"))
    assert code == 0, err
    assert final.stat().st_mtime_ns == mtime  # a finished run: resumed, nothing left to do

    code, _, err = run_cli(capsys, "train", "--resume", "synth", "--out", run)
    assert code == 2 and "'synth': not a --resume mode (the only one is auto" in err
