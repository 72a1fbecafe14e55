"""The KDE entropy is finite and scale-equivariant at every scale of data and bandwidth, float32 and float64."""

from __future__ import annotations

import error_bounds
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npgan
import npgan.functional as F

GiB = 1 << 30


# ============================================================================ KDE at every scale
@settings(max_examples=30, deadline=None)
@given(exp=st.integers(-30, 30), dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**16),
       bw=st.sampled_from([None, "silverman", "median"]))
def test_kde_entropy_is_finite_and_scale_equivariant(exp, dtype, seed, bw):
    x = np.random.default_rng(seed).standard_normal((12, 3)).astype(dtype)
    c = 10.0 ** exp
    xc = (x * c).astype(dtype)
    base = F.kde_entropy(npgan.Tensor(x), bandwidth=0.7 if bw is None else bw)
    t = npgan.Tensor(xc, requires_grad=True)
    h = F.kde_entropy(t, bandwidth=0.7 * c if bw is None else bw)
    h.backward()
    assert np.isfinite(float(h.data)) and np.isfinite(t.grad.data).all()
    want = float(base.data) + 3 * np.log(c)
    if dtype == "float64":  # float64: γ_n-sized errors of 2⁻⁵³ per rounding, far inside 1e-9
        assert float(h.data) == pytest.approx(want, rel=1e-9, abs=1e-7)
        return
    # float32: both entropies within their rounding bounds (tests/error_bounds.py), the scaled points rounded
    # once more (x·c to float32: e_input = u), and a rule's σ within its own float32 error
    x64 = x.astype(np.float64)
    sig = 0.7 if bw is None else F.kde_bandwidth(x64, bw)
    e_sig = 0.0 if bw is None else error_bounds.kde_rule_sigma_error(x64, bw)
    e_base = error_bounds.kde_entropy_bounds(x64, sig, False, e_sigma=e_sig)[1]
    e_scaled = error_bounds.kde_entropy_bounds(x64, sig, False, e_sigma=e_sig, e_input=error_bounds.U)[1]
    assert abs(float(h.data) - want) <= e_base + e_scaled + 2 * error_bounds.U * abs(want)


def test_kde_entropy_with_a_huge_bandwidth_is_finite():
    x = npgan.Tensor(np.random.default_rng(0).standard_normal((10, 2)), requires_grad=True)
    h = F.kde_entropy(x, bandwidth=1e200)
    h.backward()
    assert float(h.data) == pytest.approx(2 * (np.log(1e200) + 0.5 * np.log(2 * np.pi)), rel=1e-12)
    assert np.isfinite(x.grad.data).all()
