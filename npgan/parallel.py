"""Intra-op parallelism on the CPU: one op's work split over the batch, one chunk per thread.

Why. A NumPy op runs on one core, except inside BLAS. A convolution is GEMMs (which OpenBLAS spreads over
the cores) and copies (im2col, the scatter of col2im, NHWC ↔ NCHW re-layouts), which NumPy does on one
core while the others wait. PyTorch splits both over its threads. So does npgan for its convolutions: the
batch is cut into ``get_num_threads()`` contiguous chunks, and each thread runs the whole op — copies and
GEMMs — on its chunk, with the BLAS held to one thread meanwhile (each GEMM then has a core to itself
instead of two libraries' thread pools fighting over the same cores). NumPy releases the GIL in its copies,
ufunc loops and BLAS calls, so the chunks really run at the same time.

Batch norm and the activations split too, but only from :data:`ELEMENTWISE_MIN_WORK` elements (2 MB of
float32), through :func:`elementwise_bounds` and :func:`run_bounds` (batch norm: one hand-off for the
statistics, one for the normalisation). A hand-off has a fixed cost: a worker waits for its chunk in the
kernel, and on a VM whose idle cores halt at once (this project's 2-core machine) waking it takes about
0.1 ms: ``python benchmarks/studies/threads.py --only handoff,exp`` measured a chunk handed over and back with nothing
to do at 125–144 µs on the idle machine (43 µs while other work kept the cores awake), an np.exp over 1 MB at
0.36–0.58 ms on one thread and 0.40–0.45 ms split in two, and over 16 MB a split that pays 1.5–1.7×. A pass
over memory without a product halves at best, so the split must save more than a hand-off costs: batch norm
takes five passes forward (two hand-offs) and about six backward, an activation three or four (one), each
pass over 2 MB taking 0.2–0.5 ms on one core; below 2 MB a split saves about what the hand-offs cost. (An
earlier A/B that split batch norm and the activations of shapes-dcgan's step, whose arrays are all below
that size, made it slower: 122.5 against 102.8 ms a step. PyTorch's OpenMP threads spin between ops instead
of sleeping; a worker spinning in Python (``time.sleep(0)`` in a loop for 2 ms after each chunk) made that
step no faster, 115.6 against 109.6 ms.)

    parallel_chunks(fn, n, work)  →  [fn(lo₀, hi₀), fn(lo₁, hi₁), …]     [lo_t, hi_t) cover range(n) in order

The calling thread runs the last chunk itself; the others go to a pool of ``get_num_threads() − 1`` worker
threads (:class:`_Pool`). Small ops (``work`` below :data:`MIN_WORK` elements) and ops on the GPU run in one
piece, and so does any call made from inside a chunk (no nesting).

Small ops also hold the BLAS to one thread while they run, whenever npgan splits (more than one thread).
After a multi-threaded call, OpenBLAS's worker threads keep spinning for a while, and a split op that
starts meanwhile finds its cores taken: letting a model's small convolutions use OpenBLAS's threads between its
split ones slows every step (``python benchmarks/studies/threads.py``: "small ops free" against "default"). The rule
depends on the op and the thread count only, never on the clock, so that a run and its resume compute every
op the same way (an earlier rule, "within a second of a split", gave results that changed with the machine's
load). The threshold is a trade: from 64k elements the 28×28 DCGAN splits all six of its convolutions, and the
8×8 DCGAN (largest ops 262k) splits too; a higher one splits fewer (``threads.py``: "default" against "split
from 512k").

Models whose matrix products are small. OpenBLAS starts its second thread for any product of more than a few
hundred thousand multiply-adds, and its threads spin while they wait for the next one. For an MLP whose
largest product is small (the 2-D presets: 512 × 128 × 128, 8.4M multiply-adds) that second thread buys
nothing and burns a second core; beside any other busy process it slows the run down. :func:`fit_blas`
holds the BLAS to one thread around a piece of work whose largest product (:func:`gemm_work`) is below
:data:`GEMM_MIN_WORK`; the training loop wraps each step in it. Large products (an MLP at batch 2,048, or on
MNIST-sized hidden layers) keep the BLAS's own threads, and the split convolutions are unaffected (they hold
the BLAS to one thread anyway, and split over npgan's threads). ``benchmarks/studies/train_threads.py`` measures the
presets both ways.

Threads. The default is the BLAS's own thread count (which follows ``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS``), at most the number of cores this process may use; the
environment variable ``NPGAN_NUM_THREADS`` or :func:`set_num_threads` override it. Splitting needs a BLAS
whose thread count can be set at run time (through ``threadpoolctl``, which scikit-learn brings); without
one npgan runs single-chunk.

Reproducibility. Chunk boundaries depend only on n and the thread count, and partial sums (weight
gradients) are added in chunk order, so runs with the same thread count give identical numbers; another
thread count changes the rounding of those sums (float32: about 1e-7 relative), as it does in PyTorch.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from . import backend

__all__ = ["get_num_threads", "set_num_threads", "parallel_chunks", "chunk_bounds", "sum_parts", "MIN_WORK", "MIN_MACS",
           "gemm_work", "fit_blas", "GEMM_MIN_WORK", "chunk_slot", "blas_threads_now", "elementwise_bounds",
           "run_bounds", "ELEMENTWISE_MIN_WORK"]

MIN_WORK = 1 << 16  # elements an op must touch before it is split (a hand-off has a fixed cost: threads.py)
MIN_MACS = 1 << 24  # multiply-adds an op that says how many it takes must have before it is split (see parallel_chunks)
ELEMENTWISE_MIN_WORK = 1 << 19  # the same for a pass without a matrix product (batch norm, activations)
GEMM_MIN_WORK = 1 << 25  # multiply-adds of a model's largest product from which the BLAS keeps its own threads
HOLD_BLAS_IN_SMALL_OPS = True  # small ops hold the BLAS to one thread while splitting is on (False: to measure why)

_lock = threading.Lock()
_inside = threading.local()  # .active: this thread is running a chunk; .slot: its index among the op's chunks
_state: dict[str, Any] = {"threads": None, "pool": None, "blas": None, "depth": 0, "saved": []}


def _blas_controllers() -> list:
    """threadpoolctl's handles on the BLAS libraries loaded now (numpy's among them); [] when unavailable."""
    if _state["blas"] is None:
        try:
            from threadpoolctl import ThreadpoolController
            _state["blas"] = [lc for lc in ThreadpoolController().lib_controllers if lc.user_api == "blas"]
        except Exception:  # threadpoolctl missing or unable to inspect this process
            _state["blas"] = []
    return _state["blas"]


def blas_libraries() -> list[dict[str, Any]]:
    """The BLAS libraries loaded now, as threadpoolctl reports them: each a dict with ``name`` (e.g. "openblas"),
    ``version``, ``threads`` and ``architecture`` (the kernel OpenBLAS chose, e.g. "SkylakeX"; "" if unknown).
    [] when threadpoolctl is missing or cannot inspect this process."""
    out = []
    for lc in _blas_controllers():
        try:
            out.append({"name": str(lc.internal_api), "version": str(lc.version),
                        "threads": int(lc.get_num_threads()),
                        "architecture": str(getattr(lc, "architecture", "") or "")})
        except Exception:  # noqa: BLE001 - threadpoolctl could not inspect this library
            pass
    return out


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _default_threads() -> int:
    env = os.environ.get("NPGAN_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"NPGAN_NUM_THREADS must be a positive integer, got {env!r}")
        return n
    blas = _blas_controllers()
    if not blas:
        return 1
    return max(1, min(_available_cores(), max(lc.get_num_threads() or 1 for lc in blas)))


def get_num_threads() -> int:
    """The number of threads npgan splits a large CPU op over (1: no splitting)."""
    if _state["threads"] is None:
        with _lock:
            if _state["threads"] is None:
                _state["threads"] = _default_threads()
    return _state["threads"]


def set_num_threads(n: int) -> None:
    """Split large CPU ops over ``n`` threads from now on (like ``torch.set_num_threads``); n = 1 turns it off.

    Raises ValueError for anything but a positive integer.
    """
    if isinstance(n, bool) or not isinstance(n, (int, backend.np.integer)) or n < 1:
        raise ValueError(f"set_num_threads: the number of threads must be a positive integer, got {n!r}")
    with _lock:
        pool, _state["pool"] = _state["pool"], None
        _state["threads"] = int(n)
    if pool is not None:
        pool.shutdown()


def chunk_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """range(n) cut into min(parts, n) contiguous chunks whose sizes differ by at most one, in order."""
    parts = max(1, min(parts, n))
    q, r = divmod(n, parts)
    bounds, lo = [], 0
    for t in range(parts):
        hi = lo + q + (t < r)
        bounds.append((lo, hi))
        lo = hi
    return bounds


class _Pool:
    """``workers`` daemon threads taking chunks from one queue; each chunk signals its own lock when done.

    Leaner than ``concurrent.futures.ThreadPoolExecutor`` (no futures, no condition variables): a DCGAN step
    splits 24 ops, and ``benchmarks/studies/threads.py`` times the cost of one hand-off and its completion.
    """

    def __init__(self, workers: int):
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._work, name=f"npgan-{i}", daemon=True) for i in range(workers)]
        for t in self.threads:
            t.start()

    def _work(self) -> None:
        while True:
            task = self.queue.get()
            if task is None:
                return
            fn, lo, hi, results, slot, done = task
            try:
                results[slot] = (True, _run_chunk(fn, lo, hi, slot))
            except BaseException as exc:  # handed to the caller, raised there
                results[slot] = (False, exc)
            finally:
                done.release()

    def submit(self, fn: Callable[[int, int], Any], lo: int, hi: int, results: list, slot: int) -> Any:
        done = threading.Lock()
        done.acquire()
        self.queue.put((fn, lo, hi, results, slot, done))
        return done

    def shutdown(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join()


def _pool(workers: int) -> _Pool:
    """The pool, started on first use (set_num_threads and a fork drop it)."""
    with _lock:
        if _state["pool"] is None:
            _state["pool"] = _Pool(workers)
        return _state["pool"]


def _run_chunk(fn: Callable[[int, int], Any], lo: int, hi: int, slot: int | None = None) -> Any:
    _inside.active, _inside.slot = True, slot
    try:
        return fn(lo, hi)
    finally:
        _inside.active, _inside.slot = False, None


def chunk_slot() -> int | None:
    """The index of the chunk this thread is running (0 for the first), None outside a split op: which thread
    a piece of work ran on, for ``benchmarks/floor.py``'s list of the GEMMs."""
    return getattr(_inside, "slot", None)


def blas_threads_now() -> int:
    """How many threads the BLAS may use for a product started now (1 while npgan holds it; 0: unknown)."""
    if _state["depth"] > 0:
        return 1
    blas = _blas_controllers()
    return max((lc.get_num_threads() or 1 for lc in blas), default=0)


def parallel_chunks(fn: Callable[[int, int], Any], n: int, work: int, xp: Any = None, macs: int | None = None) -> list:
    """[fn(lo, hi) for each chunk of range(n)], the chunks run on ``get_num_threads()`` threads at once.

    ``fn`` must only write to its own part of any shared output (rows lo..hi of the batch) and return what
    the caller combines (e.g. a partial weight gradient). ``work`` is the number of elements the whole op
    touches, ``macs`` (when given) the multiply-adds of its matrix products: below :data:`MIN_WORK` elements or
    :data:`MIN_MACS` multiply-adds ``fn(0, n)`` runs alone (with the BLAS held to one thread, see the
    module's docstring); on the GPU (``xp`` not NumPy), with one thread, or when called from
    inside a chunk, it runs alone and untouched. Exceptions from any chunk propagate after all chunks finished.

    Why both. A split saves at most half the op's time and costs a hand-off (0.1 ms or more on an idle VM). An
    op whose columns are large but whose product is thin saves less than that: shapes-dcgan's last D layer
    (64 images of 96×4×4 to one output: 98k elements, 98k multiply-adds) takes 0.22 ms forward and backward in
    one piece and 0.44 ms split over two threads, its first G layer as a transposed convolution (6.3M
    multiply-adds) 0.57 against 1.03 ms (``python benchmarks/studies/threads.py --only thin``, the quiet
    Sapphire Rapids machine, 2026-12-07). From 2^24 (16.8M) multiply-adds, about 0.13 ms of GEMM on one core of
    that machine (130 GFLOP/s), half the product saves about what a hand-off costs.
    """
    threads = get_num_threads()
    if (threads == 1 or getattr(_inside, "active", False) or (xp is not None and xp is not backend.np)
            or not _blas_controllers()):
        return [fn(0, n)]
    small = n < 2 or work < MIN_WORK or (macs is not None and macs < MIN_MACS)
    if small and not HOLD_BLAS_IN_SMALL_OPS:
        return [fn(0, n)]
    _limit_blas(True)
    try:
        if small:  # one piece, but with the BLAS held too (see the module's docstring)
            return [fn(0, n)]
        return _run_bounds(fn, chunk_bounds(n, threads), threads)
    finally:
        _limit_blas(False)


def elementwise_bounds(n: int, work: int, xp: Any = None) -> list[tuple[int, int]]:
    """How a pass over memory without a matrix product (batch norm, an activation) is cut: into
    ``get_num_threads()`` chunks of range(n) when it touches at least :data:`ELEMENTWISE_MIN_WORK` elements on
    the CPU, else [(0, n)]. Such a pass halves a few memory passes per hand-off, so it needs more work than a
    convolution to pay for one (see the module's docstring). Run the chunks with :func:`run_bounds`."""
    threads = get_num_threads()
    if (threads == 1 or n < 2 or work < ELEMENTWISE_MIN_WORK or getattr(_inside, "active", False)
            or (xp is not None and xp is not backend.np)):
        return [(0, n)]
    return chunk_bounds(n, threads)


def run_bounds(fn: Callable[[int, int], Any], bounds: list[tuple[int, int]]) -> list:
    """[fn(lo, hi) for (lo, hi) in bounds], the chunks on threads at once (one hand-off) when there are several
    and npgan may split; in order on the calling thread otherwise. The BLAS is left as it is: for passes that
    take no matrix product (:func:`elementwise_bounds`). Exceptions propagate after every chunk finished."""
    threads = get_num_threads()
    if len(bounds) == 1 or threads == 1 or getattr(_inside, "active", False):
        return [fn(lo, hi) for lo, hi in bounds]
    return _run_bounds(fn, bounds, threads)


def _run_bounds(fn: Callable[[int, int], Any], bounds: list[tuple[int, int]], threads: int) -> list:
    """The chunks but the last to the pool, the last on the calling thread; results in order."""
    pool = _pool(threads - 1)
    results: list = [None] * (len(bounds) - 1)
    done = [pool.submit(fn, lo, hi, results, i) for i, (lo, hi) in enumerate(bounds[:-1])]
    try:
        last = _run_chunk(fn, *bounds[-1], len(bounds) - 1)
    finally:
        for lock in done:  # every chunk has finished before anything propagates
            lock.acquire()
    for ok, value in results:
        if not ok:
            raise value
    return [value for _, value in results] + [last]


def sum_parts(parts: list) -> Any:
    """Σ of the chunks' partial results, added in chunk order (None when the chunks returned None)."""
    if parts[0] is None:
        return None
    total = parts[0]
    for q in parts[1:]:
        total = total + q
    return total


def _limit_blas(enter: bool) -> None:
    """Hold the BLAS to one thread while any split op runs (counted, so that concurrent callers nest)."""
    with _lock:
        if enter:
            _state["depth"] += 1
            if _state["depth"] == 1:
                _state["saved"] = [lc.get_num_threads() for lc in _state["blas"]]
                for lc in _state["blas"]:
                    lc.set_num_threads(1)
        else:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                for lc, k in zip(_state["blas"], _state["saved"]):
                    lc.set_num_threads(k)


def gemm_work(modules: Iterable[Any], batch: int) -> int:
    """Multiply-adds of the largest matrix product a dense layer of ``modules`` takes at this batch size.

    A Linear layer's weight (out, in) costs batch · in · out multiply-adds in its forward product (and the same
    in each of its two backward products); the result is the largest such product over every 2-D parameter of
    the modules, 0 when they have none (convolutions, whose products are split over npgan's threads instead).
    """
    shapes = [tuple(p.shape) for m in modules for p in m.parameters()]
    return max((batch * a * b for a, b in (s for s in shapes if len(s) == 2)), default=0)


@contextmanager
def fit_blas(work: int) -> Iterator[None]:
    """Hold the BLAS to one thread inside the block when ``work`` (see :func:`gemm_work`) < :data:`GEMM_MIN_WORK`.

    Otherwise, or without a BLAS whose threads can be set, the block runs untouched. On the GPU the hold is
    harmless (the host BLAS is idle there), and a NumPy stand-in for CuPy computes as the CPU does. Nests with the
    split ops' own hold; the BLAS's thread count is restored on leaving. Which side of the threshold a model is on
    changes only how many threads compute each product; OpenBLAS may then add in another order (float32: about
    1e-7 relative), so, as with npgan's own thread count, runs repeat bit for bit on the same side.
    """
    if work >= GEMM_MIN_WORK or not _blas_controllers():
        yield
        return
    get_num_threads()  # fixed before the hold: npgan's default thread count follows the BLAS's own
    _limit_blas(True)
    try:
        yield
    finally:
        _limit_blas(False)


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: forget the pool (a new one starts when needed)."""
    global _lock
    _lock = threading.Lock()
    _state.update(pool=None, depth=0)
    _inside.active = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
