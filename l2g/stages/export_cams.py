"""Convert a folder of attention maps between l2g's ``.npz`` and the release's dict ``.npy``.

Exports l2g's maps to the dict format other WSSS tools read (PSA, IRN, OAA, the authors' release:
``np.load(path, allow_pickle=True).item()``), or imports such a folder into the pickle-free format.
Dict files are read with :mod:`l2g.data.safe_npy`'s restricted unpickler: one that holds anything but
numpy arrays is refused, never run. The command is ``l2g export-cams``.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from l2g import atomic
from l2g.data.cam_files import SUFFIXES, read_cams_file, save_cams


def export_cams(cams_dir: str | Path, out_dir: str | Path, format: str = "dict", dtype: str = "float16",
                progress: bool = True) -> int:
    """Convert every map file of ``cams_dir`` into ``out_dir`` in ``format``; returns how many. An image
    with both an ``.npz`` and an ``.npy`` is taken from its ``.npz`` (what l2g's readers would read)."""
    cams_dir, out_dir = Path(cams_dir), Path(out_dir)
    if not cams_dir.is_dir():
        raise FileNotFoundError(f"{cams_dir}: attention-map folder not found")
    if out_dir.resolve() == cams_dir.resolve():
        raise ValueError(f"{out_dir}: write the converted maps into another folder than --cams")
    sources: dict[str, Path] = {}
    for suffix in (SUFFIXES["dict"], SUFFIXES["npz"]):  # npz last: it wins
        for path in sorted(cams_dir.glob(f"*{suffix}")):
            sources[path.stem] = path
    if not sources:
        raise FileNotFoundError(f"{cams_dir}: no attention-map files (<id>.npz or <id>.npy)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for image_id, path in tqdm(sorted(sources.items()), desc=f"export-cams -> {format}", disable=not progress):
        save_cams(out_dir / f"{image_id}{SUFFIXES[format]}", read_cams_file(path), format, dtype, sync_folder=False)
    atomic.fsync_folder(out_dir)
    return len(sources)
