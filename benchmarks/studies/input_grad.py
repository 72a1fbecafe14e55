"""The routes of a convolution's input gradient (the transposed convolution's forward), timed side by side.

    python benchmarks/studies/input_grad.py [--rounds 8] [--threads 2]

For the conv2d case of bench.py (64 images 64×14×14 → 128×7×7, k4 s2 p1, gy channels-last as a layer hands it
on), gx = col2im(gy₂ · W₂) by:
  col2im                  one GEMM into the whole column matrix, then one strided add per kernel offset
  phase, one GEMM         the same GEMM, then one update per phase block (u, v)
  phase, per block        one GEMM per phase block, the whole batch at once
  phase, per block, groups  the default: the same in groups of images of about CACHE_BLOCK_BYTES
each run over the batch split as the Conv2d Function splits it (``parallel_chunks``), taken in turn round after
round; medians over rounds (this machine's speed drifts within a minute). The figures quoted in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))  # the checkout
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # bench.py, cases_*.py

from bench import machine_line  # noqa: E402
from threads import median_ms  # noqa: E402

from npgan import conv_fast, parallel  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print(machine_line())  # the CPU, its SIMD flags and the BLAS kernel beside the figures
    import numpy as np  # benchmarks may use numpy directly; the package may not
    parallel.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    N, C, O, H = 64, 64, 128, 14
    out, g = (7, 7), conv_fast.Geometry((4, 4), (2, 2), (1, 1), (1, 1))
    w = rng.standard_normal((O, C, 4, 4)).astype(np.float32)
    gy = conv_fast.new_images(np, (N, O) + out, np.float32)
    gy[...] = rng.standard_normal(gy.shape)
    gx = conv_fast.new_images(np, (N, C, H, H), np.float32)
    phase = conv_fast.plan(w.shape, g, (H, H), out, w=w, blocks=True)
    assert phase.igrad == "phase"
    plans = {"col2im": (phase._replace(igrad="col2im", wop=conv_fast.weight_2d(w)), {}),
             "phase, one GEMM": (phase._replace(blocks=conv_fast.weight_2d(w)), {}),
             "phase, per block": (phase, {"CACHE_BLOCK_BYTES": 1 << 40}),
             "phase, per block, groups": (phase, {})}

    def run(pl, knobs):
        def chunk(lo, hi):
            conv_fast.input_grad(pl, gy[lo:hi], gx[lo:hi])

        def go():
            saved = {k: getattr(conv_fast, k) for k in knobs}
            for k, v in knobs.items():
                setattr(conv_fast, k, v)
            try:
                parallel.parallel_chunks(chunk, N, 1 << 30, np)
            finally:
                for k, v in saved.items():
                    setattr(conv_fast, k, v)
        return go

    ref = None
    res = {name: [] for name in plans}
    for _ in range(a.rounds):
        for name, (pl, knobs) in plans.items():
            res[name].append(median_ms(run(pl, knobs), 9))
            if ref is None:
                ref = gx.copy()
            else:  # every route gives the same gradient (up to float32 summation order)
                np.testing.assert_allclose(gx, ref, rtol=1e-4, atol=1e-4)
    print(f"input gradient of conv2d 64x64x14x14 64->128 k4s2p1, {a.threads} threads "
          f"(median of {a.rounds} rounds):")
    for name, v in res.items():
        print(f"  {name:<25} {statistics.median(v):6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
