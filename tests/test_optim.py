"""Optimizers: update formulas on known numbers, state_dict round trips, groups, zero_grad."""

from __future__ import annotations

import math

import numpy as np
import pytest

import npgan
from npgan import nn, optim


def param(v):
    return nn.Parameter(np.array(v, dtype=np.float64))


def test_sgd_plain_and_momentum_by_hand():
    p = param([1.0, -2.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    for _ in range(2):
        p.grad = np.array([1.0, 2.0])
        opt.step()
    # b1 = g, b2 = 0.9 g + g = 1.9 g; p = p0 - 0.1 (g + 1.9 g)
    np.testing.assert_allclose(p.data, [1.0 - 0.29, -2.0 - 0.58], rtol=1e-14)


def test_adam_first_step_is_lr_times_sign():
    p = param([1.0, -2.0, 3.0])
    opt = optim.Adam([p], lr=0.01)
    p.grad = np.array([0.5, -3.0, 1e-3])
    opt.step()
    np.testing.assert_allclose(p.data, [0.99, -1.99, 2.99], rtol=1e-6)
    assert opt.state[0]["step"] == 1


def test_adam_matches_the_textbook_formula_over_steps():
    rs = np.random.default_rng(0)
    p = param(rs.standard_normal(4))
    ref = p.data.copy()
    m = v = np.zeros(4)
    b1, b2, lr, eps, wd = 0.5, 0.99, 3e-3, 1e-8, 0.05
    opt = optim.Adam([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    for t in range(1, 8):
        g = rs.standard_normal(4)
        p.grad = g.copy()
        opt.step()
        g = g + wd * ref
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        ref = ref - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        np.testing.assert_allclose(p.data, ref, rtol=1e-12)


def test_rmsprop_by_hand():
    p = param([1.0])
    opt = optim.RMSprop([p], lr=0.01, alpha=0.9, eps=0.0)
    p.grad = np.array([2.0])
    opt.step()
    np.testing.assert_allclose(p.data, [1.0 - 0.01 * 2.0 / math.sqrt(0.1 * 4.0)], rtol=1e-14)


def test_parameters_without_gradient_are_skipped_and_zero_grad_clears():
    a, b = param([1.0]), param([2.0])
    opt = optim.SGD([a, b], lr=0.5)
    a.grad = np.array([1.0])
    opt.step()
    assert a.data[0] == 0.5 and b.data[0] == 2.0
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_parameter_groups_have_their_own_hyper_parameters():
    a, b = param([1.0]), param([1.0])
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    a.grad, b.grad = np.array([1.0]), np.array([1.0])
    opt.step()
    assert a.data[0] == pytest.approx(0.9) and b.data[0] == pytest.approx(0.5)


def _train(opt_cls, kwargs, steps, model, opt=None):
    opt = opt or opt_cls(model.parameters(), **kwargs)
    for s in range(steps):
        x = npgan.Tensor(np.random.default_rng(s).standard_normal((8, 3)))
        opt.zero_grad()
        (model(x) ** 2).mean().backward()
        opt.step()
    return opt


@pytest.mark.parametrize("cls,kwargs", [
    (optim.Adam, dict(lr=1e-2, betas=(0.5, 0.999), weight_decay=1e-3)),
    (optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (optim.RMSprop, dict(lr=1e-2, momentum=0.5)),
])
def test_state_dict_round_trip_resumes_exactly(cls, kwargs):
    """10 steps, save model + optimizer, resume in fresh objects for 5 more: identical to 15 in a row."""
    npgan.set_default_dtype("float64")

    def model():
        npgan.manual_seed(3)
        return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))

    straight = model()
    _train(cls, kwargs, 15, straight)

    first = model()
    opt = _train(cls, kwargs, 10, first)
    msd, osd = first.state_dict(), opt.state_dict()
    resumed = model()
    resumed.load_state_dict(msd)
    opt2 = cls(resumed.parameters(), **kwargs)
    opt2.load_state_dict(osd)
    for s in range(10, 15):  # the same batches as steps 10..14 of the straight run
        x = npgan.Tensor(np.random.default_rng(s).standard_normal((8, 3)))
        opt2.zero_grad()
        (resumed(x) ** 2).mean().backward()
        opt2.step()
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_optimizer_state_dict_is_a_copy():
    p = param([1.0, 2.0])
    opt = optim.Adam([p])
    p.grad = np.ones(2)
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"][...] = 99.0
    assert not (opt.state[0]["exp_avg"] == 99.0).any()
    assert sd["param_groups"][0]["params"] == [0] and sd["param_groups"][0]["betas"] == (0.9, 0.999)


def test_updates_happen_in_place_outside_the_graph():
    p = param([1.0, 2.0])
    data = p.data
    opt = optim.SGD([p], lr=0.1, momentum=0.5)
    (p * p).sum().backward()
    opt.step()
    assert p.data is data and p.creator is None and p.requires_grad
