"""An out-of-memory error (torch.OutOfMemoryError on CUDA, PyTorch's CPU allocator failing, a MemoryError) ends
a command with the settings that lower the memory of the stage that ran out, exit status 2 and no traceback."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from l2g import api
from l2g.cli.out_of_memory import REMEDIES, config_has, is_out_of_memory, stage_of
from l2g.config import Config
from tests.test_cli import run_cli

CUDA_OOM = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which "
            "1.20 GiB is free.\nIf reserved but unallocated memory is large try setting "
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True")
CPU_OOM = ("[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: can't allocate memory: you tried to "
           "allocate 92274688000 bytes. Error code 12 (Cannot allocate memory)")
ERRORS = {"cuda": lambda: torch.OutOfMemoryError(CUDA_OOM), "cpu": lambda: RuntimeError(CPU_OOM),
          "numpy": lambda: MemoryError("Unable to allocate 86.0 GiB for an array with shape (1, 2) and data type x")}


def raising(error: BaseException):
    def fail(*args, **kwargs):
        raise error
    return fail


def in_stage_module(module: str, error: BaseException):
    """A function that raises ``error`` from a frame of ``module`` (as the stage's own code would)."""
    namespace = {"__name__": module, "error": error}
    exec("def fail(*args, **kwargs):\n    raise error", namespace)
    return namespace["fail"]


def assert_reported(code: int, err: str, command: str, first: str, *settings: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and err.startswith(f"l2g {command}: error: out of memory")
    assert first.splitlines()[0] in err and "PYTORCH_CUDA_ALLOC_CONF" not in err  # the first line of torch's
    for setting in settings:
        assert setting in err, (setting, err)


@pytest.mark.parametrize("kind", sorted(ERRORS))
def test_train_out_of_memory_names_micro_batch_checkpointing_and_the_batch(kind, tmp_path, capsys, monkeypatch):
    error = ERRORS[kind]()
    monkeypatch.setattr(api, "train", raising(error))
    code, _, err = run_cli(capsys, "train", "synth", "--out", tmp_path / "run", "--quiet")
    assert_reported(code, err, "train", str(error), "in the classification training stage", "runtime.micro_batch=1",
                    "runtime.activation_checkpointing=true", "optim.batch_size", "data.resize_short",
                    "rerun with --resume")
    assert "seg.batch_size" not in err and "cams.max_side" not in err


@pytest.mark.parametrize("kind", ["cuda", "cpu"])
def test_cams_and_seg_train_name_their_own_settings(kind, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(api, "infer_cams", raising(ERRORS[kind]()))
    code, _, err = run_cli(capsys, "cams", "--run", tmp_path / "run", "--quiet")
    assert_reported(code, err, "cams", str(ERRORS[kind]()), "in the attention maps stage", "cams.max_side=512",
                    "cams.scales=[0.5,1.0]", "cams.flip=false")
    assert "runtime.micro_batch" not in err

    monkeypatch.setattr(api, "train_segmentation", raising(ERRORS[kind]()))
    code, _, err = run_cli(capsys, "seg", "train", "synth", "--out", tmp_path / "seg", "--pseudo", tmp_path,
                           "--quiet")
    assert_reported(code, err, "seg", str(ERRORS[kind]()), "in the segmentation training stage", "seg.batch_size",
                    "seg.crop_size", "rerun with --resume")
    assert "runtime.micro_batch" not in err


def test_run_names_the_stage_that_ran_out(tmp_path, capsys, monkeypatch):
    """The innermost stage module in the traceback: l2g run's segmentation stage, not every stage's settings."""
    import l2g.stages.pipeline as pipeline

    error = torch.OutOfMemoryError(CUDA_OOM)
    monkeypatch.setattr(pipeline, "run_pipeline", in_stage_module("l2g.stages.seg_train", error))
    code, _, err = run_cli(capsys, "run", "synth", "--out", tmp_path / "p", "--quiet")
    assert_reported(code, err, "run", CUDA_OOM, "in the segmentation training stage", "seg.crop_size",
                    "rerun the same command with them: the complete stages are skipped")
    assert "runtime.micro_batch" not in err and "cams.max_side" not in err

    # no stage in the traceback: every stage's settings, under its name
    monkeypatch.setattr(pipeline, "run_pipeline", raising(RuntimeError(CPU_OOM)))
    code, _, err = run_cli(capsys, "run", "synth", "--out", tmp_path / "p", "--quiet")
    assert_reported(code, err, "run", CPU_OOM, "  classification training:\n    runtime.micro_batch=1",
                    "  attention maps:\n    cams.max_side=512", "  segmentation training:\n    seg.batch_size")


def test_other_runtime_errors_still_raise(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(api, "train", raising(RuntimeError("shape mismatch in the head")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_cli(capsys, "train", "synth", "--out", tmp_path / "run", "--quiet")
    assert not is_out_of_memory(ValueError("out of memory"))  # a ValueError is an l2g message of its own
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))  # the older CUDA spelling
    assert stage_of(None, "predict") == "segmentation inference" and stage_of(None, "synth") is None


def test_every_setting_named_is_a_config_key():
    """The advice names keys that exist (a renamed key must be renamed here too; one that is missing is left
    out of the message rather than named)."""
    def has_key(section: object, key: str) -> bool:
        head, _, rest = key.partition(".")
        names = {field.name for field in dataclasses.fields(section)}
        if head not in names:
            return False
        return not rest or has_key(getattr(section, head), rest)

    keys = [key for remedies in REMEDIES.values() for key, _, _ in remedies]
    assert keys and all(has_key(Config(), key) for key in keys), [k for k in keys if not has_key(Config(), k)]
    assert all(config_has(key) for key in keys)
    assert not config_has("runtime.no_such_key") and not config_has("seg.crf.nope") and config_has("seg.crf.enabled")
