"""Run by tests/test_distributed.py under torchrun (CPU processes, gloo): train, then infer attention maps
and write pseudo masks with a given run, each process doing its share; then provoke an error on rank 0.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_job.py OUT REFERENCE_RUN KEY=VALUE...
"""

from __future__ import annotations

import sys
from pathlib import Path

from l2g.config import load_config
from l2g.engine import atomic, distributed
from l2g.stages.cams import infer_cams
from l2g.stages.pseudo import write_pseudo_masks
from l2g.stages.train import train


def main() -> None:
    out, reference_run, overrides = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    config = load_config("synth", overrides)
    train(config, out / "run", progress=False)
    infer_cams(config, reference_run, out_dir=out / "cams", progress=False)
    write_pseudo_masks(config, out / "cams", out / "pseudo", 0.3, progress=False)
    try:  # rank 0 refuses to train into a finished run: every rank must get the error, none may hang
        train(config, out / "run", progress=False)
    except FileExistsError as error:
        atomic.write_text(out / f"refused-rank{distributed.current().rank}.txt", str(error))
    distributed.shutdown()


if __name__ == "__main__":
    main()
