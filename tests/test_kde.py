"""KDE entropy (npgan.kde.kde_entropy): gradient, PyTorch parity, statistics, robustness, memory."""

from __future__ import annotations

import math
import tracemalloc

import error_bounds
import numpy as np
import pytest
from helpers import torch_or_skip
from hypothesis import given, settings
from hypothesis import strategies as st

import npgan
import npgan.functional as F
from npgan.kde import BANDWIDTH_RULES, KDEEntropy, kde_bandwidth, kde_entropy

BANDWIDTHS = (0.7, "scott", "silverman", "median")


def _t(x, grad=True):
    return npgan.tensor(np.array(x), requires_grad=grad)  # on the current device


def _value_and_grad(x, bandwidth, loo):
    t = _t(x)
    h = kde_entropy(t, bandwidth=bandwidth, leave_one_out=loo)
    h.backward()
    return h.item(), npgan.backend.to_numpy(t.grad).copy()


def _np_reference(x, sigma, loo):
    """The estimator written directly with explicit differences and a log-sum-exp (float64, numpy)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    n, d = x.shape
    D = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    L = -D / (2 * sigma ** 2) - 0.5 * d * np.log(2 * np.pi * sigma ** 2)
    if loo:
        np.fill_diagonal(L, -np.inf)
    mx = L.max(1, keepdims=True)
    log_p = (mx + np.log(np.exp(L - mx).sum(1, keepdims=True)))[:, 0] - np.log(n - 1 if loo else n)
    return -log_p.mean()


# ----------------------------------------------------------------------------- gradient
@st.composite
def point_sets(draw):
    n = draw(st.integers(2, 48))
    d = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    rs = np.random.default_rng(seed)
    x = rs.standard_normal((n, d)) * draw(st.sampled_from([0.1, 1.0, 5.0])) + rs.standard_normal(d)
    n_dup = draw(st.integers(0, n // 2))
    if n_dup:  # duplicated rows: copy some rows onto others
        src = rs.integers(0, n, n_dup)
        dst = rs.integers(0, n, n_dup)
        x[dst] = x[src]
    return x


@settings(max_examples=30)
@given(x=point_sets(), bandwidth=st.sampled_from(BANDWIDTHS), loo=st.booleans())
def test_gradcheck_float64(device, x, bandwidth, loo):
    npgan.set_default_dtype("float64")
    sigma = kde_bandwidth(x, bandwidth)
    # A rule's σ is a constant of the gradient: the rule-based call equals the fixed-σ call ...
    h_rule, g_rule = _value_and_grad(x, bandwidth, loo)
    h_fix, g_fix = _value_and_grad(x, sigma, loo)
    assert h_rule == h_fix
    np.testing.assert_array_equal(g_rule, g_fix)
    # ... whose gradient matches central differences.
    npgan.gradcheck(lambda a: kde_entropy(a, bandwidth=sigma, leave_one_out=loo), [_t(x)],
                    atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("loo", [False, True])
def test_value_matches_direct_formula(device, loo):
    rs = np.random.default_rng(3)
    x = rs.standard_normal((30, 4))
    for bw in BANDWIDTHS:
        sigma = kde_bandwidth(x, bw)
        h = kde_entropy(_t(x, False), bw, leave_one_out=loo).item()
        assert h == pytest.approx(_np_reference(x, sigma, loo), rel=1e-12)


def test_gradient_ascent_increases_entropy():
    rs = np.random.default_rng(0)
    x = rs.standard_normal((64, 3)) * 0.3
    for loo in (False, True):
        t = _t(x)
        h0 = kde_entropy(t, 0.2, leave_one_out=loo)
        h0.backward()
        g = t.grad
        assert np.linalg.norm(g) > 0
        h1 = kde_entropy(_t(x + 1e-3 * g / np.linalg.norm(g), False), 0.2, leave_one_out=loo)
        h2 = kde_entropy(_t(x - 1e-3 * g / np.linalg.norm(g), False), 0.2, leave_one_out=loo)
        assert h1.item() > h0.item() > h2.item()


def test_extra_axes_are_flattened():
    rs = np.random.default_rng(1)
    x = rs.standard_normal((10, 2, 3, 2))
    t4, t2 = _t(x), _t(x.reshape(10, 12))
    h4, h2 = kde_entropy(t4, "silverman", True), kde_entropy(t2, "silverman", True)
    h4.backward()
    h2.backward()
    assert h4.item() == pytest.approx(h2.item(), rel=1e-14)
    assert t4.grad.shape == x.shape
    np.testing.assert_allclose(t4.grad.reshape(10, 12), t2.grad, rtol=1e-12, atol=1e-15)


def test_does_not_mutate_input_and_keeps_dtype():
    rs = np.random.default_rng(2)
    for dt in (np.float32, np.float64):
        x = rs.standard_normal((20, 5)).astype(dt)
        keep = x.copy()
        t = npgan.Tensor(x, requires_grad=True)
        h = kde_entropy(t, "median", leave_one_out=True)
        h.backward()
        np.testing.assert_array_equal(x, keep)
        assert h.dtype == dt and h.shape == () and t.grad.dtype == dt


def test_old_homes_reexport_the_op():
    import npgan.gan.losses as losses

    assert F.kde_entropy is kde_entropy and F.kde_bandwidth is kde_bandwidth
    assert losses.kde_entropy is kde_entropy and losses.kde_bandwidth is kde_bandwidth
    assert losses.KDEEntropy is KDEEntropy and losses.BANDWIDTH_RULES is BANDWIDTH_RULES


# ----------------------------------------------------------------------------- PyTorch parity
def _torch_entropy(torch, x, sigma, loo):
    n, d = x.shape
    D = torch.cdist(x, x) ** 2
    L = -D / (2 * sigma ** 2)
    if loo:
        L = L.masked_fill(torch.eye(n, dtype=torch.bool), -math.inf)
    m = n - 1 if loo else n
    return -torch.logsumexp(L, dim=1).mean() + math.log(m) + 0.5 * d * math.log(2 * math.pi * sigma ** 2)


@pytest.mark.parametrize("loo", [False, True])
@pytest.mark.parametrize("bandwidth", BANDWIDTHS)
@pytest.mark.parametrize("n,d", [(2, 1), (17, 3), (64, 10)])
def test_torch_parity(device, n, d, bandwidth, loo):
    torch = torch_or_skip()
    rs = np.random.default_rng(n * 100 + d)
    x = rs.standard_normal((n, d)) * 2.0 + 1.0
    sigma = kde_bandwidth(x, bandwidth)  # data-dependent σ: computed without grad, given to torch
    h, g = _value_and_grad(x, bandwidth, loo)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ht = _torch_entropy(torch, xt, sigma, loo)
    ht.backward()
    assert h == pytest.approx(ht.item(), rel=1e-8, abs=1e-12)
    gt = xt.grad.numpy()
    np.testing.assert_allclose(g, gt, rtol=1e-8, atol=1e-8 * np.abs(gt).max())


# ----------------------------------------------------------------------------- bandwidth rules
def test_bandwidth_rules_formulas():
    rs = np.random.default_rng(5)
    n, d = 50, 3
    x = rs.standard_normal((n, d)) * np.array([1.0, 2.0, 0.5]) + 3.0
    s = x.std(axis=0, ddof=1).mean()
    assert kde_bandwidth(x, "scott") == pytest.approx(s * n ** (-1 / (d + 4)), rel=1e-12)
    assert kde_bandwidth(x, "silverman") == pytest.approx(
        s * (4 / (d + 2)) ** (1 / (d + 4)) * n ** (-1 / (d + 4)), rel=1e-12)
    i, j = np.where(~np.eye(n, dtype=bool))
    med = np.median(((x[i] - x[j]) ** 2).sum(-1))
    assert kde_bandwidth(x, "median") == pytest.approx(math.sqrt(med / (2 * math.log(n + 1))), rel=1e-10)
    assert kde_bandwidth(x, 0.25) == 0.25
    assert kde_bandwidth(npgan.Tensor(x), "scott") == kde_bandwidth(x, "scott")


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "gauss", None, True])
def test_bad_bandwidth(bad):
    x = npgan.randn(8, 2)
    with pytest.raises(ValueError, match="bandwidth"):
        kde_entropy(x, bandwidth=bad)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        kde_entropy(npgan.randn(5))
    with pytest.raises(ValueError, match="leave_one_out needs at least 2 points"):
        kde_entropy(npgan.randn(1, 3), 1.0, leave_one_out=True)
    with pytest.raises(ValueError, match="at least 2 points"):
        kde_entropy(npgan.randn(1, 3), "silverman")
    with pytest.raises(ValueError, match="nan or inf"):
        kde_entropy(npgan.Tensor(np.array([[0.0, 1.0], [np.nan, 2.0]])))
    with pytest.raises(TypeError, match="float"):
        kde_entropy(npgan.Tensor(np.arange(6).reshape(3, 2)))
    with pytest.raises(ValueError, match="too small"):
        kde_entropy(npgan.randn(4, 2), bandwidth=1e-30)


# ----------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("d,tol", [(1, 0.03), (2, 0.03), (5, 0.06)])
def test_gaussian_entropy(d, tol):
    x = np.random.default_rng(2024).standard_normal((4000, d))
    h = kde_entropy(npgan.Tensor(x), "silverman", leave_one_out=True).item()
    true = 0.5 * d * math.log(2 * math.pi * math.e)
    assert abs(h - true) <= tol * true, (h, true)


def test_uniform_square_entropy():
    x = np.random.default_rng(2024).random((4000, 2))
    h = kde_entropy(npgan.Tensor(x), "silverman", leave_one_out=True).item()
    assert abs(h - 0.0) <= 0.2, h


# ----------------------------------------------------------------------------- robustness
def _finite(x, bandwidth, loo, dt):
    t = npgan.Tensor(np.asarray(x, dtype=dt), requires_grad=True)
    h = kde_entropy(t, bandwidth, leave_one_out=loo)
    h.backward()
    assert np.isfinite(h.item()), (bandwidth, loo, dt, h.item())
    assert np.isfinite(t.grad).all(), (bandwidth, loo, dt)
    return h.item(), t.grad


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("loo", [False, True])
def test_no_nan_or_inf(dt, loo):
    rs = np.random.default_rng(7)
    x = rs.standard_normal((40, 6)) * 3.0 + 100.0
    dup = x.copy()
    dup[1::2] = dup[0::2]                           # every point duplicated
    same = np.repeat(x[:1], 40, axis=0)             # collapsed batch
    zeros = np.zeros((40, 6))
    for bw in ("scott", "silverman", "median", 0.5, 1e-3 * 3.0):   # the last: σ = 1e-3 × scale
        for data in (x, dup, same, zeros):
            _finite(data, bw, loo, dt)
    for bw in ("scott", "silverman", "median"):  # a collapsed batch: no direction to move in
        _, g = _finite(same, bw, loo, dt)
        assert np.abs(g).max() < 1e-3  # exactly 0: centred, equal rows are exactly 0 (npgan/kde.py, _centre)


@pytest.mark.parametrize("rule", ["scott", "median"])
def test_subnormal_points_are_refused_and_tiny_ones_stay_finite(rule):
    """The gradient is of order 1/σ: subnormal float32 points (σ ~ 1e-41) would give inf·0 or inf, so they are
    one ValueError; at 1e-30 σ is small but 1/σ fits float32, and the gradient is finite."""
    with pytest.raises(ValueError, match="below 1/max of float32"):
        kde_entropy(npgan.Tensor(np.array([[3.19e-41], [0.0], [1e-41]], np.float32), requires_grad=True), rule)
    t = npgan.Tensor(np.array([[1e-30], [0.0], [2.5e-30]], np.float32), requires_grad=True)
    h = kde_entropy(t, rule)
    h.backward()
    assert np.isfinite(h.item()) and np.isfinite(t.grad).all() and np.abs(t.grad).max() > 0


@pytest.mark.parametrize("loo", [False, True])
def test_float32_agrees_with_float64_at_small_sigma(loo):
    # σ = 1e-3 × the scale: nearly every exponent falls below the −80 clamp of float32. Both precisions get the
    # same points (float32 values), so the difference is the float32 rounding alone, bounded by _float32_bounds.
    rs = np.random.default_rng(8)
    x = rs.standard_normal((64, 2)).astype(np.float32).astype(np.float64)
    sigma = 1e-3
    h64, g64 = _finite(x, sigma, loo, np.float64)
    h32, g32 = _finite(x, sigma, loo, np.float32)
    h, e_h, g, e_g, margin = error_bounds.kde_entropy_bounds(x, sigma, loo)
    assert h64 == pytest.approx(_np_reference(x, sigma, loo), rel=1e-10)  # float64: γ_64·|lse| ≈ 1e-14 relative
    assert h == pytest.approx(h64, rel=1e-10)
    assert abs(h32 - h64) <= e_h, (h32, h64, e_h)
    if loo:  # each point is pulled only by its nearest neighbour: float32 keeps that gradient
        assert margin >= 30, f"the points need each row's nearest neighbour ahead by 30 in exponent, got {margin}"
        np.testing.assert_allclose(g64, g, rtol=1e-9, atol=1e-9 * np.abs(g).max())  # float64 vs the formula
        err = np.abs(g32.astype(np.float64) - g64)
        assert (err <= e_g).all(), f"gradient off by {err.max():.3g}, {float((err / e_g).max()):.3g} of its bound"


def test_exponent_clamp_is_invisible_in_float32():
    # Neighbours at 9σ (exponent −40.5, kept) and 15σ (exponent −112.5, clamped to −80).
    x = np.array([[0.0], [9.0], [24.0]])
    h32 = kde_entropy(npgan.Tensor(x.astype(np.float32)), 1.0, leave_one_out=True).item()
    h, e_h, *_ = error_bounds.kde_entropy_bounds(x, 1.0, True)  # float32's bound; the clamped e^-80 is inside it
    assert abs(h32 - _np_reference(x, 1.0, True)) <= e_h


# ----------------------------------------------------------------------------- memory
def test_memory_no_n_by_n_by_d_array():
    n, d = 512, 256
    x = npgan.Tensor(np.random.default_rng(0).standard_normal((n, d)).astype(np.float32), requires_grad=True)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        h = kde_entropy(x, "silverman", leave_one_out=True)
        h.backward()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    extra = peak - base
    assert x.grad is not None and x.grad.shape == (n, d)
    bound = 10 * n * n * 4 + 6 * n * d * 4        # ≈ 13.6 MB; an (n, n, d) float32 array is 268 MB
    assert extra < bound, f"peak extra {extra / 1e6:.1f} MB ≥ {bound / 1e6:.1f} MB"
    assert extra < n * n * d * 4 / 20


def test_function_keeps_one_n_by_n_array():
    x = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    fn = KDEEntropy(0.5, True)
    fn.forward(x)
    big = [k for k, v in vars(fn).items() if isinstance(v, np.ndarray) and v.size >= 30 * 30]
    assert big == ["W"] and fn.W.dtype == np.float32
