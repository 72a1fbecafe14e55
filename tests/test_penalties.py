"""Gradient penalties (npgan/gan/penalties.py): R1, R2 and WGAN-GP.

Values against closed forms (a linear D: ∇ₓD = w; a quadratic D: ∇ₓD = Ax + b), the gradient of each penalty
with respect to D's parameters against PyTorch (``torch.autograd.grad(..., create_graph=True)``) in float64 on a
D built from ops and on an MLP D (Linear/LeakyReLU/Linear), the BatchNorm refusal under WGAN-GP, bad input,
detached points, and memory over 1,000 R1 steps.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, assert_no_growth, torch_or_skip

import npgan
from npgan import nn, ops
from npgan.gan.penalties import PENALTY_KINDS, check_penalty, gradient_penalty

F64 = np.float64


@pytest.fixture(autouse=True)
def _float64():
    was = npgan.get_default_dtype()
    npgan.set_default_dtype("float64")
    yield
    npgan.set_default_dtype(was)


def _eps(seed, n, ndim):
    """The εᵢ gradient_penalty draws after npgan.manual_seed(seed): the same generator, the same call."""
    npgan.manual_seed(seed)
    return npgan.rand(*((n,) + (1,) * (ndim - 1))).numpy()


def _wgan_gp(seed, D, real, fake, center=1.0):
    npgan.manual_seed(seed)
    return gradient_penalty(D, real, fake, kind="wgan-gp", center=center)


# ============================================================================ closed forms
@pytest.mark.parametrize("shape", [(7, 3), (5, 2, 3, 2)])
def test_linear_D_closed_form(shape):
    """D(x) = ⟨w, x⟩ + b: ∇ₓD = w at every x, so R1 = R2 = ‖w‖² and WGAN-GP = (‖w‖ − c)²."""
    rng = np.random.default_rng(0)
    wa = rng.standard_normal(shape[1:])
    w = npgan.tensor(wa, requires_grad=True)
    b = npgan.tensor(0.7, requires_grad=True)

    def D(x):
        return (x * w).reshape(x.shape[0], -1).sum(axis=1) + b

    real, fake = rng.standard_normal(shape), rng.standard_normal(shape)
    n2 = float((wa ** 2).sum())
    assert gradient_penalty(D, real).item() == pytest.approx(n2, rel=1e-12)
    assert gradient_penalty(D, fake=fake, kind="r2").item() == pytest.approx(n2, rel=1e-12)
    for c in (1.0, 0.3):
        got = _wgan_gp(3, D, real, fake, center=c).item()
        assert got == pytest.approx((np.sqrt(n2) - c) ** 2, rel=1e-12)
    # and its gradient: ∂‖w‖²/∂w = 2w, ∂(‖w‖ − 1)²/∂w = 2(1 − 1/‖w‖)w; the bias has none
    gradient_penalty(D, real).backward()
    assert_close(w.grad, 2 * wa, rtol=1e-12, what="∂R1/∂w")
    assert b.grad is None or np.all(b.grad == 0)
    w.grad = None
    _wgan_gp(3, D, real, fake).backward()
    assert_close(w.grad, 2 * (1 - 1 / np.sqrt(n2)) * wa, rtol=1e-12, what="∂WGAN-GP/∂w")


def test_quadratic_D_closed_form():
    """D(x) = ½xᵀAx + bᵀx (A symmetric): ∇ₓD(x) = Ax + b, so R1 = mean ‖Axᵢ + b‖², WGAN-GP at the interpolates
    x̂ᵢ = εᵢxᵢ + (1 − εᵢ)x̃ᵢ with the εᵢ of the seeded generator."""
    rng = np.random.default_rng(1)
    m = rng.standard_normal((4, 4))
    Aa, ba = m + m.T, rng.standard_normal(4)
    A, b = npgan.tensor(Aa, requires_grad=True), npgan.tensor(ba, requires_grad=True)

    def D(x):
        return 0.5 * ((x @ A) * x).sum(axis=1) + x @ b

    real, fake = rng.standard_normal((9, 4)), rng.standard_normal((9, 4))
    g_real, g_fake = real @ Aa + ba, fake @ Aa + ba
    assert gradient_penalty(D, real).item() == pytest.approx(np.mean((g_real ** 2).sum(1)), rel=1e-12)
    assert gradient_penalty(D, fake=fake, kind="r2").item() == pytest.approx(np.mean((g_fake ** 2).sum(1)), rel=1e-12)
    eps = _eps(5, 9, 2)
    x_hat = eps * real + (1 - eps) * fake
    want = np.mean((np.linalg.norm(x_hat @ Aa + ba, axis=1) - 1) ** 2)
    assert _wgan_gp(5, D, real, fake).item() == pytest.approx(want, rel=1e-12)
    # ∂R1/∂b = (2/N) Σᵢ (Axᵢ + b)
    gradient_penalty(D, real).backward()
    assert_close(b.grad, 2 * g_real.mean(0), rtol=1e-12, what="∂R1/∂b")


def test_wgan_gp_draws_from_the_seeded_generator():
    """Same seed, same interpolates, same penalty; another seed, another penalty."""
    rng = np.random.default_rng(2)
    W = npgan.tensor(rng.standard_normal((3, 1)), requires_grad=True)

    def D(x):
        return (x @ W).exp()

    real, fake = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    a, b, c = (_wgan_gp(s, D, real, fake).item() for s in (4, 4, 5))
    assert a == b and a != c


def test_zero_gradient_gives_zero_derivative_not_nan():
    """‖g‖ at g = 0 has derivative 0 (as torch.linalg.norm), not 0·∞."""
    w = npgan.tensor(np.zeros((3, 1)), requires_grad=True)
    pen = _wgan_gp(0, lambda x: x @ w, np.ones((4, 3)), np.zeros((4, 3)))
    assert pen.item() == 1.0
    pen.backward()
    assert np.all(np.isfinite(w.grad))


# ============================================================================ against PyTorch
def _ops_D(rng):
    """D(x) = log(1 + exp(x W₁)) w₂ + (x W₁)² c, from ops alone (smooth: every second derivative is nonzero)."""
    W1 = npgan.tensor(rng.standard_normal((3, 5)) * 0.7, requires_grad=True)
    w2 = npgan.tensor(rng.standard_normal((5, 1)), requires_grad=True)
    c = npgan.tensor(rng.standard_normal((5, 1)) * 0.1, requires_grad=True)

    def D(x, W1=W1, w2=w2, c=c, log=ops.log, exp=ops.exp):
        h = x @ W1
        return log(1 + exp(h)) @ w2 + (h * h) @ c

    return D, {"W1": W1, "w2": w2, "c": c}


def _torch_penalty(torch, TD, kind, real, fake, eps=None):
    x = {"r1": real, "r2": fake}.get(kind)
    if kind == "wgan-gp":
        x = eps * real + (1 - eps) * fake
    tx = torch.tensor(x, requires_grad=True)
    tg, = torch.autograd.grad(TD(tx).sum(), tx, create_graph=True)
    tg = tg.reshape(len(x), -1)
    if kind == "wgan-gp":
        return ((tg.norm(2, dim=1) - 1) ** 2).mean()
    return (tg * tg).sum(dim=1).mean()


def _ours(D, kind, real, fake, seed=11):
    npgan.manual_seed(seed)
    return gradient_penalty(D, real, fake, kind=kind)


@pytest.mark.parametrize("kind", PENALTY_KINDS)
def test_ops_D_parity_with_torch(kind):
    """The penalty and its gradient for every parameter of a D built from ops, against PyTorch in float64."""
    torch = torch_or_skip()
    rng = np.random.default_rng(3)
    D, params = _ops_D(rng)
    tp = {k: torch.tensor(v.numpy(), requires_grad=True) for k, v in params.items()}

    def TD(x):
        h = x @ tp["W1"]
        return torch.log(1 + torch.exp(h)) @ tp["w2"] + (h * h) @ tp["c"]

    real, fake = rng.standard_normal((8, 3)), rng.standard_normal((8, 3))
    pen = _ours(D, kind, real, fake)
    pen.backward()
    tpen = _torch_penalty(torch, TD, kind, real, fake, _eps(11, 8, 2))
    tpen.backward()
    assert_close(pen, tpen, rtol=1e-10, what=f"{kind} penalty")
    for k, p in params.items():
        assert np.abs(p.grad).max() > 0
        assert_close(p.grad, tp[k].grad, rtol=1e-10, atol=1e-12, what=f"∂{kind}/∂{k}")


def _mlp():
    npgan.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.LeakyReLU(0.2), nn.Linear(16, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))


@pytest.mark.parametrize("kind", PENALTY_KINDS)
def test_mlp_D_parity_with_torch(kind):
    """Linear/LeakyReLU/Linear/LeakyReLU/Linear: penalty and every parameter's gradient against PyTorch (float64)."""
    torch = torch_or_skip()
    from npgan.interop import to_torch

    D = _mlp()
    TD = to_torch(D)
    rng = np.random.default_rng(4)
    real, fake = rng.standard_normal((32, 4)), rng.standard_normal((32, 4)) + 1
    pen = _ours(D, kind, real, fake)
    pen.backward()
    tpen = _torch_penalty(torch, TD, kind, real, fake, _eps(11, 32, 2))
    tpen.backward()
    assert_close(pen, tpen, rtol=1e-10, what=f"{kind} penalty")
    tparams = dict(TD.named_parameters())
    for name, p in D.named_parameters():
        # a bias before a piecewise-linear activation moves only its constant mask: no gradient (PyTorch: 0)
        ours = np.zeros(p.shape) if p.grad is None else p.grad
        theirs = np.zeros(p.shape) if tparams[name].grad is None else tparams[name].grad
        assert_close(ours, theirs, rtol=1e-10, atol=1e-12, what=f"∂{kind}/∂{name}")
        if name.endswith("weight"):
            assert np.abs(ours).max() > 0, f"no gradient for {name}"


@pytest.mark.parametrize("recipe", ["r1", "wgan-gp"])
def test_full_D_step_parity_with_torch(recipe):
    """A whole D step on the MLP: loss = BCE(D(x), 1) + BCE(D(x̃), 0) + (γ/2)·R1 (γ = 10), or the critic's
    E D(x̃) − E D(x) + λ·GP (λ = 10); the outputs, the penalty, the loss and every parameter's gradient against
    PyTorch in float64, then one Adam step of each and the new weights."""
    torch = torch_or_skip()
    from npgan import optim
    from npgan.gan import losses
    from npgan.interop import to_torch

    D = _mlp()
    TD = to_torch(D)
    rng = np.random.default_rng(7)
    real, fake = rng.standard_normal((16, 4)), rng.standard_normal((16, 4)) * 0.5 + 1
    weight = 10.0
    loss_kind = "non_saturating" if recipe == "r1" else "wasserstein"

    d_real, d_fake = D(npgan.tensor(real)), D(npgan.tensor(fake))
    pen = _ours(D, recipe, real, fake)
    loss = losses.discriminator_loss(d_real, d_fake, loss_kind) + (weight / 2 if recipe == "r1" else weight) * pen
    loss.backward()

    tr, tf = TD(torch.tensor(real)), TD(torch.tensor(fake))
    tpen = _torch_penalty(torch, TD, recipe, real, fake, _eps(11, 16, 2))
    if recipe == "r1":
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        tloss = bce(tr, torch.ones_like(tr)) + bce(tf, torch.zeros_like(tf)) + weight / 2 * tpen
    else:
        tloss = tf.mean() - tr.mean() + weight * tpen
    tloss.backward()

    assert_close(d_real, tr, rtol=1e-10, what="D(x)")
    assert_close(d_fake, tf, rtol=1e-10, what="D(x̃)")
    assert_close(pen, tpen, rtol=1e-10, what="penalty")
    assert_close(loss, tloss, rtol=1e-10, what="loss")
    tparams = dict(TD.named_parameters())
    for name, p in D.named_parameters():
        assert_close(p.grad, tparams[name].grad, rtol=1e-10, atol=1e-12, what=f"∂loss/∂{name}")
    opt = optim.Adam(D.parameters(), lr=1e-4, betas=(0.0, 0.9))
    topt = torch.optim.Adam(TD.parameters(), lr=1e-4, betas=(0.0, 0.9))
    opt.step()
    topt.step()
    for name, p in D.named_parameters():
        assert_close(p, tparams[name], rtol=1e-12, atol=1e-14, what=f"{name} after one Adam step")


# ============================================================================ refusals and bad input
@pytest.mark.parametrize("bn", [nn.BatchNorm1d, nn.BatchNorm2d])
def test_wgan_gp_refuses_batch_norm(bn):
    npgan.manual_seed(0)
    inner = nn.Sequential(nn.Linear(4, 4), bn(4) if bn is nn.BatchNorm1d else nn.Identity())
    D = nn.Sequential(inner, nn.Linear(4, 1))
    if bn is nn.BatchNorm2d:
        D = nn.Sequential(nn.Unflatten(1, (4, 1, 1)), bn(4), nn.Flatten(), nn.Linear(4, 1))
    x = np.ones((3, 4))
    with pytest.raises(ValueError) as e:
        gradient_penalty(D, x, x, kind="wgan-gp")
    msg = str(e.value)
    assert "\n" not in msg and bn.__name__ in msg and "per-sample gradient norm" in msg and "Gulrajani" in msg
    with pytest.raises(ValueError) as e2:
        check_penalty(D, "wgan-gp")  # the same refusal, up front (a training loop's start)
    assert str(e2.value) == msg
    check_penalty(D, "r1")
    assert gradient_penalty(D, x, kind="r1").item() >= 0  # R1 allows it (as PyTorch)


@pytest.mark.parametrize("call, match", [
    (lambda D, x: gradient_penalty(D, x, kind="r3"), "unknown kind 'r3'"),
    (lambda D, x: gradient_penalty(D, None, x, kind="r1"), "needs the real batch"),
    (lambda D, x: gradient_penalty(D, x, kind="r2"), "needs the generated batch"),
    (lambda D, x: gradient_penalty(D, x, kind="wgan-gp"), "needs both"),
    (lambda D, x: gradient_penalty(D, x, x[:2], kind="wgan-gp"), r"differ in shape, \(3, 4\) vs \(2, 4\)"),
    (lambda D, x: gradient_penalty(D, x, x, kind="wgan-gp", center=float("nan")), "center must be"),
    (lambda D, x: gradient_penalty(D, x[:0]), "N >= 1"),
    (lambda D, x: gradient_penalty(lambda t: t, x), r"one output per sample, got shape \(3, 4\)"),
])
def test_bad_input_is_named(call, match):
    D = _mlp()
    with pytest.raises(ValueError, match=match):
        call(D, np.ones((3, 4)))
    with pytest.raises(TypeError, match="Tensor or an array"):
        gradient_penalty(D, [[1.0] * 4])


def test_points_are_detached():
    """A fake batch computed by G: the penalty's backward reaches D's parameters, not G's."""
    D = _mlp()
    Gw = npgan.tensor(np.eye(4), requires_grad=True)
    fake = npgan.tensor(np.random.default_rng(5).standard_normal((6, 4))) @ Gw
    for kind in ("r2", "wgan-gp"):
        gradient_penalty(D, np.ones((6, 4)), fake, kind=kind).backward()
        assert Gw.grad is None
        assert D[0].weight.grad is not None


# ============================================================================ memory
def test_memory_does_not_grow_over_1000_r1_steps():
    """gradient_penalty(D, x) then backward to D's weights, 1,000 times with the cycle collector off: the graphs
    are freed by reference counting alone; neither live Functions nor traced memory grow."""
    D = _mlp()
    xa = np.random.default_rng(6).standard_normal((32, 4))

    def step():
        gradient_penalty(D, xa).backward()
        for p in D.parameters():
            p.grad = None

    assert_no_growth(step, "R1 steps")
