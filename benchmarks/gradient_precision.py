"""How exact is one classification gradient under each precision? The network of a preset at
initialisation, one batch of synthetic images, the CAM loss (Eq. 1); every parameter's gradient under
float32, float32 + channels_last, bf16 autocast and bf16 autocast + channels_last, against the same
gradient in float64.

    python -m benchmarks.gradient_precision                  # synth preset: the small CNN from scratch
    python -m benchmarks.gradient_precision --batches 3 --width 8

Why: on the synthetic benchmark, bf16 autocast *training* of the small CNN lowered CAM's pseudo labels
on every one of 6 seeds while bf16 *maps* changed nothing visible (docs/benchmarks.md, "Before and after
the CPU fast paths"). The table printed here shows where that comes from: the relative error
``||g - g64|| / ||g64||`` of each stage's gradient, layer by layer from the head down to the first
convolution. A loss read from globally pooled maps through BatchNorm gives a badly conditioned gradient
at the start of training (most of each BatchNorm's incoming gradient is removed by its backward pass,
and what is left is a small remainder), so float32's rounding (2^-24) already shows at 1e-3 and bf16's
(2^-9) makes a large share of the gradient noise. The figures are for one machine and one batch; the
seed benchmark (``python -m benchmarks.seeds --variant``) is what tells whether a precision costs
quality.
"""

from __future__ import annotations

import argparse
import copy

VARIANTS = {  # name: (autocast on, channels_last)
    "float32": (False, False),
    "float32 channels_last": (False, True),
    "bf16": (True, False),
    "bf16 channels_last": (True, True),
}


def synthetic_batch(size: int, count: int, num_classes: int, mean, std, seed: int):
    """``count`` images of the synthetic generator resized to ``size`` square, normalised, and their labels."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from l2g.data.classification import multi_hot, normalize
    from l2g.data.synth import SynthSpec, render

    spec, rng = SynthSpec(num_classes=num_classes), np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(count):
        image, _mask, _saliency, classes, _parts = render(spec, rng)
        images.append(F.interpolate(normalize(image, mean, std)[None], size=(size, size), mode="bilinear",
                                    align_corners=False)[0])
        labels.append(multi_hot(tuple(classes), num_classes))
    return torch.stack(images), torch.stack(labels)


def gradients(net, images, labels, autocast: bool, channels_last: bool, float64: bool = False) -> dict:
    """Every parameter's gradient of the classification loss on (images, labels), as float64."""
    import torch

    from l2g.method.losses import classification_loss

    net = copy.deepcopy(net)
    if float64:
        net, images = net.double(), images.double()
    if channels_last:
        net, images = net.to(memory_format=torch.channels_last), images.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = classification_loss(net(images).logits, labels)
    loss.backward()
    return {name: param.grad.double() for name, param in net.named_parameters()}


def stage_of(name: str) -> str:
    """The group a parameter's error is reported under: ``backbone.stage3.1.0.weight`` -> ``backbone.stage3``."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "backbone" else parts[0]


def relative_errors(grads: dict, reference: dict) -> dict[str, float]:
    """Per stage: ``||g - g_ref|| / ||g_ref||`` over the stage's parameters together."""
    import torch

    errors: dict[str, list[float]] = {}
    norms: dict[str, list[float]] = {}
    for name, ref in reference.items():
        errors.setdefault(stage_of(name), []).append(float(torch.sum((grads[name] - ref) ** 2)))
        norms.setdefault(stage_of(name), []).append(float(torch.sum(ref ** 2)))
    return {stage: (sum(errors[stage]) / max(sum(norms[stage]), 1e-300)) ** 0.5 for stage in errors}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="synth", help="preset or YAML whose model is measured (default: synth)")
    parser.add_argument("--width", type=int, default=None, help="backbone width override (small_cnn)")
    parser.add_argument("--size", type=int, default=None, help="image side (default: the preset's data.global_size)")
    parser.add_argument("--batch", type=int, default=None, help="images per batch (default: optim.batch_size)")
    parser.add_argument("--batches", type=int, default=2, help="batches (and initialisations) averaged")
    parser.add_argument("--out", default="benchmarks/gradient_precision.json")
    args = parser.parse_args(argv)

    import torch

    from benchmarks.output import write_report
    from benchmarks.run import machine_info
    from l2g.config import load_config
    from l2g.models.attention_net import build_attention_net

    config = load_config(args.config, [f"model.width={args.width}"] if args.width else [])
    size, batch = args.size or config.data.global_size, args.batch or config.optim.batch_size
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for index in range(args.batches):
        torch.manual_seed(index)
        net = build_attention_net(config.model, config.data.num_classes)
        images, labels = synthetic_batch(size, batch, config.data.num_classes, config.data.mean, config.data.std,
                                         seed=index)
        reference = gradients(net, images, labels, autocast=False, channels_last=False, float64=True)
        for name, (autocast, channels_last) in VARIANTS.items():
            rows[name].append(relative_errors(gradients(net, images, labels, autocast, channels_last), reference))
    stages = list(rows["float32"][0])[::-1]  # head first: the order the backward pass runs
    mean = {name: {stage: sum(r[stage] for r in runs) / len(runs) for stage in stages} for name, runs in rows.items()}
    header = "| precision | " + " | ".join(stages) + " |"
    lines = [header, "| --- " * (len(stages) + 1) + "|"]
    lines += ["| " + name + " | " + " | ".join(f"{mean[name][s]:.1e}" for s in stages) + " |" for name in VARIANTS]
    table = (f"Relative gradient error against float64, {args.config} at initialisation, {args.batches} batch(es) "
             f"of {batch} synthetic images at {size} px (mean over batches), head first:\n\n" + "\n".join(lines))
    report = {"config": args.config, "size": size, "batch": batch, "batches": args.batches, "errors": mean,
              "samples": rows, "machine": machine_info(torch.device("cpu"))}
    write_report(report, table, args.out)
    return report


if __name__ == "__main__":
    main()
