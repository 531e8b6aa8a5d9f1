"""Stage markers: when is a stage's output complete, and was it made from the same inputs?

A stage that writes many files into a folder (attention maps, pseudo masks) writes, in that folder:

- ``.l2g-started.json`` before its first file: the stage name and its inputs (checkpoint digest,
  split, settings). A rerun with the same inputs keeps the files already there (each was written
  atomically, so each is whole); a rerun with other inputs rewrites them all.
- ``l2g-done.json`` after its last file: the same inputs plus every file it wrote with its size.
  The stage is done only when this marker exists, matches the inputs and every listed file is there
  with its size; then a rerun does nothing.

Several stages that share one folder (``l2g run``: every stage writes somewhere under the pipeline
folder) keep their markers in a folder of their own instead, ``marker_dir``, as
``<marker_dir>/<stage>.started.json`` and ``<marker_dir>/<stage>.done.json``; the files they list are
still named relative to the output folder. Every function takes ``marker_dir`` for that case.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2g import atomic
from l2g.engine.run_folder import config_changes

STARTED = ".l2g-started.json"
DONE = "l2g-done.json"


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (identifies the checkpoint or the maps a stage used)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def marker_paths(folder: str | Path, stage: str, marker_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(started marker, done marker) of ``stage``: in ``folder`` itself, or in ``marker_dir`` by stage name."""
    if marker_dir is None:
        return Path(folder) / STARTED, Path(folder) / DONE
    return Path(marker_dir) / f"{stage}.started.json", Path(marker_dir) / f"{stage}.done.json"


def read_marker(path: str | Path) -> dict[str, Any] | None:
    """A marker's record, or None when it is missing or unreadable."""
    try:
        payload = json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError, OSError):
        return None
    return payload if isinstance(payload, dict) else None


def _plain(value: Any) -> Any:
    # Round-trip through JSON so tuples and lists compare equal.
    return json.loads(json.dumps(value))


def changed_inputs(old: Any, new: dict[str, Any]) -> list[str]:
    """Dotted names of the inputs that differ between a marker's record and ``new`` (all of them when
    the record has none)."""
    old = old if isinstance(old, dict) else {}
    return [key for key, _, _ in config_changes(_plain(old), _plain(new))]


def _same(record: dict[str, Any] | None, stage: str, inputs: dict[str, Any]) -> bool:
    return record is not None and record.get("stage") == stage and record.get("inputs") == _plain(inputs)


def started_with(folder: str | Path, stage: str, inputs: dict[str, Any], marker_dir: str | Path | None = None) -> bool:
    """True when the files in ``folder`` were started by ``stage`` with these inputs."""
    return _same(read_marker(marker_paths(folder, stage, marker_dir)[0]), stage, inputs)


def mark_started(folder: str | Path, stage: str, inputs: dict[str, Any], marker_dir: str | Path | None = None) -> None:
    """Record the inputs before writing (and invalidate an older done marker)."""
    started, done = marker_paths(folder, stage, marker_dir)
    done.unlink(missing_ok=True)
    atomic.write_json(started, {"stage": stage, "inputs": inputs})


def files_under(folder: str | Path, paths: Iterable[str | Path]) -> list[str]:
    """Names relative to ``folder`` of the files ``paths`` hold: a file itself, every file below a folder
    (recursively; temporaries of a crashed writer excluded); missing paths give nothing."""
    folder, names = Path(folder), []
    for path in map(Path, paths):
        if path.is_file():
            names.append(str(path.relative_to(folder)))
        elif path.is_dir():
            names += [str(f.relative_to(folder)) for f in sorted(path.rglob("*"))
                      if f.is_file() and not f.name.endswith(atomic.PARTIAL_SUFFIX)]
    return names


def mark_done(folder: str | Path, stage: str, inputs: dict[str, Any], files: Iterable[str],
              marker_dir: str | Path | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the completion marker listing ``files`` (names relative to ``folder``) and their sizes, plus
    the ``extra`` fields. A listed file that is missing is an error: the marker never claims what is not
    there."""
    folder = Path(folder)
    sizes = {}
    for name in sorted(files):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: expected output missing; {stage} is not complete")
        sizes[name] = path.stat().st_size
    done = marker_paths(folder, stage, marker_dir)[1]
    atomic.write_json(done, {**(extra or {}), "stage": stage, "inputs": inputs, "files": sizes})
    return done


@dataclass
class Status:
    """Whether a stage is done and, when not, why: ``changed`` names the inputs that differ."""

    done: bool
    reason: str = ""
    changed: list[str] = field(default_factory=list)
    record: dict[str, Any] | None = None  # the done marker's record, when there is one


def status(folder: str | Path, stage: str, inputs: dict[str, Any], files: Iterable[str] | None = None,
           marker_dir: str | Path | None = None) -> Status:
    """Is ``stage`` done in ``folder`` with these inputs? Done means: its completion marker matches the
    inputs and lists ``files`` (default: whatever it lists), all present with their recorded sizes."""
    folder = Path(folder)
    record = read_marker(marker_paths(folder, stage, marker_dir)[1])
    if record is None or record.get("stage") != stage:
        return Status(False, "not done yet")
    if not _same(record, stage, inputs):
        changed = changed_inputs(record.get("inputs"), inputs)
        return Status(False, f"inputs changed ({', '.join(changed)})", changed, record)
    listed = record.get("files")
    if not isinstance(listed, dict):
        return Status(False, "not done yet", record=record)
    for name in listed if files is None else files:
        path = folder / name
        if name not in listed or not path.is_file() or path.stat().st_size != listed[name]:
            return Status(False, f"outputs missing or incomplete ({name})", record=record)
    return Status(True, record=record)


def is_done(folder: str | Path, stage: str, inputs: dict[str, Any], files: Iterable[str] | None = None,
            marker_dir: str | Path | None = None) -> bool:
    """True when ``folder``'s completion marker matches the inputs and lists ``files`` (default: whatever
    it lists), all present with their recorded sizes."""
    return status(folder, stage, inputs, files, marker_dir).done


def begin(folder: str | Path, stage: str, inputs: dict[str, Any], files: Iterable[str],
          marker_dir: str | Path | None = None) -> str:
    """Before a stage writes into ``folder`` (one process): ``"done"`` (nothing to do), ``"continue"``
    (keep the whole files of an interrupted run with the same inputs) or ``"fresh"`` (write every file).
    Temporary files of a crashed writer are removed."""
    folder = Path(folder)
    if is_done(folder, stage, inputs, files, marker_dir):
        return "done"
    folder.mkdir(parents=True, exist_ok=True)
    atomic.remove_partials(folder)
    if started_with(folder, stage, inputs, marker_dir):
        return "continue"
    mark_started(folder, stage, inputs, marker_dir)
    return "fresh"


def done_digest(folder: str | Path, stage: str = "", marker_dir: str | Path | None = None) -> str | None:
    """SHA-256 of a stage's completion marker (what a downstream stage records as its input)."""
    path = marker_paths(folder, stage, marker_dir)[1]
    return file_digest(path) if path.is_file() else None
