"""NumPy's BLAS against PyTorch's on the GEMM shapes of bench.py's conv2d case, one thread, GFLOP/s.

    python benchmarks/studies/gemm_rates.py [--rounds 5]

The conv2d case (64 images 64×14×14 → 128×7×7, k4 s2 p1) takes these products in npgan: the forward col · W₂ᵀ
(3136 × 1024 · 1024 × 128), the weight gradient gy₂ᵀ · col (128 × 3136 · 3136 × 1024), and the input gradient
gy₂ · W₂ (3136 × 128 · 128 × 1024), which the phase blocks take as four products 128 → 256 wide, over the whole
batch or over groups of 8 or 4 images. Each shape is timed with ``numpy.matmul`` (OpenBLAS through NumPy) and
``torch.matmul`` (PyTorch's own BLAS) on float32 operands, in alternation; best of ``--rounds`` samples each.
The ratio of the two is the part of npgan's distance to PyTorch that no change around the GEMMs can remove. A
study, not a test; docs/speed.md quotes it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # bench.py

from bench import machine_line  # noqa: E402

SHAPES = [(3136, 1024, 128, "forward col · W₂ᵀ"), (128, 3136, 1024, "weight gradient gy₂ᵀ · col"),
          (3136, 128, 1024, "input gradient gy₂ · W₂, whole"), (3136, 128, 256, "one phase block, whole batch"),
          (392, 128, 256, "one phase block, 8 images"), (196, 128, 256, "one phase block, 4 images")]


def best_seconds(fn, rounds: int, calls: int = 10) -> float:
    fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits
    threadpool_limits(1, user_api="blas")
    torch.set_num_threads(1)
    print(machine_line(torch))
    print(f"{'product':34s} {'M':>5s} {'K':>5s} {'N':>5s}  numpy GFLOP/s  torch GFLOP/s  numpy/torch time")
    rng = np.random.default_rng(0)
    for M, K, N, name in SHAPES:
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((K, N)).astype(np.float32)
        out = np.empty((M, N), np.float32)
        ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.empty(M, N)
        t_np, t_torch = [], []
        for _ in range(2):  # alternation: np, torch, np, torch
            t_np.append(best_seconds(lambda a=a, b=b, out=out: np.matmul(a, b, out=out), args.rounds))
            t_torch.append(best_seconds(lambda ta=ta, tb=tb, tout=tout: torch.matmul(ta, tb, out=tout),
                                        args.rounds))
        flop = 2 * M * K * N
        n, t = min(t_np), min(t_torch)
        print(f"{name:34s} {M:5d} {K:5d} {N:5d}  {flop / n / 1e9:13.1f}  {flop / t / 1e9:13.1f}  {n / t:16.2f}")


if __name__ == "__main__":
    main()
