"""``l2g cams`` end to end on a tiny L2G run: only the inference network is built, DataLoader workers give
the same files, both input resizes, the dict format and switching formats, autocast on request."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from l2g.cli import main
from l2g.data.cam_files import load_cams

pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*argv: object) -> None:
    assert main([str(a) for a in argv]) == 0


@pytest.fixture(scope="module")
def l2g_run(tiny_root, tmp_path_factory) -> Path:
    """A finished tiny L2G run (two networks; the global one makes the maps). Read-only for the tests."""
    run = tmp_path_factory.mktemp("l2g") / "run"
    cli("train", "synth", "--run", run, "--set", f"data.root={tiny_root}", "--set", "data.num_classes=3",
        "--set", "method.name=l2g", "--set", "optim.epochs=1", "--set", "optim.batch_size=4", "--set", "model.width=4",
        "--set", "data.resize_short=48", "--set", "data.global_size=40", "--set", "views.patch_size=24",
        "--set", "threads=1", "--quiet")
    return run


def maps_of(folder: Path) -> dict[str, dict[int, np.ndarray]]:
    ids = sorted({p.stem for p in folder.iterdir() if p.suffix in (".npz", ".npy")})
    return {i: load_cams(folder, i).as_dict() for i in ids}


def test_only_the_inference_network_is_built(l2g_run, tmp_path, monkeypatch):
    import l2g.method.methods as methods
    import l2g.stages.cams as cams_stage

    def refuse(*args, **kwargs):
        raise AssertionError("l2g cams must not build the training method (both networks)")

    built = []
    real = cams_stage.build_attention_net
    monkeypatch.setattr(methods, "build_method", refuse)
    monkeypatch.setattr(methods.L2GMethod, "__init__", refuse)
    monkeypatch.setattr(cams_stage, "build_attention_net", lambda *a, **k: built.append(1) or real(*a, **k))
    cli("cams", "--run", l2g_run, "--out", tmp_path / "cams", "--quiet")
    assert built == [1]
    assert len(list((tmp_path / "cams").glob("*.npz"))) == 8


def test_loader_workers_write_the_same_files(l2g_run, tmp_path):
    cli("cams", "--run", l2g_run, "--out", tmp_path / "w0", "--set", "data.workers=0", "--quiet")
    cli("cams", "--run", l2g_run, "--out", tmp_path / "w2", "--set", "data.workers=2", "--quiet")
    names = sorted(p.name for p in (tmp_path / "w0").glob("*.npz"))
    assert len(names) == 8
    for name in names:
        assert (tmp_path / "w2" / name).read_bytes() == (tmp_path / "w0" / name).read_bytes(), name


def test_both_resizes_run_and_are_recorded(l2g_run, tmp_path):
    for resize in ("pil_bicubic", "tensor_bilinear"):
        cli("cams", "--run", l2g_run, "--out", tmp_path / resize, "--set", f"cams.resize={resize}", "--set",
            "cams.source=logits", "--set", "cams.dtype=float32", "--quiet")
        assert json.loads((tmp_path / resize / "l2g-done.json").read_text())["inputs"]["resize"] == resize
    pil, tensor = maps_of(tmp_path / "pil_bicubic"), maps_of(tmp_path / "tensor_bilinear")
    assert pil.keys() == tensor.keys() and len(pil) == 8
    gaps = [float(np.abs(pil[i][c] - tensor[i][c]).max()) for i in pil for c in pil[i]]
    assert max(gaps) > 1e-3  # the inputs differ at scales 0.5, 1.5, 2 ...
    assert max(gaps) < 0.5  # ... not the maps' content


def test_dict_format_and_switching_back(l2g_run, tmp_path):
    out = tmp_path / "cams"
    cli("cams", "--run", l2g_run, "--out", out, "--quiet")
    npz = maps_of(out)
    cli("cams", "--run", l2g_run, "--out", out, "--format", "dict", "--quiet")
    assert not list(out.glob("*.npz"))  # rewritten in the other format, the old files gone
    files = sorted(out.glob("*.npy"))
    assert len(files) == 8
    as_release = np.load(files[0], allow_pickle=True).item()  # how the release's tools read them
    assert all(m.dtype == np.float32 for m in as_release.values())
    for image_id, cams in maps_of(out).items():
        for c, m in cams.items():
            assert np.abs(m - npz[image_id][c]).max() <= 2.0**-12  # float16 storage vs float32
    cli("cams", "--run", l2g_run, "--out", out, "--quiet")
    assert not list(out.glob("*.npy")) and len(list(out.glob("*.npz"))) == 8


def test_autocast_on_request_stays_close_to_float32(l2g_run, tmp_path):
    cli("cams", "--run", l2g_run, "--out", tmp_path / "fp32", "--set", "cams.amp=off", "--quiet")
    cli("cams", "--run", l2g_run, "--out", tmp_path / "bf16", "--set", "cams.amp=on", "--quiet")
    assert json.loads((tmp_path / "fp32" / "l2g-done.json").read_text())["inputs"]["precision"] == "float32"
    bf16 = json.loads((tmp_path / "bf16" / "l2g-done.json").read_text())["inputs"]["precision"]
    assert bf16 == "bfloat16 autocast, channels_last"  # runtime.channels_last auto follows autocast
    full, low = maps_of(tmp_path / "fp32"), maps_of(tmp_path / "bf16")
    gap = max(float(np.abs(full[i][c] - low[i][c]).max()) for i in full for c in full[i])
    assert 0 < gap < 0.1  # bf16 keeps 8 bits; docs/benchmarks.md gives the measured gap on larger runs
