"""Channels-last image arrays (memory (N, H, W, C), as npgan.conv_fast makes them from 8 channels up) through
batch norm and the activations, in one piece and split over threads: the same numbers as for NCHW arrays, the
layout kept, gradcheck and gradgradcheck in float64.

Batch norm computes its statistics per chunk of the batch and combines them (Chan et al.'s update of Σ(x − μ)²),
and each chunk keeps x minus its own mean: the sums come in another order than in one piece, so results agree
to rounding: each statistic is a sum of m ≤ 4·5·6 = 120 float64 terms of order 1 (rounding below 1e-13 relative);
rtol 1e-10 leaves a margin. The activations compute each element alone: bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npgan
import npgan.functional as F


def _channels_last(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _is_channels_last(a):
    return a.transpose(0, 2, 3, 1).flags.c_contiguous


def _leaf(a):
    """A leaf tensor on ``a`` itself (npgan.tensor would copy it into NCHW memory)."""
    return npgan.Tensor(np.array(a, order="K"), requires_grad=True)


def _to_channels_last(x):
    """x with the same values in channels-last memory, as differentiable ops of x (permute to (N, H, W, C), a
    reshape that must copy that view in C order, back), for gradcheck, which copies its inputs into NCHW."""
    N, C, H, W = x.shape
    return x.permute(0, 2, 3, 1).reshape(N * H * W, C).reshape(N, H, W, C).permute(0, 3, 1, 2)


shapes = st.tuples(st.integers(2, 4), st.integers(2, 5), st.integers(2, 5), st.integers(2, 6))  # no axis of 1:
# a layout is then a property of the memory alone (NumPy ignores the strides of an axis of length 1)


def _bn(training, channels_last=False):
    def f(x, g, b):
        rm, rv = np.zeros(x.shape[1]), np.ones(x.shape[1]) * 1.5
        if channels_last:
            x = _to_channels_last(x)
            assert _is_channels_last(x.data)
        y = F.batch_norm(x, rm, rv, g, b, training=training)
        assert y.data.strides == x.data.strides  # the input's layout kept
        return y
    return f


@pytest.mark.parametrize("training", [True, False])
@settings(max_examples=15)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1))
def test_batch_norm_channels_last_matches_nchw(threads, training, shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 0.5
    g, b = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    gy = rng.standard_normal(shape)
    results = []
    for layout in (lambda a: a, _channels_last):
        ts = [_leaf(layout(x)), _leaf(g), _leaf(b)]
        y = _bn(training)(*ts)
        fn = y.creator  # its raw backward keeps the layout (a leaf's .grad is a C-order copy)
        assert _is_channels_last(fn.backward(layout(gy))[0]) == (layout is _channels_last)
        y.backward(layout(gy))
        assert _is_channels_last(y.data) == (layout is _channels_last)
        results.append([y.numpy()] + [np.asarray(t.grad) for t in ts])
    for a, c in zip(*results):
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
@settings(max_examples=10)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1))
def test_batch_norm_channels_last_gradcheck_and_gradgradcheck(threads, training, shape, seed):
    rng = np.random.default_rng(seed)
    leaves = [_leaf(rng.standard_normal(shape)), _leaf(rng.standard_normal(shape[1])),
              _leaf(rng.standard_normal(shape[1]))]
    assert npgan.gradcheck(_bn(training, channels_last=True), leaves, seed=seed % 1000)
    assert npgan.gradgradcheck(_bn(training, channels_last=True), leaves, seed=seed % 1000)


def test_batch_norm_split_statistics_match_one_piece():
    """Running statistics after a training forward split over 3 threads equal those of one piece (rounding)."""
    from helpers import split_ops
    rng = np.random.default_rng(3)
    x = _channels_last(rng.standard_normal((7, 4, 3, 5)) * 3 + 2)
    stats = []
    for threads in (1, 3):
        with split_ops(threads):
            rm, rv = np.zeros(4), np.ones(4)
            F.batch_norm(npgan.Tensor(x), rm, rv, None, None, training=True, momentum=1.0)
            stats.append((rm, rv))
    np.testing.assert_allclose(stats[0][0], x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(stats[1][0], stats[0][0], rtol=1e-12)
    np.testing.assert_allclose(stats[1][1], stats[0][1], rtol=1e-12)
    np.testing.assert_allclose(stats[0][1], x.var(axis=(0, 2, 3), ddof=1), rtol=1e-12)


@pytest.mark.parametrize("act", [F.relu, lambda x: F.leaky_relu(x, 0.2)], ids=["relu", "leaky_relu"])
def test_activations_keep_the_layout_and_split_exactly(act):
    """Elementwise: split over threads or not, channels-last or not, the same numbers bit for bit."""
    from helpers import split_ops
    rng = np.random.default_rng(4)
    x, gy = rng.standard_normal((5, 3, 4, 6)), rng.standard_normal((5, 3, 4, 6))
    results = []
    for threads in (1, 3):
        for layout in (lambda a: a, _channels_last):
            with split_ops(threads):
                t = _leaf(layout(x))
                y = act(t)
                y.backward(layout(gy), retain_graph=True)
                assert _is_channels_last(y.data) == (layout is _channels_last)
                fn = y.creator  # its raw backward keeps the layout too (a leaf's .grad is a C-order copy)
                assert _is_channels_last(fn.backward(layout(gy))) == (layout is _channels_last)
                results.append((y.numpy(), np.asarray(t.grad)))
    for y, gx in results[1:]:
        np.testing.assert_array_equal(y, results[0][0])
        np.testing.assert_array_equal(gx, results[0][1])


def test_a_dcgan_discriminator_passes_channels_last_from_layer_to_layer():
    """conv → batch norm → LeakyReLU → conv: every image array from 8 channels up is channels-last, so no layer
    transposes its input or output; the 3-channel input and the 1-channel logit stay as they are."""
    from npgan import nn
    D = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
                      nn.Conv2d(8, 16, 4, 2, 1, bias=False), nn.BatchNorm2d(16), nn.LeakyReLU(0.2),
                      nn.Conv2d(16, 1, 4, 1, 0, bias=False))
    h = npgan.randn(4, 3, 16, 16)
    for layer in D:
        h = layer(h)
        if h.shape[1] >= 8:
            assert _is_channels_last(h.data), layer
    assert h.shape == (4, 1, 1, 1)
