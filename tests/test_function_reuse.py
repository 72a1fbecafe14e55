"""One Function instance called several times: every call is its own graph node (PyTorch's Function.apply).

Before: ``f = Softsign(); f(x) + f(2x)`` let the second forward overwrite what the first saved for backward,
and the gradient came out silently wrong (analytic 0 against numeric −0.248 at one element).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import npgan
from npgan import Function, backend

F64 = np.float64
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)


class Softsign(Function):
    """y = x / (1 + |x|);   gx = gy / (1 + |x|)²"""

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.d = 1 + xp.abs(x)  # saved: backward needs 1 + |x|
        return x / self.d

    def backward(self, gy):
        return gy / self.d**2


class WeightedSum(Function):
    """y = w·a + (1 − w)·b²;   ga = w·gy,   gb = 2(1 − w)·b·gy   (an option w, two inputs)"""

    def __init__(self, w):
        self.w = w

    def forward(self, a, b):
        self.b = b  # saved: gb needs b
        return self.w * a + (1 - self.w) * b * b

    def backward(self, gy):
        return self.w * gy, 2 * (1 - self.w) * self.b * gy


def leaf(a):
    return npgan.tensor(np.asarray(a, dtype=F64), requires_grad=True)


def test_the_reported_case_softsign_used_twice_gives_the_right_gradient():
    x = leaf([0.3, -1.2, 2.0, 0.7])
    f = Softsign()
    (f(x) + f(x * 2)).sum().backward()
    want = 1 / (1 + np.abs(x.numpy())) ** 2 + 2 / (1 + np.abs(2 * x.numpy())) ** 2
    np.testing.assert_allclose(x.grad, want, rtol=1e-12)
    assert npgan.gradcheck(lambda t: (f(t) + f(t * 2)).sum(), [x])


@given(st.data())
def test_reused_instances_pass_gradcheck_on_random_shapes(data):
    shape = data.draw(SHAPES)
    a = leaf(data.draw(hnp.arrays(F64, shape, elements=st.floats(-2, 2))))
    b = leaf(data.draw(hnp.arrays(F64, shape, elements=st.floats(-2, 2))))
    f, g = Softsign(), WeightedSum(0.3)

    def fn(a, b):  # each instance three times, results feeding each other
        return (f(g(a, b)) * f(a) + g(f(b), a) * g(b, b) + f(a * b)).sum()

    assert npgan.gradcheck(fn, [a, b])


def test_each_call_is_its_own_node_and_the_first_is_the_instance():
    x = leaf([1.0, -2.0])
    g = WeightedSum(0.25)
    y1, y2 = g(x, x), g(x, x * 3)
    assert y1.creator is g  # ops that read what forward saved (functional.batch_norm) keep working
    assert y2.creator is not g and type(y2.creator) is WeightedSum
    assert y2.creator.w == 0.25
    assert y1.creator.b is not y2.creator.b


def test_an_instance_called_again_after_backward_keeps_its_options():
    """A Module that holds one Function and calls it every step: backward frees the saves, not the options."""
    g = WeightedSum(0.75)
    for step in range(3):
        a, b = leaf([1.0, 2.0 + step]), leaf([3.0, -1.0])
        g(a, b).sum().backward()
        np.testing.assert_allclose(a.grad, [0.75, 0.75])
        np.testing.assert_allclose(b.grad, 2 * 0.25 * b.numpy())
        assert "b" not in g.__dict__  # what forward saved was freed by backward


def test_a_freed_graph_stays_freed_when_its_function_is_called_again():
    x = leaf([0.5, -0.5])
    f = Softsign()
    y1 = f(x).sum()
    y1.backward()
    f(x * 2).sum()  # a new node; it must not bring y1's freed graph back to life with new saved values
    with pytest.raises(RuntimeError, match="second time"):
        y1.backward()


def test_reuse_under_no_grad_then_with_grad():
    x = leaf([0.2, 1.5])
    f = Softsign()
    with npgan.no_grad():
        f(x * 5)
    y = f(x) + f(x * 2)
    y.sum().backward()
    want = 1 / (1 + np.abs(x.numpy())) ** 2 + 2 / (1 + np.abs(2 * x.numpy())) ** 2
    np.testing.assert_allclose(x.grad, want, rtol=1e-12)
