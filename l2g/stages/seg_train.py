"""Stage 5: train a DeepLab on pseudo masks into a run folder.

Writes ``config.yaml``, ``init.json`` (how the network was initialised: pretrained file, its sha256 and
dataset, the tensors it filled, or from scratch), ``train_log.jsonl``, ``checkpoints/step-<iterations>.pt``
(at epoch ends and every ``runtime.checkpoint_every`` iterations; the newest ``runtime.keep_checkpoints``
are kept) and, when done, ``train_metrics.json`` then ``checkpoints/final.pt`` (its existence means the
run is finished). Optionally the pseudo masks are first refined by a dense CRF
(``seg.pseudo_crf.enabled``) into ``<run>/pseudo_crf``.

Recipe (DeepLab-v2): cross-entropy with 255 ignored, logits upsampled bilinearly to the crop; SGD with
momentum, poly learning rate; parameters not initialised from the pretrained file (the new head, or all
of a from-scratch network) get ``seg.head_lr_mult`` x the learning rate, biases twice their weights' rate
and no weight decay; batch norm frozen for DeepLab-v2.

The loop is the shared engine (:mod:`l2g.engine.trainer`): torchrun DDP with synchronised batch norm
where it trains, AMP, exact resume mid-epoch, NaN/inf guards, ``--resume`` / ``--overwrite`` rules with
:data:`l2g.engine.run_folder.SEG_RESUME_SAFE_KEYS`. The per-batch work is :func:`segmentation_step`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from l2g import atomic
from l2g.config import Config, OptimConfig, to_dict
from l2g.data.images import read_image, read_mask
from l2g.data.layout import Sample
from l2g.data.palette import IGNORE_INDEX, save_mask
from l2g.engine import checkpoint, distributed
from l2g.engine.guards import NonFiniteError, with_fix
from l2g.engine.run_folder import SEG_RESUME_SAFE_KEYS, restarted_job, start_run
from l2g.engine.run_paths import RunFolder
from l2g.engine.tensorboard import require_tensorboard
from l2g.engine.trainer import LoopSettings, Trainer
from l2g.optim import build_optimizer, learning_rate
from l2g.report.provenance import git_commit
from l2g.segmentation.crf import crf_params, refine_labels
from l2g.segmentation.data import SegmentationDataset, pseudo_mask_paths
from l2g.segmentation.loading import (
    build_seg_model,
    load_pretrained,
    model_spec,
    scratch_warning,
    seg_weights_path,
)
from l2g.stages.common import dataset_class_names, require_num_classes, seed_everything, set_threads, split_samples
from l2g.stages.tensorboard_hooks import training_hooks

INIT_FILE = "init.json"


def segmentation_loss(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy of the upsampled logits against the masks, 255 ignored. A batch whose pixels are all
    ignored gives a zero loss (with a graph) instead of NaN."""
    logits = F.interpolate(model(images), size=masks.shape[-2:], mode="bilinear", align_corners=False)
    if not (masks != IGNORE_INDEX).any():
        return {"loss": logits.sum() * 0.0}
    return {"loss": F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX)}


def segmentation_step(model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """The engine's step function: the losses of one batch (already on the model's device)."""
    return segmentation_loss(model, batch["image"], batch["mask"])


def optim_config(config: Config) -> OptimConfig:
    """The seg section's optimiser settings in the shared optimiser's terms (x1/x2 loaded, xM/x2M new)."""
    seg = config.seg
    mult = seg.head_lr_mult
    return OptimConfig(lr=seg.lr, momentum=seg.momentum, nesterov=False, weight_decay=seg.weight_decay,
                       lr_mult=(1.0, 2.0, mult, 2 * mult), schedule="poly", poly_power=seg.poly_power)


def refine_pseudo_masks(config: Config, samples: list[Sample], masks: list[Path], out_dir: Path,
                        progress: bool = True) -> list[Path]:
    """Dense-CRF-refined copies of the pseudo masks in ``out_dir``; under torchrun each process refines its
    share. Existing files are kept (each was written atomically, so each is whole): resumable."""
    params, gt_prob = crf_params(config.seg.pseudo_crf), config.seg.pseudo_crf.gt_prob
    pairs = list(zip(samples, masks, strict=True))
    ctx = distributed.current()
    with distributed.agreed():
        mine = [(s, p) for s, p in distributed.shard(pairs, ctx) if not (out_dir / p.name).exists()]
        for sample, path in tqdm(mine, desc="pseudo-mask CRF", disable=not (progress and ctx.is_main)):
            image = read_image(sample.image_path, sample.view)
            mask = refine_labels(image, read_mask(path, config.data.num_classes), params,
                                 gt_prob)
            save_mask(out_dir / path.name, mask)  # atomic
    return [out_dir / path.name for _, path in pairs]


def _initialise(model: torch.nn.Module, config: Config, warn: bool = True) -> dict:
    """Load the network's weights file (``seg.pretrained``, else the one its package ships) into ``model``
    if there is one; returns the init record (``init.json``).

    Random weights (``scratch``, or null for a network without packaged weights) come with a warning
    (printed, and kept in the record) for the networks whose published results need pretrained weights."""
    seg = config.seg
    path = seg_weights_path(seg)
    if path is None:
        warning = scratch_warning(seg)
        if warning and warn and distributed.current().is_main:
            tqdm.write(f"warning: {warning}", file=sys.stderr)
        return {"pretrained": None, "from_scratch": True, **({"warning": warning} if warning else {})}
    return {"pretrained": load_pretrained(model, path, seg.pretrained_dataset), "from_scratch": False}


def _loaded_parameters(model: torch.nn.Module, init: dict) -> list[torch.nn.Parameter]:
    """The parameters the pretrained file filled (they train at x1/x2; the others at the head's rate)."""
    names = set((init.get("pretrained") or {}).get("loaded_names", []))
    return [p for name, p in model.named_parameters() if name in names]


def _read_init(run_dir: Path) -> dict:
    path = run_dir / INIT_FILE
    try:
        init = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"{path}: missing or unreadable ({error}); it records which tensors the "
                                "pretrained file filled, which resuming needs. Start over with --overwrite") from None
    if not isinstance(init, dict) or "from_scratch" not in init:
        raise ValueError(f"{path}: not an l2g init record")
    return init


def train_segmentation(config: Config, run_dir: str | Path, pseudo_dir: str | Path | None = None, *,
                       resume: bool | str = False, progress: bool = True, overwrite: bool = False,
                       warn_scratch: bool = True) -> Path:
    """Train and return the path of ``checkpoints/final.pt``.

    A folder holding a run is refused unless ``resume`` (continue it from its newest checkpoint, with a
    config that differs only in :data:`~l2g.engine.run_folder.SEG_RESUME_SAFE_KEYS`) or ``overwrite``
    (delete it first). Resuming a finished run does nothing unless ``seg.epochs`` grew. ``warn_scratch``:
    print the from-scratch warning of a large DeepLab (``l2g run`` printed it before its first stage).
    """
    run_dir = Path(run_dir)
    final = RunFolder(run_dir).final
    pseudo_dir = pseudo_dir or config.seg.pseudo_dir
    if pseudo_dir is None:
        raise ValueError("no pseudo masks to train on: give --pseudo DIR or set seg.pseudo_dir")
    require_num_classes(config)
    ctx = distributed.setup(config.device)
    set_threads(config)
    seed_everything(config.seed)
    seg, num_classes = config.seg, config.data.num_classes + 1
    # Data and weights are checked before the run folder is touched: a bad path leaves nothing behind.
    if config.runtime.tensorboard:
        require_tensorboard()
    samples = distributed.main_first(lambda: split_samples(config, seg.train_split))
    masks = distributed.main_first(lambda: pseudo_mask_paths(samples, pseudo_dir))
    names = ["background", *dataset_class_names(config)]
    model = build_seg_model(seg, num_classes)
    # A run that continues from a checkpoint takes every weight from it: the pretrained file is not read
    # again (it may have moved since); init.json says which tensors it filled.
    continues = distributed.main_first(lambda: bool(resume or restarted_job(run_dir))
                                       and RunFolder(run_dir).config.exists()
                                       and bool(checkpoint.list_checkpoints(RunFolder(run_dir).checkpoints)))
    init = None if continues else _initialise(model, config, warn_scratch)
    plan = start_run(config, run_dir, resume, overwrite, final, SEG_RESUME_SAFE_KEYS, epochs_key="seg.epochs")
    if plan == "finished":
        return final  # resuming a finished run (with as many epochs) has nothing left to do
    if init is None:
        init = distributed.main_first(lambda: _read_init(run_dir))
    elif ctx.is_main:
        atomic.write_json(run_dir / INIT_FILE, init)
    if seg.pseudo_crf.enabled:
        masks = refine_pseudo_masks(config, samples, masks, run_dir / "pseudo_crf", progress)
    dataset = SegmentationDataset(samples, masks, config, seed=config.seed)
    model.to(ctx.device)
    optim = optim_config(config)
    optimizer = build_optimizer(model, _loaded_parameters(model, init), optim)
    settings = LoopSettings.from_config(config, progress, f"seg train {seg.arch}", epochs=seg.epochs,
                                        batch_size=seg.batch_size)
    hooks = training_hooks(config, run_dir, settings.batch_size * ctx.world_size)  # scalars only
    trainer = Trainer(
        run_dir, to_dict(config), model, optimizer, dataset,
        step=segmentation_step,
        settings=settings,
        lr_schedule=lambda iteration, per_epoch, total: learning_rate(optim, iteration, total, per_epoch),
        batch_ids=lambda batch: [samples[i].image_id for i in batch["index"].tolist()],
        resume=plan == "resume",
        on_log=hooks.on_log,
    )

    def final_payload() -> dict:  # the trained network (synchronised batch norm has the same state) and its spec
        return {"model": trainer.model.state_dict(), "spec": model_spec(seg, num_classes), "class_names": names,
                "init": init, "config": to_dict(config)}

    try:
        result = trainer.fit()
    except NonFiniteError as error:
        raise with_fix(error, "seg.lr", seg.lr, config.amp) from None
    finally:
        hooks.close()
    return trainer.finish(result, final, final_payload, len(samples), arch=seg.arch, init=init,
                          pseudo_dir=str(pseudo_dir), pseudo_crf=seg.pseudo_crf.enabled, commit=git_commit())
