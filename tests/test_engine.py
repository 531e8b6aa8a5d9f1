"""Unit tests of l2g/engine: atomic writes, checkpoints, sampling order, precision, markers, run-folder
rules, and the non-finite guards of the training loop (on a two-parameter model)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from l2g import atomic
from l2g.config import Config, ConfigError, load_config, to_dict
from l2g.engine import checkpoint, markers
from l2g.engine import precision as precision_module
from l2g.engine.guards import NonFiniteError, ensure_free_space, human_bytes
from l2g.engine.loader import EpochSampler, epoch_permutation
from l2g.engine.precision import compile_choice, resolve_precision
from l2g.engine.run_folder import (
    SEG_RESUME_SAFE_KEYS,
    check_resume_config,
    config_changes,
    is_safe,
    prepare_run,
)
from l2g.engine.trainer import LoopSettings, Trainer

ROOT = Path(__file__).resolve().parents[1]

# --- atomic writes -----------------------------------------------------------------------------------


def test_atomic_writes_round_trip(tmp_path):
    atomic.write_json(tmp_path / "a" / "m.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a" / "m.json").read_text()) == {"x": [1, 2]}
    atomic.save_npy(tmp_path / "maps.npy", {3: np.ones((2, 2), np.float32)}, allow_pickle=True)
    assert np.load(tmp_path / "maps.npy", allow_pickle=True).item()[3].sum() == 4  # numpy kept the name
    atomic.save_torch(tmp_path / "w.pt", {"w": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "w.pt", weights_only=True)["w"], torch.arange(3))
    atomic.save_image(tmp_path / "m.png", Image.fromarray(np.eye(3, dtype=np.uint8)))
    assert np.array_equal(np.array(Image.open(tmp_path / "m.png")), np.eye(3, dtype=np.uint8))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "m.json", "m.png", "maps.npy", "w.pt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    atomic.write_text(path, "old")
    with pytest.raises(RuntimeError), atomic.atomic_open(path, "w") as handle:
        handle.write("half of the new")
        raise RuntimeError("disk pulled out")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]


def test_remove_partials_deletes_only_temporaries(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"whole")
    leftover = atomic.partial_name(tmp_path / "b.npy")
    leftover.write_bytes(b"hal")
    assert [p.name for p in tmp_path.glob("*.npy")] == ["a.npy"]  # a glob for outputs never sees it
    assert atomic.remove_partials(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_os_replace_lives_in_the_one_atomic_helper():
    users = [p.relative_to(ROOT).as_posix() for p in (ROOT / "l2g").rglob("*.py")
             if re.search(r"\bos\.replace\(", p.read_text())]
    assert users == ["l2g/atomic.py"]


# --- checkpoints --------------------------------------------------------------------------------------


def test_checkpoints_keep_the_newest_and_fall_back_past_damaged_ones(tmp_path):
    for iteration in (1, 2, 3, 4):
        checkpoint.save_checkpoint(tmp_path, iteration, {"iteration": iteration}, keep=3)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "step-00000002.pt", "step-00000003.pt", "step-00000004.pt"]
    (tmp_path / "step-00000004.pt").write_bytes(b"")  # zero bytes
    path3 = tmp_path / "step-00000003.pt"
    path3.write_bytes(path3.read_bytes()[:40])  # truncated
    warnings: list[str] = []
    path, payload = checkpoint.load_latest(tmp_path, warn=warnings.append)
    assert (path.name, payload["iteration"]) == ("step-00000002.pt", 2)
    assert len(warnings) == 2 and all("unreadable checkpoint" in w for w in warnings)
    assert "step-00000004.pt" in warnings[0] and "step-00000003.pt" in warnings[1]
    assert checkpoint.load_latest(tmp_path / "nothing") is None


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_never_run_pickled_code(tmp_path):
    payload = _Payload()
    payload.marker = tmp_path / "pwned"
    torch.save({"format": checkpoint.FORMAT, "model": payload}, tmp_path / "step-00000001.pt")
    with pytest.raises(checkpoint.CheckpointError, match="unreadable checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "step-00000001.pt")
    assert not payload.marker.exists()


def test_rng_states_survive_a_checkpoint(tmp_path):
    import random

    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    state = checkpoint.capture_rng()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.save_checkpoint(tmp_path, 1, {"rng": state}, keep=1)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    checkpoint.restore_rng(checkpoint.load_checkpoint(tmp_path / "step-00000001.pt")["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


# --- sampling order ------------------------------------------------------------------------------------


class _Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


@pytest.mark.parametrize(("n", "batch", "seed"), [(8, 3, 0), (13, 2, 7)])
def test_epoch_order_is_the_shuffling_dataloader_order(n, batch, seed):
    loader = DataLoader(_Indices(n), batch_size=batch, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    for epoch in range(3):
        seen = [i for b in loader for i in b.tolist()]
        assert seen == epoch_permutation(seed, epoch, n)[: n // batch * batch]


def test_two_ranks_of_batch_k_see_the_global_batches_of_one_rank_of_batch_2k():
    n, k = 11, 2
    for epoch in range(3):
        one = EpochSampler(_Indices(n), 1, 0, seed=5)
        one.set_epoch(epoch)
        ranks = [EpochSampler(_Indices(n), 2, r, seed=5) for r in (0, 1)]
        for sampler in ranks:
            sampler.set_epoch(epoch)
        single = list(one)
        per_rank = [list(s) for s in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) == 5
        for j in range(len(per_rank[0]) // k):
            global_batch = per_rank[0][j * k : (j + 1) * k] + per_rank[1][j * k : (j + 1) * k]
            assert sorted(global_batch) == sorted(single[j * 2 * k : (j + 1) * 2 * k])
        resumed = EpochSampler(_Indices(n), 2, 1, seed=5)
        resumed.set_epoch(epoch, skip=2)
        assert list(resumed) == per_rank[1][2:] and len(resumed) == 3


# --- precision ------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::l2g.engine.precision.SlowPrecisionWarning")
def test_precision_switches_on_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision_module, "cpu_bf16_support", lambda: (False, "no native bf16 (pretend)"))
    auto = resolve_precision("auto", "auto", cpu)
    assert (auto.enabled, auto.channels_last, auto.describe()) == (False, False, "float32")
    assert auto.reason == "amp auto: off, no native bf16 (pretend)"
    on = resolve_precision(True, "off", cpu)
    assert (on.enabled, on.dtype, on.scaler) == (True, torch.bfloat16, None)
    assert resolve_precision("on", True, cpu).channels_last
    config = load_config(None, ["amp=off", "runtime.channels_last=on"])  # YAML reads on/off as booleans
    assert (config.amp, config.runtime.channels_last) == (False, True)
    with pytest.raises(ConfigError, match="amp"):
        load_config(None, ["amp=fast"])


# --- stage markers ----------------------------------------------------------------------------------------


def test_stage_markers(tmp_path):
    inputs, files = {"split": "train", "scales": (1.0,)}, ["a.npy", "b.npy"]
    assert markers.begin(tmp_path, "cams", inputs, files) == "fresh"
    (tmp_path / "a.npy").write_bytes(b"1")
    assert markers.begin(tmp_path, "cams", inputs, files) == "continue"
    assert markers.begin(tmp_path, "cams", {**inputs, "split": "val"}, files) == "fresh"
    with pytest.raises(FileNotFoundError, match="b.npy"):
        markers.mark_done(tmp_path, "cams", inputs, files)
    (tmp_path / "b.npy").write_bytes(b"22")
    markers.mark_done(tmp_path, "cams", inputs, files)
    assert markers.is_done(tmp_path, "cams", inputs, files)
    assert markers.begin(tmp_path, "cams", inputs, files) == "done"
    (tmp_path / "b.npy").write_bytes(b"2")  # a file changed size after the marker
    assert not markers.is_done(tmp_path, "cams", inputs, files)


def test_stage_markers_kept_apart_from_a_shared_output_folder(tmp_path):
    """Several stages writing under one folder (l2g run) keep their markers in marker_dir by name."""
    out, marks = tmp_path / "out", tmp_path / "out" / "stages"
    inputs = {"upstream": "abc", "config": {"seg": {"lr": 0.1, "scales": (1.0,)}}}
    assert markers.status(out, "seg", inputs, marker_dir=marks).reason == "not done yet"
    markers.mark_started(out, "seg", inputs, marker_dir=marks)
    assert (marks / "seg.started.json").is_file() and not (out / markers.STARTED).exists()
    assert markers.started_with(out, "seg", inputs, marker_dir=marks)
    assert not markers.started_with(out, "other", inputs, marker_dir=marks)
    (out / "seg" / "ckpt").mkdir(parents=True)
    (out / "seg" / "ckpt" / "final.pt").write_bytes(b"123")
    (out / "seg" / "ckpt" / ".final.pt.1-ab.partial").write_bytes(b"1")  # a crashed writer's temporary
    (out / "seg" / "log.jsonl").write_bytes(b"{}")
    files = markers.files_under(out, [out / "seg" / "ckpt", out / "seg" / "log.jsonl", out / "seg" / "missing"])
    assert files == ["seg/ckpt/final.pt", "seg/log.jsonl"]
    markers.mark_done(out, "seg", inputs, files, marker_dir=marks, extra={"stamp": "s1"})
    found = markers.status(out, "seg", inputs, marker_dir=marks)  # files=None: whatever the marker lists
    assert found.done and found.record["stamp"] == "s1" and found.record["files"]["seg/ckpt/final.pt"] == 3
    assert markers.done_digest(out, "seg", marks) == markers.file_digest(marks / "seg.done.json")

    changed = markers.status(out, "seg", {"upstream": "abc", "config": {"seg": {"lr": 0.2, "scales": [1.0]}}},
                             marker_dir=marks)
    assert (changed.done, changed.changed) == (False, ["config.seg.lr"])
    (out / "seg" / "log.jsonl").write_bytes(b"{}\n")
    gone = markers.status(out, "seg", inputs, marker_dir=marks)
    assert not gone.done and gone.reason == "outputs missing or incomplete (seg/log.jsonl)"
    markers.mark_started(out, "seg", {**inputs, "upstream": "def"}, marker_dir=marks)
    assert not (marks / "seg.done.json").exists()  # starting afresh invalidates the done marker


# --- run-folder rules -------------------------------------------------------------------------------------


def test_config_changes_and_safe_keys(tmp_path):
    old = to_dict(load_config("synth"))
    new = to_dict(load_config("synth", ["optim.epochs=20", "cams.scales=[1.0]", "runtime.checkpoint_every=5"]))
    assert [c[0] for c in config_changes(old, new)] == ["cams.scales", "optim.epochs", "runtime.checkpoint_every"]
    assert len(check_resume_config(tmp_path, old, new)) == 3
    assert is_safe("data.root") and not is_safe("data.global_size") and not is_safe("amp")
    with pytest.raises(ConfigError, match=r"model.width: 16 -> 8"):
        check_resume_config(tmp_path, old, to_dict(load_config("synth", ["model.width=8"])))


def test_segmentation_runs_resume_with_their_own_safe_keys_and_epochs(tmp_path):
    old = to_dict(load_config("synth", ["method.name=local"]))  # 12 epochs, as the cam below (by_method)
    later = to_dict(load_config("synth", ["seg.epochs=20", "seg.test_flip=false", "optim.lr=0.1", "method.name=cam"]))
    assert len(check_resume_config(tmp_path, old, later, SEG_RESUME_SAFE_KEYS)) == 4
    for unsafe in ("seg.lr=0.1", "seg.crop_size=64", "data.num_classes=3", "seed=1", "amp=on"):
        with pytest.raises(ConfigError, match=unsafe.split("=")[0]):
            check_resume_config(tmp_path, old, to_dict(load_config("synth", [unsafe])), SEG_RESUME_SAFE_KEYS)

    run, final = tmp_path / "run", tmp_path / "run" / "final.pt"

    def prepare(config, **flags):
        return prepare_run(run, config, finished_marker=final, load_run_config=lambda path: old,
                           save_run_config=lambda path: path.write_text("x"), safe_keys=SEG_RESUME_SAFE_KEYS,
                           epochs_key="seg.epochs", **{"resume": False, "overwrite": False, **flags})

    assert prepare(old) == "fresh"
    final.write_bytes(b"done")
    assert prepare(old, resume=True) == "finished"
    assert prepare(later, resume=True) == "resume" and not final.exists()  # more seg.epochs: continue


def test_disk_guard_message(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 0, 2 * 10**9))
    ensure_free_space(tmp_path, 10**9, "maps")
    with pytest.raises(OSError, match=r"about 3.0 GB needed \(\+10% margin\), 2.0 GB free"):
        ensure_free_space(tmp_path / "new" / "folder", 3 * 10**9, "maps")
    assert human_bytes(999) == "999 B" and human_bytes(1.5e6) == "1.5 MB"


# --- the training loop's guards ----------------------------------------------------------------------------


class _Pairs(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        return {"x": torch.tensor([float(index + 1)]), "index": index}


def _trainer(tmp_path: Path, step, compile: str = "auto", **loop: object) -> Trainer:
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    settings = LoopSettings(**{"epochs": 2, "batch_size": 2, "checkpoint_every": 1, "log_every": 1,
                               "progress": False, "amp": "off", "compile": compile, **loop})
    return Trainer(tmp_path, {}, model, optimizer, _Pairs(), step, settings,
                   batch_ids=lambda batch: [f"img{i}" for i in batch["index"].tolist()])


def test_trainer_runs_logs_and_checkpoints(tmp_path):
    result = _trainer(tmp_path, lambda m, b: {"loss": m(b["x"]).pow(2).mean()}).fit()
    assert (result.iterations, result.start_iteration, result.precision) == (4, 0, "float32")
    assert [json.loads(line)["iteration"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()] == [
        0, 1, 2, 3]
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "checkpoints")] == [
        "step-00000003.pt", "step-00000004.pt"]


@pytest.mark.filterwarnings("ignore::l2g.engine.precision.SlowPrecisionWarning")
@pytest.mark.parametrize(("warmup_epochs", "float32_steps"), [(0.0, 0), (0.5, 1), (1.0, 2), (2.0, 4), (3.0, 4)])
def test_amp_warmup_trains_the_first_epochs_in_float32_then_autocasts(tmp_path, warmup_epochs, float32_steps):
    # 4 images in batches of 2: 2 iterations per epoch, 4 in all; a warm-up longer than the run never autocasts
    seen = []

    def step(model, batch):
        seen.append(torch.is_autocast_enabled("cpu"))
        return {"loss": model(batch["x"]).float().pow(2).mean()}

    trainer = _trainer(tmp_path, step, compile="off", amp="on", amp_warmup_epochs=warmup_epochs)
    result = trainer.fit()
    assert seen == [False] * float32_steps + [True] * (4 - float32_steps)
    if float32_steps == 4:  # a warm-up as long as the run: the log says float32, and why
        assert result.precision == "float32" and "covers all 4 iterations" in result.precision_reason
        return
    assert result.precision.startswith("bfloat16 autocast")
    assert (f"after {float32_steps} float32 iterations" in result.precision) == (float32_steps > 0)


def test_amp_warmup_resumes_where_it_stopped(tmp_path):
    # a run resumed after the warm-up autocasts from its first step; one resumed inside it finishes it first
    seen = []

    def step(model, batch):
        seen.append(torch.is_autocast_enabled("cpu"))
        return {"loss": model(batch["x"]).float().pow(2).mean()}

    _trainer(tmp_path, step, compile="off", amp="on", amp_warmup_epochs=1.0, epochs=1).fit()
    assert seen == [False, False]
    seen.clear()
    resumed = _trainer(tmp_path, step, compile="off", amp="on", amp_warmup_epochs=1.0, epochs=2)
    resumed.resume = True
    resumed.fit()
    assert seen == [True, True]
    with pytest.raises(ConfigError, match="amp_warmup_epochs = -1"):
        load_config(None, ["amp_warmup_epochs=-1"])


def test_a_compiled_step_trains_the_same_weights_as_the_eager_one(tmp_path):
    def step(model, batch):
        return {"loss": (model(batch["x"]) - 2 * batch["x"]).pow(2).mean()}

    eager = _trainer(tmp_path / "eager", step, compile="off")
    eager.fit()
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = _trainer(tmp_path / "compiled", step, compile="on")
    compiled.fit()
    assert counters["stats"]["unique_graphs"] >= 1  # the step did go through torch.compile
    assert not torch.equal(eager.model.weight, nn.Linear(1, 1).weight)  # it trained
    for ours, theirs in zip(compiled.model.parameters(), eager.model.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_a_step_that_cannot_compile_names_the_off_switch(tmp_path):
    def step(model, batch):
        raise torch._dynamo.exc.Unsupported("a call torch.compile cannot trace")

    with pytest.raises(ValueError, match="runtime.compile=off"):
        _trainer(tmp_path, step, compile="on").fit()


@pytest.mark.parametrize(("value", "device", "expected"), [
    ("auto", "cuda", True), ("auto", "cpu", False), ("on", "cpu", True), ("off", "cuda", False),
    (True, "cpu", True), (False, "cuda", False)])
def test_compile_auto_means_cuda_only(value, device, expected):
    assert compile_choice(value, torch.device(device)) is expected


def test_the_loop_and_the_config_default_to_the_same_precision():
    assert LoopSettings(epochs=1, batch_size=1).amp == Config().amp == "cuda"


def test_trainer_hands_each_logged_record_to_on_log(tmp_path):
    seen = []
    trainer = _trainer(tmp_path, lambda m, b: {"loss": m(b["x"]).pow(2).mean(), "extra": b["x"].sum()})
    trainer.on_log = seen.append
    trainer.fit()
    logged = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert seen == logged
    # Each epoch deals the four samples (x = 1..4) out in two shuffled batches: its two records sum to 10.
    assert [seen[0]["extra"] + seen[1]["extra"], seen[2]["extra"] + seen[3]["extra"]] == [10.0, 10.0]


def test_non_finite_gradient_names_the_parameter_and_keeps_the_weights(tmp_path):
    calls = []

    def step(model, batch):
        calls.append(batch["index"].tolist())
        loss = model(batch["x"]).pow(2).mean()
        if len(calls) == 3:  # the first batch of the second epoch
            loss = loss + (model.bias * 0).abs().sqrt().sum()  # value 0, gradient NaN
        return {"loss": loss, "loss_main": loss.detach()}

    trainer = _trainer(tmp_path, step)
    with pytest.raises(NonFiniteError) as caught:
        trainer.fit()
    message = str(caught.value)
    assert "non-finite gradient at iteration 2 (epoch 2, step 1 of 2) in bias" in message
    assert f"images {[f'img{i}' for i in calls[-1]]}" in message
    assert f"the last good checkpoint is {tmp_path / 'checkpoints' / 'step-00000002.pt'}" in message
    saved = checkpoint.load_checkpoint(tmp_path / "checkpoints" / "step-00000002.pt")["model"]
    assert all(torch.equal(saved[k], v) for k, v in trainer.model.state_dict().items())  # no step was taken


@pytest.mark.parametrize(("value", "device", "expected"), [
    ("off", "cuda", False), ("on", "cpu", True), ("auto", "cpu", False), ("auto", "cuda", True),
    (False, "cuda", False), (True, "cpu", True),
])
def test_pin_memory_switch_means_what_it_says(value, device, expected):
    """runtime.pin_memory "off" is off (it used to be bool("off") = True), "on" is on, auto follows CUDA."""
    from l2g.engine.loader import EpochSampler, build_loader

    dataset = list(range(4))
    loader, _ = build_loader(dataset, 2, EpochSampler(dataset), 0, torch.device(device), pin_memory=value,
                             persistent_workers="off")
    assert loader.pin_memory is expected
