"""Devices, checked on the CPU: selection and its errors, and every GPU code path run on the stand-in GPU module.

The stand-in (tests/standin.py) poses as CuPy: its arrays refuse ``numpy.asarray`` and any meeting with a host
array, its reductions return device scalars, and it counts host synchronisations and transfers. A training step,
a run with checkpoints, the loaders, metrics and RNG are run on it, so that a host round trip in npgan fails here
instead of slowing a GPU run; since the stand-in computes with NumPy and the same seeds, its results must equal
the CPU's exactly. The real GPU checks (CuPy kernels, CPU-vs-GPU losses) are in test_gpu.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import standin

import npgan
import npgan.functional as F
from npgan import backend, conv_fast, kernels, nn, optim
from npgan.data import ArrayLoader, EpochBatches, ring8
from npgan.eval.metrics import mode_metrics
from npgan.gan.losses import kde_entropy
from npgan.run.experiment import Run
from npgan.run.presets import make_config

HAVE_GPU = backend.gpu_available()


@pytest.fixture
def gpu():
    """The stand-in as the GPU, and the current device."""
    with standin.installed() as xp:
        standin.reset_counts()
        yield xp


def on_device(a) -> bool:
    return isinstance(a, standin.DeviceArray)


# ============================================================================ selecting a device
@pytest.mark.parametrize("name", ["tpu", "gpu:x", "gpu:-1", "cuda:", "", 3, None])
def test_a_bad_device_name_is_a_value_error_naming_it(name):
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'gpu' or 'gpu:N', got"):
        npgan.set_device(name)
    assert npgan.get_device() == "cpu"


@pytest.mark.skipif(HAVE_GPU, reason="a GPU is available here")
def test_gpu_without_cupy_says_how_to_install_it():
    prev = backend.set_gpu_module(None)
    try:
        with pytest.raises(npgan.DeviceError, match=r'needs CuPy.*pip install "npgan\[gpu\]"'):
            npgan.set_device("gpu")
        assert npgan.get_device() == "cpu" and not backend.gpu_available()
    finally:
        backend.set_gpu_module(prev)


def _module_with_runtime(get_count):
    mod = standin.StandinModule()
    mod.cuda = types.SimpleNamespace(Device=standin._Device, runtime=types.SimpleNamespace(getDeviceCount=get_count))
    return mod


def test_gpu_that_does_not_answer_or_is_missing_says_which():
    def broken():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    for get_count, needle in ((broken, "CuPy is installed but no CUDA GPU answers .*cudaErrorNoDevice"),
                              (lambda: 0, "no CUDA GPU was found")):
        with standin.installed(device=False, module=_module_with_runtime(get_count)):
            with pytest.raises(npgan.DeviceError, match=needle):
                npgan.set_device("gpu")
            assert npgan.get_device() == "cpu"
    with standin.installed(device=False):
        with pytest.raises(npgan.DeviceError, match=r"'gpu:1' does not exist: 1 GPU\(s\) found"):
            npgan.set_device("gpu:1")
        for name in ("gpu", "GPU", "cuda", "gpu:0", "cuda:0"):
            npgan.set_device(name)
            assert npgan.get_device() == "gpu:0" and backend.current_xp() is standin.xp
        npgan.set_device("cpu")
        assert backend.current_xp() is np


def _run(code, env_device, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "NPGAN_DEVICE"}
    if env_device is not None:
        env["NPGAN_DEVICE"] = env_device
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd)


def test_npgan_device_environment_variable():
    out = _run("import npgan; print(npgan.get_device())", "cpu")
    assert out.returncode == 0 and out.stdout.strip() == "cpu", out.stderr
    bad = _run("import npgan", "tpu")
    assert bad.returncode != 0 and "NPGAN_DEVICE='tpu'" in bad.stderr.strip().splitlines()[-1], bad.stderr
    if not HAVE_GPU:
        no = _run("import npgan", "gpu")
        last = no.stderr.strip().splitlines()[-1]
        assert no.returncode != 0 and "NPGAN_DEVICE='gpu'" in last and 'pip install "npgan[gpu]"' in last, last


@pytest.mark.skipif(HAVE_GPU, reason="a GPU is available here")
def test_cli_device_gpu_without_a_gpu_is_one_line_and_exit_2(tmp_path):
    d = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "NPGAN_DEVICE"}
    proc = subprocess.run([sys.executable, "-m", "npgan.run.cli", "train", "--preset", "ring8", "--device", "gpu",
                           "--steps", "2", "--out", str(d), "--no-progress"], capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("npgan: error: device 'gpu' needs CuPy"), proc.stderr
    assert 'pip install "npgan[gpu]"' in lines[0]
    assert not d.exists()


# ============================================================================ the stand-in refuses what CuPy refuses
def test_the_stand_in_refuses_implicit_host_conversion(gpu):
    a = npgan.randn(3, 2).data
    assert on_device(a)
    for bad in (lambda: np.asarray(a), lambda: np.array(a), lambda: a + np.ones((3, 2)),
                lambda: np.ones((3, 2)) * a, lambda: np.testing.assert_allclose(a, 0)):
        with pytest.raises(standin.StandinTypeError):
            bad()
    assert on_device(a.sum()) and a.sum().shape == ()  # reductions stay on the device
    h = backend.to_numpy(a)
    assert type(h) is np.ndarray and standin.counts == {"sync": 0, "to_host": 1, "to_device": 0}
    float(a.sum())
    assert standin.counts["sync"] == 1


def test_the_stand_in_refuses_ufunc_keywords_cupy_lacks(gpu):
    a = npgan.randn(3).data
    with pytest.raises(standin.StandinTypeError, match="where"):
        gpu.divide(a, a, where=a > 0)
    with pytest.raises(standin.StandinTypeError, match="where"):
        np.add(a, a, where=a > 0)


@pytest.mark.parametrize("make", [lambda p: optim.RMSprop([p], lr=0.01, eps=0.0),
                                  lambda p: optim.Adam([p], lr=0.01, eps=0.0),
                                  lambda p: optim.Adam([p], lr=0.01, eps=1e-50)])  # rounds to 0 in float32
@pytest.mark.parametrize("where", ["cpu", "standin"])
def test_optimizers_with_zero_eps_run_on_the_device(where, make):
    """eps = 0: entries with no gradient yet (0/0) take no step, on either device and without ``where=``."""
    with standin.installed() if where == "standin" else contextlib.nullcontext():
        p = npgan.Tensor(backend.asarray(np.array([1.0, 2.0, 3.0], dtype=np.float32)), requires_grad=True)
        opt = make(p)
        for _ in range(2):
            p.grad = backend.asarray(np.array([0.5, 0.0, -0.5], dtype=np.float32))
            opt.step()
        out = backend.to_numpy(p.data)
    assert np.isfinite(out).all() and out[1] == 2.0 and out[0] < 1.0 < 3.0 < out[2]


# ============================================================================ moving tensors and modules
def test_tensor_and_module_to(gpu):
    x0 = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    x = npgan.tensor(x0, requires_grad=True)  # a copy on the current device
    assert on_device(x.data) and x.device == "gpu:0"
    assert npgan.Tensor(x0).device == "cpu"  # Tensor() wraps an array where it lives
    y = x.to("cpu")
    assert type(y.data) is np.ndarray and y.to("cpu") is y
    (y * y).sum().backward()
    assert on_device(x.grad)
    np.testing.assert_array_equal(backend.to_numpy(x.grad), 2 * x0)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    assert all(on_device(p.data) for p in m.parameters()) and on_device(m[1].running_mean)
    m(x).sum().backward()
    m.to("cpu")
    assert all(type(p.data) is np.ndarray and type(p.grad) is np.ndarray for p in m.parameters())
    assert type(m[1].running_var) is np.ndarray
    m.to("gpu")
    assert all(on_device(p.data) and on_device(p.grad) for p in m.parameters()) and on_device(m[1].running_var)


def test_mixed_devices_raise_naming_both(gpu):
    a = npgan.randn(4, 3)
    b = npgan.Tensor(np.ones((4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Add: inputs live on different devices: input 0 on gpu:0, input 1 on cpu"):
        a + b
    w = npgan.Tensor(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Linear: .*input 0 on gpu:0, input 1 on cpu"):
        F.linear(a, w)
    with pytest.raises(ValueError, match=r"gpu:0.*cpu"):
        a * np.ones((4, 3), dtype=np.float32)  # a host array operand
    assert (a + 1.0).device == "gpu:0"  # Python scalars are fine


def test_no_device_check_without_a_gpu_module(monkeypatch):
    """The check in Function.__call__ costs nothing when no GPU module is present: it is not called."""
    prev = backend.set_gpu_module(None)
    try:
        def boom(*a, **k):
            raise AssertionError("check_same_device called without a GPU module")
        monkeypatch.setattr(backend, "check_same_device", boom)
        x = npgan.randn(3, 2, requires_grad=True)
        (x * x + x).sum().backward()
    finally:
        backend.set_gpu_module(prev)


# ============================================================================ the training loop on the "GPU"
def _small(preset, device, **train):
    cfg = make_config(preset)
    cfg.device = device
    cfg.train.batch_size = 32
    cfg.log_every, cfg.checkpoint_every, cfg.sample_every, cfg.eval_samples = 3, 3, 1000, 100
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


@pytest.mark.parametrize("preset,extra_syncs", [("digits-mlp", 3), ("digits-dcgan", 0), ("ring8", 1)])
def test_training_steps_stay_on_the_device_and_match_the_cpu(tmp_path, preset, extra_syncs, monkeypatch):
    """Trainer.step + flush on the stand-in: no transfer before the flush, one at it, and the CPU's numbers.

    Bit for bit: the stand-in runs NumPy underneath, and the CPU run here does not split ops over threads
    (no GPU does): the same operations in the same order. (Split and whole ops agree to rounding:
    tests/test_parallel.py; so do channels-last and NCHW image arrays, tests/test_conv_routes.py: the CPU run
    keeps NCHW here, as a GPU does.)

    Syncs per step: the divergence guard's one bool per optimizer step (1 + d_steps), plus, with the KDE
    entropy term, its finiteness check of the generated batch (ring8: fixed σ), and two more when σ comes from a
    rule (digits-mlp: Silverman's σ is a host float). Host-to-device copies: at most one per
    step (a new epoch's permutation of the images; the mixture's 8 centres).
    """
    rows = {}
    npgan.set_num_threads(1)  # restored by conftest's _fresh_state
    monkeypatch.setattr(conv_fast, "CHANNELS_LAST_MIN", 10**9)  # NCHW image arrays on the CPU too, as on a GPU
    for dev in ("cpu", "gpu"):
        with standin.installed(device=False):
            run = Run(_small(preset, dev), tmp_path / dev)
            tr = run.trainer
            assert dev == "cpu" or all(on_device(p.data) for p in run.G.parameters())
            standin.reset_counts()
            for _ in range(3):
                tr.step()
            steps = dict(standin.counts)
            standin.reset_counts()
            rows[dev] = tr.flush()
            if dev == "gpu":
                assert steps["to_host"] == 0 and steps["to_device"] <= 3, steps
                assert steps["sync"] <= 3 * (1 + run.cfg.train.d_steps + extra_syncs), steps
                assert standin.counts["sync"] == 0 and standin.counts["to_host"] == 1, standin.counts
                assert all(on_device(s["exp_avg_sq"]) for s in run.opt_d.state.values())
    assert len(rows["gpu"]) == 3 and [list(r) for r in rows["gpu"]] == [list(r) for r in rows["cpu"]]
    np.testing.assert_array_equal([list(r.values()) for r in rows["gpu"]], [list(r.values()) for r in rows["cpu"]])


def _params(run):
    return {f"{n}/{k}": backend.to_numpy(v) for n, net in (("G", run.G), ("D", run.D))
            for k, v in net.state_dict().items()}


def test_a_gpu_run_checkpoints_and_resumes_on_the_gpu_exactly_and_on_the_cpu_and_back(tmp_path):
    with standin.installed(device=False):
        full = Run.create(_small("digits-mlp", "gpu", steps=6), tmp_path / "full")
        full.train(progress=False)
        part = Run.create(_small("digits-mlp", "gpu", steps=3), tmp_path / "part")
        part.train(progress=False)
        at3 = _params(part)
        shutil.copytree(tmp_path / "part", tmp_path / "part_cpu")
        shutil.copytree(tmp_path / "part", tmp_path / "part_cpu2")
        # on the "GPU" again: the RNG state is restored, so the result is the uninterrupted run's
        again = Run.resume(tmp_path / "part", steps=6)
        assert npgan.get_device() == "gpu:0" and all(on_device(p.data) for p in again.G.parameters())
        again.train(progress=False)
        want = _params(full)
        for k, v in _params(again).items():
            np.testing.assert_array_equal(v, want[k], err_msg=k)
        # on the CPU: the weights and optimizer state come over exactly; the random stream is a new one
        finals = []
        for d in ("part_cpu", "part_cpu2"):
            cpu = Run.resume(tmp_path / d, steps=6, device="cpu")
            assert npgan.get_device() == "cpu" and cpu.trainer.step_count == 3
            assert all(type(p.data) is np.ndarray for p in cpu.G.parameters())
            assert all(type(v) is np.ndarray for s in cpu.opt_g.state.values() for v in s.values()
                       if not np.isscalar(v))
            for k, v in _params(cpu).items():
                np.testing.assert_array_equal(v, at3[k], err_msg=k)
            cpu.train(progress=False)
            finals.append(_params(cpu))
            assert 'device = "gpu"' in (tmp_path / d / "config.toml").read_text()  # not rewritten
        for k in finals[0]:
            assert np.isfinite(finals[0][k]).all()
            np.testing.assert_array_equal(finals[0][k], finals[1][k], err_msg=k)  # deterministic
        # and back: a CPU run continues on the "GPU"
        cpu_run = Run.create(_small("digits-mlp", "cpu", steps=3), tmp_path / "cpu")
        cpu_run.train(progress=False)
        on_cpu = _params(cpu_run)
        back = Run.resume(tmp_path / "cpu", steps=5, device="gpu")
        assert all(on_device(p.data) for p in back.G.parameters())
        assert all(on_device(s["exp_avg"]) for s in back.opt_d.state.values())
        for k, v in _params(back).items():
            np.testing.assert_array_equal(v, on_cpu[k], err_msg=k)
        back.train(progress=False)
        assert back.trainer.step_count == 5 and all(np.isfinite(v).all() for v in _params(back).values())


# ============================================================================ state, RNG, data, metrics
def test_load_state_dict_places_arrays_on_the_modules_device(gpu):
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    host = {k: backend.to_numpy(v) + 1 for k, v in m.state_dict().items()}
    m.load_state_dict(host)
    assert all(on_device(v) for v in m.state_dict().values())
    opt = optim.Adam(m.parameters(), lr=1e-2)
    m(npgan.randn(5, 3)).sum().backward()
    opt.step()
    saved = {"state": {i: {k: (backend.to_numpy(v) if backend.is_array(v) else v) for k, v in s.items()}
                       for i, s in opt.state_dict()["state"].items()},
             "param_groups": opt.state_dict()["param_groups"]}
    opt2 = optim.Adam(m.parameters(), lr=1e-2)
    opt2.load_state_dict(saved)
    assert all(on_device(s["exp_avg"]) and on_device(s["exp_avg_sq"]) for s in opt2.state.values())
    cpu = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).to("cpu")
    cpu.load_state_dict(m.state_dict())  # device arrays into a CPU module: host arrays
    assert all(type(v) is np.ndarray for v in cpu.state_dict().values())


@pytest.mark.parametrize("module", [standin.xp, standin.xp_cupy_random], ids=["numpy-like", "cupy-like"])
def test_rng_state_is_exact_on_the_same_device_and_deterministic_across(module):
    with standin.installed(module=module):
        npgan.manual_seed(5)
        npgan.randn(7)
        state = backend.get_rng_state()
        json.dumps(state)  # checkpoints keep it in their JSON header
        assert state["device"] == "gpu" and (module is standin.xp or isinstance(state["state"], str))
        a = backend.to_numpy(npgan.randn(4).data)
        npgan.randn(9)
        backend.set_rng_state(state)
        np.testing.assert_array_equal(backend.to_numpy(npgan.randn(4).data), a)
        npgan.set_device("cpu")
        backend.set_rng_state(state)  # a GPU state on the CPU: a fresh stream, the same every time
        b = npgan.randn(4).numpy()
        backend.set_rng_state(state)
        np.testing.assert_array_equal(npgan.randn(4).numpy(), b)
        cpu_state = backend.get_rng_state()
        npgan.set_device("gpu")
        backend.set_rng_state(cpu_state)
        c = backend.to_numpy(npgan.randn(4).data)
        backend.set_rng_state(cpu_state)
        np.testing.assert_array_equal(backend.to_numpy(npgan.randn(4).data), c)


def test_loaders_sampling_and_metrics_on_the_device(gpu):
    x = npgan.Tensor(np.arange(40.0, dtype=np.float32).reshape(20, 2))  # a host tensor: moved once
    labels = np.arange(20)
    batches = list(ArrayLoader((x, labels), 6, shuffle=True))
    assert len(batches) == 3 and all(on_device(b.data) and on_device(y.data) for b, y in batches)
    real = EpochBatches(backend.asarray(x.data), 8, seed=0)  # the training runs' image source
    first = [real(s) for s in range(5)]  # three epochs of two batches
    assert all(on_device(b.data) and b.shape == (8, 2) for b in first)
    again = EpochBatches(backend.asarray(x.data), 8, seed=0)
    for s in (4, 0, 3):
        np.testing.assert_array_equal(backend.to_numpy(again(s).data), backend.to_numpy(first[s].data))
    s = ring8(256)
    assert on_device(s.data)
    m = mode_metrics(s, npgan.data.MIXTURES["ring8"].centers, 0.01)
    assert m["modes"] == 8 and m["hq"] > 0.9
    assert standin.counts["to_host"] >= 1  # metrics bring their data over explicitly


def test_gradcheck_and_kde_on_the_device(gpu):
    npgan.set_default_dtype("float64")
    x = npgan.tensor(np.random.default_rng(0).standard_normal((6, 3)), requires_grad=True)
    assert npgan.gradcheck(lambda t: kde_entropy(t, 0.8, leave_one_out=True), [x])
    target = npgan.rand(6, 3)
    assert npgan.gradcheck(lambda t: F.binary_cross_entropy_with_logits(t, target), [x])
    assert npgan.gradcheck(lambda t: F.leaky_relu(t, 0.2) * t, [x])


# ============================================================================ kernel dispatch
@pytest.mark.parametrize("where", ["cpu", "stand-in"])
def test_the_kernels_are_used_only_for_cupy_arrays(where, monkeypatch):
    """On NumPy (and the stand-in) the plain formulas run: every fused kernel would raise if called."""
    def boom(*a, **k):
        raise AssertionError("a CuPy kernel was called for non-CuPy arrays")
    for name in kernels.__all__:
        if name not in ("enabled", "disabled"):
            monkeypatch.setattr(kernels, name, boom)
    ctx = standin.installed() if where == "stand-in" else _nullcontext()
    with ctx:
        xp = backend.current_xp()
        assert not kernels.enabled(xp) and not kernels.enabled(np)
        x = npgan.randn(16, 3, requires_grad=True)
        lin = nn.Linear(3, 1)
        opt = optim.Adam(list(lin.parameters()) + [x], lr=1e-2)
        h = F.leaky_relu(x, 0.2)
        loss = F.binary_cross_entropy_with_logits(lin(h), 1.0) - kde_entropy(h, 0.5, leave_one_out=True)
        loss.backward()
        opt.step()


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def test_fused_dispatch_passes_the_right_arguments(monkeypatch):
    """With the stand-in posing as CuPy, the kernels are replaced by NumPy versions of their documented
    formulas: the dispatch (arguments, in-place updates, returned M and Z) must reproduce the plain path."""
    def bce_sum(x, t):
        return (np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))).sum()

    def bce_loss(x, t):
        return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))

    def bce_grad(x, t, g):
        s = 1 / (1 + np.exp(-x))
        return ((1 - t) * s - t * (1 - s)) * g

    def lrelu_fwd(x, a):
        return np.where(x > 0, x, x * x.dtype.type(a))

    def lrelu_bwd(y, gy, a):
        return np.where(y > 0, gy, gy * gy.dtype.type(a))

    def adam(p, g, m, v, b1, b2, lr_bc1, bc2_sqrt, eps):
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        p -= (m / (np.sqrt(v) / bc2_sqrt + eps)) * lr_bc1

    def kde(D, c, floor, loo):
        n = D.shape[0]
        L = D * D.dtype.type(c)
        if loo:
            np.fill_diagonal(L, -np.inf)
        M = L.max(axis=1)
        W = np.exp(np.maximum(L - M[:, None], floor))
        if loo:
            np.fill_diagonal(W, 0)
        D[...] = W
        assert D.shape == (n, n)
        return M, W.sum(axis=1)

    results = {}
    for fused in (False, True):
        with standin.installed():
            npgan.set_default_dtype("float64")
            if fused:
                monkeypatch.setattr(backend, "cupy", standin.xp)
                for name, fn in (("bce_logits_sum", bce_sum), ("bce_logits_loss", bce_loss),
                                 ("bce_logits_grad", bce_grad), ("leaky_relu_forward", lrelu_fwd),
                                 ("leaky_relu_backward", lrelu_bwd), ("adam_update", adam),
                                 ("kde_row_softmax_", kde)):
                    monkeypatch.setattr(kernels, name, fn)
                assert kernels.enabled(standin.xp)
            npgan.manual_seed(3)
            x = npgan.randn(12, 3, requires_grad=True)
            lin = nn.Linear(3, 1)
            opt = optim.Adam(list(lin.parameters()) + [x], lr=1e-2)
            out = []
            for _ in range(3):
                opt.zero_grad()
                h = F.leaky_relu(x, 0.2)
                logits = lin(h)
                loss = (F.binary_cross_entropy_with_logits(logits, 1.0)
                        + F.binary_cross_entropy_with_logits(logits, 0.3, reduction="sum") * 0.1
                        + F.binary_cross_entropy_with_logits(logits, 0.0, reduction="none").mean()
                        - kde_entropy(h, 0.7, leave_one_out=True) - kde_entropy(h, 0.9))
                loss.backward()
                opt.step()
                out.append(loss.item())
            out.append(x.numpy())
            results[fused] = out
            monkeypatch.undo()
    for a, b in zip(results[False], results[True]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
