"""Hand-computed tests for l2g.method.losses."""

import math

import pytest
import torch

from l2g.method.losses import attention_transfer_loss, classification_loss
from l2g.method.targets import attention_targets

LOG2 = 0.6931471805599453


def test_classification_loss_zero_logits_is_log_two():
    # sigmoid(0) = 0.5 -> every term is -log 0.5 = log 2, whatever the label
    loss = classification_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(LOG2, abs=1e-6)


def test_classification_loss_two_by_two_by_hand():
    # terms: y=1,z=0: log 2 = 0.693147;  y=1,z=2: log(1 + e^-2) = 0.126928
    #        y=0,z=-1: -log(1 - sigmoid(-1)) = log(1 + e^-1) = 0.313262;  y=1,z=0: log 2 = 0.693147
    # mean over the 4 terms = 1.826485 / 4 = 0.456621
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.0]])
    labels = torch.tensor([[1, 1], [0, 1]])  # integer labels are accepted
    assert classification_loss(logits, labels).item() == pytest.approx(0.456621, abs=1e-5)


def test_classification_loss_confident_correct_is_small_and_wrong_is_large():
    # y=1, z=10: log(1 + e^-10) = 4.54e-5;  y=0, z=10: log(1 + e^10) = 10.0000454
    assert classification_loss(torch.tensor([[10.0]]), torch.tensor([[1.0]])).item() == pytest.approx(4.54e-5, rel=1e-2)
    assert classification_loss(torch.tensor([[10.0]]), torch.tensor([[0.0]])).item() == pytest.approx(
        10.0000454, abs=1e-4
    )


def test_attention_transfer_loss_uniform_softmax():
    # softmax([0, 0]) = [.5, .5]; target [1, 0] -> ((.5)^2 + (.5)^2) / 2 = 0.25
    crops = torch.zeros(1, 2, 1, 1)
    targets = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    assert attention_transfer_loss(crops, targets).item() == pytest.approx(0.25, abs=1e-7)


def test_attention_transfer_loss_softmax_over_channels_mean_over_elements():
    # pixel 0: logits [log 3, 0] -> probs [.75, .25], target [1, 0] -> squared errors .0625, .0625
    # pixel 1: logits [0, 0]     -> probs [.5, .5],   target [0, 0] -> squared errors .25, .25
    # mean over the 4 elements = (.0625 + .0625 + .25 + .25) / 4 = 0.15625
    crops = torch.tensor([[[[math.log(3.0), 0.0]], [[0.0, 0.0]]]])
    targets = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])
    assert attention_transfer_loss(crops, targets).item() == pytest.approx(0.15625, abs=1e-6)


def test_attention_transfer_loss_is_invariant_to_a_per_pixel_offset():
    # softmax over channels: adding 5 to every channel of a pixel changes nothing (0.25 as above)
    crops = torch.full((1, 2, 1, 1), 5.0)
    targets = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    assert attention_transfer_loss(crops, targets).item() == pytest.approx(0.25, abs=1e-6)


def test_attention_transfer_loss_shape_mismatch_raises():
    with pytest.raises(ValueError):
        attention_transfer_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 3, 1, 1))
    with pytest.raises(ValueError):
        attention_transfer_loss(torch.zeros(2, 2, 1, 1), torch.zeros(1, 2, 1, 1))


def test_attention_transfer_loss_gradient_by_hand():
    # L = mean((p - t)^2), p = softmax(z), z = [0, 0], t = [1, 0]
    # dL/dp = 2 (p - t) / 2 = [-.5, .5];  dp_i/dz_j = p_i (delta_ij - p_j)
    # dL/dz0 = -.5 * .5 * .5 + .5 * .5 * (-.5) = -0.25;  dL/dz1 = +0.25
    crops = torch.zeros(1, 2, 1, 1, requires_grad=True)
    targets = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    attention_transfer_loss(crops, targets).backward()
    torch.testing.assert_close(crops.grad.view(2), torch.tensor([-0.25, 0.25]))


def test_gradient_flows_to_global_crops_only():
    # the local network's maps reach the loss through attention_targets, which detaches them
    local_maps = torch.tensor([[[[4.0, 1.0]], [[2.0, 8.0]], [[1.0, 2.0]]]], requires_grad=True)
    crops = torch.zeros(1, 3, 1, 2, requires_grad=True)
    targets = attention_targets(local_maps, torch.tensor([[1.0, 1.0]]))
    loss = attention_transfer_loss(crops, targets)
    assert loss.requires_grad
    loss.backward()
    assert local_maps.grad is None
    assert crops.grad is not None and crops.grad.abs().sum() > 0
