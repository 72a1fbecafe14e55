"""Fuzzing the public API with hypothesis: every call works or raises one documented, clear exception.

Random shapes (empty ones too), dtypes (bool, int, float16/32/64), nan/inf values, wrong argument types and
out-of-range options go to every op, layer, function, loss, optimizer, loader and file reader. A call either
returns or raises a ValueError/TypeError (npgan's documented exceptions; ``tensor[key]`` may raise IndexError)
with a non-empty one-line message, naming the argument when an option is wrong; it never lets an IndexError,
AttributeError, KeyError or ZeroDivisionError escape from deep inside, and finite inputs to a function defined
for all finite inputs never give a silent nan. ``NPGAN_FUZZ_EXAMPLES`` sets the examples per test (default 25).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import warnings

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.extra import numpy as hnp

import npgan
import npgan.functional as F
from npgan import data, nn, ops, optim
from npgan.eval import metrics
from npgan.gan import losses
from npgan.run.checkpoint import CheckpointError, load_arrays, save_arrays
from npgan.run.experiment import RunError, read_config, write_config
from npgan.run.presets import make_config

fuzz = settings(max_examples=int(os.environ.get("NPGAN_FUZZ_EXAMPLES", "25")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_, np.uint8]
FLOATS = [np.float32, np.float64]


# ============================================================================ strategies and the checker
@st.composite
def arrays(draw, dtypes=DTYPES, shape=None, min_dims=0, max_dims=4, min_side=0, max_side=4, special=True,
           bound=1e3):
    dt = np.dtype(draw(st.sampled_from(dtypes)))
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side))
    if dt.kind == "f":
        width = 8 * dt.itemsize
        finite = st.floats(-bound, bound, width=width)
        elems = st.one_of(finite, st.sampled_from([np.nan, np.inf, -np.inf])) if special and draw(
            st.booleans()) else finite
    elif dt.kind == "b":
        elems = st.booleans()
    else:
        info = np.iinfo(dt)
        elems = st.integers(max(info.min, -50), min(info.max, 50))
    return draw(hnp.arrays(dt, shape, elements=elems))


WRONG = st.sampled_from([None, "abc", [1, "a"], {}, object(), float("nan"), float("inf"), -1, 0, True,
                         (1, 2, 3), b"x", 2.5, -0.5, 1e9])


def outcome(fn, *args, **kwargs):
    """fn's result, or the ValueError/TypeError it raised (checked to carry a one-line message)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            msg = str(exc)
            assert msg.strip(), f"{type(exc).__name__} without a message"
            return exc


def failed(r):
    return isinstance(r, (ValueError, TypeError))


def names(r, *words):
    """The error message mentions one of ``words`` (the argument's name or its bad value)."""
    msg = str(r)
    return any(str(w) in msg for w in words)


def finite(a):
    a = a.data if isinstance(a, npgan.Tensor) else a
    return bool(np.isfinite(np.asarray(a, dtype=np.float64)).all())


def all_finite(x):
    return finite(x) if np.asarray(x).dtype.kind in "fiub" else True


def tensor(a, grad=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = npgan.Tensor(a)
    if grad and t.dtype.kind == "f":
        t.requires_grad_()
    return t


def check_backward(y, *xs, total=True):
    """backward with ones through y works, gives gradients of the inputs' shapes, finite when y is (for functions
    differentiable at every finite input: ``total``)."""
    if not isinstance(y, npgan.Tensor) or not y.requires_grad:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y.backward(np.ones(y.shape, dtype=y.dtype))
    for x in xs:
        if isinstance(x, npgan.Tensor) and x.requires_grad:
            assert x.grad is not None and x.grad.shape == x.shape
            if total and finite(y) and finite(x):
                assert finite(x.grad), "finite input and output, non-finite gradient"


# ============================================================================ elementwise
TOTAL_UNARY = {  # defined for every finite input: finite in, finite out
    "relu": F.relu, "sigmoid": F.sigmoid, "tanh": F.tanh, "softplus": F.softplus, "logsigmoid": F.logsigmoid,
    "abs": ops.abs, "neg": ops.neg, "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
    "leaky_relu_steep": lambda x: F.leaky_relu(x, -1.5),
}
PARTIAL_UNARY = {"exp": ops.exp, "log": ops.log, "sqrt": ops.sqrt, "square": ops.square}


@fuzz
@given(name=st.sampled_from(sorted(TOTAL_UNARY) + sorted(PARTIAL_UNARY)), x=arrays(bound=1e4),
       raw=st.booleans(), grad=st.booleans())
def test_unary_functions(name, x, raw, grad):
    fn = TOTAL_UNARY.get(name) or PARTIAL_UNARY[name]
    t = x if raw else tensor(x, grad)
    y = outcome(fn, t)
    if failed(y):
        assert x.dtype.kind != "f" or name in PARTIAL_UNARY, y  # floats always work
        return
    assert y.shape == x.shape
    assert y.dtype.kind == "f" or x.dtype.kind != "f"
    if name in TOTAL_UNARY and finite(x):
        assert finite(y), (name, x, y)
    check_backward(y, t, total=name in TOTAL_UNARY)


@fuzz
@given(x=arrays(FLOATS), slope=WRONG)
def test_leaky_relu_slope(x, slope):
    r = outcome(F.leaky_relu, tensor(x), slope)
    if failed(r):
        assert names(r, "negative_slope", slope), r
    r = outcome(nn.LeakyReLU, slope)
    if failed(r):
        assert names(r, "negative_slope", slope), r


BINARY = {"add": ops.add, "sub": ops.sub, "mul": ops.mul, "div": ops.div, "maximum": ops.maximum,
          "minimum": ops.minimum, "matmul": ops.matmul}


@fuzz
@given(name=st.sampled_from(sorted(BINARY)), a=arrays(max_dims=3), b=arrays(max_dims=3),
       kinds=st.sampled_from(["tt", "ta", "at", "ts"]))
def test_binary_ops(name, a, b, kinds):
    fn = BINARY[name]
    x = tensor(a, True)
    y = {"tt": tensor(b, True), "ta": b, "at": b, "ts": 1.5}[kinds]
    args = (y, x) if kinds == "at" else (x, y)
    r = outcome(fn, *args)
    if failed(r):
        return
    check_backward(r, x, y, total=name != "div")  # d(a/b)/da = 1/b: a tiny b overflows a float32 gradient
    if name in ("add", "sub", "mul", "maximum", "minimum") and finite(a) and all_finite(b):
        assert finite(r)


@fuzz
@given(x=arrays(), p=st.sampled_from([0, 1, 2, 3, 0.5, -1, -2.5, 1e-3]))
def test_pow(x, p):
    t = tensor(x, True)
    r = outcome(ops.pow, t, p)
    if not failed(r):
        check_backward(r, t, total=p in (0, 1, 2, 3))
    assert failed(outcome(ops.pow, t, t))


# ============================================================================ reductions and shapes
AXES = st.one_of(st.none(), st.integers(-5, 5), st.tuples(st.integers(-4, 4), st.integers(-4, 4)),
                 st.just("a"), st.just(1.5))


@fuzz
@given(x=arrays(), axis=AXES, keepdims=st.booleans(), name=st.sampled_from(["sum", "mean", "max", "min", "var"]))
def test_reductions(x, axis, keepdims, name):
    t = tensor(x, True)
    fn = getattr(ops, name)
    r = outcome(fn, t, axis, keepdims) if name != "var" else outcome(fn, t, axis, keepdims)
    if failed(r):
        if isinstance(axis, int) and not -max(x.ndim, 1) <= axis < max(x.ndim, 1):
            assert names(r, "axis", axis)
        return
    check_backward(r, t)
    if finite(x) and x.size and name in ("sum", "max", "min") and x.dtype.kind == "f":
        assert finite(r)


@fuzz
@given(x=arrays(max_dims=4), shape=st.lists(st.integers(-2, 6), max_size=4), start=st.integers(-5, 5),
       end=st.integers(-5, 5), axis=st.integers(-6, 6),
       perm=st.lists(st.integers(-5, 5), max_size=5))
def test_shape_ops(x, shape, start, end, axis, perm):
    t = tensor(x, True)
    for fn, args in ((ops.reshape, (tuple(shape),)), (ops.flatten, (start, end)), (ops.squeeze, (axis,)),
                     (ops.unsqueeze, (axis,)), (ops.permute, (tuple(perm),)), (ops.transpose, (start, end)),
                     (ops.broadcast_to, (tuple(abs(s) for s in shape),)), (ops.transpose, ())):
        r = outcome(fn, t, *args)
        if not failed(r):
            assert r.size == t.size or fn is ops.broadcast_to
            t.grad = None
            check_backward(r, t)


@fuzz
@given(xs=st.lists(arrays(FLOATS, max_dims=3, min_side=1), max_size=3), axis=st.integers(-4, 4),
       name=st.sampled_from(["cat", "stack"]))
def test_cat_and_stack(xs, axis, name):
    ts = [tensor(x, True) for x in xs]
    r = outcome(getattr(ops, name), ts, axis)
    if not failed(r):
        check_backward(r, *ts)
    assert failed(outcome(getattr(ops, name), []))


@fuzz
@given(x=arrays(min_dims=1, min_side=1), key=st.one_of(st.integers(-6, 6), st.tuples(st.integers(-3, 3),
       st.integers(-3, 3)), st.just(slice(None, None, -1)), st.just([0, 0]), st.just("a"), st.just(None)))
def test_getitem(x, key):
    t = tensor(x, True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = t[key]
    except IndexError as exc:  # Python's own exception for an index outside a sequence, with shapes named
        assert str(t.shape) in str(exc)
        return
    except (TypeError, ValueError) as exc:
        assert str(exc)
        return
    check_backward(r, t)


@fuzz
@given(x=arrays(), lo=st.one_of(st.none(), st.floats(-10, 10), st.just("a")),
       hi=st.one_of(st.none(), st.floats(-10, 10), st.just(float("nan"))))
def test_clip_and_where(x, lo, hi):
    t = tensor(x, True)
    r = outcome(ops.clip, t, lo, hi)
    if not failed(r):
        check_backward(r, t)
        if finite(x):
            assert finite(r)
    c = outcome(ops.where, x > 0 if x.dtype.kind != "b" else x, t, 0.0)
    if not failed(c):
        check_backward(c, t)


# ============================================================================ functional
@fuzz
@given(x=arrays(max_dims=3), w=arrays(max_dims=3), b=st.one_of(st.none(), arrays(max_dims=2)))
def test_linear(x, w, b):
    ts = [tensor(x, True), tensor(w, True)] + ([tensor(b, True)] if b is not None else [])
    r = outcome(F.linear, *ts)
    if not failed(r):
        check_backward(r, *ts)
        if all(finite(a) for a in ts) and all(a.dtype.kind == "f" for a in ts):
            assert finite(r)


@fuzz
@given(x=arrays(FLOATS + [np.float16, np.int64]), p=st.one_of(st.floats(-1, 2), WRONG), training=st.booleans())
def test_dropout(x, p, training):
    t = tensor(x, True)
    r = outcome(F.dropout, t, p, training)
    if failed(r):
        assert names(r, "p", "probability", p), r
        return
    assert r.shape == t.shape
    if finite(x):
        assert finite(r)
    check_backward(r, t)
    m = outcome(nn.Dropout, p)
    if failed(m):
        assert names(m, "p", "probability", p), m


REDUCTIONS = st.sampled_from(["mean", "sum", "none", "avg", None, 3])


@fuzz
@given(x=arrays(bound=1e4), t=st.one_of(arrays(bound=2), st.floats(-1, 2), st.just("a"), st.just([0.5])),
       reduction=REDUCTIONS, logits=st.booleans())
def test_binary_cross_entropies(x, t, reduction, logits):
    fn = F.binary_cross_entropy_with_logits if logits else F.binary_cross_entropy
    xt = tensor(x, True)
    tt = tensor(t, True) if isinstance(t, np.ndarray) else t
    r = outcome(fn, xt, tt, reduction)
    if failed(r):
        if reduction not in ("mean", "sum", "none"):
            assert names(r, "reduction"), r
        return
    check_backward(r, xt, tt)
    t_ok = isinstance(t, float) and 0 <= t <= 1 or isinstance(t, np.ndarray) and finite(t) and (
        np.asarray(t, np.float64).min(initial=0) >= 0 and np.asarray(t, np.float64).max(initial=0) <= 1)
    if logits and finite(x) and t_ok and x.size:
        assert finite(r), (x, t, r)


@fuzz
@given(x=arrays(FLOATS + [np.int64], max_dims=4, max_side=3), training=st.booleans(),
       momentum=st.one_of(st.none(), st.floats(-1, 2), st.just("a")), eps=st.one_of(st.floats(-1, 1), WRONG),
       stats=st.booleans())
def test_batch_norm(x, training, momentum, eps, stats):
    C = x.shape[1] if x.ndim >= 2 else 1
    rm = np.zeros(C, x.dtype if x.dtype.kind == "f" else np.float32) if stats else None
    rv = np.ones(C, x.dtype if x.dtype.kind == "f" else np.float32) if stats else None
    t = tensor(x, True)
    r = outcome(F.batch_norm, t, rm, rv, training=training, momentum=momentum, eps=eps,
                num_batches_tracked=np.zeros((), np.int64))
    if failed(r):
        return
    check_backward(r, t)
    if finite(x) and isinstance(eps, float) and eps > 0 and x.dtype.kind == "f":
        assert finite(r), (x, eps, r)
    if stats:
        assert finite(rm) == finite(rv) or not finite(x)


CONV_ARG = st.one_of(st.integers(-1, 3), st.tuples(st.integers(0, 3), st.integers(0, 3)), st.just((1, 2, 3)),
                     st.just(1.5), st.just("a"), st.just(None))


@fuzz
@given(x=arrays(FLOATS + [np.int64], max_dims=5, max_side=5), w=arrays(FLOATS, max_dims=5, max_side=3),
       stride=CONV_ARG, padding=CONV_ARG, dilation=CONV_ARG, transposed=st.booleans(),
       output_padding=st.integers(-1, 2))
def test_convolutions(x, w, stride, padding, dilation, transposed, output_padding):
    xt, wt = tensor(x, True), tensor(w, True)
    if transposed:
        r = outcome(F.conv_transpose2d, xt, wt, None, stride, padding, output_padding, dilation)
    else:
        r = outcome(F.conv2d, xt, wt, None, stride, padding, dilation)
    if failed(r):
        return
    check_backward(r, xt, wt)
    if finite(x) and finite(w):
        assert finite(r)


# ============================================================================ layers
LAYER_ARG = st.one_of(st.integers(-1, 4), WRONG)


@fuzz
@given(kind=st.sampled_from(["Linear", "Conv2d", "ConvTranspose2d", "BatchNorm1d", "BatchNorm2d", "Unflatten",
                             "Flatten"]),
       a=LAYER_ARG, b=LAYER_ARG, c=LAYER_ARG, x=arrays(DTYPES, max_dims=4, max_side=4))
def test_layers_construct_and_run(kind, a, b, c, x):
    ctor = {"Linear": lambda: nn.Linear(a, b), "Conv2d": lambda: nn.Conv2d(a, b, c),
            "ConvTranspose2d": lambda: nn.ConvTranspose2d(a, b, c), "BatchNorm1d": lambda: nn.BatchNorm1d(a, b),
            "BatchNorm2d": lambda: nn.BatchNorm2d(a, momentum=b), "Unflatten": lambda: nn.Unflatten(a, (b, c)),
            "Flatten": lambda: nn.Flatten(a, b)}[kind]
    m = outcome(ctor)
    if failed(m):
        return
    t = tensor(x, True)
    for train in (True, False):
        m.train(train)
        r = outcome(m, t)
        if failed(r):
            continue
        if finite(x) and x.dtype.kind == "f" and kind not in ("Unflatten", "Flatten"):
            assert finite(r), (kind, x, r)
        t.grad = None
        check_backward(r, t)


@fuzz
@given(state=st.dictionaries(st.sampled_from(["0.weight", "0.bias", "1.weight", "x"]),
                             st.one_of(arrays(max_dims=2, max_side=3), WRONG), max_size=4),
       strict=st.booleans())
def test_load_state_dict(state, strict):
    m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    before = {k: v.copy() for k, v in m.state_dict().items()}
    r = outcome(m.load_state_dict, state, strict)
    if failed(r):
        after = m.state_dict()
        assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing changed
    assert failed(outcome(m.load_state_dict, "not a dict"))


# ============================================================================ losses
@fuzz
@given(x=arrays(FLOATS + [np.float16, np.int64], max_dims=3, max_side=5, bound=10),
       bandwidth=st.one_of(st.sampled_from(["scott", "silverman", "median", "wide"]), st.floats(-1, 2), WRONG),
       loo=st.booleans())
def test_kde_entropy(x, bandwidth, loo):
    t = tensor(x, True)
    r = outcome(losses.kde_entropy, t, bandwidth, loo)
    if failed(r):
        if not (isinstance(bandwidth, str) and bandwidth in losses.BANDWIDTH_RULES or isinstance(
                bandwidth, float) and bandwidth > 0):
            assert names(r, "bandwidth", bandwidth, "x must", "x contains", "points"), r
        return
    assert finite(r), (x, bandwidth, r)
    check_backward(r, t)
    outcome(losses.kde_bandwidth, t, bandwidth)


@fuzz
@given(d_real=arrays(max_dims=2, bound=1e4), d_fake=arrays(max_dims=2, bound=1e4),
       kind=st.sampled_from(list(losses.LOSS_KINDS) + ["bogus", None]),
       lam=st.one_of(st.floats(-1, 1), WRONG), fake=st.one_of(st.none(), arrays(FLOATS, shape=(4, 2), bound=10)))
def test_gan_losses(d_real, d_fake, kind, lam, fake):
    dr, df = tensor(d_real, True), tensor(d_fake, True)
    r = outcome(losses.discriminator_loss, dr, df, kind)
    if failed(r):
        if kind not in losses.LOSS_KINDS:
            assert names(r, "kind", kind)
    else:
        if finite(d_real) and finite(d_fake) and d_real.dtype.kind == d_fake.dtype.kind == "f":
            assert finite(r)
        check_backward(r, dr, df)
    g = outcome(losses.generator_loss, df, kind, tensor(fake, True) if fake is not None else None, lam, 0.5)
    if failed(g):
        if kind in losses.LOSS_KINDS and not (isinstance(lam, (int, float)) and not isinstance(lam, bool)
                                              and lam >= 0 and math.isfinite(lam)) and df.size:
            assert names(g, "entropy_weight", lam), g
        return
    loss, h = g
    if finite(d_fake) and d_fake.dtype.kind == "f":
        assert finite(loss)
    check_backward(loss, df)
    assert failed(outcome(losses.discriminator_loss, d_real, d_fake, "hinge"))  # raw arrays: TypeError


# ============================================================================ optimizers
@fuzz
@given(name=st.sampled_from(["SGD", "Adam", "RMSprop"]),
       lr=st.one_of(st.floats(-1, 1), WRONG), wd=st.one_of(st.floats(-1, 1), WRONG),
       extra=st.one_of(st.floats(-1, 2), WRONG), extra2=st.one_of(st.floats(-1, 2), WRONG),
       grad=arrays(FLOATS, shape=(3, 2), bound=1e3))
def test_optimizers(name, lr, wd, extra, extra2, grad):
    p = npgan.Tensor(np.ones((3, 2), np.float32), requires_grad=True)
    kw = {"SGD": dict(momentum=extra, dampening=extra2), "Adam": dict(betas=(extra, extra2), eps=1e-8),
          "RMSprop": dict(alpha=extra, eps=extra2)}[name]
    opt = outcome(getattr(optim, name), [p], lr=lr, weight_decay=wd, **kw)
    if failed(opt):
        assert names(opt, "lr", "learning rate", "weight_decay", "momentum", "dampening", "betas", "alpha", "eps",
                     "Nesterov"), opt
        return
    p.grad = grad.astype(np.float32)
    r = outcome(opt.step)
    assert not failed(r), r
    if finite(grad):
        assert finite(p), (name, lr, wd, kw, grad, p.data)
    sd = opt.state_dict()
    opt.load_state_dict(sd)
    assert failed(outcome(opt.load_state_dict, {"state": {}, "param_groups": "x"}))
    assert failed(outcome(opt.load_state_dict, {"state": {"a": {}}, "param_groups": sd["param_groups"]}))


@fuzz
@given(params=st.sampled_from([[], [1, 2], "abc", None, 3]), name=st.sampled_from(["SGD", "Adam", "RMSprop"]))
def test_optimizer_parameters(params, name):
    assert failed(outcome(getattr(optim, name), params))


# ============================================================================ data
@fuzz
@given(n=st.one_of(st.integers(-2, 50), WRONG), std=st.one_of(st.floats(-1, 1), WRONG),
       which=st.sampled_from(["ring8", "grid25"]))
def test_mixture_samplers(n, std, which):
    r = outcome(getattr(data, which), n, std)
    if failed(r):
        assert names(r, "n", "samples", "std", n, std), r
        return
    assert r.shape == (n, 2) and finite(r)


@fuzz
@given(x=arrays(DTYPES, min_dims=1, max_dims=3, max_side=6), batch=st.one_of(st.integers(-1, 8), WRONG),
       shuffle=st.booleans(), drop_last=st.booleans(), with_labels=st.booleans())
@pytest.mark.filterwarnings("ignore::npgan.errors.PrecisionWarning")  # float16 data: tests/test_reliability.py
def test_loaders(x, batch, shuffle, drop_last, with_labels):
    d = (x, np.arange(x.shape[0])) if with_labels else x
    ld = outcome(data.ArrayLoader, d, batch, shuffle, drop_last)
    if failed(ld):
        assert names(ld, "batch_size", "data", batch), ld
        return
    n = 0
    for b in ld:
        n += (b[0] if with_labels else b).shape[0]
    assert n == (x.shape[0] // batch * batch if drop_last else x.shape[0])
    real = data.EpochBatches(x, batch, seed=0)
    assert all(real(s).shape == (batch, *x.shape[1:]) for s in range(3))


@fuzz
@given(data_=st.sampled_from([None, "abc", 3, [], (), [np.ones(3), np.ones(4)], np.float64(1.0)]))
def test_loaders_refuse_non_arrays(data_):
    assert failed(outcome(data.ArrayLoader, data_, 1))


@fuzz
@given(split=st.one_of(st.sampled_from(["train", "test", "all", "bogus"]), WRONG),
       frac=st.one_of(st.floats(-1, 2), WRONG))
def test_load_digits_arguments(split, frac):
    r = outcome(data.load_digits, split, frac)
    if failed(r):
        assert names(r, "split", "test_fraction", split, frac), r


# ============================================================================ metrics
@fuzz
@given(samples=arrays(FLOATS + [np.int64], max_dims=3, max_side=6), std=st.one_of(st.floats(-1, 1), WRONG),
       threshold=st.one_of(st.floats(-1, 5), WRONG))
def test_mode_metrics(samples, std, threshold):
    r = outcome(metrics.mode_metrics, samples, data.ring8_centers(), std, threshold)
    if failed(r):
        if samples.ndim == 2 and samples.shape[1] == 2 and samples.shape[0]:
            assert names(r, "std", "threshold"), r
    elif finite(samples):  # the reverse KL of an empty histogram is undefined: nan, as documented
        assert all(not isinstance(v, float) or math.isfinite(v) or k == "reverse_kl" and r["hq"] == 0
                   for k, v in r.items()), r


@fuzz
@given(real=arrays(FLOATS, max_dims=3, max_side=6), fake=arrays(FLOATS, max_dims=3, max_side=6),
       k=st.one_of(st.integers(-1, 6), WRONG))
def test_prdc(real, fake, k):
    r = outcome(metrics.prdc, real, fake, k)
    if failed(r):
        return
    if finite(real) and finite(fake):
        # density = (1/(kM)) Σ_j Σ_i [f_j ∈ B(r_i)] counts each fake once per real ball it falls in: at most N/k
        # (every fake in all N balls); the other three are fractions
        assert 0 <= r["density"] <= real.shape[0] / k, r
        assert all(0 <= v <= 1 for name, v in r.items() if name != "density"), r


@fuzz
@given(logits=arrays(FLOATS, max_dims=3, max_side=5, bound=1e4), labels=st.one_of(
       arrays([np.int64, np.int32, np.float32, np.bool_], max_dims=2, max_side=5), WRONG), reduction=REDUCTIONS)
def test_softmax_cross_entropy(logits, labels, reduction):
    t = tensor(logits, True)
    r = outcome(F.softmax_cross_entropy, t, labels, reduction)
    if failed(r):
        return
    if finite(logits) and logits.size:
        assert finite(r), (logits, labels, r)
    check_backward(r, t)


# ============================================================================ files: configs, IDX, checkpoints
def _config_text(tmp_path):
    cfg = make_config("ring8")
    write_config(tmp_path / "good.toml", cfg)
    return (tmp_path / "good.toml").read_bytes()


@fuzz
@given(cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=3),
       field=st.sampled_from(["", "hidden", "seed", "beta1", "log_every", "device", "dtype", "train.lr",
                              "train.steps", "train.bandwidth", "train.on_nan", "train.loss", "train.clip_value",
                              "train.leave_one_out"]),
       value=st.sampled_from(['"x"', "-3", "0", "1.5", "true", "[1, 2]", "{a = 1}", "nan", "inf", "1e400",
                              '"float16"', '"gpu:99"']))
def test_config_files(tmp_path_factory, cut, flips, field, value):
    tmp = tmp_path_factory.mktemp("cfg")
    good = _config_text(tmp)
    text = good
    if field:
        key = field.split(".")[-1]
        lines = [ln if not ln.startswith(f"{key} = ") else f"{key} = {value}" for ln in good.decode().splitlines()]
        text = ("\n".join(lines) + "\n").encode()
    raw = bytearray(text[: int(cut * len(text))] if cut < 0.9 else text)
    for pos, x in flips:
        if raw:
            raw[int(pos * (len(raw) - 1))] ^= x
    path = tmp / "c.toml"
    path.write_bytes(bytes(raw))
    r = outcome(read_config, path)
    if failed(r):
        assert isinstance(r, RunError) and str(path) in str(r) and "\n" not in str(r).strip(), r
    else:
        r.validate()


def _idx(magic, dims, payload):
    return struct.pack(">" + "i" * (1 + len(dims)), magic, *dims) + payload


@fuzz
@given(kind=st.sampled_from(["images", "labels"]), defect=st.sampled_from(
       ["none", "truncate", "trailing", "magic", "dims", "zero_dim", "negative_dim", "label_range", "gzip_cut",
        "empty", "count_mismatch"]), gz=st.booleans(), cut=st.floats(0, 1))
def test_idx_files(tmp_path_factory, kind, defect, gz, cut):
    d = tmp_path_factory.mktemp("mnist")
    n, rows, cols = 3, 4, 4
    files = {"t10k-images-idx3-ubyte": _idx(2051, (n, rows, cols), bytes(range(n * rows * cols))),
             "t10k-labels-idx1-ubyte": _idx(2049, (n,), bytes([1, 2, 3]))}
    name = "t10k-images-idx3-ubyte" if kind == "images" else "t10k-labels-idx1-ubyte"
    b = files[name]
    if defect == "truncate":
        b = b[: int(cut * (len(b) - 1))]
    elif defect == "trailing":
        b = b + b"\0\0"
    elif defect == "magic":
        b = struct.pack(">i", 2049 if kind == "images" else 2051) + b[4:]
    elif defect == "dims":
        b = b[:4] + struct.pack(">i", n + 5) + b[8:]
    elif defect == "zero_dim":
        b = b[:4] + struct.pack(">i", 0) + b[8:]
    elif defect == "negative_dim":
        b = b[:4] + struct.pack(">i", -1) + b[8:]
    elif defect == "label_range" and kind == "labels":
        b = b[:-1] + bytes([200])
    elif defect == "empty":
        b = b""
    elif defect == "count_mismatch" and kind == "labels":
        b = _idx(2049, (n - 1,), bytes([1, 2]))
    files[name] = b
    for fname, content in files.items():
        if gz:
            z = gzip.compress(content)
            if defect == "gzip_cut" and fname == name:
                z = z[: int(cut * (len(z) - 1))]
            (d / (fname + ".gz")).write_bytes(z)
        else:
            (d / fname).write_bytes(content)
    r = outcome(data.load_mnist, d, "test")
    if failed(r):
        assert name in str(r) or "split" in str(r), r
        assert defect != "none"
    else:
        images, labels = r
        assert images.shape == (n, 1, rows, cols) and finite(images)
        assert defect in ("none", "label_range", "count_mismatch", "gzip_cut") or (defect == "truncate" and False)


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "c.npz"
    arrays = {"G/w": np.arange(12, dtype=np.float32).reshape(3, 4), "D/b": np.ones(5), "opt/step": np.int64(7)}
    save_arrays(path, arrays, {"step": 3, "note": "x"}, config_hash="0" * 64)
    return path.read_bytes(), arrays


@fuzz
@given(ops_=st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert"]), st.floats(0, 1), st.integers(1, 255)),
                     min_size=1, max_size=3))
def test_checkpoint_bytes(tmp_path_factory, checkpoint_bytes, ops_):
    good, arrays = checkpoint_bytes
    raw = bytearray(good)
    for op, pos, x in ops_:
        i = int(pos * max(len(raw) - 1, 0))
        if op == "flip" and raw:
            raw[i] ^= x
        elif op == "cut":
            raw = raw[:i]
        else:
            raw[i:i] = bytes([x])
    path = tmp_path_factory.mktemp("ck") / "c.npz"
    path.write_bytes(bytes(raw))
    try:
        got, meta = load_arrays(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
        return
    # a change the checksum cannot see (zip padding, an unused field) must leave the data exactly as it was
    assert meta == {"step": 3, "note": "x"} and got.keys() == arrays.keys()
    assert all(np.array_equal(got[k], arrays[k]) and got[k].dtype == np.asarray(arrays[k]).dtype for k in got)
