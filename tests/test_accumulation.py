"""Gradient accumulation (optim.accumulate_steps, the release's --iter_size): K micro-batches of b images per
optimiser step train like one batch of K x b images, where no layer depends on batch statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_cli import tiny_set

from l2g.cli import main
from l2g.config import load_config
from l2g.engine.trainer import LoopSettings, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


class Points(torch.utils.data.Dataset):
    def __init__(self, count: int = 24) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(count, 5, generator=generator)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.1 * torch.randn(count, generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        return {"x": self.x[index], "y": self.y[index], "index": index}


def fit_points(run: Path, batch: int, accumulate: int, epochs: int = 2, resume: bool = False, **extra) -> tuple:
    torch.manual_seed(1)
    model = torch.nn.Linear(5, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    # float32: the equalities below are of float32 sums (bf16 autocast, amp auto on some CPUs, rounds per batch)
    settings = LoopSettings(epochs=epochs, batch_size=batch, accumulate_steps=accumulate, log_every=1,
                            progress=False, **{"amp": "off", **extra})
    seen = []

    def step(model, data):
        seen.append(data["index"].tolist())
        loss = torch.nn.functional.mse_loss(model(data["x"])[:, 0], data["y"])
        return {"loss": loss, "loss_copy": loss.detach()}

    trainer = Trainer(run, {}, model, optimizer, Points(), step, settings, resume=resume,
                      lr_schedule=lambda it, per_epoch, total: 0.05 / (1 + it))  # not of total: resumable
    result = trainer.fit()
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return model.state_dict(), result, log, seen


def test_k_micro_batches_equal_one_batch_of_k_times_the_size(tmp_path):
    big, big_result, big_log, big_seen = fit_points(tmp_path / "big", batch=6, accumulate=1)
    small, small_result, small_log, small_seen = fit_points(tmp_path / "small", batch=2, accumulate=3)
    assert small_result.iterations == big_result.iterations == 8  # 24 images / 6 per step x 2 epochs
    for key in big:
        torch.testing.assert_close(small[key], big[key], rtol=1e-5, atol=1e-6)
    assert [sum(small_seen[i : i + 3], []) for i in range(0, len(small_seen), 3)] == big_seen  # same images
    assert [r["iteration"] for r in small_log] == [r["iteration"] for r in big_log] == list(range(8))
    assert [r["lr"] for r in small_log] == [r["lr"] for r in big_log]  # the schedule counts optimiser steps
    for a, b in zip(small_log, big_log, strict=True):  # logged terms: the mean over the micro-batches
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_resume_restarts_at_a_step_boundary_and_refuses_another_k(tmp_path):
    whole, *_ = fit_points(tmp_path / "whole", batch=2, accumulate=3, epochs=2)
    fit_points(tmp_path / "parts", batch=2, accumulate=3, epochs=1, checkpoint_every=1)
    resumed, result, log, seen = fit_points(tmp_path / "parts", batch=2, accumulate=3, epochs=2, resume=True)
    assert result.start_iteration == 4 and len(seen) == 4 * 3  # the second epoch's 4 steps x 3 micro-batches
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"2 x 3 accumulated micro-batch\(es\).*this run has 1 x 2 x 2"):
        fit_points(tmp_path / "parts", batch=2, accumulate=2, epochs=3, resume=True)


def test_l2g_resnet38_pcm_accumulated_equals_the_large_batch(tiny_root, tmp_path, monkeypatch):
    """The real step: L2G + shape transfer, ResNet-38 (1/16 width, frozen BatchNorm) + PCM. Each image's loss
    terms are means with as many terms per image, so accumulation is exact up to rounding, once ResNet-38's
    own dropout (b6, b7) is off: its random masks depend on how the images are batched (equal in
    expectation only, as two runs with other batches are)."""
    import l2g.models.resnet38 as resnet38

    monkeypatch.setattr(resnet38.nn, "Dropout2d", lambda p: torch.nn.Identity())
    network = ["model.backbone=resnet38", "model.width_mult=0.0625", "model.pcm=true", "model.pcm_dims=[4,8]",
               "model.pcm_out=12", "model.freeze_bn=true", "model.dropout=0.0", "model.pretrained=scratch",
               "method.name=l2g_shape", "optim.epochs=1", "data.flip=false", "amp=off"]  # float32 equalities
    runs = {}
    for name, batch, accumulate in (("big", 4, 1), ("small", 2, 2)):
        run = tmp_path / name
        args = ["train", "synth", "--run", run, *tiny_set(tiny_root), "--quiet"]
        for item in [*network, f"optim.batch_size={batch}", f"optim.accumulate_steps={accumulate}"]:
            args += ["--set", item]
        assert main([str(a) for a in args]) == 0
        runs[name] = run
    big, small = (torch.load(runs[n] / "checkpoints" / "final.pt", weights_only=True)["model"]
                  for n in ("big", "small"))
    for key in big:
        torch.testing.assert_close(small[key], big[key], rtol=1e-4, atol=1e-6, msg=key)
    logs = [[json.loads(line) for line in (runs[n] / "train_log.jsonl").read_text().splitlines()] for n in runs]
    assert [r["iteration"] for r in logs[0]] == [r["iteration"] for r in logs[1]] == [0, 1]
    for a, b in zip(*logs, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    metrics = json.loads((runs["small"] / "train_metrics.json").read_text())
    assert metrics["global_batch"] == 4 and metrics["accumulate_steps"] == 2


def test_accumulate_steps_is_checked():
    with pytest.raises(Exception, match="accumulate_steps must be >= 1"):
        load_config("synth", ["optim.accumulate_steps=0"])
