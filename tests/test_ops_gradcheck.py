"""Property tests of every op in npgan/ops.py: forward against NumPy, backward against central differences.

Each test draws random shapes and float64 values with hypothesis, checks the forward value against the
NumPy formula, checks that forward + backward leave the inputs untouched, then runs ``npgan.gradcheck``.
Inputs of kinked ops (abs, clip, max/min, maximum/minimum) are drawn away from their kinks so central
differences are valid.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import npgan
from npgan import ops

F64 = np.float64

pytestmark = pytest.mark.usefixtures("device")  # every test runs on the CPU and on the GPU (see conftest.py)


def floats(lo=-2.0, hi=2.0):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


def arr(shape, lo=-2.0, hi=2.0):
    return hnp.arrays(F64, shape, elements=floats(lo, hi))


def away_from_zero(shape, lo=0.3, hi=2.0):
    """Values with lo <= |v| <= hi (random signs)."""
    return hnp.arrays(F64, shape, elements=st.one_of(floats(lo, hi), floats(-hi, -lo)))


def distinct(shape):
    """Values on a 0.1 grid, all different: max/min never tie and stay 0.1 apart (>> eps)."""
    return hnp.arrays(np.int64, shape, elements=st.integers(-60, 60), unique=True).map(lambda a: a * 0.1)


SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)
SHAPES1 = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3)


def check(fn, *arrays, ref=None, const=()):
    """Forward equals ``ref`` (NumPy), inputs are not mutated, and gradcheck passes.

    ``arrays`` become float64 leaf tensors requiring grad; ``const`` are passed after them unchanged.
    """
    ts = [npgan.tensor(np.array(a, dtype=F64), requires_grad=True) for a in arrays]
    before = [t.numpy().copy() for t in ts]
    out = fn(*ts, *const)
    assert isinstance(out, npgan.Tensor)
    assert out.dtype == F64, f"float64 inputs gave a {out.dtype} output"
    if ref is not None:
        want = np.asarray(ref(*arrays, *const))
        assert out.shape == want.shape, f"shape {out.shape} != NumPy's {want.shape}"
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-12, atol=1e-12)
    out.backward(np.random.default_rng(0).standard_normal(out.shape))
    for t, b in zip(ts, before):
        np.testing.assert_array_equal(t.numpy(), b, err_msg="an op mutated its input")
        assert t.grad is not None and t.grad.shape == t.shape and t.grad.dtype == F64
    assert npgan.gradcheck(lambda *xs: fn(*xs, *const), ts)


# ============================================================================ arithmetic
BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
    "add_fn": (ops.add, np.add),
    "sub_fn": (ops.sub, np.subtract),
    "mul_fn": (ops.mul, np.multiply),
    "div_fn": (ops.div, np.divide),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data(), shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                                  max_side=3))
def test_binary_broadcasting(name, data, shapes):
    fn, ref = BINARY[name]
    sa, sb = shapes.input_shapes
    a = data.draw(arr(sa), label="a")
    b = data.draw(away_from_zero(sb) if name.startswith("div") else arr(sb), label="b")
    check(fn, a, b, ref=ref)


@given(a=arr((3, 1)), b=arr((1, 4)))
def test_binary_size_one_axes_on_both_sides(a, b):
    for fn, ref in BINARY.values():
        check(fn, a, b + np.sign(b) * 0.5 + (b == 0), ref=ref)


SCALAR = {
    "t+s": (lambda x, s: x + s, lambda x, s: x + s),
    "s+t": (lambda x, s: s + x, lambda x, s: s + x),
    "t-s": (lambda x, s: x - s, lambda x, s: x - s),
    "s-t": (lambda x, s: s - x, lambda x, s: s - x),
    "t*s": (lambda x, s: x * s, lambda x, s: x * s),
    "s*t": (lambda x, s: s * x, lambda x, s: s * x),
    "t/s": (lambda x, s: x / s, lambda x, s: x / s),
    "s/t": (lambda x, s: s / x, lambda x, s: s / x),
    "np_s*t": (lambda x, s: np.float64(s) * x, lambda x, s: s * x),
    "np_s-t": (lambda x, s: np.float64(s) - x, lambda x, s: s - x),
}


@pytest.mark.parametrize("name", sorted(SCALAR))
@given(shape=SHAPES, data=st.data(), s=st.one_of(floats(0.5, 3.0), floats(-3.0, -0.5)))
def test_scalar_operands(name, shape, data, s):
    fn, ref = SCALAR[name]
    x = data.draw(away_from_zero(shape))
    check(fn, x, ref=ref, const=(s,))


@given(shape=SHAPES, data=st.data())
def test_neg(shape, data):
    check(lambda x: -x, data.draw(arr(shape)), ref=np.negative)
    check(ops.neg, data.draw(arr(shape)), ref=np.negative)


@given(shape=SHAPES, data=st.data(), p=st.sampled_from([2, 3, 1, 0.5, 1.5, -1, -2.5]))
def test_pow_scalar(shape, data, p):
    x = data.draw(arr(shape, 0.3, 2.0))  # positive: x ** 0.5, x ** -2.5 are real and smooth
    check(lambda t: t ** p, x, ref=lambda a: a ** p)
    check(lambda t: ops.pow(t, p), x, ref=lambda a: a ** p)


def test_pow_zero_has_zero_gradient_everywhere():
    x = npgan.Tensor(np.array([0.0, -1.0, 2.0]), requires_grad=True)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0])


@given(shape=SHAPES, data=st.data())
def test_square_integer_power_of_negative_values(shape, data):
    x = data.draw(arr(shape))
    check(ops.square, x, ref=np.square)
    check(lambda t: t ** 3, x, ref=lambda a: a ** 3)


# ============================================================================ matmul
@st.composite
def matmul_shapes(draw):
    m, k, n = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3))
    ba, bb = batch.input_shapes
    a_vec, b_vec = draw(st.booleans()), draw(st.booleans())
    sa = (k,) if a_vec else ba + (m, k)
    sb = (k,) if b_vec else bb + (k, n)
    return sa, sb


@given(shapes=matmul_shapes(), data=st.data())
def test_matmul(shapes, data):
    sa, sb = shapes
    a, b = data.draw(arr(sa)), data.draw(arr(sb))
    check(lambda x, y: x @ y, a, b, ref=np.matmul)
    check(ops.matmul, a, b, ref=np.matmul)


@pytest.mark.parametrize("sa,sb", [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((4, 2, 3), (3,)),
                                   ((3,), (4, 3, 2)), ((2, 1, 2, 3), (4, 3, 2)), ((2, 3), (5, 3, 2))])
def test_matmul_vector_and_batched_cases(sa, sb):
    rs = np.random.default_rng(3)
    check(ops.matmul, rs.standard_normal(sa), rs.standard_normal(sb), ref=np.matmul)


# ============================================================================ reductions
@st.composite
def shape_and_axis(draw, min_dims=1):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=3))
    nd = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none" or nd == 0:
        axis = None
    elif kind == "int":
        axis = draw(st.integers(-nd, nd - 1))
    else:
        axes = draw(st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True))
        axis = tuple(a - nd if draw(st.booleans()) else a for a in axes)  # mix negative axes in
    return shape, axis, draw(st.booleans())


@given(sak=shape_and_axis(min_dims=0), data=st.data())
def test_sum(sak, data):
    shape, axis, keepdims = sak
    x = data.draw(arr(shape))
    check(lambda t: t.sum(axis=axis, keepdims=keepdims), x, ref=lambda a: np.sum(a, axis, keepdims=keepdims))
    check(lambda t: ops.sum(t, axis, keepdims), x, ref=lambda a: np.sum(a, axis, keepdims=keepdims))


@given(sak=shape_and_axis(min_dims=0), data=st.data())
def test_mean(sak, data):
    shape, axis, keepdims = sak
    x = data.draw(arr(shape))
    check(lambda t: t.mean(axis=axis, keepdims=keepdims), x,
          ref=lambda a: np.mean(a, axis, keepdims=keepdims))


@pytest.mark.parametrize("which", ["max", "min"])
@given(sak=shape_and_axis(min_dims=0), data=st.data())
def test_max_min(which, sak, data):
    shape, axis, keepdims = sak
    x = data.draw(distinct(shape))
    fn = ops.max if which == "max" else ops.min
    ref = np.max if which == "max" else np.min
    check(lambda t: fn(t, axis, keepdims), x, ref=lambda a: ref(a, axis=axis, keepdims=keepdims))
    method = getattr(npgan.Tensor, which)
    check(lambda t: method(t, axis=axis, keepdims=keepdims), x,
          ref=lambda a: ref(a, axis=axis, keepdims=keepdims))


def test_max_ties_share_the_gradient():
    x = npgan.Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]), requires_grad=True)
    ops.max(x, axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])


@given(sak=shape_and_axis(min_dims=1), data=st.data(), unbiased=st.booleans())
def test_var(sak, data, unbiased):
    shape, axis, keepdims = sak
    n = int(np.prod(shape)) if axis is None else int(np.prod([shape[a] for a in np.atleast_1d(axis)]))
    assume(not unbiased or n > 1)
    x = data.draw(arr(shape))
    check(lambda t: ops.var(t, axis, keepdims, unbiased), x,
          ref=lambda a: np.var(a, axis=axis, keepdims=keepdims, ddof=int(unbiased)))


# ============================================================================ shapes
@st.composite
def shape_and_reshape(draw):
    shape = draw(SHAPES)
    size = int(np.prod(shape))
    divisors = [d for d in range(1, size + 1) if size % d == 0]
    d = draw(st.sampled_from(divisors))
    target = draw(st.sampled_from([(size,), (d, size // d), (size // d, 1, d), (-1,), (d, -1), ()
                                   if size == 1 else (size, 1), shape[::-1]]))
    return shape, target


@given(ss=shape_and_reshape(), data=st.data(), as_args=st.booleans())
def test_reshape(ss, data, as_args):
    shape, target = ss
    x = data.draw(arr(shape))
    if as_args and target:
        check(lambda t: t.reshape(*target), x, ref=lambda a: a.reshape(target))
    else:
        check(lambda t: ops.reshape(t, target), x, ref=lambda a: a.reshape(target))


@given(shape=SHAPES1, data=st.data())
def test_permute_and_transpose(shape, data):
    nd = len(shape)
    x = data.draw(arr(shape))
    perm = tuple(data.draw(st.permutations(range(nd))))
    neg = tuple(p - nd if data.draw(st.booleans()) else p for p in perm)
    check(lambda t: t.permute(*neg), x, ref=lambda a: a.transpose(perm))
    check(lambda t: ops.permute(t, neg), x, ref=lambda a: a.transpose(perm))
    d0, d1 = data.draw(st.integers(-nd, nd - 1)), data.draw(st.integers(-nd, nd - 1))
    check(lambda t: t.transpose(d0, d1), x, ref=lambda a: np.swapaxes(a, d0, d1))
    check(lambda t: t.T, x, ref=lambda a: a.T)


@given(shape=SHAPES1, data=st.data())
def test_getitem_basic(shape, data):
    x = data.draw(arr(shape))
    key = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    check(lambda t: t[key], x, ref=lambda a: a[key])


@given(shape=SHAPES1, data=st.data())
def test_getitem_integer_arrays_with_repeats(shape, data):
    x = data.draw(arr(shape))
    n0 = shape[0]
    idx = data.draw(st.lists(st.integers(-n0, n0 - 1), min_size=1, max_size=7), label="idx")
    idx = idx + idx[:1]  # at least one repeated index: its gradient must accumulate
    form = data.draw(st.sampled_from(["list", "array", "tensor"]))
    key = idx if form == "list" else np.array(idx) if form == "array" else npgan.Tensor(np.array(idx))
    check(lambda t: t[key], x, ref=lambda a: a[np.array(idx)])
    if len(shape) >= 2:
        n1 = shape[1]
        j = data.draw(st.lists(st.integers(0, n1 - 1), min_size=len(idx), max_size=len(idx)), label="j")
        check(lambda t: t[np.array(idx), np.array(j)], x, ref=lambda a: a[np.array(idx), np.array(j)])
        check(lambda t: t[:, np.array(j)], x, ref=lambda a: a[:, np.array(j)])


def test_getitem_repeated_index_gradient_value():
    x = npgan.Tensor(np.arange(4.0), requires_grad=True)
    x[np.array([1, 1, 3, 1])].sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 3, 0, 1])


@given(shape=SHAPES1, data=st.data())
def test_getitem_boolean_mask(shape, data):
    x = data.draw(arr(shape))
    mask = data.draw(hnp.arrays(bool, shape))
    check(lambda t: t[mask], x, ref=lambda a: a[mask])


@st.composite
def cat_inputs(draw):
    base = list(draw(SHAPES1))
    nd = len(base)
    axis = draw(st.integers(-nd, nd - 1))
    k = draw(st.integers(1, 3))
    shapes = []
    for _ in range(k):
        s = list(base)
        s[axis] = draw(st.integers(1, 3))
        shapes.append(tuple(s))
    return shapes, axis


@given(sa=cat_inputs(), data=st.data())
def test_concatenate(sa, data):
    shapes, axis = sa
    xs = [data.draw(arr(s)) for s in shapes]
    check(lambda *ts: ops.concatenate(list(ts), axis=axis), *xs, ref=lambda *a: np.concatenate(a, axis=axis))
    check(lambda *ts: npgan.cat(ts, axis), *xs, ref=lambda *a: np.concatenate(a, axis=axis))


@given(shape=SHAPES, data=st.data(), k=st.integers(1, 3))
def test_stack(shape, data, k):
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    xs = [data.draw(arr(shape)) for _ in range(k)]
    check(lambda *ts: ops.stack(list(ts), axis=axis), *xs, ref=lambda *a: np.stack(a, axis=axis))


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=1, min_dims=0, max_dims=3, max_side=3),
       data=st.data())
def test_broadcast_to(shapes, data):
    x = data.draw(arr(shapes.input_shapes[0]))
    target = shapes.result_shape
    check(lambda t: ops.broadcast_to(t, target), x, ref=lambda a: np.broadcast_to(a, target))


@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=2), data=st.data())
def test_flatten_squeeze_unsqueeze(shape, data):
    x = data.draw(arr(shape))
    nd = len(shape)
    s, e = sorted((data.draw(st.integers(0, nd - 1)), data.draw(st.integers(0, nd - 1))))
    want = shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:]
    check(lambda t: ops.flatten(t, s, e), x, ref=lambda a: a.reshape(want))
    check(ops.squeeze, x, ref=np.squeeze)
    ax = data.draw(st.integers(-nd - 1, nd))
    check(lambda t: ops.unsqueeze(t, ax), x, ref=lambda a: np.expand_dims(a, ax))


def test_astype_round_trip_gradient():
    x = npgan.Tensor(np.array([1.5, -2.0]), requires_grad=True)
    y = ops.astype(x, np.float32)
    assert y.dtype == np.float32
    (y * y).sum().backward()
    assert x.grad.dtype == F64
    np.testing.assert_array_equal(x.grad, [3.0, -4.0])
    assert ops.astype(x, F64) is x


# ============================================================================ elementwise math
@given(shape=SHAPES, data=st.data())
def test_exp_log_sqrt(shape, data):
    check(ops.exp, data.draw(arr(shape)), ref=np.exp)
    check(lambda t: t.exp(), data.draw(arr(shape)), ref=np.exp)
    pos = data.draw(arr(shape, 0.2, 3.0))
    check(ops.log, pos, ref=np.log)
    check(ops.sqrt, pos, ref=np.sqrt)
    check(lambda t: t.sqrt().log(), pos, ref=lambda a: np.log(np.sqrt(a)))


@given(shape=SHAPES, data=st.data())
def test_abs(shape, data):
    x = data.draw(away_from_zero(shape, 0.05))
    check(ops.abs, x, ref=np.abs)
    check(abs, x, ref=np.abs)


@st.composite
def clip_case(draw):
    shape = draw(SHAPES)
    lo = draw(st.one_of(st.none(), floats(-1.0, 0.0)))
    hi = draw(st.one_of(st.none(), floats(0.1, 1.0)) if lo is not None else floats(0.1, 1.0))

    def ok(v):
        return all(b is None or abs(v - b) > 1e-3 for b in (lo, hi))

    x = draw(hnp.arrays(F64, shape, elements=floats().filter(ok)))
    return x, lo, hi


@given(case=clip_case())
def test_clip(case):
    x, lo, hi = case
    check(lambda t: ops.clip(t, lo, hi), x, ref=lambda a: np.clip(a, lo, hi))
    check(lambda t: t.clamp(min=lo, max=hi), x, ref=lambda a: np.clip(a, lo, hi))


def test_clip_gradient_is_zero_outside_and_one_inside():
    x = npgan.Tensor(np.array([-2.0, -0.5, 0.0, 0.5, 2.0]), requires_grad=True)
    ops.clip(x, -1.0, 1.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 1, 1, 1, 0])


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3),
       data=st.data())
def test_where(shapes, data):
    sc, sa, sb = shapes.input_shapes
    cond = data.draw(hnp.arrays(bool, sc), label="cond")
    a, b = data.draw(arr(sa)), data.draw(arr(sb))
    check(lambda x, y: ops.where(cond, x, y), a, b, ref=lambda x, y: np.where(cond, x, y))
    check(lambda x, y: ops.where(npgan.Tensor(cond), x, y), a, b, ref=lambda x, y: np.where(cond, x, y))


@given(shape=SHAPES, data=st.data(), c=floats(-1, 1))
def test_where_with_a_constant_branch(shape, data, c):
    cond = data.draw(hnp.arrays(bool, shape))
    x = data.draw(arr(shape))
    check(lambda t: ops.where(cond, t, c), x, ref=lambda a: np.where(cond, a, c))
    check(lambda t: ops.where(cond, c, t), x, ref=lambda a: np.where(cond, c, a))


@pytest.mark.parametrize("which", ["maximum", "minimum"])
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       data=st.data())
def test_maximum_minimum(which, shapes, data):
    sa, sb = shapes.input_shapes
    # a on the 0.1 grid, b half-way between grid points: never a tie, always >= 0.05 apart
    a = data.draw(hnp.arrays(np.int64, sa, elements=st.integers(-20, 20))) * 0.1
    b = data.draw(hnp.arrays(np.int64, sb, elements=st.integers(-20, 20))) * 0.1 + 0.05
    fn, ref = getattr(ops, which), getattr(np, which)
    check(fn, a, b, ref=ref)
    check(lambda x: fn(x, 0.05), a, ref=lambda x: ref(x, 0.05))


def test_maximum_tie_splits_the_gradient():
    a = npgan.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = npgan.Tensor(np.array([1.0, 3.0]), requires_grad=True)
    ops.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.5, 0.0])
    np.testing.assert_array_equal(b.grad, [0.5, 1.0])


# ============================================================================ composites
@given(shape=SHAPES, data=st.data())
def test_composite_expression_reusing_an_input(shape, data):
    """x used several times in one graph: the gradients of every use add up."""
    x = data.draw(arr(shape, 0.2, 2.0))
    check(lambda t: (t * t + t.exp() / t - t.sqrt() * 3.0).sum(),
          x, ref=lambda a: (a * a + np.exp(a) / a - np.sqrt(a) * 3.0).sum())
