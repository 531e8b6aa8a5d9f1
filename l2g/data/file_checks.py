"""Decoding every file of a split (``data.check_images: decode``) in parallel, once per file version.

What decoding a file tells (its size and mode, a mask's values, or why it cannot be read) is kept in a
cache, one JSON file per dataset root under ``$L2G_CACHE_DIR`` (default ``$XDG_CACHE_HOME/l2g`` or
``~/.cache/l2g``; ``L2G_CACHE_DIR=off`` disables it), keyed by the file's path, size, modification time
and inode. A later check of an unchanged file reads its facts instead of decoding it again, so only the
first ``l2g train`` on VOC or COCO pays for decoding (then in parallel threads: PIL releases the GIL while
decoding). A file modified less than :data:`RACY_SECONDS` before it was checked is not trusted from the
cache (it may change again within the filesystem's timestamp resolution), so it is decoded next time.
The facts, not the verdicts, are cached: whether a mask's values fit is decided again for the configured
number of classes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from l2g.data.errors import DatasetError
from l2g.data.palette import load_mask
from l2g.data.pil_open import decoded_info

CACHE_VERSION = 1
RACY_SECONDS = 2.0
MAX_THREADS = 32
PROGRESS_FROM = 500  # files to decode before a progress bar is worth showing

# facts: {"size": [h, w], "mode": str} (images, saliency maps), {"size": [h, w], "values": [...]} (masks), or
# {"error": message}
Facts = dict


def cache_dir() -> Path | None:
    """Where the caches live, or None when disabled (``L2G_CACHE_DIR=off``)."""
    configured = os.environ.get("L2G_CACHE_DIR")
    if configured is not None:
        return None if configured.strip().lower() in ("", "off", "0", "none") else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "l2g"


def cache_path(root: Path) -> Path | None:
    folder = cache_dir()
    if folder is None:
        return None
    digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return folder / f"decoded-{digest}.json"


def _stamp(path: Path) -> list[int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns, info.st_ino]


def image_facts(path: Path, what: str) -> Facts:
    try:
        height, width, mode = decoded_info(path, what)
    except DatasetError as error:
        return {"error": str(error)}
    return {"size": [height, width], "mode": mode}


def mask_facts(path: Path) -> Facts:
    try:
        mask = load_mask(path)
    except (FileNotFoundError, ValueError) as error:
        return {"error": str(error)}
    values = np.flatnonzero(np.bincount(mask.ravel(), minlength=256)).tolist()
    return {"size": list(mask.shape), "values": values}


class DecodeCache:
    """The facts of a dataset's files, decoded where the cache has none for the file's current version."""

    def __init__(self, root: Path) -> None:
        self.path = cache_path(root)
        self.root = str(Path(root).resolve())
        self.entries: dict[str, list] = self._read(self.path) if self.path is not None else {}
        self.fresh: dict[str, list] = {}

    def lookup(self, path: Path) -> Facts | None:
        entry = self.entries.get(str(path))
        stamp = _stamp(path)
        if entry is None or stamp is None or len(entry) != 5:
            return None
        size, mtime, inode, checked_at, facts = entry
        if [size, mtime, inode] != stamp or mtime > checked_at - RACY_SECONDS * 1e9:
            return None
        return facts

    def facts(self, jobs: Iterable[tuple[Path, Callable[[Path], Facts]]], progress: bool | None = None
              ) -> dict[Path, Facts]:
        """{path: facts} for ``(path, decoder)`` jobs: cached facts where valid, the rest decoded in threads."""
        out: dict[Path, Facts] = {}
        todo = []
        for path, decode in jobs:
            cached = self.lookup(path)
            if cached is not None:
                out[path] = cached
            else:
                todo.append((path, decode))
        if todo:
            from tqdm import tqdm

            started = time.time_ns()
            threads = max(1, min(MAX_THREADS, os.cpu_count() or 1, len(todo)))
            show = progress if progress is not None else len(todo) >= PROGRESS_FROM
            # a bar on a terminal only (disable=None: tqdm's own test), for a split worth one
            with ThreadPoolExecutor(threads) as pool, tqdm(total=len(todo), desc="decoding files", leave=False,
                                                             disable=None if show else True) as bar:
                for (path, _), facts in zip(todo, pool.map(lambda job: job[1](job[0]), todo), strict=True):
                    out[path] = facts
                    stamp = _stamp(path)
                    if stamp is not None:
                        self.fresh[str(path)] = [*stamp, started, facts]
                    bar.update()
        return out

    def save(self) -> None:
        """Write the cache with what was decoded (atomically; merged with what another run wrote)."""
        if self.path is None or not self.fresh:
            return
        from l2g.atomic import write_text

        with contextlib.suppress(OSError):
            merged = self._read(self.path)
            merged.update(self.fresh)
            write_text(self.path, json.dumps({"version": CACHE_VERSION, "root": self.root, "files": merged}))
            self.entries.update(self.fresh)
            self.fresh = {}

    @staticmethod
    def _read(path: Path) -> dict[str, list]:
        if not path.is_file():
            return {}
        try:
                payload = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        files = payload.get("files") if isinstance(payload, dict) and payload.get("version") == CACHE_VERSION else None
        return files if isinstance(files, dict) else {}
