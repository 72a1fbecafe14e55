"""Property tests of npgan.functional: forward against a NumPy formula, backward by gradcheck (float64).

Also the numerics of the fused BCE with extreme logits (+-1e4, float32 and float64), and the softmax
cross-entropy (gradcheck, PyTorch parity, huge logits, bad input).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, torch_or_skip
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import npgan
import npgan.functional as F

F64 = np.float64
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)


def floats(lo=-3.0, hi=3.0):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


def arr(shape, lo=-3.0, hi=3.0):
    return hnp.arrays(F64, shape, elements=floats(lo, hi))


def away_from_zero(shape, lo=0.02, hi=3.0):
    return hnp.arrays(F64, shape, elements=st.one_of(floats(lo, hi), floats(-hi, -lo)))


def check(fn, *arrays, ref=None, rtol=1e-12, atol=1e-12):
    """Forward equals ``ref`` (NumPy), inputs are not mutated, gradcheck passes; returns the output."""
    ts = [npgan.tensor(np.array(a, dtype=F64), requires_grad=True) for a in arrays]  # on the current device
    before = [t.numpy().copy() for t in ts]
    out = fn(*ts)
    assert out.dtype == F64, f"float64 inputs gave a {out.dtype} output"
    if ref is not None:
        want = np.asarray(ref(*arrays))
        assert out.shape == want.shape, f"shape {out.shape} != reference {want.shape}"
        np.testing.assert_allclose(out.numpy(), want, rtol=rtol, atol=atol)
    out.backward(np.random.default_rng(0).standard_normal(out.shape))
    for t, b in zip(ts, before):
        np.testing.assert_array_equal(t.numpy(), b, err_msg="a function mutated its input")
        assert t.grad is not None and t.grad.shape == t.shape and t.grad.dtype == F64
    assert npgan.gradcheck(fn, ts)
    return out


def sig(a):
    return 1.0 / (1.0 + np.exp(-a))


# ============================================================================ linear
@st.composite
def linear_case(draw):
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    fin, fout = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    x = draw(arr(batch + (fin,)))
    w = draw(arr((fout, fin)))
    b = draw(arr((fout,)))
    return x, w, b, draw(st.booleans())


@given(case=linear_case())
def test_linear(device, case):
    x, w, b, with_bias = case
    if with_bias:
        check(F.linear, x, w, b, ref=lambda x, w, b: x @ w.T + b)
    else:
        check(F.linear, x, w, ref=lambda x, w: x @ w.T)


def test_linear_with_constant_weight_sends_gradient_to_x_only():
    x = npgan.Tensor(np.ones((2, 3)), requires_grad=True)
    w = npgan.Tensor(np.arange(6.0).reshape(2, 3))
    F.linear(x, w).sum().backward()
    np.testing.assert_array_equal(x.grad, np.tile(w.data.sum(0), (2, 1)))
    assert w.grad is None


# ============================================================================ activations
ACTIVATIONS = {
    "relu": (F.relu, lambda a: np.maximum(a, 0)),
    "leaky_relu": (lambda t: F.leaky_relu(t), lambda a: np.where(a > 0, a, 0.01 * a)),
    "leaky_relu_0.2": (lambda t: F.leaky_relu(t, 0.2), lambda a: np.where(a > 0, a, 0.2 * a)),
    "sigmoid": (F.sigmoid, sig),
    "tanh": (F.tanh, np.tanh),
    "softplus": (F.softplus, lambda a: np.log1p(np.exp(a))),
    "logsigmoid": (F.logsigmoid, lambda a: -np.log1p(np.exp(-a))),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(shape=SHAPES, data=st.data())
def test_activation(device, name, shape, data):
    fn, ref = ACTIVATIONS[name]
    x = data.draw(away_from_zero(shape))  # relu/leaky_relu kink at 0; harmless for the smooth ones
    check(fn, x, ref=ref)


@given(slope=st.floats(0.0, 1.0), shape=SHAPES, data=st.data())
def test_leaky_relu_any_slope(device, slope, shape, data):
    x = data.draw(away_from_zero(shape))
    check(lambda t: F.leaky_relu(t, slope), x, ref=lambda a: np.where(a > 0, a, slope * a))


@pytest.mark.parametrize("name", ["sigmoid", "softplus", "logsigmoid", "tanh"])
def test_smooth_activations_in_the_tails(name):
    """Large |x|: finite values and gradients, the exact limits, no overflow warnings."""
    fn, _ = ACTIVATIONS[name]
    x = np.array([-800.0, -40.0, -1e-3, 0.0, 1e-3, 40.0, 800.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        t = npgan.Tensor(x, requires_grad=True)
        y = fn(t)
        y.sum().backward()
    assert np.all(np.isfinite(y.data)) and np.all(np.isfinite(t.grad))
    want_y = {"sigmoid": [0, 0, None, 0.5, None, 1, 1], "softplus": [0, None, None, np.log(2), None, 40, 800],
              "logsigmoid": [-800, -40, None, -np.log(2), None, None, 0],
              "tanh": [-1, -1, None, 0, None, 1, 1]}
    for got, want in zip(y.data, want_y[name]):
        if want is not None:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
    want_g = {"sigmoid": [0, None, None, 0.25, None, None, 0], "softplus": [0, None, None, 0.5, None, 1, 1],
              "logsigmoid": [1, 1, None, 0.5, None, None, 0], "tanh": [0, 0, None, 1, None, 0, 0]}
    for got, want in zip(t.grad, want_g[name]):
        if want is not None:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


# ============================================================================ dropout
@given(shape=SHAPES, data=st.data(), p=st.sampled_from([0.1, 0.5, 0.9]), seed=st.integers(0, 2 ** 16))
def test_dropout_fixed_seed(shape, data, p, seed):
    x = data.draw(arr(shape))

    def fn(t):
        npgan.manual_seed(seed)  # the same mask on every call, so central differences see one function
        return F.dropout(t, p)

    out = check(fn, x)
    npgan.manual_seed(seed)
    out2 = F.dropout(npgan.Tensor(x), p)
    np.testing.assert_array_equal(out.data, out2.data)
    kept = out.data != 0
    np.testing.assert_allclose(out.data[kept], x[kept] / (1 - p), rtol=1e-12)


def test_dropout_statistics_and_identity_cases():
    x = npgan.ones(200, 100, dtype=F64)
    y = F.dropout(x, 0.3)
    frac = float((y.data == 0).mean())
    assert abs(frac - 0.3) < 0.02, frac
    assert np.unique(y.data).tolist() == [0.0, 1 / 0.7]
    assert F.dropout(x, 0.3, training=False) is x
    assert F.dropout(x, 0.0) is x
    assert not F.dropout(x, 1.0).data.any()


# ============================================================================ binary cross-entropy
REDUCTIONS = ["mean", "sum", "none"]


def _reduce(v, reduction):
    return v.mean() if reduction == "mean" else v.sum() if reduction == "sum" else v


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(shape=SHAPES, data=st.data())
def test_bce_with_logits(device, reduction, shape, data):
    x = data.draw(arr(shape, -8, 8))
    t = data.draw(arr(shape, 0, 1))

    def ref(x, t):
        return _reduce(-(t * np.log(sig(x)) + (1 - t) * np.log(1 - sig(x))), reduction)

    check(lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction), x, t, ref=ref, rtol=1e-10)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(shape=SHAPES, data=st.data())
def test_bce_probabilities(device, reduction, shape, data):
    p = data.draw(arr(shape, 0.05, 0.95))
    t = data.draw(arr(shape, 0, 1))

    def ref(p, t):
        return _reduce(-(t * np.log(p) + (1 - t) * np.log1p(-p)), reduction)

    check(lambda a, b: F.binary_cross_entropy(a, b, reduction), p, t, ref=ref)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target", [0.0, 1.0, 0.9])
def test_bce_with_scalar_target(device, reduction, target):
    x = np.array([[-1.0, 0.5], [2.0, -3.0]])
    check(lambda a: F.binary_cross_entropy_with_logits(a, target, reduction), x,
          ref=lambda a: _reduce(np.logaddexp(0, a) - a * target, reduction))
    p = sig(x)
    check(lambda a: F.binary_cross_entropy(a, target, reduction), p,
          ref=lambda a: _reduce(-(target * np.log(a) + (1 - target) * np.log1p(-a)), reduction))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_huge_logits(dtype):
    """Logits of +-1e4: loss exactly max(x,0) - x*t (the log term underflows to 0), gradient sigma(x) - t."""
    x = npgan.Tensor(np.array([1e4, -1e4, 1e4, -1e4], dtype=dtype), requires_grad=True)
    t = np.array([1.0, 0.0, 0.0, 1.0], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss = F.binary_cross_entropy_with_logits(x, t, "none")
        loss.backward(np.ones(4, dtype=dtype))
    assert loss.dtype == dtype and x.grad.dtype == dtype
    np.testing.assert_array_equal(loss.data, [0.0, 0.0, 1e4, 1e4])
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 1.0, -1.0])
    x.grad = None
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        m = F.binary_cross_entropy_with_logits(x, t)
        m.backward()
    # exact in either dtype: σ(±1e4) is 0 or 1, the mean of (0, 0, 1e4, 1e4) and the quarters are representable
    assert m.item() == pytest.approx(5e3, rel=1e-6)
    np.testing.assert_allclose(x.grad, [0.0, 0.0, 0.25, -0.25], rtol=1e-6)


def test_bce_probabilities_clamps_the_log_at_minus_100():
    p = npgan.Tensor(np.array([0.0, 1.0, 0.0, 1.0]), requires_grad=True)
    t = np.array([1.0, 0.0, 0.0, 1.0])
    loss = F.binary_cross_entropy(p, t, "none")
    np.testing.assert_array_equal(loss.data, [100.0, 100.0, 0.0, 0.0])
    loss.sum().backward()
    assert np.all(np.isfinite(p.grad))


# ============================================================================ softmax cross-entropy
def _ce_inputs(rs, n, c, scale):
    x = npgan.Tensor(rs.standard_normal((n, c)) * scale, requires_grad=True, dtype=np.float64)
    t = rs.integers(0, c, n)
    return x, t


@settings(max_examples=30)
@given(n=st.integers(1, 4), c=st.integers(2, 5), seed=st.integers(0, 2**31 - 1),
       scale=st.sampled_from([0.1, 1.0, 5.0]), reduction=st.sampled_from(REDUCTIONS))
def test_softmax_cross_entropy_gradcheck(n, c, seed, scale, reduction):
    npgan.set_default_dtype("float64")
    x, t = _ce_inputs(np.random.default_rng(seed), n, c, scale)
    fn = lambda a: F.softmax_cross_entropy(a, t, reduction)
    assert npgan.gradcheck(fn, [x], atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_softmax_cross_entropy_matches_torch(reduction):
    torch = torch_or_skip()
    rs = np.random.default_rng(0)
    x, t = _ce_inputs(rs, 7, 5, 3.0)
    y = F.softmax_cross_entropy(x, t, reduction)
    xt = torch.tensor(x.numpy(), requires_grad=True)
    yt = torch.nn.functional.cross_entropy(xt, torch.tensor(t), reduction=reduction)
    assert_close(y, yt, what="loss")
    gy = rs.standard_normal(y.shape)
    y.backward(gy if y.size > 1 else None)
    yt.backward(torch.tensor(gy) if y.size > 1 else None)
    assert_close(x.grad, xt.grad, what="grad of logits")


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    torch = torch_or_skip()
    x = npgan.tensor(np.array([[1e4, -1e4, 0.0], [-3e4, 3e4, 1.0]], np.float32), requires_grad=True)
    t = np.array([1, 1])
    y = F.softmax_cross_entropy(x, t)
    y.backward()
    xt = torch.tensor(x.numpy(), requires_grad=True)
    yt = torch.nn.functional.cross_entropy(xt, torch.tensor(t))
    yt.backward()
    assert np.isfinite(y.item()) and np.all(np.isfinite(x.grad))
    # exact in float32 in both engines: the other exponentials underflow to 0, what is left is integers and halves
    assert_close(y, yt, rtol=1e-6, what="loss")
    assert_close(x.grad, xt.grad, rtol=1e-6, atol=1e-7, what="grad")
    assert x.dtype == np.float32 and y.dtype == np.float32


def test_softmax_cross_entropy_bad_input():
    x = npgan.zeros(3, 4, requires_grad=True)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), got values in \[0, 4\]"):
        F.softmax_cross_entropy(x, [0, 1, 4])
    with pytest.raises(ValueError, match="labels must be integers"):
        F.softmax_cross_entropy(x, np.zeros(3))
    with pytest.raises(ValueError, match=r"labels of shape \(2,\) do not fit logits of shape \(3, 4\)"):
        F.softmax_cross_entropy(x, [0, 1])
    with pytest.raises(ValueError, match=r"logits must be \(N, C\)"):
        F.softmax_cross_entropy(npgan.zeros(4), [0])
    with pytest.raises(ValueError, match="reduction"):
        F.softmax_cross_entropy(x, [0, 1, 2], reduction="avg")


# ============================================================================ batch norm
@st.composite
def bn_case(draw):
    n = draw(st.integers(2, 4))
    c = draw(st.integers(1, 3))
    spatial = draw(st.sampled_from([(), (2,), (2, 2)]))
    # rows 3 apart plus noise in [-1, 1]: every channel's variance is well away from 0
    x = draw(arr((n, c) + spatial, -1.0, 1.0)) + 3.0 * np.arange(n).reshape((n,) + (1,) * (1 + len(spatial)))
    gamma = draw(arr((c,), 0.5, 2.0))
    beta = draw(arr((c,)))
    return x, gamma, beta


def bn_ref(x, g, b, eps, mean=None, var=None):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mu = x.mean(axis=axes) if mean is None else mean
    v = x.var(axis=axes) if var is None else var
    return (x - mu.reshape(shape)) / np.sqrt(v.reshape(shape) + eps) * g.reshape(shape) + b.reshape(shape)


@given(case=bn_case(), eps=st.sampled_from([1e-5, 0.1]))
def test_batch_norm_train(device, case, eps):
    x, g, b = case
    check(lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True, eps=eps), x, g, b,
          ref=lambda x, g, b: bn_ref(x, g, b, eps), rtol=1e-10, atol=1e-10)


@given(case=bn_case(), eps=st.sampled_from([1e-5, 0.1]))
def test_batch_norm_eval(case, eps):
    x, g, b = case
    c = x.shape[1]
    rm, rv = np.linspace(-0.5, 0.5, c), np.linspace(0.5, 2.0, c)
    rm0, rv0 = rm.copy(), rv.copy()
    check(lambda x, g, b: F.batch_norm(x, rm, rv, g, b, training=False, eps=eps), x, g, b,
          ref=lambda x, g, b: bn_ref(x, g, b, eps, rm, rv), rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(rm, rm0)  # eval mode never touches the running statistics
    np.testing.assert_array_equal(rv, rv0)


@given(case=bn_case())
def test_batch_norm_train_updates_running_statistics(case):
    x, g, b = case
    c = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    m = x.size // c
    rm, rv, nbt = np.zeros(c), np.ones(c), np.zeros((), dtype=np.int64)
    for _ in range(2):
        F.batch_norm(npgan.Tensor(x), rm, rv, npgan.Tensor(g), npgan.Tensor(b), training=True, momentum=0.1,
                     num_batches_tracked=nbt)
    mu, var = x.mean(axis=axes), x.var(axis=axes) * m / (m - 1)
    np.testing.assert_allclose(rm, 0.19 * mu, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(rv, 0.81 + 0.19 * var, rtol=1e-12, atol=1e-14)
    assert int(nbt) == 2
    # momentum=None: cumulative average over the batches seen
    rm, rv, nbt = np.zeros(c), np.ones(c), np.zeros((), dtype=np.int64)
    for k in range(3):
        F.batch_norm(npgan.Tensor(x * (k + 1)), rm, rv, training=True, momentum=None, num_batches_tracked=nbt)
    np.testing.assert_allclose(rm, mu * 2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(rv, var * (1 + 4 + 9) / 3, rtol=1e-12, atol=1e-14)
    assert int(nbt) == 3


def test_batch_norm_without_affine_parameters_matches_the_formula():
    rs = np.random.default_rng(0)
    x = rs.standard_normal((5, 3, 2))
    check(lambda t: F.batch_norm(t, None, None, training=True), x,
          ref=lambda a: bn_ref(a, np.ones(3), np.zeros(3), 1e-5), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(0, 2, 3, 3), (1, 2, 0, 0), (2, 2, 3, 0), (0, 2, 0, 0), (0, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_norm_of_an_empty_input_in_evaluation(shape, channels_last):
    """No element: y and gx are empty, gγ = gβ = 0, twice differentiable; training refuses it (m ≤ 1)."""
    c = shape[1]
    x = np.zeros(shape)
    if channels_last and x.ndim == 4:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    xt, g, b = npgan.Tensor(x, requires_grad=True), npgan.Tensor(np.ones(c), True), npgan.Tensor(np.ones(c), True)
    y = F.batch_norm(xt, np.zeros(c), np.ones(c), g, b, training=False)
    assert y.shape == shape
    y.backward(np.ones(shape))
    assert xt.grad.shape == shape
    np.testing.assert_array_equal(g.grad, np.zeros(c))
    np.testing.assert_array_equal(b.grad, np.zeros(c))
    xt2, g2 = npgan.Tensor(x, requires_grad=True), npgan.Tensor(np.ones(c), True)
    gx, = npgan.grad(F.batch_norm(xt2, np.zeros(c), np.ones(c), g2, None, training=False).sum(), [xt2],
                     create_graph=True)
    assert gx.shape == shape
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(npgan.Tensor(x), np.zeros(c), np.ones(c), training=True)


@pytest.mark.parametrize("dtype, eps", [(np.float32, 1e-39), (np.float32, 1.9e-84), (np.float64, 5e-324)])
def test_batch_norm_refuses_an_eps_whose_root_overflows(dtype, eps):
    """A constant channel normalises by 1/√eps: below the dtype's smallest normal number, y or gx is 0·inf."""
    x = npgan.Tensor(np.zeros((2, 1), dtype), requires_grad=True)
    with pytest.raises(ValueError, match="eps must be at least the smallest normal"):
        F.batch_norm(x, None, None, training=True, eps=eps)
    tiny = float(np.finfo(dtype).tiny)  # the smallest eps taken: y and gx stay finite
    y = F.batch_norm(x, None, None, training=True, eps=tiny)
    y.backward(np.ones((2, 1), dtype))
    assert np.isfinite(y.data).all() and np.isfinite(x.grad).all()


def test_functional_sits_below_the_gan_objectives():
    """functional (and kde) never import losses: the objectives are built on the ops, not the other way."""
    import subprocess
    import sys

    code = ("import sys, npgan.functional as F, npgan.kde; "
            "print(sorted(m for m in ('npgan.gan.losses', 'npgan.gan') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
