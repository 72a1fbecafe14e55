"""npgan.parallel: chunking, the thread pool, the BLAS held to one thread, and split ops equal whole ones."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from conv_problems import conv_arrays, geometry, leaf_tensors, np_conv
from helpers import split_ops
from hypothesis import given, settings
from hypothesis import strategies as st

import npgan
from npgan import parallel


@given(n=st.integers(0, 200), parts=st.integers(1, 16))
def test_chunk_bounds_cover_the_range_in_order_and_evenly(n, parts):
    b = parallel.chunk_bounds(n, parts)
    assert len(b) == max(1, min(parts, n))
    assert b[0][0] == 0 and b[-1][1] == n
    assert all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1))
    sizes = [hi - lo for lo, hi in b]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True, None])
def test_set_num_threads_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=r"positive integer, got " + repr(bad).replace(".", r"\.")):
        npgan.set_num_threads(bad)


def _blas_threads():
    return [lc.get_num_threads() for lc in parallel._blas_controllers()]


def test_parallel_chunks_runs_on_threads_with_blas_held_to_one(threads):
    if not parallel._blas_controllers():
        pytest.skip("no BLAS whose thread count threadpoolctl can set: npgan does not split")
    before = _blas_threads()
    seen = []

    def fn(lo, hi):
        seen.append((lo, hi, threading.get_ident(), _blas_threads()))
        return lo * 1000 + hi

    out = parallel.parallel_chunks(fn, 7, work=1)
    bounds = parallel.chunk_bounds(7, threads)
    assert out == [lo * 1000 + hi for lo, hi in bounds]  # results in chunk order
    assert sorted(s[:2] for s in seen) == bounds
    if threads > 1:
        main = threading.get_ident()
        assert [s[2] for s in seen if s[:2] == bounds[-1]] == [main]  # the caller runs the last chunk,
        assert all(s[2] != main for s in seen if s[:2] != bounds[-1])  # the pool's threads the others
        assert all(all(k == 1 for k in s[3]) for s in seen)
    assert _blas_threads() == before  # restored


def test_small_ops_gpu_and_nested_calls_run_in_one_piece(threads, monkeypatch):
    calls = []
    before = _blas_threads()
    fn = lambda lo, hi: calls.append((lo, hi, _blas_threads()))  # noqa: E731
    small = parallel.MIN_WORK - 1 if parallel.MIN_WORK else -1

    parallel.parallel_chunks(fn, 8, work=small)  # small ops hold the BLAS whenever npgan splits: before a split,
    parallel.parallel_chunks(fn, 8, work=10**9)
    parallel.parallel_chunks(fn, 8, work=small)  # after one, and however long after (no clock in the rule)
    parallel.parallel_chunks(fn, 1, work=10**9)
    parallel.parallel_chunks(fn, 8, work=10**9, xp=object())  # not NumPy: the GPU path
    one = [c for c in calls if c[:2] in ((0, 8), (0, 1))]
    if threads == 1:
        assert [c[2] for c in one] == [before] * 5
    else:
        assert [c[:2] for c in one] == [(0, 8), (0, 8), (0, 1), (0, 8)]
        assert [c[2] for c in one] == [[1] * len(before), [1] * len(before), [1] * len(before), before]
    assert _blas_threads() == before

    monkeypatch.setattr(parallel, "HOLD_BLAS_IN_SMALL_OPS", False)
    calls.clear()
    parallel.parallel_chunks(fn, 8, work=small)
    assert calls == [(0, 8, before)]

    inner = []
    parallel.parallel_chunks(lambda lo, hi: inner.append(parallel.parallel_chunks(lambda a, b: (a, b), 5, 10**9)),
                             4, work=10**9)
    assert inner and all(r == [(0, 5)] for r in inner)


def test_an_exception_in_a_chunk_propagates_after_every_chunk_finished():
    if not parallel._blas_controllers():
        pytest.skip("no BLAS whose thread count threadpoolctl can set: npgan does not split")
    done = []
    before = _blas_threads()
    # events, not a sleep: chunk 1 (a pool thread) finishes only after chunk 0 has raised and chunk 2 (run by
    # the caller) has returned, so it is the last chunk to end; an early propagation would miss it in ``done``
    raised, last_returned = threading.Event(), threading.Event()

    def fn(lo, hi):
        if lo == 0:
            raised.set()
            raise RuntimeError(f"chunk {lo}:{hi} failed")
        if lo == 1:
            assert raised.wait(900) and last_returned.wait(900)  # hang guards
        done.append(lo)
        if lo == 2:
            last_returned.set()

    with split_ops(3), pytest.raises(RuntimeError, match="chunk 0:"):
        parallel.parallel_chunks(fn, 3, work=10**9)
    assert sorted(done) == [1, 2]
    assert _blas_threads() == before



def test_an_op_with_a_thin_product_runs_in_one_piece(monkeypatch):
    """Many elements but few multiply-adds (``macs`` below MIN_MACS): one piece; at MIN_MACS: split."""
    if not parallel._blas_controllers():
        pytest.skip("no BLAS whose thread count threadpoolctl can set: npgan does not split")
    monkeypatch.setattr(parallel, "MIN_MACS", 1000)
    saved = parallel.get_num_threads()
    parallel.set_num_threads(2)
    try:
        big = parallel.MIN_WORK + 1
        assert parallel.parallel_chunks(lambda lo, hi: (lo, hi), 8, work=big, macs=999) == [(0, 8)]
        assert parallel.parallel_chunks(lambda lo, hi: (lo, hi), 8, work=big, macs=1000) == [(0, 4), (4, 8)]
        assert parallel.parallel_chunks(lambda lo, hi: (lo, hi), 8, work=big) == [(0, 4), (4, 8)]  # not given
    finally:
        parallel.set_num_threads(saved)


_CHILD = """
import os, sys
import npgan
from npgan import parallel
parallel.set_num_threads(2)
parallel.MIN_WORK = 0
run = lambda: parallel.parallel_chunks(lambda lo, hi: hi - lo, 4, 1)
assert run() == [2, 2]  # the parent's pool is running
pid = os.fork()
if pid == 0:
    os._exit(0 if run() == [2, 2] else 3)  # the child has no pool threads: a new pool
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_pool():
    r = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=900)  # a hang guard
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr


def test_default_threads_follow_the_environment():  # timeout=900: hang guards, not deadlines
    code = "import npgan; print(npgan.get_num_threads())"
    env = dict(os.environ, NPGAN_NUM_THREADS="3")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert r.stdout.strip() == "3", r.stderr
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    env.pop("NPGAN_NUM_THREADS", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert r.stdout.strip() == "1", r.stderr
    env = dict(os.environ, NPGAN_NUM_THREADS="many")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode != 0 and "NPGAN_NUM_THREADS must be a positive integer, got 'many'" in r.stderr


def test_elementwise_bounds_split_only_large_cpu_passes(threads, monkeypatch):
    """A pass without a matrix product splits from ELEMENTWISE_MIN_WORK elements on the CPU, into the thread
    count's chunks; run_bounds runs them (on threads when several) and returns their results in order."""
    monkeypatch.setattr(parallel, "ELEMENTWISE_MIN_WORK", 100)
    assert parallel.elementwise_bounds(8, 99) == [(0, 8)]
    assert parallel.elementwise_bounds(8, 100, xp=object()) == [(0, 8)]  # not NumPy: the GPU path
    assert parallel.elementwise_bounds(1, 10**9) == [(0, 1)]
    bounds = parallel.elementwise_bounds(8, 100)
    assert bounds == parallel.chunk_bounds(8, threads)
    seen = []
    out = parallel.run_bounds(lambda lo, hi: seen.append((lo, threading.get_ident())) or (lo, hi), bounds)
    assert out == bounds
    idents = {lo: ident for lo, ident in seen}
    main = threading.get_ident()
    assert idents[bounds[-1][0]] == main
    if threads > 1 and parallel._blas_controllers():
        assert all(idents[lo] != main for lo, _ in bounds[:-1])
    inner = parallel.run_bounds(lambda lo, hi: parallel.elementwise_bounds(8, 10**9), bounds)
    assert all(b == [(0, 8)] for b in inner)  # no nesting inside a chunk


# ----------------------------------------------------------------------------- split ops = whole ops
def _run(g, transposed, threads):
    with split_ops(threads):
        ts = leaf_tensors(conv_arrays(g, transposed))
        y = np_conv(g, transposed)(*ts)
        y.backward(np.random.default_rng(g["seed"]).standard_normal(y.shape))
        return [y.numpy()] + [np.asarray(t.grad) for t in ts]


@pytest.mark.parametrize("transposed", [False, True])
@settings(max_examples=20)
@given(data=st.data(), threads=st.integers(2, 5))
def test_split_conv_equals_whole_conv(transposed, data, threads):
    """Each chunk writes its images' rows of y, gx and col; gw, gb are the chunks' sums: same numbers
    (float64, up to the order of the sums) for any batch size against any number of chunks."""
    g = data.draw(geometry(transposed=transposed))
    g["N"] = data.draw(st.integers(1, 7))
    whole, split = _run(g, transposed, 1), _run(g, transposed, threads)
    for a, b in zip(whole, split):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_conv_layers_are_split_by_image(monkeypatch):
    """The conv Functions hand their batch to parallel_chunks (forward and backward) with the multiply-adds of
    the layer's product, and the chunks differ."""
    calls = []

    def recording(fn, n, work, xp=None, macs=None):
        calls.append((n, macs))
        return [fn(lo, hi) for lo, hi in parallel.chunk_bounds(n, 2)]  # two chunks, one after the other

    for transposed in (False, True):
        g = dict(N=5, C=3, O=2, k=(4, 4), s=(2, 2), p=(1, 1), d=(1, 1), op=(0, 0), HW=(6, 6), bias=True, seed=1)
        monkeypatch.setattr(parallel, "parallel_chunks", recording)
        split = _run(g, transposed, 1)
        monkeypatch.undo()
        whole = _run(g, transposed, 1)
        for a, b in zip(whole, split):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    # 5 images, 3×3 positions of a 4×4 kernel over 3 channels, 2 filters: conv_w's product both ways, and the
    # transposed layer's (its input 6×6 is conv_w's output, 3 → 2 channels read as 2 × (3·4·4))
    assert calls == [(5, 5 * 9 * 48 * 2)] * 2 + [(5, 5 * 36 * 2 * 48)] * 2



# ----------------------------------------------------------------------------- BLAS threads that fit the work
def test_gemm_work_is_the_largest_dense_product():
    from npgan import nn
    mlp = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 40), nn.Linear(40, 1))
    assert parallel.gemm_work([mlp], 8) == 8 * 16 * 40
    assert parallel.gemm_work([mlp, nn.Linear(50, 50)], 8) == 8 * 50 * 50
    assert parallel.gemm_work([nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8)], 64) == 0  # convolutions split instead


@pytest.mark.parametrize("work_vs_threshold", [-1, 0])
def test_fit_blas_holds_the_blas_below_the_threshold_only(work_vs_threshold):
    if not parallel._blas_controllers():
        pytest.skip("no BLAS whose thread count threadpoolctl can set")
    before = _blas_threads()
    with parallel.fit_blas(parallel.GEMM_MIN_WORK + work_vs_threshold):
        inside = _blas_threads()
        with parallel.fit_blas(0):  # nests
            assert _blas_threads() == [1] * len(before)
        assert _blas_threads() == inside
    assert inside == ([1] * len(before) if work_vs_threshold < 0 else before)
    assert _blas_threads() == before


def _probe_trainer(batch, hidden, seen):
    """A small 2-D GAN whose D records the BLAS threads it runs under."""
    from npgan import data, nn, optim
    from npgan.gan import TrainConfig, Trainer

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(_blas_threads())
            return x

    npgan.manual_seed(0)
    G = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))
    D = nn.Sequential(Probe(), nn.Linear(2, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                      nn.LeakyReLU(0.2), nn.Linear(hidden, 1))
    cfg = TrainConfig(steps=4, batch_size=batch, z_dim=4, lr=1e-3, entropy_weight=0.1, bandwidth=0.2)
    real = lambda step: data.ring8(batch)  # noqa: E731  (npgan's seeded generator)
    return Trainer(G, D, optim.Adam(G.parameters(), lr=1e-3), optim.Adam(D.parameters(), lr=1e-3), real, cfg), G, D


def test_training_steps_hold_the_blas_for_small_models_with_the_same_results(monkeypatch):
    """The Trainer wraps each step in fit_blas: below GEMM_MIN_WORK the BLAS runs one thread, at or above it
    keeps its own. The weights after a few float64 steps agree on both sides of the threshold up to the order of
    the BLAS's sums (OpenBLAS on two threads may add in another order), and each side repeats bit for bit."""
    if not parallel._blas_controllers():
        pytest.skip("no BLAS whose thread count threadpoolctl can set")
    before = _blas_threads()
    results = {}
    saved_dtype = npgan.get_default_dtype()
    npgan.set_default_dtype("float64")
    try:
        for side, threshold in (("below", 10**15), ("above", 1), ("below again", 10**15)):
            monkeypatch.setattr(parallel, "GEMM_MIN_WORK", threshold)
            seen = []
            tr, G, D = _probe_trainer(256, 64, seen)
            for _ in range(4):
                tr.step()
            held = side.startswith("below")
            assert seen and all(s == ([1] * len(before) if held else before) for s in seen), (side, seen)
            results[side] = [p.numpy().copy() for p in list(G.parameters()) + list(D.parameters())]
    finally:
        npgan.set_default_dtype(saved_dtype)
    assert _blas_threads() == before
    for a, b, c in zip(results["below"], results["above"], results["below again"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(a, c)


def test_fit_blas_keeps_npgans_own_thread_count():
    """npgan's default thread count follows the BLAS's; entering a hold first must not make it 1."""
    if not parallel._blas_controllers():
        pytest.skip("no BLAS whose thread count threadpoolctl can set")
    code = ("import npgan\nfrom npgan import parallel\nwith parallel.fit_blas(0):\n"
            "    print(parallel.get_num_threads())\n")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2")
    env.pop("NPGAN_NUM_THREADS", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=900)  # a hang guard
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(min(2, parallel._available_cores())), r.stdout


@pytest.mark.parametrize("eps, wd", [(1e-8, 0.0), (0.0, 0.1)])
def test_adam_split_over_threads_is_the_same_step_bit_for_bit(eps, wd):
    """Adam updates a large parameter in contiguous runs on several threads: every element is computed as in one
    piece, so three steps on 3 threads equal three steps on 1 exactly (a transposed, non-contiguous parameter
    and a 0-d one run in one piece)."""
    from npgan import optim

    def run(threads):
        rng = np.random.default_rng(5)
        params = [npgan.Tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True)
                  for s in [(7, 5, 3), (11,), ()]]
        params.append(npgan.Tensor(rng.standard_normal((6, 4)).astype(np.float32).T, requires_grad=True))
        opt = optim.Adam(params, lr=0.01, eps=eps, weight_decay=wd)
        with split_ops(threads):
            for _ in range(3):
                for p in params:
                    p.grad = rng.standard_normal(p.shape).astype(np.float32)
                    if eps == 0:
                        p.grad.reshape(-1)[:2] = 0  # zero gradients: the eps = 0 division guard
                opt.step()
        return [p.data.copy() for p in params]

    for a, b in zip(run(1), run(3)):
        np.testing.assert_array_equal(a, b)
