"""Bad input raises one clear error that names the problem and the values involved."""

from __future__ import annotations

import re

import numpy as np
import pytest

import npgan
import npgan.functional as F
from npgan import Tensor, nn, ops, optim


def T(*shape):
    return Tensor(np.ones(shape))


def raises(exc, *fragments):
    """pytest.raises(exc) whose message contains every fragment (matched literally)."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


# ============================================================================ shapes
@pytest.mark.parametrize("sa,sb", [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (2,)), ((5, 2, 3), (4, 2))])
def test_matmul_inner_mismatch_names_both_shapes(sa, sb):
    with raises(ValueError, "matmul", str(sa), str(sb)):
        T(*sa) @ T(*sb)
    with raises(ValueError, "matmul", str(sa), str(sb)):
        ops.matmul(T(*sa), T(*sb))


def test_matmul_batch_mismatch_names_both_shapes():
    with raises(ValueError, "matmul", "(2, 3, 4)", "(5, 4, 2)"):
        T(2, 3, 4) @ T(5, 4, 2)


def test_matmul_of_a_0d_operand():
    with raises(ValueError, "at least 1-D", "()", "(3,)"):
        T() @ T(3)


def test_linear_shape_mismatch_names_both_shapes():
    with raises(ValueError, "Linear(5, 4)", "(2, 3)", "(4, 5)"):
        nn.Linear(5, 4)(T(2, 3))
    with raises(ValueError, "linear", "(2, 3)", "(4, 5)"):
        F.linear(T(2, 3), T(4, 5))
    with raises(ValueError, "bias", "(3,)", "(4, 5)"):
        F.linear(T(2, 5), T(4, 5), T(3))


def test_elementwise_broadcast_mismatch_names_both_shapes():
    with raises(ValueError, "(3,)", "(4,)"):
        T(3) + T(4)


@pytest.mark.parametrize("f,frags", [
    (lambda: T(3).reshape(2, 2), ["reshape", "(3,)", "(2, 2)"]),
    (lambda: T(2, 3).permute(0, 0), ["permute", "(0, 0)", "(2, 3)"]),
    (lambda: T(2, 3, 4).permute(0, 1, 5), ["permute", "(0, 1, 5)", "(2, 3, 4)"]),
    (lambda: T(2, 3).sum(axis=2), ["axis 2", "2 dimensions"]),
    (lambda: ops.cat([T(3, 2), T(4, 3)]), ["concatenate", "(3, 2)", "(4, 3)"]),
    (lambda: ops.stack([T(3), T(4)]), ["stack", "(3,)", "(4,)"]),
    (lambda: ops.clip(T(2), 1.0, 0.0), ["clip", "1.0", "0.0"]),
    (lambda: nn.BatchNorm1d(3)(T(4, 2)), ["BatchNorm1d(3)", "(4, 2)"]),
    (lambda: nn.BatchNorm2d(3)(T(4, 3)), ["BatchNorm2d(3)", "(4, 3)"]),
    (lambda: F.batch_norm(T(1, 3), None, None, training=True), ["more than 1 value", "(1, 3)"]),
    (lambda: F.batch_norm(T(2, 3), np.zeros(3), np.ones(3), training=True, momentum=None),
     ["momentum=None", "num_batches_tracked"]),
    (lambda: nn.Unflatten(1, (2, 2))(T(3, 5)), ["Unflatten", "(3, 5)", "(2, 2)"]),
])
def test_shape_errors(f, frags):
    with raises(ValueError, *frags):
        f()


def test_index_out_of_range_names_index_and_shape():
    with raises(IndexError, "index 5", "(2, 3)"):
        T(2, 3)[5]


# ============================================================================ backward
def test_backward_on_a_non_scalar_without_grad():
    y = Tensor(np.ones((2, 3)), requires_grad=True) * 2.0
    with raises(RuntimeError, "backward()", "(2, 3)", "grad="):
        y.backward()


def test_backward_with_a_mis_shaped_grad():
    y = Tensor(np.ones((2, 3)), requires_grad=True) * 2.0
    with raises(ValueError, "(3, 2)", "(2, 3)"):
        y.backward(np.ones((3, 2)))


def test_second_backward_without_retain_graph():
    x = Tensor(np.ones(3), requires_grad=True)
    y = (x.exp() * 2.0).sum()
    y.backward()
    g = x.grad.copy()
    with raises(RuntimeError, "second time", "retain_graph=True"):
        y.backward()
    np.testing.assert_array_equal(x.grad, g)  # the failed call added nothing


def test_backward_without_requires_grad():
    with raises(RuntimeError, "does not require grad"):
        (T(2) * 2.0).sum().backward()


# ============================================================================ losses
@pytest.mark.parametrize("fn", [F.binary_cross_entropy_with_logits, F.binary_cross_entropy])
@pytest.mark.parametrize("target", [T(4, 1), np.full((4, 1), 0.5), np.full(3, 0.5), [1.0, 0.0, 1.0]])
def test_bce_target_shape_must_equal_the_input_shape(fn, target):
    shape = tuple(np.shape(target.data if isinstance(target, Tensor) else target))
    with raises(ValueError, fn.__name__, "target shape", str(shape), "(4,)"):
        fn(Tensor(np.full(4, 0.5)), target)


@pytest.mark.parametrize("fn", [F.binary_cross_entropy_with_logits, F.binary_cross_entropy])
def test_bce_bad_reduction(fn):
    with raises(ValueError, "reduction", "'avg'", "mean"):
        fn(Tensor(np.full(4, 0.5)), 1.0, reduction="avg")


def test_bce_probabilities_outside_0_1():
    with raises(ValueError, "[0, 1]", "1.5", "with_logits"):
        F.binary_cross_entropy(Tensor(np.array([0.5, 1.5])), 1.0)


# ============================================================================ state dicts
def _net():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def _snapshot(m):
    return {k: v.copy() for k, v in m.state_dict().items()}


def _unchanged(m, snap):
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, snap[k], err_msg=f"{k} changed by a failed load_state_dict")


def test_load_state_dict_missing_key():
    m = _net()
    snap = _snapshot(m)
    sd = {k: v + 1 for k, v in _net().state_dict().items() if k != "1.running_var"}
    with raises(nn.StateDictError, "missing", "1.running_var"):
        m.load_state_dict(sd)
    _unchanged(m, snap)
    m.load_state_dict(sd, strict=False)  # non-strict: loads the rest
    np.testing.assert_array_equal(m.state_dict()["0.weight"], sd["0.weight"])


def test_load_state_dict_unexpected_key():
    m = _net()
    snap = _snapshot(m)
    sd = {k: v + 1 for k, v in _net().state_dict().items()}
    sd["3.weight"] = np.ones((2, 2))
    with raises(nn.StateDictError, "unexpected", "3.weight"):
        m.load_state_dict(sd)
    _unchanged(m, snap)


def test_load_state_dict_mis_shaped_key():
    m = _net()
    snap = _snapshot(m)
    sd = {k: v + 1 for k, v in _net().state_dict().items()}
    sd["2.weight"] = np.ones((4, 2))
    with raises(nn.StateDictError, "2.weight", "(2, 4)", "(4, 2)"):
        m.load_state_dict(sd)
    _unchanged(m, snap)


def test_load_state_dict_reports_every_problem_at_once():
    m = _net()
    sd = m.state_dict()
    del sd["0.bias"]
    sd["extra"] = np.ones(1)
    sd["1.weight"] = np.ones(5)
    with raises(nn.StateDictError, "0.bias", "extra", "1.weight", "(4,)", "(5,)"):
        m.load_state_dict(sd)
    assert issubclass(nn.StateDictError, ValueError)


def test_load_state_dict_rejects_a_non_mapping():
    with raises(TypeError, "mapping", "list"):
        _net().load_state_dict([1, 2])


# ============================================================================ optimizers
def _p():
    return [nn.Parameter(np.ones(3))]


@pytest.mark.parametrize("make,frags", [
    (lambda: optim.SGD(_p(), lr=-0.1), ["SGD", "learning rate", "-0.1"]),
    (lambda: optim.SGD(_p(), lr=0.0), ["SGD", "learning rate", "0.0"]),
    (lambda: optim.SGD(_p(), lr=float("nan")), ["SGD", "learning rate", "nan"]),
    (lambda: optim.SGD(_p(), lr="fast"), ["SGD", "learning rate", "fast"]),
    (lambda: optim.SGD(_p(), lr=0.1, momentum=-0.5), ["SGD", "momentum", "-0.5"]),
    (lambda: optim.SGD(_p(), lr=0.1, nesterov=True), ["SGD", "Nesterov", "momentum"]),
    (lambda: optim.SGD(_p(), lr=0.1, weight_decay=-1.0), ["SGD", "weight_decay", "-1.0"]),
    (lambda: optim.Adam(_p(), lr=-1e-3), ["Adam", "learning rate", "-0.001"]),
    (lambda: optim.Adam(_p(), betas=(1.0, 0.999)), ["Adam", "betas", "(1.0, 0.999)"]),
    (lambda: optim.Adam(_p(), betas=(0.9, -0.1)), ["Adam", "betas", "(0.9, -0.1)"]),
    (lambda: optim.Adam(_p(), eps=-1e-8), ["Adam", "eps", "-1e-08"]),
    (lambda: optim.Adam(_p(), weight_decay=-0.1), ["Adam", "weight_decay", "-0.1"]),
    (lambda: optim.RMSprop(_p(), alpha=1.5), ["RMSprop", "alpha", "1.5"]),
    (lambda: optim.RMSprop(_p(), eps=-1.0), ["RMSprop", "eps", "-1.0"]),
    (lambda: optim.RMSprop(_p(), momentum=-0.9), ["RMSprop", "momentum", "-0.9"]),
    (lambda: optim.Adam([]), ["Adam", "empty"]),
])
def test_bad_optimizer_hyper_parameters(make, frags):
    with raises(ValueError, *frags):
        make()


def test_optimizer_rejects_non_parameters():
    with raises(TypeError, "SGD", "Tensors", "ndarray"):
        optim.SGD([np.ones(3)], lr=0.1)
    with raises(ValueError, "SGD", "(3,)", "does not require grad"):
        optim.SGD([Tensor(np.ones(3))], lr=0.1)
    p = nn.Parameter(np.ones(3))
    with raises(ValueError, "more than one group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)


def test_optimizer_load_state_dict_mismatch():
    opt = optim.Adam(_p())
    other = optim.Adam(_p() + _p())
    with raises(ValueError, "2 parameters", "1"):
        opt.load_state_dict(other.state_dict())


# ============================================================================ tensors, dtypes, devices
@pytest.mark.parametrize("data", [np.array([1 + 2j]), [1j, 2.0], np.array([object()], dtype=object),
                                  [object()], "abc", None])
def test_tensor_of_unsupported_data(data):
    with pytest.raises(TypeError, match="dtype"):
        Tensor(data)


def test_tensor_with_an_unsupported_dtype():
    with raises(TypeError, "complex128"):
        Tensor([1.0], dtype=np.complex128)


def test_integer_tensor_cannot_require_grad():
    with raises(TypeError, "float", "int64"):
        Tensor([1, 2], requires_grad=True)
    with raises(TypeError, "float", "int64"):
        Tensor([1, 2]).requires_grad_()


@pytest.mark.parametrize("f,exc,frags", [
    (lambda: npgan.set_default_dtype("float16"), ValueError, ["float32", "float64", "float16"]),
    (lambda: npgan.manual_seed(-1), ValueError, ["seed", "-1"]),
    (lambda: npgan.manual_seed(1.5), ValueError, ["seed", "1.5"]),
    (lambda: npgan.set_device("tpu"), ValueError, ["device", "'tpu'"]),
    (lambda: npgan.zeros(2, -1), ValueError, ["shape", "-1"]),
    (lambda: F.dropout(T(2), 1.5), ValueError, ["dropout", "1.5"]),
    (lambda: nn.Dropout(-0.1), ValueError, ["Dropout", "-0.1"]),
    (lambda: nn.Linear(0, 3), ValueError, ["in_features", "0"]),
    (lambda: nn.BatchNorm1d(4, 0.0), ValueError, ["eps", "0.0"]),
    (lambda: nn.BatchNorm1d(4, momentum=2.0), ValueError, ["momentum", "2.0"]),
    (lambda: ops.pow(T(2), T(2)), TypeError, ["exponent"]),
])
def test_misc_bad_arguments(f, exc, frags):
    with raises(exc, *frags):
        f()


def test_gpu_without_cupy_says_why():
    if npgan.backend.gpu_available():
        pytest.skip("a GPU is available here")
    with raises(npgan.DeviceError, "gpu"):
        npgan.set_device("gpu")
    assert npgan.get_device() == "cpu"
