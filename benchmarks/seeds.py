"""The seed benchmark: every method trained over K seeds on the same dataset, compared per seed.

    python -m benchmarks.seeds                                      # synth preset, 4 methods, 3 seeds
    python -m benchmarks.seeds --config synth_efficientnet --out runs/seeds_eff
    python -m benchmarks.seeds --seeds 3 --variant "cam=cam" \\
        --variant "l2g_kl=l2g method.transfer_loss=kl method.lam_warmup_epochs=1"

A single run of the synthetic benchmark does not carry a one-point conclusion (the same seeded demo
differs by 2-3 points between two machines), so every claim that one method beats another comes from
here. For each seed (``seed`` = the seed of initialisation, data order and augmentation; the dataset
is the same for every seed) and each variant it runs ``l2g train``, ``l2g cams`` and ``l2g eval-cams``
into ``<out>/seed<k>/<label>/`` and reads the pseudo-label mIoU at the variant's best background
threshold. It prints and writes (``<out>/seeds.json``, ``<out>/seeds.md``):

- per variant: mean +- std (sample standard deviation, n - 1) of mIoU over the seeds, the seeds on
  which ``l2g train`` warned that attention transfer was stuck or had failed, and (on data that mark the objects'
  parts, like the synthetic set) the mean own-class attention on parts, bodies and background;
- per variant against the reference (``--reference``, default ``cam``): the paired difference
  ``mIoU(variant, seed) - mIoU(reference, seed)`` per seed, its mean +- std, and on how many seeds the
  variant wins (difference > 0);
- the mIoU at one fixed threshold (``--fixed-threshold``, default 0.25: the release reports VOC at 0.25
  instead of each method's best), when that threshold is among the swept ones;
- for runs with attention transfer, how well the global network fits its targets (``l2g transfer-fit``
  on ``--fit-images`` training images): target A^c / global G^c on parts, bodies and background.

Finished steps are skipped (a checkpoint, maps or sweep already there), so an interrupted benchmark
continues where it stopped. It is a benchmark (minutes to tens of minutes on a CPU), not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from l2g.config import load_config
from l2g.engine.run_paths import RunFolder
from l2g.method.registry import METHODS

DEFAULT_SEEDS = 3
FIXED_THRESHOLD = 0.25  # the release's reported VOC threshold (evaluate_mthr_voc.py sweeps 0.10-0.30)
FIT_IMAGES = 120
FIT_REGIONS = ("part", "body", "background")


@dataclass(frozen=True)
class Variant:
    """One row of the comparison: a label, a method and the overrides it adds to the shared config."""

    label: str
    method: str
    overrides: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``"label=method key=value key=value"`` (or ``"method ..."``, labelled by the method's name)."""
        words = shlex.split(text)
        if not words:
            raise ValueError(f"--variant {text!r}: expected 'label=method [key=value ...]'")
        label, _, method = words[0].rpartition("=") if "=" in words[0] else (words[0], "", words[0])
        overrides = tuple(words[1:])
        if not label:
            raise ValueError(f"--variant {text!r}: empty label (expected 'label=method [key=value ...]')")
        if method not in METHODS:
            raise ValueError(f"--variant {text!r}: unknown method {method!r} (choose from {', '.join(METHODS)})")
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ValueError(f"--variant {text!r}: {bad[0]!r} is not a key=value override")
        return cls(label, method, overrides)


@dataclass
class SeedRun:
    label: str
    seed: int
    miou: float
    threshold: float
    train_minutes: float
    stuck_warning: str | None = None
    extra: dict = field(default_factory=dict)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0.0 for a single value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def paired_differences(runs: list[SeedRun], label: str, reference: str) -> dict:
    """``label``'s mIoU minus ``reference``'s on each seed both ran: per seed, mean, std, wins."""
    mine = {r.seed: r.miou for r in runs if r.label == label}
    theirs = {r.seed: r.miou for r in runs if r.label == reference}
    seeds = sorted(set(mine) & set(theirs))
    diffs = [mine[s] - theirs[s] for s in seeds]
    mean, std = mean_std(diffs)
    return {"seeds": seeds, "differences": diffs, "mean": mean, "std": std,
            "wins": sum(d > 0 for d in diffs), "n": len(diffs)}


def summarize(runs: list[SeedRun], labels: list[str], reference: str | None) -> dict:
    """Per label: values, mean, std, stuck seeds; and the paired differences to ``reference``."""
    summary = {}
    for label in labels:
        values = [r.miou for r in runs if r.label == label]
        mean, std = mean_std(values)
        row = {"seeds": [r.seed for r in runs if r.label == label], "miou": values, "mean": mean, "std": std,
               "thresholds": [r.threshold for r in runs if r.label == label],
               "train_minutes": mean_std([r.train_minutes for r in runs if r.label == label])[0],
               "stuck_seeds": [r.seed for r in runs if r.label == label and r.stuck_warning]}
        attention = [r.extra["attention"] for r in runs if r.label == label and r.extra.get("attention")]
        if attention:  # mean own-class attention on parts / bodies / background (see l2g.evaluation.parts)
            row["attention"] = {key: mean_std([a[key] for a in attention if a[key] is not None])[0]
                                for key in ("part", "body", "background")}
        fixed = [r.extra["fixed"]["miou"] for r in runs if r.label == label and r.extra.get("fixed")]
        if fixed:
            row["fixed"] = {"threshold": next(r.extra["fixed"]["threshold"] for r in runs
                                              if r.label == label and r.extra.get("fixed")),
                            "miou": fixed, "mean": mean_std(fixed)[0]}
        fits = [r.extra["fit"] for r in runs if r.label == label and r.extra.get("fit")]
        if fits:  # mean over seeds of target A^c and global G^c per region
            row["fit"] = {region: {key: mean_std([f[region][key] for f in fits if region in f])[0]
                                   for key in ("target", "global")}
                          for region in FIT_REGIONS if any(region in f for f in fits)}
        if reference is not None and label != reference:
            row["vs_reference"] = paired_differences(runs, label, reference)
        summary[label] = row
    return summary


def format_markdown(summary: dict, reference: str | None, title: str = "") -> str:
    """The table (mIoU in points): mean +- std, per seed, paired difference to the reference, wins."""
    lines = [title, ""] if title else []
    ref = f" − {reference} (mean ± std)" if reference else ""
    fixed_at = next((row["fixed"]["threshold"] for row in summary.values() if "fixed" in row), None)
    fixed_head = f" | mIoU at {fixed_at:.2f}" if fixed_at is not None else ""
    lines += [f"| variant | pseudo-label mIoU, mean ± std | per seed | paired{ref} | wins{fixed_head} | stuck warnings "
              "| attention part / body / background | fit part / body / background (target → global) |",
              "| --- " * (8 + (fixed_at is not None)) + "|"]
    for label, row in summary.items():
        per_seed = " / ".join(f"{100 * v:.1f}" for v in row["miou"])
        paired, wins = "-", "-"
        if "vs_reference" in row and row["vs_reference"]["n"]:
            diff = row["vs_reference"]
            paired = f"{100 * diff['mean']:+.1f} ± {100 * diff['std']:.1f}"
            wins = f"{diff['wins']}/{diff['n']}"
        stuck = ", ".join(f"seed {s}" for s in row["stuck_seeds"]) or "none"
        attention = " / ".join(f"{row['attention'][k]:.2f}" for k in ("part", "body", "background")) \
            if "attention" in row else "-"
        fixed = "" if fixed_at is None else (f" | {100 * row['fixed']['mean']:.1f}" if "fixed" in row else " | -")
        fit = ", ".join(f"{row['fit'][k]['target']:.2f} → {row['fit'][k]['global']:.2f}"
                        for k in FIT_REGIONS if k in row["fit"]) if "fit" in row else "-"
        lines.append(f"| {label} | {100 * row['mean']:.1f} ± {100 * row['std']:.1f} | {per_seed} | {paired} "
                     f"| {wins}{fixed} | {stuck} | {attention} | {fit} |")
    return "\n".join(lines)


def miou_at(sweep: dict, threshold: float) -> float | None:
    """The swept mIoU at ``threshold`` (None when it was not swept)."""
    for value, miou in zip(sweep["thresholds"], sweep["miou"], strict=True):
        if abs(value - threshold) < 1e-9:
            return miou
    return None


def fit_summary(run_dir: Path, images: int, progress: bool) -> dict | None:
    """Target A^c and global G^c of each region (part / body / background) of an L2G run, or None."""
    from l2g.stages.transfer_fit import measure_transfer_fit

    if images < 1:
        return None
    cached = RunFolder(run_dir).transfer_fit
    result = json.loads(cached.read_text()) if cached.exists() else None
    if result is None or result.get("images") != images:
        result = measure_transfer_fit(run_dir, images, progress=progress)
    return {region: {"target": row["target"], "global": row["global"]}
            for region, row in result["regions"].items() if row is not None and region in FIT_REGIONS}



def _flag(warning: str | None) -> str:
    """The mark a run's progress line gets for its transfer warning (l2g.method.diagnostics)."""
    if not warning:
        return ""
    return "  STUCK" if "stuck" in warning else "  TRANSFER FAILED"


def run_one(config, run_dir: Path, progress: bool, fixed_threshold: float = FIXED_THRESHOLD,
            fit_images: int = FIT_IMAGES) -> SeedRun:
    """Train (unless finished), infer maps and sweep thresholds of one run; its row of the table."""
    from l2g.data.splits import split_samples
    from l2g.stages.cams import infer_cams
    from l2g.stages.demo import attention_on_parts
    from l2g.stages.eval_cams import evaluate_cams
    from l2g.stages.train import train

    if not RunFolder(run_dir).final.exists():
        train(config, run_dir, resume="auto", progress=progress)
    infer_cams(config, run_dir, progress=progress)  # skipped when the maps of this checkpoint are complete
    sweep = evaluate_cams(config, RunFolder(run_dir).cams, progress=progress)  # seconds: always redone
    metrics = json.loads(RunFolder(run_dir).metrics.read_text())
    warnings = [w for w in metrics.get("warnings", []) if w.startswith("attention transfer")]  # stuck or failed
    samples = split_samples(config, config.cams.split, need_masks=True, check_images="exists")
    attention = attention_on_parts(config, samples, RunFolder(run_dir).cams)  # None unless the data mark parts
    extra: dict = {"attention": attention} if attention else {}
    fixed = miou_at(sweep, fixed_threshold)
    if fixed is not None:
        extra["fixed"] = {"threshold": fixed_threshold, "miou": fixed}
    if config.method.name in ("l2g", "l2g_shape"):
        fit = fit_summary(run_dir, fit_images, progress)
        if fit:
            extra["fit"] = fit
    return SeedRun("", config.seed, sweep["best"]["miou"], sweep["best"]["threshold"], metrics["minutes"],
                   warnings[0] if warnings else None, extra)


def run_seeds(out: str | Path, variants: list[Variant], seeds: list[int], config: str = "synth",
              data_root: str | Path = "data/synth", overrides: list[str] | None = None,
              reference: str | None = "cam", progress: bool = True, fixed_threshold: float = FIXED_THRESHOLD,
              fit_images: int = FIT_IMAGES, share_local: bool = True) -> dict:
    """Run every variant on every seed into ``out`` and write ``seeds.json`` and ``seeds.md`` there.
    ``share_local``: variants that differ only in their transfer (L2G and L2G + shape of the same length)
    train in one run per seed sharing their local network (l2g.stages.train_shared: the same weights)."""
    from l2g.data.synth import SynthSpec, write_dataset
    from l2g.stages.train_shared import train_shared_groups

    out, data_root = Path(out), Path(data_root)
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise ValueError(f"variant labels must differ: {labels}")
    if reference is not None and reference not in labels:
        reference = None
    configs = {(v.label, seed): load_config(config, [f"data.root={data_root}", f"method.name={v.method}",
                                                     *(overrides or []), *v.overrides, f"seed={seed}"])
               for v in variants for seed in seeds}  # every config is checked before the first run
    if not (data_root / "COMPLETE").exists():
        print(f"writing the synthetic dataset to {data_root}")
        write_dataset(data_root, SynthSpec(), progress=progress)
    runs: list[SeedRun] = []
    started = time.time()
    for seed in seeds:
        if share_local:
            train_shared_groups([(configs[(v.label, seed)], out / f"seed{seed}" / v.label) for v in variants], progress)
        for variant in variants:
            run = run_one(configs[(variant.label, seed)], out / f"seed{seed}" / variant.label, progress,
                          fixed_threshold, fit_images)
            run.label = variant.label
            runs.append(run)
            print(f"seed {seed}  {variant.label:<24} mIoU {100 * run.miou:5.1f}  threshold {run.threshold:.2f}  "
                  f"train {run.train_minutes:.1f} min{_flag(run.stuck_warning)}", flush=True)
    summary = summarize(runs, labels, reference)
    title = (f"Seed benchmark: config {config}, {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), data {data_root}"
             + (f", overrides {' '.join(overrides)}" if overrides else ""))
    table = format_markdown(summary, reference, title)
    payload = {"config": config, "data": str(data_root), "overrides": list(overrides or []), "seeds": seeds,
               "reference": reference, "variants": [asdict(v) for v in variants],
               "runs": [asdict(r) for r in runs], "summary": summary, "minutes": (time.time() - started) / 60}
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(json.dumps(payload, indent=1))
    (out / "seeds.md").write_text(table + "\n")
    print("\n" + table)
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seeds", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="synth", help="preset or YAML shared by every run (default: synth)")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help=f"number of seeds (default: {DEFAULT_SEEDS})")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + K - 1")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated methods, each a variant without overrides (default: all four)")
    parser.add_argument("--variant", action="append", default=[], metavar="'LABEL=METHOD [KEY=VALUE ...]'",
                        help="a labelled method with its own overrides (repeatable; replaces --methods)")
    parser.add_argument("--reference", default="cam", help="label the paired differences are taken against")
    parser.add_argument("--out", default="runs/seeds", help="output folder (default: runs/seeds)")
    parser.add_argument("--data", default="data/synth", help="synthetic dataset root (written if absent)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable)")
    parser.add_argument("--fixed-threshold", type=float, default=FIXED_THRESHOLD,
                        help=f"also report mIoU at this swept threshold (default: {FIXED_THRESHOLD}, the release's)")
    parser.add_argument("--fit-images", type=int, default=FIT_IMAGES,
                        help=f"training images for the target fit of transfer runs (0: off; default {FIT_IMAGES})")
    parser.add_argument("--separate-runs", action="store_true",
                        help="train every variant in its own run (by default variants that differ only in their "
                             "transfer share one run and its local network: the same weights, in less time)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    try:
        variants = ([Variant.parse(v) for v in args.variant] if args.variant
                    else [Variant.parse(m.strip()) for m in args.methods.split(",") if m.strip()])
    except ValueError as error:
        parser.error(str(error))
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    run_seeds(args.out, variants, seeds, args.config, args.data, args.overrides, args.reference, not args.quiet,
              args.fixed_threshold, args.fit_images, share_local=not args.separate_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
