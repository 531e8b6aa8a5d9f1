"""Offline class-agnostic saliency maps for datasets that come without any (``l2g saliency``).

Three classical, training-free methods:

``mbd`` (default)       the minimum barrier distance to the image border (Zhang et al., "Minimum Barrier
                        Salient Object Detection at 80 FPS", ICCV 2015): a pixel is salient when every
                        path from it to the border has to cross a large range of colour. Computed on
                        the smoothed Lab image (summed over the three channels) by alternating row and
                        column sweeps (a vectorised form of the raster scans of FastMBD), on a copy
                        whose longer side is at most 300 px, then resized back. The map is divided by
                        its 95th percentile and clipped to [0, 1]: a few extreme pixels (specular
                        highlights, small saturated parts) must not set the scale of the whole map.
``fine_grained``        OpenCV contrib's StaticSaliencyFineGrained (centre-surround differences).
``spectral_residual``   OpenCV contrib's StaticSaliencySpectralResidual (Hou & Zhang, CVPR 2007).
                        Both OpenCV maps are rescaled to [0, 1] by their maximum.

Foreground IoU against the synthetic set's ground truth (``python -m benchmarks.saliency_iou``, 100
images, binarised at 0.5; best threshold of 0.1..0.9 in brackets): mbd 51.3 (51.3), fine_grained 14.9
(23.5), spectral_residual 5.9 (21.6), the set's simulated detector 68.8 (69.7). On a second set
generated with another seed: 54.2, 14.2, 6.5 and 67.6. The 95th-percentile scaling was chosen on the
first set (max scaling: 10.8 at 0.5, 53.3 at its best threshold 0.1). A trained detector (PoolNet, as
the paper uses) is better on real photographs: use its maps where you have them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from l2g.atomic import remove_partials, save_image
from l2g.data.errors import DatasetError, listed
from l2g.data.image_files import IMAGE_SUFFIXES, find_image, image_files
from l2g.data.images import read_image
from l2g.data.pool import map_tasks

METHODS = ("mbd", "fine_grained", "spectral_residual")
MBD_MAX_SIDE = 300
MBD_PASSES = 3
MBD_BLUR_SIGMA = 1.5
MBD_CLIP_PERCENTILE = 95.0
MAX_LISTED_PROBLEMS = 20


def _import_cv2():
    import cv2

    if not hasattr(cv2, "saliency"):
        raise ImportError(
            "cv2.saliency is missing: it is in opencv-contrib-python(-headless), not in opencv-python; "
            "install the contrib package"
        )
    return cv2


def _max_normalise(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    values = values - values.min()
    peak = float(values.max())
    return values / peak if peak > 0 else values


def barrier_distance(channels: np.ndarray, passes: int = MBD_PASSES) -> np.ndarray:
    """The minimum barrier distance of every pixel to the image border, summed over channels.

    ``channels`` is (H, W, K) float. The barrier of a path is max - min of the values along it; the
    distance is the smallest barrier over paths to the border, approximated by ``passes`` rounds of
    four sweeps (down, right, up, left), each relaxing every pixel against its neighbour in the sweep
    direction while carrying the path's running max and min.
    """
    values = np.asarray(channels, dtype=np.float32)
    height, width = values.shape[:2]
    distance = np.full(values.shape, np.inf, dtype=np.float32)
    distance[0], distance[-1], distance[:, 0], distance[:, -1] = 0, 0, 0, 0
    high, low = values.copy(), values.copy()

    def relax(target: tuple, source: tuple) -> None:
        up = np.maximum(high[source], values[target])
        down = np.minimum(low[source], values[target])
        better = (up - down) < distance[target]
        distance[target] = np.where(better, up - down, distance[target])
        high[target] = np.where(better, up, high[target])
        low[target] = np.where(better, down, low[target])

    every = slice(None)
    for _ in range(passes):
        for y in range(1, height):
            relax((y,), (y - 1,))
        for x in range(1, width):
            relax((every, x), (every, x - 1))
        for y in range(height - 2, -1, -1):
            relax((y,), (y + 1,))
        for x in range(width - 2, -1, -1):
            relax((every, x), (every, x + 1))
    return distance.sum(axis=2)


def mbd_saliency(image: np.ndarray) -> np.ndarray:
    """The MBD saliency of an (H, W, 3) uint8 RGB image: (H, W) float32 in [0, 1]."""
    cv2 = _import_cv2()
    height, width = image.shape[:2]
    scale = min(1.0, MBD_MAX_SIDE / max(height, width))
    small = image
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(cv2.GaussianBlur(small, (0, 0), MBD_BLUR_SIGMA), cv2.COLOR_RGB2LAB).astype(np.float32)
    saliency = barrier_distance(lab)
    if saliency.shape != (height, width):
        saliency = cv2.resize(saliency, (width, height), interpolation=cv2.INTER_LINEAR)
    scale_value = float(np.percentile(saliency, MBD_CLIP_PERCENTILE))
    if scale_value <= 0:
        return _max_normalise(saliency)
    return np.clip(saliency / scale_value, 0.0, 1.0).astype(np.float32)


def opencv_saliency(image: np.ndarray, method: str) -> np.ndarray:
    """OpenCV contrib's static saliency (``fine_grained`` or ``spectral_residual``), rescaled to [0, 1]."""
    cv2 = _import_cv2()
    detector = (cv2.saliency.StaticSaliencyFineGrained_create() if method == "fine_grained"
                else cv2.saliency.StaticSaliencySpectralResidual_create())
    ok, saliency = detector.computeSaliency(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV {method} saliency failed")
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.shape != image.shape[:2]:  # SpectralResidual may work at its own resolution
        saliency = cv2.resize(saliency, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return _max_normalise(saliency)  # OpenCV 4 gives 0..255 for some methods, OpenCV 5 floats in [0, 1]


def compute_saliency(image: np.ndarray, method: str = "mbd") -> np.ndarray:
    """(H, W) float32 saliency in [0, 1] of an (H, W, 3) uint8 RGB image."""
    if method not in METHODS:
        raise ValueError(f"saliency method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "mbd":
        return mbd_saliency(image)
    return opencv_saliency(image, method)


def to_uint8(saliency: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(saliency * 255.0), 0, 255).astype(np.uint8)


@dataclass
class SaliencySummary:
    images: int
    written: int
    skipped: int


def list_images(images_dir: Path, ids: list[str] | None = None) -> list[Path]:
    """The images to process: every image file of the folder (sorted), or the files of the given ids."""
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: image folder not found")
    if ids is not None:
        found, missing = [], []
        for image_id in ids:
            path = find_image(images_dir, image_id)
            (found if path is not None else missing).append(path or images_dir / image_id)
        if missing:
            shown = ", ".join(str(path) for path in missing[:5])
            raise DatasetError(f"{images_dir}: {len(missing)} listed image(s) not found (e.g. {shown})")
        return found
    paths = image_files(images_dir)
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise DatasetError(f"{path}: same name as {seen[path.stem]}; both would write {path.stem}.png")
        seen[path.stem] = path
    if not paths:
        raise DatasetError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def _write_one(task: tuple[Path, Path, str, str]) -> str | None:
    """Compute and write one map; the problem (unreadable image) as text instead of an exception."""
    image_path, out_path, method, view = task
    try:
        saliency = to_uint8(compute_saliency(read_image(image_path, view), method))
    except (DatasetError, ValueError, OSError) as error:
        return str(error)
    save_image(out_path, Image.fromarray(saliency), "PNG")
    return None


def write_saliency_maps(
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    method: str = "mbd",
    ids: list[str] | None = None,
    overwrite: bool = False,
    workers: int = 1,
    progress: bool = True,
    view: str = "stored",
) -> SaliencySummary:
    """Write ``<out>/<image name>.png`` (8-bit grey) for every image; existing maps are kept (resumable)
    unless ``overwrite``; ``workers`` processes share the work. Unreadable images do not stop the run:
    they are listed in one DatasetError at the end, after every readable image got its map. ``view``: the
    images as stored (VOC, COCO) or as displayed (EXIF orientation applied: own photos, as every stage reads
    them with ``data.format: custom``)."""
    if method not in METHODS:
        raise ValueError(f"saliency method must be one of {', '.join(METHODS)}, got {method!r}")
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    paths = list_images(images_dir, ids)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_partials(out_dir)
    tasks = [(path, out_dir / f"{path.stem}.png", method, view) for path in paths
             if overwrite or not (out_dir / f"{path.stem}.png").exists()]
    results = tqdm(map_tasks(_write_one, tasks, workers), total=len(tasks), desc=f"saliency ({method})",
                   disable=not progress)
    problems = [problem for problem in results if problem is not None]
    if problems:
        raise DatasetError(f"{images_dir}: {len(problems)} image(s) could not be read (the others were written):\n"
                           f"{listed(problems, MAX_LISTED_PROBLEMS)}")
    return SaliencySummary(len(paths), len(tasks), len(paths) - len(tasks))
