"""Attention-map files: one per image, written by ``l2g cams``, read by every later stage.

Two formats:

``npz`` (default): ``<id>.npz``, an uncompressed ``np.savez`` archive holding ``classes``, the image's
    labelled classes as 0-based foreground indices (K,) int64, sorted, and ``maps``, their maps at the
    image's original size, (K, H, W), in ``[0, 1]``, float16 by default (``cams.dtype``). No pickle: it is
    read with ``allow_pickle=False``, so a file from anyone is safe to open. float16 keeps 11 significant
    bits: a value in [0, 1] is stored within 2^-12 = 2.4e-4 of itself (half a unit in the last place
    of values in [0.5, 1]; less for smaller values), i.e. a relative error of at most 2^-11 = 4.9e-4,
    at half the size of float32 (VOC train_aug: ~6 GB instead of ~12 GB).
``dict``: ``<id>.npy``, ``np.save`` of a dict ``{0-based class index: float32 (H, W) map}``: what the
    authors' release, PSA, IRN and OAA-style tools write and read (``np.load(path, allow_pickle=True)
    .item()``). l2g writes it only when asked (``cams.format: dict``, ``l2g export-cams --format dict``)
    and reads it with :mod:`l2g.data.safe_npy`'s unpickler, which builds numpy arrays and nothing else.

Every reader goes through :func:`load_cams` (or :func:`read_cams_file` for one path): maps come back as
float32 (an exact widening of float16), whatever the file's format; the sweep alone reads float16 maps as
they are (``widen=False``) and compares them in float32 (:mod:`l2g.evaluation.sweep`).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l2g.atomic import atomic_open
from l2g.data.registry import CAM_DTYPES, CAM_FORMATS
from l2g.data.registry import CAM_SUFFIXES as SUFFIXES
from l2g.data.safe_npy import READ_ERRORS, load_npy_object

# float16 of a value in [0, 1]: at most half a unit in the last place of [0.5, 1), 2^-11 / 2.
FLOAT16_MAX_ERROR = 2.0**-12


@dataclass(frozen=True)
class ClassMaps:
    """The attention maps of one image: ``classes`` (K,) sorted 0-based foreground class indices and
    ``maps`` (K, H, W) float32, channel k the map of ``classes[k]``."""

    classes: np.ndarray
    maps: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.maps.shape[1:])

    @property
    def mask_values(self) -> np.ndarray:
        """The label-mask value of each map (class index + 1), as the sweep and pseudo labels use it."""
        return self.classes.astype(np.int64) + 1

    def as_dict(self) -> dict[int, np.ndarray]:
        return {int(c): self.maps[k] for k, c in enumerate(self.classes)}


def stack_maps(cams: Mapping[int, np.ndarray], shape: tuple[int, int], resize: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """(K, H, W) maps of a ``{class: map}`` dict in class order and their (K,) mask values (class index
    + 1); an image without labelled classes gives (0, *shape) float32 maps, which label every pixel
    background. The maps are stacked as they are (they must have ``shape``), or with ``resize`` brought
    to ``shape`` bilinearly as float32 with NaN set to 0 (the report, which shows whatever file it finds).
    """
    keys = sorted(cams)
    if not keys:
        return np.zeros((0, *shape), np.float32), np.zeros(0, np.int64)
    if resize:
        maps = np.stack([np.nan_to_num(_resized(np.asarray(cams[k], np.float32), shape), nan=0.0) for k in keys])
    else:
        maps = np.stack([cams[k] for k in keys])
    return maps, np.array(keys, np.int64) + 1


def _resized(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if values.shape == shape:
        return values
    from PIL import Image

    image = Image.fromarray(values.astype(np.float32)).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def cams_filename(image_id: str, format: str = "npz") -> str:
    if format not in SUFFIXES:
        raise ValueError(f"attention-map format must be one of {', '.join(CAM_FORMATS)}, got {format!r}")
    return f"{image_id}{SUFFIXES[format]}"


def class_maps(cams: ClassMaps | Mapping[int, np.ndarray], shape: tuple[int, int] | None = None) -> ClassMaps:
    """A :class:`ClassMaps` from a ``{class: map}`` dict (sorted by class), or the argument itself.
    ``shape`` gives (H, W) for an empty dict (an image without labelled classes)."""
    if isinstance(cams, ClassMaps):
        return cams
    keys = sorted(int(k) for k in cams)
    if not keys:
        return ClassMaps(np.zeros(0, np.int64), np.zeros((0, *(shape or (0, 0))), np.float32))
    by_int = {int(k): v for k, v in cams.items()}
    return ClassMaps(np.array(keys, np.int64), np.stack([np.asarray(by_int[k], np.float32) for k in keys]))


def save_cams(path: str | Path, cams: ClassMaps | Mapping[int, np.ndarray], format: str = "npz",
              dtype: str = "float16", sync_folder: bool = True) -> None:
    """Write one image's maps atomically in ``format`` (``npz`` stores ``dtype``; ``dict`` is always
    float32, as the tools that read it expect). See :mod:`l2g.atomic` for ``sync_folder``."""
    if dtype not in CAM_DTYPES:
        raise ValueError(f"attention-map dtype must be one of {', '.join(CAM_DTYPES)}, got {dtype!r}")
    maps = class_maps(cams)
    with atomic_open(path, "wb", sync_folder=sync_folder) as handle:
        if format == "npz":
            np.savez(handle, classes=maps.classes.astype(np.int64), maps=maps.maps.astype(dtype))
        elif format == "dict":
            np.save(handle, {int(c): m.astype(np.float32) for c, m in maps.as_dict().items()}, allow_pickle=True)
        else:
            raise ValueError(f"attention-map format must be one of {', '.join(CAM_FORMATS)}, got {format!r}")


def find_cams_file(folder: str | Path, image_id: str) -> Path:
    """``<folder>/<id>.npz``, else the dict file ``<id>.npy``; FileNotFoundError naming both if neither."""
    folder = Path(folder)
    for format in CAM_FORMATS:
        path = folder / cams_filename(image_id, format)
        if path.is_file():
            return path
    raise FileNotFoundError(f"{folder / image_id}.npz: attention maps not found (nor {image_id}.npy; run "
                            "'l2g cams' first)")


def load_cams(folder: str | Path, image_id: str) -> ClassMaps:
    """The maps of ``image_id`` in ``folder``, in either format: what every stage reads maps with."""
    return read_cams_file(find_cams_file(folder, image_id))


def read_cams_file(path: str | Path, widen: bool = True) -> ClassMaps:
    """One map file (``.npz``, or a dict ``.npy`` through the restricted unpickler), checked: maps are
    (K, H, W) floats, one per distinct class. ValueError naming the file for anything else. ``widen=False``
    keeps float16 maps float16 (the sweep compares them exactly without widening every map)."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            return _read_npz(path, widen)
        return _read_dict(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: attention maps not found (run 'l2g cams' first)") from None
    except READ_ERRORS as error:
        hint = ""
        if "refusing to load" in str(error):
            hint = ("; this file holds more than numpy arrays, so it was not unpickled. If you trust its "
                    "author, convert it in Python with np.load(path, allow_pickle=True).item() and "
                    "l2g.data.cam_files.save_cams")
        raise ValueError(f"{path}: unreadable attention maps ({type(error).__name__}: {error}){hint}") from error


def _read_npz(path: Path, widen: bool = True) -> ClassMaps:
    # zipfile + read_array directly: what np.load(allow_pickle=False) does, ~0.2 ms faster per file
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        missing = {"classes.npy", "maps.npy"} - names
        if missing:
            raise ValueError(f"no {', '.join(sorted(missing))} in the archive (has {sorted(names)})")
        classes, maps = (np.lib.format.read_array(io.BytesIO(archive.read(f"{name}.npy")), allow_pickle=False)
                         for name in ("classes", "maps"))
    if classes.ndim != 1 or not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"classes must be a 1-D integer array, got {classes.dtype} {classes.shape}")
    if maps.ndim != 3 or not np.issubdtype(maps.dtype, np.floating) or maps.shape[0] != classes.shape[0]:
        raise ValueError(f"maps must be (K, H, W) floats for {classes.shape[0]} classes, got {maps.dtype} "
                         f"{maps.shape}")
    return _checked(classes.astype(np.int64), maps.astype(np.float32, copy=False) if widen else maps)


def _read_dict(path: Path) -> ClassMaps:
    cams = load_npy_object(path)
    if not isinstance(cams, dict):
        kind = f"array of shape {cams.shape}" if isinstance(cams, np.ndarray) else type(cams).__name__
        raise ValueError(f"expected a dict {{class index: (H, W) map}} saved with np.save, got {kind}")
    for key, value in cams.items():
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
            raise ValueError(f"key {key!r}: class indices must be integers")
        if not isinstance(value, np.ndarray) or value.ndim != 2 or not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"class {key}: expected a 2-D float map, got {type(value).__name__}"
                             f"{getattr(value, 'shape', '')}")
    if len({v.shape for v in cams.values()}) > 1:
        raise ValueError(f"maps of different sizes: {sorted({v.shape for v in cams.values()})}")
    return _checked(*_stacked(cams))


def _stacked(cams: dict) -> tuple[np.ndarray, np.ndarray]:
    maps = class_maps(cams)
    return maps.classes, maps.maps


def _checked(classes: np.ndarray, maps: np.ndarray) -> ClassMaps:
    if classes.size and (classes.min() < 0 or np.any(np.diff(classes) <= 0)):
        raise ValueError(f"classes must be distinct non-negative indices in increasing order, got {classes.tolist()}")
    return ClassMaps(classes, maps)
