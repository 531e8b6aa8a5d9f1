"""The data domain's choice lists and label sources, torch-, numpy- and PIL-free, so the config validates
them without importing what reads the data. Each list lives here only: the modules that implement it
(:mod:`l2g.data.cam_files`, :mod:`l2g.data.classification`, :mod:`l2g.data.layout`,
:mod:`l2g.data.label_sources`, :mod:`l2g.data.view_boxes`) and :mod:`l2g.config.validation` read it.
"""

from __future__ import annotations

from dataclasses import dataclass

# cams.format -> the suffix of one image's attention-map file (l2g.data.cam_files)
CAM_SUFFIXES = {"npz": ".npz", "dict": ".npy"}
CAM_FORMATS = tuple(CAM_SUFFIXES)
CAM_DTYPES = ("float16", "float32")  # cams.dtype: what an npz file stores
# data.resize_interpolation / data.saliency_interpolation: PIL's filters of these names
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
RESIZE_MODES = ("short_side", "square")  # data.resize_mode (l2g.data.classification)
CHECK_MODES = ("exists", "decode")  # data.check_images: how images are checked before a stage runs
VIEW_STRATEGIES = ("corners+random", "random", "grid")  # views.strategy (l2g.data.view_boxes)
MASK_MODES = ("auto", "required", "optional")  # data.masks (l2g.config.schema.DataConfig.masks_optional)
IMAGE_VIEWS = ("auto", "stored", "displayed")  # data.image_view: EXIF orientation ignored or applied
# A classes file may start with the background: VOC's convention; labelme writes _background_
BACKGROUND_NAMES = ("background", "_background_")

# The VOC layout's folders and files that label sources default to (l2g.data.layout reads the rest).
SPLIT_FOLDER = "ImageSets/Segmentation"  # <split>.txt id lists and <split>_cls.txt label lists
ANNOTATIONS_DIR = "Annotations"
NPY_LABELS_FILE = "cls_labels.npy"


@dataclass(frozen=True)
class LabelSource:
    """One source of image-level labels (``data.labels``).

    ``reader``: the name of its reader in :mod:`l2g.data.label_sources`. ``defaults``: where ``auto`` (and
    an explicit source without ``data.cls_list``) looks for it under ``data.root``, in order; ``{split}``
    is the split's name, ``{mask_dir}`` the mask folder. ``suffix``: one file per image, ``<id><suffix>``
    in that folder; None for a list of the whole split in one file. ``named``: its labels are class names,
    read with the classes file.
    """

    reader: str
    defaults: tuple[str, ...]
    suffix: str | None = None
    named: bool = False


LABEL_SOURCES: dict[str, LabelSource] = {
    "cls_txt": LabelSource("read_cls_txt", (f"{SPLIT_FOLDER}/{{split}}_cls.txt", "{split}_cls.txt")),
    "csv": LabelSource("read_csv", ("{split}.csv",), named=True),
    "npy": LabelSource("read_npy", (NPY_LABELS_FILE,)),
    "xml": LabelSource("read_xml", (ANNOTATIONS_DIR,), ".xml", named=True),
    "masks": LabelSource("read_mask", ("{mask_dir}",), ".png"),
}
LABEL_SOURCE_NAMES = ("auto", *LABEL_SOURCES)  # data.labels: auto takes the first source that exists
