"""Primitive differentiable operations: arithmetic, reductions, shapes, indexing.

Each op is a :class:`~npgan.tensor.Function` with its forward and its
hand-written backward side by side; the backward's formula is in the class
docstring (``gy`` is the gradient arriving at the output, ``gx`` the one sent to
input ``x``). Broadcasting follows NumPy; the gradient of a broadcast input is
summed back to its shape (:func:`~npgan.tensor.sum_to`). The lowercase
functions are the public face; the operators of :class:`Tensor` are bound to
them at the bottom of this module.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from . import backend
from .backend import get_array_module
from .tensor import Function, Tensor, sum_to

__all__ = ["add", "sub", "mul", "div", "neg", "pow", "matmul", "sum", "mean", "max", "min", "reshape",
           "transpose", "permute", "getitem", "concatenate", "cat", "stack", "exp", "log", "sqrt", "abs",
           "clip", "clamp", "where", "maximum", "minimum", "astype", "to_device", "flatten", "squeeze",
           "unsqueeze", "expand_dims", "broadcast_to", "var", "square", "sum_to_size"]


def lift(other: Any, like: Tensor) -> Tensor:
    """A Python/numpy scalar or array as a constant tensor of ``like``'s dtype (no type promotion).

    The dtype rule of npgan's binary ops (``+ − * / @``, maximum, minimum, where):

    * a Python number, numpy scalar, list or array operand takes the tensor's float dtype (``x32 * 0.5`` and
      ``x32 + np.float64(1)`` stay float32, as PyTorch's "wrapped numbers" do);
    * two tensors follow NumPy's promotion: float32 with float64 gives float64 (npgan promotes where PyTorch
      raises "expected scalar type", e.g. a float64 input to a float32 ``nn.Linear`` computes in float64);
    * functions of real numbers (exp, log, sigmoid, layers, losses) turn integer and bool inputs into the
      default float dtype (:func:`as_float`).

    Anything that is not numbers (None, a string, a dict, an object array) is a TypeError naming its type.
    """
    if isinstance(other, Tensor):
        return other
    if other is None or isinstance(other, (str, bytes, dict, set)):
        raise TypeError(f"unsupported operand: a tensor and {type(other).__name__} ({other!r:.40}); "
                        "operands are tensors, arrays or numbers")
    if not backend.is_array(other):
        kind = backend.np.asarray(other).dtype.kind if not callable(other) else "O"
        if kind not in "biuf":
            raise TypeError(f"unsupported operand: a tensor and {type(other).__name__} ({other!r:.40}); "
                            "operands are tensors, arrays or numbers")
    elif other.dtype.kind not in "biuf":
        raise TypeError(f"unsupported operand: a tensor and an array of dtype {other.dtype}; operands are "
                        "tensors, arrays or numbers")
    xp = get_array_module(like.data)
    if backend.is_array(other):
        if backend.device_of(other) != backend.device_of(like.data):
            raise ValueError(f"operands live on different devices: {backend.device_of(like.data)} and "
                             f"{backend.device_of(other)}")
        dt = like.data.dtype
        return Tensor(other if dt.kind != "f" or other.dtype == dt else other.astype(dt))
    dt = like.data.dtype if like.data.dtype.kind == "f" else None
    if xp is not backend.np and backend.np.ndim(other) == 0:  # a GPU constant: a fill kernel, no host copy
        return Tensor(xp.full((), other, dtype=dt))
    return Tensor(xp.asarray(other, dtype=dt))


def as_float(x: Any) -> Tensor:
    """``x`` as a float tensor for a function of real numbers: integer and bool data become the default dtype
    (PyTorch's integer-to-float promotion; numpy would pick float16 for uint8 and wrap −x around)."""
    if not isinstance(x, Tensor):
        x = Tensor(x)
    if x.data.dtype.kind != "f":
        x = Tensor(x.data.astype(backend.get_default_dtype()))
    return x


def needed(f: Function, i: int, make):
    """``make()`` when input ``i`` of ``f`` wants a gradient, else None (for ``backward_graph``)."""
    return make() if f.needs_grad[i] else None


def constant(a: Any, like: Tensor) -> Tensor:
    """A raw array that does not depend on the inputs (a mask, a sign) as a constant Tensor of like's dtype."""
    return Tensor(a if a.dtype == like.dtype else a.astype(like.dtype))


def _reduced_shape(shape, axis, keepdims) -> tuple[int, ...]:
    """The shape of a reduction's output with the reduced axes kept as 1 (what broadcasts against ``shape``)."""
    if axis is None:
        return (1,) * len(shape)
    return tuple(1 if i in axis else s for i, s in enumerate(shape))


# ============================================================================ arithmetic
class Add(Function):
    """y = a + b.   ga = sum_to(gy, a.shape),  gb = sum_to(gy, b.shape).

    Double backward: the backward is linear in gy and free of a, b; its own backward is the adjoint of
    sum_to, a broadcast (see :class:`SumTo`).
    """

    def forward(self, a, b):
        self.sa, self.sb = a.shape, b.shape
        return a + b

    def backward(self, gy):
        return sum_to(gy, self.sa), sum_to(gy, self.sb)

    def backward_graph(self, gy):
        return needed(self, 0, lambda: sum_to_size(gy, self.sa)), needed(self, 1, lambda: sum_to_size(gy, self.sb))


class Sub(Function):
    """y = a − b.   ga = sum_to(gy, a.shape),  gb = −sum_to(gy, b.shape).

    Double backward: linear in gy, free of a, b (as :class:`Add`).
    """

    def forward(self, a, b):
        self.sa, self.sb = a.shape, b.shape
        return a - b

    def backward(self, gy):
        return sum_to(gy, self.sa), (-sum_to(gy, self.sb) if self.needs_grad[1] else None)

    def backward_graph(self, gy):
        return needed(self, 0, lambda: sum_to_size(gy, self.sa)), needed(self, 1, lambda: -sum_to_size(gy, self.sb))


class Mul(Function):
    """y = a · b (elementwise).   ga = sum_to(gy · b),  gb = sum_to(gy · a).

    Double backward: ga is bilinear in (gy, b): ∂ga/∂gy = b, ∂ga/∂b = gy, ∂ga/∂a = 0 (gb alike); backward_graph
    computes the same products from the input Tensors, so these follow from Mul's own backward.
    """

    def forward(self, a, b):
        self.a, self.b = a, b  # each is the other's gradient factor
        return a * b

    def backward(self, gy):
        a, b = self.a, self.b
        ga = sum_to(gy * b, a.shape) if self.needs_grad[0] else None
        gb = sum_to(gy * a, b.shape) if self.needs_grad[1] else None
        return ga, gb

    def backward_graph(self, gy):
        a, b = self.inputs
        return (needed(self, 0, lambda: sum_to_size(gy * b, a.shape)),
                needed(self, 1, lambda: sum_to_size(gy * a, b.shape)))


class Div(Function):
    """y = a / b.   ga = sum_to(gy / b),  gb = −sum_to(gy · a / b²) = −sum_to(gy · y / b).

    Double backward (from a, b as Tensors): ∂ga/∂b = −gy / b², ∂gb/∂a = −gy / b², ∂gb/∂b = 2·gy·a / b³,
    ∂ga/∂a = 0; ∂ga/∂gy = 1/b, ∂gb/∂gy = −a / b².
    """

    def forward(self, a, b):
        y = a / b
        self.sa, self.b, self.y = a.shape, b, y
        return y

    def backward(self, gy):
        b = self.b
        ga = sum_to(gy / b, self.sa) if self.needs_grad[0] else None
        gb = sum_to(-gy * self.y / b, b.shape) if self.needs_grad[1] else None
        return ga, gb

    def backward_graph(self, gy):
        a, b = self.inputs
        return (needed(self, 0, lambda: sum_to_size(gy / b, a.shape)),
                needed(self, 1, lambda: sum_to_size(-(gy * a) / (b * b), b.shape)))


class Neg(Function):
    """y = −x.   gx = −gy.   Double backward: ∂gx/∂gy = −1 (linear, free of x)."""

    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy

    def backward_graph(self, gy):
        return -gy


class Pow(Function):
    """y = x^p for a constant scalar p.   gx = gy · p · x^(p−1)  (0 for p = 0, also at x = 0, as PyTorch).

    Double backward: ∂gx/∂x = gy · p(p−1) · x^(p−2),  ∂gx/∂gy = p · x^(p−1) (backward_graph is
    gy · p · pow(x, p−1), so the second derivative comes from another Pow).
    """

    def __init__(self, p: float):
        self.p = p

    def forward(self, x):
        self.x = x
        return x ** self.p

    def backward(self, gy):
        p = self.p
        if p == 0:
            return get_array_module(gy).zeros_like(gy)
        if p == 2:
            return gy * 2 * self.x
        return gy * p * self.x ** (p - 1)

    def backward_graph(self, gy):
        x, p = self.inputs[0], self.p
        if p == 0:
            return gy * 0.0
        if p == 1:
            return gy * 1.0
        if p == 2:
            return gy * (2.0 * x)
        return gy * (p * pow(x, p - 1))


class MatMul(Function):
    """y = a @ b with NumPy's matmul rules (1-D operands, batched and broadcast stacks).

    ga = gy @ bᵀ,  gb = aᵀ @ gy  (ᵀ swaps the last two axes), each summed back over
    broadcast batch axes; a 1-D operand is treated as a row (a) or column (b) vector.

    Double backward: ga is bilinear in (gy, b), gb in (a, gy): ∂ga/∂b · δb = gy @ δbᵀ, ∂gb/∂a · δa = δaᵀ @ gy,
    ∂ga/∂gy · δg = δg @ bᵀ; backward_graph builds ga, gb from MatMul, Permute, Reshape and SumTo.
    """

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: operands must be at least 1-D, got shapes {a.shape} and {b.shape}")
        ka = a.shape[-1]
        kb = b.shape[-2] if b.ndim > 1 else b.shape[0]
        if ka != kb:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not match "
                             f"(inner dimensions {ka} != {kb})")
        self.a, self.b = a, b
        try:
            return a @ b
        except ValueError:
            raise ValueError(f"matmul: the batch axes of shapes {a.shape} and {b.shape} do not "
                             f"broadcast ({a.shape[:-2]} vs {b.shape[:-2]})") from None

    def backward(self, gy):
        a, b = self.a, self.b
        xp = get_array_module(gy)
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = gy
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2 if b.ndim > 1 else 0)
        if b.ndim == 1:
            g2 = g2[..., None]
        ga = gb = None
        if self.needs_grad[0]:
            ga = g2 @ xp.swapaxes(b2, -1, -2)
            ga = sum_to(ga, a2.shape).reshape(a.shape)
        if self.needs_grad[1]:
            gb = xp.swapaxes(a2, -1, -2) @ g2
            gb = sum_to(gb, b2.shape).reshape(b.shape)
        return ga, gb

    def backward_graph(self, gy):
        a, b = self.inputs
        a2 = reshape(a, (1,) + a.shape) if a.ndim == 1 else a
        b2 = reshape(b, b.shape + (1,)) if b.ndim == 1 else b
        g2 = gy
        if a.ndim == 1:
            g2 = unsqueeze(g2, g2.ndim - 1 if b.ndim > 1 else 0)
        if b.ndim == 1:
            g2 = unsqueeze(g2, g2.ndim)
        ga = needed(self, 0, lambda: reshape(sum_to_size(matmul(g2, transpose(b2, -1, -2)), a2.shape), a.shape))
        gb = needed(self, 1, lambda: reshape(sum_to_size(matmul(transpose(a2, -1, -2), g2), b2.shape), b.shape))
        return ga, gb


# ============================================================================ elementwise math
class Exp(Function):
    """y = exp(x).   gx = gy · y.   Double backward: ∂gx/∂x = gy · y,  ∂gx/∂gy = y (through the output y)."""

    def forward(self, x):
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, gy):
        return gy * self.y

    def backward_graph(self, gy):
        return gy * self.output


class Log(Function):
    """y = log(x).   gx = gy / x.   Double backward: ∂gx/∂x = −gy / x²,  ∂gx/∂gy = 1/x."""

    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, gy):
        return gy / self.x

    def backward_graph(self, gy):
        return gy / self.inputs[0]


class Sqrt(Function):
    """y = √x.   gx = gy / (2y).   Double backward: ∂gx/∂x = −gy / (4·y³),  ∂gx/∂gy = 1/(2y) (through y)."""

    def forward(self, x):
        self.y = get_array_module(x).sqrt(x)
        return self.y

    def backward(self, gy):
        return gy / (2 * self.y)

    def backward_graph(self, gy):
        return gy / (2.0 * self.output)


class Abs(Function):
    """y = |x|.   gx = gy · sign(x)  (0 at x = 0, as PyTorch).

    Double backward: sign(x) is piecewise constant: ∂gx/∂x = 0, ∂gx/∂gy = sign(x) (a constant mask).
    """

    def forward(self, x):
        self.x = x
        return get_array_module(x).abs(x)

    def backward(self, gy):
        return gy * get_array_module(gy).sign(self.x)

    def backward_graph(self, gy):
        return gy * constant(get_array_module(self.x).sign(self.x), gy)


class Clip(Function):
    """y = min(max(x, lo), hi).   gx = gy where lo ≤ x ≤ hi, else 0 (PyTorch's convention at the bounds).

    Double backward: the mask is constant: ∂gx/∂x = 0, ∂gx/∂gy = [lo ≤ x ≤ hi].
    """

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def forward(self, x):
        xp = get_array_module(x)
        mask = xp.ones(x.shape, dtype=bool)
        if self.lo is not None:
            mask &= x >= self.lo
        if self.hi is not None:
            mask &= x <= self.hi
        self.mask = mask
        return xp.clip(x, self.lo, self.hi)

    def backward(self, gy):
        return gy * self.mask

    def backward_graph(self, gy):
        return gy * constant(self.mask, gy)


class Where(Function):
    """y = where(c, a, b) for a constant boolean c.   ga = sum_to(gy · c),  gb = sum_to(gy · ¬c).

    Double backward: linear in gy, free of a, b: ∂ga/∂gy = c, ∂gb/∂gy = ¬c (Where and SumTo again).
    """

    def __init__(self, cond):
        self.cond = cond

    def forward(self, a, b):
        self.sa, self.sb = a.shape, b.shape
        dev = backend.device_of(a)
        if dev != "cpu" and backend.device_of(self.cond) != dev:  # a host condition for GPU data: move it once
            self.cond = backend.asarray(self.cond, device=dev)
        return get_array_module(a).where(self.cond, a, b)

    def backward(self, gy):
        xp = get_array_module(gy)
        c = self.cond
        ga = sum_to(xp.where(c, gy, 0), self.sa) if self.needs_grad[0] else None
        gb = sum_to(xp.where(c, 0, gy), self.sb) if self.needs_grad[1] else None
        return ga, gb

    def backward_graph(self, gy):
        c = self.cond
        return (needed(self, 0, lambda: sum_to_size(where(c, gy, 0.0), self.sa)),
                needed(self, 1, lambda: sum_to_size(where(c, 0.0, gy), self.sb)))


class Maximum(Function):
    """y = max(a, b) elementwise.   Where a = b the gradient is split in halves (as torch.maximum).

    ga = sum_to(gy · ([a > b] + ½[a = b])),  gb = sum_to(gy · ([b > a] + ½[a = b])).

    Double backward: the weights are piecewise constant: ∂ga/∂a = ∂ga/∂b = 0, ∂ga/∂gy = w_a, ∂gb/∂gy = 1 − w_a.
    """

    sign = 1

    def forward(self, a, b):
        xp = get_array_module(a)
        self.sa, self.sb = a.shape, b.shape
        self.wa = ((a > b) if self.sign > 0 else (a < b)) + 0.5 * (a == b)  # comparisons: no overflow, no inf − inf
        return xp.maximum(a, b) if self.sign > 0 else xp.minimum(a, b)

    def backward(self, gy):
        wa = self.wa.astype(gy.dtype, copy=False)
        ga = sum_to(gy * wa, self.sa) if self.needs_grad[0] else None
        gb = sum_to(gy * (1 - wa), self.sb) if self.needs_grad[1] else None
        return ga, gb

    def backward_graph(self, gy):
        wa = self.wa.astype(gy.dtype, copy=False)
        return (needed(self, 0, lambda: sum_to_size(gy * constant(wa, gy), self.sa)),
                needed(self, 1, lambda: sum_to_size(gy * constant(1 - wa, gy), self.sb)))


class Minimum(Maximum):
    """y = min(a, b) elementwise; gradient as :class:`Maximum` with the roles swapped.

    ga = sum_to(gy · ([a < b] + ½[a = b])),  gb = sum_to(gy · ([b < a] + ½[a = b])).
    """

    sign = -1


class AsType(Function):
    """y = x cast to another float dtype.   gx = gy cast back.   Double backward: a cast again (linear)."""

    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.src = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return gy.astype(self.src)

    def backward_graph(self, gy):
        return astype(gy, self.src)


class ToDevice(Function):
    """y = x copied to another device.   gx = gy copied back.   Double backward: a copy again (linear)."""

    def __init__(self, device):
        self.device = device

    def forward(self, x):
        self.src = backend.device_of(x)
        return backend.asarray(x, device=self.device)

    def backward(self, gy):
        return backend.asarray(gy, device=self.src)

    def backward_graph(self, gy):
        return to_device(gy, self.src)


# ============================================================================ reductions
def _is_int(a) -> bool:
    return isinstance(a, (int, backend.np.integer)) and not isinstance(a, (bool, backend.np.bool_))


def _norm_axis(axis, ndim):
    if axis is None:
        return None
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        if not _is_int(a):
            raise TypeError(f"axis must be an integer, a tuple of integers or None, got {axis!r}")
        if not -ndim <= a < builtins.max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(int(a) % builtins.max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis!r} names an axis twice")
    return tuple(out)


def _expand_reduced(g, shape, axis, keepdims):
    """Reshape a reduced gradient so it broadcasts against the input ``shape``."""
    if axis is None or keepdims:
        return g if axis is not None or keepdims else g.reshape((1,) * len(shape))
    shp = list(shape)
    for a in axis:
        shp[a] = 1
    return g.reshape(shp)


class Sum(Function):
    """y = Σ_axis x.   gx = gy broadcast back over the summed axes.

    Double backward: linear in gy, free of x; the backward of the broadcast is the sum again.
    """

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axis = _norm_axis(self.axis, x.ndim)
        self.shape = x.shape
        return x.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        g = _expand_reduced(gy, self.shape, self.axis, self.keepdims)
        return get_array_module(gy).broadcast_to(g, self.shape).copy()

    def backward_graph(self, gy):
        return broadcast_to(reshape(gy, _reduced_shape(self.shape, self.axis, self.keepdims)), self.shape)


class Mean(Sum):
    """y = (1/n) Σ_axis x (n = number of summed elements).   gx = gy / n broadcast back.

    Double backward: linear in gy, free of x (as :class:`Sum`, scaled by 1/n).
    """

    def forward(self, x):
        y = super().forward(x)
        n = x.size // builtins.max(y.size, 1) if x.size else 0
        self.n = n
        return y / n if n else y * float("nan")

    def backward(self, gy):
        return super().backward(gy / self.n)

    def backward_graph(self, gy):
        return super().backward_graph(gy / float(self.n))


class Max(Function):
    """y = max_axis x.   gx = gy · [x = y] / (number of maxima): ties share the gradient (as torch.amax).

    Double backward: the weights w = [x = y] / count are piecewise constant: ∂gx/∂x = 0, ∂gx/∂gy = w.
    """

    def __init__(self, axis=None, keepdims=False, sign=1):
        self.axis, self.keepdims, self.sign = axis, keepdims, sign

    def forward(self, x):
        self.axis = _norm_axis(self.axis, x.ndim)
        if x.size == 0 and (self.axis is None or builtins.min(x.shape[a] for a in self.axis) == 0):
            raise ValueError(f"max/min over an empty axis (shape {x.shape}, axis {self.axis})")
        y = x.max(axis=self.axis, keepdims=True) if self.sign > 0 else x.min(axis=self.axis, keepdims=True)
        mask = (x == y)
        self.w = mask / mask.sum(axis=self.axis, keepdims=True)
        if not self.keepdims:
            y = y.reshape(()) if self.axis is None else y.squeeze(self.axis)
        return y

    def backward(self, gy):
        g = _expand_reduced(gy, self.w.shape, self.axis, self.keepdims)
        return (g * self.w).astype(gy.dtype, copy=False)

    def backward_graph(self, gy):
        g = reshape(gy, _reduced_shape(self.w.shape, self.axis, self.keepdims))
        return g * constant(self.w.astype(gy.dtype, copy=False), gy)


# ============================================================================ shapes and indexing
class Reshape(Function):
    """y = x.reshape(shape).   gx = gy.reshape(x.shape).   Double backward: a reshape again (linear)."""

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.src = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) "
                             f"into shape {tuple(self.shape)}") from None

    def backward(self, gy):
        return gy.reshape(self.src)

    def backward_graph(self, gy):
        return reshape(gy, self.src)


class Permute(Function):
    """y = x.transpose(axes).   gx = gy.transpose(argsort(axes)).   Double backward: a permutation (linear)."""

    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        if (len(self.axes) != x.ndim or not all(-x.ndim <= a < x.ndim for a in self.axes)
                or sorted(a % x.ndim for a in self.axes) != list(range(x.ndim))):
            raise ValueError(f"permute: {tuple(self.axes)} is not a permutation of the {x.ndim} axes of "
                             f"shape {x.shape}")
        self.axes = tuple(a % x.ndim for a in self.axes)
        return x.transpose(self.axes)

    def backward(self, gy):
        inv = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inv[a] = i
        return gy.transpose(inv)

    def backward_graph(self, gy):
        return permute(gy, tuple(int(i) for i in backend.np.argsort(self.axes)))


class BroadcastTo(Function):
    """y = broadcast_to(x, shape).   gx = sum_to(gy, x.shape).   Double backward: :class:`SumTo` (linear)."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.src = x.shape
        return get_array_module(x).broadcast_to(x, self.shape)

    def backward(self, gy):
        return sum_to(gy, self.src)

    def backward_graph(self, gy):
        return sum_to_size(gy, self.src)


class SumTo(Function):
    """y = sum_to(x, shape): x summed over the axes broadcasting added or stretched (the adjoint of a broadcast).

    gx = broadcast_to(gy, x.shape).   Double backward: :class:`BroadcastTo` (linear).
    """

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.src = x.shape
        return sum_to(x, self.shape)

    def backward(self, gy):
        return get_array_module(gy).broadcast_to(gy, self.src).copy()

    def backward_graph(self, gy):
        return broadcast_to(gy, self.src)


def _is_advanced(key) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    for k in keys:
        if isinstance(k, (list, Tensor)) or backend.is_array(k):
            return True
    return False


def _check_index_bounds(shape: tuple[int, ...], key) -> None:
    """IndexError for an integer index array out of range for its axis, as NumPy raises (CuPy wraps instead).

    Used on the GPU only (one device-to-host sync per index array). Axes: a slice, an int or an integer array
    takes one, a boolean array as many as it has dimensions, None none; after an Ellipsis, the rest are counted
    from the end.
    """
    keys = key if isinstance(key, tuple) else (key,)

    def width(k):
        if k is None:
            return 0
        if backend.is_array(k) and k.dtype == bool:
            return k.ndim
        return 1

    e = next((i for i, k in enumerate(keys) if k is Ellipsis), len(keys))
    axes: list[int | None] = [None] * len(keys)
    a = 0
    for i in range(e):
        axes[i], a = a, a + width(keys[i])
    a = len(shape) - builtins.sum(width(k) for k in keys[e + 1:])
    for i in range(e + 1, len(keys)):
        axes[i], a = a, a + width(keys[i])
    for k, ax in zip(keys, axes):
        if ax is None or not backend.is_array(k) or k.dtype == bool or k.size == 0 or ax >= len(shape):
            continue
        n = shape[ax]
        lo, hi = int(k.min()), int(k.max())
        if lo < -n or hi >= n:
            bad = lo if lo < -n else hi
            raise IndexError(f"index {bad} is out of bounds for axis {ax} with size {n}")


def per_channel_operand(a3: Any) -> Any:
    """For arrays laid out as a3 (N, C, M): a function taking a per-channel vector v (C,) to an operand that
    broadcasts against them (batch norm's statistics, a conv bias).

    v[:, None] would do, but NumPy then runs its inner loop once per (n, c) row of only M elements with a
    broadcast operand; v expanded to a contiguous (C, M) block lets the loop run over C·M elements at a time,
    about twice as fast (benchmarks/README.md). The block costs C·M numbers, a 1/N-th of the data.
    (CuPy: v[:, None].)
    """
    xp = get_array_module(a3)
    C, M = a3.shape[1], a3.shape[2]
    if xp is not backend.np or M == 1:
        return lambda v: v[:, None]
    return lambda v: xp.ascontiguousarray(xp.broadcast_to(v[:, None], (C, M)))


def _unwrap_key(key):
    if isinstance(key, tuple):
        return tuple(k.data if isinstance(k, Tensor) else k for k in key)
    return key.data if isinstance(key, Tensor) else key


class GetItem(Function):
    """y = x[key] (basic slicing or integer/boolean array indexing).

    gx = zeros_like(x) with gy scattered back to the selected places; repeated
    indices accumulate (``add.at``).

    Double backward: the scatter is linear in gy and free of x; it is :class:`GetItemGrad`, whose own
    backward is this gather again.
    """

    def __init__(self, key):
        self.key = _unwrap_key(key)

    def forward(self, x):
        self.shape, self.dtype = x.shape, x.dtype
        dev = backend.device_of(x)
        if dev != "cpu":  # host index arrays (numpy arrays, lists) for GPU data: move them once
            keys = self.key if isinstance(self.key, tuple) else (self.key,)
            keys = tuple(backend.asarray(k, device=dev) if isinstance(k, list) or
                         (backend.is_array(k) and backend.device_of(k) != dev) else k for k in keys)
            self.key = keys if isinstance(self.key, tuple) else keys[0]
        try:
            if dev != "cpu" and _is_advanced(self.key):  # CuPy wraps out-of-range indices: check as NumPy does
                _check_index_bounds(x.shape, self.key)
            return x[self.key]
        except IndexError as exc:
            raise IndexError(f"index {self.key!r} is out of range for shape {x.shape}: {exc}") from None

    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(self.shape, dtype=gy.dtype)
        if _is_advanced(self.key):
            backend.scatter_add(gx, self.key, gy)
        else:
            gx[self.key] = gy
        return gx

    def backward_graph(self, gy):
        return GetItemGrad(self.key, self.shape)(gy)


class GetItemGrad(Function):
    """y = zeros(shape) with x scattered to the places ``key`` selects (repeated indices accumulate): the
    backward of :class:`GetItem` as a differentiable op.

    gx = gy[key] (a gather: the adjoint of the scatter).   Double backward: :class:`GetItemGrad` again.
    """

    def __init__(self, key, shape):
        self.key, self.shape = key, tuple(shape)

    def forward(self, x):
        gx = get_array_module(x).zeros(self.shape, dtype=x.dtype)
        if _is_advanced(self.key):
            backend.scatter_add(gx, self.key, x)
        else:
            gx[self.key] = x
        return gx

    def backward(self, gy):
        return gy[self.key]

    def backward_graph(self, gy):
        return GetItem(self.key)(gy)


class Concatenate(Function):
    """y = concatenate(xs, axis).   g_xi = the slice of gy that x_i occupies.

    Double backward: linear in gy, free of xs: slices (:class:`GetItem`) again.
    """

    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        try:
            y = xp.concatenate(xs, axis=self.axis)
        except ValueError as exc:
            raise ValueError(f"concatenate along axis {self.axis}: shapes {[x.shape for x in xs]} "
                             f"do not fit ({exc})") from None
        self.axis = self.axis % y.ndim
        self.sizes = [x.shape[self.axis] for x in xs]
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        cuts = list(backend.np.cumsum(self.sizes)[:-1])
        return tuple(xp.split(gy, cuts, axis=self.axis))

    def backward_graph(self, gy):
        lead, out, start = (slice(None),) * self.axis, [], 0
        for i, n in enumerate(self.sizes):
            out.append(getitem(gy, lead + (slice(start, start + n),)) if self.needs_grad[i] else None)
            start += n
        return tuple(out)


class Stack(Function):
    """y = stack(xs, axis).   g_xi = gy taken at index i of the new axis.

    Double backward: linear in gy, free of xs: an index (:class:`GetItem`) again.
    """

    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        try:
            y = xp.stack(xs, axis=self.axis)
        except ValueError as exc:
            raise ValueError(f"stack: shapes {[x.shape for x in xs]} must all be equal ({exc})") from None
        self.axis = self.axis % y.ndim
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        return tuple(xp.moveaxis(gy, self.axis, 0))

    def backward_graph(self, gy):
        lead = (slice(None),) * self.axis
        return tuple(getitem(gy, lead + (i,)) if n else None for i, n in enumerate(self.needs_grad))


# ============================================================================ public functions
def add(a, b) -> Tensor:
    """a + b (broadcasting)."""
    a = lift(a, b) if not isinstance(a, Tensor) else a
    return Add()(a, lift(b, a))


def sub(a, b) -> Tensor:
    """a − b (broadcasting)."""
    a = lift(a, b) if not isinstance(a, Tensor) else a
    return Sub()(a, lift(b, a))


def mul(a, b) -> Tensor:
    """a · b elementwise (broadcasting)."""
    a = lift(a, b) if not isinstance(a, Tensor) else a
    return Mul()(a, lift(b, a))


def div(a, b) -> Tensor:
    """a / b elementwise (broadcasting)."""
    a = lift(a, b) if not isinstance(a, Tensor) else a
    return Div()(a, lift(b, a))


def neg(x: Tensor) -> Tensor:
    return Neg()(x)


def pow(x: Tensor, p: float) -> Tensor:  # noqa: A001 - mirrors torch.pow
    """x ** p for a constant scalar exponent p."""
    if isinstance(p, Tensor) or backend.is_array(p):
        raise TypeError("pow: the exponent must be a Python number (x ** p with tensor p is not supported)")
    if isinstance(p, (bool, str, bytes)) or not isinstance(p, (int, float, backend.np.number)):
        raise TypeError(f"pow: the exponent p must be a number, got {p!r}")
    if not isinstance(x, Tensor):
        x = Tensor(x)
    if x.dtype.kind != "f" and not (_is_int(p) and p >= 0):  # integers to negative or fractional powers
        x = as_float(x)
    return Pow(p)(x)


def square(x: Tensor) -> Tensor:
    return Pow(2)(x)


def matmul(a, b) -> Tensor:
    """a @ b (NumPy matmul semantics, batched and broadcast)."""
    a = lift(a, b) if not isinstance(a, Tensor) else a
    return MatMul()(a, lift(b, a))


def exp(x: Tensor) -> Tensor:
    return Exp()(as_float(x))


def log(x: Tensor) -> Tensor:
    return Log()(as_float(x))


def sqrt(x: Tensor) -> Tensor:
    return Sqrt()(as_float(x))


def abs(x: Tensor) -> Tensor:  # noqa: A001
    return Abs()(x)


def clip(x: Tensor, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
    """Clamp to [min, max]; either bound may be None."""
    if min is None and max is None:
        raise ValueError("clip: at least one of min and max must be given")
    for name, v in (("min", min), ("max", max)):
        if v is not None and (isinstance(v, (bool, str, bytes)) or not isinstance(v, (int, float, backend.np.number))
                              or backend.np.isnan(v)):
            raise ValueError(f"clip: {name} must be a number or None, got {v!r}")
    if min is not None and max is not None and min > max:
        raise ValueError(f"clip: min ({min}) is larger than max ({max})")
    return Clip(min, max)(x)


clamp = clip


def where(cond, a, b) -> Tensor:
    """Elementwise ``a`` where ``cond`` else ``b``; ``cond`` is a constant boolean array or tensor."""
    c = cond.data if isinstance(cond, Tensor) else cond
    like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else Tensor(a)
    return Where(c)(lift(a, like), lift(b, like))


def maximum(a, b) -> Tensor:
    a = lift(a, b) if not isinstance(a, Tensor) else a
    return Maximum()(a, lift(b, a))


def minimum(a, b) -> Tensor:
    a = lift(a, b) if not isinstance(a, Tensor) else a
    return Minimum()(a, lift(b, a))


def sum(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Sum(axis, keepdims)(x)


def mean(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    return Mean(axis, keepdims)(x)


def var(x: Tensor, axis=None, keepdims: bool = False, unbiased: bool = False) -> Tensor:
    """Variance, composed of differentiable ops (biased unless ``unbiased``)."""
    m = mean(x, axis, keepdims=True)
    d = x - m
    n = x.size if axis is None else backend.np.prod([x.shape[a] for a in _norm_axis(axis, x.ndim)])
    return sum(d * d, axis, keepdims) / (n - 1 if unbiased else n)


def max(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Max(axis, keepdims)(x)


def min(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Max(axis, keepdims, sign=-1)(x)


def reshape(x: Tensor, *shape) -> Tensor:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape(shape)(x)


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge axes start_dim..end_dim into one (PyTorch's ``torch.flatten``)."""
    if x.ndim == 0:
        _norm_axis((start_dim, end_dim) if start_dim != end_dim else start_dim, 0)
        return reshape(x, (1,))
    s, e = _norm_axis(start_dim, x.ndim)[0], _norm_axis(end_dim, x.ndim)[0]
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {x.shape}")
    shp = x.shape[:s] + (-1,) + x.shape[e + 1:]
    if x.size == 0:
        shp = x.shape[:s] + (int(backend.np.prod(x.shape[s:e + 1])),) + x.shape[e + 1:]
    return reshape(x, shp)


def squeeze(x: Tensor, axis=None) -> Tensor:
    shp = tuple(s for i, s in enumerate(x.shape)
                if not (s == 1 and (axis is None or i in _norm_axis(axis, x.ndim))))
    return reshape(x, shp)


def unsqueeze(x: Tensor, axis: int) -> Tensor:
    axis = _norm_axis(axis, x.ndim + 1)[0]
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


expand_dims = unsqueeze


def broadcast_to(x: Tensor, shape) -> Tensor:
    return BroadcastTo(shape)(x)


def sum_to_size(x: Tensor, shape) -> Tensor:
    """x summed down to ``shape`` over the axes broadcasting would add or stretch (PyTorch's ``sum_to_size``);
    x itself when it has that shape already."""
    if tuple(x.shape) == tuple(shape):
        return x
    return SumTo(shape)(x)


def permute(x: Tensor, *axes) -> Tensor:
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return Permute(axes)(x)


def transpose(x: Tensor, dim0: int | None = None, dim1: int | None = None) -> Tensor:
    """Swap axes dim0 and dim1 (PyTorch); with no axes, reverse them all (NumPy's ``.T``)."""
    if dim0 is None and dim1 is None:
        return Permute(tuple(range(x.ndim))[::-1])(x)
    if dim0 is None or dim1 is None:
        raise ValueError("transpose needs both dim0 and dim1 (or neither, to reverse all axes)")
    d0, d1 = _norm_axis(dim0, x.ndim)[0], _norm_axis(dim1, x.ndim)[0]
    axes = list(range(x.ndim))
    if axes:
        axes[d0], axes[d1] = axes[d1], axes[d0]
    return Permute(tuple(axes))(x)


def getitem(x: Tensor, key) -> Tensor:
    return GetItem(key)(x)


def concatenate(xs: Sequence[Tensor], axis: int = 0) -> Tensor:
    if len(xs) == 0:
        raise ValueError("concatenate needs at least one tensor")
    return Concatenate(axis)(*xs)


cat = concatenate


def stack(xs: Sequence[Tensor], axis: int = 0) -> Tensor:
    if len(xs) == 0:
        raise ValueError("stack needs at least one tensor")
    return Stack(axis)(*xs)


def astype(x: Tensor, dtype) -> Tensor:
    if x.dtype == dtype:
        return x
    if backend.dtype(dtype) == backend.float16:
        raise TypeError("astype: dtype float16 is not supported (npgan computes in float32 or float64)")
    if backend.dtype(dtype).kind != "f" and x.requires_grad:
        return Tensor(x.data.astype(dtype))
    return AsType(dtype)(x)


def to_device(x: Tensor, device: str) -> Tensor:
    target = backend._parse_device(device)
    target_name = "cpu" if target[0] == "cpu" else f"gpu:{target[1]}"
    if x.device == target_name:
        return x
    return ToDevice(target_name)(x)


# ============================================================================ Tensor operators
def _cmp(op):
    def f(self, other):
        o = other.data if isinstance(other, Tensor) else other
        return Tensor(op(self.data, o))
    return f


def _bind() -> None:
    T = Tensor
    T.__add__ = lambda a, b: add(a, b)
    T.__radd__ = lambda a, b: add(b, a)
    T.__sub__ = lambda a, b: sub(a, b)
    T.__rsub__ = lambda a, b: sub(b, a)
    T.__mul__ = lambda a, b: mul(a, b)
    T.__rmul__ = lambda a, b: mul(b, a)
    T.__truediv__ = lambda a, b: div(a, b)
    T.__rtruediv__ = lambda a, b: div(b, a)
    T.__neg__ = neg
    T.__pos__ = lambda a: a
    T.__pow__ = pow
    T.__matmul__ = lambda a, b: matmul(a, b)
    T.__rmatmul__ = lambda a, b: matmul(b, a)
    T.__getitem__ = getitem
    T.__abs__ = abs
    T.__lt__ = _cmp(lambda a, b: a < b)
    T.__le__ = _cmp(lambda a, b: a <= b)
    T.__gt__ = _cmp(lambda a, b: a > b)
    T.__ge__ = _cmp(lambda a, b: a >= b)
    T.sum = sum
    T.mean = mean
    T.var = var
    T.max = max
    T.min = min
    T.exp = exp
    T.log = log
    T.sqrt = sqrt
    T.abs = abs
    T.clip = clip
    T.clamp = clip
    T.reshape = reshape
    T.view = reshape
    T.flatten = flatten
    T.squeeze = squeeze
    T.unsqueeze = unsqueeze
    T.permute = permute
    T.transpose = transpose
    T.T = property(lambda a: transpose(a))
    T.matmul = matmul
    T.pow = pow
    T.astype = astype
    T.to = to_device  # t.to("gpu"): a copy on that device, or t itself when already there


_bind()
