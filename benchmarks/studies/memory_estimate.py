"""The memory check's estimate against tracemalloc's peak over a real first training step (docs/reliability.md §6).

    OPENBLAS_NUM_THREADS=1 python benchmarks/studies/memory_estimate.py

For each (preset, batch) it builds the run's parts as ``Run`` does (no directory is written), takes
:func:`npgan.run.memory.estimate_step_bytes` and the peak of Python-visible allocations (NumPy's arrays included)
during one ``Trainer.step``, and prints both and their ratio. tests/test_reliability.py asserts the ratio is
within a factor 3.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))  # the checkout
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # bench.py, cases_*.py

from npgan.run.experiment import Run  # noqa: E402
from npgan.run.memory import estimate_step_bytes, traced_peak  # noqa: E402
from npgan.run.presets import make_config  # noqa: E402

CASES = [("ring8", 512), ("digits-dcgan", 32), ("digits-dcgan", 64), ("digits-mlp", 64)]


def main() -> None:
    mib = 1 << 20
    for preset, batch in CASES:
        cfg = make_config(preset)
        cfg.train.batch_size = batch
        run = Run(cfg, "/nonexistent-never-written")
        est = estimate_step_bytes(run.G, run.D, cfg.train)
        peak = traced_peak(run.trainer.step)
        print(f"{preset:<13} batch {batch:>4}: estimate {est / mib:6.1f} MiB, peak {peak / mib:6.1f} MiB, "
              f"ratio {est / peak:.2f}")


if __name__ == "__main__":
    main()
