"""``l2g export-cams``: convert a folder of attention maps between l2g's ``.npz`` and the release's dict ``.npy``.

Exports l2g's maps to the dict format other WSSS tools read (PSA, IRN, OAA, the authors' release:
``np.load(path, allow_pickle=True).item()``), or imports such a folder into the pickle-free format.
Dict files are read with :mod:`l2g.data.safe_npy`'s restricted unpickler: one that holds anything but
numpy arrays is refused, never run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from l2g.data.cam_files import CAM_DTYPES, CAM_FORMATS, SUFFIXES, read_cams_file, save_cams
from l2g.engine import atomic

DESCRIPTION = """Convert every attention-map file of a folder (<id>.npz written by 'l2g cams', or <id>.npy
dicts {class index: HxW map} written by the authors' release, PSA or IRN) into one format: 'dict' for
tools that read the release's files, 'npz' (l2g's default, no pickle) to bring such maps into l2g.
Dict files are read with a restricted unpickler that builds numpy arrays only: a file holding anything
else is refused, never run."""

EPILOG = """examples:
  l2g export-cams --cams runs/voc/cams --out runs/voc/cams_dict --format dict    # for PSA / IRN tools
  l2g export-cams --cams psa_out/cams --out runs/psa/cams --format npz            # then:
  l2g eval-cams --run runs/voc --cams runs/psa/cams"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from l2g.cli import add_quiet

    p = subparsers.add_parser("export-cams", help="convert attention maps: l2g .npz <-> release/PSA dict .npy",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cams", required=True, help="folder of <id>.npz / <id>.npy map files")
    p.add_argument("--out", required=True, help="folder to write (created; may not be the --cams folder)")
    p.add_argument("--format", choices=CAM_FORMATS, default="dict",
                   help="dict: the release's pickled dict .npy (float32); npz: l2g's pickle-free files. "
                        "Default: dict")
    p.add_argument("--dtype", choices=CAM_DTYPES, default="float16",
                   help="npz only: stored precision (default float16, within 2.4e-4; dict files are float32)")
    add_quiet(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    count = export_cams(args.cams, args.out, args.format, args.dtype, progress=not args.quiet)
    if not args.quiet:
        print(f"{args.out}: {count} map file(s) in {args.format} format")
    return 0


def export_cams(cams_dir: str | Path, out_dir: str | Path, format: str = "dict", dtype: str = "float16",
                progress: bool = True) -> int:
    """Convert every map file of ``cams_dir`` into ``out_dir`` in ``format``; returns how many. An image
    with both an ``.npz`` and an ``.npy`` is taken from its ``.npz`` (what l2g's readers would read)."""
    from tqdm import tqdm

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
