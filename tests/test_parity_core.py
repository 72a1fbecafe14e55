"""PyTorch parity of the core (float64, rtol 1e-6): layers, activations, batch norm, BCE losses, optimizers,
state_dict interchange. Skipped with a reason when torch is not installed.

Tolerance, from the float64 error model of tests/error_bounds.py with u = 2⁻⁵³: every compared value is a sum
of at most a few hundred products or a short chain of elementwise ops (20 optimizer steps at most), so either
engine errs by at most γ_n·Σ|terms| ≈ 1e-13 of its terms' magnitude on any BLAS kernel: rtol 1e-6 (with
assert_close's atol 1e-12 for values that cancel to about 0) leaves a factor 1e7 for cancellation, and still
sees any formula difference larger than 1e-6. The float32 comparisons live in test_interop.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, compare_module_grads, copy_state_to_torch, torch_or_skip

import npgan
import npgan.functional as F
from npgan import nn, ops

torch = torch_or_skip()
tnn, TF = torch.nn, torch.nn.functional

RTOL = 1e-6

pytestmark = pytest.mark.usefixtures("device")  # every test runs on the CPU and on the GPU (see conftest.py)


@pytest.fixture(autouse=True)
def _float64():
    npgan.set_default_dtype("float64")


def pair(a):
    """The same float64 data as an npgan leaf and a torch leaf, both requiring grad."""
    a = np.array(a, dtype=np.float64)
    return npgan.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


def rng(seed=0):
    return np.random.default_rng(seed)


# ============================================================================ Linear
@pytest.mark.parametrize("xshape", [(5, 3), (2, 4, 3), (3,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(xshape, bias):
    m = nn.Linear(3, 4, bias=bias)
    tm = tnn.Linear(3, 4, bias=bias).double()
    copy_state_to_torch(m, tm)
    x, tx = pair(rng().standard_normal(xshape))
    y, ty = m(x), tm(tx)
    assert_close(y, ty, RTOL, what="Linear output")
    g = rng(1).standard_normal(y.shape)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    assert_close(x.grad, tx.grad, RTOL, what="Linear input grad")
    compare_module_grads(m, tm, RTOL)


def test_linear_functional_matches_torch():
    x, tx = pair(rng().standard_normal((4, 5)))
    w, tw = pair(rng(1).standard_normal((2, 5)))
    b, tb = pair(rng(2).standard_normal(2))
    (F.linear(x, w, b) ** 2).sum().backward()
    (TF.linear(tx, tw, tb) ** 2).sum().backward()
    for a, ta, n in ((x, tx, "x"), (w, tw, "w"), (b, tb, "b")):
        assert_close(a.grad, ta.grad, RTOL, what=n)


# ============================================================================ activations
X_ACT = np.array([-60.0, -20.5, -3.0, -1.0, -0.3, -1e-4, 1e-4, 0.25, 1.0, 2.5, 19.0, 25.0, 60.0])

ACTS = [
    ("relu", F.relu, TF.relu),
    ("leaky_relu", F.leaky_relu, TF.leaky_relu),
    ("leaky_relu_0.2", lambda t: F.leaky_relu(t, 0.2), lambda t: TF.leaky_relu(t, 0.2)),
    ("sigmoid", F.sigmoid, torch.sigmoid),
    ("tanh", F.tanh, torch.tanh),
    ("softplus", F.softplus, TF.softplus),
    ("logsigmoid", F.logsigmoid, TF.logsigmoid),
    ("module_relu", nn.ReLU(), tnn.ReLU()),
    ("module_leaky", nn.LeakyReLU(0.2), tnn.LeakyReLU(0.2)),
    ("module_sigmoid", nn.Sigmoid(), tnn.Sigmoid()),
    ("module_tanh", nn.Tanh(), tnn.Tanh()),
    ("module_softplus", nn.Softplus(), tnn.Softplus()),
]


@pytest.mark.parametrize("name,f,tf", ACTS, ids=[a[0] for a in ACTS])
def test_activations(name, f, tf):
    x, tx = pair(np.concatenate([X_ACT, rng().standard_normal(20)]).reshape(3, 11))
    y, ty = f(x), tf(tx)
    assert_close(y, ty, RTOL, what=f"{name} output")
    g = rng(1).standard_normal(y.shape)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    assert_close(x.grad, tx.grad, RTOL, what=f"{name} grad")


# ============================================================================ batch norm
def _bn_pair(c, momentum, affine=True):
    m = nn.BatchNorm1d(c, momentum=momentum, affine=affine)
    tm = tnn.BatchNorm1d(c, momentum=momentum, affine=affine).double()
    if affine:
        m.weight.data[...] = npgan.backend.asarray(rng(5).uniform(0.5, 1.5, c))
        m.bias.data[...] = npgan.backend.asarray(rng(6).standard_normal(c))
    copy_state_to_torch(m, tm)
    return m, tm


def _compare_buffers(m, tm, what):
    for k, v in tm.state_dict().items():
        assert_close(m.state_dict()[k], v, RTOL, what=f"{what}: {k}")


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5)])
@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm1d_train_then_eval(shape, momentum, affine):
    c = shape[1]
    m, tm = _bn_pair(c, momentum, affine)
    for step in range(4):
        x, tx = pair(rng(step).standard_normal(shape) * (1 + step) + step)
        y, ty = m(x), tm(tx)
        assert_close(y, ty, RTOL, what=f"train output, step {step}")
        g = rng(10 + step).standard_normal(shape)
        m.zero_grad()
        tm.zero_grad()
        y.backward(g)
        ty.backward(torch.from_numpy(g))
        assert_close(x.grad, tx.grad, RTOL, what=f"train input grad, step {step}")
        compare_module_grads(m, tm, RTOL)
        _compare_buffers(m, tm, f"after train step {step}")
    assert int(m.num_batches_tracked) == 4
    m.eval()
    tm.eval()
    x, tx = pair(rng(99).standard_normal(shape))
    y, ty = m(x), tm(tx)
    assert_close(y, ty, RTOL, what="eval output")
    g = rng(100).standard_normal(shape)
    m.zero_grad()
    tm.zero_grad()
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    assert_close(x.grad, tx.grad, RTOL, what="eval input grad")
    compare_module_grads(m, tm, RTOL)
    _compare_buffers(m, tm, "after eval step")


def test_batchnorm1d_without_running_stats():
    m = nn.BatchNorm1d(3, track_running_stats=False)
    tm = tnn.BatchNorm1d(3, track_running_stats=False).double()
    copy_state_to_torch(m, tm)
    m.eval()
    tm.eval()
    x, tx = pair(rng().standard_normal((5, 3)))
    y, ty = m(x), tm(tx)
    assert_close(y, ty, RTOL)
    (y * y).sum().backward()
    (ty * ty).sum().backward()
    assert_close(x.grad, tx.grad, RTOL)


# ============================================================================ BCE
LOGITS = np.array([-50.0, -50.0, 50.0, 50.0, -7.5, -1.0, -1e-3, 0.0, 0.4, 3.0, 12.0, 35.0])
TARGETS = np.array([0.0, 1.0, 0.0, 1.0, 0.3, 1.0, 0.5, 0.0, 0.9, 0.0, 1.0, 0.25])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(12,), (3, 4)])
def test_bce_with_logits(reduction, shape):
    x, tx = pair(LOGITS.reshape(shape))
    t, tt = pair(TARGETS.reshape(shape))
    y = F.binary_cross_entropy_with_logits(x, t, reduction)
    ty = TF.binary_cross_entropy_with_logits(tx, tt, reduction=reduction)
    assert_close(y, ty, RTOL, what="loss")
    g = np.asarray(rng().standard_normal(y.shape) + 1)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    assert_close(x.grad, tx.grad, RTOL, what="logits grad")
    assert_close(t.grad, tt.grad, RTOL, what="target grad")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_probabilities(reduction):
    p0 = np.array([1e-6, 0.01, 0.2, 0.5, 0.7, 0.99, 0.999999, 0.3, 0.45, 0.6])
    t0 = np.array([0.0, 1.0, 0.3, 1.0, 0.0, 0.5, 1.0, 0.0, 0.9, 0.2])
    p, tp = pair(p0)
    t, tt = pair(t0)
    y = F.binary_cross_entropy(p, t, reduction)
    ty = TF.binary_cross_entropy(tp, tt, reduction=reduction)
    assert_close(y, ty, RTOL, what="loss")
    g = np.asarray(rng().standard_normal(y.shape) + 1)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    assert_close(p.grad, tp.grad, RTOL, what="prob grad")
    assert_close(t.grad, tt.grad, RTOL, what="target grad")


def test_bce_probabilities_at_exactly_0_and_1():
    p, tp = pair([0.0, 1.0, 0.0, 1.0])
    t = np.array([1.0, 0.0, 0.0, 1.0])
    y = F.binary_cross_entropy(p, npgan.tensor(t), "none")
    ty = TF.binary_cross_entropy(tp, torch.from_numpy(t), reduction="none")
    assert_close(y, ty, RTOL)
    y.sum().backward()
    ty.sum().backward()
    assert_close(p.grad, tp.grad, RTOL)


# ============================================================================ reductions with ties
def test_max_min_ties_match_torch_amax():
    a = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    for fn, tfn in ((ops.max, torch.amax), (ops.min, torch.amin)):
        for axis in (0, 1, (0, 1)):
            x, tx = pair(a)
            fn(x, axis).sum().backward()
            tfn(tx, dim=axis).sum().backward()
            assert_close(x.grad, tx.grad, RTOL, what=f"{fn.__name__} axis {axis}")
    x, tx = pair(a)
    y, ty = pair(np.full_like(a, 2.0))
    ops.maximum(x, y).sum().backward()
    torch.maximum(tx, ty).sum().backward()
    assert_close(x.grad, tx.grad, RTOL)
    assert_close(y.grad, ty.grad, RTOL)


# ============================================================================ optimizers
def _mlp_pair():
    npgan.manual_seed(7)
    m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.LeakyReLU(0.2), nn.Linear(8, 8), nn.Tanh(),
                      nn.Linear(8, 1))
    tm = tnn.Sequential(tnn.Linear(4, 8), tnn.BatchNorm1d(8), tnn.LeakyReLU(0.2), tnn.Linear(8, 8),
                        tnn.Tanh(), tnn.Linear(8, 1)).double()
    copy_state_to_torch(m, tm)
    return m, tm


OPTIMS = {
    "adam": (lambda p: npgan.optim.Adam(p, lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)),
    "adam_wd_betas": (lambda p: npgan.optim.Adam(p, lr=2e-3, betas=(0.5, 0.99), eps=1e-6, weight_decay=0.1),
                      lambda p: torch.optim.Adam(p, lr=2e-3, betas=(0.5, 0.99), eps=1e-6, weight_decay=0.1)),
    "sgd": (lambda p: npgan.optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd_momentum": (lambda p: npgan.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    "sgd_nesterov": (lambda p: npgan.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    "rmsprop": (lambda p: npgan.optim.RMSprop(p, lr=1e-3, momentum=0.5, weight_decay=1e-2),
                lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5, weight_decay=1e-2)),
}


@pytest.mark.parametrize("name", sorted(OPTIMS))
def test_optimizer_trajectories(name):
    m, tm = _mlp_pair()
    make, tmake = OPTIMS[name]
    opt, topt = make(m.parameters()), tmake(tm.parameters())
    tparams = dict(tm.named_parameters())
    for step in range(20):
        xb = rng(step).standard_normal((16, 4))
        yb = (rng(100 + step).random((16, 1)) > 0.5).astype(np.float64)
        opt.zero_grad()
        topt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(m(npgan.tensor(xb)), npgan.tensor(yb))
        tloss = TF.binary_cross_entropy_with_logits(tm(torch.from_numpy(xb)), torch.from_numpy(yb))
        assert_close(loss, tloss, RTOL, what=f"loss at step {step}")
        loss.backward()
        tloss.backward()
        opt.step()
        topt.step()
        for k, p in m.named_parameters():
            assert_close(p, tparams[k], RTOL, what=f"{name}: {k} after step {step}")
    _compare_buffers(m, tm, name)


# ============================================================================ state_dict interchange
def test_state_dict_keys_and_shapes_match_the_torch_twin():
    m, tm = _mlp_pair()
    sd, tsd = m.state_dict(), tm.state_dict()
    assert list(sd) == list(tsd)
    for k in sd:
        assert tuple(sd[k].shape) == tuple(tsd[k].shape), k


def test_torch_state_dict_loads_into_npgan_and_back():
    m, tm = _mlp_pair()
    with torch.no_grad():
        for p in tm.parameters():
            p.add_(torch.randn_like(p))
        tm[1].running_mean.uniform_(-1, 1)
        tm[1].running_var.uniform_(0.5, 2)
        tm[1].num_batches_tracked.fill_(17)
    m.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(npgan.backend.to_numpy(m.state_dict()[k]), v.numpy(), err_msg=k)
    assert int(m[1].num_batches_tracked) == 17
    m.load_state_dict(tm.state_dict())  # torch tensors are accepted too
    tm2 = _mlp_pair()[1]
    copy_state_to_torch(m, tm2)
    for k, v in tm.state_dict().items():
        assert torch.equal(tm2.state_dict()[k], v), k
    x = rng().standard_normal((5, 4))
    m.eval()
    tm.eval()
    assert_close(m(npgan.tensor(x)), tm(torch.from_numpy(x)), RTOL)


def test_state_dict_keys_of_shared_modules_and_slices_match_torch():
    lin, tlin = nn.Linear(2, 2), tnn.Linear(2, 2).double()
    m, tm = nn.Sequential(lin, nn.Tanh(), lin), tnn.Sequential(tlin, tnn.Tanh(), tlin)
    assert list(m.state_dict()) == list(tm.state_dict())  # a shared layer appears under each name
    copy_state_to_torch(m, tm)
    m.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    m, tm = _mlp_pair()
    assert list(m[3:].state_dict()) == list(tm[3:].state_dict())  # slices keep the children's names


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm2d_train_then_eval(momentum):
    m = nn.BatchNorm2d(3, momentum=momentum)
    tm = tnn.BatchNorm2d(3, momentum=momentum).double()
    m.weight.data[...] = npgan.backend.asarray([0.5, 1.0, 2.0])
    copy_state_to_torch(m, tm)
    for step, training in enumerate([True, True, True, False]):
        m.train(training)
        tm.train(training)
        x, tx = pair(rng(step).standard_normal((4, 3, 2, 3)) + step)
        y, ty = m(x), tm(tx)
        assert_close(y, ty, RTOL, what=f"output, step {step}")
        g = rng(20 + step).standard_normal(y.shape)
        m.zero_grad()
        tm.zero_grad()
        y.backward(g)
        ty.backward(torch.from_numpy(g))
        assert_close(x.grad, tx.grad, RTOL, what=f"input grad, step {step}")
        compare_module_grads(m, tm, RTOL)
        _compare_buffers(m, tm, f"step {step}")


KINKS = [
    ("relu", F.relu, TF.relu),
    ("leaky_relu", lambda t: F.leaky_relu(t, 0.2), lambda t: TF.leaky_relu(t, 0.2)),
    ("abs", ops.abs, torch.abs),
    ("clip", lambda t: ops.clip(t, -1.0, 1.0), lambda t: torch.clamp(t, -1.0, 1.0)),
    ("clip_lo", lambda t: ops.clip(t, min=0.0), lambda t: torch.clamp(t, min=0.0)),
    ("pow0", lambda t: t ** 0, lambda t: t ** 0),
    ("sqrt_pos", lambda t: ops.sqrt(t * t + 1.0), lambda t: torch.sqrt(t * t + 1.0)),
]


@pytest.mark.parametrize("name,f,tf", KINKS, ids=[k[0] for k in KINKS])
def test_gradients_at_kinks_follow_torch(name, f, tf):
    x, tx = pair([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    y, ty = f(x), tf(tx)
    assert_close(y, ty, RTOL, what=f"{name} output")
    y.sum().backward()
    ty.sum().backward()
    assert_close(x.grad, tx.grad, RTOL, what=f"{name} grad")
