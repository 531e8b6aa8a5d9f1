"""Run by tests/test_distributed.py under torchrun (CPU processes, gloo): train, then infer attention maps
and write pseudo masks with a given run, each process doing its share; train the segmentation network
(on the dataset's ground truth as pseudo masks), then evaluate and predict with a given segmentation run,
each process doing its share; then provoke an error on rank 0.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_job.py OUT REFERENCE_RUN \
        REFERENCE_SEG_RUN KEY=VALUE...
"""

from __future__ import annotations

import sys
from pathlib import Path

from l2g import atomic
from l2g.config import load_config
from l2g.engine import distributed
from l2g.stages.cams import infer_cams
from l2g.stages.predict import predict_images
from l2g.stages.pseudo import write_pseudo_masks
from l2g.stages.seg_eval import evaluate_segmentation
from l2g.stages.seg_train import train_segmentation
from l2g.stages.train import train


def main() -> None:
    out, reference_run, reference_seg, overrides = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
    config = load_config("synth", overrides)
    train(config, out / "run", progress=False)
    infer_cams(config, reference_run, out_dir=out / "cams", progress=False)
    write_pseudo_masks(config, out / "cams", out / "pseudo", 0.3, progress=False)
    train_segmentation(config, out / "seg", Path(config.data.root) / "SegmentationClassAug", progress=False)
    evaluate_segmentation(config, reference_seg, progress=False)
    val = Path(config.data.root) / "JPEGImages"
    predict_images(config, reference_seg, sorted(val.glob("val_*.jpg")), out / "predict", progress=False)
    try:  # rank 0 refuses to train into a finished run: every rank must get the error, none may hang
        train(config, out / "run", progress=False)
    except FileExistsError as error:
        atomic.write_text(out / f"refused-rank{distributed.current().rank}.txt", str(error))
    distributed.shutdown()


if __name__ == "__main__":
    main()
