"""On a real GPU (CuPy): the fused kernels against the plain formulas, CPU-vs-GPU training, GPU → CPU resume.

Marked ``gpu`` and skipped with the reason when CuPy or a GPU is missing (CI has no GPU). The parity and
gradcheck tests of the CPU suite run on the GPU too, through the ``device`` fixture (conftest.py); the same
code paths are checked on the CPU with the stand-in GPU module in test_device.py.
"""

from __future__ import annotations

import json
import shutil

import error_bounds
import numpy as np
import pytest
from conftest import GPU_SKIP_REASON

import npgan
import npgan.functional as F
from npgan import backend, kernels, nn, optim
from npgan.gan.losses import discriminator_loss, generator_loss, kde_entropy
from npgan.kde import kde_bandwidth
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


@pytest.fixture(autouse=True)
def _back_on_the_cpu():
    yield
    npgan.set_device("cpu")


# ============================================================================ fused kernels vs plain formulas
def kernel_cases(dtype):
    """{name: (run, bounds)}: ``run()`` computes the outputs on the current device (host arrays); ``bounds()``
    the largest |result − exact| either implementation may show per output (tests/error_bounds.py's model with
    the dtype's unit roundoff u; host float64 arrays), so the fused and the plain results lie within twice it."""
    u, tiny = (2.0 ** -24, 2.0 ** -126) if dtype == "float32" else (2.0 ** -53, 2.0 ** -1022)
    rs = np.random.default_rng(0)
    x0 = np.concatenate([rs.standard_normal(500) * 4, [0.0, -0.0, 30.0, -30.0, 1e4, -1e4]]).astype(dtype)
    t0 = rs.random(x0.shape).astype(dtype)
    t0[:50] = np.round(t0[:50])
    gy = rs.standard_normal(x0.shape).astype(dtype)
    x, t, g = (a.astype(np.float64) for a in (x0, t0, gy))
    n = x.size
    cases = {}

    def leaky():
        xt = npgan.tensor(x0, requires_grad=True)
        y = F.leaky_relu(xt, 0.2)
        y.backward(gy)
        return host(y), host(xt.grad)

    # a·x and gy·a: a rounded to the dtype, then one product: 2u|a·|
    cases["leaky_relu"] = (leaky, lambda: [2 * u * 0.2 * np.abs(x), 2 * u * 0.2 * np.abs(g)])

    def bce(reduction):
        def run():
            xt, tt = npgan.tensor(x0, requires_grad=True), npgan.tensor(t0, requires_grad=True)
            loss = F.binary_cross_entropy_with_logits(xt, tt, reduction)
            loss.backward(gy if reduction == "none" else None)
            return host(loss), host(xt.grad), host(tt.grad)

        def bounds():
            # ℓ = max(x, 0) − x·t + log1p(e^−|x|): exp and log1p within 4 ulp each, four roundings: 20u of the
            # terms' sum; ∂ℓ/∂x = σ(x) − t (plain) or (1 − t)σ(x) − tσ(−x) (fused): σ within 12u, at most 4 more
            # roundings of terms ≤ 1: 16u; ∂ℓ/∂t = −x: one product with the incoming gradient
            sp = np.log1p(np.exp(-np.abs(x)))
            loss = np.maximum(x, 0) - x * t + sp
            e = 20 * u * (np.maximum(x, 0) + np.abs(x * t) + sp) + tiny
            w = {"none": np.abs(g), "sum": 1.0, "mean": 1.0 / n}[reduction]
            if reduction == "none":
                e_loss = e
            else:  # a sum of n terms: γ_n of their magnitudes; the mean one more rounding
                scale = 1 / n if reduction == "mean" else 1.0
                e_loss = (e.sum() + error_bounds.gamma(n, u) * (np.abs(loss) + e).sum()) * scale
                e_loss += u * abs(loss.sum() * scale)
            return [e_loss, 16 * u * w + tiny, 2 * u * np.abs(x) * w]
        return run, bounds

    for r in ("mean", "sum", "none"):
        cases[f"bce_{r}"] = bce(r)

    def kde(loo, bw):
        pts = np.random.default_rng(5).standard_normal((300, 7)).astype(dtype)

        def run():
            xt = npgan.tensor(pts, requires_grad=True)
            h = kde_entropy(xt, bw, leave_one_out=loo)
            h.backward()
            return host(h), host(xt.grad)

        def bounds():
            p64 = pts.astype(np.float64)
            sigma = kde_bandwidth(p64, bw) if isinstance(bw, str) else bw
            e_sig = error_bounds.kde_rule_sigma_error(p64, bw, u) if isinstance(bw, str) else 0.0
            _, e_h, _, e_g, _ = error_bounds.kde_entropy_bounds(p64, sigma, loo, e_sigma=e_sig, u=u)
            return [e_h, e_g]
        return run, bounds

    cases["kde_loo_silverman"] = kde(True, "silverman")
    cases["kde_plain_sigma"] = kde(False, 0.9)

    def adam(eps, wd, zero_first):
        p0 = np.random.default_rng(5).standard_normal(1000).astype(dtype)
        grads = []
        for k in range(5 if not zero_first else 3):
            gk = np.sin(np.arange(1000) * (k + 1 if not zero_first else 1)).astype(dtype)
            if zero_first:
                gk[:100] = 0
            grads.append(gk)
        b1, b2, lr = 0.5, 0.999, 1e-2

        def run():
            p = npgan.Tensor(backend.asarray(p0), requires_grad=True)
            opt = optim.Adam([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
            for gk in grads:
                p.grad = backend.asarray(gk)
                opt.step()
            out = host(p)
            assert np.isfinite(out).all()  # eps = 0 and entries that never had a gradient: no step (0/0 not nan)
            return out, host(opt.state[0]["exp_avg"]), host(opt.state[0]["exp_avg_sq"])

        def bounds():
            # the step in the dtype, first order: g' = g + wd·p, m ← b1·m + (1 − b1)g', v ← b2·v + (1 − b2)g'²,
            # d = √v/√(1 − b2ᵗ) + eps, p ← p − (m/d)·lr/(1 − b1ᵗ); each constant rounded to the dtype (u), each
            # operation one rounding; √ of v ± e within √e when v is about 0 (√ is ½-Hölder)
            p, m, v = p0.astype(np.float64), np.zeros(1000), np.zeros(1000)
            ep, em, ev = np.zeros(1000), np.zeros(1000), np.zeros(1000)
            for step, gk in enumerate(grads, 1):
                gk = gk.astype(np.float64)
                g2 = gk + wd * p
                eg = wd * ep + 2 * u * wd * np.abs(p) + u * (np.abs(gk) + wd * np.abs(p))
                em = b1 * em + (1 - b1) * eg + 3 * u * (b1 * np.abs(m) + (1 - b1) * np.abs(g2))
                ev = b2 * ev + (1 - b2) * 2 * np.abs(g2) * eg + 4 * u * (b2 * v + (1 - b2) * g2 * g2)
                m, v = b1 * m + (1 - b1) * g2, b2 * v + (1 - b2) * g2 * g2
                bc2 = np.sqrt(1 - b2 ** step)
                d = np.sqrt(v) / bc2 + eps
                with np.errstate(divide="ignore", invalid="ignore"):
                    e_sqrt = np.minimum(np.where(v > 0, ev / (2 * np.sqrt(v)), np.inf), np.sqrt(ev))
                    ed = e_sqrt / bc2 + 5 * u * d
                    upd = np.where(d > 0, m / d, 0.0) * lr / (1 - b1 ** step)
                    eu = np.where(d > 0, lr / (1 - b1 ** step) * (em / d + np.abs(m) * ed / d ** 2), 0.0)
                eu = eu + 4 * u * np.abs(upd)
                p = p - upd
                ep = ep + eu + u * np.abs(p)
            return [ep, em, ev]
        return run, bounds

    cases["adam"] = adam(1e-8, 0.01, False)
    cases["adam_eps0"] = adam(0.0, 0.0, True)
    return cases


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernels_match_the_plain_formulas(gpu, dtype):
    assert kernels.enabled(gpu)
    npgan.set_default_dtype(dtype)
    for name, (run, bounds) in kernel_cases(dtype).items():
        fused = run()
        with kernels.disabled():
            plain = run()
        for i, (a, b, e) in enumerate(zip(fused, plain, bounds())):
            error_bounds.assert_within(a, b, 2 * np.asarray(e), f"{name} ({dtype}): output {i}, fused against plain")


def test_fused_bce_gradient_does_not_cancel_at_saturation(gpu):
    """The fused gradient is (1 − t)σ(x) − tσ(−x): at t ∈ {0, 1} the tiny true value ∓σ(−|x|), where
    σ(x) − t would round to 0 in float32."""
    x = npgan.tensor(np.array([40.0, -40.0, 1e4, -1e4], dtype=np.float32), requires_grad=True)
    t = npgan.tensor(np.array([1.0, 0.0, 1.0, 0.0], dtype=np.float32))
    F.binary_cross_entropy_with_logits(x, t, "sum").backward()
    s40 = 1 / (1 + np.exp(40.0))
    # σ(∓40) through exp (≤ 4 ulp) and three roundings: 12u = 7e-7 relative (tests/error_bounds.py) < 1e-5
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
    twin = None
    try:  # each device's float32 result lies within the end-to-end bound of the float64 twin (tests/error_bounds.py)
        import error_bounds

        from npgan.interop import to_torch
        twin = error_bounds.EndToEnd(to_torch(m).double(), x)
    except ImportError:  # no torch: twice that bound as computed with torch for these weights and x (9.6e-6)
        pass
    y_cpu = m(npgan.Tensor(x)).numpy()
    m.to("gpu")
    y_gpu = m(npgan.tensor(x)).numpy()
    if twin is not None:
        error_bounds.assert_within(y_gpu, y_cpu, 2 * twin.out_bound, "GPU against CPU")
    else:
        np.testing.assert_allclose(y_gpu, y_cpu, rtol=0, atol=2e-5)
