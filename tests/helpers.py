"""Test helpers: the PyTorch twin (skipped without torch), array comparison, a local HTTP server."""

from __future__ import annotations

import functools
import gc
import http.server
import threading
import tracemalloc
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import strategies as st

import npgan


def torch_or_skip():
    """The torch module, or skip the test with a reason."""
    return pytest.importorskip("torch", reason="PyTorch is not installed: parity tests need torch==2.13.0")


def to_np(x):
    """Host numpy array of an npgan tensor, a torch tensor, or an array."""
    if isinstance(x, npgan.Tensor):
        return x.numpy()
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return npgan.backend.to_numpy(x)  # a GPU array comes to the host only explicitly


def assert_close(a, b, rtol=1e-6, atol=1e-12, what=""):
    a, b = to_np(a), to_np(b)
    assert a.shape == b.shape, f"{what}: shapes differ {a.shape} vs {b.shape}"
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


def copy_state_to_torch(np_module, torch_module):
    """Load npgan weights into the torch twin (through state_dict, PyTorch's keys)."""
    torch = torch_or_skip()
    sd = {k: torch.from_numpy(np.array(npgan.backend.to_numpy(v))) for k, v in np_module.state_dict().items()}
    torch_module.load_state_dict(sd, strict=True)


def compare_module_grads(np_module, torch_module, rtol=1e-6, atol=1e-12):
    """Every parameter's gradient, by PyTorch's names."""
    tparams = dict(torch_module.named_parameters())
    for name, p in np_module.named_parameters():
        tp = tparams[name]
        assert (p.grad is None) == (tp.grad is None), f"gradient presence differs for {name}"
        if p.grad is not None:
            assert_close(p.grad, tp.grad, rtol, atol, what=f"grad of {name}")


def compare_penalty_grads(np_module, torch_module, rtol, atol, what=""):
    """Every parameter's gradient after a gradient penalty's backward, by PyTorch's names; a missing gradient
    counts as zeros (a bias before a piecewise-linear activation moves only its constant mask: no gradient,
    PyTorch: 0), and every weight gets a nonzero one. ``what`` prefixes the messages."""
    tparams = dict(torch_module.named_parameters())
    for name, p in np_module.named_parameters():
        ours = np.zeros(p.shape) if p.grad is None else p.grad
        theirs = tparams[name].grad
        theirs = np.zeros(p.shape) if theirs is None else theirs
        assert_close(ours, theirs, rtol=rtol, atol=atol, what=f"{what}gradient of {name}")
        if name.endswith("weight"):
            assert np.abs(ours).max() > 0, f"{what}no gradient for {name}"


def busy_bn_stats(module, seed=0, var_high=1.5, tracked=5):
    """Non-trivial BatchNorm statistics loaded into an npgan module (so that a lost or misnamed buffer shows):
    running means N(0, 1), running variances U(0.5, ``var_high``), num_batches_tracked ``tracked + seed``.
    Returns the module."""
    rng = np.random.default_rng(seed)
    new = {}
    for k, v in module.state_dict().items():
        v = npgan.backend.to_numpy(v)
        if k.endswith("running_mean"):
            v = rng.standard_normal(v.shape).astype(v.dtype)
        elif k.endswith("running_var"):
            v = rng.uniform(0.5, var_high, v.shape).astype(v.dtype)
        elif k.endswith("num_batches_tracked"):
            v = np.array(tracked + seed, dtype=np.int64)
        new[k] = v
    module.load_state_dict(new)
    return module


@contextmanager
def split_ops(threads):
    """CPU ops split over ``threads`` threads however small they are (npgan.parallel.MIN_WORK, MIN_MACS and
    ELEMENTWISE_MIN_WORK lifted); the thread count and the thresholds are restored afterwards."""
    from npgan import parallel
    saved = parallel.get_num_threads(), parallel.MIN_WORK, parallel.ELEMENTWISE_MIN_WORK, parallel.MIN_MACS
    parallel.set_num_threads(threads)
    parallel.MIN_WORK = parallel.ELEMENTWISE_MIN_WORK = parallel.MIN_MACS = 0
    try:
        yield
    finally:
        parallel.set_num_threads(saved[0])
        parallel.MIN_WORK, parallel.ELEMENTWISE_MIN_WORK, parallel.MIN_MACS = saved[1], saved[2], saved[3]


@contextmanager
def serve_directory(root, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving the files under ``root``; yields ``(url, requested)``, the base
    URL (ending in "/") and the list of paths requested so far. Proxies are switched off for the test
    (through ``monkeypatch``); the server is shut down afterwards."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/", requested
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def run_cli(args, capsys):
    """``npgan.run.cli.main`` on ``args`` (each made a string): ``(exit code, stdout, stderr)``."""
    from npgan.run.cli import main
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err):
    """The one line ``npgan: error: ...`` that stderr ``err`` holds (asserted: nothing else, no traceback)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("npgan: error: "), err
    assert "Traceback" not in err
    return lines[0]


def hand_adam(eta, b1, b2, eps):
    """Adam written out by hand (PyTorch's bias-corrected update) as a function ``(p, g) -> next p`` that keeps its
    own moments and step count, for tests that check an optimizer loop against it step by step."""
    state = {"m": 0.0, "v": 0.0, "t": 0}

    def step(p, g):
        state["m"] = b1 * state["m"] + (1 - b1) * g
        state["v"] = b2 * state["v"] + (1 - b2) * g * g
        state["t"] += 1
        t = state["t"]
        return p - eta / (1 - b1 ** t) * state["m"] / (np.sqrt(state["v"]) / (1 - b2 ** t) ** 0.5 + eps)

    return step


def ring8_config(steps, **over):
    """ring8, batch 64, its lr 1e-3 -> 1e-4 and λ 0.1 -> 0 schedules over ``steps``; small intervals (log every
    5 steps, a checkpoint every 10, 200 evaluation samples, no sample images); ``over`` sets RunConfig fields."""
    from npgan.run.presets import make_config
    cfg = make_config("ring8")
    cfg.train.steps, cfg.train.batch_size = steps, 64
    cfg.log_every, cfg.checkpoint_every, cfg.sample_every, cfg.eval_samples = 5, 10, 10**6, 200
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def tiny_ring8_config(steps=4):
    """ring8 at batch 32, a history flush and a checkpoint every 2 steps, 100 evaluation samples, no sample images:
    a run that finishes in a moment (the checkpoint and configuration tests)."""
    from npgan.run.presets import make_config
    cfg = make_config("ring8")
    cfg.train.steps, cfg.train.batch_size = steps, 32
    cfg.log_every, cfg.checkpoint_every, cfg.sample_every, cfg.eval_samples = 2, 2, 10_000, 100
    return cfg


def count_functions():
    """How many autograd Function nodes are alive (reachable by the cycle collector's object list). ``type(o)``,
    not ``isinstance``: isinstance reads ``o.__class__``, which some of torch's deprecated module proxies answer
    with a FutureWarning."""
    from npgan.tensor import Function
    return sum(issubclass(type(o), Function) for o in gc.get_objects())


def assert_no_growth(step, what, n=1000, warmup=500, max_bytes=16 * 1024):
    """``step()`` ``n`` times with the cycle collector off, after ``warmup`` calls (the interpreter's free lists
    fill; tracemalloc counts what they keep): the graphs are freed by reference counting alone, so neither the
    live Functions nor the traced memory (by more than ``max_bytes``) grow. ``what`` names the steps."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(warmup):
            step()
        before = count_functions()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            step()
        grown = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        assert count_functions() == before
        assert grown < max_bytes, f"memory grew by {grown} bytes over {n:,} {what}"
    finally:
        if was:
            gc.enable()


# ---------------------------------------------------------------------------- double-backward case tables
SIDES = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3))
"""Three sides 1..3 from which a case's ``make(rng, sides)`` builds its input shapes."""


def f64_leaves(arrays):
    """float64 npgan leaves (requires_grad) of the arrays."""
    return [npgan.tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]


def gradgradcheck_case(case, sides, seed):
    """A case ``(fn, torch_fn, make)`` passes npgan.gradgradcheck on float64 inputs ``make(rng(seed), sides)``."""
    fn, _, make = case
    xs = f64_leaves(make(np.random.default_rng(seed), sides))
    assert npgan.gradgradcheck(fn, xs, seed=seed)


def double_backward_inputs(case):
    """``(fn, torch_fn, arrays, v, us)`` of a case ``(fn, torch_fn, make)`` for a parity test of its double
    backward: the input arrays ``make(rng, (2, 3, 4))``, a vector v of the output's shape and one uᵢ per input
    (Σᵢ⟨uᵢ, ∂⟨v, fn(x)⟩/∂xᵢ⟩ is then differentiated again), all from the seed 11."""
    fn, tfn, make = case
    rng = np.random.default_rng(11)
    arrays = make(rng, (2, 3, 4))
    out_shape = fn(*f64_leaves(arrays)).shape
    v, us = rng.standard_normal(out_shape), [rng.standard_normal(np.shape(a)) for a in arrays]
    return fn, tfn, arrays, v, us


def third_order(fn):
    """x ↦ ∇_{x₀}⟨w, fn(x)⟩ with a fixed w, recorded (create_graph): its gradgradcheck checks third derivatives,
    running the double backward of each op's double backward."""
    def g(*xs):
        out = fn(*xs)
        w = np.random.default_rng(7).standard_normal(out.shape)
        return npgan.grad(out, xs[0], w, create_graph=True)[0]
    return g


# ---------------------------------------------------------------------------- input makers (rng, shape) -> array
def normal(rng, shape):
    return rng.standard_normal(shape)


def away(rng, shape):
    """Values at least 0.3 away from 0 (the kink of relu and leaky relu)."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 2.0, shape)
