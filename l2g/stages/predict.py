"""``l2g predict``: masks for any images with a trained segmentation run (CPU is fine).

For every input image ``<stem>.<ext>`` it writes ``<out>/<stem>.png`` (label mask, VOC palette, at the
image's size) and ``<out>/<stem>_overlay.jpg`` (class colours blended over the image). Folders given as
inputs are searched (not recursively) for image files. Inputs that cannot be read (not an image,
truncated, missing) are reported by name after the others are done; see
:func:`l2g.data.images.read_user_image` for what is converted (grey, RGBA, 16-bit, EXIF rotation)
and :mod:`l2g.segmentation.inference` for images above ``seg.max_side`` (downscaled, mask upscaled).
Under torchrun each process segments every world_size-th image (the files one process would write).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from l2g import atomic
from l2g.config import Config
from l2g.data.image_files import IMAGE_SUFFIXES, image_files
from l2g.data.images import read_user_image
from l2g.data.palette import colorize, save_mask
from l2g.engine import distributed
from l2g.engine.file_names import safe_filename
from l2g.engine.run_paths import RunFolder
from l2g.segmentation.inference import segment
from l2g.segmentation.loading import load_seg_checkpoint
from l2g.stages.common import set_threads


@dataclass
class PredictResult:
    written: list[tuple[Path, Path, str]] = field(default_factory=list)  # (input, mask file, summary line)
    failed: list[str] = field(default_factory=list)  # one message per input that could not be used


def collect_images(inputs: list[str | Path]) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders expanded to their image files."""
    images: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = image_files(item)
            if not found:
                raise FileNotFoundError(f"{item}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            images += found
        else:
            images.append(item)
    return images


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Class colours blended 50/50 over the image where the mask is not background; (H, W, 3) uint8.
    Only foreground pixels are converted, so a huge image costs little more than its own copy."""
    blended = image.copy()
    foreground = mask != 0
    colours = colorize(mask[foreground]).astype(np.uint16)
    blended[foreground] = ((image[foreground].astype(np.uint16) + colours + 1) // 2).astype(np.uint8)
    return blended


def _unique_stems(paths: list[Path]) -> list[str]:
    stems, seen = [], set()
    for path in paths:
        stem, count = safe_filename(path.stem), 1
        candidate = stem
        while candidate in seen:
            count += 1
            candidate = f"{stem}_{count}"
        seen.add(candidate)
        stems.append(candidate)
    return stems


def describe(mask: np.ndarray, names: list[str]) -> str:
    """'crab 31.2%, background 68.8%': the classes present and their share of the pixels."""
    counts = np.bincount(mask.ravel(), minlength=len(names))
    order = np.argsort(-counts)
    return ", ".join(f"{names[i] if i < len(names) else i} {100 * counts[i] / mask.size:.1f}%"
                     for i in order if counts[i])


def predict_images(config: Config, run_dir: str | Path, inputs: list[str | Path], out_dir: str | Path, *,
                   checkpoint: str | Path | None = None, crf: bool | None = None,
                   progress: bool = True) -> PredictResult:
    """Segment every input image into ``out_dir``; unreadable inputs are collected in ``failed``. Under
    torchrun each process segments its share; every process returns the whole result, in input order."""
    ctx = distributed.setup(config.device)
    set_threads(config)
    checkpoint = Path(checkpoint) if checkpoint else RunFolder(Path(run_dir)).final
    model, saved = load_seg_checkpoint(checkpoint, config.seg, config.data.num_classes + 1, ctx.device)
    images = collect_images(inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = list(enumerate(zip(images, _unique_stems(images), strict=True)))
    done: list[tuple[int, tuple[Path, Path, str] | str]] = []  # (input index, written entry or failure)
    with distributed.agreed():
        for index, (path, stem) in tqdm(distributed.shard(items, ctx), desc="predict",
                                        disable=not (progress and ctx.is_main)):
            try:
                image = read_user_image(path)
            except (ValueError, FileNotFoundError) as unreadable:
                done.append((index, str(unreadable)))
                continue
            mask = segment(model, image, config, ctx.device, crf=crf).mask
            mask_path = out_dir / f"{stem}.png"
            save_mask(mask_path, mask)
            atomic.save_image(out_dir / f"{stem}_overlay.jpg", Image.fromarray(overlay(image, mask)), quality=90)
            done.append((index, (path, mask_path, describe(mask, saved["class_names"]))))
    result = PredictResult()
    for _, entry in sorted(item for share in distributed.all_gather_object(done) for item in share):
        if isinstance(entry, str):
            result.failed.append(entry)
        else:
            result.written.append(entry)
    return result
