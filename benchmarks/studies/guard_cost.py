"""What the divergence guard costs (docs/reliability.md §1): one finiteness check against a ring8 training step.

    OPENBLAS_NUM_THREADS=1 python benchmarks/studies/guard_cost.py

The guard adds, per optimizer update, one add of two 0-d arrays, one ``isfinite`` and one ``bool()`` (the host
sync); this times that against a whole ring8 step at the preset's batch of 512.
"""

from __future__ import annotations

import os
import sys
import time
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))  # the checkout
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # bench.py, cases_*.py

import numpy as np  # noqa: E402
from bench import machine_line  # noqa: E402

from npgan.run.experiment import Run  # noqa: E402
from npgan.run.presets import make_config  # noqa: E402


def main() -> None:
    print(machine_line())  # the CPU, its SIMD flags and the BLAS kernel beside the figures
    a, b = np.asarray(1.5, dtype=np.float32), np.asarray(2.5, dtype=np.float32)
    n = 200_000
    check = min(timeit.repeat(lambda: bool(np.isfinite(a + b)), number=n, repeat=5)) / n
    run = Run(make_config("ring8"), "/nonexistent-never-written")
    for _ in range(50):
        run.trainer.step()
    steps = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(100):
            run.trainer.step()
        steps.append((time.perf_counter() - t0) / 100)
    step = sorted(steps)[2]
    per_step = check * (1 + run.cfg.train.d_steps)
    print(f"one check {check * 1e6:.2f} µs; {per_step * 1e6:.2f} µs per step (1 + d_steps checks); "
          f"ring8 step (batch {run.cfg.train.batch_size}) {step * 1e3:.2f} ms (median of 5 x 100): "
          f"{100 * per_step / step:.3f} %")


if __name__ == "__main__":
    main()
