"""The Python API: each pipeline stage as one function, and inference objects built from trained runs.

Every function here is what the matching ``l2g`` command calls, so a script and the command line give
the same files. Stages read and write run folders, as the commands do::

    import l2g

    config = l2g.load_config("synth", {"optim.epochs": 2})
    l2g.train(config, "runs/l2g")                          # runs/l2g/checkpoints/final.pt
    l2g.infer_cams("runs/l2g")                             # runs/l2g/cams/
    best = l2g.evaluate_cams("runs/l2g")["best"]           # runs/l2g/sweep.json
    l2g.make_pseudo_masks("runs/l2g")                      # runs/l2g/pseudo/ at the best threshold

    mapper = l2g.AttentionMapper.from_run("runs/l2g")      # CPU, or the GPU when there is one
    maps = mapper("photo.jpg", tags=["dog", "person"])     # {"dog": HxW float32 in [0, 1], ...}

    segmenter = l2g.Segmenter.from_run("runs/seg")
    mask = segmenter(image)                                # HxW uint8 class indices (0 = background)

Images may be given as a path, a PIL image or a numpy array (H x W x 3 uint8 RGB; H x W grey and
H x W x 4 RGBA are converted). Run-folder functions take ``overrides`` (``{"key": value}`` or
``["key=value", ...]``) applied to the run's saved config, as ``--set`` does.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from l2g.engine.run_paths import segmentation_run

if TYPE_CHECKING:  # the heavy imports (torch) happen inside the functions: `import l2g` stays light
    import numpy as np
    import torch
    from PIL import Image

    from l2g.config import Config
    from l2g.segmentation.inference import Segmentation
    from l2g.stages.predict import PredictResult

Overrides = Mapping[str, Any] | Sequence[str] | None

__all__ = [
    "AttentionMapper", "Segmenter", "evaluate_cams", "evaluate_segmentation", "export_voc", "infer_cams",
    "list_presets", "load_config", "load_run_config", "make_pseudo_masks", "predict", "run_pipeline", "train",
    "train_segmentation",
]


# --- configs ---------------------------------------------------------------------------------------


def override_strings(overrides: Overrides) -> list[str]:
    """``{"optim.lr": 0.01}`` or ``["optim.lr=0.01"]`` -> ``["optim.lr=0.01"]`` (values written as YAML)."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise TypeError(f"overrides: expected a mapping or a list of 'key=value' strings, got the string {overrides!r}")
    if isinstance(overrides, Mapping):
        import yaml

        items = []
        for key, value in overrides.items():
            if isinstance(value, tuple):
                value = list(value)
            if isinstance(value, Path):
                value = str(value)
            text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
            items.append(f"{key}={text.removesuffix('...').strip()}")
        return items
    return [str(item) for item in overrides]


def load_config(preset_or_path: str | Path | None = None, overrides: Overrides = None) -> Config:
    """A validated :class:`~l2g.config.Config` from a shipped preset name or a YAML file, plus overrides.

    ``preset_or_path=None`` gives the defaults. Unknown keys and wrong types raise
    :class:`~l2g.config.ConfigError`, with a "did you mean" hint.

    Example::

        config = l2g.load_config("voc12_resnet38_l2g_shape", {"data.root": "data/VOC2012", "optim.epochs": 2})
    """
    from l2g.config import load_config as load

    return load(preset_or_path, override_strings(overrides))


def load_run_config(run_dir: str | Path, overrides: Overrides = None) -> Config:
    """The config a run was trained with (``<run>/config.yaml``), plus overrides."""
    from l2g.stages.common import run_config

    return run_config(run_dir, override_strings(overrides))


def list_presets() -> list[str]:
    """Names of the shipped presets (``l2g/configs/*.yaml``), e.g. ``synth``, ``voc12_resnet38_l2g_shape``."""
    from l2g.config import preset_names

    return preset_names()


# --- the stages ------------------------------------------------------------------------------------


def train(config: Config, run_dir: str | Path, *, resume: bool | str = False, overwrite: bool = False,
          progress: bool = True) -> Path:
    """Train the classification stage into ``run_dir``; returns ``<run>/checkpoints/final.pt``.

    A folder holding a run is refused unless ``resume`` (continue from its newest checkpoint) or
    ``overwrite`` (delete it first). ``resume=True`` with no run there is an error; ``resume="auto"``
    continues a run when there is one and starts one otherwise. Same as ``l2g train``.

    Example::

        final = l2g.train(l2g.load_config("synth"), "runs/l2g_shape")
    """
    from l2g.stages.train import train as train_stage

    return train_stage(config, run_dir, resume=resume, progress=progress, overwrite=overwrite)


def infer_cams(run_dir: str | Path, *, split: str | None = None, out_dir: str | Path | None = None,
               overrides: Overrides = None, progress: bool = True) -> Path:
    """Multi-scale + flip attention maps of ``split`` (default ``cams.split``) -> ``<run>/cams/``; returns
    the folder. Read a file back with :func:`l2g.data.cam_files.load_cams`. Same as ``l2g cams``."""
    from l2g.stages.cams import infer_cams as infer

    return infer(load_run_config(run_dir, overrides), Path(run_dir), split=split, out_dir=out_dir, progress=progress)


def evaluate_cams(run_dir: str | Path, *, cams_dir: str | Path | None = None, split: str | None = None,
                  out_path: str | Path | None = None, overrides: Overrides = None, progress: bool = True) -> dict:
    """Sweep the background threshold over the maps -> ``<run>/sweep.json``; returns its content
    (``result["best"]["threshold"]``, ``["miou"]``, per-class ``["iou"]``...). Same as ``l2g eval-cams``."""
    from l2g.engine.run_paths import RunFolder
    from l2g.stages.eval_cams import evaluate_cams as evaluate

    return evaluate(load_run_config(run_dir, overrides), Path(cams_dir) if cams_dir else RunFolder(run_dir).cams,
                    out_path=out_path, split=split, progress=progress)


def make_pseudo_masks(run_dir: str | Path, *, threshold: float | None = None, cams_dir: str | Path | None = None,
                      out_dir: str | Path | None = None, split: str | None = None, overrides: Overrides = None,
                      progress: bool = True) -> Path:
    """Pseudo masks (palette PNGs) at ``threshold`` (default: ``eval.threshold``, else the sweep's best, else
    one chosen from the maps: :mod:`l2g.stages.threshold`) -> ``<run>/pseudo/``; returns the folder. Same as
    ``l2g pseudo``. Masks that come out almost all foreground or background are warned about."""
    from l2g.engine.run_paths import RunFolder
    from l2g.stages.pseudo import choose_threshold, write_pseudo_masks
    from l2g.stages.threshold import warn_pseudo_masks

    run = RunFolder(Path(run_dir))
    config = load_run_config(run.root, overrides)
    if threshold is not None:
        config.eval.threshold = threshold
    chosen = choose_threshold(config, run.sweep, progress)
    written = write_pseudo_masks(config, cams_dir or run.cams, out_dir or run.pseudo, chosen, split=split,
                                 progress=progress)
    warn_pseudo_masks(written, chosen)
    return written


def train_segmentation(config: Config, run_dir: str | Path, pseudo_dir: str | Path | None = None, *,
                       resume: bool | str = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Train the segmentation network (``config.seg``) on pseudo masks; returns its final checkpoint.
    ``resume`` as in :func:`train`. Same as ``l2g seg train``."""
    from l2g.stages.seg_train import train_segmentation as train_seg

    return train_seg(config, run_dir, pseudo_dir, resume=resume, progress=progress, overwrite=overwrite)


def evaluate_segmentation(seg_run_dir: str | Path, *, split: str | None = None, checkpoint: str | Path | None = None,
                          crf: bool | None = None, out_path: str | Path | None = None, overrides: Overrides = None,
                          progress: bool = True) -> dict:
    """mIoU of a segmentation run on ``split`` (default ``seg.val_split``) -> ``<run>/eval_<split>.json``;
    returns the metrics. Same as ``l2g seg eval``."""
    seg_run_dir = segmentation_run(seg_run_dir)
    from l2g.stages.seg_eval import evaluate_segmentation as evaluate

    return evaluate(load_run_config(seg_run_dir, overrides), seg_run_dir, split=split, checkpoint=checkpoint,
                    out_path=out_path, crf=crf, progress=progress)


def predict(seg_run_dir: str | Path, images: Iterable[str | Path], out_dir: str | Path, *,
            checkpoint: str | Path | None = None, crf: bool | None = None, overrides: Overrides = None,
            progress: bool = True) -> PredictResult:
    """Masks (``<out>/<stem>.png``) and overlays of image files or folders; unreadable inputs are listed
    in ``result.failed``, not raised. Same as ``l2g predict``."""
    seg_run_dir = segmentation_run(seg_run_dir)
    from l2g.stages.predict import predict_images

    return predict_images(load_run_config(seg_run_dir, overrides), seg_run_dir, list(images), out_dir,
                          checkpoint=checkpoint, crf=crf, progress=progress)


def export_voc(seg_run_dir: str | Path, out: str | Path, *, split: str = "test", competition: str = "comp6",
               checkpoint: str | Path | None = None, crf: bool | None = None, overrides: Overrides = None,
               progress: bool = True) -> Path:
    """The PASCAL VOC evaluation server's archive of a split's masks (``results/VOC2012/Segmentation/
    <competition>_<split>_cls/<id>.png``, VOC palette) -> ``out`` (.tar.gz, .tgz or .tar). Same as
    ``l2g export-voc``; see :mod:`l2g.stages.voc_export`."""
    seg_run_dir = segmentation_run(seg_run_dir)
    from l2g.stages.voc_export import export_voc as export

    return export(load_run_config(seg_run_dir, overrides), seg_run_dir, out, split=split, competition=competition,
                  checkpoint=checkpoint, crf=crf, progress=progress)


def run_pipeline(config: Config, out_dir: str | Path, *, until: str | None = None, progress: bool = True,
                 resume: bool | str = "auto", allow_degenerate_masks: bool = False) -> Path:
    """Every stage (train, cams, threshold, pseudo, seg_train, seg_eval, report) into ``out_dir``, skipping
    complete ones; ``until`` stops after that stage. Returns the report's ``index.html``. ``resume=True``
    requires a pipeline in ``out_dir`` to continue; ``"auto"`` (and False) continue one or start one.
    Pseudo masks almost all background or all foreground raise :class:`l2g.errors.DegenerateMasksError`
    before the segmentation stage, unless ``allow_degenerate_masks``. Same as ``l2g run``."""
    from l2g.stages.pipeline import run_pipeline as run

    return run(config, out_dir, progress=progress, until=until, resume=resume,
               allow_degenerate_masks=allow_degenerate_masks)


# --- inference objects -----------------------------------------------------------------------------


def resolve_device(device: str | torch.device | None, configured: str = "auto") -> torch.device:
    """``device`` as given; None: the config's (``auto``: the GPU when there is one)."""
    import torch

    if device is not None:
        return torch.device(device)
    if configured == "cuda" or (configured == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def to_rgb_array(image: str | Path | Image.Image | np.ndarray, view: str = "displayed") -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a path, a PIL image or an array (H x W x 3 uint8; H x W grey and
    H x W x 4 RGBA are converted as their PIL images would be), in ``view`` (``stored``: as dataset
    images are read; ``displayed``: as a viewer shows a photo; see :mod:`l2g.data.images`)."""
    import numpy as np
    from PIL import Image

    from l2g.data.images import read_image, to_rgb

    if isinstance(image, str | Path):
        return read_image(Path(image), view)
    if isinstance(image, Image.Image):
        return to_rgb(image, view)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"image array of dtype {image.dtype}: expected uint8 RGB values 0..255 "
                            "(e.g. (array * 255).round().astype(np.uint8) for floats in [0, 1])")
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)):
            return image if image.ndim == 3 and image.shape[2] == 3 else to_rgb(Image.fromarray(image), view)
        raise ValueError(f"image array of shape {image.shape}: expected (H, W, 3) RGB, (H, W) grey or (H, W, 4) RGBA")
    raise TypeError(f"image: expected a path, a PIL image or a numpy array, got {type(image).__name__}")


class AttentionMapper:
    """Attention maps of a trained classification run for any image and its tags (class names).

    The maps are those ``l2g cams`` writes: the run's multi-scale + flip inference (``cams.*`` of its
    config), ReLU and per-class max normalisation, at the image's size, one map per tag. A path is read
    as ``l2g cams`` reads dataset images (stored orientation, alpha dropped), so files give the same maps;
    PIL images and arrays are converted the same way.

    Example::

        mapper = l2g.AttentionMapper.from_run("runs/l2g_shape", device="cpu")
        maps = mapper("data/synth/JPEGImages/train_00000.jpg", tags=["bee", "duck"])
        maps["bee"].shape  # (H, W), float32 in [0, 1]
    """

    def __init__(self, net: torch.nn.Module, config: Config, class_names: list[str], device: torch.device) -> None:
        from l2g.stages.cams import cams_precision, prepare_inference_net

        self.precision = cams_precision(config, device)  # as l2g cams: cams.amp, runtime.channels_last
        self.net = prepare_inference_net(net.to(device).eval(), self.precision)
        self.config = config
        self.class_names = list(class_names)
        self.device = device

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | torch.device | None = None,
                 checkpoint: str | Path | None = None, overrides: Overrides = None) -> AttentionMapper:
        """The inference network of ``<run>/checkpoints/final.pt`` (or ``checkpoint``) with the run's
        config; ``overrides`` change inference settings, e.g. ``{"cams.scales": [1.0]}``."""
        from l2g.data.layout import DatasetError
        from l2g.data.splits import dataset_class_names
        from l2g.stages.cams import load_inference_net

        config = load_run_config(run_dir, overrides)
        chosen = resolve_device(device, config.device)
        net = load_inference_net(config, Path(checkpoint) if checkpoint else Path(run_dir) / "checkpoints" / "final.pt",
                                 chosen)
        try:
            names = dataset_class_names(config)
        except DatasetError:  # the dataset moved since training: its classes file is gone
            names = [f"class{i}" for i in range(config.data.num_classes)]
        return cls(net, config, names, chosen)

    def class_index(self, tag: str | int) -> int:
        """The 0-based foreground index of a class name (or of an index, checked)."""
        if isinstance(tag, bool) or not isinstance(tag, str | int):
            raise TypeError(f"tag {tag!r}: expected a class name or a 0-based class index")
        if isinstance(tag, int):
            if not 0 <= tag < len(self.class_names):
                raise ValueError(f"class index {tag} out of range 0..{len(self.class_names) - 1}")
            return tag
        if tag in self.class_names:
            return self.class_names.index(tag)
        close = difflib.get_close_matches(tag, self.class_names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown tag {tag!r}{hint}; this run's classes: {', '.join(self.class_names)}")

    def maps_by_index(self, image: str | Path | Image.Image | np.ndarray, labels: Sequence[int]
                      ) -> dict[int, np.ndarray]:
        """``{0-based class index: map}``, the dict an ``l2g cams`` file holds."""
        from l2g.method.attention_maps import base_short_side, bounded_image, image_attention, scaled_inputs

        cams = self.config.cams
        rgb = to_rgb_array(image, "stored")
        base = bounded_image(rgb, base_short_side(self.config), cams.max_side, self.config.data.resize_interpolation)
        inputs = scaled_inputs(base, cams.scales, self.config.data.mean, self.config.data.std, cams.resize)
        inputs = inputs.to(self.device) if hasattr(inputs, "to") else [x.to(self.device) for x in inputs]
        with self.precision.autocast():  # as l2g cams: cams.short_side, cams.max_side, cams.resize, cams.amp
            return image_attention(self.net, inputs, sorted({int(c) for c in labels}), cams.scales, cams.flip,
                                   cams.upsample, self.config.cams_use_softmax, size=base.shape[:2],
                                   out_size=rgb.shape[:2])

    def __call__(self, image: str | Path | Image.Image | np.ndarray, tags: Sequence[str | int]
                 ) -> dict[str | int, np.ndarray]:
        """``{tag: (H, W) float32 map in [0, 1]}`` for each tag, at the image's size."""
        if isinstance(tags, str | int):
            tags = [tags]
        indices = {tag: self.class_index(tag) for tag in tags}
        maps = self.maps_by_index(image, list(indices.values()))
        return {tag: maps[index] for tag, index in indices.items()}


class Segmenter:
    """Masks from a trained segmentation run (``l2g seg train``) for any image, on CPU or GPU.

    Inference is ``l2g predict``'s: the run's ``seg.test_scales`` / ``seg.test_flip``, the optional dense
    CRF, images above ``seg.max_side`` downscaled for the network. A path is read as ``l2g predict`` reads
    it (EXIF rotation applied, transparency composited over white); PIL images and arrays likewise.

    Example::

        segmenter = l2g.Segmenter.from_run("runs/seg")
        mask = segmenter("photo.jpg")           # (H, W) uint8: 0 background, c + 1 for class c
        segmenter.class_names[mask.max()]       # the name of a value
    """

    def __init__(self, model: torch.nn.Module, config: Config, class_names: list[str], device: torch.device,
                 crf: bool | None = None) -> None:
        self.model = model.to(device).eval()
        self.config = config
        self.class_names = list(class_names)  # index = mask value, "background" first
        self.device = device
        self.crf = crf

    @classmethod
    def from_run(cls, seg_run_dir: str | Path, device: str | torch.device | None = None,
                 checkpoint: str | Path | None = None, crf: bool | None = None,
                 overrides: Overrides = None) -> Segmenter:
        """The network of ``<run>/checkpoints/final.pt`` (or ``checkpoint``); ``crf`` overrides
        ``seg.crf.enabled``; ``overrides`` change inference settings, e.g. ``{"seg.test_scales": [0.75, 1.0]}``."""
        seg_run_dir = segmentation_run(seg_run_dir)
        from l2g.segmentation.loading import load_seg_checkpoint

        config = load_run_config(seg_run_dir, overrides)
        chosen = resolve_device(device, config.device)
        path = Path(checkpoint) if checkpoint else Path(seg_run_dir) / "checkpoints" / "final.pt"
        model, saved = load_seg_checkpoint(path, config.seg, config.data.num_classes + 1, chosen)
        return cls(model, config, saved["class_names"], chosen, crf)

    def predict(self, image: str | Path | Image.Image | np.ndarray) -> Segmentation:
        """The mask and the class probabilities (at the size the network saw)."""
        from l2g.segmentation.inference import segment

        return segment(self.model, to_rgb_array(image, "displayed"), self.config, self.device, crf=self.crf)

    def __call__(self, image: str | Path | Image.Image | np.ndarray) -> np.ndarray:
        """(H, W) uint8 class indices at the image's size (0 = background)."""
        return self.predict(image).mask
