"""Train several L2G runs that differ only in their transfer in one run sharing their local network.

Why the result is each run's own: the local network of an L2G run learns from its classification loss on
the views alone (Eq. 4). The transfer's targets are detached, so the transfer loss (Eq. 6, or Eq. 7 with
saliency) trains the global network only. Two runs whose configs agree on everything except ``method.*``
(the transfer) and the later stages' keys (``cams``, ``eval``, ``seg``) therefore train the same local
network: the same initialisation (each run seeds before building its networks), the same batches and views
(drawn from per-image seeded streams; loading saliency draws nothing), the same updates. They differ only in
their global networks. One run that computes the local network's forward and backward once per batch, and
each global network's transfer from those targets, gives every member the weights its own run would give
(``tests/test_train_shared.py`` compares them), for the local network's share of one of the runs less. This
is how ``l2g demo`` and ``python -m benchmarks.seeds`` train L2G and L2G + shape when both are asked for.

The shared run is a run folder of its own (``<first member>+<other members>`` beside the members, with its
checkpoints and log, so a killed run resumes); when it ends, each member's folder is written as ``l2g train``
would write it: ``config.yaml``, ``train_log.jsonl`` (its own loss terms), ``train_metrics.json`` (the shared
run's minutes, marked ``shared_with``), a step checkpoint of its networks (``l2g transfer-fit`` reads it)
and ``checkpoints/final.pt`` last.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from l2g import atomic
from l2g.config import Config, save_config, to_dict
from l2g.data.classification import ClassificationDataset
from l2g.engine import checkpoint, distributed
from l2g.engine.guards import NonFiniteError, with_fix
from l2g.engine.results import run_metrics
from l2g.engine.run_folder import config_changes, is_safe, prepare_run
from l2g.engine.run_paths import RunFolder
from l2g.engine.trainer import LoopSettings, Trainer
from l2g.method.diagnostics import CONTRAST_ADVICE, ContrastMonitor, StuckMonitor, stuck_advice
from l2g.method.methods import L2GMethod, build_method, method_class
from l2g.models.base import set_activation_checkpointing
from l2g.optim import build_optimizer, learning_rate, pretrained_parameters
from l2g.report.provenance import git_commit
from l2g.stages.common import require_num_classes, seed_everything, set_threads, split_samples

# What members of one shared run may set differently: the transfer and what later stages do with the maps.
MAY_DIFFER = ("method.*", "cams.*", "eval.*", "seg.*")
SEPARATOR = "/"  # logged terms of the shared run: "<member>/<term>"


def sharing_problem(configs: Sequence[Config]) -> str | None:
    """Why these runs cannot train in one shared run, or None when they can."""
    if len(configs) < 2:
        return "fewer than two runs"
    for config in configs:
        if not method_class(config.method.name).transfers:
            return f"method {config.method.name!r} trains no global network from a local one"
        if config.model.shared_backbone:
            return "model.shared_backbone: the transfer's gradient reaches the local network's backbone"
        if config.runtime.tensorboard:
            return "runtime.tensorboard: a shared run writes no TensorBoard logs"
    first = to_dict(configs[0])
    for config in configs[1:]:
        differ = [key for key, _, _ in config_changes(first, to_dict(config)) if not is_safe(key, MAY_DIFFER)]
        if differ:
            return f"{config.method.name} and {configs[0].method.name} differ in {', '.join(differ)}"
    return None


def shared_groups(runs: Sequence[tuple[Config, Path]]) -> list[list[tuple[Config, Path]]]:
    """The runs that can train together, in groups of two or more (the order of ``runs`` kept): fresh
    runs only (no ``config.yaml`` in their folder: an earlier separate run is resumed separately)."""
    groups: list[list[tuple[Config, Path]]] = []
    for config, run_dir in runs:
        if RunFolder(run_dir).config.exists():
            continue
        for group in groups:
            if sharing_problem([group[0][0], config]) is None:
                group.append((config, run_dir))
                break
        else:
            groups.append([(config, run_dir)])
    return [group for group in groups if len(group) > 1]


def train_shared_groups(runs: Sequence[tuple[Config, Path]], progress: bool = True) -> None:
    """Train every group of unfinished ``runs`` that can share a run (:func:`shared_groups`) in its shared
    run; the rest are left for ``l2g train`` (their final checkpoint says which were trained here)."""
    pending = [(config, Path(run_dir)) for config, run_dir in runs if not RunFolder(run_dir).final.exists()]
    for group in shared_groups(pending):
        train_shared([config for config, _ in group], [run_dir for _, run_dir in group], progress=progress)


def shared_run_dir(run_dirs: Sequence[Path]) -> Path:
    """The shared run's folder: beside the first member, named after every member."""
    return run_dirs[0].parent / "+".join(d.name for d in run_dirs)


class SharedLocal(nn.Module):
    """Several L2G methods with one local network: per batch, its forward and classification loss once,
    then each member's transfer to its own global network. ``losses`` sums the local classification loss
    and each member's global part, so each parameter gets the gradient of its own run's loss."""

    def __init__(self, names: Sequence[str], members: Sequence[L2GMethod]) -> None:
        super().__init__()
        self.names = list(names)
        self.members = nn.ModuleList(members)
        for member in members[1:]:
            member.local = members[0].local  # registered in every member; parameters() lists it once

    def set_progress(self, iteration: int, iterations_per_epoch: int, total: int) -> None:
        for member in self.members:
            member.set_progress(iteration, iterations_per_epoch, total)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        local_step = self.members[0].local_forward(batch)
        loss = local_step[2]
        logged: dict[str, torch.Tensor] = {}
        for name, member in zip(self.names, self.members, strict=True):
            global_part, terms = member.losses_from(batch, local_step)
            loss = loss + global_part
            logged.update({f"{name}{SEPARATOR}{key}": value for key, value in terms.items()})
        return {"loss": loss, **logged}


def progress_terms(terms: dict[str, float]) -> dict[str, float]:
    """What the progress bar shows of a shared run's terms: the summed loss and each member's transfer loss."""
    return {key: value for key, value in terms.items() if key == "loss" or key.endswith(f"{SEPARATOR}loss_kt")}


def member_terms(record: dict, name: str) -> dict:
    """A member's part of a shared run's log record: the common keys and its own terms under their usual names."""
    prefix = f"{name}{SEPARATOR}"
    return {key.removeprefix(prefix): value for key, value in record.items()
            if SEPARATOR not in key or key.startswith(prefix)}


def member_records(log_path: Path, name: str) -> list[dict]:
    """A member's log records out of the shared run's log (:func:`member_terms` of each)."""
    return [member_terms(json.loads(line), name) for line in log_path.read_text().splitlines()]


def train_shared(configs: Sequence[Config], run_dirs: Sequence[str | Path], *, progress: bool = True) -> list[Path]:
    """Train the runs in one shared run (see the module text); returns each member's final checkpoint.

    ValueError when they cannot share (:func:`sharing_problem`), when a member's folder already holds a run,
    or under torchrun (one process only). A killed shared run resumes on the next call."""
    run_dirs = [Path(d) for d in run_dirs]
    problem = sharing_problem(configs)
    if problem is not None:
        raise ValueError(f"cannot train {', '.join(map(str, run_dirs))} in one shared run: {problem}")
    held = [d for d in run_dirs if d.exists() and any(d.iterdir()) and not _written_by(d, shared_run_dir(run_dirs))]
    if held:
        raise ValueError(f"{held[0]}: not empty (a run of its own?); resume it with 'l2g train --resume', or "
                         "give the shared run empty folders")
    for config in configs:
        require_num_classes(config)
    first = configs[0]
    ctx = distributed.setup(first.device)
    if ctx.distributed:
        raise ValueError("a shared run trains in one process: run the members with 'l2g train' under torchrun")
    set_threads(first)
    names = [config.method.name if config.method.name not in [c.method.name for c in configs[:i]]
             else f"{config.method.name}_{i}" for i, config in enumerate(configs)]
    members = []
    for config in configs:
        seed_everything(config.seed)  # each member's networks start as its own run's would
        members.append(build_method(config))
    model = SharedLocal(names, members)
    saliency = any(member.uses_saliency for member in members)
    samples = split_samples(first, first.data.train_split, need_saliency=saliency)
    folder = shared_run_dir(run_dirs)
    final = RunFolder(folder).final
    combined = {"members": {name: to_dict(config) for name, config in zip(names, configs, strict=True)}}
    plan = prepare_run(folder, combined, "auto", False, final, load_run_config=_read_json_yaml,
                       save_run_config=lambda path: atomic.write_text(path, json.dumps(combined, indent=1)),
                       safe_keys=(), epochs_key="")
    dataset = ClassificationDataset(samples, first, saliency, seed=first.seed)
    model.to(ctx.device)
    set_activation_checkpointing(model, first.runtime.activation_checkpointing)
    optimizer = build_optimizer(model, pretrained_parameters(model), first.optim)
    settings = LoopSettings.from_config(first, progress, f"train {' + '.join(names)}")
    monitors = {name: (StuckMonitor(advice=stuck_advice(c.method.transfer_loss, c.method.lam_warmup_epochs,
                                                         c.model.head_init)), ContrastMonitor(advice=CONTRAST_ADVICE))
                for name, c in zip(names, configs, strict=True)}

    def watch(record: dict) -> None:
        for name, (stuck, contrast) in monitors.items():
            mine = member_terms(record, name)
            contrast.update(mine)
            warning = stuck.update(mine)
            if warning is not None:
                tqdm.write(f"{name}: warning: {warning}", file=sys.stderr)

    def schedule(iteration: int, per_epoch: int, total: int) -> float:
        model.set_progress(iteration, per_epoch, total)
        return learning_rate(first.optim, iteration, total, per_epoch)

    trainer = Trainer(folder, combined, model, optimizer, dataset, step=lambda m, batch: m.losses(batch),
                      settings=settings, lr_schedule=schedule,
                      batch_ids=lambda batch: [samples[i].image_id for i in batch["index"].tolist()],
                      resume=plan == "resume", on_log=watch, host_keys=("boxes",), shown=progress_terms)
    if plan != "finished":
        try:
            result = trainer.fit()
        except NonFiniteError as error:
            raise with_fix(error, "optim.lr", first.optim.lr, first.amp) from None
        seconds, iterations, precision = result.seconds, result.iterations, (result.precision, result.precision_reason)
    else:
        state = checkpoint.load_checkpoint(checkpoint.list_checkpoints(RunFolder(folder).checkpoints)[-1])
        model.load_state_dict(state["model"])
        seconds, iterations, precision = state["seconds"], state["iteration"], ("", "")
    finals = []
    for name, config, member, run_dir in zip(names, configs, members, run_dirs, strict=True):
        stuck, contrast = monitors[name]
        failed = contrast.finish()  # judged on the last logged steps, so only now (stuck ones were told live)
        if failed:
            tqdm.write(f"{run_dir}: warning: {failed}", file=sys.stderr)
        if not RunFolder(run_dir).final.exists():  # written already when a kill came between two members
            _write_member(folder, name, config, member, run_dir, seconds, iterations, precision, len(samples),
                          settings, [w for w in (stuck.warning, failed) if w], [n for n in names if n != name])
        finals.append(RunFolder(run_dir).final)
    atomic.save_torch(final, {"members": names})  # the shared run is finished: its members are written
    return finals


def _written_by(run_dir: Path, shared: Path) -> bool:
    """Whether ``run_dir`` is a member folder that the shared run ``shared`` wrote."""
    try:
        return json.loads(RunFolder(run_dir).metrics.read_text()).get("shared_run") == str(shared)
    except (OSError, ValueError):
        return False


def _read_json_yaml(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _write_member(shared: Path, name: str, config: Config, member: L2GMethod, run_dir: Path, seconds: float,
                  iterations: int, precision: tuple[str, str], images: int, settings: LoopSettings,
                  warnings: list[str], others: list[str]) -> None:
    """One member's run folder, as ``l2g train`` leaves it. Written beside it and renamed into place, so
    the folder either holds the whole run or nothing (an empty folder is replaced)."""
    partial = run_dir.with_name(f".{run_dir.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    folder = RunFolder(partial)
    partial.mkdir(parents=True)
    save_config(config, folder.config)
    records = member_records(RunFolder(shared).train_log, name)
    atomic.write_text(folder.train_log, "".join(json.dumps(r) + "\n" for r in records))
    checkpoint.save_checkpoint(folder.checkpoints, iterations, {
        "model": member.state_dict(), "iteration": iterations, "config": to_dict(config), "seconds": seconds,
        "shared_run": str(shared)}, keep=1)
    atomic.write_json(folder.metrics, run_metrics(
        seconds, iterations, images, distributed.current().device, 1, settings, *precision, warnings=warnings,
        commit=git_commit(), shared_with=others, shared_run=str(shared)))  # minutes: the shared run's, for all
    atomic.save_torch(folder.final, {"model": member.inference_net().state_dict(), "method": config.method.name})
    if run_dir.exists():
        run_dir.rmdir()  # empty (checked before training), else this refuses
    partial.rename(run_dir)
