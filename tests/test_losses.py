"""GAN objectives (npgan.gan.losses.discriminator_loss / generator_loss): values, gradients, PyTorch parity."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import torch_or_skip
from hypothesis import given, settings
from hypothesis import strategies as st

import npgan
from npgan.gan.losses import LOSS_KINDS, discriminator_loss, generator_loss
from npgan.kde import kde_entropy


def _softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _relu(x):
    return np.maximum(x, 0)


# Direct formulas on numpy arrays (r = D(x), f = D(G(z)), logits / raw outputs).
D_FORMULAS = {
    "minimax": lambda r, f: _softplus(-r).mean() + _softplus(f).mean(),      # −log σ(r), −log(1 − σ(f))
    "non_saturating": lambda r, f: _softplus(-r).mean() + _softplus(f).mean(),
    "lsgan": lambda r, f: 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f ** 2).mean(),
    "hinge": lambda r, f: _relu(1 - r).mean() + _relu(1 + f).mean(),
    "wasserstein": lambda r, f: f.mean() - r.mean(),
}
G_FORMULAS = {
    "minimax": lambda f: np.log(1 - 1 / (1 + np.exp(-f))).mean(),                # log(1 − σ(f))
    "non_saturating": lambda f: -np.log(1 / (1 + np.exp(-f))).mean(),            # −log σ(f)
    "lsgan": lambda f: 0.5 * ((f - 1) ** 2).mean(),
    "hinge": lambda f: -f.mean(),
    "wasserstein": lambda f: -f.mean(),
}


def _outs(seed, shape_r=(16, 1), shape_f=(12, 1), scale=2.0):
    rs = np.random.default_rng(seed)
    return rs.standard_normal(shape_r) * scale, rs.standard_normal(shape_f) * scale


def _t(a, grad=True):
    return npgan.tensor(np.array(a), requires_grad=grad)  # on the current device


def test_loss_kinds():
    assert LOSS_KINDS == ("minimax", "non_saturating", "lsgan", "hinge", "wasserstein")


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_values_against_direct_formulas(device, kind):
    r, f = _outs(1)
    ld = discriminator_loss(_t(r, False), _t(f, False), kind)
    lg, h = generator_loss(_t(f, False), kind)
    assert ld.shape == () and lg.shape == () and h is None
    assert ld.item() == pytest.approx(D_FORMULAS[kind](r, f), rel=1e-12)
    assert lg.item() == pytest.approx(G_FORMULAS[kind](f), rel=1e-12)


@settings(max_examples=15)
@given(kind=st.sampled_from(LOSS_KINDS), nr=st.integers(1, 9), nf=st.integers(1, 9),
       seed=st.integers(0, 2 ** 31 - 1))
def test_gradcheck_float64(device, kind, nr, nf, seed):
    npgan.set_default_dtype("float64")
    r, f = _outs(seed, (nr,), (nf, 1))
    # keep hinge/relu kinks away from the finite-difference step
    r[np.abs(r - 1) < 1e-3] += 0.01
    f[np.abs(f + 1) < 1e-3] += 0.01
    npgan.gradcheck(lambda a, b: discriminator_loss(a, b, kind), [_t(r), _t(f)], atol=1e-8, rtol=1e-6)
    npgan.gradcheck(lambda b: generator_loss(b, kind)[0], [_t(f)], atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_torch_parity(device, kind):
    torch = torch_or_skip()
    tf = torch.nn.functional
    r, f = _outs(7, (10, 1), (8, 1))
    rt = torch.tensor(r, requires_grad=True)
    ft = torch.tensor(f, requires_grad=True)
    if kind in ("minimax", "non_saturating"):
        ld_t = tf.binary_cross_entropy_with_logits(rt, torch.ones_like(rt)) + \
            tf.binary_cross_entropy_with_logits(ft, torch.zeros_like(ft))
    elif kind == "lsgan":
        ld_t = 0.5 * ((rt - 1) ** 2).mean() + 0.5 * (ft ** 2).mean()
    elif kind == "hinge":
        ld_t = tf.relu(1 - rt).mean() + tf.relu(1 + ft).mean()
    else:
        ld_t = ft.mean() - rt.mean()
    ld_t.backward()
    a, b = _t(r), _t(f)
    ld = discriminator_loss(a, b, kind)
    ld.backward()
    assert ld.item() == pytest.approx(ld_t.item(), rel=1e-12)
    np.testing.assert_allclose(npgan.backend.to_numpy(a.grad), rt.grad.numpy(), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(npgan.backend.to_numpy(b.grad), ft.grad.numpy(), rtol=1e-10, atol=1e-15)

    ft2 = torch.tensor(f, requires_grad=True)
    if kind == "minimax":
        lg_t = -tf.binary_cross_entropy_with_logits(ft2, torch.zeros_like(ft2))
    elif kind == "non_saturating":
        lg_t = tf.binary_cross_entropy_with_logits(ft2, torch.ones_like(ft2))
    elif kind == "lsgan":
        lg_t = 0.5 * ((ft2 - 1) ** 2).mean()
    else:
        lg_t = -ft2.mean()
    lg_t.backward()
    b2 = _t(f)
    lg, _ = generator_loss(b2, kind)
    lg.backward()
    assert lg.item() == pytest.approx(lg_t.item(), rel=1e-12)
    np.testing.assert_allclose(npgan.backend.to_numpy(b2.grad), ft2.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_minimax_saturates_non_saturating_does_not():
    n = 8
    logits = np.full((n, 1), -20.0)          # D confidently rejects every fake
    grads = {}
    for kind in ("minimax", "non_saturating"):
        t = _t(logits)
        generator_loss(t, kind)[0].backward()
        grads[kind] = t.grad
    # minimax: ∂/∂logit = −σ(logit)/n ≈ −2e−9/n: vanishes
    assert np.abs(grads["minimax"]).max() < 1e-8
    np.testing.assert_allclose(grads["minimax"], -1 / (1 + np.exp(20.0)) / n, rtol=1e-10)
    # non-saturating: ∂/∂logit = (σ(logit) − 1)/n ≈ −1/n: full strength
    np.testing.assert_allclose(grads["non_saturating"], (1 / (1 + np.exp(20.0)) - 1) / n, rtol=1e-10)
    assert np.abs(grads["non_saturating"]).min() > 0.99 / n
    # where D is fooled (logit ≫ 0) it is the other way round
    t = _t(np.full((n, 1), 20.0))
    generator_loss(t, "minimax")[0].backward()
    assert np.abs(t.grad).min() > 0.99 / n


def test_float32_stays_finite_for_extreme_logits():
    big = npgan.Tensor(np.array([[-200.0], [200.0], [0.0]], dtype=np.float32), requires_grad=True)
    for kind in LOSS_KINDS:
        for loss in (discriminator_loss(big, big, kind), generator_loss(big, kind)[0]):
            assert loss.dtype == np.float32 and np.isfinite(loss.item())
            big.grad = None
            loss.backward()
            assert np.isfinite(big.grad).all()


@pytest.mark.parametrize("kind", LOSS_KINDS)
@pytest.mark.parametrize("loo", [False, True])
def test_generator_loss_with_entropy(kind, loo):
    rs = np.random.default_rng(11)
    f = rs.standard_normal((12, 1))
    x = rs.standard_normal((12, 3))
    lam = 0.3
    logits, fake = _t(f), _t(x)
    loss, h = generator_loss(logits, kind, fake=fake, entropy_weight=lam, bandwidth="scott",
                             leave_one_out=loo)
    adv = G_FORMULAS[kind](f)
    h_ref = kde_entropy(_t(x, False), "scott", leave_one_out=loo).item()
    assert h is not None and h.item() == pytest.approx(h_ref, rel=1e-12)
    assert loss.item() == pytest.approx(adv - lam * h_ref, rel=1e-12)
    loss.backward()
    # the gradient reaching the fakes is −λ ∂H/∂x
    x2 = _t(x)
    kde_entropy(x2, "scott", leave_one_out=loo).backward()
    np.testing.assert_allclose(fake.grad, -lam * x2.grad, rtol=1e-12, atol=1e-15)
    logits2 = _t(f)
    generator_loss(logits2, kind)[0].backward()
    np.testing.assert_allclose(logits.grad, logits2.grad, rtol=1e-12)
    npgan.gradcheck(lambda a, b: generator_loss(a, kind, fake=b, entropy_weight=lam, bandwidth=0.8,
                                                leave_one_out=loo)[0], [_t(f), _t(x)], atol=1e-8, rtol=1e-6)


def test_entropy_weight_zero_gives_none():
    loss, h = generator_loss(_t(np.zeros((4, 1))), fake=_t(np.zeros((4, 2))), entropy_weight=0.0)
    assert h is None
    assert loss.item() == pytest.approx(np.log(2.0))  # non-saturating is the default: −log σ(0)


def test_bad_arguments():
    f = _t(np.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"unknown loss kind 'wgan'.*minimax.*non_saturating.*lsgan.*hinge"):
        generator_loss(f, "wgan")
    with pytest.raises(ValueError, match=r"unknown loss kind 'bce'.*wasserstein"):
        discriminator_loss(f, f, "bce")
    with pytest.raises(ValueError, match="pass fake=G"):
        generator_loss(f, entropy_weight=0.1)
    with pytest.raises(ValueError, match="entropy_weight"):
        generator_loss(f, fake=_t(np.zeros((4, 2))), entropy_weight=-0.1)
    with pytest.raises(TypeError, match="d_real must be a Tensor"):
        discriminator_loss(np.zeros((4, 1)), f)
    with pytest.raises(ValueError, match="empty"):
        generator_loss(_t(np.zeros((0, 1))))
