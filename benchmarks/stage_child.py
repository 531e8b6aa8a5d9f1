"""One stage of the scale benchmark in a process of its own (``benchmarks/scale.py`` starts it and reads its
peak memory): ``python -m benchmarks.stage_child STAGE RUN SPLIT OUT CAMS RESULT KEY=VALUE ...``.

Stages: ``train`` (the fixed training steps, split SPLIT, into RUN), ``check`` (l2g train's pre-flight
decode check of SPLIT with an empty decode cache), ``check_cached`` (the same again), ``cams`` (maps of
SPLIT into OUT), ``eval_cams`` (sweep of CAMS into OUT/sweep.json), ``pseudo`` (masks of CAMS at 0.25 into
OUT). Writes ``{"seconds": ...}`` (the stage alone, after the imports) to RESULT.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    stage, run, split, out, cams, result, *overrides = argv
    Path(result).write_text(json.dumps(run_stage(stage, run, split, out, cams, overrides)))
    return 0


def run_stage(stage: str, run: str, split: str, out: str, cams: str, overrides: list[str]) -> dict:
    """Run one stage; ``{"seconds": the stage's own time, ...}``."""
    from l2g.config import load_config

    config = load_config("synth", overrides)
    config.data.train_split = split
    run_dir, out_dir, cams_dir = Path(run), Path(out), Path(cams)
    extra: dict = {}
    if stage == "train":
        from l2g.stages.train import train

        def work() -> None:
            train(config, run_dir, progress=False)
            extra["iterations"] = json.loads((run_dir / "train_metrics.json").read_text())["iterations"]
    elif stage in ("check", "check_cached"):
        from l2g.data.splits import split_samples

        if stage == "check":
            cache = os.environ.get("L2G_CACHE_DIR")
            if cache:
                shutil.rmtree(cache, ignore_errors=True)

        def work() -> None:
            split_samples(config, split, need_masks=True, need_saliency=True, check_images="decode")
    elif stage == "cams":
        from l2g.stages.cams import infer_cams

        def work() -> None:
            infer_cams(config, run_dir, split=split, out_dir=out_dir, progress=False)
    elif stage == "eval_cams":
        from l2g.stages.eval_cams import evaluate_cams

        def work() -> None:
            out_dir.mkdir(parents=True, exist_ok=True)
            sweep = evaluate_cams(config, cams_dir, out_path=out_dir / "sweep.json", split=split, progress=False)
            extra["miou"] = sweep["best"]["miou"]
    elif stage == "pseudo":
        from l2g.stages.pseudo import write_pseudo_masks

        def work() -> None:
            write_pseudo_masks(config, cams_dir, out_dir, 0.25, split=split, progress=False)
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    started = time.perf_counter()  # after the imports: the stage's own time
    work()
    return {"seconds": time.perf_counter() - started, **extra}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
