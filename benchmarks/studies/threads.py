"""How npgan's convolutions use threads, measured: the figures quoted in benchmarks/README.md and docs/speed.md.

    python benchmarks/studies/threads.py [--rounds 6] [--threads 2] [--only steps,floor,copies,handoff,exp,thin,adam]

1. DCGAN training steps (the 28×28 DCGAN of bench.py, and the 8×8 one of the digits-dcgan preset) under four
   settings, taken in turn round after round (this machine's speed drifts within a minute), medians over rounds:
     one piece        npgan.set_num_threads(1): nothing split, OpenBLAS uses its own threads
     default          ops of 64k elements and more split; after a split, small ops hold the BLAS to one thread
     small ops free   the same, but small ops always leave the BLAS its threads (HOLD_BLAS_IN_SMALL_OPS off)
     split from 512k  MIN_WORK 512k: only the 28×28 model's two largest convolutions split, none of the 8×8's
   and PyTorch's time for the same step, with the npgan/torch ratio of the default.
2. The floor: the three GEMMs of the conv2d case of bench.py (forward, input gradient, weight gradient) against
   PyTorch's whole conv2d forward + backward, on one thread and on --threads (the GEMMs split over the batch as
   Conv2d splits them, each with one BLAS thread).
3. A pass over memory (the conv2d case's im2col): one chunk alone, the whole batch in one thread, and split.
4. The cost of one parallel_chunks hand-off with nothing to do, in µs.
5. An elementwise pass (np.exp of float32) over 1 MB and over 16 MB: one thread, and split over --threads. Where a
   hand-off costs about 0.1 ms (a VM whose idle cores halt at once), the split gains little or loses at 1 MB and
   pays at 16 MB:
   why batch norm and the activations split only from 2 MB (``npgan/parallel.py``).
6. Thin products: shapes-dcgan's last D layer (64 images 96×4×4 → 1, 98k multiply-adds) and its first G layer
   (64×64×1×1 → 96×4×4 transposed, 6.3M), forward + backward, in one piece (one thread) and split over --threads
   with ``npgan.parallel.MIN_MACS`` lifted: why an op splits only from MIN_MACS multiply-adds.
7. An Adam step over parameters of the shapes of DCGAN 32×32's convolutions (3.6M numbers), in one piece and
   split over --threads (``optim._elementwise``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))  # the checkout
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # bench.py, cases_*.py

from bench import machine_line  # noqa: E402
from cases_conv import _dcgan28_leaky, dcgan_step_npgan, dcgan_step_torch  # noqa: E402

from npgan import parallel  # noqa: E402


def dcgan8(nn):
    """The digits-dcgan networks (8×8 images: kernel 2 where the 28×28 DCGAN has 7)."""
    G = nn.Sequential(
        nn.ConvTranspose2d(100, 128, 2, 1, 0, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
        nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 1, 4, 2, 1, bias=False), nn.Tanh())
    D = nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
        nn.Conv2d(128, 1, 2, 1, 0, bias=False), nn.Flatten())
    return G, D


def median_ms(fn, n, warm=2):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def settings(threads):
    """name -> (npgan threads, MIN_WORK, HOLD_BLAS_IN_SMALL_OPS)."""
    return {"one piece": (1, parallel.MIN_WORK, True), "default": (threads, parallel.MIN_WORK, True),
            "small ops free": (threads, parallel.MIN_WORK, False), "split from 512k": (threads, 1 << 19, True)}


def steps(rounds, threads, torch):
    torch.set_num_threads(threads)
    for label, build, shape, n in [("28x28", _dcgan28_leaky, (1, 28, 28), 4), ("8x8", dcgan8, (1, 8, 8), 30)]:
        ours, theirs = dcgan_step_npgan(build, shape, 64), dcgan_step_torch(build, shape, 64, "cpu")
        cfgs = settings(threads)
        res = {k: [] for k in cfgs}
        res["torch"] = []
        for _ in range(rounds):
            for name, (th, mw, hold) in cfgs.items():
                parallel.set_num_threads(th)
                parallel.MIN_WORK, parallel.HOLD_BLAS_IN_SMALL_OPS = mw, hold
                res[name].append(median_ms(ours, n))
            parallel.set_num_threads(threads)
            parallel.MIN_WORK, parallel.HOLD_BLAS_IN_SMALL_OPS = cfgs["default"][1], True
            time.sleep(0.3)  # let npgan's and OpenBLAS's threads settle before torch's run
            res["torch"].append(median_ms(theirs, n))
        med = {k: statistics.median(v) for k, v in res.items()}
        print(f"DCGAN {label} step, batch 64, {threads} threads (median of {rounds} rounds):")
        for k, v in med.items():
            print(f"  {k:<15} {v:8.1f} ms")
        ratios = [a / b for a, b in zip(res["default"], res["torch"])]
        print(f"  npgan (default) / torch, median of per-round ratios: {statistics.median(ratios):.2f}")


def floor(torch, np, threads, rounds):
    """The three GEMMs of the conv2d case against PyTorch's whole conv2d forward + backward, on one thread and on
    ``threads`` (the GEMMs then split over the batch as npgan's Conv2d splits them), in turn round after round."""
    rng = np.random.default_rng(0)
    col = rng.standard_normal((64 * 49, 1024)).astype(np.float32)
    w2 = rng.standard_normal((128, 1024)).astype(np.float32)
    gy2 = rng.standard_normal((64 * 49, 128)).astype(np.float32)
    y2, gcol = np.empty((64 * 49, 128), np.float32), np.empty((64 * 49, 1024), np.float32)

    def chunk(lo, hi):
        r = slice(lo * 49, hi * 49)
        np.matmul(col[r], w2.T, out=y2[r])
        np.matmul(gy2[r], w2, out=gcol[r])
        return gy2[r].T @ col[r]

    x = torch.randn(64, 64, 14, 14, requires_grad=True)
    w = torch.randn(128, 64, 4, 4, requires_grad=True)

    def conv():
        y = torch.nn.functional.conv2d(x, w, stride=2, padding=1)
        y.backward(y)

    print("conv2d 64x64x14x14 64->128 k4s2p1, npgan's three GEMMs (OpenBLAS) against PyTorch's whole forward + "
          f"backward (median of {rounds} rounds):")
    for th in sorted({1, threads}):
        parallel.set_num_threads(th)
        torch.set_num_threads(th)
        gemms = (lambda: parallel.parallel_chunks(chunk, 64, 1 << 30, np)) if th > 1 else (lambda: chunk(0, 64))
        g, t = [], []
        for _ in range(rounds):
            with parallel.fit_blas(0):  # one BLAS thread per chunk (th > 1) or for the whole (th = 1)
                g.append(median_ms(gemms, 10))
            time.sleep(0.3)
            t.append(median_ms(conv, 10))
        print(f"  {th} thread{'s' if th > 1 else ' '}: GEMMs {statistics.median(g):6.1f} ms   PyTorch "
              f"{statistics.median(t):6.1f} ms   ratio {statistics.median([a / b for a, b in zip(g, t)]):.2f}")
    parallel.set_num_threads(threads)
    torch.set_num_threads(threads)


def copies(np, threads, rounds):
    """im2col of the conv2d case, a pass over memory: on one chunk of the batch alone (its 6.4 MB of columns stay in
    the cache from one call to the next), on the whole batch in one thread (12.8 MB of columns, plus the padded
    input: more than the cache keeps), and on the whole batch split over ``threads`` as Conv2d runs it."""
    from npgan import conv_fast
    rng = np.random.default_rng(0)
    x = conv_fast.new_images(np, (64, 64, 14, 14), np.float32)  # channels-last, as a layer hands it on
    x[...] = rng.standard_normal(x.shape)
    col = np.empty((64 * 49, 1024), np.float32)
    g = conv_fast.Geometry((4, 4), (2, 2), (1, 1), (1, 1))
    pl = conv_fast.plan((128, 64, 4, 4), g, (14, 14), (7, 7))

    def chunk(lo, hi):
        conv_fast.columns(pl, x[lo:hi], dst=col[lo * 49:hi * 49])

    parallel.set_num_threads(threads)
    res: dict[str, list[float]] = {"one chunk alone": [], "whole, one thread": [], f"whole, {threads} threads": []}
    for _ in range(rounds):
        res["one chunk alone"].append(median_ms(lambda: chunk(0, 64 // threads), 20))
        res["whole, one thread"].append(median_ms(lambda: chunk(0, 64), 20))
        res[f"whole, {threads} threads"].append(median_ms(lambda: parallel.parallel_chunks(chunk, 64, 1 << 30, np), 20))
    print("im2col of the conv2d case (median of rounds): " +
          ", ".join(f"{k} {statistics.median(v):.2f} ms" for k, v in res.items()))


def handoff(threads):
    parallel.set_num_threads(threads)
    fn = lambda lo, hi: None  # noqa: E731
    us = median_ms(lambda: parallel.parallel_chunks(fn, 64, 10**9), 2000, warm=100) * 1e3
    print(f"parallel_chunks hand-off and completion, {threads} threads, nothing to do: {us:.0f} µs (median)")


def elementwise(np, threads, rounds):
    for mb in (1, 16):
        y = np.random.default_rng(0).random((64, mb << 12), dtype=np.float32)
        z = np.empty_like(y)

        def chunk(lo, hi, y=y, z=z):
            np.exp(y[lo:hi], out=z[lo:hi])

        res: dict[int, list[float]] = {1: [], threads: []}
        for _ in range(rounds):
            for t in res:
                parallel.set_num_threads(t)
                res[t].append(median_ms(lambda: parallel.parallel_chunks(chunk, 64, 1 << 30, np), 20))
        print(f"np.exp over {mb} MB (median of rounds): " +
              ", ".join(f"{t} thread{'s' * (t > 1)} {statistics.median(v):.2f} ms" for t, v in res.items()))


def thin(threads, rounds):
    import npgan
    from npgan import nn
    layers = {"last D layer, conv 96×4×4 → 1": (nn.Conv2d(96, 1, 4, 1, 0, bias=False), (64, 96, 4, 4)),
              "first G layer, convT 64×1×1 → 96×4×4": (nn.ConvTranspose2d(64, 96, 4, 1, 0, bias=False), (64, 64, 1, 1))}
    for name, (layer, shape) in layers.items():
        x = npgan.randn(*shape, requires_grad=True)

        def step(layer=layer, x=x):
            layer.zero_grad()
            x.grad = None
            layer(x).sum().backward()

        res: dict[str, list[float]] = {"one piece": [], f"split over {threads}": []}
        saved = parallel.MIN_MACS
        try:
            for _ in range(rounds):
                for k in res:
                    parallel.set_num_threads(1 if k == "one piece" else threads)
                    parallel.MIN_MACS = 0
                    res[k].append(median_ms(step, 200, warm=20))
        finally:
            parallel.MIN_MACS = saved
        print(f"{name}, forward + backward (median of rounds): " +
              ", ".join(f"{k} {statistics.median(v):.3f} ms" for k, v in res.items()))


def adam(np, threads, rounds):
    import npgan
    from npgan import optim
    rng = np.random.default_rng(0)
    shapes = [(512, 256, 4, 4), (256, 128, 4, 4), (128, 64, 4, 4), (100, 512, 4, 4), (64, 3, 4, 4)]
    params = [npgan.Tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True) for s in shapes]
    for p in params:
        p.grad = rng.standard_normal(p.shape).astype(np.float32)
    opt = optim.Adam(params, lr=1e-4)
    parallel.set_num_threads(threads)
    res: dict[str, list[float]] = {"one piece": [], f"split over {threads}": []}
    saved = parallel.ELEMENTWISE_MIN_WORK
    try:
        for _ in range(rounds):
            for k in res:
                parallel.ELEMENTWISE_MIN_WORK = 1 << 62 if k == "one piece" else saved
                res[k].append(median_ms(opt.step, 20))
    finally:
        parallel.ELEMENTWISE_MIN_WORK = saved
    print("Adam step, DCGAN 32×32's conv weights (median of rounds): " +
          ", ".join(f"{k} {statistics.median(v):.2f} ms" for k, v in res.items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="steps,floor,copies,handoff,exp,thin,adam",
                    help="the parts to run, comma-separated")
    a = ap.parse_args()
    parts = set(a.only.split(","))
    unknown = parts - {"steps", "floor", "copies", "handoff", "exp", "thin", "adam"}
    if unknown:
        ap.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}; the parts are steps, floor, copies, "
                 "handoff, exp, thin, adam")
    print(machine_line())  # the CPU, its SIMD flags and the BLAS kernel beside the figures
    try:
        import torch
    except ImportError:
        print("threads.py needs torch (pip install torch)", file=sys.stderr)
        return 2
    import numpy as np  # benchmarks may use numpy directly; the package may not
    if not parallel.blas_libraries():
        print("no BLAS whose thread count threadpoolctl can set: npgan does not split here", file=sys.stderr)
        return 2
    if "steps" in parts:
        steps(a.rounds, a.threads, torch)
    if "floor" in parts:
        floor(torch, np, a.threads, a.rounds)
    if "copies" in parts:
        copies(np, a.threads, a.rounds)
    if "handoff" in parts:
        handoff(a.threads)
    if "exp" in parts:
        elementwise(np, a.threads, a.rounds)
    if "thin" in parts:
        thin(a.threads, a.rounds)
    if "adam" in parts:
        adam(np, a.threads, a.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
