"""Attention-transfer fit: the meter on hand-computed cases, the dataset's region maps, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from l2g.config import load_config
from l2g.data.classification import ClassificationDataset
from l2g.data.layout import Sample
from l2g.evaluation.transfer_fit import TransferFit
from l2g.method.losses import attention_transfer_loss
from l2g.method.methods import build_method
from tests.test_cli import _corrupt_image, copy_dataset, run_cli, train_cli
from tests.test_methods import tiny_batch, tiny_config


def test_meter_hand_computed_with_parts():
    # One view, C = 2 (channels: class 0, class 1, background), a 2 x 2 map, class 0 labelled.
    targets = torch.tensor([[[[0.9, 0.0], [0.6, 0.0]],   # class 0
                             [[0.0, 0.0], [0.0, 0.0]],   # class 1 (absent: zeroed)
                             [[0.0, 0.7], [0.0, 0.0]]]])  # background; pixel (1, 1) is all zero
    probabilities = torch.tensor([[[[0.5, 0.1], [0.2, 0.3]],
                                   [[0.1, 0.1], [0.7, 0.1]],
                                   [[0.4, 0.8], [0.1, 0.6]]]])
    labels = torch.tensor([[1.0, 0.0]])
    masks = torch.tensor([[[1, 0], [1, 255]]])  # class 0 at (0,0), (1,0); background (0,1); (1,1) ignored
    parts = torch.tensor([[[True, False], [False, False]]])
    meter = TransferFit()
    meter.update(targets, probabilities, labels, masks, parts)
    result = meter.results()
    assert result["part"] == pytest.approx({"target": 0.9, "global": 0.5, "taught": 1.0, "learnt": 1.0, "pixels": 1})
    # Body pixel (1, 0): class 0 survives in the target (0.6), but class 1 wins the global argmax (0.7).
    assert result["body"] == pytest.approx({"target": 0.6, "global": 0.2, "taught": 1.0, "learnt": 0.0, "pixels": 1})
    assert result["background"] == pytest.approx(
        {"target": 0.0, "global": 0.1, "taught": 0.0, "learnt": 0.0, "pixels": 1})


def test_meter_without_parts_and_all_zero_target_pixels_teach_nothing():
    targets = torch.zeros(1, 2, 1, 2)  # C = 1; nothing survives anywhere
    probabilities = torch.tensor([[[[0.6, 0.2]], [[0.4, 0.8]]]])
    meter = TransferFit()
    meter.update(targets, probabilities, torch.tensor([[1.0]]), torch.tensor([[[1, 1]]]))
    result = meter.results()
    assert result["part"] is None and result["background"] is None
    # argmax of an all-zero target is channel 0 = the class: it must not count as taught.
    assert result["body"] == pytest.approx({"target": 0.0, "global": 0.4, "taught": 0.0, "learnt": 0.5, "pixels": 2})


def test_meter_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        TransferFit().update(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 3), torch.ones(1, 2), torch.zeros(1, 2, 2))


def test_transfer_is_what_the_loss_compares():
    method = build_method(tiny_config("l2g_shape"))
    method.eval()
    batch = tiny_batch(with_saliency=True)
    step = method.transfer(batch)
    assert step.targets.shape == step.crops.shape == (8, 4, 3, 3)
    assert not step.targets.requires_grad and step.crops.requires_grad
    torch.testing.assert_close(method.losses(batch)["loss_kt"], attention_transfer_loss(step.crops, step.targets))


def test_region_maps_follow_the_view_crop_and_flip(tmp_path):
    # An image whose red channel encodes x; the region map is that same code. After the dataset's
    # crop and flip, the region map must still match the view's pixels.
    from PIL import Image

    height, width = 30, 50
    xs = np.tile(np.arange(width, dtype=np.uint8) * 5, (height, 1))
    image = np.stack([xs, np.zeros_like(xs), np.zeros_like(xs)], axis=-1)
    path = tmp_path / "a.png"
    Image.fromarray(image).save(path)
    config = load_config(None, ["data.num_classes=2", "data.resize_short=30", "data.global_size=24",
                                "data.jitter=[0,0,0,0]", "views.patch_size=16"])
    sample = Sample(image_id="a", image_path=path, labels=(0,), mask_path=None, saliency_path=None)
    dataset = ClassificationDataset([sample], config, use_saliency=False, region_maps=lambda s: xs[..., None])
    flips = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        item = dataset[0]
        red = item["image"][0] * config.data.std[0] + config.data.mean[0]
        codes = torch.round(red * 255).to(torch.uint8)
        assert item["regions"].shape == (1, 24, 24)
        torch.testing.assert_close(item["regions"][0], codes, atol=0, rtol=0)
        flips.add(bool(codes[0, 0] > codes[0, -1]))
    assert flips == {True, False}  # both orientations were exercised


def test_command_end_to_end(tiny_root, tmp_path, capsys, one_thread):
    run = tmp_path / "l2g"
    code, _, err = train_cli(capsys, tiny_root, run, "l2g_shape")
    assert code == 0, err
    code, out, err = run_cli(capsys, "transfer-fit", "--run", run, "--quiet")
    assert code == 0, err
    assert "| part |" in out and "| background |" in out
    result = json.loads((run / "transfer_fit.json").read_text())
    assert result["method"] == "l2g_shape" and result["images"] == 8
    for region in ("part", "body", "background"):
        row = result["regions"][region]
        assert row["pixels"] > 0
        for key in ("target", "global", "taught", "learnt"):
            assert 0.0 <= row[key] <= 1.0


def test_command_refuses_runs_without_transfer(tiny_root, tmp_path, capsys, one_thread):
    run = tmp_path / "cam"
    assert train_cli(capsys, tiny_root, run, "cam")[0] == 0
    code, _, err = run_cli(capsys, "transfer-fit", "--run", run, "--quiet")
    assert code == 2
    assert "has no attention transfer" in err and str(run) in err


def test_command_names_a_corrupt_image_it_samples(tiny_root, tmp_path, capsys, one_thread):
    # The split is listed with an existence check only; an image that cannot be decoded is named when read.
    root = copy_dataset(tiny_root, tmp_path)
    run = tmp_path / "l2g"
    assert train_cli(capsys, root, run, "l2g")[0] == 0
    broken = _corrupt_image(root)
    code, _, err = run_cli(capsys, "transfer-fit", "--run", run, "--quiet")
    assert code == 2
    assert str(broken) in err
