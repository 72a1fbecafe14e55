"""Gradients of gradients through the layers and losses: the ``backward_graph`` of every Function in
npgan/functional.py and npgan/kde.py (the convolutions are tested with npgan/conv.py), and the GAN objectives
of npgan/gan/losses.py (compositions of those).

Each case is checked at second order by ``gradgradcheck`` (hypothesis: random shapes and values, float64) and
against PyTorch (``torch.autograd.grad(..., create_graph=True)``, then a second grad, to 1e-10); then an R1
penalty ‖∇ₓD(x)‖² on an MLP discriminator, every parameter's gradient against PyTorch; Dropout's closed form;
the fused (GPU) LeakyReLU path; and the same second derivatives on every device.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import (
    SIDES,
    assert_close,
    away,
    compare_penalty_grads,
    double_backward_inputs,
    f64_leaves,
    gradgradcheck_case,
    normal,
    third_order,
    torch_or_skip,
)
from hypothesis import given
from hypothesis import strategies as st

import npgan
import npgan.functional as F
from npgan.gan import losses

F64 = np.float64


# ============================================================================ inputs
def prob(rng, shape):
    return rng.uniform(0.1, 0.9, shape)


def spread(rng, shape):
    """Distinct values 0.3 apart (batch norm: no channel with a tiny variance)."""
    n = int(np.prod(shape))
    return (rng.permutation(4 * n)[:n] - 2 * n).reshape(shape) * 0.3


def off_hinge(rng, shape):
    """Values at least 0.2 away from ±1 (the kinks of the hinge losses)."""
    return rng.choice([-1.0, 1.0], shape) * rng.choice([rng.uniform(0.0, 0.8), rng.uniform(1.2, 2.0)], shape)


def labels(shape):
    """Integer labels for logits of ``shape`` (N, C): every class in turn."""
    return np.arange(shape[0]) % shape[1]


def T():
    return torch_or_skip()


def TF():
    return torch_or_skip().nn.functional


def kde_torch(x, sigma, loo):
    """The KDE entropy written directly in torch: −mean_i LSE_j(−‖x_i − x_j‖²/(2σ²)) + log m + (d/2) log(2πσ²)."""
    torch = T()
    n = x.shape[0]
    x2 = x.reshape(n, -1)
    d = x2.shape[1]
    L = -((x2[:, None, :] - x2[None, :, :]) ** 2).sum(-1) / (2 * sigma ** 2)
    if loo:
        L = L.masked_fill(torch.eye(n, dtype=torch.bool), -math.inf)
    m = n - 1 if loo else n
    return -torch.logsumexp(L, dim=1).mean() + math.log(m) + 0.5 * d * math.log(2 * math.pi * sigma ** 2)


RM, RV = np.array([0.3, -0.5, 0.1]), np.array([0.7, 1.6, 1.1])  # running statistics for eval-mode batch norm


def bn_eval(x, w, b):
    c, dev = x.shape[1], x.device
    return F.batch_norm(x, npgan.backend.asarray(RM[:c].copy(), device=dev),
                        npgan.backend.asarray(RV[:c].copy(), device=dev), w, b, training=False)


def bn_eval_torch(x, w, b):
    c = x.shape[1]
    return TF().batch_norm(x, T().tensor(RM[:c]), T().tensor(RV[:c]), w, b, training=False)


def _d_loss_torch(kind):
    def f(dr, df):
        torch, tf = T(), TF()
        if kind in ("minimax", "non_saturating"):
            return (tf.binary_cross_entropy_with_logits(dr, torch.ones_like(dr))
                    + tf.binary_cross_entropy_with_logits(df, torch.zeros_like(df)))
        if kind == "lsgan":
            return ((dr - 1) ** 2).mean() * 0.5 + (df ** 2).mean() * 0.5
        if kind == "hinge":
            return torch.relu(1 - dr).mean() + torch.relu(1 + df).mean()
        return df.mean() - dr.mean()
    return f


def _g_loss_torch(kind, lam=0.0, sigma=0.8):
    def f(df, fake=None):
        torch, tf = T(), TF()
        if kind == "minimax":
            loss = -tf.binary_cross_entropy_with_logits(df, torch.zeros_like(df))
        elif kind == "non_saturating":
            loss = tf.binary_cross_entropy_with_logits(df, torch.ones_like(df))
        elif kind == "lsgan":
            loss = ((df - 1) ** 2).mean() * 0.5
        else:
            loss = -df.mean()
        return loss if fake is None else loss - lam * kde_torch(fake, sigma, False)
    return f


# name: (npgan fn, torch fn, make(rng, (d0, d1, d2)) -> input arrays; every input requires grad).
# Ops whose backward is linear in gy and free of x (relu, the eval-mode batch norm's x path...) are followed
# by a power, so that the second backward runs through their double backward.
CASES = {
    "linear": (lambda x, w, b: F.linear(x, w, b) ** 2, lambda x, w, b: TF().linear(x, w, b) ** 2,
               lambda r, d: [normal(r, (d[0], d[1])), normal(r, (d[2], d[1])), normal(r, (d[2],))]),
    "linear_3d_no_bias": (lambda x, w: F.linear(x, w) ** 3, lambda x, w: TF().linear(x, w) ** 3,
                          lambda r, d: [normal(r, (2, d[0], d[1])), normal(r, (d[2], d[1]))]),
    "linear_1d": (lambda x, w, b: F.linear(x, w, b) ** 3, lambda x, w, b: TF().linear(x, w, b) ** 3,
                  lambda r, d: [normal(r, (d[1],)), normal(r, (d[2], d[1])), normal(r, (d[2],))]),
    "relu": (lambda a: F.relu(a) ** 3, lambda a: T().relu(a) ** 3, lambda r, d: [away(r, d)]),
    "leaky_relu": (lambda a: F.leaky_relu(a, 0.2) ** 3, lambda a: TF().leaky_relu(a, 0.2) ** 3,
                   lambda r, d: [away(r, d)]),
    "leaky_relu_zero_slope": (lambda a: F.leaky_relu(a, 0.0) ** 3, lambda a: TF().leaky_relu(a, 0.0) ** 3,
                              lambda r, d: [away(r, d)]),
    "leaky_relu_negative_slope": (lambda a: F.leaky_relu(a, -0.5) ** 3, lambda a: TF().leaky_relu(a, -0.5) ** 3,
                                  lambda r, d: [away(r, d)]),
    "leaky_relu_steep_slope": (lambda a: F.leaky_relu(a, 1.5) ** 3, lambda a: TF().leaky_relu(a, 1.5) ** 3,
                               lambda r, d: [away(r, d)]),
    "sigmoid": (F.sigmoid, lambda a: T().sigmoid(a), lambda r, d: [normal(r, d) * 2]),
    "tanh": (F.tanh, lambda a: T().tanh(a), lambda r, d: [normal(r, d)]),
    "softplus": (F.softplus, lambda a: TF().softplus(a), lambda r, d: [normal(r, d) * 2]),
    "logsigmoid": (F.logsigmoid, lambda a: TF().logsigmoid(a), lambda r, d: [normal(r, d) * 2]),
    **{f"bce_logits_{red}": (lambda x, t, red=red: F.binary_cross_entropy_with_logits(x, t, red),
                             lambda x, t, red=red: TF().binary_cross_entropy_with_logits(x, t, reduction=red),
                             lambda r, d: [normal(r, d) * 2, prob(r, d)])
       for red in ("mean", "sum", "none")},
    "bce_logits_constant_target": (lambda x: F.binary_cross_entropy_with_logits(x, 1.0),
                                   lambda x: TF().binary_cross_entropy_with_logits(x, T().ones_like(x)),
                                   lambda r, d: [normal(r, d) * 2]),
    **{f"bce_{red}": (lambda p, t, red=red: F.binary_cross_entropy(p, t, red),
                      lambda p, t, red=red: TF().binary_cross_entropy(p, t, reduction=red),
                      lambda r, d: [prob(r, d), prob(r, d)])
       for red in ("mean", "sum", "none")},
    **{f"softmax_ce_{red}": (lambda x, red=red: F.softmax_cross_entropy(x, labels(x.shape), red),
                             lambda x, red=red: TF().cross_entropy(x, T().from_numpy(labels(tuple(x.shape))),
                                                                   reduction=red),
                             lambda r, d: [normal(r, (d[0], d[1] + 1)) * 2])
       for red in ("mean", "sum", "none")},
    "batch_norm_train_2d": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                            lambda x, w, b: TF().batch_norm(x, None, None, w, b, training=True),
                            lambda r, d: [spread(r, (d[0] + 1, d[1])), normal(r, (d[1],)), normal(r, (d[1],))]),
    "batch_norm_train_4d": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True) ** 2,
                            lambda x, w, b: TF().batch_norm(x, None, None, w, b, training=True) ** 2,
                            lambda r, d: [spread(r, (d[0], d[1], d[2], 2)), normal(r, (d[1],)), normal(r, (d[1],))]),
    "batch_norm_train_x_only": (lambda x: F.batch_norm(x, None, None, training=True) ** 3,
                                lambda x: TF().batch_norm(x, None, None, training=True) ** 3,
                                lambda r, d: [spread(r, (d[0] + 1, d[1], d[2]))]),
    "batch_norm_eval": (lambda x, w, b: bn_eval(x, w, b) ** 2, lambda x, w, b: bn_eval_torch(x, w, b) ** 2,
                        lambda r, d: [normal(r, (d[0], d[1], d[2])), normal(r, (d[1],)), normal(r, (d[1],))]),
    "kde": (lambda x: F.kde_entropy(x, 0.8), lambda x: kde_torch(x, 0.8, False),
            lambda r, d: [normal(r, (d[0] + 1, d[1]))]),
    "kde_leave_one_out": (lambda x: F.kde_entropy(x, 0.6, leave_one_out=True), lambda x: kde_torch(x, 0.6, True),
                          lambda r, d: [normal(r, (d[0] + 1, d[1]))]),
    "kde_3d_input": (lambda x: F.kde_entropy(x, 1.1, leave_one_out=True), lambda x: kde_torch(x, 1.1, True),
                     lambda r, d: [normal(r, (d[0] + 1, 2, d[2]))]),
    **{f"d_loss_{k}": (lambda dr, df, k=k: losses.discriminator_loss(dr, df, k), _d_loss_torch(k),
                       lambda r, d: [off_hinge(r, (d[0], 1)), off_hinge(r, (d[1], 1))])
       for k in losses.LOSS_KINDS},
    **{f"g_loss_{k}": (lambda df, k=k: losses.generator_loss(df, k)[0], _g_loss_torch(k),
                       lambda r, d: [off_hinge(r, (d[0], 1))])
       for k in losses.LOSS_KINDS},
    "g_loss_entropy": (lambda df, fake: losses.generator_loss(df, "non_saturating", fake, 0.5, 0.8)[0],
                       _g_loss_torch("non_saturating", 0.5, 0.8),
                       lambda r, d: [normal(r, (d[0] + 1, 1)), normal(r, (d[0] + 1, d[1]))]),
}

@pytest.mark.parametrize("name", sorted(CASES))
@given(sides=SIDES, seed=st.integers(0, 2 ** 16))
def test_gradgradcheck(name, sides, seed):
    gradgradcheck_case(CASES[name], sides, seed)


@pytest.mark.parametrize("name", ["linear", "sigmoid", "tanh", "softplus", "logsigmoid", "bce_logits_mean",
                                  "bce_mean", "softmax_ce_mean", "batch_norm_train_2d", "kde", "g_loss_entropy"])
def test_third_order(name):
    fn, _, make = CASES[name]
    xs = f64_leaves(make(np.random.default_rng(3), (2, 3, 2)))
    assert npgan.gradgradcheck(third_order(fn), xs, seed=1)


def _second_order(grad, sum_, arrays, fn, v, us, make_leaf):
    """(the gradients ∇⟨v, fn(x)⟩, then the gradient of Σᵢ⟨uᵢ, gᵢ⟩ with respect to every x and v)."""
    xs = [make_leaf(a) for a in arrays]
    vt = make_leaf(v)
    gs = grad(fn(*xs), xs, vt)
    s = None
    for g, u in zip(gs, us):
        if g is not None:
            s = sum_(g, u) if s is None else s + sum_(g, u)
    return gs, grad(s, xs + [vt], None, second=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_double_backward_parity_with_torch(name):
    torch = torch_or_skip()
    fn, tfn, arrays, v, us = double_backward_inputs(CASES[name])

    def ngrad(out, xs, g, second=False):
        if second:
            return npgan.grad(out, xs, allow_unused=True)
        return npgan.grad(out, xs, g, create_graph=True, allow_unused=True)

    def tgrad(out, xs, g, second=False):
        if second:
            return torch.autograd.grad(out, xs, allow_unused=True)
        return torch.autograd.grad(out, xs, g, create_graph=True, allow_unused=True)

    gs, hs = _second_order(ngrad, lambda g, u: (g * npgan.tensor(u)).sum(), arrays, fn, v, us,
                           lambda a: npgan.tensor(np.asarray(a, dtype=F64), requires_grad=True))
    tgs, ths = _second_order(tgrad, lambda g, u: (g * torch.from_numpy(u)).sum(), arrays, tfn, v, us,
                             lambda a: torch.tensor(np.asarray(a, dtype=F64), requires_grad=True))
    for k, (g, tg) in enumerate(zip(gs, tgs)):
        assert (g is None) == (tg is None), f"grad {k}: used by one and not the other"
        if g is not None:
            np.testing.assert_allclose(g.numpy(), tg.detach().numpy(), rtol=1e-10, atol=1e-10, err_msg=f"grad {k}")
    for k, (h, th, a) in enumerate(zip(hs, ths, arrays + [v])):
        h = np.zeros(np.shape(a)) if h is None else h.numpy()
        th = np.zeros(np.shape(a)) if th is None else th.detach().numpy()
        np.testing.assert_allclose(h, th, rtol=1e-10, atol=1e-10, err_msg=f"second derivative, input {k}")


def test_the_cases_have_a_second_derivative():
    """Each case's second pass reaches some input (x, or at least v): no case checks only zeros."""
    for name, (fn, _, make) in CASES.items():
        xs = f64_leaves(make(np.random.default_rng(0), (2, 2, 2)))
        out = fn(*xs)
        v = npgan.tensor(np.random.default_rng(1).standard_normal(out.shape), requires_grad=True)
        gs = [g for g in npgan.grad(out, xs, v, create_graph=True, allow_unused=True) if g is not None]
        assert gs and all(g.requires_grad for g in gs), name


# ============================================================================ the paths the cases do not take
def test_dropout_double_backward_closed_form():
    """y = x ⊙ s with the drawn scale s = m/(1 − p):  ∇ Σ y³ = 3 y² s,  ∇² Σ y³ = 6 x s³ (the same mask)."""
    rng = np.random.default_rng(2)
    x = npgan.tensor(rng.standard_normal((6, 5)), requires_grad=True, dtype=F64)
    npgan.manual_seed(5)
    y = F.dropout(x, 0.4)
    s = y.numpy() / x.numpy()
    assert set(np.round(s.ravel(), 12)) == {0.0, round(1 / 0.6, 12)}
    g, = npgan.grad((y ** 3).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), 3 * y.numpy() ** 2 * s, rtol=1e-13)
    h, = npgan.grad(g.sum(), x)
    np.testing.assert_allclose(h.numpy(), 6 * x.numpy() * s ** 3, rtol=1e-13)

    def fn(a):
        npgan.manual_seed(5)
        return F.dropout(a, 0.4) ** 3
    assert npgan.gradgradcheck(fn, [x])


def test_fused_leaky_relu_path(monkeypatch):
    """The GPU path (fused=True: backward reads y instead of the mask), run on the CPU with the kernels
    replaced by the formulas they implement."""
    from npgan import kernels
    from npgan.functional import LeakyReLU

    monkeypatch.setattr(kernels, "leaky_relu_forward", lambda x, a: np.maximum(x, a * x))
    monkeypatch.setattr(kernels, "leaky_relu_backward", lambda y, gy, a: np.where(y > 0, gy, a * gy))
    x = npgan.tensor(away(np.random.default_rng(4), (4, 3)), requires_grad=True, dtype=F64)
    for a in (0.0, 0.2, 1.0):
        assert npgan.gradgradcheck(lambda t, a=a: LeakyReLU(a, fused=True)(t) ** 3, [x])
        fused = npgan.grad((LeakyReLU(a, fused=True)(x) ** 3).sum(), x, create_graph=True)[0]
        plain = npgan.grad((LeakyReLU(a)(x) ** 3).sum(), x, create_graph=True)[0]
        np.testing.assert_array_equal(npgan.grad(fused.sum(), x)[0].numpy(), npgan.grad(plain.sum(), x)[0].numpy())


@pytest.mark.parametrize("rule", ["silverman", "scott", "median"])
def test_kde_rule_bandwidth_is_held_constant_at_second_order(rule):
    """With a rule, σ is picked in forward and held constant: the double backward equals the one with that
    σ passed as a number."""
    x = npgan.tensor(np.random.default_rng(6).standard_normal((7, 3)), requires_grad=True, dtype=F64)
    sigma = F.kde_bandwidth(x, rule)
    res = []
    for bw in (rule, sigma):
        g, = npgan.grad(F.kde_entropy(x, bw, leave_one_out=True), x, create_graph=True)
        res.append((g.numpy(), npgan.grad((g * g).sum(), x)[0].numpy()))
    np.testing.assert_array_equal(res[0][0], res[1][0])
    np.testing.assert_array_equal(res[0][1], res[1][1])


def test_kde_collapsed_batch_second_order_is_finite():
    """All points equal: the gradient is exactly 0 and the second derivative is finite (no 0/0)."""
    x = npgan.tensor(np.ones((5, 2)), requires_grad=True, dtype=F64)
    g, = npgan.grad(F.kde_entropy(x, 0.5), x, create_graph=True)
    assert np.all(g.numpy() == 0)
    h, = npgan.grad((g * npgan.tensor(np.arange(10.0).reshape(5, 2))).sum(), x)
    assert np.all(np.isfinite(h.numpy()))


def test_bce_at_saturated_probabilities_has_finite_second_derivatives():
    """p ∈ {0, 1} (the clamps active): the double backward stays finite, as PyTorch's."""
    p = npgan.tensor([0.0, 1.0, 0.5], requires_grad=True, dtype=F64)
    t = npgan.tensor([0.3, 0.6, 0.2], requires_grad=True, dtype=F64)
    gp, gt = npgan.grad(F.binary_cross_entropy(p, t), [p, t], create_graph=True)
    assert np.all(np.isfinite(gp.numpy())) and np.all(np.isfinite(gt.numpy()))
    for h in npgan.grad((gp * gp).sum() + (gt * gt).sum(), [p, t]):
        assert np.all(np.isfinite(h.numpy()))


# ============================================================================ R1 on an MLP discriminator
def _mlp(batch_norm=False):
    from npgan import nn
    npgan.set_default_dtype("float64")
    npgan.manual_seed(0)
    layers = [nn.Linear(4, 16)] + ([nn.BatchNorm1d(16)] if batch_norm else []) + [nn.LeakyReLU(0.2), nn.Linear(16, 1)]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "batch_norm"])
def test_r1_penalty_parity_with_torch(batch_norm):
    """penalty = Σ ‖∇ₓD(x)‖² (R1's sum over the batch) on Linear/LeakyReLU/Linear (and with BatchNorm1d in
    training mode): the penalty, ∇ₓD and every parameter's gradient of the penalty match PyTorch's."""
    torch = torch_or_skip()
    from npgan.interop import to_torch

    D = _mlp(batch_norm)
    TD = to_torch(D)
    xa = np.random.default_rng(8).standard_normal((32, 4))

    x = npgan.tensor(xa, requires_grad=True)
    g, = npgan.grad(D(x).sum(), x, create_graph=True)
    penalty = (g * g).sum()
    penalty.backward()

    tx = torch.tensor(xa, requires_grad=True)
    tg, = torch.autograd.grad(TD(tx).sum(), tx, create_graph=True)
    tpen = (tg * tg).sum()
    tpen.backward()

    assert_close(g, tg, rtol=1e-10, atol=1e-12, what="grad_x D")
    assert_close(penalty, tpen, rtol=1e-10, atol=1e-12, what="penalty")
    names = [n for n, _ in D.named_parameters()]
    assert names and sorted(names) == sorted(n for n, _ in TD.named_parameters())
    compare_penalty_grads(D, TD, rtol=1e-10, atol=1e-12, what="penalty: ")


@pytest.mark.parametrize("kind", losses.LOSS_KINDS)
def test_loss_gradient_penalty_parity_with_torch(kind):
    """Through every objective: ‖∇_{x_real, x_fake} L_D(D(x_real), D(x_fake))‖² differentiated to D's
    parameters, against PyTorch."""
    torch = torch_or_skip()
    from npgan.interop import to_torch

    D = _mlp()
    TD = to_torch(D)
    rng = np.random.default_rng(9)
    ra, fa = rng.standard_normal((16, 4)), rng.standard_normal((16, 4)) + 1.0

    xr, xf = npgan.tensor(ra, requires_grad=True), npgan.tensor(fa, requires_grad=True)
    gr, gf = npgan.grad(losses.discriminator_loss(D(xr), D(xf), kind), [xr, xf], create_graph=True)
    gg, = npgan.grad(losses.generator_loss(D(xf), kind)[0], xf, create_graph=True)
    ((gr * gr).sum() + (gf * gf).sum() + (gg * gg).sum()).backward()

    tr, tf_ = torch.tensor(ra, requires_grad=True), torch.tensor(fa, requires_grad=True)
    tgr, tgf = torch.autograd.grad(_d_loss_torch(kind)(TD(tr), TD(tf_)), [tr, tf_], create_graph=True)
    tgg, = torch.autograd.grad(_g_loss_torch(kind)(TD(tf_)), tf_, create_graph=True)
    ((tgr * tgr).sum() + (tgf * tgf).sum() + (tgg * tgg).sum()).backward()

    for a, b, what in ((gr, tgr, "real"), (gf, tgf, "fake"), (gg, tgg, "generator")):
        assert_close(a, b, rtol=1e-10, atol=1e-14, what=f"{kind}: grad_x of the loss ({what})")
    compare_penalty_grads(D, TD, rtol=1e-10, atol=1e-14, what=f"{kind}: ")


# ============================================================================ every device
DEVICE_CASES = ["linear", "leaky_relu", "sigmoid", "softplus", "logsigmoid", "bce_logits_mean", "bce_logits_none",
                "bce_mean", "softmax_ce_mean", "batch_norm_train_4d", "batch_norm_eval", "kde", "kde_leave_one_out",
                "g_loss_entropy", "d_loss_hinge"]


@pytest.mark.parametrize("name", DEVICE_CASES)
def test_double_backward_on_every_device(name, device):
    """The second derivatives on the device (with the fused CuPy kernels in the forward and first backward
    on a GPU) equal the CPU's."""
    fn, _, make = CASES[name]
    rng = np.random.default_rng(12)
    arrays = make(rng, (2, 3, 2))
    out_shape = fn(*f64_leaves(arrays)).shape
    v, us = rng.standard_normal(out_shape), [rng.standard_normal(np.shape(a)) for a in arrays]

    def run(dev):
        xs = [npgan.tensor(np.asarray(a, dtype=F64)).to(dev).requires_grad_() for a in arrays]
        vt = npgan.tensor(v).to(dev).requires_grad_()
        gs = npgan.grad(fn(*xs), xs, vt, create_graph=True, allow_unused=True)
        s = None
        for g, u in zip(gs, us):
            if g is not None:
                t = (g * npgan.tensor(u).to(dev)).sum()
                s = t if s is None else s + t
        hs = npgan.grad(s, xs + [vt], allow_unused=True)
        return [None if h is None else h.numpy() for h in hs]

    ref = run("cpu")
    got = run(device)
    for k, (a, b) in enumerate(zip(got, ref)):
        assert (a is None) == (b is None), f"input {k}"
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=f"second derivative, input {k}")
