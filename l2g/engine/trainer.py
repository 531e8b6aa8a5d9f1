"""The training loop every stage shares: data, DDP, AMP, checkpoints, logs, guards.

A stage supplies the model (every trained module under one ``nn.Module``, already on the device of
:func:`l2g.engine.distributed.setup`), its optimiser, a dataset whose items are dicts of tensors, and a step
function ``step(model, batch) -> {"loss": tensor to minimise, other names: tensors to log}``. :class:`Trainer` then

- deals each epoch's images out to the processes (:class:`~l2g.engine.loader.EpochSampler`; batch sizes are per
  process), wraps the model in ``DistributedDataParallel`` with synchronised batch norm when there are several
  processes, and runs the step under AMP when it is on;
- accumulates the gradients of ``accumulate_steps`` (K) micro-batches of ``batch_size`` images per optimiser step
  (the release's ``--iter_size``; each micro-batch's loss divided by K, DDP's gradient all-reduce only on the last);
- stops with :class:`~l2g.engine.guards.NonFiniteError` (iteration, loss term, image ids) before an optimiser step
  would use a NaN/inf loss or gradient;
- logs the loss terms, averaged over processes, to ``<run>/train_log.jsonl`` every ``log_every`` iterations and at
  epoch ends (rank 0 only);
- saves a checkpoint every ``checkpoint_every`` iterations and at every epoch end, keeping the newest
  ``keep_checkpoints`` (rank 0 only), and with ``resume=True`` continues from the newest readable one, mid-epoch
  included, to the same weights an uninterrupted run reaches.

The learning rate is a function of the iteration (``lr_schedule(iteration, iterations_per_epoch, total_iterations)
-> base lr``, times each parameter group's ``lr_mult``), so resuming needs no scheduler state.

Iterations are optimiser steps. With accumulation an epoch has ``images // (batch_size x K x processes)`` of them,
and the iteration counters (``log_every``, ``checkpoint_every``, the learning-rate schedule, checkpoints) count
those steps: K micro-batches of b images step like one batch of K x b images. Checkpoints are only written between
optimiser steps, so a run killed mid-accumulation resumes at the first micro-batch of the step it was in (its
partial gradients are recomputed, from the same images); resuming with another K (or batch size, or number of
processes) is refused.

Host synchronisations: the step itself needs none (view boxes stay on the host, see ``host_keys``); with
``check_finite`` one small flag (loss terms and gradient norms, all-reduced over processes) is read per optimiser
step, just before it, which keeps a NaN out of every update; loss terms reach the host every ``log_every``
iterations, for the log.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm import tqdm

from l2g import atomic, faults
from l2g.engine import distributed
from l2g.engine.determinism import deterministic_algorithms, seed_process
from l2g.engine.guards import TrainingInterrupted, format_losses, gradients_nonfinite, nonfinite_error, nonfinite_report
from l2g.engine.loader import EpochSampler, batch_to_device, build_loader, resolve_workers, worker_seed
from l2g.engine.micro_batch import choose_micro_batch, measure_per_image, split_batch
from l2g.engine.precision import compile_choice, compile_errors_explained, resolve_precision
from l2g.engine.results import TrainResult, run_metrics
from l2g.engine.resume import load_resume_state, open_log, save_state
from l2g.engine.run_paths import CHECKPOINT_DIR, LOG_FILE, METRICS_FILE
from l2g.engine.schedule import StageClock, length_line, training_length
from l2g.optim import set_learning_rate

StepFn = Callable[[nn.Module, dict], dict[str, torch.Tensor]]


@dataclass
class LoopSettings:
    epochs: int
    batch_size: int  # per process: the global batch is batch_size x number of processes
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 0  # iterations between checkpoints; 0: epoch ends only
    keep_checkpoints: int = 2
    amp: bool | str = "cuda"  # as Config.amp: float32 on CPUs unless asked (l2g.engine.precision.amp_choice)
    amp_warmup_epochs: float = 0.0  # epochs in float32 before autocast starts (Config.amp_warmup_epochs)
    channels_last: bool | str = "auto"
    compile: bool | str = "auto"  # torch.compile of the step (l2g.engine.precision.compile_choice)
    workers: int = -1  # -1: automatic (see l2g.engine.loader.resolve_workers)
    pin_memory: bool | str = "auto"
    persistent_workers: bool | str = "auto"
    deterministic: bool = False
    check_finite: bool = True
    find_unused_parameters: bool = False
    progress: bool = True
    description: str = "train"
    accumulate_steps: int = 1  # micro-batches of batch_size per optimiser step
    # Images per forward/backward pass within a loaded batch (runtime.micro_batch, l2g.engine.micro_batch):
    # None = the whole batch (stages whose loss is not a mean of per-image terms), "auto" or a divisor.
    micro_batch: int | str | None = None
    steps: int = 0  # > 0: the run's length in optimiser steps, not epochs (l2g.engine.schedule)
    min_steps: int = 0  # epochs raised to at least this many optimiser steps

    @classmethod
    def from_config(cls, config: Any, progress: bool = True, description: str = "train", epochs: int | None = None,
                    batch_size: int | None = None, accumulate_steps: int | None = None) -> LoopSettings:
        """Settings from an :class:`l2g.config.Config` (optim, seed, log_every, amp, data.workers, runtime);
        ``epochs`` / ``batch_size`` replace optim's for a stage with its own (the segmentation stage's seg.*),
        and such a stage accumulates only with its own ``accumulate_steps`` (else optim.accumulate_steps) and
        runs its whole batch in one pass (``runtime.micro_batch`` is the classification stage's)."""
        rt = config.runtime
        if accumulate_steps is None:
            accumulate_steps = config.optim.accumulate_steps if batch_size is None else 1
        return cls(
            epochs=config.optim.epochs if epochs is None else epochs, accumulate_steps=accumulate_steps,
            batch_size=config.optim.batch_size if batch_size is None else batch_size, seed=config.seed,
            log_every=config.log_every, checkpoint_every=rt.checkpoint_every, keep_checkpoints=rt.keep_checkpoints,
            amp=config.amp, amp_warmup_epochs=config.amp_warmup_epochs, channels_last=rt.channels_last,
            compile=rt.compile, workers=config.data.workers, pin_memory=rt.pin_memory,
            persistent_workers=rt.persistent_workers, deterministic=rt.deterministic, check_finite=rt.check_finite,
            find_unused_parameters=rt.find_unused_parameters, progress=progress, description=description,
            micro_batch=rt.micro_batch if batch_size is None else None,
            steps=config.optim.steps if epochs is None else 0,  # a stage with its own epochs: those
            min_steps=config.optim.min_steps if epochs is None else 0,
        )


class _StepModule(nn.Module):
    """The model with the step function as its forward, so DistributedDataParallel sees the step."""

    def __init__(self, model: nn.Module, step: StepFn) -> None:
        super().__init__()
        self.model = model
        self.step = step

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.step(self.model, batch)


class Trainer:
    def __init__(self, run_dir: str | Path, config: dict[str, Any], model: nn.Module,
                 optimizer: torch.optim.Optimizer, dataset: Dataset, step: StepFn, settings: LoopSettings,
                 lr_schedule: Callable[[int, int, int], float] | None = None,
                 batch_ids: Callable[[dict], list[str]] | None = None, resume: bool = False,
                 on_epoch_start: Callable[[int], None] | None = None, collate_fn=None,
                 on_log: Callable[[dict], None] | None = None,
                 on_epoch_end: Callable[[int], None] | None = None, host_keys: tuple[str, ...] = (),
                 shown: Callable[[dict[str, float]], dict[str, float]] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.config = config
        self.model = model
        self.optimizer = optimizer
        self.dataset = dataset
        self.step = step
        self.settings = settings
        self.lr_schedule = lr_schedule
        self.batch_ids = batch_ids or (lambda batch: [])
        self.resume = resume
        self.on_epoch_start = on_epoch_start
        self.on_log = on_log  # rank 0 only, with each record written to the log
        self.on_epoch_end = on_epoch_end  # every rank, after the epoch's last step and checkpoint
        self.collate_fn = collate_fn
        self.shown = shown or (lambda terms: terms)  # the logged terms the progress bar shows (default: all)
        # Batch entries that stay on the host (pinned with CUDA): e.g. the view boxes, whose values become
        # Python slice bounds, which would otherwise cost a device-to-host copy and a sync every step.
        self.host_keys = frozenset(host_keys)
        self.ctx = distributed.current()
        self.checkpoints = self.run_dir / CHECKPOINT_DIR
        self.last_saved: Path | None = None

    # --- setup ---------------------------------------------------------------------------------------

    def _load_resume_state(self, iterations_per_epoch: int, precision) -> tuple[int, float, Path | None]:
        """Continue from the newest readable checkpoint (:func:`l2g.engine.resume.load_resume_state`)."""
        start, seconds, path = load_resume_state(self.checkpoints, self.model, self.optimizer, precision,
                                                 self.settings, iterations_per_epoch)
        if path is not None:
            self.last_saved = path
        return start, seconds, path

    def _open_log(self, start_iteration: int):
        return open_log(self.run_dir / LOG_FILE, start_iteration)

    # --- the loop ------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        with deterministic_algorithms(self.settings.deterministic, self.ctx.device):
            return self._fit()

    def _fit(self) -> TrainResult:
        ctx, s = self.ctx, self.settings
        device = ctx.device
        precision = resolve_precision(s.amp, s.channels_last, device, training=True)
        sampler = EpochSampler(self.dataset, ctx.world_size, ctx.rank, s.seed)
        workers = resolve_workers(s.workers, device, ctx.local_world_size)
        loader, loader_generator = build_loader(self.dataset, s.batch_size, sampler, workers, device, s.pin_memory,
                                                s.persistent_workers, self.collate_fn)
        if s.accumulate_steps < 1:
            raise ValueError(f"accumulate_steps must be >= 1, got {s.accumulate_steps}")
        step_images = s.batch_size * s.accumulate_steps  # per process and optimiser step
        per_epoch = sampler.num_samples // step_images
        if per_epoch == 0:
            raise ValueError(f"{len(self.dataset)} training images give no batch of {s.batch_size} x "
                             f"{s.accumulate_steps} accumulated per process x {ctx.world_size} process(es)")
        total, epochs, how = training_length(s.epochs, per_epoch, s.steps, s.min_steps)
        precision.warm_up(round(s.amp_warmup_epochs * per_epoch), total, f"amp_warmup_epochs {s.amp_warmup_epochs:g}")

        start, seconds_before, resumed_from = 0, 0.0, None
        if self.resume:
            start, seconds_before, resumed_from = self._load_resume_state(per_epoch, precision)
        elif ctx.rank > 0:
            seed_process(s.seed, ctx.rank)
        if start > total:
            raise ValueError(f"{resumed_from}: {start} iterations done, more than the {total} configured "
                             "(optim.epochs or optim.steps decreased?)")

        precision.prepare(self.model)
        compiled = compile_choice(s.compile, device)
        if s.progress and ctx.is_main and precision.reason:
            tqdm.write(f"{s.description}: {precision.describe_layout()}{', torch.compile' if compiled else ''} "
                       f"({precision.reason})", file=sys.stderr)
        model = self.model
        if ctx.distributed and distributed.has_batchnorm(model):
            model = self.model = distributed.convert_sync_batchnorm(model, device)
        runner: nn.Module = _StepModule(model, self.step)
        if ctx.distributed:
            runner = DistributedDataParallel(runner, device_ids=[device.index] if device.type == "cuda" else None,
                                             find_unused_parameters=s.find_unused_parameters)
        if compiled:
            runner = torch.compile(runner)  # the whole step: forward, losses; backward through AOTAutograd
        parameters = [p for p in model.parameters() if p.requires_grad]
        self.micro_batch = None  # chosen on the first loaded batch (_micro_batch)

        if s.progress and ctx.is_main:
            tqdm.write(length_line(s.description, total, per_epoch, step_images * ctx.world_size, how), file=sys.stderr)
        clock = StageClock(total, start)
        log = self._open_log(start)
        bar = tqdm(total=total, initial=start, desc=s.description, disable=not (s.progress and ctx.is_main),
                   leave=False)
        started = time.time()
        iteration = start
        try:
            first_epoch, first_step = divmod(start, per_epoch)
            for epoch in range(first_epoch, epochs):
                step0 = first_step if epoch == first_epoch else 0
                sampler.set_epoch(epoch, skip=step0 * step_images)
                if hasattr(self.dataset, "set_epoch"):
                    self.dataset.set_epoch(epoch)
                loader_generator.manual_seed(worker_seed(s.seed, epoch, ctx.rank))
                model.train()
                if self.on_epoch_start is not None:
                    self.on_epoch_start(epoch)
                micro_batches = iter(loader)
                for step in range(step0, min(per_epoch, total - epoch * per_epoch)):
                    iteration = epoch * per_epoch + step
                    names, values, lr = self._train_step(runner, micro_batches, iteration, epoch, step, per_epoch,
                                                         total, precision, parameters)
                    faults.reached("step", f"iteration {iteration}")  # the crash tests' hold point (no-op)
                    if iteration % s.log_every == 0 or step == per_epoch - 1 or iteration == total - 1:
                        mean = dict(zip(names, distributed.all_reduce_mean(values).tolist(), strict=True))
                        if log is not None:
                            record = {"epoch": epoch, "iteration": iteration, "lr": lr, **mean}
                            log.write(json.dumps(record) + "\n")
                            log.flush()
                            if self.on_log is not None:
                                self.on_log(record)
                        bar.set_postfix_str(format_losses(self.shown(mean)))
                    bar.update(1)
                    done = iteration + 1
                    line = clock.tick(done, s.description)
                    if line and s.progress and ctx.is_main:
                        tqdm.write(line, file=sys.stderr)
                    ends = step == per_epoch - 1 or done == total
                    if ends or (s.checkpoint_every and done % s.checkpoint_every == 0):
                        self._save(done, per_epoch, precision, seconds_before + time.time() - started)
                if self.on_epoch_end is not None:
                    self.on_epoch_end(epoch)
        except KeyboardInterrupt:  # the command line says where it stopped and how to go on, no traceback
            raise TrainingInterrupted(iteration, self.last_saved) from None
        finally:
            bar.close()
            if log is not None:
                log.close()
        distributed.barrier()
        return TrainResult(total, start, seconds_before + time.time() - started, self.last_saved, resumed_from,
                           precision.describe_layout(), precision.reason)

    def finish(self, result: TrainResult, final: Path, final_payload: Callable[[], dict[str, Any]], images: int,
               **metrics: Any) -> Path:
        """After :meth:`fit`: rank 0 writes ``<run>/train_metrics.json`` (minutes, iterations, images, device,
        processes, global batch, precision, then ``metrics``) and then ``final`` (``final_payload()``, e.g.
        the inference weights) last, because its existence means the run is complete. Every rank waits."""
        if self.ctx.is_main:
            atomic.write_json(self.run_dir / METRICS_FILE, run_metrics(
                result.seconds, result.iterations, images, self.ctx.device, self.ctx.world_size, self.settings,
                result.precision, result.precision_reason, **metrics))
            atomic.save_torch(final, final_payload())
        distributed.barrier()
        return final

    def _train_step(self, runner, micro_batches, iteration, epoch, step, per_epoch, total, precision, parameters):
        """One optimiser step from the next ``accumulate_steps`` micro-batches of ``micro_batches``; returns
        (term names, their mean over the micro-batches as a device tensor, base lr)."""
        s, device = self.settings, self.ctx.device
        if self.lr_schedule is not None:
            set_learning_rate(self.optimizer, self.lr_schedule(iteration, per_epoch, total))
        group = self.optimizer.param_groups[0]
        lr = group["lr"] / group.get("lr_mult", 1.0)
        accumulate = s.accumulate_steps
        self.optimizer.zero_grad(set_to_none=True)
        names, total_values, micro = None, None, []
        loss_bad = torch.zeros((), dtype=torch.bool, device=device)
        for k in range(accumulate):
            host_batch = next(micro_batches)
            if self.micro_batch is None:
                self.micro_batch = self._micro_batch(host_batch, precision)
            parts = split_batch(host_batch, self.micro_batch)  # passes of runtime.micro_batch images
            batch_values = None
            for j, (part, share) in enumerate(parts):
                batch = batch_to_device(part, device, precision.channels_last, self.host_keys)
                last = k == accumulate - 1 and j == len(parts) - 1
                # DDP all-reduces gradients in backward: only once per optimiser step, on the last pass.
                sync = contextlib.nullcontext() if last or not hasattr(runner, "no_sync") else runner.no_sync()
                with sync:
                    losses = self._forward(runner, batch, precision, iteration)
                    values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
                    if s.check_finite:
                        loss_bad |= ~torch.isfinite(values).all()
                    loss = losses["loss"] * share if share != 1.0 else losses["loss"]  # the part's share
                    loss = loss / accumulate if accumulate > 1 else loss
                    (precision.scaler.scale(loss) if precision.scaler is not None else loss).backward()
                names = names or list(losses)
                values = values * share if share != 1.0 else values
                batch_values = values if batch_values is None else batch_values + values
            total_values = batch_values if total_values is None else total_values + batch_values
            micro.append((host_batch, batch_values))
        values = total_values / accumulate if accumulate > 1 else total_values
        if s.check_finite:
            grad_bad = (torch.zeros((), dtype=torch.bool, device=device) if precision.scaler is not None
                        else gradients_nonfinite(parameters, device))  # the scaler skips inf gradients itself
            flags = distributed.all_reduce_max(torch.stack([loss_bad, grad_bad]).float())
            loss_flag, grad_flag = flags.tolist()  # the step's one host synchronisation
            if loss_flag or grad_flag:
                self._stop(iteration, epoch, step, per_epoch, names, micro, gradient=not loss_flag)
        if precision.scaler is not None:
            precision.scaler.step(self.optimizer)  # skips the step (and lowers the scale) on inf gradients
            precision.scaler.update()
        else:
            self.optimizer.step()
        return names, values, lr

    def _micro_batch(self, host_batch: dict, precision) -> int:
        """Images per forward/backward pass (l2g.engine.micro_batch), said with the reason; "auto" measures the
        first image of ``host_batch``, the run's first batch (no extra read of the dataset)."""
        s, model = self.settings, self.model

        def measure() -> int:
            one = batch_to_device(split_batch(host_batch, 1)[0][0], self.ctx.device, precision.channels_last,
                                  self.host_keys)
            with precision.autocast(0):
                return measure_per_image(lambda batch: self.step(model, batch), model, one, self.ctx.device)

        size, why = choose_micro_batch(s.micro_batch, s.batch_size, self.ctx.device, model, measure)
        if s.progress and self.ctx.is_main and why:
            tqdm.write(f"{s.description}: {size} of {s.batch_size} images per forward/backward pass ({why})",
                       file=sys.stderr)
        return size

    def _forward(self, runner, batch, precision, iteration) -> dict[str, torch.Tensor]:
        try:
            with precision.autocast(iteration), compile_errors_explained():
                losses = runner(batch)
        except RuntimeError as error:
            if "find_unused_parameters" not in str(error):
                raise
            raise ValueError(  # DDP's own message names its constructor, not our switch
                "some trained parameters get no gradient from the loss (a custom method or network with a "
                "branch that the loss does not reach); under torchrun add --set "
                "runtime.find_unused_parameters=true") from error
        if "loss" not in losses:
            raise ValueError(f"the step function returned {sorted(losses)}: it must return a 'loss' entry")
        return losses

    def _stop(self, iteration, epoch, step, per_epoch, names, micro, gradient) -> None:
        """Raise NonFiniteError on every rank, naming the iteration, the terms and the images of every rank."""
        mine = nonfinite_report(names, micro, self.batch_ids)
        reports = distributed.all_gather_object(mine)
        where = f"iteration {iteration} (epoch {epoch + 1}, step {step + 1} of {per_epoch})"
        raise nonfinite_error(where, reports, mine, gradient, self.model, self.last_saved)

    def _save(self, done: int, per_epoch: int, precision, seconds: float) -> None:
        saved = save_state(self.checkpoints, done, per_epoch, self.model, self.optimizer, precision, self.settings,
                           self.config, seconds)
        if saved is not None:
            self.last_saved = saved

