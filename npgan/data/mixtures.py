"""The 2-D toy data sets: equal-weight Gaussian mixtures on a ring (``ring8``) and a grid (``grid25``), PacGAN's.

The samples are drawn from npgan's seeded generator on the current device, as Tensors (n, 2) in the default
dtype; :data:`MIXTURES` names each data set with its sampler, mode centres and the modes' std (what the mode
metrics of :mod:`npgan.eval.metrics` need).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from .. import backend, checks
from ..tensor import Tensor

__all__ = ["ring8", "grid25", "ring8_centers", "grid25_centers", "sample_mixture", "Mixture", "MIXTURES"]


def ring8_centers(radius: float = 1.0) -> Any:
    """The 8 mode centres (r cos 2πi/8, r sin 2πi/8), i = 0..7, as a host float64 array (8, 2).

    The angles are 2πi/8 for i < 8: ``linspace(0, 2π, 8)`` would put the first
    and last mode on top of each other and give 7 distinct modes.
    """
    np = backend.np
    a = 2.0 * math.pi * np.arange(8) / 8.0
    return radius * np.stack([np.cos(a), np.sin(a)], axis=1)


def grid25_centers() -> Any:
    """The 25 mode centres {−4, −2, 0, 2, 4}² as a host float64 array (25, 2), row-major."""
    np = backend.np
    v = np.arange(-4.0, 5.0, 2.0)
    gx, gy = np.meshgrid(v, v, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def sample_mixture(n: int, centers: Any, std: float) -> Tensor:
    """n samples of the equal-weight isotropic Gaussian mixture (1/K) Σ_k N(c_k, std² I).

    Each sample picks a centre uniformly, then adds std·ε, ε ~ N(0, I); both
    draws use npgan's seeded generator on the current device. Returns a
    Tensor (n, d) in the default dtype.
    """
    n, std = checks.integer("number of samples n", n, 0), checks.real("std", std, 0)
    xp, g, dtype = backend.current_xp(), backend.rng(), backend.get_default_dtype()
    c = xp.asarray(backend.to_numpy(centers), dtype=dtype)
    k = g.integers(0, c.shape[0], size=n)
    eps = g.standard_normal((n, c.shape[1]), dtype=dtype)
    return Tensor(c[k] + dtype.type(std) * eps)


def ring8(n: int, std: float = 0.01, radius: float = 1.0) -> Tensor:
    """n samples (n, 2) of 8 Gaussians of std ``std`` on a circle of radius ``radius`` (PacGAN's 2D-ring)."""
    return sample_mixture(n, ring8_centers(radius), std)


def grid25(n: int, std: float = 0.05) -> Tensor:
    """n samples (n, 2) of 25 Gaussians of std ``std`` centred on {−4, −2, 0, 2, 4}² (PacGAN's 2D-grid)."""
    return sample_mixture(n, grid25_centers(), std)


class Mixture(NamedTuple):
    """A 2-D toy data set: ``sampler(n) -> Tensor (n, 2)``, mode ``centers`` (K, 2), the modes' ``std``."""

    sampler: Callable[[int], Tensor]
    centers: Any
    std: float


MIXTURES: dict[str, Mixture] = {
    "ring8": Mixture(ring8, ring8_centers(), 0.01),
    "grid25": Mixture(grid25, grid25_centers(), 0.05),
}
