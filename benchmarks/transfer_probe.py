"""Instrumented first iterations of an L2G run: what the targets, scores and gradients look like.

    python -m benchmarks.transfer_probe --iters 40 --set model.backbone=efficientnet_lite0
    python -m benchmarks.transfer_probe --iters 40 --set method.name=l2g_shape --out runs/probe.jsonl

Trains exactly as ``l2g train`` does (same method, optimiser, learning-rate schedule, data order) for
``--iters`` iterations and prints, per iteration, what decides whether attention transfer can work:

- ``bg_share``: share of target pixels whose keep-the-max winner is the background channel (or nothing);
- ``target_class``: mean target value on the pixels taught a class;
- ``margin_bg``: mean over all pixels of the global score margin ``s_bg - max_c s_c`` (raw scores);
- ``margin_taught``: mean over the class-taught pixels of ``s_taught - max_other s``;
- ``pmax`` / ``sat``: mean largest softmax probability, share of pixels where it is >= 0.999;
- ``kt_stuck``: the logged diagnostic (l2g.method.diagnostics.stuck_share);
- ``grad_head`` / ``grad_backbone``: gradient norms of the global network's head and backbone;
- ``feat_sq``: mean squared L2 norm of the features the global head sees, per pixel; ``feat_shared``:
  the share of it along the direction shared by all pixels (squared norm of the mean feature / mean
  squared norm);
- ``loss_kt``: the transfer loss.

It is a diagnostic, not a benchmark: a few minutes on a CPU for 40 iterations of EfficientNet-Lite0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from l2g.config import load_config
from l2g.data.classification import ClassificationDataset
from l2g.data.splits import split_samples
from l2g.engine.loader import EpochSampler
from l2g.method.diagnostics import stuck_share
from l2g.method.methods import L2GMethod, build_method
from l2g.optim import build_optimizer, learning_rate, pretrained_parameters
from l2g.stages.common import seed_everything, set_threads

COLUMNS = ("bg_share", "target_class", "margin_bg", "margin_taught", "pmax", "sat", "kt_stuck", "grad_head",
           "grad_backbone", "feat_sq", "feat_shared", "loss_kt")


def grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad.detach().flatten() for p in module.parameters() if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else 0.0


def transfer_stats(crops: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """The target and score statistics of one batch (see the module docstring)."""
    crops, targets = crops.detach().float(), targets.detach().float()
    best, winner = targets.max(dim=1)
    taught = (best > 0) & (winner < targets.shape[1] - 1)
    margin_bg = crops[:, -1] - crops[:, :-1].amax(dim=1)
    taught_score = crops.gather(1, winner[:, None])[:, 0]
    others = crops.scatter(1, winner[:, None], float("-inf")).amax(dim=1)
    probabilities = torch.softmax(crops, dim=1).amax(dim=1)
    n_taught = int(taught.sum())
    return {
        "bg_share": 1.0 - n_taught / taught.numel(),
        "target_class": float(best[taught].mean()) if n_taught else 0.0,
        "margin_bg": float(margin_bg.mean()),
        "margin_taught": float((taught_score - others)[taught].mean()) if n_taught else 0.0,
        "pmax": float(probabilities.mean()),
        "sat": float((probabilities >= 0.999).float().mean()),
        "kt_stuck": float(stuck_share(crops, targets)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="synth", help="YAML config or preset (default: synth)")
    parser.add_argument("--iters", type=int, default=40, help="iterations to run (default: 40)")
    parser.add_argument("--every", type=int, default=1, help="print every N iterations (default: 1)")
    parser.add_argument("--out", help="also write one JSON record per iteration to this file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    config = load_config(args.config, ["method.name=l2g", *args.overrides]) if not any(
        o.startswith("method.name=") for o in args.overrides) else load_config(args.config, args.overrides)
    set_threads(config)
    seed_everything(config.seed)
    method = build_method(config)
    if not isinstance(method, L2GMethod):
        raise SystemExit("transfer_probe: method.name must be l2g or l2g_shape")
    samples = split_samples(config, config.data.train_split, need_saliency=method.uses_saliency)
    dataset = ClassificationDataset(samples, config, method.uses_saliency, seed=config.seed)
    optimizer = build_optimizer(method, pretrained_parameters(method), config.optim)
    batch_size = config.optim.batch_size
    per_epoch = len(dataset) // batch_size
    total = config.optim.epochs * per_epoch

    captured: dict[str, torch.Tensor] = {}
    head = method.global_net.head
    head.register_forward_hook(lambda module, inputs, output: captured.__setitem__("features", inputs[0].detach()))
    transfer = method.transfer
    method.transfer = lambda batch: _keep(captured, transfer(batch))

    sink = open(args.out, "w") if args.out else None  # noqa: SIM115 (closed below)
    print("iter " + " ".join(f"{c:>13}" for c in COLUMNS))
    sampler = EpochSampler(dataset, 1, 0, config.seed)
    iteration = 0
    method.train()
    for epoch in range(config.optim.epochs):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        order = sampler.indices()
        for start in range(0, per_epoch * batch_size, batch_size):
            if iteration >= args.iters:
                break
            items = [dataset[i] for i in order[start:start + batch_size]]
            batch = torch.utils.data.default_collate(items)
            lr = learning_rate(config.optim, iteration, total, per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_mult"]
            if hasattr(method, "set_progress"):
                method.set_progress(iteration, per_epoch, total)
            losses = method.losses(batch)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            step = captured["step"]
            features = captured["features"].float()
            per_pixel = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
            square = per_pixel.pow(2).sum(dim=1).mean()
            record = {
                "iteration": iteration, **transfer_stats(step.crops, step.targets),
                "grad_head": grad_norm(method.global_net.head), "grad_backbone": grad_norm(method.global_net.backbone),
                "feat_sq": float(square), "feat_shared": float(per_pixel.mean(dim=0).pow(2).sum() / square),
                "loss_kt": float(losses["loss_kt"]),
            }
            optimizer.step()
            if iteration % args.every == 0:
                print(f"{iteration:4d} " + " ".join(f"{record[c]:13.4g}" for c in COLUMNS), flush=True)
            if sink is not None:
                sink.write(json.dumps(record) + "\n")
            iteration += 1
    if sink is not None:
        sink.close()
        print(f"wrote {Path(args.out)}", file=sys.stderr)
    return 0


def _keep(captured: dict, step):
    captured["step"] = step
    return step


if __name__ == "__main__":
    sys.exit(main())
