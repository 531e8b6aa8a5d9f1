"""Stage markers: when is a folder of outputs complete, and were its files made from the same inputs?

A stage that writes many files into a folder (attention maps, pseudo masks) writes, in that folder:

- ``.l2g-started.json`` before its first file: the stage name and its inputs (checkpoint digest,
  split, settings). A rerun with the same inputs keeps the files already there (each was written
  atomically, so each is whole); a rerun with other inputs rewrites them all.
- ``l2g-done.json`` after its last file: the same inputs plus every file it wrote with its size.
  The stage is done only when this marker exists, matches the inputs and every listed file is there
  with its size; then a rerun does nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from l2g.engine import atomic

STARTED = ".l2g-started.json"
DONE = "l2g-done.json"


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (identifies the checkpoint or the maps a stage used)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read(path: Path) -> dict[str, Any] | None:
    try:
        payload = json.loads(path.read_text())
    except (FileNotFoundError, ValueError, OSError):
        return None
    return payload if isinstance(payload, dict) else None


def _same(record: dict[str, Any] | None, stage: str, inputs: dict[str, Any]) -> bool:
    # Round-trip through JSON so tuples and lists compare equal.
    return record is not None and record.get("stage") == stage and record.get("inputs") == json.loads(
        json.dumps(inputs))


def started_with(folder: str | Path, stage: str, inputs: dict[str, Any]) -> bool:
    """True when the files in ``folder`` were started by ``stage`` with these inputs."""
    return _same(_read(Path(folder) / STARTED), stage, inputs)


def mark_started(folder: str | Path, stage: str, inputs: dict[str, Any]) -> None:
    """Record the inputs before writing (and invalidate an older done marker)."""
    folder = Path(folder)
    (folder / DONE).unlink(missing_ok=True)
    atomic.write_json(folder / STARTED, {"stage": stage, "inputs": inputs})


def mark_done(folder: str | Path, stage: str, inputs: dict[str, Any], files: Iterable[str]) -> Path:
    """Write the completion marker listing ``files`` (names relative to ``folder``) and their sizes.
    A listed file that is missing is an error: the marker never claims what is not there."""
    folder = Path(folder)
    sizes = {}
    for name in sorted(files):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: expected output missing; {stage} is not complete")
        sizes[name] = path.stat().st_size
    atomic.write_json(folder / DONE, {"stage": stage, "inputs": inputs, "files": sizes})
    return folder / DONE


def is_done(folder: str | Path, stage: str, inputs: dict[str, Any], files: Iterable[str]) -> bool:
    """True when ``folder``'s completion marker matches the inputs and lists ``files``, all present
    with their recorded sizes."""
    folder = Path(folder)
    record = _read(folder / DONE)
    if not _same(record, stage, inputs):
        return False
    listed = record.get("files")
    if not isinstance(listed, dict):
        return False
    for name in files:
        path = folder / name
        if name not in listed or not path.is_file() or path.stat().st_size != listed[name]:
            return False
    return True


def begin(folder: str | Path, stage: str, inputs: dict[str, Any], files: Iterable[str]) -> str:
    """Before a stage writes into ``folder`` (one process): ``"done"`` (nothing to do), ``"continue"``
    (keep the whole files of an interrupted run with the same inputs) or ``"fresh"`` (write every file).
    Temporary files of a crashed writer are removed."""
    folder = Path(folder)
    if is_done(folder, stage, inputs, files):
        return "done"
    folder.mkdir(parents=True, exist_ok=True)
    atomic.remove_partials(folder)
    if started_with(folder, stage, inputs):
        return "continue"
    mark_started(folder, stage, inputs)
    return "fresh"


def done_digest(folder: str | Path) -> str | None:
    """SHA-256 of a folder's completion marker (what a downstream stage records as its input)."""
    path = Path(folder) / DONE
    return file_digest(path) if path.is_file() else None
