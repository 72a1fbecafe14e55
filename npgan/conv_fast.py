"""The fast routes of :mod:`npgan.conv`: the same numbers as its reference route, by a shorter way.

Read :mod:`npgan.conv` first: a convolution is im2col, one GEMM, and (for the input gradient) col2im; its
reference route does exactly that on NCHW arrays. This module computes the same sums (up to their rounding)
with less memory traffic around the GEMMs, which are the only part a CPU cannot do faster:

- **Channels-last images.** An image array keeps its logical shape (N, C, H, W) but, from
  :data:`CHANNELS_LAST_MIN` channels up, its memory is laid out (N, H, W, C) (:func:`new_images`; NumPy only).
  Then the rows of a convolution's output, y₂ = col · W₂ᵀ of shape (N·OH·OW, O), *are* the output: the GEMM
  writes them in place, and an incoming gradient gy₂ needs no copy either. Batch norm and the activations
  keep the layout (:mod:`npgan.functional`), so a network passes it from layer to layer and no column matrix,
  output or gradient is transposed on the way. Padding the input is then a plain copy, not a transposing one.
- **Narrow images** (fewer than :data:`CHANNELS_LAST_MIN` channels: the RGB or grey images at either end of a
  GAN) stay NCHW, and their columns are laid out per image, colᵀ (N, C·kh·kw, OH·OW): each copy runs along an
  image row instead of along C ≤ 3 numbers, and the GEMMs, one per image, read and write NCHW directly.
- **Dense** convolutions, whose kernel covers the whole unpadded input (one output pixel: a DCGAN's last D
  layer, and as a transposed convolution its first G layer): x flattened *is* the column matrix, no copy.
- **Phase blocks** (:func:`phase_blocks`, :func:`input_grad_by_phase`): when the stride divides the kernel,
  the input gradient's GEMM and col2im are taken one block of kernel offsets at a time, each block's product
  added into the gradient while it is in cache.
- **Scratch arrays** (:func:`scratch_array`): temporaries that never leave a call are reused across calls.
- **Threads** (:mod:`npgan.parallel`): each op runs per chunk of the batch, one chunk per thread, one hand-off
  per op (the forward; the backward with both of its gradients).

The routes are chosen by geometry and channel counts only (never by timing), and every choice has a test
that runs both of its sides against the reference route (``tests/test_conv_routes.py``). Measured timings:
``benchmarks/floor.py`` (time above the GEMMs) and ``benchmarks/README.md``.

Interface (used by the Functions of :mod:`npgan.conv`; :class:`npgan.conv.Reference` has the same five):

    conv_forward(x, w, b, g, out)                  → y, saved        y = conv(x, w) + b
    conv_backward(gy, w, saved, g, x_shape, need)  → gx, gw, gb
    transpose_forward(x, w, b, g, out)             → y, saved        y = convᵀ(x, w) + b
    transpose_backward(gy, w, saved, g, x_shape, need) → gx, gw, gb
    weight_grad(x, gy, g, k)                       → gw              ∂⟨gy, conv(x, ·)⟩/∂w
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from . import backend, parallel
from .backend import get_array_module

Pair = tuple[int, int]

CHANNELS_LAST_MIN = 8  # image arrays with at least this many channels are laid out channels-last (NumPy)
PER_BLOCK_MIN_WIDTH = 64  # input_grad_by_phase: one GEMM per phase block from this block width (s_h·s_w·C) up
COLUMN_GROUP_BYTES = 8 << 20  # columns built only for one product go through in groups of images of about this
CACHE_BLOCK_BYTES = 1 << 20  # input_grad_by_phase: images per group so that its product and buffer take about this
# (a core's L2 cache holds 1-2 MB on current x86 CPUs; a smaller one still gains over the whole batch at once)


class Geometry(NamedTuple):
    """A convolution's kernel size, stride, padding and dilation, each an (h, w) pair."""
    k: Pair
    s: Pair
    p: Pair
    d: Pair


# ============================================================================ scratch buffers
_scratch = threading.local()
_SCRATCH_MAX = 64  # (role, shape, dtype) entries kept per thread (a DCGAN step uses about 20); past that: afresh


def scratch_array(xp: Any, role: str, shape: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialised work array that lives only inside one call of this module, reused across calls.

    What is cached: per thread, one array per (role, shape, dtype), for the large temporaries — the padded
    input ("pad"), columns used only inside the call ("col"), gy laid out as rows ("rows"), GEMM results that
    are scattered or re-laid out ("gcol", "y2") and col2im's accumulator ("acc"). For a DCGAN layer these are
    2-13 MB each; allocated afresh every step they cost one page fault per 4 KB touched.

    Why it is safe: a scratch array never escapes. Nothing returned to a caller, stored on a Function for
    backward or handed to another module is (or is a view of) a scratch array: every result is written
    into a newly allocated array. Roles keep the scratch arrays alive at the same time apart; the cache is
    thread-local, so threads (the chunks of one op among them) never share one. On CuPy (its own memory pool)
    this is a plain ``empty``.
    """
    if xp is not backend.np:
        return xp.empty(shape, dtype=dtype)
    cache = getattr(_scratch, "arrays", None)
    if cache is None or len(cache) >= _SCRATCH_MAX:
        cache = _scratch.arrays = {}
    key = (role, shape, backend.np.dtype(dtype))
    buf = cache.get(key)
    if buf is None:
        buf = cache[key] = xp.empty(shape, dtype=dtype)
    return buf


def _scratch_rows(xp: Any, role: str, n: int, tail: tuple[int, ...], dtype: Any) -> Any:
    """scratch_array(role, (n,) + tail) for a group of n images, taken from the one of the largest group seen so
    far, so that a batch's last, smaller group reuses it instead of keeping an array of its own."""
    cache = getattr(_scratch, "groups", None)
    if cache is None:
        cache = _scratch.groups = {}
    key = (role, tail, str(dtype))
    size = max(n, cache.get(key, 0))
    cache[key] = size
    return scratch_array(xp, role, (size,) + tail, dtype)[:n]


# ============================================================================ saved columns, reused
_pool: dict[tuple, list] = {}
_pool_lock = threading.Lock()
POOL_MAX_BYTES = 256 << 20  # column matrices kept for reuse, at most this many bytes in all


def new_columns(xp: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialised array for a convolution's saved columns: one given back by :func:`give_back` (the
    columns of a Function already released) when there is one of this shape, else a new one.

    Why: a GAN step runs D three times before any of its backward passes, so its column matrices (the largest
    arrays of the step: 16 MB for a layer of the 32×32 DCGAN) are allocated on top of each other every step, and
    the heap gives them fresh pages each time — one page fault per 4 KB, thousands a step. Reused, they are
    faulted in once. Only columns that the conv Functions allocated themselves, and only after the Function was
    released (its backward done; nothing else ever sees them), come back. On CuPy: a plain ``empty``."""
    if xp is not backend.np:
        return xp.empty(shape, dtype=dtype)
    key = (tuple(shape), backend.np.dtype(dtype).str)
    with _pool_lock:
        free = _pool.get(key)
        if free:
            return free.pop()
    return xp.empty(shape, dtype=dtype)


def give_back(arr: Any) -> None:
    """Return columns from :func:`new_columns` once nothing refers to them any more (kept while the pool holds
    less than :data:`POOL_MAX_BYTES`)."""
    if not isinstance(arr, backend.np.ndarray):
        return
    key = (arr.shape, arr.dtype.str)
    with _pool_lock:
        held = sum(a.nbytes for free in _pool.values() for a in free)
        if held + arr.nbytes <= POOL_MAX_BYTES:
            _pool.setdefault(key, []).append(arr)


def release_saved(saved: Any) -> None:
    """What :func:`conv_forward` saved, given back after the Function's backward (its columns, if it made them)."""
    if isinstance(saved, tuple) and len(saved) == 3 and saved[2]:
        give_back(saved[1])


# ============================================================================ the GEMMs, listed on request
_gemm_log: list | None = None  # a list while recording_gemms() is active


def gemm(a: Any, b: Any, out: Any = None) -> Any:
    """a @ b (into ``out`` when given): every matrix product of the convolutions goes through here, so that
    :func:`recording_gemms` can list them. Costs one test of a module global when nothing records."""
    if _gemm_log is not None:
        _gemm_log.append(gemm_entry(a, b, out))
    return get_array_module(a).matmul(a, b, out=out)


def gemm_entry(a: Any, b: Any, out: Any = None) -> dict:
    """One product as :func:`recording_gemms` lists it: each operand's (shape, strides) (its memory layout: a
    transposed view is not a copy), the dtype, the chunk (thread) it ran in and the BLAS threads it could use."""
    return {"a": (a.shape, a.strides), "b": (b.shape, b.strides),
            "out": None if out is None else (out.shape, out.strides), "dtype": str(a.dtype),
            "slot": parallel.chunk_slot(), "blas": parallel.blas_threads_now()}


@contextmanager
def recording_gemms() -> Iterator[list]:
    """Inside the block every :func:`gemm` is appended, as a :func:`gemm_entry`, to the list this yields
    (``benchmarks/floor.py`` times the list alone: the GEMM floor of a step). Not re-entrant."""
    global _gemm_log
    _gemm_log = log = []
    try:
        yield log
    finally:
        _gemm_log = None


# ============================================================================ layouts
def channels_last(xp: Any, channels: int) -> bool:
    """Whether a new image array with ``channels`` channels is laid out channels-last: on NumPy, from
    :data:`CHANNELS_LAST_MIN` channels up. Below that a pixel's channels are shorter than one SIMD register and
    every pass over the array would run in such short pieces; CuPy keeps NCHW throughout."""
    return xp is backend.np and channels >= CHANNELS_LAST_MIN


def new_images(xp: Any, shape: tuple[int, int, int, int], dtype: Any) -> Any:
    """An uninitialised (N, C, H, W) array, its memory (N, H, W, C) when :func:`channels_last` says so."""
    N, C, H, W = shape
    if channels_last(xp, C):
        return xp.empty((N, H, W, C), dtype=dtype).transpose(0, 3, 1, 2)
    return xp.empty(shape, dtype=dtype)


def nhwc(a: Any) -> Any:
    """The (N, H, W, C) view of an (N, C, H, W) array (no copy)."""
    return a.transpose(0, 2, 3, 1)


def rows_view(a: Any) -> Any:
    """a (n, C, H, W) as its (n·H·W, C) rows without a copy when its memory is channels-last; else None."""
    v = nhwc(a)
    return v.reshape(-1, a.shape[1]) if v.flags.c_contiguous else None


def rows(a: Any, role: str = "rows") -> Any:
    """a (n, C, H, W) as (n·H·W, C) rows: a view (channels-last memory) or one copy into a scratch array."""
    r = rows_view(a)
    if r is not None:
        return r
    n, C, H, W = a.shape
    buf = scratch_array(get_array_module(a), role, (n, H, W, C), a.dtype)
    buf[...] = nhwc(a)
    return buf.reshape(-1, C)


def _channels_last_copy(a: Any) -> Any:
    """A new channels-last array with a's values."""
    out = get_array_module(a).empty((a.shape[0],) + tuple(a.shape[2:]) + (a.shape[1],), dtype=a.dtype)
    out[...] = nhwc(a)
    return out.transpose(0, 3, 1, 2)


def per_image(a: Any) -> Any:
    """a (n, C, H, W) as (n, C, H·W), a view when its memory is NCHW or channels-last, else an NCHW copy."""
    n, C, H, W = a.shape
    if a.flags.c_contiguous:
        return a.reshape(n, C, H * W)
    if nhwc(a).flags.c_contiguous:
        return nhwc(a).reshape(n, H * W, C).transpose(0, 2, 1)
    return get_array_module(a).ascontiguousarray(a).reshape(n, C, H * W)


def add_bias(y: Any, b: Any) -> None:
    """y[n, o] += b[o] in place, y (n, O, OH, OW) in either layout."""
    r = rows_view(y)
    if r is not None:
        r += b
        return
    y3 = y.reshape(y.shape[0], y.shape[1], -1)
    # b as a contiguous (O, OH·OW) block rather than b[:, None]: NumPy's loop then runs over whole blocks instead of
    # rows of OH·OW numbers (the reason of ops.per_channel_operand; this array-level module stays below ops)
    xp = get_array_module(y)
    y3 += xp.ascontiguousarray(xp.broadcast_to(b[:, None], y3.shape[1:]))


def bias_grad(gy: Any) -> Any:
    """gb[o] = Σ_{n,a,b} gy[n, o, a, b], in the order gy's memory runs: over the rows of a channels-last gy;
    for NCHW, over n first (whole contiguous blocks), then over the pixels."""
    r = rows_view(gy)
    if r is not None:
        return r.sum(axis=0)
    N, O = gy.shape[:2]
    return gy.reshape(N, O, -1).sum(axis=0).sum(axis=1)


# ============================================================================ the plan of one op
class Plan(NamedTuple):
    """How one convolution conv_w: (N, C, H, W) → (N, O, OH, OW) runs, decided once per op from its geometry and
    channel counts; ``wop`` is the weight as the route multiplies it (one copy per op, not per chunk).

    kind "dense":  the kernel covers the unpadded input (OH = OW = 1, p = 0, k = (H, W), no dilation);
                   columns = x flattened per image, in the order of its memory (``order``: "chw" or "hwc").
    kind "narrow": C < :data:`CHANNELS_LAST_MIN`; columns per image, colᵀ (n, C·kh·kw, OH·OW), W₂ = w as
                   (O, C·kh·kw) (its own memory order: no copy).
    kind "rows":   the rest; columns col (n·OH·OW, kh·kw·C) from channels-last padded input, W₂ = w as
                   (O, kh·kw·C); the input gradient by phase blocks (``igrad`` "phase") when the stride divides
                   the kernel and there is no dilation, else by col2im ("col2im").
    """
    kind: str
    g: Geometry
    out: Pair          # (OH, OW)
    wop: Any           # the forward / weight-gradient operand
    igrad: str = ""    # rows kind: "phase" or "col2im"
    s_in: Pair = (1, 1)  # the stride the input gradient uses (k along an axis with one output pixel)
    blocks: Any = None  # rows kind, "phase": phase_blocks(w, s_in)
    order: str = "chw"  # dense kind: the memory order of the columns


def _is_dense(g: Geometry, x_hw: Pair, out: Pair) -> bool:
    return tuple(out) == (1, 1) and g.p == (0, 0) and g.d == (1, 1) and tuple(g.k) == tuple(x_hw)


def plan(w_shape: tuple[int, ...], g: Geometry, x_hw: Pair, out: Pair, order: str = "chw", w: Any = None,
         blocks: bool = False) -> Plan:
    """The :class:`Plan` of conv_w with a weight of shape w_shape (O, C, kh, kw) from images (·, C, x_hw) to
    (·, O, out). ``order``: the dense kind's column order (that of the input's memory, or the wanted layout of
    the output). ``w``: the weight, when the plan multiplies by it (the weight gradient alone does not);
    ``blocks``: the plan is for the input gradient (then the phase blocks replace W₂ where they apply)."""
    O, C, kh, kw = w_shape
    k = g.k
    if _is_dense(g, x_hw, out):
        wop = None if w is None else weight_2d(w) if order == "hwc" else w.reshape(O, -1)
        return Plan("dense", g, tuple(out), wop, order=order)
    if C < CHANNELS_LAST_MIN:
        return Plan("narrow", g, tuple(out), None if w is None else w.reshape(O, -1))
    s_in = tuple(k[a] if out[a] == 1 else g.s[a] for a in (0, 1))
    if g.d == (1, 1) and k[0] % s_in[0] == 0 and k[1] % s_in[1] == 0:  # the input gradient by phase blocks
        if blocks:  # for the input gradient: the blocks are all it multiplies by
            return Plan("rows", g, tuple(out), None, "phase", s_in, phase_blocks(w, s_in))
        return Plan("rows", g, tuple(out), None if w is None else weight_2d(w), "phase", s_in)
    return Plan("rows", g, tuple(out), None if w is None else weight_2d(w), "col2im", s_in)


def weight_2d(w: Any) -> Any:
    """w (O, C, kh, kw) → W₂ (O, kh·kw·C), the column order of the rows kind (a copy of the weight)."""
    return w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)


def weight_from(pl: Plan, gw2: Any, w_shape: tuple[int, ...]) -> Any:
    """∂L/∂W₂ in the plan's column order → gw laid out as w_shape (O, C, kh, kw), a new array."""
    xp = get_array_module(gw2)
    O, C, kh, kw = w_shape
    if pl.kind == "narrow" or (pl.kind == "dense" and pl.order == "chw"):
        return gw2.reshape(w_shape)
    return xp.ascontiguousarray(gw2.reshape(O, kh, kw, C).transpose(0, 3, 1, 2))


# ============================================================================ columns, per chunk of images
def columns(pl: Plan, x: Any, dst: Any = None) -> Any:
    """The columns of images x (n, C, H, W) in the plan's layout, into ``dst`` (a slice of the op's saved
    columns) or a scratch array:

        rows:   col[(n,a,b), (i,j,c)] = x̃[n, c, a·s + i·d, b·s + j·d]     (n·OH·OW, kh·kw·C)
        narrow: colᵀ[n, (c,i,j), (a,b)] = the same numbers                  (n, C·kh·kw, OH·OW)
        dense:  x flattened per image in ``pl.order``                       (n, C·H·W): a view where x's
                memory is in that order (then ``dst`` is not used), else a copy

    x̃ is x zero-padded by p: one copy of x into a scratch array (channels-last for rows, NCHW for narrow;
    skipped when there is no padding and x is already so laid out), then one copy of a strided view of it."""
    xp = get_array_module(x)
    g, (OH, OW) = pl.g, pl.out
    n, C, H, W = x.shape
    (kh, kw), (sh, sw), (dh, dw) = g.k, g.s, g.d
    if pl.kind == "dense":
        flat = flat_view(x, pl.order)
        if flat is not None:
            return flat
        if dst is None:
            dst = _scratch_rows(xp, "col", n, (C * H * W,), x.dtype)
        (nhwc(dst.reshape(n, H, W, C).transpose(0, 3, 1, 2)) if pl.order == "hwc" else
         dst.reshape(n, C, H, W))[...] = nhwc(x) if pl.order == "hwc" else x
        return dst
    if pl.kind == "narrow":
        xt = _padded(xp, x, g.p, channels_last=False)
        sN, sC, sH, sW = xt.strides
        view = xp.lib.stride_tricks.as_strided(xt, shape=(n, C, kh, kw, OH, OW),
                                               strides=(sN, sC, sH * dh, sW * dw, sH * sh, sW * sw))
        col = _scratch_rows(xp, "col", n, (C * kh * kw, OH * OW), x.dtype) if dst is None else dst
        col.reshape(n, C, kh, kw, OH, OW)[...] = view
        return col
    xt = _padded(xp, x, g.p, channels_last=True)
    sN, sH, sW, sC = xt.strides
    view = xp.lib.stride_tricks.as_strided(xt, shape=(n, OH, OW, kh, kw, C),
                                           strides=(sN, sH * sh, sW * sw, sH * dh, sW * dw, sC))
    col = _scratch_rows(xp, "col", n * OH * OW, (kh * kw * C,), x.dtype) if dst is None else dst
    col.reshape(n, OH, OW, kh, kw, C)[...] = view
    return col


def flat_view(a: Any, order: str) -> Any:
    """a (n, C, H, W) flattened per image in ``order`` ("chw": NCHW memory, "hwc": channels-last memory) without
    a copy, or None when a's memory is not so laid out."""
    v = nhwc(a) if order == "hwc" else a
    return v.reshape(a.shape[0], -1) if v.flags.c_contiguous else None


def memory_order(a: Any) -> str:
    """"hwc" when a (n, C, H, W) is laid out channels-last in memory, else "chw"."""
    return "hwc" if not a.flags.c_contiguous and nhwc(a).flags.c_contiguous else "chw"


def _padded(xp: Any, x: Any, p: Pair, channels_last: bool) -> Any:
    """x (n, C, H, W) zero-padded by p, as a scratch array (n, H + 2p, W + 2p, C) or, with channels_last False,
    (n, C, H + 2p, W + 2p); x itself (a view) when p = 0 and its memory is already laid out so."""
    n, C, H, W = x.shape
    if p == (0, 0):
        v = nhwc(x) if channels_last else x
        if v.flags.c_contiguous:
            return v
    if channels_last:
        out = _scratch_rows(xp, "pad", n, (H + 2 * p[0], W + 2 * p[1], C), x.dtype)
        inner, src = out[:, p[0]:p[0] + H, p[1]:p[1] + W], nhwc(x)
        rows_, cols_ = out, out[:, p[0]:p[0] + H]  # zero the border rows, then the border columns
    else:
        out = _scratch_rows(xp, "pad", n, (C, H + 2 * p[0], W + 2 * p[1]), x.dtype)
        inner, src = out[:, :, p[0]:p[0] + H, p[1]:p[1] + W], x
        rows_, cols_ = out.transpose(0, 2, 3, 1), out[:, :, p[0]:p[0] + H].transpose(0, 2, 3, 1)
    if p[0]:
        rows_[:, :p[0]] = 0
        rows_[:, H + p[0]:] = 0
    if p[1]:
        cols_[:, :, :p[1]] = 0
        cols_[:, :, W + p[1]:] = 0
    inner[...] = src
    return out


def apply_columns(pl: Plan, col: Any, y: Any) -> None:
    """y (n, O, OH, OW) = conv from the columns: col · W₂ᵀ, written in place when y's memory allows (rows of a
    channels-last y; per image into an NCHW y), else through a scratch array and one copy."""
    xp = get_array_module(col)
    n, O = y.shape[:2]
    if pl.kind == "narrow":  # per image: y[n] = W₂ · colᵀ[n] (NCHW) or y₂[n] = colᵀ[n]ᵀ · W₂ᵀ (channels-last)
        r = rows_view(y)
        if r is not None:
            gemm(col.transpose(0, 2, 1), pl.wop.T, out=r.reshape(n, -1, O))
        elif y.flags.c_contiguous:
            gemm(pl.wop, col, out=y.reshape(n, O, -1))
        else:
            y[...] = gemm(pl.wop, col).reshape(y.shape)
        return
    if pl.kind == "dense":  # one output pixel: y is (n, O) in either layout
        gemm(col, pl.wop.T, out=y.reshape(n, O))
        return
    r = rows_view(y)
    if r is not None:
        gemm(col, pl.wop.T, out=r)
        return
    y2 = scratch_array(xp, "y2", (col.shape[0], O), col.dtype)
    gemm(col, pl.wop.T, out=y2)
    y[...] = y2.reshape(n, y.shape[2], y.shape[3], O).transpose(0, 3, 1, 2)


def weight_grad_part(pl: Plan, gy: Any, col: Any, gy2: Any = None) -> Any:
    """∂L/∂W₂ = gy₂ᵀ · col for the images of one chunk, in the plan's column order (a new array): gy (n, O, OH,
    OW) in either layout, col from :func:`columns`; gy2: gy's rows when the caller has them already."""
    if pl.kind == "narrow":  # Σ_n gy[n] (O, P) · colᵀ[n]ᵀ (P, C·kh·kw): one product per image, then their sum
        return gemm(per_image(gy), col.transpose(0, 2, 1)).sum(axis=0)
    if pl.kind == "dense":
        return gemm(gy.reshape(gy.shape[0], gy.shape[1]).T, col)
    return gemm((rows(gy) if gy2 is None else gy2).T, col)


def input_grad(pl: Plan, gy: Any, dst: Any, gy2: Any = None) -> None:
    """dst (n, C, H, W) = ∂⟨gy, conv(x, w)⟩/∂x = col2im(gy₂ · W₂), gy (n, O, OH, OW) in either layout (gy2: its
    rows when the caller has them already); dst is written in whatever layout it has (fastest: channels-last
    for the rows kind, NCHW for narrow, the plan's order for dense)."""
    xp = get_array_module(gy)
    n, C, H, W = dst.shape
    g = pl.g
    if pl.kind == "dense":
        gyn = gy.reshape(n, gy.shape[1])
        flat = flat_view(dst, pl.order)
        if flat is not None:
            gemm(gyn, pl.wop, out=flat)
            return
        flat = gemm(gyn, pl.wop)  # dst's memory is not in that order: one more copy
        if pl.order == "hwc":
            nhwc(dst)[...] = flat.reshape(n, H, W, C)
        else:
            dst[...] = flat.reshape(n, C, H, W)
        return
    if pl.kind == "narrow":  # in groups of images whose columns and buffer take about CACHE_BLOCK_BYTES
        K, P = C * g.k[0] * g.k[1], pl.out[0] * pl.out[1]
        per = (K * P + C * (H + 2 * g.p[0]) * (W + 2 * g.p[1])) * gy.dtype.itemsize
        group = max(1, min(n, CACHE_BLOCK_BYTES // per)) if xp is backend.np else n
        gcol_all, gyi = scratch_array(xp, "gcol", (group, K, P), gy.dtype), per_image(gy)
        for lo in range(0, n, group):
            gcol = gcol_all[:min(group, n - lo)]
            gemm(pl.wop.T, gyi[lo:lo + group], out=gcol)  # colᵀ-shaped: gcol[n] = W₂ᵀ · gy[n]
            _col2im_nchw(gcol, dst[lo:lo + group], g, pl.out)
        return
    if gy2 is None:
        gy2 = rows(gy)
    if pl.igrad == "phase":
        input_grad_by_phase(gy2, g.k, dst, pl.out, pl.s_in, g.p, pl.blocks)
        return
    gcol = scratch_array(xp, "gcol", (gy2.shape[0], pl.wop.shape[1]), gy2.dtype)
    gemm(gy2, pl.wop, out=gcol)
    _col2im_rows(gcol, dst, g, pl.out)


# ============================================================================ col2im
def _col2im_rows(col: Any, dst: Any, g: Geometry, out: Pair) -> None:
    """dst[n, c, a·s + i·d − p, b·s + j·d − p] = Σ col[(n,a,b), (i,j,c)]: accumulates into a padded channels-last
    scratch buffer, one strided update (a C-long run per pixel) per kernel offset, then cuts the padding off
    into dst. Without dilation and with s ≤ k the offsets i < s_h, j < s_w are the first to reach their pixels
    and together cover [0, s_h·OH) × [0, s_w·OW): they are copied, not added, and only the rest is zeroed."""
    xp = get_array_module(col)
    n, C, H, W = dst.shape
    (kh, kw), s, p, d = g.k, g.s, g.p, g.d
    c6 = col.reshape(n, out[0], out[1], kh, kw, C)
    acc = scratch_array(xp, "acc", (n, H + 2 * p[0], W + 2 * p[1], C), col.dtype)
    copy_first = d == (1, 1) and s[0] <= kh and s[1] <= kw
    if copy_first:
        acc[:, s[0] * out[0]:] = 0
        acc[:, :, s[1] * out[1]:] = 0
    else:
        acc[...] = 0
    for i in range(kh):
        r = slice(i * d[0], i * d[0] + s[0] * (out[0] - 1) + 1, s[0])
        for j in range(kw):
            dst_ij = acc[:, r, j * d[1]:j * d[1] + s[1] * (out[1] - 1) + 1:s[1]]
            if copy_first and i < s[0] and j < s[1]:
                dst_ij[...] = c6[:, :, :, i, j]
            else:
                dst_ij += c6[:, :, :, i, j]
    nhwc(dst)[...] = acc[:, p[0]:p[0] + H, p[1]:p[1] + W]


def _col2im_nchw(colt: Any, dst: Any, g: Geometry, out: Pair) -> None:
    """The same scatter-add from per-image columns colᵀ (n, C·kh·kw, OH·OW) into an NCHW padded scratch buffer:
    each update runs along an output row (OW numbers), which for few channels is far longer than a pixel's C."""
    xp = get_array_module(colt)
    n, C, H, W = dst.shape
    (kh, kw), s, p, d = g.k, g.s, g.p, g.d
    c6 = colt.reshape(n, C, kh, kw, out[0], out[1])
    acc = _scratch_rows(xp, "acc", n, (C, H + 2 * p[0], W + 2 * p[1]), colt.dtype)
    copy_first = d == (1, 1) and s[0] <= kh and s[1] <= kw
    if copy_first:
        acc[:, :, s[0] * out[0]:] = 0
        acc[:, :, :, s[1] * out[1]:] = 0
    else:
        acc[...] = 0
    for i in range(kh):
        r = slice(i * d[0], i * d[0] + s[0] * (out[0] - 1) + 1, s[0])
        for j in range(kw):
            dst_ij = acc[:, :, r, j * d[1]:j * d[1] + s[1] * (out[1] - 1) + 1:s[1]]
            if copy_first and i < s[0] and j < s[1]:
                dst_ij[...] = c6[:, :, i, j]
            else:
                dst_ij += c6[:, :, i, j]
    dst[...] = acc[:, :, p[0]:p[0] + H, p[1]:p[1] + W]


# ============================================================================ phase blocks
def phase_blocks(w: Any, s: Pair) -> Any:
    """The weight w (O, C, kh, kw) as :func:`input_grad_by_phase` multiplies it, one copy: W₂ (O, kh·kw·C) for
    narrow blocks (s_h·s_w·C < :data:`PER_BLOCK_MIN_WIDTH`), else the blocks W₂[:, (u·s_h + ·, v·s_w + ·, ·)]
    side by side, (U_h, U_w, O, s_h·s_w·C). Needs s to divide k (U = k / s)."""
    O, C, kh, kw = w.shape
    if s[0] * s[1] * C < PER_BLOCK_MIN_WIDTH:
        return weight_2d(w)
    U = (kh // s[0], kw // s[1])
    w6 = w.transpose(0, 2, 3, 1).reshape(O, U[0], s[0], U[1], s[1], C)  # W₂, i = u·s_h + i′, j = v·s_w + j′
    return get_array_module(w).ascontiguousarray(w6.transpose(1, 3, 0, 2, 4, 5)).reshape(U[0], U[1], O, -1)


def input_grad_by_phase(gy2: Any, k: Pair, dst: Any, out: Pair, s: Pair, p: Pair, blocks: Any) -> None:
    """dst = col2im(gy₂ · W₂) when the stride divides the kernel (k = U·s, no dilation), one phase block at a time.

    Write the kernel offset as i = u·s_h + i′ (u < U_h, i′ < s_h), and the same for j = v·s_w + j′. Offset
    (i, j) of output pixel (a, b) lands on padded pixel ((a + u)·s_h + i′, (b + v)·s_w + j′): seen as
    (n, Hq, s_h, Wq, s_w, C), the buffer takes the block (u, v) of all s_h·s_w phases (i′, j′) at rows
    a + u, columns b + v — one strided update of s_w·C-long runs. So for each (u, v):

        part = gy₂ · W₂[:, (u·s_h + ·, v·s_w + ·, ·)]      (n·OH·OW, s_h·s_w·C), one GEMM
        buffer[:, u:u + OH, :, v:v + OW] += part laid out as (n, OH, s_h, OW, s_w, C)

    U_h·U_w GEMMs whose sum is the one GEMM of the plain route, but each result (a quarter of the column matrix
    for k4 s2) is consumed soon after it is made instead of being written out whole and read back. The images
    go through in groups whose block product and buffer take about :data:`CACHE_BLOCK_BYTES`, so that the
    updates find both in cache (a group's GEMMs still have hundreds of rows). With narrow
    blocks (s_h·s_w·C < :data:`PER_BLOCK_MIN_WIDTH`) the small GEMMs cost more than they save, and one GEMM
    fills the group's whole column matrix first; the updates are the same.
    Block (0, 0) covers rows [0, s_h·OH) × columns [0, s_w·OW) and is copied, not added; only the rest of the
    buffer is zeroed. Rows [0, (OH + U_h − 1)·s_h) hold every window; the crop may reach past them (zeros).
    The buffer is channels-last; the crop is copied into dst (n, C, H, W) in dst's own layout.
    """
    xp = get_array_module(gy2)
    n, C, H, W = dst.shape
    U = (k[0] // s[0], k[1] // s[1])
    Hp, Wp = H + 2 * p[0], W + 2 * p[1]
    Hq, Wq = (max(out[a] + U[a] - 1, -(-(Hp, Wp)[a] // s[a])) for a in (0, 1))
    P = out[0] * out[1]
    per_block = blocks.ndim == 4  # see phase_blocks
    width = s[0] * s[1] * C if per_block else k[0] * k[1] * C
    per_image = (P * width + Hq * s[0] * Wq * s[1] * C) * gy2.dtype.itemsize
    group = max(1, min(n, CACHE_BLOCK_BYTES // per_image)) if xp is backend.np else n
    acc_all = scratch_array(xp, "acc", (group, Hq * s[0], Wq * s[1], C), gy2.dtype)
    gcol_all = scratch_array(xp, "gcol", (group * P, width), gy2.dtype)
    for lo in range(0, n, group):
        m = min(group, n - lo)
        acc, g2 = acc_all[:m], gy2[lo * P:(lo + m) * P]
        acc[:, s[0] * out[0]:] = 0
        acc[:, :, s[1] * out[1]:] = 0
        g6 = acc.reshape(m, Hq, s[0], Wq, s[1], C)
        gcol = gcol_all[:m * P]
        if not per_block:  # narrow blocks: one GEMM for all of them, read back block by block
            gemm(g2, blocks, out=gcol)
            c8 = gcol.reshape(m, out[0], out[1], U[0], s[0], U[1], s[1], C)
        for u in range(U[0]):
            for v in range(U[1]):
                if per_block:
                    gemm(g2, blocks[u, v], out=gcol)
                    src = gcol.reshape(m, out[0], out[1], s[0], s[1], C).transpose(0, 1, 3, 2, 4, 5)
                else:
                    src = c8[:, :, :, u, :, v].transpose(0, 1, 3, 2, 4, 5)
                dst_uv = g6[:, u:u + out[0], :, v:v + out[1]]
                if u == 0 and v == 0:
                    dst_uv[...] = src
                else:
                    dst_uv += src
        nhwc(dst[lo:lo + m])[...] = acc[:, p[0]:p[0] + H, p[1]:p[1] + W]


def image_groups(lo: int, hi: int, per_image: int, xp: Any) -> list[tuple[int, int]]:
    """Images lo..hi cut into consecutive groups of about :data:`COLUMN_GROUP_BYTES` of columns each
    (``per_image`` bytes an image), for columns that only feed the products at hand: their scratch array stays
    that small whatever the batch (the columns of a 64×64 DCGAN layer's gradient take 134 MB whole), and each
    group's columns are still in cache when its products read them. Each group's GEMMs keep thousands of rows.
    One group on CuPy."""
    step = max(1, COLUMN_GROUP_BYTES // max(1, per_image)) if xp is backend.np else hi - lo
    return [(a, min(hi, a + step)) for a in range(lo, hi, step)] or [(lo, hi)]


def _accumulate(total: Any, part: Any) -> Any:
    if total is None:
        return part
    total += part
    return total


# ============================================================================ the five routes
def conv_forward(x: Any, w: Any, b: Any, g: Geometry, out: Pair) -> tuple[Any, Any]:
    """y = conv(x, w) + b, x (N, C, H, W) in any layout → y (N, O, OH, OW) (:func:`new_images`' layout).
    Saves (plan, columns, whether they are ours) for the weight gradient: the columns of the whole batch, written
    chunk by chunk into :func:`new_columns` (for the dense kind x itself, flattened, when its memory allows)."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    O = w.shape[0]
    pl = plan(w.shape, g, (H, W), out, memory_order(x), w)
    y = new_images(xp, (N, O) + tuple(out), x.dtype)
    P, K = out[0] * out[1], C * g.k[0] * g.k[1]
    col = flat_view(x, pl.order) if pl.kind == "dense" else None  # x itself, when its memory allows
    fill = col is None
    if fill:
        col = new_columns(xp, (N * P, K) if pl.kind == "rows" else (N, K, P) if pl.kind == "narrow" else (N, K),
                          x.dtype)
    per = P if pl.kind == "rows" else 1  # rows of col per image

    def chunk(lo, hi):
        c = col[lo * per:hi * per]
        if fill:
            columns(pl, x[lo:hi], dst=c)
        apply_columns(pl, c, y[lo:hi])
        if b is not None:
            add_bias(y[lo:hi], b)

    parallel.parallel_chunks(chunk, N, N * P * K, xp, macs=N * P * K * O)
    return y, (pl, col, fill)


def conv_backward(gy: Any, w: Any, saved: Any, g: Geometry, x_shape: tuple, need: tuple) -> tuple[Any, Any, Any]:
    """(gx, gw, gb) of y = conv(x, w) + b from gy (N, O, OH, OW) in any layout; need = (x, w, b) wanted.
    One split over the batch computes each chunk's gx and its parts of gw and gb."""
    xp = get_array_module(gy)
    pl, col, _ = saved
    N = gy.shape[0]
    need_x, need_w, need_b = need
    per = pl.out[0] * pl.out[1] if pl.kind == "rows" else 1
    gx = ipl = None
    if need_x:
        ipl = plan(w.shape, g, x_shape[2:], pl.out, pl.order, w, blocks=True) if pl.kind == "rows" else pl
        if pl.kind == "dense" and pl.order == "hwc":  # the layout of the dense columns
            gx = xp.empty((x_shape[0],) + tuple(x_shape[2:]) + (x_shape[1],), dtype=gy.dtype).transpose(0, 3, 1, 2)
        elif pl.kind == "dense":
            gx = xp.empty(x_shape, dtype=gy.dtype)
        else:
            gx = new_images(xp, x_shape, gy.dtype)

    def chunk(lo, hi):
        gyc = gy[lo:hi]
        gy2 = rows(gyc) if pl.kind == "rows" else None  # shared by both products
        if need_x:
            input_grad(ipl, gyc, gx[lo:hi], gy2)
        gw2 = weight_grad_part(pl, gyc, col[lo * per:hi * per], gy2) if need_w else None
        return gw2, (bias_grad(gyc) if need_b else None)

    parts = parallel.parallel_chunks(chunk, N, col.size, xp, macs=col.size * w.shape[0])
    gw2, gb = (parallel.sum_parts([q[i] for q in parts]) for i in (0, 1))
    return gx, (None if gw2 is None else weight_from(pl, gw2, w.shape)), gb


def transpose_forward(x: Any, w: Any, b: Any, g: Geometry, out: Pair) -> tuple[Any, Any]:
    """y = convᵀ(x, w) + b: the input gradient of conv_w (weight w read as (O, C, kh, kw) = (Cin, Cout, kh, kw),
    from (N, Cout, out) to (N, Cin, H, W)) with gy := x. Saves x (for the weight gradient; a reference)."""
    xp = get_array_module(x)
    N, Cin, H, W = x.shape
    Cout = w.shape[1]
    y = new_images(xp, (N, Cout) + tuple(out), x.dtype)
    pl = plan(w.shape, g, out, (H, W), memory_order(y), w, blocks=True)
    if pl.kind == "rows" and rows_view(x) is None and channels_last(xp, Cin):  # one channels-last copy of x,
        x = _channels_last_copy(x)  # the GEMM operand here and in the weight gradient (no second copy there)

    def chunk(lo, hi):
        input_grad(pl, x[lo:hi], y[lo:hi])
        if b is not None:
            add_bias(y[lo:hi], b)

    parallel.parallel_chunks(chunk, N, N * H * W * w[0].size, xp, macs=x.size * w[0].size)  # col2im's columns
    return y, x


def transpose_backward(gy: Any, w: Any, saved: Any, g: Geometry, x_shape: tuple,
                       need: tuple) -> tuple[Any, Any, Any]:
    """(gx, gw, gb) of y = convᵀ(x, w) + b: gx = conv_w(gy), gw = the weight gradient of conv_w at input gy and
    output gradient x (= saved); the columns of gy are built once (a scratch array, per group of images:
    :func:`image_groups`) for both."""
    xp = get_array_module(gy)
    x = saved
    N, Cin, H, W = x_shape
    need_x, need_w, need_b = need
    pl = plan(w.shape, g, gy.shape[2:], (H, W), memory_order(gy), w)
    gx = new_images(xp, x_shape, gy.dtype) if need_x else None

    per_image = H * W * w[0].size * gy.dtype.itemsize  # bytes of the columns of gy, per image

    def chunk(lo, hi):
        gw2 = None
        if need_x or need_w:
            for a, b in image_groups(lo, hi, per_image, xp):
                col = columns(pl, gy[a:b])
                if need_x:
                    apply_columns(pl, col, gx[a:b])
                if need_w:
                    gw2 = _accumulate(gw2, weight_grad_part(pl, x[a:b], col))
        return gw2, (bias_grad(gy[lo:hi]) if need_b else None)

    parts = parallel.parallel_chunks(chunk, N, N * H * W * w[0].size, xp,  # the size of the columns of gy
                                     macs=N * H * W * w.size)
    gw2, gb = (parallel.sum_parts([q[i] for q in parts]) for i in (0, 1))
    return gx, (None if gw2 is None else weight_from(pl, gw2, w.shape)), gb


def weight_grad(x: Any, gy: Any, g: Geometry, k: Pair) -> Any:
    """gw = ∂⟨gy, conv(x, w)⟩/∂w (O, C, kh, kw) from x (N, C, H, W) and gy (N, O, OH, OW): per chunk and group of
    images (:func:`image_groups`), the columns of x (a scratch array) and gy₂ᵀ · col; the parts summed."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    O, out = gy.shape[1], tuple(gy.shape[2:])
    w_shape = (O, C) + tuple(k)
    pl = plan(w_shape, g, (H, W), out, memory_order(x))

    per_image = out[0] * out[1] * C * k[0] * k[1] * x.dtype.itemsize

    def chunk(lo, hi):
        gw2 = None
        for a, b in image_groups(lo, hi, per_image, xp):
            gw2 = _accumulate(gw2, weight_grad_part(pl, gy[a:b], columns(pl, x[a:b])))
        return gw2

    parts = parallel.parallel_chunks(chunk, N, N * out[0] * out[1] * C * k[0] * k[1], xp,
                                     macs=N * out[0] * out[1] * C * k[0] * k[1] * O)
    return weight_from(pl, parallel.sum_parts(parts), w_shape)
