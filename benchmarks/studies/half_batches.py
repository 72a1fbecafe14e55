"""Where the two-thread shapes-dcgan step loses its time: the step against its batch size, and two Python threads
each running whole steps on half the batch against npgan's split ops.

    python benchmarks/studies/half_batches.py [--rounds 3] [--steps 12]

1. **Batch size.** The preset's step (``Trainer.step()``, R1 on every 4th D step) at batch 4, 8, 16, 32 and 64,
   on one thread and on two: what a step costs whatever its batch (the graph, the optimizer, small ops) and what
   each image adds.
2. **Half batches on two threads.** Two trainers of the preset at batch 32, each stepping in its own Python thread
   with npgan's splits off (one thread each, BLAS held to one), released together at every step by a barrier,
   against one trainer at batch 64 with npgan's two-thread splits, and one trainer at batch 32 alone on one
   thread. The two half-batch trainers share nothing (no Allreduce, no synchronised batch norm): their time is
   a lower bound for data parallelism over threads in one process. NumPy releases the GIL in its loops and in
   the BLAS, so the two threads' array work overlaps; their Python (the graph, the op calls) does not.

Round after round every setting runs ``--steps`` steps after a warm-up, in alternation; medians over rounds.
A study, not a test: nothing here is asserted. benchmarks/README.md ("Convolutions and threads") quotes it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))  # the checkout
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # bench.py, shapes_steps.py

from bench import machine_line, use_threads  # noqa: E402
from shapes_steps import trainer  # noqa: E402


def ms_per_step(step, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps * 1e3


def batch_sizes(threads: int, rounds: int, steps: int) -> dict[int, float]:
    use_threads(threads)
    trainers = {b: trainer({}, {"batch_size": b}) for b in (4, 8, 16, 32, 64)}
    for t in trainers.values():
        ms_per_step(t.step, 4)
    times: dict[int, list[float]] = {b: [] for b in trainers}
    for _ in range(rounds):
        for b, t in trainers.items():
            ms_per_step(t.step, 2)
            times[b].append(ms_per_step(t.step, steps))
    return {b: statistics.median(v) for b, v in times.items()}


def half_batches(rounds: int, steps: int) -> dict[str, float]:
    use_threads(1)
    halves = [trainer({}, {"batch_size": 32}) for _ in range(2)]
    alone = trainer({}, {"batch_size": 32})
    whole = trainer({}, {})

    def pair(n: int) -> float:
        barrier = threading.Barrier(2)

        def run(t):
            for _ in range(n):
                barrier.wait()
                t.step()

        other = threading.Thread(target=run, args=(halves[0],))
        t0 = time.perf_counter()
        other.start()
        run(halves[1])
        other.join()
        return (time.perf_counter() - t0) / n * 1e3

    def split(n: int) -> float:
        use_threads(2)
        try:
            return ms_per_step(whole.step, n)
        finally:
            use_threads(1)

    settings = {"two threads, each a whole step at batch 32 (no synchronisation)": pair,
                "one trainer at batch 64, npgan's splits on two threads": split,
                "one trainer at batch 32, one thread": lambda n: ms_per_step(alone.step, n)}
    for run in settings.values():
        run(4)
    times: dict[str, list[float]] = {k: [] for k in settings}
    for _ in range(rounds):
        for name, run in settings.items():
            run(2)
            times[name].append(run(steps))
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=12)
    args = p.parse_args(argv)
    print(machine_line())
    print("shapes-dcgan preset, ms a step (median of rounds)")
    for threads in (1, 2):
        row = batch_sizes(threads, args.rounds, args.steps)
        print(f"  {threads} thread(s), batch " + "  ".join(f"{b}: {ms:.1f}" for b, ms in row.items()))
    for name, ms in half_batches(args.rounds, args.steps).items():
        print(f"  {name}: {ms:.1f}")


if __name__ == "__main__":
    main()
