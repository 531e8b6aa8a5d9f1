"""``l2g run CONFIG --out DIR``: every stage in order, each skipped when its outputs are complete.

Stages and where they write (inside DIR)::

    train      cls/checkpoints/final.pt ...   classification stage (l2g train)
    cams       cls/cams/                      attention maps of cams.split (l2g cams)
    threshold  cls/threshold.json             the background threshold: eval.threshold, else the best of a
               cls/sweep.json                 sweep on the images with masks, else Otsu's rule on the maps
                                              (l2g.stages.threshold)
    pseudo     cls/pseudo/                    pseudo masks at the chosen threshold (l2g pseudo); degenerate ones
                                              (almost all background or all foreground) stop the pipeline here,
                                              before seg_train, unless allow_degenerate_masks
    seg_train  seg/checkpoints/final.pt ...   DeepLab on the pseudo masks (l2g seg train)
    seg_eval   seg/eval_<val>.json            mIoU on seg.val_split (l2g seg eval); without masks there, its
                                              predicted masks only (no mIoU)
    report     report/index.html              the run report

The stage markers are those of :mod:`l2g.engine.markers`, kept in ``stages/`` (every stage writes
somewhere under DIR): a stage records its inputs (the config values it depends on, as
:data:`l2g.config.stage_keys.STAGE_KEYS` declares them, and the stamp of the stage before) in
``stages/<name>.started.json`` before it runs, and when it finishes writes ``stages/<name>.done.json``
last and atomically: the same inputs, every file of its outputs with its size, and a fresh stamp. A stage
is complete when that marker exists, its inputs are unchanged and every listed file is still there with
its size. So an interrupted pipeline continues where it stopped (a stage cut short resumes itself:
training from its newest checkpoint, attention maps from the files already written), a changed config
value reruns the stages that depend on it and every stage after, and nothing else is redone.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l2g.config import Config, ConfigError, save_config
from l2g.config.stage_keys import STAGE_KEYS, input_values
from l2g.engine import markers
from l2g.engine.run_paths import PipelineFolder, RunFolder
from l2g.report.formatting import describe_threshold
from l2g.report.run_report import write_run_report
from l2g.stages.cams import infer_cams
from l2g.stages.common import require_num_classes
from l2g.stages.pipeline_stages import STAGE_NAMES
from l2g.stages.preflight import check_later_inputs
from l2g.stages.pseudo import choose_threshold, write_pseudo_masks
from l2g.stages.seg_eval import evaluate_segmentation
from l2g.stages.seg_train import train_segmentation
from l2g.stages.threshold import check_pseudo_masks, choose_pipeline_threshold, warn_pseudo_masks
from l2g.stages.train import train


@dataclass
class Pipeline:
    config: Config
    out: Path
    progress: bool = True
    until: str | None = None
    allow_degenerate_masks: bool = False  # train the segmentation network on degenerate pseudo masks

    @property
    def folder(self) -> PipelineFolder:
        return PipelineFolder(self.out)

    @property
    def cls(self) -> RunFolder:
        return self.folder.cls

    @property
    def seg(self) -> RunFolder:
        return self.folder.seg

    @property
    def markers(self) -> Path:
        return self.folder.markers


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    outputs: Callable[[Pipeline], list[Path]]  # checked for completeness; removed when stale
    run: Callable[[Pipeline], None]
    check: Callable[[Pipeline], None] | None = None  # before it runs (not when complete): raises to stop there

    def config_keys(self, config: Config) -> dict[str, Any]:
        """The config values its outputs depend on, as declared in :data:`l2g.config.stage_keys.STAGE_KEYS`."""
        return input_values(config, self.name)


# --- the stages --------------------------------------------------------------------------------------


def _run_train(p: Pipeline) -> None:
    # the later stages' inputs were checked by run_pipeline (check_later_inputs) already
    train(p.config, p.cls.root, resume="auto", progress=p.progress, later_stages=())


def _run_cams(p: Pipeline) -> None:
    infer_cams(p.config, p.cls.root, progress=p.progress)


def _run_threshold(p: Pipeline) -> None:
    print(f"  {describe_threshold(choose_pipeline_threshold(p.config, p.cls.root, progress=p.progress))}")


def _run_pseudo(p: Pipeline) -> None:
    threshold = choose_threshold(p.config, p.cls.sweep)
    write_pseudo_masks(p.config, p.cls.cams, p.cls.pseudo, threshold, progress=p.progress)
    if p.until == "pseudo":  # else seg_train's check says it, and stops there
        warn_pseudo_masks(p.cls.pseudo, threshold)


def _check_pseudo_masks(p: Pipeline) -> None:
    check_pseudo_masks(p.cls.pseudo, choose_threshold(p.config, p.cls.sweep), allow=p.allow_degenerate_masks)


def _run_seg_train(p: Pipeline) -> None:
    # the from-scratch warning was printed before the first stage (check_later_inputs): not twice
    train_segmentation(p.config, p.seg.root, p.cls.pseudo, resume="auto", progress=p.progress,
                       warn_scratch=False)


def _run_seg_eval(p: Pipeline) -> None:
    metrics = evaluate_segmentation(p.config, p.seg.root, progress=p.progress,
                                    without_masks="predict" if p.config.data.masks_optional else "error")
    if metrics.get("miou") is None:
        print(f"  segmented {metrics['images']} images of split {metrics['split']} (no masks there to score "
              f"against): {metrics['predictions']}")
    else:
        print(f"  segmentation mIoU on {metrics['split']}: {100 * metrics['miou']:.1f}")


def _run_report(p: Pipeline) -> None:
    print(f"  {write_run_report(p.folder.report, p.config, p.cls.root, p.seg.root)}")


STAGES: tuple[Stage, ...] = (
    Stage("train", "classification stage",
          lambda p: [p.cls.checkpoints, p.cls.train_log, p.cls.metrics, p.cls.config], _run_train),
    Stage("cams", "attention maps", lambda p: [p.cls.cams], _run_cams),
    Stage("threshold", "background threshold", lambda p: [p.cls.sweep, p.cls.threshold], _run_threshold),
    Stage("pseudo", "pseudo masks", lambda p: [p.cls.pseudo], _run_pseudo),
    Stage("seg_train", "segmentation training",
          lambda p: [p.seg.checkpoints, p.seg.train_log, p.seg.metrics, p.seg.config, p.seg.init, p.seg.pseudo_crf],
          _run_seg_train, check=_check_pseudo_masks),
    Stage("seg_eval", "segmentation evaluation",
          lambda p: [p.seg.evaluation(p.config.seg.val_split), p.seg.predictions_root], _run_seg_eval),
    Stage("report", "report", lambda p: [p.folder.report], _run_report),
)
if tuple(stage.name for stage in STAGES) != STAGE_NAMES or tuple(STAGE_KEYS) != STAGE_NAMES:  # pragma: no cover
    raise ImportError(f"l2g.stages.pipeline_stages.STAGE_NAMES {STAGE_NAMES} differs from the stages defined here "
                      "or from those of l2g.config.stage_keys.STAGE_KEYS (a programming error)")


# --- markers (l2g.engine.markers, kept in <out>/stages: every stage writes under <out>) -------------------


def stage_inputs(stage: Stage, p: Pipeline, upstream: str | None) -> dict[str, Any]:
    """What a stage's outputs depend on: the stamp of the stage before and its config values."""
    return {"upstream": upstream, "config": stage.config_keys(p.config)}


def stage_status(p: Pipeline, stage: Stage, upstream: str | None) -> tuple[str | None, str]:
    """(its stamp when complete, else None; why not) of a stage given the stamp of the stage before it."""
    found = markers.status(p.out, stage.name, stage_inputs(stage, p, upstream), marker_dir=p.markers)
    if found.done:
        return found.record.get("stamp"), ""
    if "upstream" in found.changed:
        return None, "an earlier stage was redone"
    if found.changed:
        return None, f"config changed ({', '.join(key.removeprefix('config.') for key in found.changed)})"
    return None, found.reason


def _clear(paths: list[Path], root: Path) -> None:
    for path in paths:
        if root.resolve() not in path.resolve().parents:
            raise ValueError(f"{path}: refusing to remove a path outside the run folder {root}")
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_stage(p: Pipeline, stage: Stage, upstream: str | None, index: int) -> str:
    """Run one stage unless complete; returns its stamp."""
    prefix = f"[{index + 1}/{len(STAGES)}] {stage.name} ({stage.description})"
    stamp, reason = stage_status(p, stage, upstream)
    if stamp is not None:
        print(f"{prefix}: complete, skipped")
        return stamp
    if stage.check is not None:  # nothing of this stage is touched when it says stop
        stage.check(p)
    inputs = stage_inputs(stage, p, upstream)
    if markers.started_with(p.out, stage.name, inputs, marker_dir=p.markers):
        print(f"{prefix}: resuming an interrupted run")
    else:
        # Outputs left by another config or built on other inputs are stale: start this stage afresh.
        print(f"{prefix}: running ({reason})")
        markers.marker_paths(p.out, stage.name, p.markers)[1].unlink(missing_ok=True)
        _clear(stage.outputs(p), p.out)
        markers.mark_started(p.out, stage.name, inputs, marker_dir=p.markers)
    began = time.time()
    stage.run(p)
    # A fresh stamp per completion: a stage redone with the same inputs (its outputs had gone) still
    # makes the stages after it rerun, since its new outputs may differ in content, not only in size.
    stamp = uuid.uuid4().hex
    markers.mark_done(p.out, stage.name, inputs, markers.files_under(p.out, stage.outputs(p)), marker_dir=p.markers,
                      extra={"stamp": stamp, "seconds": round(time.time() - began, 3),
                             "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return stamp


def pending_stages(p: Pipeline, until: str | None = None) -> list[str]:
    """The stages up to ``until`` that the run will execute: from the first incomplete one on (every
    stage after it reruns, since its upstream stamp changes). Reads the markers only."""
    names = list(STAGE_NAMES[: STAGE_NAMES.index(until) + 1] if until else STAGE_NAMES)
    upstream = None
    for index, stage in enumerate(STAGES[: len(names)]):
        upstream, _ = stage_status(p, stage, upstream)
        if upstream is None:
            return names[index:]
    return []


def run_pipeline(config: Config, out: str | Path, *, progress: bool = True, until: str | None = None,
                 resume: bool | str = "auto", allow_degenerate_masks: bool = False) -> Path:
    """Run (or continue) every stage up to ``until`` (default: all); returns the report's index.html.

    ``resume=True`` (``l2g run --resume``) requires a pipeline in ``out`` to continue: a mistyped path is
    an error, not a new pipeline. ``"auto"`` and False continue a pipeline or start one (rerunning the
    same command continues; each training stage then continues its own run).

    Before anything runs, every file that a stage still to run will read is checked
    (:mod:`l2g.stages.preflight`): an error names the file, before any training iteration. Degenerate pseudo
    masks stop the run before seg_train (:func:`l2g.stages.threshold.check_pseudo_masks`, a
    DegenerateMasksError) unless ``allow_degenerate_masks``; rerun it after the fix, as after any stop.
    """
    if until is not None and until not in STAGE_NAMES:
        raise ValueError(f"--until {until!r}: not a stage (stages: {', '.join(STAGE_NAMES)})")
    stages = STAGE_NAMES[: STAGE_NAMES.index(until) + 1] if until else STAGE_NAMES
    if "seg_train" in stages and config.seg.train_split != config.cams.split:
        raise ConfigError(f"seg.train_split={config.seg.train_split!r} but pseudo masks are made for cams.split="
                          f"{config.cams.split!r}: the pipeline trains on the split it labels, set both alike")
    require_num_classes(config)
    p = Pipeline(config, Path(out), progress, until, allow_degenerate_masks)
    if resume is True and not p.folder.config.is_file():
        what = "does not exist" if not p.out.exists() else "holds no pipeline to resume (no config.yaml)"
        raise FileNotFoundError(f"{p.out}: {what}; check the path, or give --resume auto (or no --resume) to "
                                "continue a pipeline when there is one and start one when there is none")
    check_later_inputs(config, pending_stages(p, until), strict=True)
    p.out.mkdir(parents=True, exist_ok=True)
    save_config(config, p.folder.config)
    upstream = None
    for index, stage in enumerate(STAGES):
        upstream = run_stage(p, stage, upstream, index)
        if stage.name == until:
            break
    return p.folder.report / "index.html"
