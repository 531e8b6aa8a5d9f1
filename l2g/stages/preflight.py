"""Checks, before the first training iteration, of the files that LATER stages will read.

Training checks its own split (images, labels, saliency maps) when it loads it. What later stages read
would otherwise be found broken only hours later, after training and attention maps:

    stage        what it reads                                    checked
    (all)        the class names (classes.txt or data.classes_file)  read and counted
    train        images, labels and saliency maps of data.train_split  as training does (data.check_images),
                                                                     when ``l2g run`` will train
    cams         images and labels of cams.split                     as data.check_images says
    threshold    masks of cams.split (unless eval.threshold is set)  every file exists; decoded with decode
    seg_train    seg.pretrained                                      the file exists
    seg_eval     images and masks of seg.val_split                   as data.check_images says

With optional masks (``data.masks``; auto: the custom format) no mask is needed: the threshold comes
from the masks some images have, else from the maps, a val split without masks gets predictions instead
of mIoU, and one that is not listed is replaced by cams.split (:func:`mask_free_notes` says which applies).
A split that is the training split is not decoded twice: its images are checked by training itself, and
by ``l2g run`` before anything runs, so that one error lists the training split's problems (bad label rows,
missing and unreadable files) with those of the later stages; a file named by two checks is listed once.
``l2g run`` checks the stages it will run and fails on any problem, listing every one; ``l2g train`` fails
on the class names and only warns about the others, because which later stages run is up to the user.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Collection

from l2g.config import Config
from l2g.data.errors import DatasetError, listed
from l2g.data.layout import check_masks
from l2g.method.registry import METHODS
from l2g.segmentation.loading import check_seg_weights, scratch_warning
from l2g.stages.common import dataset_class_names, split_listed, split_samples

CHECKED_STAGES = ("train", "cams", "threshold", "seg_train", "seg_eval")
LEFT_OUT = re.compile(r": \.\.\. and (\d+) more")  # the count of the problems a capped list leaves out


def _split_files(config: Config, split: str, need_masks: bool) -> None:
    """The images and labels of a split, and its masks (every one with ``need_masks``, else those there
    are). A split that is the training split: its images are checked, and decoded, by training itself."""
    if split == config.data.train_split:
        samples = split_samples(config, split, need_masks=need_masks, check_images="exists")
        masked = [sample for sample in samples if sample.mask_path is not None]
        if masked and config.data.check_images == "decode":
            check_masks(masked, config.data.num_classes, split, config.data.root)
    else:
        split_samples(config, split, need_masks=need_masks)


def _problems_of(error: Exception) -> list[str]:
    """One problem per file: an error that lists several (``- item`` lines) becomes one entry each."""
    lines = str(error).splitlines()
    items = [line.strip()[2:] for line in lines[1:] if line.strip().startswith("- ")]
    if not items:
        return [str(error)]
    return items + [line.strip() for line in lines[1:] if line.strip().startswith("... and")]


def later_input_problems(config: Config, stages: Collection[str]) -> list[str]:
    """What is wrong with the inputs of ``stages`` (names of :data:`CHECKED_STAGES`), one text per file;
    the class names are always checked. Empty when everything is in place. With ``data.masks`` required
    (VOC, COCO, synth) the threshold's split (unless eval.threshold is set) and seg.val_split need every
    mask; with optional masks (custom images) none is needed, and a val split need not exist."""
    problems: list[str] = []
    seen: set[str] = set()  # a file two checks name (the training split's, the threshold's) is listed once
    optional = config.data.masks_optional

    def attempt(what: str, check: Callable[[], object]) -> None:
        try:
            check()
        except (DatasetError, FileNotFoundError, ValueError) as error:
            found = [item for item in _problems_of(error) if item.startswith("... and") or item not in seen]
            seen.update(found)
            problems.extend(f"{what}: {item}" for item in found)

    attempt("class names (reports, eval-cams, segmentation)", lambda: dataset_class_names(config))
    cams_split, train_split = config.cams.split, config.data.train_split
    scored = "threshold" in stages and config.eval.threshold is None and not optional  # every mask needed
    scored_what = (f"eval-cams scores split {cams_split!r} against its masks to choose the background threshold "
                   "(set eval.threshold to skip it, or data.masks=optional to choose it without masks)")
    # The training split, as training loads it (every file decoded: data.check_images), and when it is the
    # split the maps are made of, its masks with it: one load, so that one error lists all its problems.
    labelled_here = "train" in stages and cams_split == train_split and ("cams" in stages or "threshold" in stages)
    if "train" in stages:
        attempt(f"training split {train_split!r}" + (f"; {scored_what}" if labelled_here and scored else ""),
                lambda: split_samples(config, train_split, need_saliency=METHODS[config.method.name].shape_transfer,
                                      need_masks=labelled_here and scored, decode_masks=labelled_here))
    if scored and not labelled_here:
        attempt(scored_what, lambda: _split_files(config, cams_split, need_masks=True))
    elif ("cams" in stages or "threshold" in stages) and (cams_split != train_split or optional) and not labelled_here:
        attempt(f"split {cams_split!r} (attention maps, threshold)",
                lambda: _split_files(config, cams_split, need_masks=False))
    if "seg_train" in stages:
        attempt("segmentation training", lambda: check_seg_weights(config.seg))
    val = config.seg.val_split
    if "seg_eval" in stages and not optional:
        attempt(f"segmentation evaluation scores split {val!r} against its masks (data.masks=optional: "
                "predictions without masks)", lambda: _split_files(config, val, need_masks=True))
    elif "seg_eval" in stages and split_listed(config, val):
        attempt(f"segmentation evaluation reads split {val!r}", lambda: _split_files(config, val, need_masks=False))
    return problems


def mask_free_notes(config: Config, stages: Collection[str]) -> list[str]:
    """What ``l2g run`` will do where masks are missing (read from the file lists only; call it after
    :func:`later_input_problems` found nothing)."""
    notes = []
    if "threshold" in stages and config.eval.threshold is None:
        samples = split_samples(config, config.cams.split, check_images="exists")
        masked = sum(sample.mask_path is not None for sample in samples)
        if not masked:
            notes.append(f"no masks for split {config.cams.split!r}: the background threshold will be chosen from "
                         "the attention maps (Otsu's rule); masks for a few images, or eval.threshold, choose it "
                         "instead")
        elif masked < len(samples):
            notes.append(f"{masked} of {len(samples)} images of split {config.cams.split!r} have masks: the "
                         "background threshold will be chosen on those")
    if "seg_eval" in stages:
        val = config.seg.val_split
        if not split_listed(config, val):
            notes.append(f"no split {val!r} (seg.val_split) in {config.data.root}: the segmentation network will "
                         f"segment split {config.cams.split!r} for the report instead (l2g predict segments any "
                         "folder)")
        elif not any(sample.mask_path is not None for sample in split_samples(config, val, check_images="exists")):
            notes.append(f"no masks for split {val!r}: its predicted masks are shown in the report, without mIoU")
    return notes


def _count(problems: list[str]) -> int:
    """The number of problems listed, a ``... and N more`` entry counting N."""
    return sum(int(more.group(1)) if (more := LEFT_OUT.search(problem)) else 1 for problem in problems)


def check_later_inputs(config: Config, stages: Collection[str], strict: bool = True) -> None:
    """Raise one DatasetError listing every problem of :func:`later_input_problems` (``strict``), or print
    them as warnings (the class names still raise). Also prints the from-scratch warning of a large
    DeepLab when the segmentation stage will run."""
    problems = later_input_problems(config, stages)
    names_bad = any(problem.startswith("class names") for problem in problems)
    if problems and (strict or names_bad):
        raise DatasetError(f"{_count(problems)} problem(s) with files that later stages read (checked before "
                           f"training starts):\n{listed(problems)}")
    for problem in problems:
        print(f"warning: a later stage will fail: {problem}", file=sys.stderr)
    if strict and not problems and config.data.masks_optional:
        for note in mask_free_notes(config, stages):
            print(f"note: {note}")
    if "seg_train" in stages:
        warning = scratch_warning(config.seg)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
