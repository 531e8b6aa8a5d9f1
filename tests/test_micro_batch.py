"""Micro-batches (runtime.micro_batch) and activation checkpointing: a step's images in several passes gives the
one-pass step's weights with frozen BatchNorm, and "auto" picks the pass size from the memory left."""

from __future__ import annotations

import json

import pytest
import torch
from test_accumulation import Points
from test_cli import TINY_SETTINGS, run_cli, tiny_set

from l2g.config import ConfigError, load_config
from l2g.engine import micro_batch
from l2g.engine.micro_batch import GIB, choose_micro_batch, largest_fitting, measure_per_image, split_batch
from l2g.engine.trainer import LoopSettings, Trainer
from l2g.method.methods import build_method
from l2g.stages.common import seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")


def fit_points(run, micro, batch=6):
    torch.manual_seed(1)
    model = torch.nn.Linear(5, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    settings = LoopSettings(epochs=2, batch_size=batch, micro_batch=micro, log_every=1, progress=False, amp="off")
    sizes = []

    def step(model, data):
        sizes.append(len(data["index"]))
        loss = torch.nn.functional.mse_loss(model(data["x"])[:, 0], data["y"])
        return {"loss": loss}

    Trainer(run, {}, model, optimizer, Points(), step, settings).fit()
    log = [json.loads(line)["loss"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    return model.state_dict(), log, sizes


def test_passes_of_two_images_step_like_the_whole_batch(tmp_path):
    whole, whole_log, whole_sizes = fit_points(tmp_path / "whole", None)
    parts, parts_log, part_sizes = fit_points(tmp_path / "parts", 2)
    assert whole_sizes == [6] * 8 and part_sizes == [2] * 24  # 3 passes per optimiser step
    for key in whole:
        torch.testing.assert_close(parts[key], whole[key], rtol=1e-5, atol=1e-6)
    assert parts_log == pytest.approx(whole_log, rel=1e-5)  # logged: the batch's loss, not the last pass's


def test_split_batch_keeps_every_entry_and_weights_each_part_by_its_images():
    batch = {"image": torch.arange(10.0).reshape(5, 2), "index": torch.arange(5), "ids": list("abcde"), "k": 3}
    parts = split_batch(batch, 2)
    assert [share for _, share in parts] == [0.4, 0.4, 0.2]
    assert [part["ids"] for part, _ in parts] == [["a", "b"], ["c", "d"], ["e"]]
    assert torch.equal(torch.cat([part["image"] for part, _ in parts]), batch["image"])
    assert all(part["k"] == 3 for part, _ in parts)
    assert split_batch(batch, 5) == [(batch, 1.0)]


def test_largest_fitting_divides_the_batch():
    assert largest_fitting(8, GIB, 5.1 * GIB) == 4  # 4 x 1.25 = 5 GiB fits, 8 would not; 5, 6, 7 do not divide 8
    assert largest_fitting(8, GIB, 2.6 * GIB) == 2
    assert largest_fitting(8, GIB, 0.5 * GIB) == 1  # never 0
    assert largest_fitting(6, 1, 1e9) == 6


class Frozen(torch.nn.Module):
    def __init__(self, train_bn: bool) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(3)
        self.train_bn = train_bn

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.train_bn:
            self.bn.eval()
        return self


def choose(monkeypatch, setting, per_image, available, device="cpu", train_bn=False, batch=8):
    monkeypatch.setattr(micro_batch, "available_memory", lambda device: (available, "RAM available"))
    measured = []

    def measure():
        measured.append(1)
        return per_image

    model = Frozen(train_bn).train()
    size, why = choose_micro_batch(setting, batch, torch.device(device), model, measure)
    return size, why, bool(measured)


def test_auto_on_a_cpu_caps_the_activations(monkeypatch):
    # pretrained_l2g's step kept 2.54 GiB per image (docs/usage.md): one image per pass even with 64 GiB free
    assert choose(monkeypatch, "auto", 2.54 * GIB, 64 * GIB)[0] == 1
    size, why, measured = choose(monkeypatch, "auto", 0.3 * GIB, 16 * GIB)
    assert size == 8 and measured and "0.30 GiB of activations per image, 16.0 GiB RAM available" in why
    assert choose(monkeypatch, "auto", 0.3 * GIB, 1.0 * GIB)[0] == 1  # 0.5 GiB budget: 1 x 0.375 fits
    size, why, _ = choose(monkeypatch, "auto", 3 * GIB, 2 * GIB)
    assert size == 1 and "even one image may not fit" in why and "activation_checkpointing" in why


def test_auto_on_cuda_uses_most_of_the_free_memory(monkeypatch):
    assert choose(monkeypatch, "auto", 2.54 * GIB, 70 * GIB, device="cuda")[0] == 8  # 8 x 3.2 < 49 GiB
    assert choose(monkeypatch, "auto", 2.54 * GIB, 10 * GIB, device="cuda")[0] == 2  # 7 GiB: 2 x 3.2 fits


def test_auto_keeps_the_batch_when_batchnorm_trains_and_a_number_is_taken_as_set(monkeypatch):
    size, why, measured = choose(monkeypatch, "auto", 100 * GIB, GIB, train_bn=True)
    assert size == 8 and "BatchNorm layers train" in why and not measured
    assert choose(monkeypatch, 2, 100 * GIB, GIB)[:3] == (2, "runtime.micro_batch 2", False)
    assert choose(monkeypatch, None, 100 * GIB, GIB)[:2] == (8, "")  # stages without micro-batches
    with pytest.raises(ValueError, match="must divide the batch size 8"):
        choose(monkeypatch, 3, GIB, GIB)


def test_measure_counts_activations_per_image_and_keeps_the_random_state():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                torch.nn.Conv2d(8, 2, 1))

    def step(batch):
        return model(batch["image"]).square().mean()

    torch.manual_seed(0)
    images = torch.randn(2, 3, 16, 16)
    state = torch.get_rng_state()
    one = measure_per_image(step, model, {"image": images[:1].clone()}, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), state)  # a probe draws no number the run would see
    two = measure_per_image(step, model, {"image": images}, torch.device("cpu"))
    # conv1's input, the ReLU output, the dropout mask and output, conv2's output: 4 + 8 x 4 float maps of 16 x 16
    assert one >= 16 * 16 * 4 * (3 + 8 + 8)
    assert two == pytest.approx(2 * one, rel=0.01)  # the weights are not counted


def test_micro_batch_is_checked_against_the_batch_size():
    assert load_config("synth", ["runtime.micro_batch=2"]).runtime.micro_batch == 2
    for bad in ("3", "0", "many"):
        with pytest.raises(ConfigError, match="runtime.micro_batch must be auto or a number of images dividing"):
            load_config("synth", ["optim.batch_size=4", f"runtime.micro_batch={bad}"])


PRETRAINED = ["model.backbone=efficientnet_lite0", "model.freeze_bn=true", "method.name=l2g",
              "method.transfer_loss=kl", "data.global_size=64", "data.resize_short=72",
              "views.patch_size=32", "data.flip=false", "amp=off", "optim.lr=0.01"]


def test_efficientnet_l2g_one_image_per_pass_and_checkpointed_gives_the_one_pass_weights(tiny_root, tmp_path,
                                                                                           capsys):
    """The real step (L2G, EfficientNet-Lite0 from its ImageNet weights, BatchNorm frozen): one image per pass,
    and the backbone's stages recomputed in backward, train to the weights of the whole batch in one pass."""
    weights, errs = {}, {}
    for name, extra in (("whole", ["runtime.micro_batch=4"]), ("one", ["runtime.micro_batch=1"]),
                        ("recomputed", ["runtime.micro_batch=2", "runtime.activation_checkpointing=true"])):
        args = ["train", "synth", "--run", tmp_path / name, *tiny_set(tiny_root)]
        for item in [*PRETRAINED, *extra]:
            args += ["--set", item]
        code, _, errs[name] = run_cli(capsys, *args)
        assert code == 0, errs[name]
        weights[name] = torch.load(tmp_path / name / "checkpoints" / "final.pt", weights_only=True)["model"]
    assert "1 of 4 images per forward/backward pass (runtime.micro_batch 1)" in errs["one"]
    for name in ("one", "recomputed"):
        for key, value in weights["whole"].items():
            torch.testing.assert_close(weights[name][key], value, rtol=1e-4, atol=1e-5, msg=f"{name}: {key}")
    config = load_config("synth", [*TINY_SETTINGS, *PRETRAINED, f"data.root={tiny_root}"])
    seed_everything(config.seed)
    start = build_method(config).inference_net().state_dict()
    moved = [key for key, value in start.items() if value.is_floating_point()
             and (weights["whole"][key] - value).abs().max() > 1e-3]
    assert len(moved) > 20  # the step trained: the equality above is not of untouched weights


def test_auto_is_logged_with_its_reason(tiny_root, tmp_path, capsys):
    args = ["train", "synth", "--run", tmp_path / "auto", *tiny_set(tiny_root)]
    for item in PRETRAINED:
        args += ["--set", item]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "images per forward/backward pass (auto: " in err and "GiB of activations per image" in err


def test_auto_measures_on_the_first_batch_without_reading_the_dataset_again(tmp_path):
    class Counted(Points):
        reads: list[int] = []

        def __getitem__(self, index: int) -> dict:
            self.reads.append(index)
            return super().__getitem__(index)

    model = torch.nn.Linear(5, 1)
    settings = LoopSettings(epochs=1, batch_size=6, micro_batch="auto", progress=False, amp="off")
    steps = []

    def step(model, data):
        steps.append(len(data["index"]))
        return {"loss": torch.nn.functional.mse_loss(model(data["x"])[:, 0], data["y"])}

    dataset = Counted()
    Trainer(tmp_path / "run", {}, model, torch.optim.SGD(model.parameters(), lr=0.01), dataset, step, settings).fit()
    assert sorted(dataset.reads) == list(range(24))  # each image once: the probe used the first batch's image
    assert steps[0] == 1 and steps[1:] == [6] * 4  # one probe pass of one image, then the 4 whole batches
