"""The fast routes of :mod:`npgan.conv`: the same numbers as its plain route, taken by a shorter way.

Read :mod:`npgan.conv` first: a convolution is im2col, one GEMM, and (for the input gradient) col2im. This
module holds what makes that fast on a CPU without changing any result beyond the rounding of sums:

- :func:`scratch_array`: temporaries that never leave a call are reused across calls instead of being
  allocated (and page-faulted in) every step;
- narrow columns (:data:`BATCHED_MAX_K`): one small GEMM per image, written straight into NCHW;
- phase blocks (:func:`phase_blocks`, :func:`input_grad_by_phase`): when the stride divides the kernel, the
  input gradient's GEMM and col2im taken one block of kernel offsets at a time, each block consumed while in cache.

The fourth, the split of each op over the batch on several threads, is :mod:`npgan.parallel`. Each size
threshold here picks between two ways to the same numbers; ``tests/test_conv.py`` runs both sides of each.
Measured timings: ``benchmarks/README.md`` ("Convolutions and threads").
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import backend, parallel
from .backend import get_array_module

Pair = tuple[int, int]

BATCHED_MAX_K = 32  # column widths up to this: one small GEMM per image, straight into NCHW
PER_BLOCK_MIN_WIDTH = 64  # input_grad_by_phase: one GEMM per phase block from this block width (s_h·s_w·C) up


# ============================================================================ scratch buffers
_scratch = threading.local()
_SCRATCH_MAX = 64  # (role, shape, dtype) entries kept per thread (a DCGAN step uses 20); past that: start afresh


def scratch_array(xp: Any, role: str, shape: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialised work array that lives only inside one call of :mod:`npgan.conv`, reused across calls.

    What is cached: per thread, one array per (role, shape, dtype), for the large temporaries — the padded
    channels-last input (roles "pad", "pad_gy"), the columns of gy in the transposed conv's backward ("col"),
    gy laid out as rows ("rows"), the GEMM results that are scattered or re-laid out ("gcol", "y2") and
    col2im's accumulator ("acc"). For a DCGAN layer these are 2-13 MB each; allocated afresh every step they
    cost one page fault per 4 KB touched.

    Why it is safe: a scratch array never escapes. Nothing returned to a caller, stored on a Function for
    backward or handed to another module is (or is a view of) a scratch array: every result is written
    into a newly allocated array (the ``dst`` of conv.py's routines). Roles keep the scratch arrays alive at
    the same time apart; the cache is thread-local, so threads (the chunks of one op among them) never share
    one. On CuPy (its own memory pool) this is a plain ``empty``.
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


# ============================================================================ narrow columns
def conv_cols_per_image(col: Any, w2: Any, dst: Any) -> None:
    """dst = conv(x, w) from x's columns when they are narrow (kh·kw·C ≤ :data:`BATCHED_MAX_K`): per image,
    y[n] = W₂ · col[n]ᵀ, (O, K) × (K, OH·OW), written straight into the NCHW result dst (N, O, OH, OW).

    The plain route (one GEMM, then one transposing copy into NCHW) computes the same numbers; with narrow
    columns (e.g. the first layer of a DCGAN's D on one-channel images, K = 16) its GEMM is cheap and the
    transposing copy dominates, which this route skips.
    """
    N, O, OH, OW = dst.shape
    K = col.shape[1]
    gemm(w2, col.reshape(N, OH * OW, K).transpose(0, 2, 1), out=dst.reshape(N, O, OH * OW))


# ============================================================================ phase blocks
def phase_blocks(w: Any, s: Pair) -> Any:
    """The weight w (O, C, kh, kw) as :func:`input_grad_by_phase` multiplies it, one copy: W₂ (O, kh·kw·C, as
    ``conv._w2``) for narrow blocks (s_h·s_w·C < :data:`PER_BLOCK_MIN_WIDTH`), else the blocks
    W₂[:, (u·s_h + ·, v·s_w + ·, ·)] side by side, (U_h, U_w, O, s_h·s_w·C). Needs s to divide k (U = k / s)."""
    O, C, kh, kw = w.shape
    if s[0] * s[1] * C < PER_BLOCK_MIN_WIDTH:
        return w.transpose(0, 2, 3, 1).reshape(O, -1)
    U = (kh // s[0], kw // s[1])
    w6 = w.transpose(0, 2, 3, 1).reshape(O, U[0], s[0], U[1], s[1], C)  # W₂, i = u·s_h + i′, j = v·s_w + j′
    return get_array_module(w).ascontiguousarray(w6.transpose(1, 3, 0, 2, 4, 5)).reshape(U[0], U[1], O, -1)


def input_grad_by_phase(gy2: Any, k: Pair, dst: Any, out: Pair, s: Pair, p: Pair, blocks: Any) -> None:
    """dst = col2im(gy₂ · W₂) when the stride divides the kernel (k = U·s, no dilation), one phase block at a time.

    Write the kernel offset as i = u·s_h + i′ (u < U_h, i′ < s_h), and the same for j = v·s_w + j′. Offset
    (i, j) of output pixel (a, b) lands on padded pixel ((a + u)·s_h + i′, (b + v)·s_w + j′): seen as
    (N, Hq, s_h, Wq, s_w, C), the buffer takes the block (u, v) of all s_h·s_w phases (i′, j′) at rows
    a + u, columns b + v — one strided update of s_w·C-long runs. So for each (u, v):

        part = gy₂ · W₂[:, (u·s_h + ·, v·s_w + ·, ·)]      (N·OH·OW, s_h·s_w·C), one GEMM
        buffer[:, u:u + OH, :, v:v + OW] += part laid out as (N, OH, s_h, OW, s_w, C)

    U_h·U_w GEMMs whose sum is the one GEMM of the plain route, but each result (a quarter of the column matrix
    for k4 s2) is consumed while it is still in cache instead of being written out whole and read back
    (``python benchmarks/input_grad.py`` times the routes). With narrow blocks (s_h·s_w·C <
    :data:`PER_BLOCK_MIN_WIDTH`: one-channel images) the small GEMMs cost more than they save, and one GEMM
    fills the whole column matrix first; the updates are the same.
    Block (0, 0) covers rows [0, s_h·OH) × columns [0, s_w·OW) and is copied, not added; only the rest of the
    buffer is zeroed. Rows [0, (OH + U_h − 1)·s_h) hold every window; the crop may reach past them (zeros).
    ``blocks``: the weight blocks (or W₂ whole, for narrow blocks) from :func:`phase_blocks`.
    """
    xp = get_array_module(gy2)
    N, C, H, W = dst.shape
    U = (k[0] // s[0], k[1] // s[1])
    Hp, Wp = H + 2 * p[0], W + 2 * p[1]
    Hq, Wq = (max(out[a] + U[a] - 1, -(-(Hp, Wp)[a] // s[a])) for a in (0, 1))
    acc = scratch_array(xp, "acc", (N, Hq * s[0], Wq * s[1], C), gy2.dtype)
    acc[:, s[0] * out[0]:] = 0
    acc[:, :, s[1] * out[1]:] = 0
    g6 = acc.reshape(N, Hq, s[0], Wq, s[1], C)
    per_block = blocks.ndim == 4  # see phase_blocks
    if per_block:
        part = scratch_array(xp, "gcol", (gy2.shape[0], s[0] * s[1] * C), gy2.dtype)
    else:  # narrow blocks (few channels): one GEMM for all of them, read back block by block
        gcol = scratch_array(xp, "gcol", (gy2.shape[0], k[0] * k[1] * C), gy2.dtype)
        gemm(gy2, blocks, out=gcol)
        c8 = gcol.reshape(N, out[0], out[1], U[0], s[0], U[1], s[1], C)
    for u in range(U[0]):
        for v in range(U[1]):
            if per_block:
                gemm(gy2, blocks[u, v], out=part)
                src = part.reshape(N, out[0], out[1], s[0], s[1], C).transpose(0, 1, 3, 2, 4, 5)
            else:
                src = c8[:, :, :, u, :, v].transpose(0, 1, 3, 2, 4, 5)
            dst_uv = g6[:, u:u + out[0], :, v:v + out[1]]
            if u == 0 and v == 0:
                dst_uv[...] = src
            else:
                dst_uv += src
    dst[...] = acc[:, p[0]:p[0] + H, p[1]:p[1] + W].transpose(0, 3, 1, 2)
