"""Random convolution problems for the conv tests: a hypothesis strategy for the geometry of a small conv2d or
conv_transpose2d, its arrays, and the npgan and PyTorch calls that take them."""

from __future__ import annotations

import numpy as np
from helpers import torch_or_skip
from hypothesis import assume
from hypothesis import strategies as st

import npgan
import npgan.functional as F
from npgan.conv import conv_output_size, conv_transpose_output_size


@st.composite
def geometry(draw, transposed=False):
    """A small valid (conv or transposed-conv) problem: shapes, kernel, stride, padding, dilation."""
    pair = lambda lo, hi: (draw(st.integers(lo, hi)), draw(st.integers(lo, hi)))
    g = dict(N=draw(st.integers(1, 4)), C=draw(st.integers(1, 3)), O=draw(st.integers(1, 3)),
             k=pair(1, 3), s=pair(1, 3), d=pair(1, 2), bias=draw(st.booleans()))
    g["p"] = (draw(st.integers(0, g["k"][0])), draw(st.integers(0, g["k"][1])))
    if transposed:
        g["op"] = tuple(draw(st.integers(0, max(g["s"][a], g["d"][a]) - 1)) for a in (0, 1))
        g["HW"] = pair(1, 4)
        out = [conv_transpose_output_size(g["HW"][a], g["k"][a], g["s"][a], g["p"][a], g["op"][a], g["d"][a])
               for a in (0, 1)]
        assume(min(out) >= 1)
    else:
        # the output has 1..3 pixels per side, the input any size that gives it (non-square included)
        g["HW"] = tuple(max(1, (draw(st.integers(1, 3)) - 1) * g["s"][a] + g["d"][a] * (g["k"][a] - 1) + 1
                            - 2 * g["p"][a] + draw(st.integers(0, g["s"][a] - 1))) for a in (0, 1))
        out = [conv_output_size(g["HW"][a], g["k"][a], g["s"][a], g["p"][a], g["d"][a]) for a in (0, 1)]
        assume(min(out) >= 1)
    g["seed"] = draw(st.integers(0, 2**31 - 1))
    return g


def conv_arrays(g, transposed):
    rng = np.random.default_rng(g["seed"])
    cin, cout = g["C"], g["O"]
    x = rng.standard_normal((g["N"], cin) + g["HW"])
    w = rng.standard_normal(((cin, cout) if transposed else (cout, cin)) + g["k"])
    b = rng.standard_normal(cout) if g["bias"] else None
    return x, w, b


def np_conv(g, transposed):
    if transposed:
        return lambda x, w, b=None: F.conv_transpose2d(x, w, b, g["s"], g["p"], g["op"], g["d"])
    return lambda x, w, b=None: F.conv2d(x, w, b, g["s"], g["p"], g["d"])


def torch_conv(g, transposed):
    tF = torch_or_skip().nn.functional
    if transposed:
        return lambda x, w, b: tF.conv_transpose2d(x, w, b, g["s"], g["p"], g["op"], 1, g["d"])
    return lambda x, w, b: tF.conv2d(x, w, b, g["s"], g["p"], g["d"])


def leaf_tensors(arrays):
    return [npgan.tensor(a, requires_grad=True) for a in arrays if a is not None]  # on the current device
