"""2-D convolution and transposed convolution on NCHW arrays, by im2col and one GEMM.

Notation (one spatial axis shown; the other is the same):

    x: (N, C, H, W)      w: (O, C, kh, kw)      y: (N, O, OH, OW)
    y[n, o, a, b] = Σ_{c,i,j} w[o, c, i, j] · x̃[n, c, a·s + i·d, b·s + j·d]   (+ bias[o])

where x̃ is x zero-padded by p on each side, s the stride, d the dilation and

    OH = ⌊(H + 2p − d·(kh − 1) − 1) / s⌋ + 1.

The column matrix lays the receptive fields side by side, one row per output pixel, channels last:

    col[(n, a, b), (i, j, c)] = x̃[n, c, a·s + i·d, b·s + j·d]      shape (N·OH·OW, kh·kw·C)

so that the convolution is one matrix product ``Y = col · W₂ᵀ`` with W₂ = w laid out as
(O, kh·kw·C) and Y = y laid out as (N·OH·OW, O). Its gradients are two more products: gW₂ = gYᵀ · col, and
g_col = gY · W₂, which :func:`_col2im` (the adjoint of :func:`_im2col`: a copy's adjoint is a scatter-add)
sends back onto the input's pixels.

The transposed convolution is the adjoint of the convolution with respect to its input: with
its weight read as the (O, C, kh, kw) weight of a convolution from the transposed conv's output
(C channels) to its input (O channels), its forward is that convolution's input gradient and its
input gradient is that convolution's forward. Both :class:`Conv2d` and :class:`ConvTranspose2d`
therefore run on the same private routines:

    _im2col + _conv_cols(col, W₂, dst)     y  = conv(x, w)     (im2col, then col · W₂ᵀ)
    _conv_input_grad(gy₂, w, dst, ...)     gx = convᵀ(gy, w)   (col2im(gy₂ · W₂))
    gy₂ᵀ · col, then _weight_layout        gw

where gy₂ is gy laid out as (N·OH·OW, O). Each routine writes its result into ``dst``, a given slice of
images of a new array, so that the Functions can run them per chunk of the batch, one chunk per thread
(:func:`~npgan.parallel.parallel_chunks`), and add up the chunks' weight and bias gradients.

Read top-down: the public functions, the Functions with their formulas, then the plain route. The fast
routes (reused scratch arrays, one GEMM per image for narrow columns, the input gradient by phase blocks) are
in :mod:`npgan.conv_fast`; they give the same numbers and are chosen by size, and ``scratch_array`` below
reads as ``xp.empty``.
"""

from __future__ import annotations

from typing import Any

from . import backend, conv_fast, ops
from .backend import get_array_module
from .conv_fast import gemm, scratch_array
from .ops import _as_float, _need, per_channel_operand
from .parallel import parallel_chunks, sum_parts
from .tensor import Function, Tensor

__all__ = ["conv2d", "conv_transpose2d", "conv_output_size", "conv_transpose_output_size"]

Pair = tuple[int, int]


# ============================================================================ public functions
def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1) -> Tensor:
    """2-D convolution (cross-correlation) of x (N, C, H, W) with weight (O, C, kh, kw), PyTorch's semantics.

    ``stride``, ``padding`` (zeros) and ``dilation`` are ints or (h, w) pairs; groups = 1. Output
    (N, O, OH, OW) with OH = ⌊(H + 2p − d(kh − 1) − 1)/s⌋ + 1. See :class:`Conv2d` for the math.

    Example: ``conv2d(x, w, stride=2, padding=1)`` with x (64, 3, 64, 64), w (64, 3, 4, 4) → (64, 64, 32, 32).
    """
    name = "conv2d"
    x = _as_float(x)  # integer images become the default float dtype
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
    x = _as_float(x)  # integer images become the default float dtype
    s, p, d = _geometry(name, stride, padding, dilation)
    op = _pair(f"{name}: output_padding", output_padding, 0)
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

    Forward: with col = im2col(x) of shape (N·OH·OW, kh·kw·C) and W₂ = w as (O, kh·kw·C),
        y₂ = col · W₂ᵀ  (+ b[o] on column o),   y = y₂ laid out as (N, O, OH, OW).

    Backward (gy₂ = gy laid out as (N·OH·OW, O)). Since y₂[r, o] = Σ_q col[r, q] W₂[o, q]:
        ∂L/∂W₂ = gy₂ᵀ · col                      → gw = that laid out as (O, C, kh, kw)
        ∂L/∂col = gy₂ · W₂                      → gx = col2im(gy₂ · W₂): every x̃ element gets the sum
                                                   of the column entries it was copied to (adjoint of a
                                                   copy is a scatter-add); the padding's share is dropped
        ∂L/∂b[o] = Σ_{n,a,b} gy[n, o, a, b]

    On the CPU both passes run per chunk of the batch, one chunk per thread (:mod:`npgan.parallel`): the
    rows of col, y and gx of images lo..hi belong to one chunk, and gw, gb are the sums of the chunks' parts.

    Keeps the column matrix (for gw) and the weight (for gx): col holds about kh·kw/(s_h·s_w) times
    as many numbers as x, the price of computing each gradient with one GEMM.

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
        xp = get_array_module(x)
        N, C = x.shape[:2]
        P, O = self.out[0] * self.out[1], w.shape[0]
        col = xp.empty((N * P, w.shape[2] * w.shape[3] * C), dtype=x.dtype)
        y = xp.empty((N, O) + self.out, dtype=x.dtype)
        w2 = _w2(w)

        def chunk(lo, hi):
            c = _im2col(x[lo:hi], w.shape[2:], self.out, self.s, self.p, self.d, dst=col[lo * P:hi * P])
            _conv_cols(c, w2, y[lo:hi])
            if b is not None:
                _add_bias(y[lo:hi], b)

        parallel_chunks(chunk, N, col.size, xp)
        self.col, self.w, self.x_shape = col, w, x.shape
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        need = self.needs_grad
        col, w, P = self.col, self.w, self.out[0] * self.out[1]
        gx = xp.empty(self.x_shape, dtype=gy.dtype) if need[0] else None
        plan = _input_grad_plan(w, self.x_shape[2:], self.out, self.s, self.p, self.d) if need[0] else None
        want_b = len(need) > 2 and need[2]

        def chunk(lo, hi):
            gy2 = _rows(gy[lo:hi])  # (n·OH·OW, O), shared by both GEMMs
            if need[0]:
                _conv_input_grad(gy2, w, plan, gx[lo:hi], self.out, self.p, self.d)
            gw2 = gemm(gy2.T, col[lo * P:hi * P]) if need[1] else None
            return gw2, (_bias_grad(gy[lo:hi]) if want_b else None)

        parts = parallel_chunks(chunk, gy.shape[0], col.size, xp)
        gw2, gb = (sum_parts([q[i] for q in parts]) for i in (0, 1))
        return gx, (None if gw2 is None else _weight_layout(gw2, w.shape)), gb

    def backward_graph(self, gy):
        x, w = self.inputs[0], self.inputs[1]
        x_hw = tuple(x.shape[2:])
        gx = _need(self, 0, lambda: ConvTranspose2d(self.s, self.p, self.d, x_hw)(gy, w))
        gw = _need(self, 1, lambda: Conv2dWeightGrad(self.s, self.p, self.d, tuple(w.shape[2:]))(x, gy))
        gb = _need(self, 2, lambda: ops.sum(gy, axis=(0, 2, 3))) if len(self.inputs) > 2 else None
        return gx, gw, gb


class ConvTranspose2d(Function):
    """y = convᵀ(x, w) + b: the adjoint (input gradient) of a convolution, NCHW.

    Shapes: x (N, Cin, H, W), w (Cin, Cout, kh, kw) (PyTorch's layout), b (Cout,) or absent,
    y (N, Cout, OH, OW) with OH = (H − 1)s − 2p + d(kh − 1) + op_h + 1 (same for W).

    Read w as the weight of the convolution conv_w: (N, Cout, OH, OW) → (N, Cin, H, W) with the same
    stride, padding and dilation (its "O" is Cin, its "C" is Cout). Then
        y = conv_wᵀ(x) = col2im(x₂ · W₂) (+ b),          x₂ = x as (N·H·W, Cin), W₂ = w as (Cin, kh·kw·Cout)
    i.e. y[n, co, a·s + i·d − p, b·s + j·d − p] += Σ_ci x[n, ci, a, b] · w[ci, co, i, j].

    Backward. y is linear in x with adjoint conv_w, and in w through the same bilinear form
    ⟨gy, conv_wᵀ(x)⟩ = ⟨conv_w(gy), x⟩ = ⟨col · W₂ᵀ, x₂⟩:
        gx = conv_w(gy) = col · W₂ᵀ,       col = im2col(gy) of shape (N·H·W, kh·kw·Cout)
        gw = x₂ᵀ · col  laid out as (Cin, Cout, kh, kw)
        gb[co] = Σ_{n,a,b} gy[n, co, a, b]
    The col of gy is built once and serves both gx and gw.  These are :class:`Conv2d`'s forward and
    weight gradient: the same private routines, with the roles of input and output exchanged. Both passes
    run per chunk of the batch on the CPU, as in :class:`Conv2d`.

    Keeps x₂ (for gw; the size of x) and w (for gx).

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
        xp = get_array_module(x)
        N, Cin, H, W = x.shape
        P = H * W
        x2 = xp.empty((N * P, Cin), dtype=x.dtype)  # (N·H·W, Cin): the GEMM operand here and in gw
        y = xp.empty((N, w.shape[1]) + self.out, dtype=x.dtype)
        plan = _input_grad_plan(w, self.out, (H, W), self.s, self.p, self.d)

        def chunk(lo, hi):
            rows = _rows(x[lo:hi], dst=x2[lo * P:hi * P])
            _conv_input_grad(rows, w, plan, y[lo:hi], (H, W), self.p, self.d)
            if b is not None:
                _add_bias(y[lo:hi], b)

        parallel_chunks(chunk, N, N * P * w.shape[1] * w.shape[2] * w.shape[3], xp)  # the size of col2im's columns
        self.x2, self.x_shape, self.w = x2, x.shape, w
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        need = self.needs_grad
        x_shape, w, x2 = self.x_shape, self.w, self.x2
        P = x_shape[2] * x_shape[3]
        gx = xp.empty(x_shape, dtype=gy.dtype) if need[0] else None
        w2 = _w2(w) if need[0] else None
        want_b = len(need) > 2 and need[2]

        def chunk(lo, hi):
            gw2 = None
            if need[0] or need[1]:
                col = _im2col(gy[lo:hi], w.shape[2:], x_shape[2:], self.s, self.p, self.d)  # scratch
                if need[0]:
                    _conv_cols(col, w2, gx[lo:hi])  # gx = conv_w(gy)
                if need[1]:
                    gw2 = gemm(x2[lo * P:hi * P].T, col)
            return gw2, (_bias_grad(gy[lo:hi]) if want_b else None)

        parts = parallel_chunks(chunk, gy.shape[0], x_shape[0] * P * w[0].size, xp)  # col's size
        gw2, gb = (sum_parts([q[i] for q in parts]) for i in (0, 1))
        return gx, (None if gw2 is None else _weight_layout(gw2, w.shape)), gb

    def backward_graph(self, gy):
        x, w = self.inputs[0], self.inputs[1]
        x_hw = tuple(x.shape[2:])
        gx = _need(self, 0, lambda: Conv2d(self.s, self.p, self.d, x_hw)(gy, w))
        gw = _need(self, 1, lambda: Conv2dWeightGrad(self.s, self.p, self.d, tuple(w.shape[2:]))(gy, x))
        gb = _need(self, 2, lambda: ops.sum(gy, axis=(0, 2, 3))) if len(self.inputs) > 2 else None
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
        xp = get_array_module(x)
        out = tuple(g.shape[2:])
        P = out[0] * out[1]

        def chunk(lo, hi):
            c = _im2col(x[lo:hi], self.k, out, self.s, self.p, self.d)  # scratch
            return gemm(_rows(g[lo:hi]).T, c)

        parts = parallel_chunks(chunk, x.shape[0], x.shape[0] * P * self.k[0] * self.k[1] * x.shape[1], xp)
        self.x, self.g = x, g
        return _weight_layout(sum_parts(parts), (g.shape[1], x.shape[1]) + self.k)

    def backward(self, gw):
        need, x, g = self.needs_grad, self.x, self.g
        gx = ConvTranspose2d(self.s, self.p, self.d, tuple(x.shape[2:])).forward(g, gw) if need[0] else None
        gg = Conv2d(self.s, self.p, self.d, tuple(g.shape[2:])).forward(x, gw) if need[1] else None
        return gx, gg

    def backward_graph(self, gw):
        x, g = self.inputs
        gx = _need(self, 0, lambda: ConvTranspose2d(self.s, self.p, self.d, tuple(x.shape[2:]))(g, gw))
        gg = _need(self, 1, lambda: Conv2d(self.s, self.p, self.d, tuple(g.shape[2:]))(x, gw))
        return gx, gg


# ============================================================================ the plain route: im2col, one GEMM, col2im
def _padded_nhwc(x: Any, p: Pair, role: str) -> Any:
    """x (N, C, H, W) → x̃ channels-last (N, H + 2p_h, W + 2p_w, C), zero border: a scratch array (one copy of x)."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    out = scratch_array(xp, role, (N, H + 2 * p[0], W + 2 * p[1], C), x.dtype)
    if p[0] or p[1]:
        out[:, :p[0]] = 0
        out[:, H + p[0]:] = 0
        out[:, :, :p[1]] = 0
        out[:, :, W + p[1]:] = 0
    out[:, p[0]:p[0] + H, p[1]:p[1] + W] = x.transpose(0, 2, 3, 1)
    return out


def _im2col(x: Any, k: Pair, out: Pair, s: Pair, p: Pair, d: Pair, dst: Any = None) -> Any:
    """Columns of x (N, C, H, W): col[(n,a,b), (i,j,c)] = x̃[n, c, a·s + i·d, b·s + j·d], (N·OH·OW, kh·kw·C).

    One strided view (N, OH, OW, kh, kw, C) of the padded channels-last input — no copy — then one
    copy into the result (the only copy of col's size): into ``dst`` (C-contiguous rows, e.g. a slice of
    a larger column matrix), or else a scratch array (for columns used only inside the caller).
    """
    xp = get_array_module(x)
    N, C = x.shape[:2]
    xt = _padded_nhwc(x, p, "pad" if dst is not None else "pad_gy")
    sN, sH, sW, sC = xt.strides
    shape = (N, out[0], out[1], k[0], k[1], C)
    view = xp.lib.stride_tricks.as_strided(
        xt, shape=shape, strides=(sN, sH * s[0], sW * s[1], sH * d[0], sW * d[1], sC))
    col = scratch_array(xp, "col", shape, x.dtype) if dst is None else dst.reshape(shape)
    col[...] = view
    return col.reshape(N * out[0] * out[1], k[0] * k[1] * C)


def _col2im(col: Any, dst: Any, k: Pair, out: Pair, s: Pair, p: Pair, d: Pair) -> None:
    """Adjoint of :func:`_im2col`: dst[n, c, a·s + i·d − p, b·s + j·d − p] = Σ col[(n,a,b), (i,j,c)].

    Accumulates into a padded channels-last scratch buffer, one strided update (a C-long run per pixel) per
    kernel offset, then cuts the padding off and copies into ``dst`` (N, C, H, W). Without
    dilation and with s ≤ k, the offsets i < s_h, j < s_w are the first to reach their pixels (rows i + s·a
    never meet) and together cover [0, s_h·OH) × [0, s_w·OW): they are copied, not added, and only the rest
    of the buffer is zeroed. (When s divides k, :func:`_conv_input_grad` takes the fast route
    :func:`~npgan.conv_fast.input_grad_by_phase` instead.)
    """
    xp = get_array_module(col)
    N, C, H, W = dst.shape
    Hp, Wp = H + 2 * p[0], W + 2 * p[1]
    c6 = col.reshape(N, out[0], out[1], k[0], k[1], C)
    copy_first = d == (1, 1) and s[0] <= k[0] and s[1] <= k[1]
    acc = scratch_array(xp, "acc", (N, Hp, Wp, C), col.dtype)
    if copy_first:
        acc[:, s[0] * out[0]:] = 0
        acc[:, :, s[1] * out[1]:] = 0
    else:
        acc[...] = 0
    for i in range(k[0]):
        r0 = i * d[0]
        rows = slice(r0, r0 + s[0] * (out[0] - 1) + 1, s[0])
        for j in range(k[1]):
            c0 = j * d[1]
            dst_ij = acc[:, rows, c0:c0 + s[1] * (out[1] - 1) + 1:s[1]]
            if copy_first and i < s[0] and j < s[1]:
                dst_ij[...] = c6[:, :, :, i, j]
            else:
                dst_ij += c6[:, :, :, i, j]
    dst[...] = acc[:, p[0]:p[0] + H, p[1]:p[1] + W].transpose(0, 3, 1, 2)


def _w2(w: Any) -> Any:
    """w (O, C, kh, kw) → W₂ (O, kh·kw·C), the column order of :func:`_im2col` (a copy of the weight)."""
    return w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)


def _rows(g: Any, dst: Any = None) -> Any:
    """(N, O, OH, OW) → (N·OH·OW, O), the layout of Y = col · W₂ᵀ: one copy, into ``dst`` (C-contiguous
    rows) or else a scratch array."""
    xp = get_array_module(g)
    N, O, OH, OW = g.shape
    r = scratch_array(xp, "rows", (N, OH, OW, O), g.dtype) if dst is None else dst.reshape(N, OH, OW, O)
    r[...] = g.transpose(0, 2, 3, 1)
    return r.reshape(-1, O)


def _conv_cols(col: Any, w2: Any, dst: Any) -> None:
    """dst = conv(x, w) from x's columns: Y = col · W₂ᵀ, (N·OH·OW, kh·kw·C) × (kh·kw·C, O), laid out as
    dst (N, O, OH, OW); w2 = :func:`_w2` (w). One GEMM into a scratch array, then one transposing copy into
    NCHW (narrow columns take :func:`~npgan.conv_fast.conv_cols_per_image`, the same numbers)."""
    xp = get_array_module(col)
    N, O, OH, OW = dst.shape
    if col.shape[1] <= conv_fast.BATCHED_MAX_K:
        conv_fast.conv_cols_per_image(col, w2, dst)
        return
    y2 = scratch_array(xp, "y2", (col.shape[0], O), col.dtype)
    gemm(col, w2.T, out=y2)
    dst[...] = y2.reshape(N, OH, OW, O).transpose(0, 3, 1, 2)


def _input_grad_plan(w: Any, x_hw: Pair, out: Pair, s: Pair, p: Pair, d: Pair) -> tuple[str, Pair, Any]:
    """How :func:`_conv_input_grad` computes col2im(gy₂ · W₂) into (·, C, H, W) = x_hw, by geometry, and the
    weight as that route multiplies it (one copy, made once per op rather than once per chunk):

    "tile":   one output pixel whose kernel tiles the padded input exactly: the GEMM result is the (padded)
              gradient itself;
    "phase":  the stride divides the kernel and there is no dilation: :func:`~npgan.conv_fast.input_grad_by_phase`
              (a fast route: the same numbers, block by block);
    "col2im": otherwise, the GEMM into a scratch array, then :func:`_col2im`.
    Returns (route, stride, weight); with one output pixel along an axis the stride plays no part there and
    is taken as the kernel size."""
    k = tuple(w.shape[2:])
    s = tuple(k[a] if out[a] == 1 else s[a] for a in (0, 1))
    if d == (1, 1) and out == (1, 1) and (x_hw[0] + 2 * p[0], x_hw[1] + 2 * p[1]) == k:
        return "tile", s, _w2(w)
    if d == (1, 1) and k[0] % s[0] == 0 and k[1] % s[1] == 0:
        return "phase", s, conv_fast.phase_blocks(w, s)
    return "col2im", s, _w2(w)


def _conv_input_grad(gy2: Any, w: Any, plan: tuple[str, Pair, Any], dst: Any, out: Pair, p: Pair, d: Pair) -> None:
    """dst = ∂⟨gy, conv(x, w)⟩/∂x = col2im(gy₂ · W₂), gy₂ = _rows(gy): (N·OH·OW, O) → dst (N, C, H, W), by
    the route of ``plan`` = :func:`_input_grad_plan`."""
    xp = get_array_module(gy2)
    route, s, wop = plan
    N, C, H, W = dst.shape
    if route == "phase":
        conv_fast.input_grad_by_phase(gy2, tuple(w.shape[2:]), dst, out, s, p, wop)
        return
    gcol = scratch_array(xp, "gcol", (gy2.shape[0], wop.shape[1]), gy2.dtype)
    gemm(gy2, wop, out=gcol)
    if route == "tile":
        k = tuple(w.shape[2:])
        dst[...] = gcol.reshape(N, k[0], k[1], C)[:, p[0]:p[0] + H, p[1]:p[1] + W].transpose(0, 3, 1, 2)
    else:
        _col2im(gcol, dst, tuple(w.shape[2:]), out, s, p, d)


def _weight_layout(g2: Any, w_shape: tuple[int, ...]) -> Any:
    """∂L/∂W₂ (O, kh·kw·C) → gw laid out as w_shape = (O, C, kh, kw): a new array, or g2 itself reshaped when
    that layout needs no copy (kh·kw = 1 or C = 1; g2 is the caller's own, a fresh GEMM result or sum)."""
    xp = get_array_module(g2)
    O, C, kh, kw = w_shape
    return xp.ascontiguousarray(g2.reshape(O, kh, kw, C).transpose(0, 3, 1, 2))


def _add_bias(y: Any, b: Any) -> None:
    """y[n, o] += b[o] in place, y (N, O, OH, OW), through :func:`~npgan.ops.per_channel_operand`."""
    y3 = y.reshape(y.shape[0], y.shape[1], -1)
    y3 += per_channel_operand(y3)(b)


def _bias_grad(gy: Any) -> Any:
    """gb[o] = Σ_{n,a,b} gy[n, o, a, b], summed over n first (whole contiguous blocks), then over the pixels
    (3x faster on NumPy than one sum over axes (0, 2, 3))."""
    N, O = gy.shape[:2]
    return gy.reshape(N, O, -1).sum(axis=0).sum(axis=1)


# ============================================================================ argument checks
def _pair(name: str, v: Any, minimum: int) -> Pair:
    """``v`` (an int or a pair of ints) as a pair, each at least ``minimum``; ValueError otherwise."""
    vals = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    ok = len(vals) == 2 and all(isinstance(a, (int, backend.np.integer)) and not isinstance(a, bool)
                                for a in vals)
    if not ok or min(vals) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} or a pair of them, got {v!r}")
    return int(vals[0]), int(vals[1])


def _geometry(name: str, stride: Any, padding: Any, dilation: Any) -> tuple[Pair, Pair, Pair]:
    return (_pair(f"{name}: stride", stride, 1), _pair(f"{name}: padding", padding, 0),
            _pair(f"{name}: dilation", dilation, 1))


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
