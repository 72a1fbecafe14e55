"""Soak test: a long run keeps its memory flat (not a test; run it by hand, it takes minutes).

    OPENBLAS_NUM_THREADS=1 python benchmarks/studies/soak_memory.py [--steps 20000] [--batch-size 512]
    python benchmarks/studies/soak_memory.py --preset digits-dcgan --batch-size 64 --steps 5000  # convs split

Trains the ring8 preset (or ``--preset``) through :meth:`npgan.run.experiment.Run.train` (history, checkpoints
every 1000 steps, the divergence guard: everything a real run does) in a temporary directory and prints, at a
few steps, the resident set size now (/proc/self/statm) and its peak so far (getrusage ru_maxrss), plus the
growth between the first and the last of them. A leak of one float per step would show up as tens of kB; a
leak of one array per step as megabytes.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))  # the checkout
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # bench.py, cases_*.py

from npgan.run.experiment import Run  # noqa: E402
from npgan.run.presets import make_config  # noqa: E402


def rss_now() -> int:
    """Resident set size in bytes (Linux: /proc/self/statm; elsewhere the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        return rss_peak()


def rss_peak() -> int:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * (1 if sys.platform == "darwin" else 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="ring8")
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--report", type=int, nargs="*", default=[1000, 2000, 5000, 10000, 15000, 20000])
    a = ap.parse_args()

    cfg = make_config(a.preset)
    cfg.train.steps, cfg.train.batch_size = a.steps, a.batch_size
    cfg.log_every, cfg.checkpoint_every, cfg.sample_every, cfg.eval_samples = 100, 1000, 10**9, 2500
    marks = sorted(s for s in a.report if s <= a.steps)
    seen: dict[int, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory() as d:
        run = Run.create(cfg, os.path.join(d, "soak"))
        step = run.trainer.step

        def counted_step() -> bool:
            ok = step()
            s = run.trainer.step_count
            if s in marks:
                seen[s] = (rss_now(), rss_peak())
                print(f"step {s:>6}: RSS {seen[s][0] / 2**20:7.1f} MiB   peak RSS {seen[s][1] / 2**20:7.1f} MiB"
                      f"   ({time.perf_counter() - t0:6.1f} s)", flush=True)
            return ok
        run.trainer.step = counted_step
        t0 = time.perf_counter()
        m = run.train(progress=False)
        quality = ", ".join(f"{k} {m[k]:.4g}" for k in ("modes", "hq", "classes_covered", "class_kl") if k in m)
        print(f"done: {run.trainer.step_count} steps in {time.perf_counter() - t0:.0f} s; {quality}; "
              f"peak RSS at exit {rss_peak() / 2**20:.1f} MiB")
    if len(marks) >= 2:
        (a0, p0), (a1, p1) = seen[marks[0]], seen[marks[-1]]
        print(f"growth from step {marks[0]} to {marks[-1]}: RSS {(a1 - a0) / 2**20:+.2f} MiB, "
              f"peak RSS {(p1 - p0) / 2**20:+.2f} MiB")


if __name__ == "__main__":
    main()
