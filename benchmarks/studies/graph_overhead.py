"""The fixed cost of recording and back-propagating a graph, against a dense layer's real work.

    PYTHONPATH=CHECKOUT python benchmarks/studies/graph_overhead.py [--rounds 400]

Times two loops of ``y = Linear(x); y.sum().backward(); zero_grad()`` in one process: Linear 784→256 at batch
256 (the GEMMs dominate) and Linear 4→4 at batch 4 (only the per-Function bookkeeping is left). Run it with
PYTHONPATH set to two checkouts in alternation to see what a change to tensor.py costs per op.
"""

from __future__ import annotations

import argparse
import os
import sys

import npgan  # first, so that PYTHONPATH picks the checkout (bench.py puts this one's on sys.path)
from npgan import nn
from npgan.backend import np


def linear_step(n_in: int, n_out: int, batch: int):
    def make():
        npgan.manual_seed(0)
        lin = nn.Linear(n_in, n_out)
        x = npgan.tensor(np.random.default_rng(0).standard_normal((batch, n_in)).astype(np.float32))

        def step() -> None:
            lin(x).sum().backward()
            lin.zero_grad()
        return step
    return make


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=400)
    a = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # bench.py
    from bench import machine_line
    from threads import median_ms
    print(machine_line())
    big = median_ms(linear_step(784, 256, 256)(), a.rounds, warm=50)
    tiny = median_ms(linear_step(4, 4, 4)(), 5 * a.rounds, warm=200)
    print(f"npgan at {os.path.dirname(npgan.__file__)}: Linear 784->256, batch 256, forward + backward "
          f"{big:.3f} ms; Linear 4->4 graph {tiny * 1e3:.1f} us (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
