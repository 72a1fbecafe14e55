"""One run on several processes: the communicator that npgan's layers and training loop consult.

Data-parallel training in the manner of PyTorch's DistributedDataParallel: N processes ("ranks") each hold a
whole copy of the networks and compute one share of every batch; they meet a few times a step to add up what
the batch as a whole needs (the gradients, batch norm's statistics, the KDE term's points). Each rank runs one
BLAS thread, so no op ever hands work to a sleeping thread (on a VM whose idle cores halt, a hand-off costs about
0.1 ms: :mod:`npgan.parallel`); the ranks meet once or a few times per step instead.

    world()            the world this process belongs to: the one-process :class:`World`, or an :class:`MPIWorld`
    local()            inside it, world() is the one-process world (sampling and evaluation on one rank)
    w.rows(n)          this rank's rows [lo, hi) of a batch of n (sizes differ by at most one, rank order)
    w.sum_arrays(as)   Σ over ranks of each array, through one flat bucket: one Allreduce for all of them
    w.sum(a), w.sum_int(k), w.any(flag), w.gather_rows(a), w.bcast(obj)
    w.run(fn, root_only=...)   fn on every rank (or rank 0 only), its failure raised on every rank
    w.check_agreement(named)   the ranks compare a digest of each tensor; ReplicaMismatchError names the first
                               that differs

Why a world object. A one-process run must take exactly today's code paths (its history.csv is bit-identical to
one written before this module existed): in the one-process :class:`World` every collective is the identity and
costs a method call, and mpi4py is never imported. The MPI world is made only when a launcher says that more than
one process runs (:func:`launched_size`: ``mpiexec``/``mpirun`` of MPICH or Open MPI, ``srun``), so that npgan
without the ``mpi`` extra works as before, and an MPI launch without it fails in one line naming the extra.

Buffers. NumPy arrays go to MPI as they are (mpi4py passes their memory, no copy). CuPy arrays go as device
buffers when the MPI is CUDA-aware (``NPGAN_MPI_CUDA_AWARE=1``, or an Open MPI built with CUDA), otherwise through
host memory (copied to the host, reduced, copied back); :attr:`MPIWorld.transport` says which, and ``npgan train``
prints it in its first line.

A rank that dies or hangs. Every blocking collective runs under a watchdog: a wait longer than
``NPGAN_MPI_TIMEOUT`` seconds (default :data:`DEFAULT_TIMEOUT`; 0 switches it off) prints one line naming the
rank and the collective and calls ``MPI_Abort``, which ends every rank. That bounds the time a run can hang on a
dead peer whatever the launcher; the launchers themselves are faster where they notice (MPICH's ``mpiexec`` ends
all ranks as soon as one is killed by a signal; ``srun --kill-on-bad-exit`` likewise). An error that only one rank
meets (the ``npgan`` command catches it) also ends in ``MPI_Abort`` (:meth:`MPIWorld.abort`): the others may be
waiting in a collective that will never complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import backend
from .errors import NpganError

__all__ = ["World", "MPIWorld", "world", "local", "launched_size", "DistributedError", "ReplicaMismatchError",
           "raised_everywhere", "mark_everywhere", "rank_device", "DEFAULT_TIMEOUT", "INSTALL_HINT", "launched_rank",
           "started"]

#: seconds a rank waits in one collective before it aborts the run (``NPGAN_MPI_TIMEOUT`` overrides; 0: never)
DEFAULT_TIMEOUT = 600.0
#: what to install for more than one process
INSTALL_HINT = "pip install \"npgan[mpi]\" (mpi4py and the MPICH wheel)"


class DistributedError(NpganError, RuntimeError):
    """The processes of a run cannot work together (no mpi4py under a launcher, a launcher and an MPI that do not
    match, a collective that timed out); the message says which and what to do."""


class ReplicaMismatchError(DistributedError):
    """The ranks' copies of a tensor differ (the agreement check); names the first tensor and the ranks."""


def mark_everywhere(exc: BaseException) -> BaseException:
    """Mark ``exc`` as raised on every rank at the same point (so the ranks can exit together, without an abort);
    returns it."""
    with contextlib.suppress(AttributeError, TypeError):
        exc.npgan_all_ranks = True  # type: ignore[attr-defined]
    return exc


def raised_everywhere(exc: BaseException) -> bool:
    """Whether ``exc`` was raised on every rank (:func:`mark_everywhere`, :meth:`World.run`)."""
    return bool(getattr(exc, "npgan_all_ranks", False))


# ============================================================================ launchers
def _env_int(name: str) -> int | None:
    v = os.environ.get(name, "").strip()
    return int(v) if v.isdigit() else None


def launched_size() -> int:
    """How many processes a launcher started for this run (1 when none did), read from its environment only.

    MPICH's Hydra and Slurm's PMI2 set ``PMI_SIZE``; Open MPI ``OMPI_COMM_WORLD_SIZE``; inside a Slurm step
    (``srun``, any ``--mpi``) ``SLURM_STEP_NUM_TASKS``. ``NPGAN_MPI=0`` says one process whatever the launcher;
    ``NPGAN_MPI=1`` asks for MPI even so (the size then comes from MPI itself).
    """
    force = os.environ.get("NPGAN_MPI", "").strip()
    if force == "0":
        return 1
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE"):
        n = _env_int(name)
        if n is not None and n > 1:
            return n
    step = _env_int("SLURM_STEP_ID")  # set inside an srun step (the batch script's own step is not counted)
    n = _env_int("SLURM_STEP_NUM_TASKS")
    if step is not None and step < 0xFFFFFFF0 and n is not None and n > 1:
        return n
    return 2 if force == "1" else 1


# ============================================================================ the one-process world
class World:
    """The world of one process: every collective is the identity (and costs a method call).

    The MPI world (:class:`MPIWorld`) has the same methods; code written against a World runs unchanged on both.
    """

    size = 1
    rank = 0
    local_rank = 0
    transport = ""

    @property
    def is_root(self) -> bool:
        """True on rank 0, the rank that writes the run's files."""
        return self.rank == 0

    def describe(self) -> str:
        """How this run is distributed, for the first line a run prints ("" for one process)."""
        return ""

    def rows(self, n: int) -> tuple[int, int]:
        """This rank's rows [lo, hi) of a batch of n: rank r gets ⌊n/N⌋ rows, plus one when r < n mod N."""
        q, r = divmod(int(n), self.size)
        lo = self.rank * q + min(self.rank, r)
        return lo, lo + q + (self.rank < r)

    def sum_arrays(self, arrays: list[Any]) -> list[Any]:
        """Σ over ranks of each array (all of one dtype, on one device): arrays of the same shapes, views of one
        flat bucket reduced by one Allreduce. One process: the arrays themselves."""
        return list(arrays)

    def sum(self, a: Any) -> Any:
        """Σ over ranks of the array ``a`` (a new array on the MPI world; ``a`` itself here)."""
        return a

    def sum_int(self, k: int) -> int:
        """Σ over ranks of the integer k."""
        return int(k)

    def any(self, flag: Any) -> bool:
        """True on every rank when ``flag`` is true on any rank (a stop request, say)."""
        return bool(flag)

    def gather_rows(self, a: Any) -> tuple[Any, int, int]:
        """(the ranks' arrays concatenated along axis 0 in rank order, this rank's rows lo, hi in it)."""
        return a, 0, a.shape[0]

    def bcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (any picklable object) on every rank."""
        return obj

    def run(self, fn: Callable[..., Any], *args: Any, root_only: bool = False, limit: float | None = -1.0) -> Any:
        """``fn(*args)`` on every rank (``root_only``: on rank 0 only; the others get None), then the outcome
        shared: if it raised on any rank, every rank raises that exception (the lowest rank's, marked
        :func:`raised_everywhere`). So a failure that one rank meets (a full disk on rank 0, a missing data file on
        another) stops every rank at the same point instead of leaving the others waiting. One process: fn(*args).
        ``limit``: the watchdog's limit for the others' wait (-1: the default; None: no limit)."""
        return fn(*args)

    def barrier(self) -> None:
        """Wait until every rank is here."""

    def check_agreement(self, named: Iterable[tuple[str, Any]], where: str = "") -> None:
        """Compare every tensor across ranks (a 64-bit BLAKE2 digest of its bytes each, one Allgather); raise
        :class:`ReplicaMismatchError` naming the first tensor that differs and the ranks that hold another
        copy than rank 0's. One process: nothing to compare."""

    def abort(self, code: int) -> None:
        """End every rank of the run with exit status ``code`` (one process: this one)."""
        sys.stderr.flush()
        os._exit(code)


_SINGLE = World()
_current: World | None = None


# ============================================================================ the MPI world
def _digest(a: Any) -> int:
    host = backend.np.ascontiguousarray(backend.to_numpy(a)).reshape(-1)
    return int.from_bytes(hashlib.blake2b(host.view(backend.np.uint8), digest_size=8).digest(), "little")


def _cuda_aware(library: str) -> bool:
    """Whether device (CuPy) buffers may go to MPI as they are: ``NPGAN_MPI_CUDA_AWARE`` (0/1) when set, else an
    Open MPI built with CUDA support (MPICH's wheel is not CUDA-aware; a CUDA-aware MPICH is named with the
    variable)."""
    v = os.environ.get("NPGAN_MPI_CUDA_AWARE", "").strip()
    if v in ("0", "1"):
        return v == "1"
    if "Open MPI" in library:
        try:
            import ctypes

            from mpi4py import MPI  # noqa: F401 - only to reach the MPIX extension through ctypes
            lib = ctypes.CDLL(None)
            return bool(lib.MPIX_Query_cuda_support())
        except (OSError, AttributeError, ImportError):
            return False
    return False


class _Watchdog:
    """Aborts the run when one collective waits longer than ``limit`` seconds (a dead or hung peer).

    A daemon thread wakes once a second (``min(1, limit/4)`` s) and compares the time with the deadline the main
    thread sets around each blocking call (mpi4py releases the GIL inside MPI, so the thread runs meanwhile).
    """

    def __init__(self, world: MPIWorld, limit: float) -> None:
        self.world, self.limit = world, limit
        self.deadline: float | None = None
        self.what = ""
        self._wake = threading.Event()
        if limit > 0:
            threading.Thread(target=self._watch, name="npgan-mpi-watchdog", daemon=True).start()

    @contextlib.contextmanager
    def waiting(self, what: str, limit: float | None = -1.0) -> Iterator[None]:
        lim = self.limit if limit is not None and limit < 0 else limit
        if not lim or lim <= 0:
            yield
            return
        self.what, self.deadline = what, time.monotonic() + lim
        try:
            yield
        finally:
            self.deadline = None

    def _watch(self) -> None:
        step = min(1.0, self.limit / 4)
        while not self._wake.wait(step):
            d = self.deadline
            if d is not None and time.monotonic() > d:
                print(f"npgan: rank {self.world.rank}: {self.what} waited more than {self.limit:g} s for the other "
                      "processes (NPGAN_MPI_TIMEOUT): one of them has died or hangs; ending the run",
                      file=sys.__stderr__ or sys.stderr, flush=True)  # (a rank other than 0 may have muted stderr)
                self.world.abort(1)


class MPIWorld(World):
    """N processes under MPI (``mpi4py.MPI.COMM_WORLD``). Made by :func:`world` when a launcher started several.

    ``local_rank`` is the rank among the processes of this machine (MPI's shared-memory split), which picks the
    GPU (:func:`rank_device`).
    """

    def __init__(self, comm: Any, mpi: Any) -> None:
        self.comm, self.MPI = comm, mpi
        self.size, self.rank = comm.Get_size(), comm.Get_rank()
        node = comm.Split_type(mpi.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = node.Get_rank()
        self.local_size = node.Get_size()
        node.Free()
        first = mpi.Get_library_version().splitlines()[0]
        self.library = " ".join(first.replace("Version:", "").split()).split(",")[0]  # "MPICH 5.0.2", "Open MPI v5"
        self.cuda_aware = _cuda_aware(self.library)
        self.transport = ""  # set by describe() once the device is known
        env = os.environ.get("NPGAN_MPI_TIMEOUT", "").strip()
        try:
            limit = float(env) if env else DEFAULT_TIMEOUT
        except ValueError:
            raise DistributedError(f"NPGAN_MPI_TIMEOUT must be a number of seconds (0: no limit), got {env!r}") \
                from None
        self.watchdog = _Watchdog(self, limit)

    # ------------------------------------------------------------------ description
    def describe(self) -> str:
        on_gpu = backend.get_device() != "cpu"
        self.transport = ("CuPy buffers to a CUDA-aware MPI" if on_gpu and self.cuda_aware
                          else "CuPy buffers through host memory" if on_gpu else "NumPy buffers in place")
        return f"{self.size} processes ({self.local_size} on this machine) over {self.library}, {self.transport}"

    # ------------------------------------------------------------------ buffers
    def _device_buffer(self, a: Any) -> bool:
        return backend.get_array_module(a) is not backend.np

    def _allreduce_(self, buf: Any, what: str) -> Any:
        """Σ over ranks in place of a contiguous buffer; returns it (a device buffer through the host unless the
        MPI is CUDA-aware)."""
        MPI = self.MPI
        if not self._device_buffer(buf):
            with self.watchdog.waiting(what):
                self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            return buf
        if self.cuda_aware:
            backend.synchronize()  # the kernels that wrote buf must be done before MPI reads it
            with self.watchdog.waiting(what):
                self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            return buf
        host = backend.np.ascontiguousarray(backend.to_numpy(buf))
        with self.watchdog.waiting(what):
            self.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        return backend.asarray(host, device=backend.device_of(buf))

    def sum_arrays(self, arrays: list[Any]) -> list[Any]:
        if not arrays:
            return []
        xp = backend.get_array_module(*arrays)
        dt = arrays[0].dtype
        if any(a.dtype != dt for a in arrays):
            raise TypeError(f"sum_arrays: the arrays must have one dtype, got {sorted({str(a.dtype) for a in arrays})}")
        flat = xp.concatenate([a.reshape(-1) for a in arrays])  # one bucket: a copy, contiguous
        flat = self._allreduce_(flat, f"Allreduce of {flat.size} numbers")
        out, off = [], 0
        for a in arrays:
            out.append(flat[off:off + a.size].reshape(a.shape))
            off += a.size
        return out

    def sum(self, a: Any) -> Any:
        return self._allreduce_(a.copy(), f"Allreduce of {a.size} numbers")  # a C-ordered copy (NumPy, CuPy)

    def _int_allreduce(self, k: int, op: Any, what: str) -> int:
        buf = backend.np.array([k], dtype=backend.np.int64)  # a buffer: 4x faster than mpi4py's pickled allreduce
        with self.watchdog.waiting(what):
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=op)
        return int(buf[0])

    def sum_int(self, k: int) -> int:
        return self._int_allreduce(int(k), self.MPI.SUM, "Allreduce of a count")

    def any(self, flag: Any) -> bool:
        return bool(self._int_allreduce(1 if flag else 0, self.MPI.MAX, "the stop check"))

    def gather_rows(self, a: Any) -> tuple[Any, int, int]:
        np = backend.np
        counts = np.empty(self.size, dtype=np.int64)
        with self.watchdog.waiting("Allgather of the row counts"):
            self.comm.Allgather(np.array([a.shape[0]], dtype=np.int64), counts)
        row = 1
        for s in a.shape[1:]:
            row *= s
        lo = int(counts[:self.rank].sum())
        hi = lo + a.shape[0]
        shape = (int(counts.sum()),) + tuple(a.shape[1:])
        sizes = [int(c) * row for c in counts]
        offsets = [int(sum(sizes[:r])) for r in range(self.size)]
        on_device = self._device_buffer(a)
        xp = backend.get_array_module(a)
        if on_device and self.cuda_aware:
            send = xp.ascontiguousarray(a)
            out = xp.empty(shape, dtype=a.dtype)
            backend.synchronize()
        else:
            send = np.ascontiguousarray(backend.to_numpy(a))
            out = np.empty(shape, dtype=a.dtype)
        with self.watchdog.waiting(f"Allgatherv of {shape[0]} rows"):
            self.comm.Allgatherv(send, [out, (sizes, offsets)])
        if on_device and not self.cuda_aware:
            out = backend.asarray(out, device=backend.device_of(a))
        return out, lo, hi

    def bcast(self, obj: Any) -> Any:
        with self.watchdog.waiting("a broadcast from rank 0"):
            return self.comm.bcast(obj, root=0)

    def barrier(self) -> None:
        with self.watchdog.waiting("a barrier"):
            self.comm.Barrier()

    # ------------------------------------------------------------------ outcomes
    def _portable(self, exc: BaseException | None) -> BaseException | None:
        """``exc`` as something pickle carries to the other ranks (a RunError-like stand-in when it cannot)."""
        if exc is None:
            return None
        try:
            pickle.loads(pickle.dumps(exc))
            return exc
        except Exception:  # noqa: BLE001 - an exception that does not pickle: keep its class name and text
            return DistributedError(f"rank {self.rank}: {type(exc).__name__}: {exc}")

    def run(self, fn: Callable[..., Any], *args: Any, root_only: bool = False, limit: float | None = -1.0) -> Any:
        err: BaseException | None = None
        value = None
        if not root_only or self.is_root:
            try:
                value = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - shared with the other ranks, then raised here too
                err = exc
        if root_only:
            with self.watchdog.waiting("rank 0's file writes", limit):
                shared = self.comm.bcast(self._portable(err) if self.is_root else None, root=0)
            if shared is not None:
                raise mark_everywhere(err if self.is_root else shared)
            return value
        with self.watchdog.waiting("the ranks' outcome check", limit):
            every = self.comm.allgather(self._portable(err))
        first = next((r for r, e in enumerate(every) if e is not None), None)
        if first is not None:  # the lowest failing rank's exception on every rank (this one's own, with its traceback)
            raise mark_everywhere(err if first == self.rank else every[first])
        return value

    def check_agreement(self, named: Iterable[tuple[str, Any]], where: str = "") -> None:
        np = backend.np
        names, digests = [], []
        for name, a in named:
            names.append(name)
            digests.append(_digest(a))
        mine = np.array(digests, dtype=np.uint64)
        table = np.empty((self.size, mine.size), dtype=np.uint64)
        with self.watchdog.waiting("the agreement check"):
            self.comm.Allgather(mine, table)
        differ = (table != table[0]).any(axis=0)
        if differ.any():
            i = int(np.argmax(differ))
            ranks = [r for r in range(self.size) if table[r, i] != table[0, i]]
            raise mark_everywhere(ReplicaMismatchError(
                f"{where + ': ' if where else ''}the ranks' copies of {names[i]} differ (rank"
                f"{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))} against rank 0; "
                f"{int(differ.sum())} of {len(names)} tensors differ): the ranks no longer compute the same run"))

    def abort(self, code: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            self.comm.Abort(code)
        finally:
            os._exit(code)  # MPI_Abort may return before the launcher ends this process


# ============================================================================ the current world
def _start() -> World:
    n = launched_size()
    if n <= 1:
        return _SINGLE
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(f"this process was started as one of {n} (an MPI launcher's environment), but "
                               f"mpi4py cannot be imported ({exc}); install it with: {INSTALL_HINT}") from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        if os.environ.get("NPGAN_MPI", "").strip() == "1" and n == 2 and not os.environ.get("PMI_SIZE"):
            return _SINGLE  # NPGAN_MPI=1 in a plain process: a world of one
        raise DistributedError(f"the launcher started {n} processes, but MPI sees a world of 1: the MPI library "
                               f"({MPI.Get_library_version().splitlines()[0].strip()}) does not talk to this "
                               "launcher (with Slurm try srun --mpi=pmi2 or --mpi=pmix; or use this MPI's own "
                               "mpiexec)")
    return MPIWorld(comm, MPI)


def launched_rank() -> int:
    """This process's rank as the launcher's environment says (0 when none does): for what happens before MPI
    is started (only rank 0 prints the message of a bad option)."""
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        r = _env_int(name)
        if r is not None:
            return r
    return 0


def started() -> World | None:
    """The world, if :func:`world` made it already (None before: MPI is not started yet)."""
    return _current


def world() -> World:
    """The world of this process: :class:`MPIWorld` when a launcher started several processes (mpi4py is imported
    then, and MPI initialised, on the first call), else the one-process :class:`World`."""
    global _current
    if _current is None:
        _current = _start()
    return _current


@contextlib.contextmanager
def local() -> Iterator[None]:
    """Inside, :func:`world` is the one-process world: layers compute as in one process (batch norm uses the
    statistics of the batch in hand, not synchronised). For work one rank does alone (drawing a sample grid,
    evaluating), where a collective would wait forever for the others."""
    global _current
    saved = world()
    _current = _SINGLE
    try:
        yield
    finally:
        _current = saved


def rank_device(device: str) -> str:
    """The device of this rank for a run's ``device``: with several processes, "gpu" (or "gpu:N") becomes
    gpu:(local rank mod the number of GPUs), so the ranks of a machine spread over its GPUs; "cpu" stays."""
    w = world()
    if w.size == 1 or not str(device).strip().lower().startswith(("gpu", "cuda")):
        return device
    n = backend.gpu_count()
    return f"gpu:{w.local_rank % n}" if n > 0 else device
