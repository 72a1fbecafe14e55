"""Side-by-side speed of npgan and PyTorch, one process, same shapes and threads.

    python benchmarks/bench.py [--only SUBSTRING] [--repeat N] [--threads 1,2] [--json FILE] [--device cpu|gpu]
                               [--compare-cpu]

Each case lives in a ``cases_*.py`` module beside this file, as a list ``CASES``
of :class:`Case`: a name and two builders that return a zero-argument callable
(one step of the work) for npgan and for torch. The table shows median
milliseconds over ``--repeat`` timed calls (after warm-up) and the ratio
npgan/torch (below 1 means npgan is faster): npgan and torch are timed in
alternation and the ratio is the median of the per-round ratios (see
:func:`time_pair_ms`), which a machine whose speed drifts disturbs far less. A case may add notes (e.g. peak
memory) by returning ``(callable, {"note": ...})`` from its npgan builder.

``--threads`` takes one count or several (``--threads 1,2``: every case at each, in one run); npgan, its BLAS
and torch get that many threads each (:func:`use_threads`). ``--device gpu`` runs npgan on CuPy and torch on
CUDA (a missing CuPy or GPU is one line on stderr, exit status 2); the GPU-only cases (``Case.devices``, in
cases_gpu.py) run then. ``--compare-cpu`` also times npgan on the CPU for each
case and prints the CPU → GPU speed-up (cpu ms / gpu ms). Host-memory notes
(``peak*``, measured with tracemalloc) are left out on the GPU.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


@dataclass
class Case:
    name: str
    npgan: Callable[[str], Any]   # device -> step() or (step, notes)
    torch: Callable[[str], Any] | None  # device -> step()
    sync: bool = True
    devices: tuple[str, ...] = ("cpu", "gpu")  # where the case runs


def gan_step(F: Any, G: Any, D: Any, opt_g: Any, opt_d: Any, real: Any, noise: Callable[[], Any],
             ones: Any, zeros: Any) -> Callable[[], None]:
    """One GAN training step for npgan or torch alike (the same code runs on both APIs).

    D on the real batch and on detached fakes, then G through D, non-saturating BCE on logits, one Adam step each.
    """
    def step() -> None:
        fake = G(noise())
        opt_d.zero_grad()
        ld = F.binary_cross_entropy_with_logits(D(real), ones) + \
            F.binary_cross_entropy_with_logits(D(fake.detach()), zeros)
        ld.backward()
        opt_d.step()
        opt_g.zero_grad()
        lg = F.binary_cross_entropy_with_logits(D(fake), ones)
        lg.backward()
        opt_g.step()
    return step


def peak_extra_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated (numpy arrays included, via tracemalloc) while ``fn`` runs, above the start."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base


def _sync(device: str) -> None:
    if device != "cpu":
        import npgan.backend as B
        B.synchronize()
        try:
            import torch
            torch.cuda.synchronize()
        except Exception:
            pass


def _inner_calls(step: Callable[[], Any], device: str, min_time: float,
                 clock: Callable[[], float] = time.perf_counter) -> int:
    """Warm ``step`` up; how many calls make one timed sample last about ``min_time`` seconds."""
    for _ in range(3):
        step()
    _sync(device)
    t0 = clock()
    step()
    _sync(device)
    return max(1, int(min_time / max(clock() - t0, 1e-6)))


def _sample_ms(step: Callable[[], Any], inner: int, device: str,
               clock: Callable[[], float] = time.perf_counter) -> float:
    """Milliseconds per call, averaged over ``inner`` calls."""
    t0 = clock()
    for _ in range(inner):
        step()
    _sync(device)
    return (clock() - t0) / inner * 1e3


def time_ms(step: Callable[[], Any], repeat: int, device: str, min_time: float = 0.05) -> float:
    """Median milliseconds of one call of ``step`` (each timed sample averages enough calls to last ``min_time``)."""
    inner = _inner_calls(step, device, min_time)
    return statistics.median(_sample_ms(step, inner, device) for _ in range(repeat))


def time_pair_ms(step_a: Callable[[], Any], step_b: Callable[[], Any], repeat: int, device: str,
                 min_time: float = 0.05, settle: float = 0.3, warm: float = 0.2) -> tuple[float, float, float]:
    """Median milliseconds of ``step_a`` and of ``step_b``, and the median of their per-round ratios a/b.

    The two are timed in alternation, a b b a, a b b a, ... (``repeat`` samples each; :func:`time_rounds`), so
    that a machine whose speed drifts during the run (other tenants, clocks) weighs on both alike: each round's
    ratio compares samples taken within a second of each other.
    """
    a, b = time_rounds([step_a, step_b], repeat, device, min_time, settle, warm=warm)
    ratios = [x / y for x, y in zip(a, b)]
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


def time_rounds(steps: list[Callable[[], Any]], repeat: int, device: str, min_time: float = 0.05,
                settle: float = 0.3, clock: Callable[[], float] = time.perf_counter,
                warm: float = 0.2) -> list[list[float]]:
    """``repeat`` rounds of one timed sample (milliseconds a call) of each step; the order is reversed every
    other round (a b c, c b a, ...). Returns the samples, one list per step, round by round.

    Before each sample the process sleeps ``settle`` seconds: OpenBLAS's and torch's worker threads spin for
    a while after their last task, and on a 2-core machine the other library's spinning threads would otherwise
    take cores from the one being timed (measured: torch's DCGAN step 86 → 140 ms right after npgan's without
    the pause). Then the step about to be timed runs untimed for ``warm`` seconds (at least once): it wakes
    that library's threads, warms the caches, and brings the cores back from their idle state, so that the
    sample times the steady state of a training loop, whose steps follow each other without a pause. One call
    was not enough: after 0.3 s asleep the cores of this project's 2-core VM take tens of milliseconds to come
    back to speed, and a library whose worker threads sleep between ops (npgan's) pays for it, one whose
    threads spin (torch's OpenMP) hardly. Measured (``python benchmarks/bench.py --only conv2d --threads 2``'s
    case, 7 rounds, quiet machine): npgan 20.1 ms a call against torch's 11.5 after one warming call, 14.9
    against 10.0 after 0.2 s of them, and the same 15-16 ms in a loop with no pause at all; on one thread
    the warming changes neither. ``clock``: the wall clock by default; ``time.thread_time`` times one-thread
    work by the CPU time of the calling thread, which other processes on a busy machine disturb far less (they
    still share caches and memory).
    """
    inner = [_inner_calls(s, device, min_time, clock) for s in steps]
    samples: list[list[float]] = [[] for _ in steps]
    order = list(range(len(steps)))
    for r in range(repeat):
        for k in (order if r % 2 == 0 else order[::-1]):
            if device == "cpu":
                time.sleep(settle)
            t0 = time.perf_counter()
            steps[k]()  # untimed: wakes this library's threads and cores, and warms the caches again
            _sync(device)
            while time.perf_counter() - t0 < warm:
                steps[k]()
                _sync(device)
            samples[k].append(_sample_ms(steps[k], inner[k], device, clock))
    return samples


def use_threads(n: int, torch: Any = None) -> None:
    """Run on ``n`` threads from now on: npgan's splits (``npgan.set_num_threads``), NumPy's BLAS (through
    threadpoolctl) and torch's intra-op threads. With n = 1 everything runs on one thread; without the BLAS limit
    npgan's unsplit products would still use the BLAS's own threads."""
    import npgan
    npgan.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=n, user_api="blas")
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        pass
    if torch is not None:
        torch.set_num_threads(n)


def load_cases() -> list[Case]:
    cases: list[Case] = []
    for f in sorted(HERE.glob("cases_*.py")):
        mod = importlib.import_module(f.stem)
        cases.extend(getattr(mod, "CASES", []))
    return cases


def thread_counts_of(text: str, prog: str) -> list[int] | None:
    """``--threads``' value ("2" or "1,2") as a list of positive counts; None after one error line on stderr."""
    try:
        counts = [int(t) for t in text.split(",")]
        if min(counts) < 1:
            raise ValueError
    except ValueError:
        print(f"{prog}: error: --threads must be positive integers separated by commas, got {text!r}",
              file=sys.stderr)
        return None
    return counts


def machine_line(torch: Any = None) -> str:
    """The CPU model, its SIMD flags, the BLAS (library, version, kernel, threads) and PyTorch's CPU capability:
    conv speed ratios move with these (AVX2 against AVX-512 changes PyTorch's by about 1.5x)."""
    model, flags = "?", []
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "?":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = sorted(v for v in value.split() if v.startswith(("avx", "fma", "amx")))
                    break
    except OSError:  # not Linux
        import platform
        model = platform.processor() or "?"
    blas = "?"
    try:
        import numpy  # noqa: F401  (loads the BLAS, so that threadpoolctl sees it)
        from threadpoolctl import threadpool_info
        blas = ", ".join(f"{i.get('internal_api')} {i.get('version')} kernel {i.get('architecture')} "
                         f"x{i.get('num_threads')}" for i in threadpool_info() if i.get("user_api") == "blas")
    except Exception:  # threadpoolctl missing
        pass
    cap = ""
    if torch is not None:
        try:
            cap = f" | torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
        except Exception:
            pass
    return f"cpu {model} ({os.cpu_count()} logical) | flags {' '.join(flags) or '-'} | BLAS {blas or '?'}{cap}"


def run_case(case: Case, args: Any, torch: Any) -> dict[str, Any]:
    """Time one case (npgan against torch in alternation) under the current threads: its row of results."""
    import npgan
    npgan.manual_seed(0)
    built = case.npgan(args.device)
    step, notes = (built if isinstance(built, tuple) else (built, {}))
    if args.device != "cpu":  # tracemalloc sees host memory only
        notes = {k: v for k, v in notes.items() if not k.startswith("peak")}
    t_ms = ratio = None
    t_step = None
    if torch is not None and case.torch is not None:
        torch.manual_seed(0)
        try:
            t_step = case.torch(args.device)
        except (RuntimeError, AssertionError) as exc:  # e.g. a torch built without CUDA
            notes["torch"] = f"failed ({str(exc).splitlines()[0][:60]})"
    if t_step is not None:
        n_ms, t_ms, ratio = time_pair_ms(step, t_step, args.repeat, args.device, warm=args.warm)
    else:
        n_ms = time_ms(step, args.repeat, args.device)
    del built, step, t_step
    row: dict[str, Any] = {"npgan_ms": n_ms, "torch_ms": t_ms, "ratio": ratio, **notes}
    if args.compare_cpu:
        npgan.set_device("cpu")
        try:
            npgan.manual_seed(0)
            built = case.npgan("cpu")
            c_ms = time_ms(built[0] if isinstance(built, tuple) else built, args.cpu_repeat, "cpu")
            del built
        finally:
            npgan.set_device(args.device)
        row.update(npgan_cpu_ms=c_ms, cpu_to_gpu_speedup=c_ms / n_ms if c_ms else None)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--warm", type=float, default=0.2, metavar="SECONDS",
                    help="untimed calls for this long before each timed sample (0: one call; see time_rounds)")
    ap.add_argument("--json", default=None, help="also write {case: {npgan_ms, torch_ms, ratio}} here")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--threads", default=str(os.cpu_count() or 1),
                    help="thread count, or several separated by commas (each case runs at each)")
    ap.add_argument("--compare-cpu", action="store_true",
                    help="with --device gpu: also time npgan on the CPU and print the CPU -> GPU speed-up")
    ap.add_argument("--cpu-repeat", type=int, default=3, help="timed samples of the CPU runs of --compare-cpu")
    args = ap.parse_args(argv)
    if args.compare_cpu and args.device != "gpu":
        ap.error("--compare-cpu needs --device gpu")

    thread_counts = thread_counts_of(args.threads, "bench.py")
    if thread_counts is None:
        return 2

    import npgan
    try:
        import torch
    except ImportError:
        torch = None
        print("torch is not installed: only npgan's times are shown (pip install torch)")
    if args.device == "gpu":
        try:
            npgan.set_device("gpu")
        except npgan.DeviceError as exc:
            print(f"bench.py: error: {exc}", file=sys.stderr)
            return 2

    results: dict[str, dict[str, Any]] = {}
    print(f"npgan {npgan.__version__} | torch {getattr(torch, '__version__', '-')} | device {args.device} | "
          f"threads {args.threads} | median of {args.repeat}")
    print(machine_line(torch))
    cmp = args.compare_cpu
    print(f"{'case':<52} {'thr':>3} {'npgan ms':>10} {'torch ms':>10} {'ratio':>7}"
          + (f" {'cpu ms':>10} {'speed-up':>8}" if cmp else "") + "  notes")
    for threads in thread_counts:
        use_threads(threads, torch)
        for case in load_cases():
            if args.only not in case.name or args.device not in case.devices:
                continue
            row = run_case(case, args, torch)
            key = case.name if len(thread_counts) == 1 else f"{case.name} | threads {threads}"
            results[key] = {"threads": threads, **row}
            notes = {k: v for k, v in row.items() if k not in ("npgan_ms", "torch_ms", "ratio", "npgan_cpu_ms",
                                                               "cpu_to_gpu_speedup")}
            note = " ".join(f"{k}={v}" for k, v in notes.items())
            nan = float("nan")
            c_ms, speedup = row.get("npgan_cpu_ms"), row.get("cpu_to_gpu_speedup")
            extra = f" {c_ms if c_ms is not None else nan:>10.3f} {speedup if speedup else nan:>7.1f}x" if cmp else ""
            t_ms, ratio = row["torch_ms"], row["ratio"]
            print(f"{case.name:<52} {threads:>3} {row['npgan_ms']:>10.3f} {t_ms if t_ms is not None else nan:>10.3f} "
                  f"{ratio if ratio is not None else nan:>7.2f}{extra}  {note}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
