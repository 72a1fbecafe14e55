"""2-D convolution and transposed convolution, by im2col and one GEMM.

Notation (one spatial axis shown; the other is the same):

    x: (N, C, H, W)      w: (O, C, kh, kw)      y: (N, O, OH, OW)
    y[n, o, a, b] = Σ_{c,i,j} w[o, c, i, j] · x̃[n, c, a·s + i·d, b·s + j·d]   (+ bias[o])

where x̃ is x zero-padded by p on each side, s the stride, d the dilation and

    OH = ⌊(H + 2p − d·(kh − 1) − 1) / s⌋ + 1.

The column matrix lays the receptive fields side by side, one row per output pixel:

    col[(n, a, b), (c, i, j)] = x̃[n, c, a·s + i·d, b·s + j·d]      shape (N·OH·OW, C·kh·kw)

so that the convolution is one matrix product ``Y = col · W₂ᵀ`` with W₂ = w laid out as (O, C·kh·kw) and
Y = y laid out as (N·OH·OW, O). Its gradients are two more products: gW₂ = gYᵀ · col, and g_col = gY · W₂,
which col2im (the adjoint of im2col: a copy's adjoint is a scatter-add) sends back onto the input's pixels.

The transposed convolution is the adjoint of the convolution with respect to its input: with
its weight read as the (O, C, kh, kw) weight of a convolution from the transposed conv's output
(C channels) to its input (O channels), its forward is that convolution's input gradient and its
input gradient is that convolution's forward. So three computations serve all the Functions below:

    y  = conv(x, w)      = im2col(x) · W₂ᵀ
    gx = convᵀ(gy, w)    = col2im(gy₂ · W₂)           (gy₂ = gy laid out as (N·OH·OW, O))
    gw = gy₂ᵀ · im2col(x)

Read top-down: the public functions, the Functions with their formulas, then :class:`Reference`, the plain
route that computes exactly the formulas above on NCHW arrays. The Functions run them by the fast routes of
:mod:`npgan.conv_fast` (channels-last images, per-image columns for few channels, no columns for a kernel
that covers its input, phase blocks, scratch arrays, one chunk of the batch per thread), which give the same
numbers up to the rounding of sums; ``use_reference(True)`` makes them take the plain route instead (the
tests compare the two).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from . import backend, conv_fast, ops
from .backend import get_array_module
from .conv_fast import Geometry, gemm
from .ops import as_float, needed
from .tensor import Function, Tensor

__all__ = ["conv2d", "conv_transpose2d", "conv_output_size", "conv_transpose_output_size", "use_reference",
           "Reference"]

Pair = tuple[int, int]

_state = {"reference": False}


def use_reference(on: bool = True) -> Any:
    """Make the convolutions take :class:`Reference` (the plain route) instead of the fast routes while ``on``;
    usable as a context manager (``with use_reference():``), which restores the previous choice on leaving."""
    prev = _state["reference"]
    _state["reference"] = bool(on)

    @contextmanager
    def restore():
        try:
            yield
        finally:
            _state["reference"] = prev
    return restore()


def _route() -> Any:
    return Reference if _state["reference"] else conv_fast


# ============================================================================ public functions
def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1) -> Tensor:
    """2-D convolution (cross-correlation) of x (N, C, H, W) with weight (O, C, kh, kw), PyTorch's semantics.

    ``stride``, ``padding`` (zeros) and ``dilation`` are ints or (h, w) pairs; groups = 1. Output
    (N, O, OH, OW) with OH = ⌊(H + 2p − d(kh − 1) − 1)/s⌋ + 1. See :class:`Conv2d` for the math.

    Example: ``conv2d(x, w, stride=2, padding=1)`` with x (64, 3, 64, 64), w (64, 3, 4, 4) → (64, 64, 32, 32).
    """
    name = "conv2d"
    x = as_float(x)  # integer images become the default float dtype
    s, p, d = _geometry(name, stride, padding, dilation)
    _check_operands(name, x, weight, bias, in_axis=1)
    k = tuple(weight.shape[2:])
    out = tuple(conv_output_size(x.shape[2 + a], k[a], s[a], p[a], d[a]) for a in (0, 1))
    if min(out) < 1:
        raise ValueError(
            f"{name}: input of spatial size {tuple(x.shape[2:])} is too small for kernel {k}, stride {s}, "
            f"padding {p}, dilation {d}: the computed output size is {out} (each side needs "
            f"H + 2p >= d(k - 1) + 1 = {tuple(d[a] * (k[a] - 1) + 1 for a in (0, 1))})")
    fn = Conv2d(s, p, d, out)
    return fn(x, weight) if bias is None else fn(x, weight, bias)


def conv_transpose2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, dilation: Any = 1) -> Tensor:
    """2-D transposed convolution of x (N, Cin, H, W) with weight (Cin, Cout, kh, kw), PyTorch's semantics.

    Output (N, Cout, OH, OW) with OH = (H − 1)s − 2p + d(kh − 1) + output_padding + 1; output_padding
    must be smaller than the stride or the dilation (it only picks one of the sizes that the matching
    convolution maps to H). groups = 1. See :class:`ConvTranspose2d` for the math.

    Example: ``conv_transpose2d(z, w, stride=2, padding=1)`` with z (64, 128, 7, 7), w (128, 64, 4, 4)
    → (64, 64, 14, 14).
    """
    name = "conv_transpose2d"
    x = as_float(x)  # integer images become the default float dtype
    s, p, d = _geometry(name, stride, padding, dilation)
    op = int_pair(f"{name}: output_padding", output_padding, 0)
    for a in (0, 1):
        if op[a] >= max(s[a], d[a]):
            raise ValueError(f"{name}: output_padding {op} must be smaller than either stride {s} or "
                             f"dilation {d} (on axis {'HW'[a]}: {op[a]} >= max({s[a]}, {d[a]}))")
    _check_operands(name, x, weight, bias, in_axis=0)
    k = tuple(weight.shape[2:])
    out = tuple(conv_transpose_output_size(x.shape[2 + a], k[a], s[a], p[a], op[a], d[a]) for a in (0, 1))
    if min(out) < 1:
        raise ValueError(
            f"{name}: input of spatial size {tuple(x.shape[2:])} with kernel {k}, stride {s}, padding {p}, "
            f"output_padding {op}, dilation {d} gives the output size {out}; the padding is too large")
    fn = ConvTranspose2d(s, p, d, out)
    return fn(x, weight) if bias is None else fn(x, weight, bias)


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution along one axis: ⌊(size + 2p − d(k − 1) − 1)/s⌋ + 1.

    Returns a value < 1 when the (padded) input is shorter than the dilated kernel, d(k − 1) + 1.
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    return span // stride + 1 if span >= 0 else 0


def conv_transpose_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                               output_padding: int = 0, dilation: int = 1) -> int:
    """Output length of a transposed convolution along one axis: (size − 1)s − 2p + d(k − 1) + op + 1.

    The convolution with the same (kernel, stride, padding, dilation) maps every length in
    [that value − op, that value − op + s − 1] back to ``size``: ``output_padding`` picks one.
    """
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


# ============================================================================ Functions
class Conv2d(Function):
    """y = conv(x, w) + b (cross-correlation, as PyTorch), NCHW.

    Shapes: x (N, C, H, W), w (O, C, kh, kw), b (O,) or absent, y (N, O, OH, OW) with
    OH = ⌊(H + 2p − d(kh − 1) − 1)/s⌋ + 1 (same for W).

    Forward: with col = im2col(x) of shape (N·OH·OW, C·kh·kw) and W₂ = w as (O, C·kh·kw),
        y₂ = col · W₂ᵀ  (+ b[o] on column o),   y = y₂ laid out as (N, O, OH, OW).

    Backward (gy₂ = gy laid out as (N·OH·OW, O)). Since y₂[r, o] = Σ_q col[r, q] W₂[o, q]:
        ∂L/∂W₂ = gy₂ᵀ · col                      → gw = that laid out as (O, C, kh, kw)
        ∂L/∂col = gy₂ · W₂                      → gx = col2im(gy₂ · W₂): every x̃ element gets the sum
                                                   of the column entries it was copied to (adjoint of a
                                                   copy is a scatter-add); the padding's share is dropped
        ∂L/∂b[o] = Σ_{n,a,b} gy[n, o, a, b]

    Keeps the column matrix (for gw; x itself when the kernel covers the input) and the weight (for gx): col
    holds about kh·kw/(s_h·s_w) times as many numbers as x, the price of computing each gradient with one GEMM.

    Double backward: the three gradients are bilinear, none in its own input,
        gx = convᵀ(gy, w)            (:class:`ConvTranspose2d` with output size (H, W): the output_padding
                                      H − [(OH − 1)s − 2p + d(kh − 1) + 1] ∈ [0, s) that recovers x's shape)
        gw = ∂⟨gy, conv(x, ·)⟩/∂w    (:class:`Conv2dWeightGrad` (x, gy))
        gb = Σ_{n,a,b} gy            (Sum)
    so with u, V, c the gradients arriving at gx, gw, gb the second pass sends
        to w: ∂⟨u, convᵀ(gy, w)⟩/∂w = weight grad of conv(u, ·) against gy,   to x: convᵀ(gy, V),
        to gy: conv(u, w) + conv(x, V) + c (broadcast over n, a, b).
    backward_graph records exactly the three ops above; each one's backward (and backward_graph) is
    again a convolution, a transposed convolution or a weight gradient, so every order works.
    """

    fresh_grads = True  # gx, gw, gb: new arrays each (a leaf keeps them without a copy)

    def __init__(self, stride: Pair, padding: Pair, dilation: Pair, out: Pair):
        self.s, self.p, self.d, self.out = stride, padding, dilation, out

    def forward(self, x, w, b=None):
        self.route = _route()
        self.g = Geometry(tuple(w.shape[2:]), self.s, self.p, self.d)
        y, self.saved = self.route.conv_forward(x, w, b, self.g, self.out)
        self.w, self.x_shape = w, x.shape
        return y

    def backward(self, gy):
        need = self.needs_grad
        return self.route.conv_backward(gy, self.w, self.saved, self.g, self.x_shape,
                                        (need[0], need[1], len(need) > 2 and need[2]))

    def release(self):
        """After the backward: the saved columns go back to the fast route's pool for the next forward."""
        if self.__dict__.get("route") is conv_fast:
            conv_fast.release_saved(self.__dict__.get("saved"))
        super().release()

    def backward_graph(self, gy):
        x, w = self.inputs[0], self.inputs[1]
        x_hw = tuple(x.shape[2:])
        gx = needed(self, 0, lambda: ConvTranspose2d(self.s, self.p, self.d, x_hw)(gy, w))
        gw = needed(self, 1, lambda: Conv2dWeightGrad(self.s, self.p, self.d, tuple(w.shape[2:]))(x, gy))
        gb = needed(self, 2, lambda: ops.sum(gy, axis=(0, 2, 3))) if len(self.inputs) > 2 else None
        return gx, gw, gb


class ConvTranspose2d(Function):
    """y = convᵀ(x, w) + b: the adjoint (input gradient) of a convolution, NCHW.

    Shapes: x (N, Cin, H, W), w (Cin, Cout, kh, kw) (PyTorch's layout), b (Cout,) or absent,
    y (N, Cout, OH, OW) with OH = (H − 1)s − 2p + d(kh − 1) + op_h + 1 (same for W).

    Read w as the weight of the convolution conv_w: (N, Cout, OH, OW) → (N, Cin, H, W) with the same
    stride, padding and dilation (its "O" is Cin, its "C" is Cout). Then
        y = conv_wᵀ(x) = col2im(x₂ · W₂) (+ b),          x₂ = x as (N·H·W, Cin), W₂ = w as (Cin, Cout·kh·kw)
    i.e. y[n, co, a·s + i·d − p, b·s + j·d − p] += Σ_ci x[n, ci, a, b] · w[ci, co, i, j].

    Backward. y is linear in x with adjoint conv_w, and in w through the same bilinear form
    ⟨gy, conv_wᵀ(x)⟩ = ⟨conv_w(gy), x⟩ = ⟨col · W₂ᵀ, x₂⟩:
        gx = conv_w(gy) = col · W₂ᵀ,       col = im2col(gy) of shape (N·H·W, Cout·kh·kw)
        gw = x₂ᵀ · col  laid out as (Cin, Cout, kh, kw)
        gb[co] = Σ_{n,a,b} gy[n, co, a, b]
    The col of gy is built once and serves both gx and gw.  These are :class:`Conv2d`'s forward and
    weight gradient, with the roles of input and output exchanged.

    Keeps x (for gw; a reference) and w (for gx).

    Double backward: the same structure as :class:`Conv2d`'s, with the roles exchanged,
        gx = conv_w(gy)                      (:class:`Conv2d` with output size (H, W))
        gw = ∂⟨x, conv(gy, ·)⟩/∂w            (:class:`Conv2dWeightGrad` (gy, x): the weight gradient of
                                              conv_w at input gy and output gradient x)
        gb = Σ_{n,a,b} gy
    and with u, V, c arriving at gx, gw, gb the second pass sends
        to w: the weight grad of conv(gy, ·) against u,   to x: conv(gy, V),
        to gy: convᵀ(u, w) + convᵀ(x, V) + c.
    """

    fresh_grads = True

    def __init__(self, stride: Pair, padding: Pair, dilation: Pair, out: Pair):
        self.s, self.p, self.d, self.out = stride, padding, dilation, out

    def forward(self, x, w, b=None):
        self.route = _route()
        self.g = Geometry(tuple(w.shape[2:]), self.s, self.p, self.d)
        y, self.saved = self.route.transpose_forward(x, w, b, self.g, self.out)
        self.w, self.x_shape = w, x.shape
        return y

    def backward(self, gy):
        need = self.needs_grad
        return self.route.transpose_backward(gy, self.w, self.saved, self.g, self.x_shape,
                                             (need[0], need[1], len(need) > 2 and need[2]))

    def backward_graph(self, gy):
        x, w = self.inputs[0], self.inputs[1]
        x_hw = tuple(x.shape[2:])
        gx = needed(self, 0, lambda: Conv2d(self.s, self.p, self.d, x_hw)(gy, w))
        gw = needed(self, 1, lambda: Conv2dWeightGrad(self.s, self.p, self.d, tuple(w.shape[2:]))(gy, x))
        gb = needed(self, 2, lambda: ops.sum(gy, axis=(0, 2, 3))) if len(self.inputs) > 2 else None
        return gx, gw, gb


class Conv2dWeightGrad(Function):
    """gw = ∂⟨g, conv(x, w)⟩/∂w, the weight gradient of a convolution as an op of (x, g) (used by create_graph).

    Shapes: x (N, C, H, W), g (N, O, OH, OW) with (OH, OW) the size conv(x, ·) has (or, for the transposed
    convolution's weight, that conv's first OH, OW outputs), gw (O, C, kh, kw):
        gw[o, c, i, j] = Σ_{n,a,b} g[n, o, a, b] · x̃[n, c, a·s + i·d, b·s + j·d],
    i.e. gW₂ = g₂ᵀ · im2col(x) — :class:`Conv2d`'s weight gradient, the same routines.

    Why an op of its own (rather than im2col spelled in GetItem and MatMul): it is bilinear, gw = B(x, g) with
    ⟨V, B(x, g)⟩ = ⟨g, conv(x, V)⟩ for every V (O, C, kh, kw) (the definition of a weight gradient), so both
    of its partials are convolutions that exist already:
        ∂⟨V, gw⟩/∂g = conv(x, V)          (:class:`Conv2d`, output size (OH, OW))
        ∂⟨V, gw⟩/∂x = convᵀ(g, V)         (:class:`ConvTranspose2d`, output size (H, W): the adjoint of
                                          conv(·, V) in x)
    No col of x is materialised in a graph, and the stride, padding and dilation are handled by the routines
    the first order already uses.

    Double backward: backward_graph records that Conv2d and ConvTranspose2d, whose own backward_graph
    records Conv2dWeightGrad again: B is linear in each argument, so the third and further orders are the
    same three ops. Keeps x and g (for the backward; references, no copies).
    """

    fresh_grads = True

    def __init__(self, stride: Pair, padding: Pair, dilation: Pair, kernel: Pair):
        self.s, self.p, self.d, self.k = stride, padding, dilation, kernel

    def forward(self, x, g):
        self.x, self.g = x, g
        return _route().weight_grad(x, g, Geometry(self.k, self.s, self.p, self.d), self.k)

    def backward(self, gw):
        need, x, g = self.needs_grad, self.x, self.g
        gx = ConvTranspose2d(self.s, self.p, self.d, tuple(x.shape[2:])).forward(g, gw) if need[0] else None
        gg = Conv2d(self.s, self.p, self.d, tuple(g.shape[2:])).forward(x, gw) if need[1] else None
        return gx, gg

    def backward_graph(self, gw):
        x, g = self.inputs
        gx = needed(self, 0, lambda: ConvTranspose2d(self.s, self.p, self.d, tuple(x.shape[2:]))(g, gw))
        gg = needed(self, 1, lambda: Conv2d(self.s, self.p, self.d, tuple(g.shape[2:]))(x, gw))
        return gx, gg


# ============================================================================ the plain route
class Reference:
    """The convolutions computed exactly as the module docstring writes them, on NCHW arrays: im2col with
    columns in (c, i, j) order (so that W₂ is w itself, reshaped), one GEMM, and col2im as one strided
    scatter-add per kernel offset. No thread splits, no reused buffers, no special cases: the readable
    reference that the fast routes (:mod:`npgan.conv_fast`) are tested against. Same interface as those."""

    @staticmethod
    def im2col(x: Any, g: Geometry, out: Pair) -> Any:
        """col[(n,a,b), (c,i,j)] = x̃[n, c, a·s + i·d, b·s + j·d], (N·OH·OW, C·kh·kw): a strided view of the
        padded input (no copy), then one copy."""
        xp = get_array_module(x)
        N, C, H, W = x.shape
        (kh, kw), s, p, d = g.k, g.s, g.p, g.d
        xt = xp.zeros((N, C, H + 2 * p[0], W + 2 * p[1]), dtype=x.dtype)
        xt[:, :, p[0]:p[0] + H, p[1]:p[1] + W] = x
        sN, sC, sH, sW = xt.strides
        view = xp.lib.stride_tricks.as_strided(xt, shape=(N, out[0], out[1], C, kh, kw),
                                               strides=(sN, sH * s[0], sW * s[1], sC, sH * d[0], sW * d[1]))
        return xp.ascontiguousarray(view).reshape(N * out[0] * out[1], C * kh * kw)

    @staticmethod
    def col2im(col: Any, x_shape: tuple, g: Geometry, out: Pair) -> Any:
        """The adjoint of :meth:`im2col`: gx[n, c, a·s + i·d − p, b·s + j·d − p] = Σ col[(n,a,b), (c,i,j)],
        one strided update per kernel offset (i, j) into the padded input, whose padding is then cut off."""
        xp = get_array_module(col)
        N, C, H, W = x_shape
        (kh, kw), s, p, d = g.k, g.s, g.p, g.d
        xt = xp.zeros((N, C, H + 2 * p[0], W + 2 * p[1]), dtype=col.dtype)
        c6 = col.reshape(N, out[0], out[1], C, kh, kw)
        for i in range(kh):
            for j in range(kw):
                xt[:, :, i * d[0]:i * d[0] + s[0] * (out[0] - 1) + 1:s[0],
                   j * d[1]:j * d[1] + s[1] * (out[1] - 1) + 1:s[1]] += c6[:, :, :, :, i, j].transpose(0, 3, 1, 2)
        return xp.ascontiguousarray(xt[:, :, p[0]:p[0] + H, p[1]:p[1] + W])

    @staticmethod
    def _images(y2: Any, shape: tuple) -> Any:
        """Rows (N·H·W, C) → a new NCHW array (N, C, H, W)."""
        N, C, H, W = shape
        return get_array_module(y2).ascontiguousarray(y2.reshape(N, H, W, C).transpose(0, 3, 1, 2))

    @staticmethod
    def _rows(a: Any) -> Any:
        """(N, C, H, W) → (N·H·W, C)."""
        return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])

    @staticmethod
    def conv_forward(x, w, b, g, out):
        col = Reference.im2col(x, g, out)
        y2 = gemm(col, w.reshape(w.shape[0], -1).T)
        if b is not None:
            y2 += b
        return Reference._images(y2, (x.shape[0], w.shape[0]) + tuple(out)), col

    @staticmethod
    def conv_backward(gy, w, col, g, x_shape, need):
        gy2 = Reference._rows(gy)
        w2 = w.reshape(w.shape[0], -1)
        gx = Reference.col2im(gemm(gy2, w2), x_shape, g, tuple(gy.shape[2:])) if need[0] else None
        gw = gemm(gy2.T, col).reshape(w.shape) if need[1] else None
        gb = gy.sum(axis=(0, 2, 3)) if need[2] else None
        return gx, gw, gb

    @staticmethod
    def transpose_forward(x, w, b, g, out):
        x2 = Reference._rows(x)
        y = Reference.col2im(gemm(x2, w.reshape(w.shape[0], -1)), (x.shape[0], w.shape[1]) + tuple(out), g,
                             tuple(x.shape[2:]))
        if b is not None:
            y += b[:, None, None]
        return y, x2

    @staticmethod
    def transpose_backward(gy, w, x2, g, x_shape, need):
        col = Reference.im2col(gy, g, tuple(x_shape[2:]))
        gx = Reference._images(gemm(col, w.reshape(w.shape[0], -1).T), x_shape) if need[0] else None
        gw = gemm(x2.T, col).reshape(w.shape) if need[1] else None
        gb = gy.sum(axis=(0, 2, 3)) if need[2] else None
        return gx, gw, gb

    @staticmethod
    def weight_grad(x, gy, g, k):
        col = Reference.im2col(x, g, tuple(gy.shape[2:]))
        return gemm(Reference._rows(gy).T, col).reshape((gy.shape[1], x.shape[1]) + tuple(k))


# ============================================================================ argument checks
def int_pair(name: str, v: Any, minimum: int) -> Pair:
    """``v`` (an int or a pair of ints) as a pair, each at least ``minimum``; ValueError otherwise."""
    vals = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    ok = len(vals) == 2 and all(isinstance(a, (int, backend.np.integer)) and not isinstance(a, bool)
                                for a in vals)
    if not ok or min(vals) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} or a pair of them, got {v!r}")
    return int(vals[0]), int(vals[1])


def _geometry(name: str, stride: Any, padding: Any, dilation: Any) -> tuple[Pair, Pair, Pair]:
    return (int_pair(f"{name}: stride", stride, 1), int_pair(f"{name}: padding", padding, 0),
            int_pair(f"{name}: dilation", dilation, 1))


def _check_operands(name: str, x: Any, w: Any, b: Any, in_axis: int) -> None:
    """4-D input, 4-D weight, channels of x on axis 1 equal to weight axis ``in_axis``, bias (out,)."""
    if x.ndim != 4:
        raise ValueError(f"{name}: input must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if w.ndim != 4:
        raise ValueError(f"{name}: weight must be 4-D, got shape {tuple(w.shape)}")
    if 0 in x.shape[2:] or 0 in w.shape[2:]:
        raise ValueError(f"{name}: input (shape {tuple(x.shape)}) and kernel (weight shape {tuple(w.shape)}) need "
                         "spatial sizes >= 1")
    if x.shape[1] != w.shape[in_axis]:
        raise ValueError(f"{name}: input has {x.shape[1]} channels (shape {tuple(x.shape)}) but the weight "
                         f"of shape {tuple(w.shape)} expects {w.shape[in_axis]} (weight axis {in_axis})")
    out = w.shape[1 - in_axis]
    if b is not None and tuple(b.shape) != (out,):
        raise ValueError(f"{name}: bias must have shape ({out},) for weight of shape {tuple(w.shape)}, "
                         f"got {tuple(b.shape)}")
