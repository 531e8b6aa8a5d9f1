"""Tests for l2g.optim: parameter groups (x1/x2/x10/x20, no decay on biases) and the learning-rate schedule."""

import pytest
import torch
from torch import nn

from l2g.config import OptimConfig
from l2g.optim import build_optimizer, learning_rate, parameter_groups, set_learning_rate


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(1, 2, 1)  # "pretrained"
        self.bn = nn.BatchNorm2d(2)  # "pretrained", 1-D parameters count as biases
        self.head = nn.Conv2d(2, 3, 1)  # new
        self.frozen = nn.Linear(2, 2)  # frozen: excluded from every group
        for param in self.frozen.parameters():
            param.requires_grad_(False)


def _ids(params):
    return {id(p) for p in params}


def test_parameter_groups_multipliers_and_weight_decay():
    model = Tiny()
    pretrained = [*model.backbone.parameters(), *model.bn.parameters()]
    groups = parameter_groups(model, pretrained, OptimConfig(weight_decay=5e-4))
    assert [g["lr_mult"] for g in groups] == [1.0, 2.0, 10.0, 20.0]
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0, 5e-4, 0.0]
    assert _ids(groups[0]["params"]) == {id(model.backbone.weight)}
    assert _ids(groups[1]["params"]) == {id(model.backbone.bias), id(model.bn.weight), id(model.bn.bias)}
    assert _ids(groups[2]["params"]) == {id(model.head.weight)}
    assert _ids(groups[3]["params"]) == {id(model.head.bias)}
    frozen = _ids(model.frozen.parameters())
    assert not any(frozen & _ids(g["params"]) for g in groups)


def test_parameter_groups_without_pretrained_keep_new_multipliers():
    # empty groups are dropped, but the remaining ones keep their own multipliers (x10 / x20, not x1 / x2)
    model = nn.Conv2d(1, 2, 1)
    groups = parameter_groups(model, [], OptimConfig(weight_decay=1e-4, lr_mult=(1.0, 2.0, 10.0, 20.0)))
    assert [(g["lr_mult"], g["weight_decay"]) for g in groups] == [(10.0, 1e-4), (20.0, 0.0)]
    assert _ids(groups[0]["params"]) == {id(model.weight)}
    assert _ids(groups[1]["params"]) == {id(model.bias)}


def test_parameter_groups_custom_multipliers():
    model = Tiny()
    groups = parameter_groups(model, list(model.backbone.parameters()), OptimConfig(lr_mult=(0.5, 1.5, 3.0, 7.0)))
    assert [g["lr_mult"] for g in groups] == [0.5, 1.5, 3.0, 7.0]
    # bn is not pretrained here: its 1-D parameters join the new biases
    assert _ids(groups[3]["params"]) == {id(model.head.bias), id(model.bn.weight), id(model.bn.bias)}


def test_build_optimizer_and_set_learning_rate():
    model = Tiny()
    cfg = OptimConfig(lr=0.02, momentum=0.9, nesterov=True)
    optimizer = build_optimizer(model, list(model.backbone.parameters()) + list(model.bn.parameters()), cfg)
    assert isinstance(optimizer, torch.optim.SGD)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.02, 0.04, 0.2, 0.4])
    assert all(g["momentum"] == 0.9 and g["nesterov"] for g in optimizer.param_groups)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4, 0.0, 5e-4, 0.0]
    set_learning_rate(optimizer, 0.1)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1, 0.2, 1.0, 2.0])


def test_poly_schedule_start_middle_end():
    cfg = OptimConfig(lr=0.02, schedule="poly", poly_power=0.9, warmup_iters=0)
    assert learning_rate(cfg, 0, 100, 10) == pytest.approx(0.02)
    # 0.02 * 0.5 ** 0.9 = 0.02 * 0.535887 = 0.01071773
    assert learning_rate(cfg, 50, 100, 10) == pytest.approx(0.01071773, rel=1e-6)
    # 0.02 * 0.01 ** 0.9 = 0.02 * 0.01584893 = 3.169786e-4
    assert learning_rate(cfg, 99, 100, 10) == pytest.approx(3.169786e-4, rel=1e-6)
    assert learning_rate(cfg, 100, 100, 10) == pytest.approx(0.0, abs=1e-12)


def test_poly_schedule_power_one_is_linear():
    cfg = OptimConfig(lr=0.1, schedule="poly", poly_power=1.0)
    assert learning_rate(cfg, 25, 100, 10) == pytest.approx(0.075)


def test_step_schedule_applies_gamma_at_step_epochs():
    cfg = OptimConfig(lr=0.1, schedule="step", step_epochs=(2, 4), step_gamma=0.1)
    # 10 iterations per epoch: epochs 0-1 -> 0.1, epochs 2-3 -> 0.01, epochs >= 4 -> 0.001
    assert learning_rate(cfg, 0, 100, 10) == pytest.approx(0.1)
    assert learning_rate(cfg, 19, 100, 10) == pytest.approx(0.1)
    assert learning_rate(cfg, 20, 100, 10) == pytest.approx(0.01)
    assert learning_rate(cfg, 39, 100, 10) == pytest.approx(0.01)
    assert learning_rate(cfg, 40, 100, 10) == pytest.approx(0.001)
    assert learning_rate(cfg, 99, 100, 10) == pytest.approx(0.001)


def test_step_schedule_gamma_half():
    cfg = OptimConfig(lr=0.8, schedule="step", step_epochs=(1,), step_gamma=0.5)
    assert learning_rate(cfg, 4, 20, 5) == pytest.approx(0.8)
    assert learning_rate(cfg, 5, 20, 5) == pytest.approx(0.4)


def test_linear_warmup_from_start_lr():
    cfg = OptimConfig(lr=0.11, warmup_iters=10, warmup_start_lr=0.01, schedule="poly", poly_power=1.0)
    # warm-up: 0.01 + (0.11 - 0.01) * i / 10
    assert learning_rate(cfg, 0, 100, 10) == pytest.approx(0.01)
    assert learning_rate(cfg, 5, 100, 10) == pytest.approx(0.06)
    assert learning_rate(cfg, 9, 100, 10) == pytest.approx(0.10)
    # after the warm-up the poly schedule at the absolute iteration: 0.11 * (1 - 10 / 100) = 0.099
    assert learning_rate(cfg, 10, 100, 10) == pytest.approx(0.099)


def test_warmup_then_step():
    cfg = OptimConfig(lr=0.1, warmup_iters=4, warmup_start_lr=0.0, schedule="step", step_epochs=(1,), step_gamma=0.1)
    assert learning_rate(cfg, 1, 40, 10) == pytest.approx(0.025)
    assert learning_rate(cfg, 4, 40, 10) == pytest.approx(0.1)
    assert learning_rate(cfg, 10, 40, 10) == pytest.approx(0.01)
