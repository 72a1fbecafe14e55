"""On a real GPU (CuPy): the fused kernels against the plain formulas, CPU-vs-GPU training, GPU → CPU resume.

Marked ``gpu`` and skipped with the reason when CuPy or a GPU is missing (CI has no GPU). The parity and
gradcheck tests of the CPU suite run on the GPU too, through the ``device`` fixture (conftest.py); the same
code paths are checked on the CPU with the stand-in GPU module in test_device.py.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import GPU_SKIP_REASON

import npgan
import npgan.functional as F
from npgan import backend, kernels, nn, optim
from npgan.gan.losses import discriminator_loss, generator_loss, kde_entropy
from npgan.run.experiment import Run
from npgan.run.presets import build_models, make_config
from npgan.tensor import no_grad

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(GPU_SKIP_REASON is not None, reason=str(GPU_SKIP_REASON))]


@pytest.fixture
def gpu():
    npgan.set_device("gpu")
    try:
        yield backend.cupy
    finally:
        npgan.set_device("cpu")


def host(a):
    return backend.to_numpy(a.data if isinstance(a, npgan.Tensor) else a)


def _both(fn):
    """fn() with the fused kernels and with the plain formulas, on the GPU: (fused, plain) results."""
    fused = fn()
    with kernels.disabled():
        plain = fn()
    return fused, plain


TOL = {"float32": dict(rtol=1e-5, atol=1e-7), "float64": dict(rtol=1e-12, atol=1e-14)}


@pytest.fixture(autouse=True)
def _back_on_the_cpu():
    yield
    npgan.set_device("cpu")


# ============================================================================ fused kernels vs plain formulas
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernels_match_the_plain_formulas(gpu, dtype):
    assert kernels.enabled(gpu)
    npgan.set_default_dtype(dtype)
    rs = np.random.default_rng(0)
    x0 = np.concatenate([rs.standard_normal(500) * 4, [0.0, -0.0, 30.0, -30.0, 1e4, -1e4]]).astype(dtype)
    t0 = rs.random(x0.shape).astype(dtype)
    t0[:50] = np.round(t0[:50])
    gy = rs.standard_normal(x0.shape).astype(dtype)

    def leaky():
        x = npgan.tensor(x0, requires_grad=True)
        y = F.leaky_relu(x, 0.2)
        y.backward(gy)
        return host(y), host(x.grad)

    def bce(reduction):
        def run():
            x, t = npgan.tensor(x0, requires_grad=True), npgan.tensor(t0, requires_grad=True)
            loss = F.binary_cross_entropy_with_logits(x, t, reduction)
            loss.backward(gy if reduction == "none" else None)
            return host(loss), host(x.grad), host(t.grad)
        return run

    def kde(loo, bw):
        def run():
            x = npgan.tensor(rs_fixed.standard_normal((300, 7)).astype(dtype), requires_grad=True)
            h = kde_entropy(x, bw, leave_one_out=loo)
            h.backward()
            return host(h), host(x.grad)
        return run

    def adam():
        npgan.manual_seed(1)
        p = npgan.Tensor(backend.asarray(rs_fixed.standard_normal(1000).astype(dtype)), requires_grad=True)
        opt = optim.Adam([p], lr=1e-2, betas=(0.5, 0.999), weight_decay=0.01)
        for k in range(5):
            p.grad = backend.asarray(np.sin(np.arange(1000) * (k + 1)).astype(dtype))
            opt.step()
        return host(p), host(opt.state[0]["exp_avg"]), host(opt.state[0]["exp_avg_sq"])

    def adam_eps0():  # eps = 0 and entries that never had a gradient: no step there (0/0 must not be nan)
        p = npgan.Tensor(backend.asarray(rs_fixed.standard_normal(1000).astype(dtype)), requires_grad=True)
        opt = optim.Adam([p], lr=1e-2, betas=(0.5, 0.999), eps=0.0)
        g = np.sin(np.arange(1000)).astype(dtype)
        g[:100] = 0
        for _ in range(3):
            p.grad = backend.asarray(g)
            opt.step()
        out = host(p)
        assert np.isfinite(out).all()
        return out, host(opt.state[0]["exp_avg"])

    cases = {"leaky_relu": leaky, "bce_mean": bce("mean"), "bce_sum": bce("sum"), "bce_none": bce("none"),
             "kde_loo_silverman": kde(True, "silverman"), "kde_plain_sigma": kde(False, 0.9), "adam": adam,
             "adam_eps0": adam_eps0}
    for name, fn in cases.items():
        rs_fixed = np.random.default_rng(5)
        fused = fn()
        rs_fixed = np.random.default_rng(5)
        with kernels.disabled():
            plain = fn()
        for i, (a, b) in enumerate(zip(fused, plain)):
            np.testing.assert_allclose(a, b, err_msg=f"{name}: output {i}", **TOL[dtype])


def test_fused_bce_gradient_does_not_cancel_at_saturation(gpu):
    """The fused gradient is (1 − t)σ(x) − tσ(−x): at t ∈ {0, 1} the tiny true value ∓σ(−|x|), where
    σ(x) − t would round to 0 in float32."""
    x = npgan.tensor(np.array([40.0, -40.0, 1e4, -1e4], dtype=np.float32), requires_grad=True)
    t = npgan.tensor(np.array([1.0, 0.0, 1.0, 0.0], dtype=np.float32))
    F.binary_cross_entropy_with_logits(x, t, "sum").backward()
    s40 = 1 / (1 + np.exp(40.0))
    np.testing.assert_allclose(host(x.grad), [-s40, s40, 0.0, 0.0], rtol=1e-5, atol=0)


# ============================================================================ CPU vs GPU training
def _models(preset):
    cfg = make_config(preset)
    npgan.manual_seed(0)
    return build_models(cfg), cfg.train.z_dim


def _train(G, D, batches):
    """Adam (2e-4, β 0.5/0.999), non-saturating losses, D then G each step; the losses as host floats."""
    og = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    od = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    losses = []
    for real, z1, z2 in batches:
        real, z1, z2 = npgan.tensor(real), npgan.tensor(z1), npgan.tensor(z2)
        with no_grad():
            fake = G(z1)
        ld = discriminator_loss(D(real), D(fake))
        od.zero_grad()
        ld.backward()
        od.step()
        lg, _ = generator_loss(D(G(z2)))
        og.zero_grad()
        lg.backward()
        og.step()
        losses.append((ld.item(), lg.item()))
    return np.array(losses)


@pytest.mark.parametrize("preset,batch", [("mnist-mlp", 64), ("mnist-dcgan", 32)])
def test_cpu_and_gpu_give_the_same_losses_over_50_steps(preset, batch):
    """The same seed, weights and batches: the losses agree to 1e-4 (relative) in float32 over 50 steps."""
    (G, D), z = _models(preset)
    rs = np.random.default_rng(0)
    batches = [(rs.uniform(-1, 1, (batch, 1, 28, 28)).astype(np.float32),
                rs.standard_normal((batch, z)).astype(np.float32),
                rs.standard_normal((batch, z)).astype(np.float32)) for _ in range(50)]
    state_g, state_d = G.state_dict(), D.state_dict()
    cpu = _train(G, D, batches)
    npgan.set_device("gpu")
    try:
        (Gg, Dg), _ = _models(preset)
        Gg.load_state_dict(state_g)
        Dg.load_state_dict(state_d)
        assert all(backend.device_of(p.data) == "gpu:0" for p in Gg.parameters())
        gpu = _train(Gg, Dg, batches)
    finally:
        npgan.set_device("cpu")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=0, err_msg=f"{preset}: (loss_d, loss_g) per step")


# ============================================================================ runs, checkpoints, RNG
def test_a_gpu_run_resumes_exactly_on_the_gpu_and_continues_on_the_cpu(tmp_path):
    def cfg(steps):
        c = make_config("digits-mlp")
        c.device, c.train.steps, c.train.batch_size = "gpu", steps, 32
        c.log_every, c.checkpoint_every, c.sample_every, c.eval_samples = 3, 3, 1000, 100
        return c

    def params(run):
        return {f"{n}/{k}": backend.to_numpy(v) for n, net in (("G", run.G), ("D", run.D))
                for k, v in net.state_dict().items()}

    full = Run.create(cfg(6), tmp_path / "full")
    full.train(progress=False)
    part = Run.create(cfg(3), tmp_path / "part")
    part.train(progress=False)
    at3 = params(part)
    shutil.copytree(tmp_path / "part", tmp_path / "part_cpu")
    again = Run.resume(tmp_path / "part", steps=6)
    again.train(progress=False)
    want = params(full)
    for k, v in params(again).items():  # the cuRAND state was restored: the uninterrupted run's weights
        np.testing.assert_array_equal(v, want[k], err_msg=k)
    cpu = Run.resume(tmp_path / "part_cpu", steps=6, device="cpu")
    assert npgan.get_device() == "cpu"
    for k, v in params(cpu).items():
        assert type(v) is np.ndarray
        np.testing.assert_array_equal(v, at3[k], err_msg=k)
    cpu.train(progress=False)
    assert all(np.isfinite(v).all() for v in params(cpu).values())


def test_gpu_rng_state_round_trip(gpu):
    npgan.manual_seed(3)
    npgan.randn(10)
    state = backend.get_rng_state()
    assert state["kind"] == "XORWOW" and len(json.dumps(state)) < 8 * 2 ** 20
    a = host(npgan.randn(1000))
    npgan.randn(77)
    backend.set_rng_state(state)
    np.testing.assert_array_equal(host(npgan.randn(1000)), a)


def test_cupy_arrays_meeting_host_arrays_raise_naming_both_devices(gpu):
    a = npgan.randn(3)
    with pytest.raises(ValueError, match=r"gpu:0.*cpu"):
        a + npgan.Tensor(np.ones(3, dtype=np.float32))
    with pytest.raises(TypeError):  # CuPy itself refuses the implicit conversion
        np.asarray(a.data)


def test_module_to_and_back(gpu):
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).to("cpu")
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    y_cpu = m(npgan.Tensor(x)).numpy()
    m.to("gpu")
    y_gpu = m(npgan.tensor(x)).numpy()
    np.testing.assert_allclose(y_gpu, y_cpu, rtol=1e-5, atol=1e-6)
