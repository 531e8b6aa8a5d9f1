"""Jobs that survive a lost worker: ``torchrun --max-restarts`` with 2 CPU processes (gloo) on the tiny set.

A worker is SIGKILLed at a known point (``L2G_FAULT_HOLD``, l2g/faults.py: the process parks there
and prints its pid; one entry per attempt of the worker group, ``@R`` = only rank R). torchrun stops the
other worker and restarts the group with the same command line; the job must end as an uninterrupted
2-process job ends, to the bit. A rank that fails (a bad image only it reads) must end the job, not hang it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from l2g.data.layout import load_split
from l2g.engine import elastic
from l2g.engine.loader import epoch_permutation

ROOT = Path(__file__).resolve().parents[1]
HOLD = re.compile(r"^l2g fault hold: (\S+) (\d+) .* pid=(\d+)$")
JOB_SECONDS = 150  # a watchdog: a job that hangs fails the test instead of the suite

# 8 training images, 2 processes x batch 1: 4 iterations per epoch, 8 in all, checkpoints at 3, 4, 6, 8
TINY = ["data.num_classes=3", "data.resize_short=40", "data.global_size=32", "views.patch_size=24",
        "model.width=4", "threads=1", "optim.epochs=2", "optim.batch_size=1", "method.name=l2g", "log_every=1",
        "runtime.checkpoint_every=3", "runtime.deterministic=true", "cams.scales=[1.0]", "seg.arch=deeplab_small",
        "seg.width=4", "seg.aspp_rates=[1,2]", "seg.crop_size=32", "seg.epochs=2", "seg.batch_size=1",
        "seg.lr=0.01", "device=cpu"]


def sets(root: Path, *extra: str) -> list[str]:
    return [arg for setting in (f"data.root={root}", *TINY, *extra) for arg in ("--set", setting)]


def torchrun(args: list[str], hold: str = "", restarts: int = 3) -> tuple[int, str, list[tuple[str, int, set[str]]]]:
    """Run ``torchrun --standalone --nproc_per_node=2 --max-restarts=RESTARTS ARGS`` (ARGS: ``-m l2g ...``
    or a script), SIGKILLing each worker that parks at a fault hold. Returns (exit code, stderr, the holds:
    (event, count, the files of the job's output folders at that moment))."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "L2G_FAULT_HOLD": hold}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               f"--max-restarts={restarts}", *map(str, args)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    watchdog = threading.Timer(JOB_SECONDS, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    lines, holds = [], []
    try:
        for line in proc.stderr:
            lines.append(line)
            found = HOLD.match(line.strip())
            if found:
                holds.append((found.group(1), int(found.group(2)), _files_now(args)))
                os.kill(int(found.group(3)), signal.SIGKILL)
        proc.wait()
    finally:
        watchdog.cancel()
    return proc.returncode, "".join(lines), holds


def _files_now(args: list[str]) -> set[str]:
    """The files (with their mtimes) under the --out folder of a command, when a worker is held."""
    out = Path(args[args.index("--out") + 1])
    return {f"{p.relative_to(out)}@{p.stat().st_mtime_ns}" for p in out.rglob("*") if p.is_file()} if out.exists() \
        else set()


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same_run(reference: Path, resumed: Path) -> None:
    """Final weights (batch-norm statistics included), the last checkpoint's momentum and the log: equal."""
    a, b = weights(reference / "checkpoints" / "final.pt"), weights(resumed / "checkpoints" / "final.pt")
    assert a.keys() == b.keys() and any(k.endswith("running_var") for k in a)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    sa = torch.load(reference / "checkpoints" / "step-00000008.pt", weights_only=True)["optimizer"]["state"]
    sb = torch.load(resumed / "checkpoints" / "step-00000008.pt", weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(s["momentum_buffer"], sb[i]["momentum_buffer"]) for i, s in sa.items())
    assert (resumed / "train_log.jsonl").read_text() == (reference / "train_log.jsonl").read_text()


@pytest.fixture(scope="module")
def reference(tiny_root, tmp_path_factory) -> Path:
    """Uninterrupted 2-process runs of l2g train, seg train and cams (one torchrun job, three commands)."""
    base = tmp_path_factory.mktemp("elastic_reference")
    code, err, _ = torchrun([ROOT / "tests" / "elastic_job.py",
                             "train", "synth", "--out", base / "run", *sets(tiny_root), "--quiet", "--",
                             "seg", "train", "synth", "--out", base / "seg", "--pseudo",
                             tiny_root / "SegmentationClassAug", *sets(tiny_root), "--quiet", "--",
                             "cams", "--run-dir", base / "run", "--out", base / "cams", *sets(tiny_root), "--quiet"],
                            restarts=0)
    assert code == 0, err[-4000:]
    return base


def test_train_killed_twice_under_torchrun_ends_bit_identical(reference, tiny_root, tmp_path):
    """Attempt 1: rank 1 killed after its 6th optimiser step (newest checkpoint: step 4, the epoch end);
    attempt 2: rank 0 killed right after it wrote step 6; attempt 3 finishes. The command line has no
    --resume: a restarted group continues the run of its own job."""
    run = tmp_path / "run"
    code, err, holds = torchrun(["-m", "l2g", "train", "synth", "--out", run, *sets(tiny_root), "--quiet"],
                                hold="step:6@1,checkpoint:1@0")
    assert code == 0, err[-4000:]
    assert [(event, count) for event, count, _ in holds] == [("step", 6), ("checkpoint", 1)]
    first, second = (sorted(name.split("@")[0] for name in files if "step-" in name) for _, _, files in holds)
    assert first == ["checkpoints/step-00000003.pt", "checkpoints/step-00000004.pt"]
    assert second == ["checkpoints/step-00000004.pt", "checkpoints/step-00000006.pt"]
    assert "torchrun restart 1: continuing" in err and "torchrun restart 2: continuing" in err
    assert_same_run(reference / "run", run)


def test_seg_train_killed_under_torchrun_ends_bit_identical(reference, tiny_root, tmp_path):
    """--resume auto on a new folder starts the run; rank 1 is killed after its 5th step (newest
    checkpoint: step 4); the restarted group continues from it. DeepLab-small's batch norm trains."""
    seg = tmp_path / "seg"
    code, err, holds = torchrun(["-m", "l2g", "seg", "train", "synth", "--out", seg, "--pseudo",
                                 tiny_root / "SegmentationClassAug", *sets(tiny_root), "--resume", "auto", "--quiet"],
                                hold="step:5@1")
    assert code == 0, err[-4000:]
    assert [(event, count) for event, count, _ in holds] == [("step", 5)]
    assert sorted(name.split("@")[0] for name in holds[0][2] if "step-" in name) == [
        "checkpoints/step-00000003.pt", "checkpoints/step-00000004.pt"]
    assert_same_run(reference / "seg", seg)
    assert (seg / "init.json").read_text() == (reference / "seg" / "init.json").read_text()


def test_cams_killed_under_torchrun_redo_only_the_missing_maps(reference, tmp_path):
    """Rank 1 is killed while writing its second map; the restarted group writes only the maps that are
    missing (those already written keep their mtimes) and the folder equals an uninterrupted job's."""
    out = tmp_path / "cams"
    code, err, holds = torchrun(["-m", "l2g", "cams", "--run-dir", reference / "run", "--out", out,
                                 "--set", "threads=1", "--quiet"], hold="write:2@1")
    assert code == 0, err[-4000:]
    assert [(event, count) for event, count, _ in holds] == [("write", 2)]
    written = {name for name in holds[0][2] if ".npz@" in name}
    assert 1 <= len(written) < 8
    names = sorted(p.name for p in (reference / "cams").glob("*.npz"))
    assert len(names) == 8 and sorted(p.name for p in out.glob("*.npz")) == names
    assert {f"{name}@{(out / name).stat().st_mtime_ns}" for name in names} >= written  # not rewritten
    for name in names:
        assert (out / name).read_bytes() == (reference / "cams" / name).read_bytes(), name
    done = json.loads((out / "l2g-done.json").read_text())
    assert sorted(done["files"]) == names


def test_a_bad_image_on_one_rank_ends_the_job_with_its_error(tiny_root, tmp_path):
    """Only rank 1 reads the broken image (files are only checked to exist up front): the job stops with
    that error, and does not hang (JOB_SECONDS bounds it). No restart: each would meet the same error."""
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    samples = load_split(root, "train", 3)
    broken = samples[epoch_permutation(0, 0, len(samples))[1]].image_path  # rank 1's first image
    broken.write_bytes(b"not a jpeg")
    code, err, _ = torchrun(["-m", "l2g", "train", "synth", "--out", tmp_path / "run",
                             *sets(root, "data.check_images=exists"), "--quiet"], restarts=0)
    assert code == 1
    assert err.count(f"l2g train: error: {broken}: unreadable image") == 1, err[-4000:]  # rank 1's own report
    assert not (tmp_path / "run" / "checkpoints" / "final.pt").exists()


# --- the store of an attempt, without torchrun --------------------------------------------------------------


@pytest.fixture
def agent_store(monkeypatch) -> dist.TCPStore:
    """A store like torchrun's agent's (one for every attempt), and the workers' environment pointing at it."""
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(server.port))
    monkeypatch.setattr(elastic, "_store", None)
    return server


def join(world_size: int = 2) -> dict[int, dist.Store]:
    """Every rank's round_store, each rank in a thread as each would be in a process."""
    stores: dict[int, dist.Store] = {}

    def rank(r: int) -> None:
        stores[r] = elastic.round_store(r, world_size, timedelta(seconds=30))

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(stores) == list(range(world_size))
    return stores


def test_each_attempt_meets_under_its_own_prefix(agent_store):
    first = join()
    first[1].set("rank_1", "address of a process that dies")  # what gloo leaves in the store
    agent_store.set("l2g/hello/1", "a dead process's token")  # and a hello nobody will wait for
    second = join()
    assert first[0].get("rank_1") == b"address of a process that dies"
    assert not second[0].check(["rank_1"])  # the restarted group does not see the dead one's keys
    second[1].set("rank_1", "new address")
    assert second[0].get("rank_1") == b"new address"


def test_a_rank_that_failed_is_reported_by_the_others(agent_store):
    stores = join()
    assert elastic.peer_error(wait_seconds=0.1) is None  # nothing published: the caller re-raises its own
    elastic.publish_error(1, "train_00003.jpg: unreadable image")
    elastic.publish_error(0, "a later error")  # the first one stays
    assert elastic.peer_error() == "(rank 1) train_00003.jpg: unreadable image"
    assert stores[0].check(["error"])


def test_a_restarted_group_continues_only_its_own_jobs_run(tmp_path, monkeypatch):
    from l2g.engine.run_folder import prepare_run

    run = tmp_path / "run"
    files = {"finished_marker": run / "final.pt", "load_run_config": lambda path: {"a": 1},
             "save_run_config": lambda path: path.write_text("a: 1\n")}
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-1")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert prepare_run(run, {"a": 1}, False, True, **files) == "fresh"  # --overwrite of nothing
    (run / "progress").write_text("step 5")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert prepare_run(run, {"a": 1}, False, True, **files) == "resume"  # the same command: not deleted again
    assert (run / "progress").exists()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-2")  # another job's restart: the flags rule
    with pytest.raises(FileExistsError, match="holds an unfinished run"):
        prepare_run(run, {"a": 1}, False, False, **files)
