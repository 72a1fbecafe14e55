"""Layers and modules: gradcheck of every layer (float64), state_dict, dtypes, seeding, init."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import npgan
from npgan import nn

F64 = np.float64


def arr(shape, lo=-2.0, hi=2.0):
    return hnp.arrays(F64, shape, elements=st.floats(lo, hi, allow_nan=False, width=64))


def layer_gradcheck(layer, x):
    """gradcheck w.r.t. the input and every parameter of a float64 layer (the parameters themselves)."""
    xt = npgan.tensor(x, requires_grad=True)  # on the current device
    params = list(layer.parameters())
    assert all(p.dtype == F64 for p in params)
    before = [p.numpy().copy() for p in params]
    assert npgan.gradcheck(lambda x, *ps: layer(x), [xt, *params], cast=False)
    for p, b in zip(params, before):  # gradcheck restores what it perturbs
        np.testing.assert_array_equal(p.numpy(), b)


@given(batch=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), fin=st.integers(1, 4),
       fout=st.integers(1, 4), bias=st.booleans(), data=st.data())
def test_linear_layer_gradcheck(device, batch, fin, fout, bias, data):
    npgan.set_default_dtype("float64")
    layer = nn.Linear(fin, fout, bias=bias)
    x = data.draw(arr(batch + (fin,)))
    y = layer(npgan.tensor(x))
    want = x @ layer.weight.numpy().T + (layer.bias.numpy() if bias else 0)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-12, atol=1e-12)
    layer_gradcheck(layer, x)


@st.composite
def bn_input(draw, dims):
    n, c = draw(st.integers(2, 4)), draw(st.integers(1, 3))
    shape = (n, c) if dims == 2 else (n, c, draw(st.integers(1, 3)))
    # rows 3 apart plus noise in [-1, 1]: no channel with ~zero variance
    return draw(arr(shape, -1.0, 1.0)) + 3.0 * np.arange(n).reshape((n,) + (1,) * (len(shape) - 1))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("training", [True, False])
@given(data=st.data())
def test_batchnorm1d_gradcheck(device, dims, training, data):
    npgan.set_default_dtype("float64")
    x = data.draw(bn_input(dims))
    bn = nn.BatchNorm1d(x.shape[1])
    on_device = npgan.backend.asarray
    bn.weight.data[...] = on_device(data.draw(arr((x.shape[1],), 0.5, 2.0)))
    bn.bias.data[...] = on_device(data.draw(arr((x.shape[1],))))
    bn.running_mean[...] = on_device(data.draw(arr((x.shape[1],))))
    bn.running_var[...] = on_device(data.draw(arr((x.shape[1],), 0.5, 2.0)))
    bn.train(training)
    layer_gradcheck(bn, x)


def test_batchnorm2d_gradcheck(device):
    npgan.set_default_dtype("float64")
    x = np.random.default_rng(0).standard_normal((3, 2, 2, 3))
    bn = nn.BatchNorm2d(2)
    bn.weight.data[...] = npgan.backend.asarray([0.7, 1.3])
    layer_gradcheck(bn, x)
    bn.eval()
    layer_gradcheck(bn, x)


@pytest.mark.parametrize("layer,ref", [
    (nn.ReLU(), lambda a: np.maximum(a, 0)),
    (nn.LeakyReLU(0.2), lambda a: np.where(a > 0, a, 0.2 * a)),
    (nn.Sigmoid(), lambda a: 1 / (1 + np.exp(-a))),
    (nn.Tanh(), np.tanh),
    (nn.Softplus(), lambda a: np.log1p(np.exp(a))),
    (nn.Identity(), lambda a: a),
    (nn.Flatten(), lambda a: a.reshape(a.shape[0], -1)),
    (nn.Unflatten(1, (2, 3)), lambda a: a.reshape(a.shape[0], 2, 3, *a.shape[2:])),
])
def test_parameterless_layers(layer, ref):
    x = np.random.default_rng(1).uniform(0.1, 2, (4, 6)) * np.where(np.arange(24).reshape(4, 6) % 2, 1, -1)
    t = npgan.Tensor(x, requires_grad=True)
    np.testing.assert_allclose(layer(t).data, ref(x), rtol=1e-12)
    assert npgan.gradcheck(layer, [t])


def test_dropout_layer_train_and_eval():
    d = nn.Dropout(0.5)
    x = npgan.ones(100, 100)
    assert (d(x).data == 0).any()
    d.eval()
    assert d(x) is x


# ============================================================================ modules
class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.LeakyReLU(0.2), nn.Linear(4, 2))
        self.head = nn.Linear(2, 1, bias=False)

    def forward(self, x):
        return self.head(self.body(x))


def test_state_dict_keys_order_and_copies():
    m = MLP()
    sd = m.state_dict()
    assert list(sd) == ["body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias", "body.1.running_mean",
                        "body.1.running_var", "body.1.num_batches_tracked", "body.3.weight", "body.3.bias",
                        "head.weight"]
    assert sd["body.1.num_batches_tracked"].shape == () and sd["body.1.num_batches_tracked"].dtype == np.int64
    sd["body.0.weight"][...] = 7.0  # a copy: the module is unchanged
    assert not (m.body[0].weight.data == 7.0).any()
    names = [k for k, _ in m.named_parameters()]
    assert names == ["body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias", "body.3.weight",
                     "body.3.bias", "head.weight"]
    assert m.num_parameters() == 12 + 4 + 4 + 4 + 8 + 2 + 2


def test_load_state_dict_round_trip_and_training_mode():
    npgan.manual_seed(0)
    a = MLP()
    npgan.manual_seed(1)
    b = MLP()
    x = npgan.randn(5, 3)
    assert not np.allclose(a(x).data, b(x).data)
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    np.testing.assert_array_equal(a(x).data, b(x).data)
    assert not a.training and not a.body[1].training
    a.train()
    assert all(m.training for m in a.modules())


def test_zero_grad_and_parameter_sharing():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, nn.Tanh(), lin)  # the same layer twice: its parameters once
    assert len(list(seq.parameters())) == 2
    seq(npgan.randn(3, 2)).sum().backward()
    assert lin.weight.grad is not None
    seq.zero_grad()
    assert lin.weight.grad is None and lin.bias.grad is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layers_follow_the_default_dtype(dtype):
    npgan.set_default_dtype(dtype)
    for m in (nn.Linear(3, 2), nn.BatchNorm1d(3), nn.BatchNorm2d(3)):
        for k, v in m.state_dict().items():
            want = np.int64 if k == "num_batches_tracked" else np.dtype(dtype)
            assert v.dtype == want, (type(m).__name__, k, v.dtype)
    y = nn.Linear(3, 2)(npgan.randn(4, 3))
    assert y.dtype == np.dtype(dtype)


def test_module_double_and_float():
    m = MLP().double()
    assert all(v.dtype == (np.int64 if k.endswith("tracked") else F64) for k, v in m.state_dict().items())
    m.float()
    assert all(p.dtype == np.float32 for p in m.parameters())


def test_manual_seed_makes_init_reproducible():
    npgan.manual_seed(42)
    a = MLP().state_dict()
    npgan.manual_seed(42)
    b = MLP().state_dict()
    npgan.manual_seed(43)
    c = MLP().state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["body.0.weight"], c["body.0.weight"])


def test_linear_default_init_bounds():
    npgan.set_default_dtype("float64")
    lin = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)  # kaiming_uniform(a=sqrt 5) gives the same bound as the bias
    for p in (lin.weight.data, lin.bias.data):
        assert np.abs(p).max() <= bound
        assert np.abs(p).max() > 0.95 * bound
    assert abs(lin.weight.data.std() - bound / math.sqrt(3)) < 0.01 * bound


def test_init_functions():
    npgan.set_default_dtype("float64")
    w = nn.Linear(200, 300).weight
    nn.init.normal_(w, 0.0, 0.02)
    assert abs(w.data.std() - 0.02) < 0.001 and abs(w.data.mean()) < 0.001
    nn.init.constant_(w, 0.5)
    assert (w.data == 0.5).all()
    nn.init.xavier_uniform_(w)
    assert np.abs(w.data).max() <= math.sqrt(6 / 500)
    bn = nn.BatchNorm1d(1000)
    nn.init.dcgan_init(nn.Sequential(bn))
    assert abs(bn.weight.data.mean() - 1) < 0.005 and abs(bn.weight.data.std() - 0.02) < 0.003
    assert (bn.bias.data == 0).all()


def test_batchnorm_train_vs_eval_uses_batch_vs_running_statistics():
    npgan.set_default_dtype("float64")
    bn = nn.BatchNorm1d(2)
    x = npgan.Tensor(np.array([[1.0, 10.0], [3.0, 14.0]]))
    y = bn(x).data
    np.testing.assert_allclose(y, [[-1, -1], [1, 1]], rtol=1e-5)
    np.testing.assert_allclose(bn.running_mean, [0.2, 1.2])
    np.testing.assert_allclose(bn.running_var, [0.9 + 0.1 * 2, 0.9 + 0.1 * 8])
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    y = bn(x).data
    np.testing.assert_allclose(y, (x.data - [0.2, 1.2]) / np.sqrt(np.array([1.1, 1.7]) + 1e-5))
    assert int(bn.num_batches_tracked) == 1
