"""L2G and L2G + shape trained apart, then in one run sharing their local network: time and weights.

    python -m benchmarks.shared_run --data runs/data_synth --epochs 12     # about 3.5 min on 2 idle cores

Trains, one after the other on the same machine, ``l2g`` alone, ``l2g_shape`` alone and both in one run of
:mod:`l2g.stages.train_shared` (the config, ``synth`` by default, with ``optim.epochs`` set for both), then
prints the seconds of each, the ratio shared / (the two alone) and the largest difference between a
member's final weights and its own run's (0.0: the shared run gives each method its own weights). Run it
alone: a second torch job on the cores makes the times meaningless.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

METHODS = ("l2g", "l2g_shape")


def run(data: str, out: Path, epochs: int, config: str = "synth", overrides: list[str] | None = None,
        progress: bool = True) -> dict:
    import torch

    from l2g.config import load_config
    from l2g.data.synth import SynthSpec, write_dataset
    from l2g.engine.run_paths import RunFolder
    from l2g.stages.train import train
    from l2g.stages.train_shared import train_shared

    if not (Path(data) / "COMPLETE").exists():
        write_dataset(Path(data), SynthSpec(), progress=progress)
    configs = [load_config(config, [f"data.root={data}", f"method.name={m}", *(overrides or []),
                                    f"optim.epochs={epochs}"]) for m in METHODS]
    seconds = {}
    for method_config in configs:
        started = time.perf_counter()
        train(method_config, out / "alone" / method_config.method.name, overwrite=True, progress=progress)
        seconds[method_config.method.name] = time.perf_counter() - started
    together = [out / "together" / m for m in METHODS]
    for folder in [*together, out / "together" / "+".join(METHODS)]:
        if folder.exists():
            shutil.rmtree(folder)
    started = time.perf_counter()
    train_shared(configs, together, progress=progress)
    seconds["shared"] = time.perf_counter() - started
    differences = {}
    for method in METHODS:
        alone = torch.load(RunFolder(out / "alone" / method).final, map_location="cpu", weights_only=False)["model"]
        shared = torch.load(RunFolder(out / "together" / method).final, map_location="cpu", weights_only=False)["model"]
        differences[method] = max((alone[k].float() - shared[k].float()).abs().max().item() for k in alone)
    return {"epochs": epochs, "seconds": seconds, "ratio": seconds["shared"] / (seconds["l2g"] + seconds["l2g_shape"]),
            "max_weight_difference": differences}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shared_run", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synth", help="synthetic dataset root (written if absent)")
    parser.add_argument("--out", default="runs/shared_run", help="run folders (replaced on every call)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of every run (default: 12)")
    parser.add_argument("--config", default="synth", help="preset or YAML (default: synth)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    result = run(args.data, Path(args.out), args.epochs, args.config, args.overrides, not args.quiet)
    s = result["seconds"]
    print(f"{result['epochs']} epochs: l2g alone {s['l2g']:.1f} s, l2g_shape alone {s['l2g_shape']:.1f} s, "
          f"both in one shared run {s['shared']:.1f} s: {result['ratio']:.2f}x the two runs")
    print("largest weight difference to the run alone: "
          + ", ".join(f"{m} {d:.3g}" for m, d in result["max_weight_difference"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
