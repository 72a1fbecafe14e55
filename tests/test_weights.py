"""npgan.weights: safetensors files in and out — round trips, and hostile files refused in one line, nothing changed.

(The PyTorch side of the round trips is in tests/test_interop.py.)
"""

import json
import os
import struct
import warnings

import numpy as np
import pytest
from helpers import busy_bn_stats

import npgan
from npgan import nn
from npgan.errors import CheckpointError, CheckpointWriteError, PrecisionWarning
from npgan.run.presets import PRESETS, build_models, make_config
from npgan.weights import WeightsError, load, load_into, save


def _state(module):
    return {k: npgan.backend.to_numpy(v).copy() for k, v in module.state_dict().items()}


def _assert_same_state(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _file(path, header, payload=b""):
    """A safetensors-shaped file from a header dict (for hostile cases the package would never write)."""
    h = json.dumps(header).encode() if isinstance(header, dict) else header
    path.write_bytes(struct.pack("<Q", len(h)) + h + payload)
    return path


def _refused(fn, *args, match):
    """``fn`` raises one WeightsError line containing ``match``."""
    with pytest.raises(WeightsError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert match in msg, msg
    return msg


# ============================================================================ round trips
@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_round_trips_bit_for_bit(tmp_path, preset):
    G, D = build_models(make_config(preset))
    npgan.manual_seed(99)  # the targets start from other weights
    G2, D2 = build_models(make_config(preset))
    for name, src, dst in (("G", G, G2), ("D", D, D2)):
        busy_bn_stats(src, var_high=2.0, tracked=7)
        f = tmp_path / f"{name}.safetensors"
        save(src, f, {"preset": preset})
        state, meta = load(f)
        assert meta["preset"] == preset and meta["npgan_version"] == npgan.__version__ and meta["format"] == "pt"
        assert meta["architecture"] == repr(src)
        assert set(state) == set(src.state_dict())
        meta2 = load_into(dst, f)
        assert meta2 == meta
        _assert_same_state(_state(src), _state(dst))
    assert sorted(os.listdir(tmp_path)) == ["D.safetensors", "G.safetensors"]  # no temporary file left


def test_npgan_save_and_load_are_the_top_level_names(tmp_path):
    m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    npgan.save(m.state_dict(), tmp_path / "w.safetensors", metadata={"note": "x"})
    state, meta = npgan.load(tmp_path / "w.safetensors")
    assert meta["note"] == "x" and "architecture" not in meta  # a plain dict has no architecture to describe
    assert state["1.num_batches_tracked"].dtype == np.int64 and state["1.num_batches_tracked"].shape == ()
    _assert_same_state({k: state[k] for k in m.state_dict()}, _state(m))
    assert all(v.flags.writeable for v in state.values())


def test_tensors_float64_and_non_contiguous_arrays_are_saved(tmp_path):
    a = np.arange(12, dtype=np.float64).reshape(3, 4).T  # not C-contiguous
    save({"t": npgan.tensor(np.ones(3, dtype=np.float32)), "a": a}, tmp_path / "w.safetensors")
    state, _ = load(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(state["a"], a)
    assert state["a"].dtype == np.float64 and state["t"].dtype == np.float32


def test_device_arrays_are_moved_to_the_host(tmp_path, device):
    m = busy_bn_stats(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).to(device), var_high=2.0, tracked=7)
    save(m, tmp_path / "w.safetensors")
    state, _ = load(tmp_path / "w.safetensors")
    assert all(isinstance(v, np.ndarray) for v in state.values())
    m2 = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).to(device)
    load_into(m2, tmp_path / "w.safetensors")
    assert m2[0].weight.device == m[0].weight.device
    _assert_same_state(_state(m), _state(m2))


def test_float16_and_bfloat16_are_converted_with_a_precision_warning(tmp_path):
    x = np.array([1.5, -2.25, 3e-3, 65504.0], dtype=np.float32)
    bf = (x.view(np.uint32) >> 16).astype("<u2")  # bfloat16 = the high half of a float32
    header = {"h": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},
              "b": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [8, 16]}}
    f = _file(tmp_path / "half.safetensors", header, x.astype("<f2").tobytes() + bf.tobytes())
    with pytest.warns(PrecisionWarning, match="float16|bf16"):
        state, _ = load(f)
    assert state["h"].dtype == np.float32 and state["b"].dtype == np.float32 and state["b"].shape == (2, 2)
    np.testing.assert_array_equal(state["h"], x.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(state["b"].ravel(), (bf.astype(np.uint32) << 16).view(np.float32))
    assert state["b"].ravel()[0] == 1.5 and state["b"].ravel()[1] == -2.25  # exact in bfloat16


def test_strict_false_loads_the_keys_that_exist(tmp_path):
    src = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    save({"0.weight": src[0].weight}, tmp_path / "w.safetensors")
    dst = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    bias = dst[0].bias.numpy().copy()
    load_into(dst, tmp_path / "w.safetensors", strict=False)
    np.testing.assert_array_equal(dst[0].weight.numpy(), src[0].weight.numpy())
    np.testing.assert_array_equal(dst[0].bias.numpy(), bias)


def test_save_replaces_a_file_atomically_and_a_failed_save_keeps_it(tmp_path):
    f = tmp_path / "w.safetensors"
    save({"a": np.zeros(2, np.float32)}, f)
    before = f.read_bytes()
    with pytest.raises(WeightsError, match="int8"):
        save({"a": np.zeros(2, np.int8)}, f)
    with pytest.raises(WeightsError, match="not a valid tensor name"):
        save({"": np.zeros(2, np.float32)}, f)
    with pytest.raises(TypeError, match="metadata"):
        save({"a": np.zeros(2, np.float32)}, f, metadata={"step": 3})
    with pytest.raises(TypeError, match="Module or a mapping"):
        save([np.zeros(2)], f)
    assert f.read_bytes() == before and os.listdir(tmp_path) == ["w.safetensors"]
    save({"a": np.ones(2, np.float32)}, f)
    np.testing.assert_array_equal(load(f)[0]["a"], [1, 1])
    assert os.listdir(tmp_path) == ["w.safetensors"]


def test_an_unwritable_target_is_a_checkpoint_write_error(tmp_path):
    with pytest.raises(CheckpointWriteError, match="could not write weights") as info:
        save({"a": np.zeros(2, np.float32)}, tmp_path / "missing-dir" / "w.safetensors")
    assert isinstance(info.value, OSError) and "\n" not in str(info.value)


# ============================================================================ hostile files
@pytest.fixture
def victim():
    """A module and a snapshot of its state: after every failed load it must be unchanged."""
    m = busy_bn_stats(nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)), var_high=2.0, tracked=7)
    return m, _state(m)


def _good_bytes():
    from safetensors.numpy import save as st_save
    m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    return st_save(dict(m.state_dict()))


def _check_refused(victim, tmp_path, f, match):
    m, before = victim
    listing = sorted(os.listdir(tmp_path))
    msg = _refused(load_into, m, f, match=match)
    assert str(f) in msg
    _assert_same_state(before, _state(m))
    assert sorted(os.listdir(tmp_path)) == listing  # nothing written
    assert isinstance(WeightsError(""), CheckpointError) and isinstance(WeightsError(""), ValueError)  # exit 2
    return msg


def test_not_safetensors_is_refused(victim, tmp_path):
    f = tmp_path / "w.safetensors"
    f.write_text("this is a text file that is long enough to have a length field\n")
    _check_refused(victim, tmp_path, f, "not a safetensors file")


def test_an_npgan_checkpoint_is_not_a_weights_file(victim, tmp_path):
    from npgan.run.checkpoint import save_arrays
    save_arrays(tmp_path / "checkpoint.npz", {"G/0.weight": np.zeros((2, 3), np.float32)}, {"step": 1})
    _check_refused(victim, tmp_path, tmp_path / "checkpoint.npz", "safetensors")


@pytest.mark.parametrize("size", [0, 5])
def test_an_empty_or_tiny_file_is_refused(victim, tmp_path, size):
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"\x01" * size)
    _check_refused(victim, tmp_path, f, f"{size} bytes, too short")


def test_a_missing_file_is_refused(victim, tmp_path):
    _check_refused(victim, tmp_path, tmp_path / "nope.safetensors", "does not exist")


@pytest.mark.parametrize("cut", [1, 9, 40])
def test_a_truncated_file_is_refused(victim, tmp_path, cut):
    f = tmp_path / "w.safetensors"
    f.write_bytes(_good_bytes()[:-cut])
    _check_refused(victim, tmp_path, f, "damaged or not a safetensors file")


def test_a_header_claiming_more_bytes_than_the_file_has_is_refused(victim, tmp_path):
    raw = _good_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    f = tmp_path / "w.safetensors"
    f.write_bytes(struct.pack("<Q", len(raw)) + raw[8:])
    msg = _check_refused(victim, tmp_path, f, f"its header claims {len(raw)} bytes but only {len(raw) - 8} follow")
    assert n < len(raw) and "truncated" in msg


def test_a_huge_header_length_is_refused_before_reading(victim, tmp_path):
    f = tmp_path / "w.safetensors"
    f.write_bytes(struct.pack("<Q", 2 ** 62) + b"{}")
    _check_refused(victim, tmp_path, f, "exceeds safetensors' limit")


def test_a_header_that_is_not_json_is_refused(victim, tmp_path):
    f = _file(tmp_path / "w.safetensors", b"\xff\xfe not json at all")
    _check_refused(victim, tmp_path, f, "header is not JSON")


def test_duplicate_keys_are_refused(victim, tmp_path):
    entry = '{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
    f = _file(tmp_path / "w.safetensors", f'{{"1.bias":{entry},"1.bias":{entry}}}'.encode(), bytes(8))
    _check_refused(victim, tmp_path, f, "duplicate keys ['1.bias']")


def test_overlapping_offsets_are_refused(victim, tmp_path):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    _check_refused(victim, tmp_path, _file(tmp_path / "w.safetensors", header, bytes(12)), "damaged")


@pytest.mark.parametrize("dtype", ["int8", "uint8", "bool", "int32"])
def test_a_dtype_npgan_does_not_compute_in_is_refused(victim, tmp_path, dtype):
    from safetensors.numpy import save_file
    m, _ = victim
    bad = {k: npgan.backend.to_numpy(v) for k, v in m.state_dict().items()}
    bad["0.weight"] = bad["0.weight"].astype(dtype)
    save_file(bad, tmp_path / "w.safetensors")
    msg = _check_refused(victim, tmp_path, tmp_path / "w.safetensors", "'0.weight' has dtype")
    assert "npgan does not compute in" in msg


@pytest.mark.parametrize("dtype,match", [("F8_E4M3", "has dtype F8_E4M3"), ("Q99", "damaged")])
def test_fp8_and_unknown_dtypes_are_refused(victim, tmp_path, dtype, match):
    header = {"0.weight": {"dtype": dtype, "shape": [2, 3], "data_offsets": [0, 6]}}
    _check_refused(victim, tmp_path, _file(tmp_path / "w.safetensors", header, bytes(6)), match)


def test_missing_unexpected_and_wrong_shape_keys_are_listed_in_one_line(victim, tmp_path):
    m, _ = victim
    state = {k: npgan.backend.to_numpy(v) for k, v in m.state_dict().items()}
    del state["1.running_var"]
    state["2.weight"] = np.zeros(3, np.float32)
    state["0.weight"] = np.zeros((2, 4), np.float32)
    save(state, tmp_path / "w.safetensors")
    msg = _check_refused(victim, tmp_path, tmp_path / "w.safetensors", "does not fit the Sequential")
    assert "missing [1.running_var]" in msg
    assert "unexpected [2.weight]" in msg
    assert "0.weight (file (2, 4), model (2, 3))" in msg


def test_an_integer_tensor_for_a_float_weight_is_refused(victim, tmp_path):
    m, _ = victim
    state = {k: npgan.backend.to_numpy(v) for k, v in m.state_dict().items()}
    state["0.bias"] = np.zeros(2, np.int64)
    save(state, tmp_path / "w.safetensors")
    _check_refused(victim, tmp_path, tmp_path / "w.safetensors", "0.bias (file dtype int64, model float32)")


def test_a_long_mismatch_stays_one_readable_line(tmp_path):
    G, D = build_models(make_config("mnist-dcgan"))
    save(G, tmp_path / "g.safetensors")
    before = _state(D)
    msg = _refused(load_into, D, tmp_path / "g.safetensors", match="more]")
    assert len(msg) < 1200
    _assert_same_state(before, _state(D))


def test_metadata_that_is_not_text_is_refused(victim, tmp_path):
    header = {"__metadata__": {"step": 3}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_refused(victim, tmp_path, _file(tmp_path / "w.safetensors", header, bytes(4)), "expected a string")
