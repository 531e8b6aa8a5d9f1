"""Checking a split's files before training: every image, mask and saliency map decoded (in parallel,
once per file version: :mod:`l2g.data.file_checks`), mask sizes and values, and the one error that lists
every problem. :func:`l2g.data.layout.load_split` runs these with ``check_images="decode"``;
:func:`check_masks` serves stages that score a split whose images are checked elsewhere."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from l2g.data import file_checks
from l2g.data.errors import DatasetError, DatasetWarning, listed
from l2g.data.images import image_mode_problem, saliency_mode_problem
from l2g.data.palette import bad_mask_values, mask_value_error
from l2g.data.pil_open import PIL_ERRORS, displayed_turned
from l2g.data.sample import Sample

MAX_LISTED_PROBLEMS = 20
MAX_LISTED_WARNINGS = 5


def raise_problems(root: Path, split: str, problems: list[str], labels: Sequence[str] = (),
                   unusable: Sequence[str] = ()) -> None:
    """One DatasetError listing every problem of a split, if there are any: the label list's bad rows
    (``labels``), files not found (``problems``) and files that cannot be used (``unusable``: unreadable, of
    the wrong mode or size, bad mask values). Each kind lists its first MAX_LISTED_PROBLEMS and the count of
    the rest, under a heading when more than one kind has problems (one kind: a plain list)."""
    kinds = [(what, list(items)) for what, items in (("problem(s) in the label list", labels),
                                                     ("file(s) not found", problems),
                                                     ("file(s) that cannot be used", unusable)) if items]
    if not kinds:
        return
    total = sum(len(items) for _, items in kinds)
    if len(kinds) == 1:
        body = listed(kinds[0][1], MAX_LISTED_PROBLEMS)
    else:
        body = "\n".join(f"  {len(items)} {what}:\n{_kind_list(items, what)}" for what, items in kinds)
    raise DatasetError(f"{root}: {total} problem(s) in split {split!r}:\n{body}")


def _kind_list(items: list[str], what: str) -> str:
    """``items`` as :func:`listed` shows them, the count of those left out naming their kind."""
    text = listed(items, MAX_LISTED_PROBLEMS)
    return f"{text} {what.split(' ', 1)[1]}" if len(items) > MAX_LISTED_PROBLEMS else text


def warn_resized(paths: list[Path]) -> None:
    """One warning for all saliency maps whose size differs from their image."""
    if not paths:
        return
    shown = ", ".join(str(path) for path in paths[:MAX_LISTED_WARNINGS])
    more = f" (and {len(paths) - MAX_LISTED_WARNINGS} more)" if len(paths) > MAX_LISTED_WARNINGS else ""
    warnings.warn(
        f"{len(paths)} saliency map(s) differ in size from their image and will be resized bilinearly at "
        f"load time: {shown}{more}",
        DatasetWarning,
        stacklevel=3,
    )


def _header_size(path: Path) -> tuple[int, int] | None:
    """(H, W) from an image file's header (nothing decoded); None when it cannot be opened."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except PIL_ERRORS:
        return None
    return height, width


def check_masks(samples: list[Sample], num_classes: int, split: str, root: str | Path) -> None:
    """Decode the mask of every sample and check its values (0..C, 255) and its size against the image's
    header (the image is not decoded); one DatasetError lists the problems. For a split whose images are
    checked elsewhere (the training split, by ``load_split`` itself) but whose masks a later stage scores.
    Masks are decoded in parallel and once per file version (:mod:`l2g.data.file_checks`)."""
    cache = file_checks.DecodeCache(Path(root))
    masks = [s for s in samples if s.mask_path is not None]
    facts = cache.facts([(s.mask_path, lambda p: file_checks.mask_facts(p)) for s in masks])
    cache.save()
    problems = []
    for sample in masks:
        size = _oriented(sample, _header_size(sample.image_path))
        if size is None:
            problems.append(f"{sample.image_path}: unreadable image")
            continue
        problem = _mask_problem(sample.mask_path, facts[sample.mask_path], size, num_classes)
        if problem:
            problems.append(problem)
    raise_problems(Path(root), split, problems)


def decode_check(
    samples: list[Sample], num_classes: int, need_masks: bool, problems: list[str], root: Path | None = None
) -> list[Path]:
    """Decode every file of every sample (in parallel, or read what an earlier check found about the same
    file version: :mod:`l2g.data.file_checks`), appending problems; returns saliency maps of another size."""
    cache = file_checks.DecodeCache(root or Path("."))
    jobs = []
    for sample in samples:
        jobs.append((sample.image_path, lambda p: file_checks.image_facts(p, "image")))
        if need_masks and sample.mask_path is not None:
            jobs.append((sample.mask_path, lambda p: file_checks.mask_facts(p)))
        if sample.saliency_path is not None:
            jobs.append((sample.saliency_path, lambda p: file_checks.image_facts(p, "saliency map")))
    facts = cache.facts(jobs)
    cache.save()
    resized = []
    for sample in samples:
        size = _oriented(sample, _decoded(sample.image_path, facts[sample.image_path], image_mode_problem, problems))
        if need_masks and sample.mask_path is not None and size is not None:
            problem = _mask_problem(sample.mask_path, facts[sample.mask_path], size, num_classes)
            if problem:
                problems.append(problem)
        if sample.saliency_path is not None:
            saliency_size = _decoded(sample.saliency_path, facts[sample.saliency_path], saliency_mode_problem,
                                     problems)
            if size is not None and saliency_size is not None and saliency_size != size:
                resized.append(sample.saliency_path)
    return resized


def _oriented(sample: Sample, size: tuple[int, int] | None) -> tuple[int, int] | None:
    """The image's size as the stages read it: turned by a 90-degree EXIF orientation in the displayed view."""
    if size is not None and sample.view == "displayed" and displayed_turned(sample.image_path):
        return size[1], size[0]
    return size


def _mask_problem(path: Path, facts: dict, size: tuple[int, int], num_classes: int) -> str | None:
    """What is wrong with one mask (unreadable, wrong size, bad values), or None."""
    if "error" in facts:
        return facts["error"]
    if tuple(facts["size"]) != size:
        height, width = facts["size"]
        return f"{path}: mask is {height}x{width} (HxW) but its image is {size[0]}x{size[1]}"
    bad = bad_mask_values(np.asarray(facts["values"], dtype=np.int64), num_classes)
    return str(mask_value_error(path, bad, num_classes)) if bad else None


def _decoded(path: Path, facts: dict, mode_problem, problems: list[str]) -> tuple[int, int] | None:
    """(H, W) of a file that decodes in a usable mode; None (and a problem) otherwise."""
    if "error" in facts:
        problems.append(facts["error"])
        return None
    problem = mode_problem(path, facts["mode"])
    if problem:
        problems.append(problem)
        return None
    height, width = facts["size"]
    return height, width
