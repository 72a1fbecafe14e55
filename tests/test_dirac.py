"""demos/dirac_gan.py in its quick mode: the Jacobian at the equilibrium by double backward against the closed form,
the field against Mescheder's formulas, which methods converge, and the figures.

The closed forms are computed here, independently of the demo: f′(t) = σ(−t), f′(0) = 1/2; eigenvalues ±i/2
without a penalty and −γ/2 ± √(γ²/4 − 1/4) with R1.
"""

from __future__ import annotations

import cmath
import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import npgan

DEMOS = Path(__file__).resolve().parent.parent / "demos"


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    sys.path.insert(0, str(DEMOS))
    try:
        mod = importlib.import_module("dirac_gan")
        out = tmp_path_factory.mktemp("dirac")
        was = npgan.get_default_dtype()
        r = mod.main(["--quick", "--out", str(out)])
        assert npgan.get_default_dtype() == was, "the demo left its float64 default behind"
        return r
    finally:
        sys.path.remove(str(DEMOS))


def _closed(gamma):
    r = cmath.sqrt(gamma ** 2 / 4 - 0.25)
    return sorted([-gamma / 2 + r, -gamma / 2 - r], key=lambda z: (z.real, z.imag))


def test_jacobian_eigenvalues_match_the_closed_form(result):
    eigs = result["eigenvalues"]
    gammas = sorted(v["gamma"] for v in eigs.values())
    assert gammas[0] == 0.0 and any(0 < g < 1 for g in gammas) and any(g > 1 for g in gammas)
    for label, v in eigs.items():
        ours = sorted((complex(z) for z in v["npgan"]), key=lambda z: (z.real, z.imag))
        want = _closed(v["gamma"])
        assert max(abs(a - b) for a, b in zip(ours, want)) < 1e-9, (label, ours, want)
        if v["gamma"] == 0:
            assert all(abs(z.real) < 1e-12 and abs(abs(z.imag) - 0.5) < 1e-12 for z in ours)  # ±f′(0)·i
        else:
            assert all(z.real < 0 for z in ours)
    assert result["eig_error"] < 1e-9 and result["jacobian_error"] < 1e-9
    assert result["f_prime_0"] == 0.5


def test_field_matches_mescheders_formulas(result):
    assert result["field_error"] < 1e-12


def test_which_methods_converge(result):
    start = math.hypot(1.0, 1.0)
    assert result["start_distance"] == pytest.approx(start)
    d, curves = result["distance"], result["distance_curves"]
    # simultaneous GD on the minimax GAN: v ⊥ (θ, ψ), so every step lengthens the radius (‖x + hv‖² = ‖x‖² + h²‖v‖²)
    c = np.array(curves["gan"]["simultaneous"])
    assert len(c) == result["steps"] + 1 and np.all(np.diff(c) > 0) and d["gan"]["simultaneous"] > start
    # R1 shrinks the distance, both ways, for both weights
    for m in ("r1", "r1-strong"):
        for kind in ("simultaneous", "alternating"):
            assert d[m][kind] < 0.15 * start, (m, kind, d[m][kind])
            assert curves[m][kind][-1] < curves[m][kind][len(curves[m][kind]) // 2]
    # the others stay away from the equilibrium
    for m in ("gan", "nsgan", "wgan", "wgan-gp"):
        assert d[m]["alternating"] > 0.25 and d[m]["simultaneous"] > 0.25, m


def test_figures_written(result):
    out = Path(result["out"])
    assert [Path(p).name for p in result["figures"]] == ["dirac_fields.png", "dirac_distance.png"]
    for p in result["figures"]:
        b = Path(p).read_bytes()
        assert Path(p).parent == out and b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) > 5_000


def test_nsgan_cycle_radius_is_sqrt_2h(result):
    """Small-radius balance of simultaneous GD on the non-saturating GAN (docs/math.md, "The Dirac-GAN"): the
    outward drift h²‖v‖² ≈ h²r²/4 per step meets the inward pull 2h⟨x, v⟩ ≈ −2h·r⁴/16 at r = √(2h); the
    approximation drops terms of relative order r², so a few per cent."""
    assert result["nsgan_cycle_radius"] == pytest.approx(math.sqrt(2 * result["step_size"]), rel=0.03)
