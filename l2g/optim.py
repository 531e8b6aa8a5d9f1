"""The release's optimiser: SGD (momentum 0.9, Nesterov) with lr multipliers x1/x2 for pretrained
weights/biases and x10/x20 for new ones; step or poly schedule with an optional linear warm-up."""

from __future__ import annotations

import torch
from torch import nn

from l2g.config import OptimConfig


def pretrained_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that a module of ``model`` reports as loaded from pretrained weights (each once)."""
    return [p for m in model.modules() if hasattr(m, "pretrained_parameters") for p in m.pretrained_parameters()]


def parameter_groups(model: nn.Module, pretrained: list[nn.Parameter], cfg: OptimConfig) -> list[dict]:
    """Four groups (pretrained weights, pretrained biases, new weights, new biases), each with its
    multiplier; biases and BatchNorm parameters (1-D) count as biases and get no weight decay."""
    known = {id(p) for p in pretrained}
    groups: list[list[nn.Parameter]] = [[], [], [], []]
    for param in model.parameters():
        if not param.requires_grad:
            continue
        is_bias = param.ndim == 1
        groups[(0 if id(param) in known else 2) + int(is_bias)].append(param)
    return [
        {"params": params, "lr_mult": mult, "weight_decay": 0.0 if index % 2 else cfg.weight_decay}
        for index, (params, mult) in enumerate(zip(groups, cfg.lr_mult, strict=True))
        if params
    ]


def build_optimizer(model: nn.Module, pretrained: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.SGD:
    groups = parameter_groups(model, pretrained, cfg)
    for group in groups:
        group["lr"] = cfg.lr * group["lr_mult"]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def learning_rate(cfg: OptimConfig, iteration: int, total: int, iters_per_epoch: int) -> float:
    """The base learning rate at ``iteration`` (0-based) of ``total``."""
    if iteration < cfg.warmup_iters:
        return cfg.warmup_start_lr + (cfg.lr - cfg.warmup_start_lr) * iteration / cfg.warmup_iters
    if cfg.schedule == "poly":
        return cfg.lr * (1 - iteration / max(total, 1)) ** cfg.poly_power
    epoch = iteration // max(iters_per_epoch, 1)
    return cfg.lr * cfg.step_gamma ** sum(epoch >= step for step in cfg.step_epochs)


def set_learning_rate(optimizer: torch.optim.Optimizer, base_lr: float) -> None:
    """Set every parameter group's lr to ``base_lr`` x its ``lr_mult`` (1 for a group without one)."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group.get("lr_mult", 1.0)
