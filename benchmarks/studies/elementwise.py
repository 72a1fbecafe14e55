"""The small measurements behind choices in functional.py, kde.py and ops.py (see benchmarks/README.md).

    OPENBLAS_NUM_THREADS=1 python benchmarks/studies/elementwise.py [--rounds 15]

Each pair runs in alternating rounds (this machine's speed drifts); the line gives both medians and the
median of the per-round ratios:
1. LeakyReLU at (64, 64, 14, 14) float32, a = 0.2: where() on the random mask [x > 0] against the branch-free
   forms npgan uses (y = max(x, a·x); gx = gy·f, f = [x > 0]·(1 − a) + a), and npgan's fwd+bwd as a whole.
2. exp of float32 numbers whose results are denormal (t ≈ −95) against normal ones (t ≈ −50): why the KDE
   entropy clamps its exponents at −80.
3. a @ a.T for a thin a (n = 512, d = 2), which NumPy sends to BLAS syrk, against a @ (a transposed copy), a
   plain gemm: why _sq_dists makes the copy.
4. x − μ per channel at (64, 64, 14, 14): μ[:, None] (NumPy loops over N·C rows of 196) against μ broadcast to
   a contiguous (C, 196) block (ops.per_channel_operand).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))  # the checkout
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # bench.py, cases_*.py
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench import machine_line  # noqa: E402
from threads import median_ms  # noqa: E402

import npgan  # noqa: E402
import npgan.functional as F  # noqa: E402
from npgan.backend import np  # noqa: E402


def pairs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 64, 14, 14)).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    a = np.float32(0.2)
    pos = x > 0
    t = npgan.Tensor(x, requires_grad=True)

    def lrelu_step():
        F.leaky_relu(t, 0.2).backward(gy)
        t.grad = None

    def factor():
        f = pos.astype(np.float32)
        f *= np.float32(1) - a
        f += a
        f *= gy
        return f

    normal = np.full(1 << 20, -50.0, np.float32)
    denormal = np.full(1 << 20, -95.0, np.float32)
    thin = rng.standard_normal((512, 2))
    mu = x.mean(axis=(0, 2, 3))
    x3 = x.reshape(64, 64, 196)
    block = np.ascontiguousarray(np.broadcast_to(mu[:, None], (64, 196)))
    return [
        ("LeakyReLU forward: where(x > 0, x, a·x) vs max(x, a·x)",
         lambda: np.where(x > 0, x, x * a), lambda: np.maximum(x, x * a)),
        ("LeakyReLU backward: where(mask, gy, a·gy) vs gy·([x > 0]·(1 − a) + a)",
         lambda: np.where(pos, gy, gy * a), factor),
        ("LeakyReLU fwd+bwd: npgan F.leaky_relu vs the where() pair",
         lrelu_step, lambda: (np.where(x > 0, x, x * a), np.where(pos, gy, gy * a))),
        ("exp, 1M float32: denormal results (t = −95) vs normal (t = −50)",
         lambda: np.exp(denormal), lambda: np.exp(normal)),
        ("thin a (512, 2): a @ a.T (syrk) vs a @ ascontiguousarray(a.T) (gemm)",
         lambda: thin @ thin.T, lambda: thin @ np.ascontiguousarray(thin.T)),
        ("x − μ per channel: μ[:, None] vs a contiguous (C, M) block",
         lambda: x3 - mu[:, None], lambda: x3 - block),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args(argv)
    print(machine_line())  # the CPU, its SIMD flags and the BLAS kernel beside the figures
    for name, first, second in pairs():
        ta, tb = [], []
        for _ in range(args.rounds):
            ta.append(median_ms(first, 5))
            tb.append(median_ms(second, 5))
        ratio = statistics.median(x / y for x, y in zip(ta, tb))
        print(f"{name}\n    {statistics.median(ta):8.3f} ms vs {statistics.median(tb):8.3f} ms   ratio {ratio:5.1f}")


if __name__ == "__main__":
    main()
