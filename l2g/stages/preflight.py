"""Checks, before the first training iteration, of the files that LATER stages will read.

Training checks its own split (images, labels, saliency maps) when it loads it. What later stages read
would otherwise be found broken only hours later, after training and attention maps:

    stage        what it reads                                    checked
    (all)        the class names (classes.txt or data.classes_file)  read and counted
    cams         images and labels of cams.split                     as data.check_images says
    threshold    masks of cams.split (unless eval.threshold is set)  every file exists; decoded with decode
    seg_train    seg.pretrained                                      the file exists
    seg_eval     images and masks of seg.val_split                   as data.check_images says

A split that is the training split is not decoded twice: its images are checked by training itself,
only its masks are decoded here (``data.check_images=decode``). ``l2g run`` checks the stages it will
run and fails on any problem; ``l2g train`` fails on the class names and only warns about the others,
because which later stages run is up to the user (a dataset without masks, say, is fine when
``eval.threshold`` is set or ``l2g pseudo --threshold`` is given).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection

from l2g.config import Config
from l2g.data.errors import DatasetError, listed
from l2g.data.voc_layout import check_masks
from l2g.segmentation.loading import check_seg_weights, scratch_warning
from l2g.stages.common import dataset_class_names, split_samples

CHECKED_STAGES = ("cams", "threshold", "seg_train", "seg_eval")


def _scored_split(config: Config, split: str) -> None:
    """The images, labels and masks of a split that a stage scores against its masks."""
    if split == config.data.train_split:  # its images are checked (and decoded) by training itself
        samples = split_samples(config, split, need_masks=True, check_images="exists")
        if config.data.check_images == "decode":
            check_masks(samples, config.data.num_classes, split, config.data.root)
    else:
        split_samples(config, split, need_masks=True)


def later_input_problems(config: Config, stages: Collection[str]) -> list[str]:
    """What is wrong with the inputs of ``stages`` (names of :data:`CHECKED_STAGES`), one text per stage;
    the class names are always checked. Empty when everything is in place."""
    problems: list[str] = []

    def attempt(what: str, check: Callable[[], object]) -> None:
        try:
            check()
        except (DatasetError, FileNotFoundError, ValueError) as error:
            problems.append(f"{what}: {error}")

    attempt("class names (reports, eval-cams, segmentation)", lambda: dataset_class_names(config))
    cams_split = config.cams.split
    if "threshold" in stages and config.eval.threshold is None:
        attempt(f"eval-cams scores split {cams_split!r} against its masks to choose the background threshold "
                "(set eval.threshold to skip it)", lambda: _scored_split(config, cams_split))
    elif "cams" in stages and cams_split != config.data.train_split:
        attempt(f"cams reads split {cams_split!r}", lambda: split_samples(config, cams_split))
    if "seg_train" in stages:
        attempt("segmentation training", lambda: check_seg_weights(config.seg))
    if "seg_eval" in stages:
        val = config.seg.val_split
        attempt(f"segmentation evaluation scores split {val!r} against its masks",
                lambda: _scored_split(config, val))
    return problems


def check_later_inputs(config: Config, stages: Collection[str], strict: bool = True) -> None:
    """Raise one DatasetError listing every problem of :func:`later_input_problems` (``strict``), or print
    them as warnings (the class names still raise). Also prints the from-scratch warning of a large
    DeepLab when the segmentation stage will run."""
    problems = later_input_problems(config, stages)
    names_bad = any(problem.startswith("class names") for problem in problems)
    if problems and (strict or names_bad):
        raise DatasetError(f"{len(problems)} problem(s) with files that later stages read (checked before "
                           f"training starts):\n{listed(problems)}")
    for problem in problems:
        print(f"warning: a later stage will fail: {problem}", file=sys.stderr)
    if "seg_train" in stages:
        warning = scratch_warning(config.seg)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
