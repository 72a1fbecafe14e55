"""The fast routes of npgan.conv_fast against the plain route (npgan.conv.Reference), float64.

Each route choice in conv_fast.py is taken both ways on random geometry: the layout of new image arrays
(CHANNELS_LAST_MIN: channels-last columns and outputs, or per-image columns on NCHW), the input gradient's
phase blocks (PER_BLOCK_MIN_WIDTH: one GEMM per block or one for all), the groups of images (CACHE_BLOCK_BYTES,
and COLUMN_GROUP_BYTES for columns built for one product: image by image or the whole batch at once), the
dense kind (a kernel that covers its input), inputs and incoming gradients in either memory layout, in one
piece and split over threads. The fast routes add the same products in other orders, so they agree with the
reference to a few float64 roundings: each value is a sum of at most C·kh·kw·N·OH·OW ≤ 3·3·3·4·9·4 products of
standard-normal numbers, whose float64 rounding is below 1e-13 relative to the sum of magnitudes; rtol 1e-10,
atol 1e-12 leave a margin.
"""

from __future__ import annotations

import numpy as np
import pytest
from conv_problems import conv_arrays, geometry, np_conv
from hypothesis import given, settings
from hypothesis import strategies as st

import npgan
from npgan import conv, conv_fast
from npgan.conv import Conv2dWeightGrad, conv_output_size

KNOBS = [dict(CHANNELS_LAST_MIN=1, PER_BLOCK_MIN_WIDTH=0, CACHE_BLOCK_BYTES=1, COLUMN_GROUP_BYTES=1),
         dict(CHANNELS_LAST_MIN=1, PER_BLOCK_MIN_WIDTH=10**9, CACHE_BLOCK_BYTES=10**12, COLUMN_GROUP_BYTES=10**12),
         dict(CHANNELS_LAST_MIN=10**9, PER_BLOCK_MIN_WIDTH=0, CACHE_BLOCK_BYTES=1, COLUMN_GROUP_BYTES=1)]
KNOB_IDS = ["channels-last, per block, image by image", "channels-last, one GEMM, whole batch",
            "NCHW per image, image by image"]


def _laid_out(a, channels_last):
    """The same values with channels-last memory (an (N, H, W, C) array seen as (N, C, H, W)) or NCHW memory."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if channels_last else a


def _run(fn, arrays, gy, reference):
    """Outputs and every gradient of fn(*arrays) against gy, by the fast routes or the reference route."""
    with conv.use_reference(reference):
        ts = [npgan.Tensor(np.array(a, order="K"), requires_grad=True) for a in arrays]  # in a's own layout
        y = fn(*ts)
        y.backward(gy)
        return [y.numpy()] + [np.asarray(t.grad) for t in ts]


def _compare(fn, arrays, gy, monkeypatch, knobs):
    expected = _run(fn, arrays, gy, reference=True)
    for name, v in knobs.items():
        monkeypatch.setattr(conv_fast, name, v)
    got = _run(fn, arrays, gy, reference=False)
    for what, a, b in zip(["y", "x", "w", "b"], got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"{what} ({knobs})")


@pytest.mark.parametrize("knobs", KNOBS, ids=KNOB_IDS)
@pytest.mark.parametrize("transposed", [False, True])
@settings(max_examples=20)
@given(data=st.data())
def test_fast_routes_match_the_reference(threads, transposed, knobs, data, monkeypatch):
    g = data.draw(geometry(transposed=transposed))
    x, w, b = conv_arrays(g, transposed)
    x = _laid_out(x, data.draw(st.booleans()))
    fn = np_conv(g, transposed)
    y_shape = fn(npgan.tensor(x), npgan.tensor(w)).shape
    gy = _laid_out(np.random.default_rng(g["seed"] + 1).standard_normal(y_shape), data.draw(st.booleans()))
    _compare(fn, [a for a in (x, w, b) if a is not None], gy, monkeypatch, knobs)
    monkeypatch.undo()


@pytest.mark.parametrize("knobs", KNOBS, ids=KNOB_IDS)
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("channels_last_input", [False, True])
def test_dense_kind_matches_the_reference(threads, transposed, knobs, channels_last_input, monkeypatch):
    """A kernel that covers its unpadded input (one output pixel): the conv is x flattened times the weight;
    as a transposed conv, one pixel becomes a whole (kh, kw) image. Both column orders (the input's memory)."""
    rng = np.random.default_rng(5)
    for C, O, k in [(3, 4, (3, 2)), (9, 10, (4, 4))]:
        if transposed:
            x, w = rng.standard_normal((5, C, 1, 1)), rng.standard_normal((C, O) + k)
            fn = lambda x, w, b: npgan.functional.conv_transpose2d(x, w, b)  # noqa: E731
            y_shape = (5, O) + k
        else:
            x, w = rng.standard_normal((5, C) + k), rng.standard_normal((O, C) + k)
            fn = lambda x, w, b: npgan.functional.conv2d(x, w, b)  # noqa: E731
            y_shape = (5, O, 1, 1)
        x = _laid_out(x, channels_last_input)
        gy = _laid_out(rng.standard_normal(y_shape), not channels_last_input)
        _compare(fn, [x, w, rng.standard_normal(O)], gy, monkeypatch, knobs)
        monkeypatch.undo()


@pytest.mark.parametrize("knobs", KNOBS, ids=KNOB_IDS)
@settings(max_examples=15)
@given(data=st.data())
def test_weight_grad_op_matches_the_reference(threads, knobs, data, monkeypatch):
    """Conv2dWeightGrad (the weight gradient as an op, for create_graph) by both routes."""
    g = data.draw(geometry())
    x, _, _ = conv_arrays(g, False)
    x = _laid_out(x, data.draw(st.booleans()))
    out = tuple(conv_output_size(g["HW"][a], g["k"][a], g["s"][a], g["p"][a], g["d"][a]) for a in (0, 1))
    gy = _laid_out(np.random.default_rng(g["seed"] + 1).standard_normal((g["N"], g["O"]) + out),
                   data.draw(st.booleans()))
    r = np.random.default_rng(g["seed"] + 2).standard_normal((g["O"], g["C"]) + g["k"])
    fn = lambda x, gy: Conv2dWeightGrad(g["s"], g["p"], g["d"], g["k"])(x, gy)  # noqa: E731
    _compare(fn, [x, gy], r, monkeypatch, knobs)
    monkeypatch.undo()


@pytest.mark.parametrize("knobs", KNOBS, ids=KNOB_IDS)
def test_dcgan_layer_geometries_match_the_reference(threads, knobs, monkeypatch):
    """The DCGAN geometries at widths on both sides of CHANNELS_LAST_MIN's default (k4 s2 p1 from 3 and from 16
    channels, their transposes, k4 s1 p0 on 4×4, k7 on 7×7), with bias."""
    rng = np.random.default_rng(11)
    for transposed, C, O, k, s, p, hw in [(False, 3, 16, 4, 2, 1, (8, 8)), (False, 16, 24, 4, 2, 1, (8, 6)),
                                         (True, 16, 3, 4, 2, 1, (4, 4)), (True, 24, 16, 4, 2, 1, (3, 4)),
                                         (False, 16, 1, 4, 1, 0, (4, 4)), (True, 20, 16, 4, 1, 0, (1, 1)),
                                         (False, 12, 2, 7, 1, 0, (7, 7))]:
        g = dict(N=3, C=C, O=O, k=(k, k), s=(s, s), p=(p, p), d=(1, 1), op=(0, 0), HW=hw, bias=True, seed=k)
        x, w, b = conv_arrays(g, transposed)
        fn = np_conv(g, transposed)
        gy = rng.standard_normal(fn(npgan.tensor(x), npgan.tensor(w)).shape)
        _compare(fn, [x, w, b], gy, monkeypatch, knobs)
        monkeypatch.undo()


def test_channels_last_outputs_from_enough_channels():
    """New image arrays are laid out channels-last from CHANNELS_LAST_MIN channels (on NumPy), NCHW below; so a
    conv passes the layout on, and a 3-channel output (a generator's image) stays NCHW."""
    x = npgan.randn(2, 16, 8, 8)
    y = npgan.functional.conv2d(x, npgan.randn(conv_fast.CHANNELS_LAST_MIN, 16, 4, 4), stride=2, padding=1)
    assert y.data.transpose(0, 2, 3, 1).flags.c_contiguous and not y.data.flags.c_contiguous
    img = npgan.functional.conv_transpose2d(y, npgan.randn(conv_fast.CHANNELS_LAST_MIN, 3, 4, 4), stride=2,
                                            padding=1)
    assert img.shape == (2, 3, 8, 8) and img.data.flags.c_contiguous


def test_reference_switch_is_restored():
    assert conv._route() is conv_fast
    with conv.use_reference():
        assert conv._route() is conv.Reference
        with conv.use_reference(False):
            assert conv._route() is conv_fast
        assert conv._route() is conv.Reference
    assert conv._route() is conv_fast


def test_saved_columns_are_reused_once_released_and_never_otherwise():
    """A conv's saved columns go back to conv_fast's pool after its backward (the Function released) and serve
    the next forward of that shape; kept with retain_graph, or when they are x itself (the dense kind), never."""
    x = npgan.randn(3, 16, 6, 6, requires_grad=True)
    w = npgan.randn(12, 16, 4, 4, requires_grad=True)
    y = npgan.functional.conv2d(x, w, stride=2, padding=1)
    col = y.creator.saved[1]
    y.sum().backward(retain_graph=True)  # the graph kept: the columns stay with the Function
    y2 = npgan.functional.conv2d(x, w, stride=2, padding=1)
    assert y2.creator.saved[1] is not col
    y.sum().backward()  # released now
    y3 = npgan.functional.conv2d(x, w, stride=2, padding=1)
    assert y3.creator.saved[1] is col
    np.testing.assert_allclose(y3.numpy(), y.numpy(), rtol=1e-6)  # refilled: the same numbers
    xd = npgan.randn(3, 16, 4, 4, requires_grad=True)  # a kernel covering its input: the columns are xd itself
    yd = npgan.functional.conv2d(xd, npgan.randn(2, 16, 4, 4))
    assert np.shares_memory(yd.creator.saved[1], xd.data)
    yd.sum().backward()
    assert not any(np.shares_memory(a, xd.data) for free in conv_fast._pool.values() for a in free)
