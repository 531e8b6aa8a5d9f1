"""A training run folder: never overwritten by accident, resumed only with a compatible config.

Rules (checked by rank 0 before anything is written):

- A new run into a folder that holds a run (``config.yaml``) is refused unless ``--resume`` (continue
  it) or ``--overwrite`` (delete it and start over) is given. ``--overwrite`` deletes only folders that
  are runs, never an arbitrary folder.
- ``--resume`` continues the run in the folder, and is an error when the folder holds none (a mistyped
  path must not start a new run silently); ``--resume auto`` continues a run when there is one and starts
  one when there is none (for schedulers that rerun the same command).
- Under torchrun, a restarted worker group (``TORCHELASTIC_RESTART_COUNT`` > 0) continues the run that the
  same torchrun job started or continued (its ``TORCHELASTIC_RUN_ID`` is kept in :data:`JOB_FILE`),
  whatever the flags say: its first attempt already applied them. Another job's run follows the flags.
- Resuming compares the config with the run's ``config.yaml``: a difference in a key that changes
  what is trained is refused; differences in :data:`RESUME_SAFE_KEYS` (how long, where the data is, how
  fast, how often to save and log, and the later stages' settings) are accepted and reported;
  :data:`SEG_RESUME_SAFE_KEYS` are those of the segmentation stage.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from l2g import atomic
from l2g.config import ConfigError, flatten
from l2g.config.stage_keys import resume_safe_keys
from l2g.engine import elastic
from l2g.engine.run_paths import CONFIG_FILE

# The keys that a resumed `l2g train` and `l2g seg train` may change, derived from what each stage declares
# (l2g.config.stage_keys.STAGE_KEYS, where the reasons are).
RESUME_SAFE_KEYS: tuple[str, ...] = resume_safe_keys("train")
SEG_RESUME_SAFE_KEYS: tuple[str, ...] = resume_safe_keys("seg_train")
TRAIN_LENGTH = ("optim.epochs", "optim.steps", "optim.min_steps")  # a finished run continues when one grew

JOB_FILE = "torchrun_job.json"  # the torchrun job that last started or continued the run
RESUME_AUTO = "auto"
ResumeMode = bool | str  # False: a new run; True: continue a run (there must be one); "auto": either


def check_resume_mode(resume: ResumeMode) -> ResumeMode:
    if resume not in (False, True, RESUME_AUTO):
        raise ValueError(f"resume={resume!r}: give False, True or {RESUME_AUTO!r}")
    return resume


def restarted_job(run_dir: Path) -> bool:
    """True in a worker group that torchrun restarted, when ``run_dir``'s run was started or continued by
    this same torchrun job (so it is this job's own unfinished work)."""
    if elastic.restart_count() == 0 or elastic.job_id() is None:
        return False
    try:
        return json.loads((run_dir / JOB_FILE).read_text()).get("job") == elastic.job_id()
    except (OSError, ValueError, AttributeError):
        return False


def _record_job(run_dir: Path) -> None:
    if elastic.job_id() is not None:
        atomic.write_json(run_dir / JOB_FILE, {"job": elastic.job_id(), "restart": elastic.restart_count()})


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every key whose value differs (missing keys count as None)."""
    a, b = flatten(old), flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def is_safe(key: str, safe_keys: tuple[str, ...] = RESUME_SAFE_KEYS) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in safe_keys)


def check_resume_config(run_dir: Path, old: dict[str, Any], new: dict[str, Any],
                        safe_keys: tuple[str, ...] = RESUME_SAFE_KEYS) -> list[tuple[str, Any, Any]]:
    """The changes between a run's config and the resuming one; ConfigError if any is unsafe."""
    changes = config_changes(old, new)
    unsafe = [c for c in changes if not is_safe(c[0], safe_keys)]
    if unsafe:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in unsafe)
        raise ConfigError(
            f"{run_dir / CONFIG_FILE}: cannot resume with a different config ({listed}). Keys that may "
            f"change on resume: {', '.join(safe_keys)}. Start a new run (another --run, or --overwrite)."
        )
    return changes


def prepare_run(run_dir: str | Path, config: dict[str, Any], resume: ResumeMode, overwrite: bool,
                finished_marker: str | Path, load_run_config, save_run_config,
                safe_keys: tuple[str, ...] = RESUME_SAFE_KEYS,
                epochs_key: str | tuple[str, ...] = TRAIN_LENGTH) -> str:
    """Make ``run_dir`` ready and say what to do: ``"fresh"``, ``"resume"`` or ``"finished"``.

    ``resume``: False (a new run), True (continue the run, FileNotFoundError when there is none) or
    ``"auto"`` (continue when there is a run, else start one); see the module text for torchrun restarts.

    ``finished_marker`` is the file a finished run has (its final checkpoint); ``load_run_config(path)``
    reads a run's config as a plain dict and ``save_run_config(path)`` writes the current one.
    Resuming a finished run continues it only when ``epochs_key`` (the stage's length, e.g. ``optim.epochs``,
    ``optim.steps`` or ``optim.min_steps``, or ``seg.epochs``; a key or a tuple of keys) grew.
    """
    run_dir, finished_marker = Path(run_dir), Path(finished_marker)
    config_path = run_dir / CONFIG_FILE
    resume = check_resume_mode(resume)
    if overwrite and resume:
        raise ValueError("--resume and --overwrite contradict each other: give one")
    if restarted_job(run_dir):
        # torchrun restarted the worker group: continue this job's run (never delete it again)
        print(f"torchrun restart {elastic.restart_count()}: continuing {run_dir}", file=sys.stderr)
        resume, overwrite = True, False
    if resume is True and not config_path.exists():
        what = "does not exist" if not run_dir.exists() else f"holds no run to resume (no {CONFIG_FILE})"
        raise FileNotFoundError(f"{run_dir}: {what}; check the path, or give --resume {RESUME_AUTO} to "
                                "continue a run when there is one and start one when there is none")
    if config_path.exists():
        if overwrite:
            shutil.rmtree(run_dir)
        elif not resume:
            what = f"a finished run ({finished_marker} exists)" if finished_marker.exists() else \
                f"an unfinished run ({config_path} exists)"
            raise FileExistsError(f"{run_dir}: holds {what}; add --resume to continue it, --overwrite to "
                                  "delete it and start over, or choose another --run")
        else:
            old = load_run_config(config_path)
            changes = check_resume_config(run_dir, old, config, safe_keys)
            for key, before, after in changes:
                print(f"resuming {run_dir} with {key}: {before!r} -> {after!r}", file=sys.stderr)
            keys = (epochs_key,) if isinstance(epochs_key, str) else epochs_key
            grew = any(flatten(config).get(key, 0) > flatten(old).get(key, 0) for key in keys)
            if finished_marker.exists():
                if not grew:
                    return "finished"
                finished_marker.unlink()  # no longer finished: a kill before the new end must resume
            save_run_config(config_path)
            _record_job(run_dir)
            return "resume"
    elif overwrite and run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"{run_dir}: --overwrite refused: the folder is not empty and is not an l2g run "
                         f"(no {CONFIG_FILE}); delete it yourself or choose another --run")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_run_config(config_path)
    _record_job(run_dir)
    return "fresh"


def start_run(config: Any, run_dir: str | Path, resume: ResumeMode, overwrite: bool, finished_marker: str | Path,
              safe_keys: tuple[str, ...] = RESUME_SAFE_KEYS,
              epochs_key: str | tuple[str, ...] = TRAIN_LENGTH) -> str:
    """:func:`prepare_run` for an :class:`l2g.config.Config`, decided by rank 0 for every process."""
    from l2g.config import load_config, save_config, to_dict
    from l2g.engine import distributed

    return distributed.main_first(lambda: prepare_run(
        run_dir, to_dict(config), resume, overwrite, finished_marker,
        load_run_config=lambda path: to_dict(load_config(path)),
        save_run_config=lambda path: save_config(config, path), safe_keys=safe_keys, epochs_key=epochs_key))
