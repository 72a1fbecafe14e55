"""Fused CuPy kernels for the elementwise chains that dominate a GAN step on a GPU.

On a GPU every NumPy-style expression is one kernel launch and one pass over memory: the
sigmoid-BCE backward ``((1 − t)·σ(x) − t·σ(−x))·g`` is about ten launches, Adam's update eight,
the KDE row softmax seven passes over an (n, n) matrix. Each function here does one such chain
in one CUDA kernel (``cupy.ElementwiseKernel`` / ``cupy.ReductionKernel``), computing the same
formula as the plain-array code it replaces — which stays the code that runs on NumPy, and on any
array module that is not CuPy (the tests' stand-in GPU module included).

The callers dispatch with :func:`enabled`::

    if kernels.enabled(xp):
        return kernels.leaky_relu_forward(x, a)
    ...  # the plain-array formula

``with kernels.disabled():`` forces the plain path (the GPU tests compare both). Kernels are
compiled on first use and cached. This module imports CuPy only through :mod:`npgan.backend`.

Kernels (T is float32 or float64; all arrays C-contiguous where noted):

* ``bce_logits_sum(x, t)``          Σ_i max(x_i, 0) − x_i t_i + log(1 + e^−|x_i|)          (a reduction)
* ``bce_logits_loss(x, t)``         the same per element (reduction "none")
* ``bce_logits_grad(x, t, g)``      gx = ((1 − t)·σ(x) − t·σ(−x))·g,  σ(±x) from e = e^−|x|, r = 1/(1 + e)
* ``leaky_relu_forward(x, a)``      y = x if x > 0 else a·x                               (0 ≤ a ≤ 1)
* ``leaky_relu_backward(y, gy, a)`` gx = gy if y > 0 else a·gy   (y > 0 ⇔ x > 0 for a ≥ 0: keeps y, not a mask)
* ``adam_update(p, g, m, v, ...)``  m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²;
                                    p ← p − (lr/(1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)      (in place)
* ``kde_row_softmax_(D, c, floor, loo)``  W_ij = exp(max(c·D_ij − M_i, floor)) (0 at j = i with
                                    leave-one-out), M_i = max_j c·D_ij; in place on D (n, n); returns (M, Z),
                                    Z_i = Σ_j W_ij — the caller divides W by Z.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from . import backend

__all__ = ["enabled", "disabled", "bce_logits_sum", "bce_logits_loss", "bce_logits_grad", "leaky_relu_forward",
           "leaky_relu_backward", "adam_update", "kde_row_softmax_"]

_on = True
_cache: dict[str, Any] = {}


def enabled(xp: Any) -> bool:
    """True when ``xp`` is CuPy (and the kernels are not switched off): use the fused kernels."""
    return _on and xp is not backend.np and xp is backend.cupy and xp is not None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the plain-array formulas on every array module (to check the kernels against them)."""
    global _on
    prev, _on = _on, False
    try:
        yield
    finally:
        _on = prev


# ----------------------------------------------------------------------------- kernel sources
_SIGMAS = """
    T e = exp(-fabs(x));
    T r = (T)1 / ((T)1 + e);
    T sp = x >= (T)0 ? r : e * r;    /* σ(x)  */
    T sn = x >= (T)0 ? e * r : r;    /* σ(−x) */
"""

_SOURCES: dict[str, tuple[str, tuple, dict]] = {
    "bce_sum": ("ReductionKernel", ("T x, T t", "T y", "(x > (T)0 ? x : (T)0) - x * t + log1p(exp(-fabs(x)))",
                                    "a + b", "y = a", "0", "npgan_bce_logits_sum"), {}),
    "bce_loss": ("ElementwiseKernel", ("T x, T t", "T y", "y = (x > (T)0 ? x : (T)0) - x * t + log1p(exp(-fabs(x)))",
                                       "npgan_bce_logits_loss"), {}),
    "bce_grad": ("ElementwiseKernel", ("T x, T t, T g", "T gx",
                                       _SIGMAS + "gx = (((T)1 - t) * sp - t * sn) * g;", "npgan_bce_logits_grad"),
                 {}),
    "lrelu_fwd": ("ElementwiseKernel", ("T x, T a", "T y", "y = x > (T)0 ? x : x * a", "npgan_leaky_relu_fwd"), {}),
    "lrelu_bwd": ("ElementwiseKernel", ("T y, T gy, T a", "T gx", "gx = y > (T)0 ? gy : gy * a",
                                        "npgan_leaky_relu_bwd"), {}),
    "adam": ("ElementwiseKernel", ("T g, T b1, T c1, T b2, T c2, T lr_bc1, T bc2_sqrt, T eps", "T p, T m, T v",
                                   """
    m = b1 * m + c1 * g;
    v = b2 * v + c2 * (g * g);
    T d = sqrt(v) / bc2_sqrt + eps;
    if (d > (T)0) p = p - (m / d) * lr_bc1;  /* eps = 0 and no gradient yet: no step (as _safe_div) */
""", "npgan_adam"), {}),
    "kde_softmax": ("ElementwiseKernel", ("raw T M, T c, T lo, int32 loo, int64 n", "T D", """
    ptrdiff_t row = i / n;
    if (loo && row == i % n) {
        D = (T)0;
    } else {
        T a = D * c - M[row];
        D = exp(a > lo ? a : lo);
    }
""", "npgan_kde_row_softmax"), {}),
}


def _kernel(name: str) -> Any:
    k = _cache.get(name)
    if k is None:
        kind, args, kwargs = _SOURCES[name]
        k = _cache[name] = getattr(backend.cupy, kind)(*args, **kwargs)
    return k


# ----------------------------------------------------------------------------- sigmoid binary cross-entropy
def bce_logits_sum(x: Any, t: Any) -> Any:
    """Σ_i max(x_i, 0) − x_i t_i + log(1 + e^−|x_i|) as a 0-d array (one reduction kernel)."""
    return _kernel("bce_sum")(x, t)


def bce_logits_loss(x: Any, t: Any) -> Any:
    """The per-element loss max(x, 0) − x t + log(1 + e^−|x|) (one kernel)."""
    return _kernel("bce_loss")(x, t)


def bce_logits_grad(x: Any, t: Any, g: Any) -> Any:
    """gx = ((1 − t)·σ(x) − t·σ(−x))·g, g a 0-d array or x's shape (one kernel)."""
    return _kernel("bce_grad")(x, t, g.astype(x.dtype, copy=False))


# ----------------------------------------------------------------------------- leaky ReLU
def leaky_relu_forward(x: Any, a: float) -> Any:
    """y = x if x > 0 else a·x (one kernel)."""
    return _kernel("lrelu_fwd")(x, x.dtype.type(a))


def leaky_relu_backward(y: Any, gy: Any, a: float) -> Any:
    """gx = gy if y > 0 else a·gy, from the output y (valid for a ≥ 0; one kernel)."""
    return _kernel("lrelu_bwd")(y, gy, gy.dtype.type(a))


# ----------------------------------------------------------------------------- Adam
def adam_update(p: Any, g: Any, m: Any, v: Any, b1: float, b2: float, lr_bc1: float, bc2_sqrt: float,
                eps: float) -> None:
    """Adam's moment and parameter update in place on p, m, v (one kernel; see the module docstring)."""
    T = p.dtype.type
    _kernel("adam")(g, T(b1), T(1 - b1), T(b2), T(1 - b2), T(lr_bc1), T(bc2_sqrt), T(eps), p, m, v)


# ----------------------------------------------------------------------------- KDE row softmax
def kde_row_softmax_(D: Any, c: float, floor: float, loo: bool) -> tuple[Any, Any]:
    """Overwrite the squared distances D (n, n, C-contiguous, diagonal 0) with the unnormalised row softmax.

    W_ij = exp(max(c·D_ij − M_i, floor)), W_ii = 0 with leave-one-out, where M_i = max_j c·D_ij over the
    kept j (c < 0: M_i = c·min_j D_ij, which is 0 without leave-one-out since D_ii = 0). Returns (M, Z),
    Z_i = Σ_j W_ij.
    """
    xp = backend.cupy
    n = D.shape[0]
    T = D.dtype.type
    if loo:
        xp.fill_diagonal(D, xp.inf)
        M = D.min(axis=1)
        M *= T(c)
    else:
        M = xp.zeros(n, dtype=D.dtype)
    _kernel("kde_softmax")(M, T(c), T(floor), 1 if loo else 0, n, D)
    return M, D.sum(axis=1)
