"""Stage 1: train the classification stage (CAM, local, L2G or L2G + shape) into a run folder.

Writes ``config.yaml``, ``train_log.jsonl``, ``checkpoints/step-<iterations>.pt`` (at epoch ends and
every ``runtime.checkpoint_every`` iterations; the newest ``runtime.keep_checkpoints`` are kept) and,
when done, ``train_metrics.json`` then ``checkpoints/final.pt`` (the inference network: its existence
means the run is finished). The loop itself (DDP, AMP, resume, guards) is :mod:`l2g.engine.trainer`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from l2g.config import Config, to_dict
from l2g.data.classification import ClassificationDataset
from l2g.engine import distributed
from l2g.engine.guards import NonFiniteError, with_fix
from l2g.engine.run_folder import start_run
from l2g.engine.run_paths import RunFolder
from l2g.engine.tensorboard import require_tensorboard
from l2g.engine.trainer import LoopSettings, Trainer
from l2g.method.diagnostics import CONTRAST_ADVICE, ContrastMonitor, StuckMonitor, stuck_advice
from l2g.method.methods import build_method
from l2g.models.base import set_activation_checkpointing
from l2g.optim import build_optimizer, learning_rate, pretrained_parameters
from l2g.report.provenance import git_commit
from l2g.stages.common import require_num_classes, seed_everything, set_threads, split_samples
from l2g.stages.preflight import check_later_inputs
from l2g.stages.tensorboard_hooks import training_hooks


def train(config: Config, run_dir: str | Path, *, resume: bool | str = False, progress: bool = True,
          overwrite: bool = False, later_stages: tuple[str, ...] = ("cams", "threshold"),
          strict_later_inputs: bool = False) -> Path:
    """Train and return the path of the final checkpoint.

    A folder holding a run is refused unless ``resume`` (continue it from its newest checkpoint, with
    a config that differs only in safe keys; True with no run there is an error, ``"auto"`` starts one)
    or ``overwrite`` (delete it first); see :mod:`l2g.engine.run_folder`, torchrun restarts included.
    Before training, the inputs of ``later_stages`` are checked (:mod:`l2g.stages.preflight`): problems
    are errors with ``strict_later_inputs`` (``l2g run``), else warnings (except the class names).
    """
    run_dir = Path(run_dir)
    final = RunFolder(run_dir).final
    require_num_classes(config)
    ctx = distributed.setup(config.device)
    set_threads(config)
    seed_everything(config.seed)
    # Weights and data are checked before the run folder is touched: a bad path leaves nothing behind.
    if config.runtime.tensorboard:
        require_tensorboard()
    method = build_method(config)
    samples = distributed.main_first(
        lambda: split_samples(config, config.data.train_split, need_saliency=method.uses_saliency))
    # What l2g cams / eval-cams will read: the class names must be right, the rest is warned about.
    distributed.main_first(lambda: check_later_inputs(config, later_stages, strict=strict_later_inputs))
    plan = start_run(config, run_dir, resume, overwrite, final)
    if plan == "finished":
        return final  # resuming a finished run (with as many epochs) has nothing left to do
    dataset = ClassificationDataset(samples, config, method.uses_saliency, seed=config.seed)
    method.to(ctx.device)
    set_activation_checkpointing(method, config.runtime.activation_checkpointing)
    optimizer = build_optimizer(method, pretrained_parameters(method), config.optim)
    settings = LoopSettings.from_config(config, progress, f"train {config.method.name}")
    monitor = StuckMonitor(advice=stuck_advice(config.method.transfer_loss, config.method.lam_warmup_epochs,
                                                config.model.head_init))
    contrast = ContrastMonitor(advice=CONTRAST_ADVICE)

    def watch(record: dict) -> None:
        contrast.update(record)
        warning = monitor.update(record)
        if warning is not None:
            tqdm.write(f"{run_dir}: warning: {warning}", file=sys.stderr)

    def schedule(iteration: int, per_epoch: int, total: int) -> float:
        method.set_progress(iteration, per_epoch, total)  # loss-weight schedules (method.lam_warmup_epochs)
        return learning_rate(config.optim, iteration, total, per_epoch)

    hooks = training_hooks(config, run_dir, settings.batch_size * ctx.world_size, on_log=watch,
                           inference_net=method.inference_net, samples=samples)
    trainer = Trainer(
        run_dir, to_dict(config), method, optimizer, dataset,
        step=lambda model, batch: model.losses(batch),
        settings=settings,
        lr_schedule=schedule,
        batch_ids=lambda batch: [samples[i].image_id for i in batch["index"].tolist()],
        resume=plan == "resume",
        on_log=hooks.on_log,
        on_epoch_end=hooks.on_epoch_end,
        host_keys=("boxes",),  # slice bounds of the views: read on the host, no device sync per step
    )
    try:
        result = trainer.fit()
    except NonFiniteError as error:
        raise with_fix(error, "optim.lr", config.optim.lr, config.amp) from None
    finally:
        hooks.close()
    failed = contrast.finish()  # judged on the last logged steps, so only now
    if failed:
        tqdm.write(f"{run_dir}: warning: {failed}", file=sys.stderr)
    warnings = [warning for warning in (monitor.warning, failed) if warning]
    return trainer.finish(result, final, lambda: {"model": method.inference_net().state_dict(),
                                                  "method": config.method.name}, len(samples), warnings=warnings,
                          commit=git_commit())
