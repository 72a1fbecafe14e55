"""Neural-network functions, each one Function with a hand-written backward.

Imported as ``import npgan.functional as F``. Activations, the dense layer,
dropout, batch normalisation and the cross-entropies (binary, and softmax with
integer labels) live here; the convolutions (:mod:`npgan.conv`) and the KDE
entropy (:mod:`npgan.kde`) live in their own modules and are re-exported. The GAN
objectives built from these are in :mod:`npgan.gan.losses`.

Notation in the docstrings: ``gy`` is the gradient arriving at the output,
``gx`` the one sent to the input ``x``; σ is the logistic sigmoid.
"""

from __future__ import annotations

from typing import Any

from . import backend, kernels, ops, parallel
from .backend import get_array_module
from .checks import real
from .conv import conv2d, conv_transpose2d
from .conv_fast import rows_view, scratch_array
from .kde import kde_bandwidth, kde_entropy
from .ops import as_float, constant, lift, needed, per_channel_operand
from .tensor import Function, Tensor, sum_to

__all__ = ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "softplus", "logsigmoid", "dropout",
           "binary_cross_entropy_with_logits", "binary_cross_entropy", "softmax_cross_entropy", "batch_norm",
           "stable_sigmoid", "log_softmax_array",
           # re-exported from their own modules
           "conv2d", "conv_transpose2d", "kde_entropy", "kde_bandwidth"]


def stable_sigmoid(x: Any) -> Any:
    """σ(x) on a raw array, exact in both tails: 1/(1+e^−x) for x ≥ 0, e^x/(1+e^x) for x < 0."""
    xp = get_array_module(x)
    e = xp.exp(-xp.abs(x))
    r = 1.0 / (1.0 + e)
    return xp.where(x >= 0, r, e * r)


def _log1p_exp_neg_abs(x: Any) -> Any:
    """log(1 + e^−|x|) on a raw array: never overflows."""
    xp = get_array_module(x)
    return xp.log1p(xp.exp(-xp.abs(x)))


# ============================================================================ dense layer
class Linear(Function):
    """y = x Wᵀ + b,  x: (..., in), W: (out, in), b: (out,) or None.

    gx = gy W,   gW = Σ_batch gyᵀ x  (gy, x flattened to 2-D),   gb = Σ_batch gy.

    Double backward: gx is bilinear in (gy, W), gW in (gy, x), gb linear in gy; none depends on its own
    input. With u, V, c the gradients arriving at gx, gW, gb, the second pass sends
        to W: gyᵀ u,   to x: gy V,   to gy: u Wᵀ + x Vᵀ + c (broadcast over the batch)
    (rows flattened to 2-D as above); backward_graph builds gx, gW, gb from MatMul, Permute, Reshape and Sum.
    """

    def forward(self, x, w, b=None):
        if x.ndim == 0 or w.ndim != 2 or x.shape[-1] != w.shape[1]:
            raise ValueError(f"linear: input of shape {x.shape} does not fit weight of shape {w.shape} "
                             f"(the input's last axis must equal in_features = weight.shape[1])")
        if b is not None and b.shape != (w.shape[0],):
            raise ValueError(f"linear: bias of shape {b.shape} does not fit weight of shape {w.shape}")
        self.x, self.w = x, w
        y = x @ w.T
        if b is not None:
            y += b
        return y

    def backward(self, gy):
        x, w = self.x, self.w
        need = self.needs_grad
        gx = gy @ w if need[0] else None
        gw = gb = None
        rows = int(backend.np.prod(x.shape[:-1]))
        if need[1]:  # (rows spelled out: reshape(-1, 0) is ambiguous for empty batches)
            g2 = gy.reshape(rows, gy.shape[-1])
            gw = g2.T @ x.reshape(rows, x.shape[-1])
        if len(need) > 2 and need[2]:
            gb = gy.reshape(rows, gy.shape[-1]).sum(axis=0)
        return gx, gw, gb

    def backward_graph(self, gy):
        x, w = self.inputs[0], self.inputs[1]
        rows = int(backend.np.prod(x.shape[:-1]))
        g2 = ops.reshape(gy, (rows, gy.shape[-1]))
        gx = needed(self, 0, lambda: ops.matmul(gy, w))
        gw = needed(self, 1, lambda: ops.matmul(ops.transpose(g2), ops.reshape(x, (rows, x.shape[-1]))))
        gb = needed(self, 2, lambda: ops.sum(g2, axis=0)) if len(self.inputs) > 2 else None
        return gx, gw, gb


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x Wᵀ + b (PyTorch's layout: weight is (out_features, in_features))."""
    if bias is None:
        return Linear()(x, weight)
    return Linear()(x, weight, bias)


# ============================================================================ activations
class ReLU(Function):
    """y = max(x, 0).   gx = gy · [x > 0].

    Both passes run per chunk of the batch on several threads when the array is large
    (:func:`~npgan.parallel.elementwise_bounds`); y and gx keep x's memory layout (``empty_like``).

    Double backward: the mask is piecewise constant: ∂gx/∂x = 0, ∂gx/∂gy = [x > 0] (a constant Tensor).
    """

    def forward(self, x):
        xp = get_array_module(x)
        y = xp.empty_like(x)
        _chunked(lambda c: xp.maximum(x[c], 0, out=y[c]), x)
        self.y = y
        return y

    def backward(self, gy):
        y = self.y
        gx = get_array_module(gy).empty_like(y, dtype=gy.dtype)

        def chunk(c):
            g = gx[c]
            g[...] = y[c] > 0  # a cast copy, then a same-type product (bool × float casts per block)
            g *= gy[c]

        _chunked(chunk, y)
        return gx

    def backward_graph(self, gy):
        return gy * constant(self.y > 0, gy)


class LeakyReLU(Function):
    """y = x if x > 0 else a·x.   gx = gy · (1 if x > 0 else a).

    Kept for backward: the mask [x > 0], one byte per element. For 0 ≤ a ≤ 1 (``unit_slope``, every GAN's
    case) both passes are products and maxima, exact and free of branches on the mask (``where`` on a random
    mask is several times slower on a CPU):
        y = max(x, a·x),    gx = gy · f,  f = [x > 0]·(1 − a) + a, which is exactly 1 or a in floating point.
    Both run per chunk of the batch on several threads when the array is large, and keep x's memory layout.
    Other slopes take ``where`` both ways. With ``fused=True`` (CuPy, 0 ≤ a ≤ 1; :func:`leaky_relu` decides)
    one kernel runs each way and backward reads y instead of the mask: y > 0 ⇔ x > 0 when a ≥ 0.

    Double backward (either path): the factor f ∈ {1, a} is piecewise constant: ∂gx/∂x = 0, ∂gx/∂gy = f
    (a constant Tensor, from the mask, or from y on the fused path).
    """

    def __init__(self, slope: float, fused: bool = False):
        self.slope, self.fused = slope, fused

    @property
    def unit_slope(self) -> bool:
        """0 ≤ a ≤ 1: y = max(x, a·x), no comparison mask needed in forward."""
        return 0 <= self.slope <= 1

    def forward(self, x):
        if self.fused:
            self.y = kernels.leaky_relu_forward(x, self.slope)
            return self.y
        xp = get_array_module(x)
        a = x.dtype.type(self.slope)
        if not self.unit_slope:
            self.pos = x > 0
            return xp.where(self.pos, x, x * a)
        pos = xp.empty_like(x, dtype=bool)
        y = xp.empty_like(x)  # (empty_like and out=: a 0-d input stays an array)

        def chunk(c):
            xs, ys = x[c], y[c]
            xp.greater(xs, 0, out=pos[c])
            xp.multiply(xs, a, out=ys)
            xp.maximum(xs, ys, out=ys)

        _chunked(chunk, x)
        self.pos = pos
        return y

    def backward(self, gy):
        if self.fused:
            return kernels.leaky_relu_backward(self.y, gy, self.slope)
        a = gy.dtype.type(self.slope)
        xp = get_array_module(gy)
        if not self.unit_slope:
            return xp.where(self.pos, gy, gy * a)
        pos = self.pos
        gx = xp.empty_like(pos, dtype=gy.dtype)

        def chunk(c):
            f = gx[c]
            f[...] = pos[c]
            f *= gy.dtype.type(1) - a
            f += a
            f *= gy[c]

        _chunked(chunk, pos)
        return gx

    def backward_graph(self, gy):
        pos = self.y > 0 if self.fused else self.pos
        return gy * constant(get_array_module(pos).where(pos, 1.0, self.slope), gy)


def _chunked(fn, a) -> None:
    """fn(c) for c the index of each chunk of a's first axis (the batch; ``slice(lo, hi)``), on several threads
    when a is large (:func:`~npgan.parallel.elementwise_bounds`); one call with c = ``...`` when it is not split."""
    bounds = parallel.elementwise_bounds(a.shape[0], a.size, get_array_module(a)) if a.ndim else [(0, 0)]
    if len(bounds) == 1:
        fn(...)
        return
    parallel.run_bounds(lambda lo, hi: fn(slice(lo, hi)), bounds)


class Sigmoid(Function):
    """y = σ(x) = 1/(1 + e^−x).   gx = gy · y (1 − y).

    Double backward: ∂gx/∂x = gy · y(1 − y)(1 − 2y),  ∂gx/∂gy = y(1 − y) (through the output y, a Sigmoid).
    """

    def forward(self, x):
        self.y = stable_sigmoid(x)
        return self.y

    def backward(self, gy):
        y = self.y
        return gy * y * (1 - y)

    def backward_graph(self, gy):
        y = self.output
        return gy * y * (1.0 - y)


class Tanh(Function):
    """y = tanh(x).   gx = gy · (1 − y²).

    Double backward: ∂gx/∂x = −2 gy · y (1 − y²),  ∂gx/∂gy = 1 − y² (through the output y, a Tanh).
    """

    def forward(self, x):
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, gy):
        y = self.y
        return gy * (1 - y * y)

    def backward_graph(self, gy):
        y = self.output
        return gy * (1.0 - y * y)


class Softplus(Function):
    """y = log(1 + e^x) = max(x, 0) + log(1 + e^−|x|).   gx = gy · σ(x).

    Double backward: ∂gx/∂x = gy · σ(x)(1 − σ(x)),  ∂gx/∂gy = σ(x) (a :class:`Sigmoid` of the input).
    """

    def forward(self, x):
        self.x = x
        return get_array_module(x).maximum(x, 0) + _log1p_exp_neg_abs(x)

    def backward(self, gy):
        return gy * stable_sigmoid(self.x)

    def backward_graph(self, gy):
        return gy * Sigmoid()(self.inputs[0])


class LogSigmoid(Function):
    """y = log σ(x) = min(x, 0) − log(1 + e^−|x|).   gx = gy · (1 − σ(x)) = gy · σ(−x).

    Double backward: ∂gx/∂x = −gy · σ(x)σ(−x),  ∂gx/∂gy = σ(−x) (a :class:`Sigmoid` of −x).
    """

    def forward(self, x):
        self.x = x
        return get_array_module(x).minimum(x, 0) - _log1p_exp_neg_abs(x)

    def backward(self, gy):
        return gy * stable_sigmoid(-self.x)

    def backward_graph(self, gy):
        return gy * Sigmoid()(-self.inputs[0])


class Dropout(Function):
    """y = x · m / (1 − p), m ~ Bernoulli(1 − p) per element.   gx = gy · m / (1 − p).

    Double backward: linear in gy, free of x (the drawn mask is a constant): ∂gx/∂gy = m / (1 − p).
    """

    def __init__(self, p: float):
        self.p = p

    def forward(self, x):
        keep = backend.rng().random(x.shape) >= self.p
        self.scale = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self.scale

    def backward(self, gy):
        return gy * self.scale

    def backward_graph(self, gy):
        return gy * constant(self.scale, gy)


def relu(x: Tensor) -> Tensor:
    return ReLU()(as_float(x))


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    slope = real("leaky_relu: negative_slope", negative_slope)
    x = as_float(x)
    fused = 0 <= slope <= 1 and kernels.enabled(get_array_module(x.data))
    return LeakyReLU(slope, fused)(x)


def sigmoid(x: Tensor) -> Tensor:
    return Sigmoid()(as_float(x))


def tanh(x: Tensor) -> Tensor:
    return Tanh()(as_float(x))


def softplus(x: Tensor) -> Tensor:
    return Softplus()(as_float(x))


def logsigmoid(x: Tensor) -> Tensor:
    return LogSigmoid()(as_float(x))


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1/(1 − p) (identity unless training)."""
    p = real("dropout: probability p", p, 0, 1)
    if not training or p == 0.0:
        return x
    x = as_float(x)
    if p == 1.0:
        return x * 0.0
    return Dropout(p)(x)


# ============================================================================ cross-entropies
_REDUCTIONS = ("mean", "sum", "none")


def _check_bce(name: str, x: Tensor, t: Any, reduction: str) -> Tensor:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    t = lift(t, x)
    if t.shape != x.shape:
        raise ValueError(f"{name}: target shape {t.shape} differs from input shape {x.shape}; "
                         "they must be equal (use .reshape or .squeeze on one of them)")
    return t


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean() if loss.size else loss.sum() * float("nan")
    if reduction == "sum":
        return loss.sum()
    return loss


def _reduce_grad(gy, shape, reduction):
    if reduction == "none":
        return gy
    n = 1
    for s in shape:
        n *= s
    return gy / n if reduction == "mean" else gy


class SigmoidBCEWithLogits(Function):
    """Fused sigmoid + binary cross-entropy on logits x with targets t.

    ℓ_i = max(x_i, 0) − x_i t_i + log(1 + e^−|x_i|)     (= −t log σ(x) − (1 − t) log(1 − σ(x)))
    reduced by mean (÷ n), sum or none.

    gx_i = (σ(x_i) − t_i) · gy / n     (n = 1 for "sum", elementwise gy for "none"), computed as
           ((1 − t_i) σ(x_i) − t_i σ(−x_i)) · gy / n, exact for t_i ∈ {0, 1} at any x_i
    gt_i = −x_i · gy / n
    Stable for any finite x: no exp of a positive number is ever taken.

    Double backward (backward_graph: the same formula in npgan ops, σ by :class:`Sigmoid`; CPU and GPU alike):
        ∂gx_i/∂x_i = σ(x_i)(1 − σ(x_i)) · gy / n,   ∂gx_i/∂t_i = −gy / n,   ∂gt_i/∂x_i = −gy / n,
        ∂gt_i/∂t_i = 0,   ∂gx/∂gy = (σ(x) − t)/n,   ∂gt/∂gy = −x/n.
    """

    def __init__(self, reduction: str):
        self.reduction = reduction

    def forward(self, x, t):
        xp = get_array_module(x)
        self.x, self.t = x, t
        if kernels.enabled(xp) and x.dtype == t.dtype and x.size:  # one fused (reduction) kernel
            if self.reduction == "none":
                return kernels.bce_logits_loss(x, t)
            total = kernels.bce_logits_sum(x, t)
            return total / x.size if self.reduction == "mean" else total
        loss = xp.maximum(x, 0) - x * t + _log1p_exp_neg_abs(x)
        return _reduce(loss, self.reduction)

    def backward(self, gy):
        x, t = self.x, self.t
        g = _reduce_grad(gy, x.shape, self.reduction)
        gx = None
        if self.needs_grad[0] and kernels.enabled(get_array_module(x)) and x.dtype == t.dtype:
            gx = kernels.bce_logits_grad(x, t, g)
        elif self.needs_grad[0]:  # σ(x) − t as (1 − t)·σ(x) − t·σ(−x): no cancellation when t is 0 or 1
            gx = ((1 - t) * stable_sigmoid(x) - t * stable_sigmoid(-x)) * g
        gt = sum_to(-x * g, t.shape) if self.needs_grad[1] else None
        return gx, gt

    def backward_graph(self, gy):
        x, t = self.inputs
        g = gy / float(x.size) if self.reduction == "mean" else gy
        gx = needed(self, 0, lambda: ((1.0 - t) * Sigmoid()(x) - t * Sigmoid()(-x)) * g)
        gt = needed(self, 1, lambda: ops.sum_to_size(-x * g, t.shape))
        return gx, gt


class BinaryCrossEntropy(Function):
    """Binary cross-entropy on probabilities p ∈ [0, 1] with targets t.

    ℓ_i = −(t_i max(log p_i, −100) + (1 − t_i) max(log(1 − p_i), −100))   (PyTorch's clamp)
    gp_i = (p_i − t_i) / max(p_i (1 − p_i), 1e−12) · gy / n
    gt_i = (max(log(1 − p_i), −100) − max(log p_i, −100)) · gy / n

    Double backward (where the clamps are inactive; a clamped term is a constant there):
        ∂gp_i/∂p_i = (p_i² − 2 p_i t_i + t_i) / (p_i (1 − p_i))² · gy / n,
        ∂gp_i/∂t_i = ∂gt_i/∂p_i = −1 / (p_i (1 − p_i)) · gy / n,   ∂gt_i/∂t_i = 0,
        ∂gp/∂gy = (p − t) / (p(1 − p) n),   ∂gt/∂gy = (log(1 − p) − log p) / n.
    """

    def __init__(self, reduction: str):
        self.reduction = reduction

    def forward(self, p, t):
        xp = get_array_module(p)
        if p.size and (float(p.min()) < 0 or float(p.max()) > 1):
            raise ValueError("binary_cross_entropy: input probabilities must lie in [0, 1] "
                             f"(got values in [{float(p.min())}, {float(p.max())}]); "
                             "for logits use binary_cross_entropy_with_logits")
        with backend.np.errstate(divide="ignore"):
            lp = xp.maximum(xp.log(p), -100)
            l1p = xp.maximum(xp.log1p(-p), -100)
        self.p, self.t, self.lp, self.l1p = p, t, lp, l1p
        return _reduce(-(t * lp + (1 - t) * l1p), self.reduction)

    def backward(self, gy):
        xp = get_array_module(gy)
        p, t = self.p, self.t
        g = _reduce_grad(gy, p.shape, self.reduction)
        gp = (p - t) / xp.maximum(p * (1 - p), 1e-12) * g if self.needs_grad[0] else None
        gt = (self.l1p - self.lp) * g if self.needs_grad[1] else None
        return gp, gt

    def backward_graph(self, gy):
        p, t = self.inputs
        g = gy / float(p.size) if self.reduction == "mean" else gy

        def clamped_log(q, ok):  # max(log q, −100) with the log taken only where it is above −100 (no 0/0)
            return ops.where(ok, ops.log(ops.where(ok, q, 1.0)), -100.0)

        gp = needed(self, 0, lambda: (p - t) / ops.maximum(p * (1.0 - p), 1e-12) * g)
        gt = needed(self, 1, lambda: (clamped_log(1.0 - p, self.l1p > -100) - clamped_log(p, self.lp > -100)) * g)
        return gp, gt


def binary_cross_entropy_with_logits(logits: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of σ(logits) against ``target`` in one stable, fused op.

    logits: any shape; target: the same shape (a tensor, an array or a scalar
    broadcast to it); reduction: "mean" | "sum" | "none".
    """
    logits, t = _bce_args("binary_cross_entropy_with_logits", logits, target, reduction)
    return SigmoidBCEWithLogits(reduction)(logits, t)


def binary_cross_entropy(prob: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of probabilities ``prob`` against ``target`` (log clamped at −100, as PyTorch)."""
    prob, t = _bce_args("binary_cross_entropy", prob, target, reduction)
    return BinaryCrossEntropy(reduction)(prob, t)


def _bce_args(name: str, x: Any, target: Any, reduction: str) -> tuple[Tensor, Tensor]:
    """(x as a float tensor, target as a tensor of x's shape) after checking ``reduction`` and ``target``."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    x = as_float(x)
    if not isinstance(target, Tensor) and not backend.is_array(target):
        xp = get_array_module(x.data)
        if isinstance(target, (int, float)) and not isinstance(target, bool):  # a scalar fills the shape (on a
            target = Tensor(xp.full(x.shape, target, dtype=x.dtype))      # GPU: a fill kernel, no host copy)
        else:
            try:
                t = xp.asarray(target, dtype=x.dtype)  # a list must match the shape
            except (TypeError, ValueError):
                raise TypeError(f"{name}: target must be a tensor, an array or a number, got {target!r}") from None
            target = Tensor(xp.full(x.shape, t, dtype=x.dtype) if t.ndim == 0 else t)
    return x, _check_bce(name, x, target, reduction)


def log_softmax_array(x: Any) -> Any:
    """log softmax along the last axis of a raw array: z − log Σ e^z with z = x − max(x) (no overflow)."""
    xp = get_array_module(x)
    z = x - x.max(axis=-1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))


class SoftmaxCrossEntropy(Function):
    """Softmax + negative log-likelihood of integer labels, fused.

    logits x: (N, C), labels t: (N,) integers in [0, C).
    ℓ_i = −log softmax(x_i)[t_i] = log Σ_c e^{x_ic} − x_{i t_i}, computed as
    −(z_i − log Σ_c e^{z_ic})[t_i] with z_i = x_i − max_c x_ic;
    reduced by mean (÷ N), sum or none.

    gx_ic = (softmax(x_i)_c − [c = t_i]) · gy / N   (gy_i elementwise for "none").
    Labels get no gradient. Kept for backward: the softmax (N, C) and the labels.

    Double backward: with P = softmax(x_i),  ∂gx_ic/∂x_ik = (P_c [c = k] − P_c P_k) · gy / N (the softmax's
    Jacobian), ∂gx/∂gy = (P − onehot(t))/N. backward_graph recomputes P from x in ops (shifted by the row
    maximum as a constant: the softmax does not change).
    """

    def __init__(self, reduction: str = "mean"):
        self.reduction = reduction

    def forward(self, x, t):
        xp = get_array_module(x)
        logp = log_softmax_array(x)
        self.p, self.t = xp.exp(logp), t
        return _reduce(-logp[xp.arange(x.shape[0]), t], self.reduction)

    def backward(self, gy):
        xp = get_array_module(gy)
        g = self.p.copy()
        g[xp.arange(g.shape[0]), self.t] -= 1
        gl = _reduce_grad(gy, (g.shape[0],), self.reduction)
        g *= gl[:, None] if self.reduction == "none" else gl
        return g, None

    def backward_graph(self, gy):
        x = self.inputs[0]
        xp = get_array_module(x.data)
        n = x.shape[0]
        e = ops.exp(x - constant(x.data.max(axis=-1, keepdims=True), x))
        p = e / ops.sum(e, axis=-1, keepdims=True)
        onehot = xp.zeros(x.shape, dtype=x.dtype)
        onehot[xp.arange(n), self.t] = 1
        if self.reduction == "none":
            gl = ops.reshape(gy, (n, 1))
        else:
            gl = gy / float(n) if self.reduction == "mean" else gy
        return (p - constant(onehot, x)) * gl, None


def softmax_cross_entropy(logits: Tensor, labels: Any, reduction: str = "mean") -> Tensor:
    """Cross-entropy of softmax(logits) against integer ``labels`` (PyTorch's ``F.cross_entropy``).

    logits: (N, C) Tensor; labels: (N,) integer Tensor, array or list with
    values in [0, C); reduction: "mean" | "sum" | "none".
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"softmax_cross_entropy: reduction must be 'mean', 'sum' or 'none', "
                         f"got {reduction!r}")
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: logits must be (N, C), got shape {logits.shape}")
    t = labels.data if isinstance(labels, Tensor) else labels
    if not backend.is_array(t):
        t = backend.np.asarray(t)
    if t.dtype.kind not in "iu":
        raise ValueError(f"softmax_cross_entropy: labels must be integers, got dtype {t.dtype}")
    if t.shape != (logits.shape[0],):
        raise ValueError(f"softmax_cross_entropy: labels of shape {t.shape} do not fit logits of shape "
                         f"{logits.shape} (expected ({logits.shape[0]},))")
    if t.size and (int(t.min()) < 0 or int(t.max()) >= logits.shape[1]):
        raise ValueError(f"softmax_cross_entropy: labels must lie in [0, {logits.shape[1]}), "
                         f"got values in [{int(t.min())}, {int(t.max())}]")
    t = get_array_module(logits.data).asarray(t)
    return SoftmaxCrossEntropy(reduction)(logits, Tensor(t))


# ============================================================================ batch normalisation
class BatchNorm(Function):
    """Batch normalisation over every axis but the channel axis 1, in one op.

    Σ is over the m = N·M elements of a channel (M = the product of the trailing sizes, 1 for (N, C)).
    Training (statistics of this batch):
        μ = Σ x / m,  x_c = x − μ,  v = Σ x_c² / m,  s = 1/√(v + ε),  x̂ = x_c·s,  y = γ x̂ + β = x_c·(γ s) + β
        gγ = Σ gy · x̂ = s · Σ gy · x_c,   gβ = Σ gy
        gx = (s / m) · (m·gx̂ − Σ gx̂ − x̂ · Σ(gx̂ · x̂))  with gx̂ = gy · γ, i.e. per channel
           = a·gy − (a/m)·gβ − x_c · (a s/m)·gγ,           a = γ s
    Evaluation (running statistics μ_r, v_r held constant): the same with μ_r, v_r in place of μ, v and
        gx = gy · a.
    Keeps x_c and s for backward (x_c has the input's size; x̂ is x_c·s, never stored). The sums of products
    (Σ x_c², Σ gy·x_c) are einsum contractions, which need no product array; so forward makes two arrays of the
    input's size (x_c and y) in five passes over memory, and backward one (gx) and one temporary.

    Layout. A channels-last x (memory (N, H, W, C), as :mod:`npgan.conv_fast` makes them) and a 2-D x (N, C)
    are handled as their rows (R, C), per-channel vectors broadcast along the rows, and y and gx keep that
    layout; any other x as (N, C, M), NCHW, with per-channel operands from :func:`~npgan.ops.per_channel_operand`.

    Double backward. backward_graph recomputes μ, v, s and x̂ from x in npgan ops (in training they depend on
    the whole channel) and forms gx, gγ, gβ by the formulas above, so the second pass differentiates them.
    Per channel, with g = gy·γ, ḡ = Σg/m, c = Σ(g x̂)/m and ∂x̂_j/∂x_k = (s/m)(m δ_jk − 1 − x̂_j x̂_k):
        gx_k = s (g_k − ḡ − x̂_k c)
        ∂gx_k/∂x_l = −(s²/m) [ x̂_k (g_l − ḡ) + x̂_l (g_k − ḡ) + c (m δ_kl − 1 − 3 x̂_k x̂_l) ]
        ∂gx_k/∂γ = ∂gγ/∂x_k = (s/m)(m gy_k − Σgy − x̂_k Σ(gy x̂))   (gx is linear in γ),   ∂gγ/∂γ = 0,
        ∂gγ/∂gy = x̂,   ∂gβ/∂gy = 1,   ∂gx/∂gy: the first backward again (linear in gy).
    Evaluation: gx = gy γ s_r (s_r constant), gγ = Σ gy x̂ with x̂ affine in x: ∂gx/∂γ = gy s_r,
    ∂gγ/∂x = gy s_r, nothing else but the linear parts.
    """

    def __init__(self, eps: float, training: bool, running_mean=None, running_var=None):
        self.eps, self.training = eps, training
        self.rm, self.rv = running_mean, running_var

    @staticmethod
    def _view(a, C):
        """(how, a as the route works on it): "rows" with a (R, C) view for a 2-D or channels-last a; else
        "nchw" with a as (N, C, M) (a copy only when a's memory is neither)."""
        if a.ndim == 2:
            return "rows", a
        r = rows_view(a) if a.ndim == 4 else None
        if r is not None:
            return "rows", r
        M = 1
        for n in a.shape[2:]:
            M *= n
        return "nchw", a.reshape(a.shape[0], C, M)

    @staticmethod
    def _ops(how, a, run=1):
        """(broadcast a per-channel vector, Σ per channel, Σ of a product per channel) for arrays viewed as a.

        Each Σ is taken in two levels: in a's dtype along runs of ``run`` pixels (an image row; for the "rows"
        view, ``run`` consecutive rows), then the runs' partial sums in float64, as PyTorch's CPU kernels
        accumulate batch statistics: the result is within a few float64 roundings plus one float32 sum of a row
        (at 64×16×16×64, 4e-9 relative against 3e-7 for one float32 sum per image), for the time of one float32
        pass. The sums of products are einsum contractions, which form no product array. Sums come back in
        float64."""
        xp = get_array_module(a)
        f64 = backend.float64
        C = a.shape[1]
        if how == "rows":
            return ((lambda v: v),
                    (lambda u: xp.einsum("rwc->rc", u.reshape(-1, run, C)).sum(axis=0, dtype=f64)),
                    (lambda u, v: xp.einsum("rwc,rwc->rc", u.reshape(-1, run, C), v.reshape(-1, run, C))
                     .sum(axis=0, dtype=f64)))
        return (per_channel_operand(a),
                (lambda u: xp.einsum("ncrw->ncr", u.reshape(u.shape[0], C, -1, run)).sum(axis=(0, 2), dtype=f64)),
                (lambda u, v: xp.einsum("ncrw,ncrw->ncr", u.reshape(u.shape[0], C, -1, run),
                                        v.reshape(v.shape[0], C, -1, run)).sum(axis=(0, 2), dtype=f64)))

    @staticmethod
    def _back(how, a, shape):
        """An array viewed by :meth:`_view` back to ``shape`` (N, C, *), in its own layout."""
        if how == "rows" and len(shape) == 4:
            N, C, H, W = shape
            return a.reshape(N, H, W, C).transpose(0, 3, 1, 2)
        return a.reshape(shape)

    def forward(self, x, gamma, beta):
        xp = get_array_module(x)
        self.empty = x.size == 0  # an empty batch or image, only in evaluation (training needs m > 1)
        if self.empty:
            self.how = "nchw"
            self.s = (1.0 / xp.sqrt(self.rv.astype(x.dtype, copy=False) + self.eps)).astype(x.dtype, copy=False)
            return xp.empty(x.shape, dtype=xp.result_type(x, gamma, beta))
        how, xv = self._view(x, x.shape[1])
        per = xv.shape[0] // x.shape[0]  # rows of the view per image
        run = x.shape[-1] if x.ndim > 2 else 1  # the first level of the statistics' sums: an image row
        bounds = parallel.elementwise_bounds(x.shape[0], x.size, xp)
        piece = (lambda a, lo, hi: a[lo * per:hi * per]) if how == "rows" else (lambda a, lo, hi: a[lo:hi])
        xc = xp.empty_like(xv)
        if self.training:
            def stats(lo, hi):  # this chunk's count, mean and Σ(x − its mean)², x − its mean into xc
                xs, xcs = piece(xv, lo, hi), piece(xc, lo, hi)
                bc, csum, cdot = self._ops(how, xs, run)
                mc = xs.size // xs.shape[1] if how == "nchw" else xs.shape[0]
                mu_c = csum(xs) / mc
                xp.subtract(xs, bc(mu_c.astype(xs.dtype, copy=False)), out=xcs)
                return mc, mu_c, cdot(xcs, xcs)

            parts = parallel.run_bounds(stats, bounds)
            m = sum(q[0] for q in parts)
            mu = sum(q[0] * q[1] for q in parts) / m if len(parts) > 1 else parts[0][1]
            shifts = [q[1] - mu for q in parts]  # 0 with one chunk; Chan et al.'s pairwise update of Σ(x − μ)²:
            var = sum(q[2] + q[0] * d * d for q, d in zip(parts, shifts)) / m if len(parts) > 1 else parts[0][2] / m
            self.batch_mean, self.batch_var = mu, var
        else:
            mu, var = self.rm.astype(x.dtype, copy=False), self.rv.astype(x.dtype, copy=False)
            shifts = [None] * len(bounds)
        s = (1.0 / xp.sqrt(var + self.eps)).astype(xc.dtype, copy=False)
        a = gamma * s
        same = xp.result_type(xc, a, beta) == xc.dtype  # the output is a new array of x's dtype and layout
        y = xp.empty_like(xc) if same else None

        def normalise(lo, hi, shift):  # y = (x − μ)·a + β, from this chunk's x − μ_c = (x − μ) − shift
            xs, xcs = piece(xv, lo, hi), piece(xc, lo, hi)
            bc = self._ops(how, xs)[0]
            if shift is None:  # evaluation: x − μ_r
                xp.subtract(xs, bc(mu), out=xcs)
                b_c = beta
            else:
                b_c = beta + shift * a
            if not same:
                return xcs * bc(a) + bc(b_c)
            ys = piece(y, lo, hi)
            xp.multiply(xcs, bc(a.astype(xc.dtype, copy=False)), out=ys)
            ys += bc(b_c.astype(xc.dtype, copy=False))

        outs = parallel.run_bounds(lambda lo, hi: normalise(lo, hi, shifts[bounds.index((lo, hi))]), bounds)
        if not same:
            y = outs[0] if len(outs) == 1 else xp.concatenate(outs)
        self.xc, self.s, self.gamma, self.how, self.bounds, self.shifts = xc, s, gamma, how, bounds, shifts
        self.run = run
        return self._back(how, y, x.shape)

    def backward(self, gy):
        xp = get_array_module(gy)
        need = self.needs_grad
        if self.empty:  # no element: every sum is 0, gx is empty
            C = gy.shape[1]
            return (xp.empty(gy.shape, dtype=gy.dtype) if need[0] else None,
                    xp.zeros(C, dtype=gy.dtype) if need[1] else None, xp.zeros(C, dtype=gy.dtype) if need[2] else None)
        xc, s, gamma, how, bounds, shifts = self.xc, self.s, self.gamma, self.how, self.bounds, self.shifts
        if how == "rows":
            gv = gy if gy.ndim == 2 else rows_view(gy)
            if gv is None:  # gy not channels-last: one copy into x's layout
                gv = xp.empty_like(xc)
                gv.reshape(gy.shape[0], gy.shape[2], gy.shape[3], gy.shape[1])[...] = gy.transpose(0, 2, 3, 1)
        else:
            gv = gy.reshape(xc.shape)
        per = xc.shape[0] // gy.shape[0]
        piece = (lambda a, lo, hi: a[lo * per:hi * per]) if how == "rows" else (lambda a, lo, hi: a[lo:hi])
        want_sums = need[1] or need[2] or (need[0] and self.training)
        gbeta = ggamma = None
        if want_sums:
            def sums(lo, hi):  # Σ gy and Σ gy·(x − μ_c) over this chunk
                gs, xcs = piece(gv, lo, hi), piece(xc, lo, hi)
                _, csum, cdot = self._ops(how, gs, self.run)
                return csum(gs), cdot(gs, xcs)

            parts = parallel.run_bounds(sums, bounds)
            gbeta = parts[0][0] if len(parts) == 1 else sum(q[0] for q in parts)
            dot = sum(q[1] + (0 if d is None else d * q[0]) for q, d in zip(parts, shifts))  # Σ gy·(x − μ)
            ggamma = s * dot
        gx = None
        if need[0]:
            a = gamma * s
            m = xc.size // xc.shape[1] if how == "nchw" else xc.shape[0]
            same = xp.result_type(gv, a) == gv.dtype
            gx = xp.empty_like(xc, dtype=gv.dtype) if same else None
            k1 = a * s * ggamma / m if self.training else None
            k0 = a * gbeta / m if self.training else None

            def grad(lo, hi, shift):  # gx = a·gy − (x − μ)·k1 − k0, with x − μ = (x − μ_c) + shift
                gs, xcs = piece(gv, lo, hi), piece(xc, lo, hi)
                bc = self._ops(how, gs)[0]
                if not same:
                    out = gs * bc(a)
                    if self.training:
                        out = out - xcs * bc(k1) - bc(k0 + shift * k1)
                    return out
                g = piece(gx, lo, hi)
                xp.multiply(gs, bc(a.astype(gv.dtype, copy=False)), out=g)
                if self.training:
                    tmp = scratch_array(xp, "bn_tmp", xcs.shape, gv.dtype)  # a reused work array (never escapes)
                    g -= xp.multiply(xcs, bc(k1.astype(gv.dtype, copy=False)), out=tmp)
                    g -= bc((k0 + shift * k1).astype(gv.dtype, copy=False))

            outs = parallel.run_bounds(lambda lo, hi: grad(lo, hi, shifts[bounds.index((lo, hi))]), bounds)
            if not same:
                gx = outs[0] if len(outs) == 1 else xp.concatenate(outs)
            gx = self._back(how, gx, gy.shape)
        return (gx, (ggamma.astype(gv.dtype, copy=False) if need[1] else None),
                (gbeta.astype(gv.dtype, copy=False) if need[2] else None))

    def backward_graph(self, gy):
        x, gamma, _ = self.inputs
        N, C = x.shape[0], x.shape[1]
        if self.how == "rows" and x.ndim == 4:  # channels-last: the rows (R, C), as forward saw them
            H, W = x.shape[2], x.shape[3]
            view = lambda t: ops.reshape(ops.permute(t, (0, 2, 3, 1)), (N * H * W, C))  # noqa: E731
            back = lambda t: ops.permute(ops.reshape(t, (N, H, W, C)), (0, 3, 1, 2))  # noqa: E731
            axes, cshape = (0,), (1, C)
        else:
            M = 1
            for k in x.shape[2:]:
                M *= k
            view = lambda t: ops.reshape(t, (N, C, M))  # noqa: E731
            back = lambda t: ops.reshape(t, x.shape)  # noqa: E731
            axes, cshape = (0, 2), (1, C, 1)
        xv, gyv = view(x), view(gy)
        if self.training:
            d = xv - ops.mean(xv, axis=axes, keepdims=True)
            s = ops.pow(ops.mean(d * d, axis=axes, keepdims=True) + self.eps, -0.5)
            xhat = d * s
        else:  # the running statistics are constants: x̂ is affine in x
            s = constant(self.s.reshape(cshape), x)
            xhat = (xv - constant(self.rm.astype(x.dtype, copy=False).reshape(cshape), x)) * s
        gbeta = ops.sum(gyv, axis=axes, keepdims=True)
        ggamma = ops.sum(gyv * xhat, axis=axes, keepdims=True)

        def gx():
            a = ops.reshape(gamma, cshape) * s
            if not self.training:
                return back(gyv * a)
            m = float(x.size // C)
            return back((a / m) * (m * gyv - gbeta - xhat * ggamma))

        return (needed(self, 0, gx), needed(self, 1, lambda: ops.reshape(ggamma, (C,))),
                needed(self, 2, lambda: ops.reshape(gbeta, (C,))))


def batch_norm(x: Tensor, running_mean: Any, running_var: Any, weight: Tensor | None = None,
               bias: Tensor | None = None, training: bool = False, momentum: float | None = 0.1,
               eps: float = 1e-5, num_batches_tracked: Any = None) -> Tensor:
    """Batch normalisation over axis 1 of x: (N, C) or (N, C, *); PyTorch's semantics.

    In training, normalise with the batch's statistics and update the running
    buffers in place: r ← (1 − momentum)·r + momentum·stat (running_var takes the
    unbiased variance); ``momentum=None`` keeps a cumulative average using
    ``num_batches_tracked`` (a 0-d integer array, incremented in place).
    In evaluation, normalise with the running statistics.
    """
    x = as_float(x)
    if x.ndim < 2:
        raise ValueError(f"batch_norm: input must be (N, C) or (N, C, ...), got shape {x.shape}")
    eps = real("batch_norm: eps", eps, 0, low_open=True)
    tiny = float(backend.finfo(x.dtype).tiny)
    if eps < tiny:  # a constant channel has s = 1/√eps, and backward takes γ·s²: finite only for eps ≥ 1/max
        raise ValueError(f"batch_norm: eps must be at least the smallest normal {x.dtype} number ({tiny:.3g}), "
                         f"got {eps!r}: 1/√eps would overflow for a constant channel")
    if momentum is not None:
        momentum = real("batch_norm: momentum (or None)", momentum, 0, 1)
    C = x.shape[1]
    xp = get_array_module(x.data)
    if weight is None:
        weight = Tensor(xp.ones(C, dtype=x.dtype))
    if bias is None:
        bias = Tensor(xp.zeros(C, dtype=x.dtype))
    if weight.shape != (C,) or bias.shape != (C,):
        raise ValueError(f"batch_norm: input has {C} channels (shape {x.shape}) but weight/bias have shapes "
                         f"{weight.shape}/{bias.shape}")
    use_batch = training or running_mean is None
    m = x.size // C if C else 0
    if use_batch and m <= 1:
        raise ValueError(f"batch_norm: training needs more than 1 value per channel, got input shape {x.shape}")
    fn = BatchNorm(eps, use_batch, running_mean, running_var)
    y = fn(x, weight, bias)
    if training and running_mean is not None:
        if momentum is None and num_batches_tracked is None:
            raise ValueError("batch_norm: momentum=None (cumulative average) needs num_batches_tracked")
        if num_batches_tracked is not None:
            num_batches_tracked += 1
        f = (1.0 / float(num_batches_tracked)) if momentum is None else momentum
        running_mean *= 1 - f
        running_mean += f * fn.batch_mean.astype(running_mean.dtype, copy=False)
        running_var *= 1 - f
        running_var += (f * m / (m - 1)) * fn.batch_var.astype(running_var.dtype, copy=False)
    return y

