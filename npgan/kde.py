"""Kernel-density entropy: a differentiable estimate of the entropy of a batch of points.

:func:`kde_entropy` estimates the differential entropy H of the distribution behind n points
x: (n, d) with a Gaussian kernel density estimate, as one :class:`KDEEntropy` Function with a
hand-written backward; :func:`kde_bandwidth` gives the kernel width σ that each rule of
:data:`BANDWIDTH_RULES` picks. The GAN objectives in :mod:`npgan.gan.losses` use it as the
generator's entropy bonus, L_G = L_adv − λ·H(G(z)); ``npgan.functional`` re-exports both.
The derivation is in docs/math.md, section 11.
"""

from __future__ import annotations

import math
from typing import Any

from . import backend, kernels, ops
from .backend import get_array_module
from .checks import real
from .ops import constant
from .tensor import Function, Tensor

__all__ = ["kde_entropy", "kde_bandwidth", "KDEEntropy", "BANDWIDTH_RULES", "check_bandwidth"]

BANDWIDTH_RULES = ("scott", "silverman", "median")

# exp(t) of float32 t below about −87.3 is a denormal number, and arithmetic on denormals is slow
# (benchmarks/README.md). Exponents are shifted so that each row's largest is 0 and then
# clamped at −80 (float32) or −700 (float64, whose denormals start at −708): e^−80 ≈ 1.8e−35 is far
# below float32's resolution next to the row's largest term, 1, so the result does not change.
_EXP_FLOOR = {"float32": -80.0, "float64": -700.0}


# ============================================================================ bandwidth
def _as_points(x: Any, name: str = "kde_entropy") -> Any:
    """The raw array of ``x`` as (n, d): more axes are flattened; checks dtype, shape and finiteness."""
    data = x.data if isinstance(x, Tensor) else x
    if not backend.is_array(data):
        raise TypeError(f"{name}: x must be a Tensor or an array, got {type(x).__name__}")
    if data.dtype.kind != "f":
        raise TypeError(f"{name}: x must be a float tensor, got dtype {data.dtype}")
    if data.ndim < 2:
        raise ValueError(f"{name}: x must have shape (n, d) (or (n, ...), flattened to (n, d)), got shape "
                         f"{data.shape}; for n scalar samples use x.reshape(-1, 1)")
    n = data.shape[0]
    d = data.size // n if n else 0
    if n < 1 or d < 1:
        raise ValueError(f"{name}: x must hold at least one point of at least one dimension, got shape "
                         f"{data.shape}")
    data = data.reshape(n, d)
    if not bool(get_array_module(data).isfinite(data).all()):
        raise ValueError(f"{name}: x contains nan or inf (shape {data.shape})")
    return data


def _scaled(x: Any, host: bool = False) -> tuple[Any, Any, Any]:
    """(x/s, s, max|x/s|) with s = 2^(e−1), max|x| = f·2^e, f in [0.5, 1) (s = 1 for all-zero x).

    x/s is exact (``ldexp``, a power of two) and lies in [−2, 2], so that no square, distance or standard
    deviation of x/s can overflow, whatever the size of x (float32 points at 1e19 have squares above
    float32's 3.4e38); s itself is finite for every finite x. On the CPU, or with ``host`` (a rule's σ needs
    host floats anyway), s and max|x/s| are Python floats; otherwise, on a GPU, they stay 0-d arrays on the
    device, so that finding them moves nothing to the host."""
    xp = get_array_module(x)
    top = xp.abs(x).max()
    if host or xp is backend.np:
        top = float(top)
        if top == 0:
            return x, 1.0, 0.0
        e = math.frexp(top)[1] - 1
        return xp.ldexp(x, -e).astype(x.dtype, copy=False), math.ldexp(1.0, e), math.ldexp(top, -e)
    e = xp.where(top > 0, xp.frexp(top)[1] - 1, 0)
    return xp.ldexp(x, -e).astype(x.dtype, copy=False), xp.ldexp(xp.ones((), dtype=backend.float64), e), None


def _centre(x: Any) -> Any:
    """x − x_k, x_k the point nearest the mean: distances are unchanged, the cancellation in
    ‖a‖² + ‖b‖² − 2a·b shrinks to the data's spread, and equal rows (a collapsed batch) become
    exactly equal, exactly 0 in the collapsed case."""
    xp = get_array_module(x)
    r = x - x.mean(axis=0)
    k = xp.argmin(xp.einsum("ij,ij->i", r, r))  # a 0-d index array: no trip to the host on a GPU
    r = xp.subtract(x, x[k], out=r)
    return r


def _sq_dists(xc: Any) -> Any:
    """D_ij = ‖x_i − x_j‖² as ‖x_i‖² + ‖x_j‖² − 2 x_i·x_j: one (n, n) array, clamped at 0, diagonal 0."""
    xp = get_array_module(xc)
    sq = xp.einsum("ij,ij->i", xc, xc)
    # numpy sends a @ a.T to BLAS syrk, which OpenBLAS runs far slower than gemm for a thin a
    # (benchmarks/README.md); a transposed copy (n·d) makes it a plain gemm.
    D = xc @ (xp.ascontiguousarray(xc.T) if xc.shape[1] < 128 else xc.T)
    D *= -2
    D += sq[:, None]
    D += sq[None, :]
    xp.maximum(D, 0, out=D)
    xp.fill_diagonal(D, 0)
    return D


def _rule_bandwidth(x: Any, rule: str, D: Any = None, top: float | None = None) -> float:
    """σ of ``rule`` (see :func:`kde_bandwidth`) for the points x: (n, d), raised to the floor.

    ``D``: the squared distances of x when already at hand (the median rule uses them); ``top``: max|x| when
    already known on the host.
    """
    xp = get_array_module(x)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"kde_bandwidth: the {rule!r} rule needs at least 2 points, got {n}")
    if rule in ("scott", "silverman"):
        std = float(x.std(axis=0, ddof=1).mean())
        factor = n ** (-1.0 / (d + 4))
        if rule == "silverman":
            factor *= (4.0 / (d + 2)) ** (1.0 / (d + 4))
        sigma = factor * std
    else:
        if D is None:
            D = _sq_dists(_centre(x))
        off = D.reshape(-1)[1:].reshape(n - 1, n + 1)[:, :-1]  # the n(n − 1) entries i ≠ j (a view)
        sigma = math.sqrt(float(xp.median(off)) / (2.0 * math.log(n + 1)))
    # The floor: the data's float resolution eps·max|x| (1 when x is all zeros).
    floor = float(backend.finfo(x.dtype).eps) * (float(xp.abs(x).max()) if top is None else top)
    return max(sigma, floor if floor > 0 else 1.0)


def check_bandwidth(name: str, bandwidth: Any) -> float | str:
    """A rule name of :data:`BANDWIDTH_RULES`, or the bandwidth σ as a positive finite float; ValueError naming
    ``name`` otherwise."""
    if isinstance(bandwidth, str) and bandwidth in BANDWIDTH_RULES:
        return bandwidth
    try:
        return real(name, bandwidth, 0, low_open=True)
    except ValueError:
        raise ValueError(f"{name} must be a positive number or one of {', '.join(BANDWIDTH_RULES)}, "
                         f"got {bandwidth!r}") from None


def kde_bandwidth(x: Any, rule: str = "silverman") -> float:
    """The Gaussian kernel's standard deviation σ that ``rule`` picks for the points x: (n, d).

    Rules (s = mean over the d axes of the per-axis sample standard deviation, with n − 1 in
    the denominator, i.e. s = (1/d) Σ_k std_k):

        "scott":      σ = s · n^(−1/(d+4))
        "silverman":  σ = s · (4/(d+2))^(1/(d+4)) · n^(−1/(d+4))
        "median":     σ² = median_{i≠j} ‖x_i − x_j‖² / (2 log(n + 1))
                      (the median heuristic as in SVGD, Liu & Wang 2016: the median of the
                      squared pairwise distances over all ordered pairs i ≠ j, so that a point's
                      kernel weight at the median distance is 1/(n + 1))

    A rule's σ is raised to the data's float resolution eps·max|x| (1 when x is all zeros), so that
    a collapsed batch (all rows equal, s = 0) still gives a finite entropy and gradient. A positive
    float is returned unchanged. Inputs with more than two axes are flattened to (n, d). The rules are
    evaluated on x/s (s a power of two near max|x|, an exact scaling) and multiplied back, so float32 points of any
    finite size give a finite σ.
    """
    bw = check_bandwidth("kde_bandwidth: rule", rule)
    if not isinstance(bw, str):
        return bw
    xs, scale, top = _scaled(_as_points(x, "kde_bandwidth"), host=True)  # rules are scale-equivariant
    return _rule_bandwidth(xs, bw, top=top) * scale                        # σ(x) = s·σ(x/s)


# ============================================================================ KDE entropy
class KDEEntropy(Function):
    """Leave-one-out or plain Gaussian-KDE entropy of n points x: (n, d) (or (n, ...), flattened).

    Forward (m = n, or n − 1 with leave-one-out where the terms j = i are left out):

        p̂(x_i) = (1/m) Σ_j N(x_i | x_j, σ² I)
        H      = −(1/n) Σ_i log p̂(x_i)
               = −(1/n) Σ_i LSE_j(L_ij) + log m + (d/2) log(2πσ²),     L_ij = −‖x_i − x_j‖² / (2σ²)

    LSE_j is a log-sum-exp over each row, computed as M_i + log Σ_j exp(max(L_ij − M_i, −80))
    with M_i = max_j L_ij (−700 instead of −80 in float64; see _EXP_FLOOR). Squared distances
    come from ‖x_i‖² + ‖x_j‖² − 2 x_i·x_j on x − x_c, x_c the data point nearest the mean (H is
    translation-invariant; this keeps the cancellation at the scale of the data's spread and makes
    a collapsed batch exactly 0), clamped at 0, diagonal set to exactly 0.

    Backward. With W_ij = exp(L_ij) / Σ_j' exp(L_ij') (row softmax; W_ii = 0 with leave-one-out)
    and ∂L_ij/∂x_k = −(x_i − x_j)(δ_ik − δ_jk)/σ²:

        ∂H/∂x_k = −(1/n) Σ_i Σ_j W_ij ∂L_ij/∂x_k
                = (1/(nσ²)) [Σ_j W_kj (x_k − x_j) + Σ_i W_ik (x_k − x_i)]
                = (1/(nσ²)) Σ_j S_kj (x_k − x_j),                 S = W + Wᵀ
                = (1/(nσ²)) (diag(rowsum S) x − S x)

    computed as gx = gy/(nσ²) · (r ⊙ x − W x − Wᵀ x), r = rowsum(W) + colsum(W): two matrix
    products, no (n, n, d) array and no second (n, n) array.

    Scaling (finite for every finite input). Everything is computed on x/s, s = 2^(e−1) ≥ max|x|/2 a
    power of two (exact), with σ' = σ/s. N(x_i | x_j, σ²I) = s^(−d) N(x_i/s | x_j/s, σ'²I), so

        L_ij(x, σ) = L_ij(x/s, σ'),   H(x; σ) = H(x/s; σ') + d log s,

    and the normaliser is taken as d (log σ + ½ log 2π) (σ² itself may overflow, log σ cannot). In
    particular H(c x; c σ) = H(x; σ) + d log c. The gradient in the same variables:
    ∂H/∂x = (s/σ)² / (n s) · (r ⊙ x̃ − W x̃ − Wᵀ x̃),  x̃ = (x − x_c)/s.

    Keeps for backward: W (n, n), ``xc`` = x̃ (n, d, the centred points divided by s), ``scale`` = s
    and ``sigma`` = σ (the bandwidth of the unscaled points). ``bandwidth`` is σ or a rule evaluated on x in
    forward (the median rule reuses the distance matrix); either way σ is a constant of the gradient
    (see :func:`kde_entropy`).

    Double backward. backward_graph recomputes W from x in npgan ops (distances, the row softmax with its
    maximum shifted out as a constant and the same floor, W's diagonal dropped), so that with
    gx = c (r ⊙ x − W x − Wᵀ x), c = gy/(nσ²), the second pass differentiates W too. With the gradient u
    (n, d) arriving at gx, and A = W with its diagonal dropped:
        ∂⟨u, gx⟩/∂x_k = c Σ_j S_kj (u_k − u_j)                                   (W held fixed)
                       + Σ_ij ∂⟨u, gx⟩/∂W_ij · ∂W_ij/∂x_k,   ∂⟨u, gx⟩/∂W_ij = c (u_i − u_j)·(x_i − x_j),
        ∂W_ij/∂L_il = W_ij (δ_jl − W_il)   (the softmax's Jacobian, per row),
        ∂L_il/∂x_k = −(x_i − x_l)(δ_ik − δ_lk)/σ²;
    and gx is linear in gy: ∂gx/∂gy = (r ⊙ x − W x − Wᵀ x)/(nσ²). The leave-one-out diagonal and the floor
    enter as constant masks; σ stays a constant. (backward_graph works on the unscaled points: the
    second derivative is for the scales where σ² is finite.)
    """

    def __init__(self, bandwidth: float | str, leave_one_out: bool):
        self.bandwidth, self.loo = bandwidth, bool(leave_one_out)

    def forward(self, x):
        xp = get_array_module(x)
        n = x.shape[0]
        self.shape = x.shape
        x2 = x.reshape(n, -1)
        d = x2.shape[1]
        m = n - 1 if self.loo else n
        dt = x2.dtype.type
        bw = self.bandwidth
        xs, s, top = _scaled(x2, host=isinstance(bw, str))  # x/s in [−2, 2]: nothing below can overflow
        xc = _centre(xs)
        L = _sq_dists(xc)                      # the one (n, n) buffer, reused in place to the end
        self.scale = s
        self.sigma = sigma = _rule_bandwidth(xs, bw, L, top) * s if isinstance(bw, str) else float(bw)
        if sigma * float(backend.finfo(x2.dtype).max) < 1.0:  # the gradient is of order 1/σ (subnormal points)
            raise ValueError(f"kde_entropy: bandwidth {sigma:.3g} is below 1/max of {x2.dtype} "
                             f"({1 / float(backend.finfo(x2.dtype).max):.3g}): the points' gradient, of order 1/σ, "
                             f"would overflow; scale the points up or use float64")
        r = s / sigma                          # 1/σ' with σ' = σ/s, the bandwidth of the scaled points
        inv2s2 = 0.5 * r * r                   # 1/(2σ'²): 0 when σ ≫ the data, inf when σ ≪ it
        if isinstance(inv2s2, float):          # on a GPU with a fixed σ this check would cost a sync: there an
            with backend.np.errstate(over="ignore"):  # overflow shows as a non-finite entropy instead
                ok = math.isfinite(inv2s2) and math.isfinite(float(dt(inv2s2)))
            if not ok:
                raise ValueError(f"kde_entropy: bandwidth {sigma!r} is too small for {x2.dtype} points of size "
                                 f"{s:.3g}: 1/(2σ²) overflows at their scale")
            inv2s2 = dt(inv2s2)
        else:
            inv2s2 = inv2s2.astype(x2.dtype)
        floor = dt(_EXP_FLOOR.get(x2.dtype.name, -80.0))
        if kernels.enabled(xp) and L.flags.c_contiguous:  # the same steps in one fused kernel
            M, Z = kernels.kde_row_softmax_(L, -inv2s2, floor, self.loo)
        else:
            L *= -inv2s2
            if self.loo:
                xp.fill_diagonal(L, -xp.inf)
            M = L.max(axis=1)
            L -= M[:, None]
            xp.maximum(L, floor, out=L)
            xp.exp(L, out=L)
            if self.loo:
                xp.fill_diagonal(L, 0)
            Z = L.sum(axis=1)
        L /= Z[:, None]                        # now W, the row softmax
        self.W, self.xc = L, xc                # xc: the centred points divided by s
        lse = M + xp.log(Z)
        # (d/2) log(2πσ²) as d·(log σ + log(2π)/2): σ² may overflow (σ = 1e200), log σ cannot
        h = -lse.mean() + math.log(m) + d * (math.log(sigma) + 0.5 * math.log(2.0 * math.pi))
        return xp.asarray(h, dtype=x2.dtype)

    def backward(self, gy):
        W, xc, s = self.W, self.xc, self.scale
        n = xc.shape[0]
        # S_kk multiplies x_k − x_k = 0: dropping W's diagonal changes nothing exactly, and keeps
        # r ⊙ x − W x − Wᵀ x from cancelling terms of size |x| (float error relative to the spread).
        get_array_module(W).fill_diagonal(W, 0)
        r = W.sum(axis=1) + W.sum(axis=0)
        g = r[:, None] * xc
        t = W @ xc
        g -= t
        get_array_module(xc).matmul(W.T, xc, out=t)
        g -= t
        # xc is (x − x_c)/s: 1/(nσ²) · (… s·xc) = (s/σ)² / (n s) · (… xc), each factor finite
        rs = s / self.sigma
        c = rs / n * rs / s                    # a Python float, or on a GPU a float64 0-d array
        if isinstance(c, float) and c > float(backend.finfo(g.dtype).max):  # data near the underflow (σ ~ 1e-48
            # in float32): the scale alone overflows g's dtype; in float64 a zero of g (coinciding points) stays 0
            # and only a gradient that does overflow becomes inf
            f64 = backend.float64
            return (g.astype(f64) * (gy.astype(f64) * c)).astype(g.dtype).reshape(self.shape)
        g *= gy * (c if isinstance(c, float) else c.astype(g.dtype))  # scaled in g's dtype either way
        return g.reshape(self.shape)

    def backward_graph(self, gy):
        x = self.inputs[0]
        n = x.shape[0]
        raw = x.data.reshape(n, -1)
        xp = get_array_module(raw)
        off = 1.0 - xp.eye(n, dtype=raw.dtype)
        r0 = raw - raw.mean(axis=0)
        k = xp.argmin(xp.einsum("ij,ij->i", r0, r0))       # centred at the point nearest the mean, as forward
        xc = ops.reshape(x, raw.shape) - constant(raw[k][None], x)
        sq = ops.sum(xc * xc, axis=1, keepdims=True)
        D = -2.0 * ops.matmul(xc, ops.transpose(xc)) + sq + ops.transpose(sq)
        D = ops.clip(D, 0.0, None) * constant(off, x)         # clamped at 0, diagonal exactly 0
        L = D * (-1.0 / (2.0 * self.sigma * self.sigma))
        Lc = L.data.copy()
        if self.loo:
            xp.fill_diagonal(Lc, -xp.inf)
        shifted = ops.clip(L - constant(Lc.max(axis=1, keepdims=True), x), _EXP_FLOOR.get(raw.dtype.name, -80.0))
        E = ops.exp(shifted)
        if self.loo:
            E = E * constant(off, x)
        W = E / ops.sum(E, axis=1, keepdims=True)
        A = W * constant(off, x)                                # S_kk multiplies x_k − x_k = 0
        r = ops.sum(A, axis=1, keepdims=True) + ops.transpose(ops.sum(A, axis=0, keepdims=True))
        g = r * xc - ops.matmul(A, xc) - ops.matmul(ops.transpose(A), xc)
        return ops.reshape(g * (gy * (1.0 / (n * self.sigma * self.sigma))), self.shape)


def kde_entropy(x: Tensor, bandwidth: float | str = "silverman", leave_one_out: bool = False) -> Tensor:
    """Differential entropy (nats) of the points x: (n, d) by a Gaussian kernel density estimate.

        p̂(x_i) = (1/m) Σ_j N(x_i | x_j, σ² I),    H = −(1/n) Σ_i log p̂(x_i)

    with m = n, or with ``leave_one_out=True`` the sum over j ≠ i and m = n − 1 (each point is
    scored by the density of the others: less biased, and it does not collapse to the kernel's
    own entropy when σ is small). The kernel's normalising constant −(d/2) log(2πσ²) is included,
    so H is a true differential-entropy estimate comparable with closed forms
    (N(0, I_d): (d/2) log(2πe); uniform on [0, 1]^d: 0).

    Args:
        x: (n, d) tensor; (n, ...) is flattened to (n, d).
        bandwidth: σ, a positive float, or a rule: "scott", "silverman" or "median" (see
            :func:`kde_bandwidth` for the formulas).
        leave_one_out: leave out j = i (needs n ≥ 2).

    Returns a 0-d tensor of x's dtype. The gradient is the closed form of :class:`KDEEntropy`:
    (1/(nσ²)) (diag(rowsum S) x − S x), S = W + Wᵀ, W the row softmax of −‖x_i − x_j‖²/(2σ²).

    A data-dependent σ (a rule) is held constant in the gradient: the rule picks the estimator's
    smoothing, like a hyper-parameter; it is not part of the entropy being estimated.
    Differentiating through it would add (∂H/∂σ)·(∂σ/∂x): for Scott/Silverman (σ ∝ the batch's
    standard deviation) a push of every point along its deviation from the mean — a rescaling of
    the whole batch, whatever the arrangement of its points, with ∂H/∂σ dominated by the
    normaliser's d/σ — and for the median rule a non-smooth one.

    Example:
        >>> h = kde_entropy(G(z), bandwidth=0.2, leave_one_out=True)   # maximise: loss = adv − λ·h
    """
    if not isinstance(x, Tensor):
        x = Tensor(x)
    x2 = _as_points(x)
    n = x2.shape[0]
    if leave_one_out and n < 2:
        raise ValueError(f"kde_entropy: leave_one_out needs at least 2 points, got shape {x.shape}")
    bw = check_bandwidth("kde_entropy: bandwidth", bandwidth)
    if isinstance(bw, str) and n < 2:
        raise ValueError(f"kde_entropy: the {bw!r} bandwidth rule needs at least 2 points, "
                         f"got shape {x.shape}")
    return KDEEntropy(bw, leave_one_out)(x)
