"""Gradients of gradients through the convolutions: the ``backward_graph`` of Conv2d, ConvTranspose2d and
Conv2dWeightGrad (npgan/conv.py).

gradgradcheck (hypothesis: random geometry — strides, padding, dilation, output_padding, bias — float64, in one
piece and split over threads), third order, PyTorch parity of every second derivative to 1e-10, and a full
discriminator step with an R1 penalty on a small DCGAN discriminator (convolutions, LeakyReLU, BatchNorm2d)
against PyTorch: penalty, loss and every parameter's gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
from conv_problems import conv_arrays, geometry, np_conv, torch_conv
from helpers import assert_close, split_ops, torch_or_skip
from hypothesis import given, settings

import npgan
import npgan.functional as F
from npgan import nn
from npgan.conv import Conv2dWeightGrad, conv_output_size

F64 = np.float64


def leaves(arrays):
    return [npgan.tensor(np.asarray(a, dtype=F64), requires_grad=True) for a in arrays if a is not None]


# ============================================================================ gradgradcheck
@pytest.mark.usefixtures("layout")
@settings(max_examples=15)
@given(g=geometry())
def test_conv2d_gradgradcheck(threads, g):
    assert npgan.gradgradcheck(np_conv(g, False), leaves(conv_arrays(g, False)), seed=g["seed"] % 1000)


@pytest.mark.usefixtures("layout")
@settings(max_examples=15)
@given(g=geometry(transposed=True))
def test_conv_transpose2d_gradgradcheck(threads, g):
    assert npgan.gradgradcheck(np_conv(g, True), leaves(conv_arrays(g, True)), seed=g["seed"] % 1000)


def _weight_grad_problem(g):
    """(x, gy) for conv2d's geometry g, and the op gw = Conv2dWeightGrad(x, gy)."""
    x, w, _ = conv_arrays(g, False)
    out = tuple(conv_output_size(g["HW"][a], g["k"][a], g["s"][a], g["p"][a], g["d"][a]) for a in (0, 1))
    gy = np.random.default_rng(g["seed"] + 1).standard_normal((g["N"], g["O"]) + out)
    return [x, gy], lambda x, gy: Conv2dWeightGrad(g["s"], g["p"], g["d"], g["k"])(x, gy)


@pytest.mark.usefixtures("layout")
@settings(max_examples=15)
@given(g=geometry())
def test_weight_grad_op_gradcheck_and_gradgradcheck(threads, g):
    """The weight gradient as an op: its value is conv2d's weight gradient, its backward and double backward
    match central differences (x and gy both checked)."""
    arrays, fn = _weight_grad_problem(g)
    x, gy = leaves(arrays)
    w = npgan.tensor(conv_arrays(g, False)[1], requires_grad=True)
    y = F.conv2d(npgan.tensor(arrays[0]), w, None, g["s"], g["p"], g["d"])
    y.backward(arrays[1])
    assert_close(fn(x, gy), w.grad, rtol=1e-12, atol=1e-12, what="Conv2dWeightGrad vs conv2d's weight gradient")
    assert npgan.gradcheck(fn, [x, gy], seed=1)
    assert npgan.gradgradcheck(fn, [x, gy], seed=1)


def _third_order(fn):
    """x ↦ ∇_w(⟨r, y⟩ + ‖y‖²/2), y = fn(x, w, ...), with a fixed r, recorded: Conv2dWeightGrad of (x, r + y)
    (the transposed conv: of (r + y, x)), both arguments depending on the inputs. Its gradgradcheck checks third
    derivatives, running the double backward of each op's double backward, Conv2dWeightGrad's included."""
    def g(*xs):
        out = fn(*xs)
        r = npgan.tensor(np.random.default_rng(7).standard_normal(out.shape))
        return npgan.grad((out * r).sum() + (out * out).sum() * 0.5, xs[1], create_graph=True)[0]
    return g


THIRD = [dict(N=2, C=2, O=3, k=(3, 2), s=(2, 1), d=(1, 2), p=(1, 2), bias=True, HW=(6, 5), op=(1, 0), seed=5),
         dict(N=1, C=2, O=2, k=(2, 2), s=(1, 2), d=(2, 1), p=(0, 1), bias=False, HW=(5, 4), op=(1, 1), seed=6)]


@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("g", THIRD, ids=["a", "b"])
def test_third_order(transposed, g):
    if transposed:
        g = dict(g, HW=(3, 3))
    assert npgan.gradgradcheck(_third_order(np_conv(g, transposed)), leaves(conv_arrays(g, transposed)), seed=2)


# ============================================================================ PyTorch parity
def _table(transposed):
    """Strides 1-2, padding 0-2, dilation 1-2 (mixed per axis too), output_padding where valid, bias on/off."""
    rows = []
    for s in (1, 2):
        for p in (0, 1, 2):
            for d in (1, 2):
                for bias in (True, False):
                    g = dict(N=2, C=3, O=2, k=(3, 2), s=(s, s), p=(p, p), d=(d, d), bias=bias, seed=10 * s + p,
                             HW=(7, 6))
                    if transposed:
                        g["HW"] = (4, 4)
                        g["op"] = (max(s, d) - 1, 0)
                    rows.append(g)
    rows.append(dict(N=1, C=2, O=3, k=(2, 3), s=(2, 1), p=(1, 0), d=(1, 2), bias=True, seed=3, HW=(6, 7),
                     op=(1, 1)))
    return rows


def _second_order(grad, wrap, arrays, fn, v, us, second):
    """(∇⟨v, fn(x)⟩ for every input, recorded; then the gradient of Σᵢ⟨uᵢ, gᵢ⟩ w.r.t. every input and v)."""
    xs = [wrap(a, True) for a in arrays]
    vt = wrap(v, True)
    gs = grad(fn(*xs), xs, vt, create_graph=True)
    s = sum((g * wrap(u, False)).sum() for g, u in zip(gs, us))
    return gs, second(s, xs + [vt])


@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
def test_double_backward_parity_with_torch(transposed):
    torch = torch_or_skip()
    for g in _table(transposed):
        arrays = [a for a in conv_arrays(g, transposed) if a is not None]
        fn, tfn = np_conv(g, transposed), torch_conv(g, transposed)
        rng = np.random.default_rng(g["seed"] + 100)
        v = rng.standard_normal(fn(*leaves(arrays)).shape)
        us = [rng.standard_normal(a.shape) for a in arrays]
        gs, hs = _second_order(
            lambda o, xs, vt, create_graph: npgan.grad(o, xs, vt, create_graph=create_graph),
            lambda a, rg: npgan.tensor(np.asarray(a, dtype=F64), requires_grad=rg), arrays, fn, v, us,
            lambda s, xs: npgan.grad(s, xs, allow_unused=True))
        tgs, ths = _second_order(
            lambda o, xs, vt, create_graph: torch.autograd.grad(o, xs, vt, create_graph=create_graph),
            lambda a, rg: torch.tensor(np.asarray(a, dtype=F64), requires_grad=rg), arrays,
            lambda x, w, b=None, f=tfn: f(x, w, b), v, us,
            lambda s, xs: torch.autograd.grad(s, xs, allow_unused=True, materialize_grads=True))
        where = f"{'conv_transpose2d' if transposed else 'conv2d'} {g}"
        for k, (a, b) in enumerate(zip(gs, tgs)):
            assert_close(a, b, rtol=1e-10, atol=1e-10, what=f"{where}: gradient {k}")
        for k, (a, b) in enumerate(zip(hs, ths)):
            a = np.zeros(b.shape) if a is None else a.numpy()
            assert_close(a, b, rtol=1e-10, atol=1e-10, what=f"{where}: second derivative, input {k}")
            if k < 2 or k == len(hs) - 1:  # x, w and v: each has a second derivative (the bias has none)
                assert np.abs(a).max() > 0, f"{where}: zero second derivative for input {k}"


# ============================================================================ R1 on a DCGAN discriminator
def _dcgan_d():
    npgan.set_default_dtype("float64")
    npgan.manual_seed(0)
    D = nn.Sequential(nn.Conv2d(1, 4, 4, 2, 1), nn.LeakyReLU(0.2),
                      nn.Conv2d(4, 8, 4, 2, 1, bias=False), nn.BatchNorm2d(8), nn.LeakyReLU(0.2),
                      nn.Conv2d(8, 1, 2, 1, 0, bias=False), nn.Flatten())
    for m in (D[3],):  # non-trivial affine batch norm parameters
        m.weight.data[...] = np.random.default_rng(1).uniform(0.5, 1.5, m.weight.shape)
        m.bias.data[...] = np.random.default_rng(2).uniform(-0.3, 0.3, m.bias.shape)
    return D


def _d_step_with_r1(D, real, fake, gamma, lib):
    """BCE-with-logits D loss + γ/2 · mean_n ‖∇ₓD(x_real)_n‖²; returns (loss, penalty, ∇ₓD(x_real))."""
    if lib == "npgan":
        x = npgan.tensor(real, requires_grad=True)
        dr = D(x)
        g, = npgan.grad(dr.sum(), x, create_graph=True)
        bce = F.binary_cross_entropy_with_logits
        ones, zeros = npgan.tensor(np.ones(dr.shape)), npgan.tensor(np.zeros(dr.shape))
        df = D(npgan.tensor(fake))
    else:
        torch = torch_or_skip()
        x = torch.tensor(real, requires_grad=True)
        dr = D(x)
        g, = torch.autograd.grad(dr.sum(), x, create_graph=True)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        ones, zeros = torch.ones(dr.shape, dtype=torch.float64), torch.zeros(dr.shape, dtype=torch.float64)
        df = D(torch.tensor(fake))
    penalty = (g * g).sum() / real.shape[0]
    loss = bce(dr, ones) + bce(df, zeros) + penalty * (gamma / 2)
    loss.backward()
    return loss, penalty, g


def test_r1_d_step_on_a_dcgan_discriminator_parity_with_torch(threads):
    """A full D step's gradients with R1 through Conv2d (with and without bias), LeakyReLU and BatchNorm2d in
    training mode: ∇ₓD, the penalty, the loss and every parameter's gradient equal PyTorch's (in one piece and
    with every op split over threads)."""
    torch_or_skip()
    from npgan.interop import to_torch

    D = _dcgan_d()
    TD = to_torch(D)
    rng = np.random.default_rng(4)
    real, fake = rng.standard_normal((6, 1, 8, 8)), rng.standard_normal((6, 1, 8, 8)) + 0.5
    loss, penalty, g = _d_step_with_r1(D, real, fake, 10.0, "npgan")
    tloss, tpenalty, tg = _d_step_with_r1(TD, real, fake, 10.0, "torch")

    assert_close(g, tg, rtol=1e-9, atol=1e-12, what="grad_x D")
    assert_close(penalty, tpenalty, rtol=1e-9, atol=1e-12, what="R1 penalty")
    assert_close(loss, tloss, rtol=1e-9, atol=1e-12, what="D loss with R1")
    assert float(penalty.numpy()) > 1e-3
    tparams = dict(TD.named_parameters())
    names = [n for n, _ in D.named_parameters()]
    assert sorted(names) == sorted(tparams) and len(names) == 6
    for name, p in D.named_parameters():
        assert_close(p.grad, tparams[name].grad, rtol=1e-9, atol=1e-12, what=f"gradient of {name}")


def test_r1_penalty_alone_reaches_every_conv_weight():
    """The penalty's own gradient (no loss term) flows through the double backward to each conv weight and to
    the batch norm's scale, not only through the first-order path: compared with PyTorch and nonzero."""
    torch_or_skip()
    from npgan.interop import to_torch

    D = _dcgan_d()
    TD = to_torch(D)
    real = np.random.default_rng(5).standard_normal((4, 1, 8, 8))
    x = npgan.tensor(real, requires_grad=True)
    g, = npgan.grad(D(x).sum(), x, create_graph=True)
    (g * g).sum().backward()
    torch = torch_or_skip()
    tx = torch.tensor(real, requires_grad=True)
    tg, = torch.autograd.grad(TD(tx).sum(), tx, create_graph=True)
    (tg * tg).sum().backward()
    tparams = dict(TD.named_parameters())
    for name, p in D.named_parameters():
        ours = np.zeros(p.shape) if p.grad is None else p.grad
        theirs = tparams[name].grad
        theirs = np.zeros(p.shape) if theirs is None else theirs.numpy()
        assert_close(ours, theirs, rtol=1e-9, atol=1e-12, what=f"penalty's gradient of {name}")
        if name.endswith("weight"):
            assert np.abs(ours).max() > 0, f"no gradient for {name}"


def test_split_and_whole_give_the_same_second_derivatives():
    """Conv2dWeightGrad and the convolutions of the second pass, split over 3 threads, equal the one-piece
    result (the chunks' weight-gradient parts are summed)."""
    g = THIRD[0]

    def run():
        arrays = conv_arrays(g, False)
        xs = leaves(arrays)
        out = np_conv(g, False)(*xs)
        gs = npgan.grad(out, xs, np.ones(out.shape), create_graph=True)
        return [h.numpy() for h in npgan.grad(sum((q * q).sum() for q in gs), xs[:2])]  # x, w (the bias has none)

    whole = run()
    with split_ops(3):
        split = run()
    for a, b in zip(whole, split):
        assert_close(a, b, rtol=1e-12, atol=1e-12, what="split vs whole")


# ============================================================================ every device
@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
def test_double_backward_on_every_device(transposed, device):
    """The second derivatives on the device equal the CPU's."""
    g = dict(THIRD[0], HW=(3, 3)) if transposed else THIRD[0]
    arrays = [a for a in conv_arrays(g, transposed) if a is not None]
    fn = np_conv(g, transposed)

    def run(dev):
        xs = [npgan.tensor(np.asarray(a, dtype=F64)).to(dev).requires_grad_() for a in arrays]
        out = fn(*xs)
        gs = npgan.grad(out, xs, npgan.tensor(np.ones(out.shape)).to(dev), create_graph=True)
        return [h.numpy() for h in npgan.grad(sum((q * q).sum() for q in gs), xs[:2])]  # x, w (the bias has none)

    for a, b in zip(run(device), run("cpu")):
        assert_close(a, b, rtol=1e-10, atol=1e-12, what=f"{device} vs cpu")
