"""The one description of the folders a run writes: which file holds what, for every stage and the report.

A classification run (``l2g train``) and a segmentation run (``l2g seg train``) are each a :class:`RunFolder`;
``l2g run`` and ``l2g demo`` lay them out in a :class:`PipelineFolder`::

    <out>/config.yaml                 the pipeline's config          PipelineFolder.config
    <out>/stages/<stage>.done.json    what each stage finished       PipelineFolder.markers
    <out>/cls/                        the classification run          PipelineFolder.cls   (a RunFolder)
    <out>/seg/                        the segmentation run            PipelineFolder.seg   (a RunFolder)
    <out>/report/index.html           the report                      PipelineFolder.report

    <run>/config.yaml                 the config it was trained with  RunFolder.config
    <run>/checkpoints/final.pt        the trained weights             RunFolder.final (step-*.pt beside it)
    <run>/train_log.jsonl, train_metrics.json                          RunFolder.train_log, .metrics
    <run>/cams/<id>.npz               attention maps (l2g cams)       RunFolder.cams
    <run>/sweep.json                  the threshold sweep             RunFolder.sweep
    <run>/threshold.json              the chosen threshold            RunFolder.threshold
    <run>/pseudo/<id>.png             pseudo masks                    RunFolder.pseudo
    <run>/transfer_fit.json           l2g transfer-fit                RunFolder.transfer_fit
    <run>/predictions/<split>/        a segmentation run's masks      RunFolder.predictions(split)
    <run>/eval_<split>.json           its scores on a split           RunFolder.evaluation(split)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
FINAL_CHECKPOINT = "final.pt"
LOG_FILE = "train_log.jsonl"
METRICS_FILE = "train_metrics.json"


@dataclass(frozen=True)
class RunFolder:
    """A training run's folder and the files the stages read and write in it."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINT_DIR

    @property
    def final(self) -> Path:
        return self.checkpoints / FINAL_CHECKPOINT

    @property
    def train_log(self) -> Path:
        return self.root / LOG_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def cams(self) -> Path:
        return self.root / "cams"

    @property
    def sweep(self) -> Path:
        return self.root / "sweep.json"

    @property
    def threshold(self) -> Path:
        return self.root / "threshold.json"

    @property
    def pseudo(self) -> Path:
        return self.root / "pseudo"

    @property
    def transfer_fit(self) -> Path:
        return self.root / "transfer_fit.json"

    @property
    def init(self) -> Path:
        """How a segmentation run's network was initialised."""
        return self.root / "init.json"

    @property
    def pseudo_crf(self) -> Path:
        """A segmentation run's CRF-refined pseudo masks."""
        return self.root / "pseudo_crf"

    @property
    def predictions_root(self) -> Path:
        return self.root / "predictions"

    def predictions(self, split: str) -> Path:
        return self.predictions_root / split

    def prediction(self, split: str, image_id: str) -> Path:
        return self.predictions(split) / f"{image_id}.png"

    def evaluation(self, split: str) -> Path:
        return self.root / f"eval_{split}.json"


@dataclass(frozen=True)
class PipelineFolder:
    """The folder of ``l2g run``: its config, stage markers, the two runs and the report."""

    out: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))

    @property
    def config(self) -> Path:
        return self.out / CONFIG_FILE

    @property
    def markers(self) -> Path:
        return self.out / "stages"

    @property
    def cls(self) -> RunFolder:
        return RunFolder(self.out / "cls")

    @property
    def seg(self) -> RunFolder:
        return RunFolder(self.out / "seg")

    @property
    def report(self) -> Path:
        return self.out / "report"


def segmentation_run(path: str | Path) -> Path:
    """The segmentation run at ``path``: the folder itself, or the ``seg/`` run when ``path`` is the folder
    ``l2g run`` wrote (it has a ``stages/`` folder and no checkpoints of its own), so commands that read a
    segmentation run take either."""
    path = Path(path)
    pipeline = PipelineFolder(path)
    if not RunFolder(path).checkpoints.is_dir() and pipeline.markers.is_dir() and pipeline.seg.config.is_file():
        return pipeline.seg.root
    return path
