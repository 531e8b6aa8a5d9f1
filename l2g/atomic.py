"""The one way l2g writes a file: to a temporary name in the same folder, fsync, then ``os.replace``.

A reader (or a rerun after a crash) therefore sees either the previous file or the whole new one, never
a truncated one: ``os.replace`` is atomic within a filesystem, which is why the temporary file lives in
the target's own folder. A crash can leave a temporary file behind; its name starts with a dot and ends
with ``.partial`` (so globs such as ``*.npy`` never see it) and :func:`remove_partials` deletes them.

Each write fsyncs the file, then (by default) the folder, so that the rename itself survives a power
loss. A stage writing thousands of files into one folder (attention maps, pseudo masks) passes
``sync_folder=False`` and calls :func:`fsync_folder` once after its last file, before its done marker:
one fsync per file instead of two, and the same guarantee once the stage reports itself done.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from l2g import faults

PARTIAL_SUFFIX = ".partial"


def partial_name(path: Path) -> Path:
    """The temporary name next to ``path`` (hidden, unique per writer, ``.partial`` suffix)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", encoding: str | None = None,
                sync_folder: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on a clean exit it is flushed, fsynced and renamed to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was. Parent folders are
    created. ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8 unless ``encoding`` says otherwise).
    ``sync_folder=False`` leaves the folder's fsync (which makes the rename durable) to the caller's
    :func:`fsync_folder` after a batch of files.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(path)
    handle = open(tmp, mode, encoding=encoding or ("utf-8" if mode == "w" else None))  # noqa: SIM115
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        faults.reached("write", path)
        os.replace(tmp, path)
    except BaseException:
        handle.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if sync_folder:
        fsync_folder(path.parent)


def fsync_folder(folder: str | Path) -> None:
    """Persist the rename itself (the folder entry); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(Path(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_json(path: str | Path, payload: Any) -> None:
    """JSON with two-space indentation."""
    write_text(path, json.dumps(payload, indent=2))


def save_torch(path: str | Path, payload: Any) -> None:
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)


def save_npy(path: str | Path, array: Any, allow_pickle: bool = False, sync_folder: bool = True) -> None:
    """``np.save`` (a dict needs ``allow_pickle=True``); the file object keeps numpy from renaming it."""
    import numpy as np

    with atomic_open(path, "wb", sync_folder=sync_folder) as handle:
        np.save(handle, array, allow_pickle=allow_pickle)


def save_image(path: str | Path, image: Any, format: str | None = None, sync_folder: bool = True,
               **options: Any) -> None:
    """Save a PIL image; the format defaults to the path's suffix (``.png`` -> PNG)."""
    path = Path(path)
    fmt = format or {"jpg": "JPEG"}.get(path.suffix[1:].lower(), path.suffix[1:].upper())
    with atomic_open(path, "wb", sync_folder=sync_folder) as handle:
        image.save(handle, format=fmt, **options)


def save_figure(path: str | Path, figure: Any) -> None:
    """Save a matplotlib figure in the format of the path's suffix."""
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format=path.suffix[1:])


def remove_partials(folder: str | Path) -> int:
    """Delete temporary files a crashed writer left in ``folder`` (not recursive); returns how many.

    Call it before a stage writes into the folder, never while another process writes there.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.glob(f".*{PARTIAL_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed
