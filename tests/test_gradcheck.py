"""npgan.gradcheck itself: passes correct backwards, catches broken ones and says where."""

from __future__ import annotations

import re

import numpy as np
import pytest

import npgan
from npgan import Function, GradcheckError, Tensor


class Cube(Function):
    """y = x³, gx = 3x² gy (correct)."""

    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, gy):
        return 3 * self.x ** 2 * gy


class BrokenCube(Cube):
    """Wrong at one element only: the flat index 4 gets twice its gradient."""

    def backward(self, gy):
        g = super().backward(gy)
        g.reshape(-1)[4] *= 2
        return g


class SwappedMul(Function):
    """y = a·b with the two gradients swapped (wrong unless a = b)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        return gy * self.a, gy * self.b


class ScaledBackward(Function):
    """y = 2x, but backward returns (2 + err)·gy: a small relative error."""

    def __init__(self, err=0.02):
        self.err = err

    def forward(self, x):
        return 2 * x

    def backward(self, gy):
        return (2 + self.err) * gy


def leaf(a, grad=True):
    return npgan.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)  # on the current device


X = np.linspace(-1, 1, 6).reshape(2, 3) + 0.1


def test_returns_true_on_a_correct_function(device):
    assert npgan.gradcheck(lambda x: Cube()(x), [leaf(X)]) is True
    assert npgan.gradcheck(lambda x: Cube()(x).sum(), leaf(X)) is True
    assert npgan.gradcheck(lambda a, b: a * b + a.exp(), [leaf(X), leaf(X.T.reshape(2, 3))]) is True


def test_broken_backward_raises_naming_input_and_element(device):
    with pytest.raises(GradcheckError) as e:
        npgan.gradcheck(lambda x: BrokenCube()(x), [leaf(X)])
    msg = str(e.value)
    assert "input 0" in msg and "(2, 3)" in msg and "element (1, 1)" in msg, msg
    assert "1 of 6 elements" in msg, msg
    an, num = (float(s) for s in re.search(r"analytic (\S+) vs numeric (\S+);", msg).groups())
    assert an == pytest.approx(2 * num, rel=1e-6)  # element (1, 1) got twice its gradient


def test_the_second_input_is_named():
    a, b = leaf(X), leaf(X * 3 + 1)
    with pytest.raises(GradcheckError, match=r"input 0"):
        npgan.gradcheck(lambda a, b: SwappedMul()(a, b), [a, b])
    c = Tensor(np.ones((2, 3)))  # a constant in front: the broken input is number 1
    with pytest.raises(GradcheckError, match=r"input 1 \(shape \(2, 3\)\)"):
        npgan.gradcheck(lambda c, x: BrokenCube()(x) + c, [c, leaf(X)])


def test_constants_and_non_tensors_pass_through():
    assert npgan.gradcheck(lambda x, k, c: Cube()(x) * k + c, [leaf(X), 2.5, Tensor(np.ones((2, 3)))])


def test_small_errors_are_caught_in_float64(device):
    with pytest.raises(GradcheckError, match="rel error"):
        npgan.gradcheck(lambda x: ScaledBackward(0.01)(x), [leaf(X)])
    assert npgan.gradcheck(lambda x: ScaledBackward(1e-4)(x), [leaf(X)])  # within the default rtol 1e-3
    with pytest.raises(GradcheckError, match="rtol 1e-06"):
        npgan.gradcheck(lambda x: ScaledBackward(1e-4)(x), [leaf(X)], rtol=1e-6)


def test_float32_inputs_are_checked_in_float64():
    x = Tensor(X.astype(np.float32), requires_grad=True)
    assert npgan.gradcheck(lambda t: (t * t).exp(), [x])
    with pytest.raises(GradcheckError):
        npgan.gradcheck(lambda t: ScaledBackward()(t), [x])
    assert x.dtype == np.float32 and x.grad is None  # the caller's tensor is untouched


def test_directions_mode(device):
    x = leaf(np.random.default_rng(0).standard_normal((8, 9)))
    assert npgan.gradcheck(lambda t: Cube()(t), [x], directions=4)
    with pytest.raises(GradcheckError, match=r"input 0.*direction \d"):
        npgan.gradcheck(lambda t: ScaledBackward()(t), [x], directions=3)
    with pytest.raises(GradcheckError, match="direction"):
        npgan.gradcheck(lambda a, b: SwappedMul()(a, b), [x, leaf(np.ones((8, 9)) * 2)], directions=2)


def test_inputs_are_restored_and_0d_inputs_keep_their_shape():
    x = leaf(X)
    before = x.data.copy()
    s = leaf(1.3)
    shapes = []

    def fn(x, s):
        shapes.append(s.shape)
        return Cube()(x) * s

    assert npgan.gradcheck(fn, [x, s], cast=False)
    np.testing.assert_array_equal(x.data, before)
    assert s.data == 1.3
    assert set(shapes) == {()}


def test_gradcheck_needs_a_differentiable_input():
    with pytest.raises(ValueError, match="requires_grad"):
        npgan.gradcheck(lambda x: x * 2.0, [leaf(X, grad=False)])
    with pytest.raises(TypeError, match="Tensor"):
        npgan.gradcheck(lambda x: 3.0, [leaf(X)])
