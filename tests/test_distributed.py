"""Two CPU processes under torchrun (gloo) against one process, on the tiny dataset.

- Training with optim.batch_size=K on 2 processes reaches the weights of one process with batch 2K
  (to float tolerance): same global batches, DDP-averaged gradients, synchronised batch norm.
- The same for the segmentation network (seg.batch_size=K on 2 processes vs 2K on one).
- Attention maps and pseudo masks written by 2 processes are byte-for-byte the files of one process, and
  so are the segmentation stage's evaluation (metrics and predicted masks) and ``l2g predict``'s files.
- An error on one rank is raised on every rank (no process waits forever in a collective).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from l2g.config import load_config
from l2g.engine.tensorboard import tensorboard_available
from l2g.stages.cams import infer_cams
from l2g.stages.predict import predict_images
from l2g.stages.pseudo import write_pseudo_masks
from l2g.stages.seg_eval import evaluate_segmentation
from l2g.stages.seg_train import train_segmentation
from l2g.stages.train import train

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD = 0.3
# TensorBoard logging on where it is installed: it must change nothing the tests below compare
TENSORBOARD = ["runtime.tensorboard=true"] if tensorboard_available() else []


def settings(root: Path) -> list[str]:
    return [f"data.root={root}", "data.num_classes=3", "data.resize_short=40", "data.global_size=32",
            "views.patch_size=24", "model.width=4", "cams.scales=[1.0, 0.5]", "threads=1", "optim.epochs=1",
            "method.name=l2g_shape", "log_every=1", "seg.width=4", "seg.aspp_rates=[1,2]", "seg.crop_size=32",
            "seg.epochs=1", "seg.lr=0.01", "amp=off", *TENSORBOARD]  # amp off: float32 equalities of 1 vs 2 processes


@pytest.fixture(scope="module")
def runs(tiny_root, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ddp")
    single = base / "single"
    config = load_config("synth", [*settings(tiny_root), "optim.batch_size=4", "seg.batch_size=4"])
    train(config, single / "run", progress=False)
    infer_cams(config, single / "run", out_dir=single / "cams", progress=False)
    write_pseudo_masks(config, single / "cams", single / "pseudo", THRESHOLD, progress=False)
    train_segmentation(config, single / "seg", tiny_root / "SegmentationClassAug", progress=False)
    shutil.copytree(single / "seg", base / "seg_for_ddp")  # the 2 processes evaluate this copy
    evaluate_segmentation(config, single / "seg", progress=False)
    predict_images(config, single / "seg", val_images(tiny_root), single / "predict", progress=False)

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "tests" / "ddp_job.py"), str(base / "ddp"), str(single / "run"), str(base / "seg_for_ddp"),
               *settings(tiny_root), "optim.batch_size=2", "seg.batch_size=2"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    return {"single": single, "ddp": base / "ddp", "seg_for_ddp": base / "seg_for_ddp"}


def val_images(root: Path) -> list[Path]:
    return sorted((root / "JPEGImages").glob("val_*.jpg"))


def _model(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize(("stage", "loss_terms"), [("run", ("loss", "loss_cls", "loss_kt")), ("seg", ("loss",))])
def test_two_processes_of_batch_k_train_like_one_of_batch_2k(runs, stage, loss_terms):
    """The classification stage (run) and the segmentation stage (seg)."""
    single, ddp = runs["single"] / stage, runs["ddp"] / stage
    for name in ("final.pt", "step-00000002.pt"):
        a, b = _model(single / "checkpoints" / name), _model(ddp / "checkpoints" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key].double(), b[key].double(), rtol=1e-5, atol=1e-6), (name, key)
    # batch-norm running statistics are those of the global batch, and they moved
    bn_key = next(k for k in a if k.endswith("running_var"))
    assert not torch.allclose(a[bn_key], torch.ones_like(a[bn_key]))
    # the optimiser's momentum matches too (the next step would agree as well)
    sa = torch.load(single / "checkpoints" / "step-00000002.pt", weights_only=True)["optimizer"]["state"]
    sb = torch.load(ddp / "checkpoints" / "step-00000002.pt", weights_only=True)["optimizer"]["state"]
    for index in sa:
        assert torch.allclose(sa[index]["momentum_buffer"], sb[index]["momentum_buffer"], rtol=1e-4, atol=1e-6)

    # rank 0 alone logged: one record per iteration, losses averaged over the processes
    logs = [[json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()] for run in (single, ddp)]
    assert [r["iteration"] for r in logs[1]] == [0, 1]
    for ra, rb in zip(*logs, strict=True):
        for key in loss_terms:
            assert rb[key] == pytest.approx(ra[key], rel=1e-5), key
    metrics = json.loads((ddp / "train_metrics.json").read_text())
    assert (metrics["processes"], metrics["global_batch"], metrics["iterations"]) == (2, 4, 2)


@pytest.mark.skipif(not TENSORBOARD, reason="tensorboard is not installed")
@pytest.mark.parametrize("stage", ["run", "seg"])
def test_only_rank_0_writes_tensorboard_events(runs, stage):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = runs["ddp"] / stage / "tensorboard"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1  # one writer: rank 0's
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    records = [json.loads(line) for line in (runs["ddp"] / stage / "train_log.jsonl").read_text().splitlines()]
    logged = events.Scalars("loss/loss")
    assert [e.step for e in logged] == [r["iteration"] for r in records] == [0, 1]
    assert [e.value for e in logged] == pytest.approx([r["loss"] for r in records], rel=1e-6)  # averaged over ranks
    if stage == "run":
        assert any(tag.startswith("attention/") for tag in events.Tags()["images"])


def test_sharded_seg_eval_and_predict_write_the_single_process_results(runs, tiny_root):
    single, ddp = runs["single"], runs["seg_for_ddp"]
    metrics = [json.loads((run / "eval_val.json").read_text()) for run in (single / "seg", ddp)]
    for key in ("checkpoint", "predictions"):  # paths: the two runs sit in different folders
        metrics[0].pop(key), metrics[1].pop(key)
    assert metrics[0] == metrics[1]
    assert metrics[0]["images"] == len(val_images(tiny_root)) == 4
    for one, two in ((single / "seg" / "predictions" / "val", ddp / "predictions" / "val"),
                     (single / "predict", runs["ddp"] / "predict")):
        names = sorted(p.name for p in one.iterdir())
        assert names and sorted(p.name for p in two.iterdir()) == names
        for name in names:
            assert (two / name).read_bytes() == (one / name).read_bytes(), name


@pytest.mark.parametrize(("folder", "suffix"), [("cams", ".npz"), ("pseudo", ".png")])
def test_sharded_outputs_are_the_single_process_files(runs, folder, suffix):
    single, ddp = runs["single"] / folder, runs["ddp"] / folder
    names = sorted(p.name for p in single.glob(f"*{suffix}"))
    assert len(names) == 8
    assert sorted(p.name for p in ddp.glob(f"*{suffix}")) == names
    for name in names:
        assert (ddp / name).read_bytes() == (single / name).read_bytes(), name
    done = [json.loads((d / "l2g-done.json").read_text())["files"] for d in (single, ddp)]
    assert done[0] == done[1]
    assert sorted(done[0]) == names
    assert not list(ddp.glob(".*.partial"))


def test_an_error_on_rank_0_reaches_every_rank(runs):
    ddp = runs["ddp"]
    mine = (ddp / "refused-rank0.txt").read_text()
    theirs = (ddp / "refused-rank1.txt").read_text()
    assert "holds a finished run" in mine
    assert theirs == f"(rank 0) {mine}"
