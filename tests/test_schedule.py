"""Training length in optimiser steps (optim.steps, optim.min_steps) and the lines that say how long a stage runs."""

from __future__ import annotations

import json

import pytest
import torch
from test_accumulation import Points
from test_cli import run_cli, tiny_set

from l2g.config import ConfigError, load_config
from l2g.engine.schedule import StageClock, training_length
from l2g.engine.trainer import LoopSettings, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_length_in_epochs_steps_or_at_least_min_steps():
    assert training_length(10, 3) == (30, 10, "10 epochs")
    assert training_length(10, 3, steps=7) == (7, 3, "optim.steps 7")  # the third epoch stops after 1 step
    assert training_length(10, 3, min_steps=250) == (250, 84, "optim.min_steps 250: 10 epochs would be 30")
    assert training_length(10, 300, min_steps=250) == (3000, 10, "10 epochs")  # a large set: epochs as set
    assert training_length(10, 3, steps=5, min_steps=250)[0] == 5  # an explicit count wins


def test_clock_tells_the_expected_time_once_after_the_timed_steps(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("l2g.engine.schedule.time.time", lambda: now[0])
    clock = StageClock(total=12, start=2)
    lines = []
    for done, at in ((3, 150.0), (4, 152.0), (5, 154.0), (6, 156.0)):  # first step 50 s (warm-up), then 2 s
        now[0] = at
        lines.append(clock.tick(done, "train"))
    # 54 s so far + 2 s x 7 steps left = 68 s: about 1 min
    assert lines == [None, None, "train: 2.0 s per step: about 1 min for these 10 steps on this machine", None]


def fit(run, epochs=1, resume=False, progress=False, **length):
    torch.manual_seed(1)
    model = torch.nn.Linear(5, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    settings = LoopSettings(epochs=epochs, batch_size=6, log_every=1, progress=progress, amp="off", **length)
    seen = []

    def step(model, data):
        seen.append(data["index"].tolist())
        return {"loss": torch.nn.functional.mse_loss(model(data["x"])[:, 0], data["y"])}

    result = Trainer(run, {}, model, optimizer, Points(), step, settings, resume=resume,
                     lr_schedule=lambda it, per_epoch, total: 0.05 / (1 + it)).fit()
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return model.state_dict(), result, log, seen


def test_steps_end_part_way_through_an_epoch_and_resume_there(tmp_path):
    whole, result, log, seen = fit(tmp_path / "whole", steps=6)  # 24 images / 6 = 4 steps per epoch
    assert result.iterations == 6 and len(seen) == 6
    assert [r["iteration"] for r in log] == list(range(6)) and log[-1]["epoch"] == 1
    assert result.last_checkpoint.name == "step-00000006.pt"  # the end of the run is saved, mid-epoch
    fit(tmp_path / "parts", steps=5)
    resumed, result, _, seen = fit(tmp_path / "parts", steps=6, resume=True)
    assert result.start_iteration == 5 and len(seen) == 1
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=0, atol=0)


def test_min_steps_raises_a_small_set_and_the_lines_say_so(tmp_path, capsys):
    _, result, _, seen = fit(tmp_path / "small", epochs=1, min_steps=10, progress=True)
    assert result.iterations == 10 and len(seen) == 10
    err = capsys.readouterr().err
    assert "train: 10 optimiser steps of 6 images, 2.5 epochs of 4 steps (optim.min_steps 10: 1 epochs would be 4)" \
        in err
    assert "s per step: about" in err and "for these 10 steps on this machine" in err


def test_steps_through_the_command_line_and_a_finished_run_grows(tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "synth", "--run", run, *tiny_set(tiny_root), "--set", "optim.steps=3"]
    code, _, err = run_cli(capsys, *args)  # 8 images / 4 = 2 steps per epoch: 1.5 epochs
    assert code == 0, err
    assert "3 optimiser steps of 4 images, 1.5 epochs of 2 steps (optim.steps 3)" in err
    assert json.loads((run / "train_metrics.json").read_text())["iterations"] == 3
    code, _, err = run_cli(capsys, *args[:-1], "optim.steps=4", "--resume")
    assert code == 0, err
    assert json.loads((run / "train_metrics.json").read_text())["iterations"] == 4
    assert [json.loads(line)["iteration"] for line in (run / "train_log.jsonl").read_text().splitlines()][-1] == 3


def test_lengths_are_checked():
    for bad in ("optim.steps=-1", "optim.min_steps=-5"):
        with pytest.raises(ConfigError, match="optim.steps and optim.min_steps must be >= 0"):
            load_config("synth", [bad])
