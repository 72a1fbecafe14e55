"""The GEMM floor of every convolution and DCGAN case: npgan's time, the time of exactly the GEMMs it performs, and
PyTorch's time, on one thread and on two.

    python benchmarks/floor.py [--threads 1,2] [--only SUBSTRING] [--repeat 7] [--no-shapes] [--cpu-clock]
                               [--json FILE]

For each case (the conv and DCGAN cases of ``bench.py``'s ``cases_*.py``, and one ``shapes-dcgan`` training step
beside its PyTorch twin from ``shapes_steps.py``) and each thread count:

1. npgan's step is warmed up, then one step (four for shapes-dcgan, whose R1 runs on every fourth D step) runs
   inside :func:`npgan.conv_fast.recording_gemms`, which lists every matrix product the convolutions take: the
   operands' shapes and memory layouts (a transposed view stays a transposed view), the chunk (thread) each ran
   in, and the BLAS threads it could use.
2. The floor replays that list alone: the same products, as many, on operands of the same layouts (filled
   with random normal numbers; one buffer per distinct layout, outputs apart from inputs), each chunk's products
   on a thread of their own in one hand-off for the whole list (so the floor pays no per-op hand-off), the rest
   on the calling thread with the BLAS threads they had. No copy, no elementwise pass, no autograd: what is
   left if all of that cost nothing.
3. npgan's step, the floor and PyTorch's step are timed in alternation (``bench.time_rounds``: a b c, c b a, ...),
   medians over rounds.

Columns: npgan ms, GEMM ms (the floor), torch ms, npgan/torch (median of the per-round ratios), "above" =
(npgan − GEMM)/npgan (median of the per-round values: the share of npgan's step spent outside its GEMMs),
GEMM/torch, the number of GEMMs and their GFLOP a step. "above" compares two NumPy timings equally disturbed by a
busy machine, so it is the steadier figure while developing; npgan/torch moves with the other library's own
threads and kernels. Threads: ``--threads 1`` holds npgan, its BLAS and torch to one thread each; 2 gives each
two (npgan's convolutions split over two threads, each GEMM on one BLAS thread). ``--cpu-clock`` (one thread only)
times by the calling thread's CPU time instead of the wall clock: on a machine that other processes keep busy
the wall clock measures mostly them. A benchmark, nothing asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench import load_cases, machine_line, thread_counts_of, time_rounds, use_threads  # noqa: E402

import npgan  # noqa: E402
from npgan import conv_fast, parallel  # noqa: E402

SHAPES = "shapes-dcgan train step (npgan Trainer vs its PyTorch twin), batch 64"
SHAPES_UNIT = 4  # shapes-dcgan: R1 on every 4th D step, so a unit of work is 4 steps


def is_floor_case(name: str) -> bool:
    """The cases whose time is convolutions: the conv layers and the DCGAN steps (MLP and KDE cases are not)."""
    return "conv" in name or "DCGAN" in name


def replay(log: list[dict], threads: int) -> Callable[[], None]:
    """A callable that takes exactly the GEMMs of ``log`` (:func:`npgan.conv_fast.recording_gemms`), alone."""
    np = npgan.backend.np
    rng = np.random.default_rng(0)
    buffers: dict[tuple, Any] = {}

    def operand(spec: tuple | None, dtype: str, role: str) -> Any:
        if spec is None:
            return None
        shape, strides = spec
        key = (role, shape, strides, dtype)  # outputs apart from inputs: no product reads what one wrote
        if key not in buffers:
            item = np.dtype(dtype).itemsize
            span = 1 + sum((n - 1) * abs(st) // item for n, st in zip(shape, strides))
            base = rng.standard_normal(span).astype(dtype)
            buffers[key] = np.lib.stride_tricks.as_strided(base, shape=shape, strides=strides)
        return buffers[key]

    serial: dict[int, list] = {}  # BLAS threads -> products run on the calling thread
    per_slot: dict[int, list] = {}  # chunk -> products run in that chunk
    for e in log:
        prod = (operand(e["a"], e["dtype"], "in"), operand(e["b"], e["dtype"], "in"),
                operand(e["out"], e["dtype"], "out"))
        if e["slot"] is None:
            serial.setdefault(e["blas"], []).append(prod)
        else:
            per_slot.setdefault(e["slot"], []).append(prod)
    matmul = np.matmul
    slots = max(per_slot, default=-1) + 1

    def run_list(prods: list) -> None:
        for a, b, out in prods:
            matmul(a, b, out=out)

    def chunk(lo: int, hi: int) -> None:
        for k in range(lo, hi):
            run_list(per_slot.get(k, []))

    from threadpoolctl import ThreadpoolController
    ctl = ThreadpoolController()

    def run() -> None:
        for blas, prods in serial.items():
            with ctl.limit(limits=max(blas, 1), user_api="blas"):
                run_list(prods)
        if slots:
            assert parallel.get_num_threads() >= slots, "the floor replays one thread per chunk"
            saved = parallel.MIN_WORK
            parallel.MIN_WORK = 0
            try:
                parallel.parallel_chunks(chunk, slots, 1)
            finally:
                parallel.MIN_WORK = saved

    return run


def gflop(log: list[dict]) -> float:
    """Floating-point operations of the listed products (2 per multiply-add), in GFLOP."""
    total = 0
    for e in log:
        (sa, _), (sb, _) = e["a"], e["b"]
        batch = 1
        for n in (sa[:-2] if len(sa) > len(sb) else sb[:-2]):
            batch *= n
        total += 2 * batch * sa[-2] * sa[-1] * sb[-1]
    return total / 1e9


def shapes_case(threads: int) -> tuple[Callable[[], None], Callable[[], None] | None]:
    """``SHAPES_UNIT`` steps of the shapes-dcgan Trainer, and of its PyTorch twin (None without torch)."""
    import shapes_steps
    tr = shapes_steps.trainer({}, {})

    def npgan_unit() -> None:
        for _ in range(SHAPES_UNIT):
            tr.step()
        tr.flush()

    try:
        twin = shapes_steps.torch_twin(threads)
    except ImportError:
        return npgan_unit, None

    def torch_unit() -> None:
        for _ in range(SHAPES_UNIT):
            twin.step()

    return npgan_unit, torch_unit


def measure(name: str, n_step: Callable[[], None], t_step: Callable[[], None] | None, threads: int, repeat: int,
            per: int, clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    for _ in range(2):
        n_step()
    with conv_fast.recording_gemms() as log:
        n_step()
    floor = replay(log, threads)
    steps = [n_step, floor] + ([t_step] if t_step is not None else [])
    samples = time_rounds(steps, repeat, "cpu", clock=clock)
    n, f = samples[0], samples[1]
    row: dict[str, Any] = {
        "npgan_ms": statistics.median(n) / per, "gemm_ms": statistics.median(f) / per,
        "above": statistics.median((a - b) / a for a, b in zip(n, f)),
        "gemms": len(log) / per, "gflop": gflop(log) / per, "torch_ms": None, "ratio": None, "gemm_vs_torch": None}
    if t_step is not None:
        t = samples[2]
        row.update(torch_ms=statistics.median(t) / per, ratio=statistics.median(a / b for a, b in zip(n, t)),
                   gemm_vs_torch=statistics.median(a / b for a, b in zip(f, t)))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts, each case run at each")
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    ap.add_argument("--repeat", type=int, default=7, help="rounds (timed samples of each side)")
    ap.add_argument("--no-shapes", action="store_true", help="leave out the shapes-dcgan step")
    ap.add_argument("--cpu-clock", action="store_true",
                    help="time by the thread's CPU time (for --threads 1 on a busy machine)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    thread_counts = thread_counts_of(args.threads, "floor.py")
    if thread_counts is None:
        return 2
    if args.cpu_clock and thread_counts != [1]:
        print(f"floor.py: error: --cpu-clock times one thread's CPU time; it needs --threads 1, got {args.threads!r}",
              file=sys.stderr)
        return 2
    clock = time.thread_time if args.cpu_clock else time.perf_counter
    try:
        import torch
    except ImportError:
        torch = None
        print("torch is not installed: only npgan's times and the floor are shown (pip install torch)")
    cases = [c for c in load_cases() if is_floor_case(c.name) and "cpu" in c.devices and args.only in c.name]
    print(f"npgan {npgan.__version__} | torch {getattr(torch, '__version__', '-')} | medians of {args.repeat} rounds"
          f" | clock: {'thread CPU time' if args.cpu_clock else 'wall'}")
    print(machine_line(torch))
    print(f"{'case':<58} {'thr':>3} {'npgan ms':>9} {'GEMM ms':>8} {'torch ms':>9} {'n/torch':>7} {'above':>6} "
          f"{'GEMM/t':>6} {'GEMMs':>6} {'GFLOP':>6}")
    rows = []
    nan = float("nan")
    for threads in thread_counts:
        use_threads(threads, torch)
        jobs = [(c.name, c) for c in cases]
        if not args.no_shapes and args.only in SHAPES:
            jobs.append((SHAPES, None))
        for name, case in jobs:
            npgan.manual_seed(0)
            if case is None:
                n_step, t_step = shapes_case(threads)
                per = SHAPES_UNIT
            else:
                built = case.npgan("cpu")
                n_step = built[0] if isinstance(built, tuple) else built
                t_step = None
                if torch is not None and case.torch is not None:
                    torch.manual_seed(0)
                    t_step = case.torch("cpu")
                per = 1
            r = measure(name, n_step, t_step, threads, args.repeat, per, clock)
            rows.append({"case": name, "threads": threads, **r})
            print(f"{name[:58]:<58} {threads:>3} {r['npgan_ms']:>9.2f} {r['gemm_ms']:>8.2f} "
                  f"{r['torch_ms'] if r['torch_ms'] is not None else nan:>9.2f} "
                  f"{r['ratio'] if r['ratio'] is not None else nan:>7.2f} {100 * r['above']:>5.0f}% "
                  f"{r['gemm_vs_torch'] if r['gemm_vs_torch'] is not None else nan:>6.2f} {r['gemms']:>6.0f} "
                  f"{r['gflop']:>6.2f}", flush=True)
            del n_step, t_step
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
