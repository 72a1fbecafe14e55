"""Gradients of gradients: ``npgan.grad``, ``backward(create_graph=True)`` and ``gradgradcheck``.

Every op of npgan/ops.py is checked at second order by ``gradgradcheck`` (hypothesis: random shapes and values,
float64) and against PyTorch (``torch.autograd.grad(..., create_graph=True)`` then a second grad, to 1e-10);
a third-order check runs the double backward of the double backward. Then the semantics (PyTorch's), a
Hessian-vector product against its closed form, a memory test over 1,000 second-order steps, and the
create_graph=False path against ``backward()``.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    SIDES,
    assert_no_growth,
    away,
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
from npgan import ops
from npgan.tensor import Function, GraphFreedError

F64 = np.float64


# ============================================================================ the cases
def positive(rng, shape):
    return rng.uniform(0.5, 2.0, shape)


def distinct(rng, shape):
    n = int(np.prod(shape))
    return (rng.permutation(121)[:n] - 60).reshape(shape) * 0.1


def off_bounds(rng, shape):
    """Values at least 0.1 away from the clip bounds ±0.5."""
    return rng.choice([-1.0, 1.0], shape) * rng.choice([rng.uniform(0.0, 0.4), rng.uniform(0.6, 1.5)], shape)


def mask(shape):
    return np.arange(int(np.prod(shape))).reshape(shape) % 3 != 1


def T():
    return torch_or_skip()


# name: (npgan fn, torch fn, make(rng, (d0, d1, d2)) -> input arrays). Linear ops are followed by a product, so
# that the second backward runs through their double backward.
CASES = {
    "add_broadcast": (lambda a, b: (a + b) * a, lambda a, b: (a + b) * a,
                      lambda r, d: [normal(r, d), normal(r, d[2:])]),
    "sub_broadcast": (lambda a, b: (a - b) * b, lambda a, b: (a - b) * b,
                      lambda r, d: [normal(r, d[1:]), normal(r, d)]),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, lambda r, d: [normal(r, d), normal(r, d)]),
    "mul_broadcast_self": (lambda a, b: a * b * a, lambda a, b: a * b * a,
                           lambda r, d: [normal(r, d[1:]), normal(r, d)]),
    "div": (lambda a, b: a / b, lambda a, b: a / b, lambda r, d: [normal(r, d), away(r, d)]),
    "div_broadcast": (lambda a, b: a / b, lambda a, b: a / b, lambda r, d: [normal(r, d), away(r, d[2:])]),
    "neg": (lambda a: (-a) * a * a, lambda a: (-a) * a * a, lambda r, d: [normal(r, d)]),
    "pow3": (lambda a: a ** 3, lambda a: a ** 3, lambda r, d: [normal(r, d)]),
    "pow2": (lambda a: a ** 2 * a, lambda a: a ** 2 * a, lambda r, d: [normal(r, d)]),
    "pow_half": (lambda a: a ** 0.5, lambda a: a ** 0.5, lambda r, d: [positive(r, d)]),
    "pow_neg": (lambda a: a ** -1.5, lambda a: a ** -1.5, lambda r, d: [positive(r, d)]),
    "pow1": (lambda a: a ** 1 * a, lambda a: a ** 1 * a, lambda r, d: [normal(r, d)]),
    "pow0": (lambda a: a ** 0 * a * a, lambda a: a ** 0 * a * a, lambda r, d: [normal(r, d)]),
    "matmul_2d": (lambda a, b: a @ b, lambda a, b: a @ b,
                  lambda r, d: [normal(r, (d[0], d[1])), normal(r, (d[1], d[2]))]),
    "matmul_batch_broadcast": (lambda a, b: (a @ b) * (a @ b), lambda a, b: (a @ b) * (a @ b),
                               lambda r, d: [normal(r, (2, d[0], d[1])), normal(r, (d[1], d[2]))]),
    "matmul_vec_mat": (lambda a, b: (a @ b) ** 2, lambda a, b: (a @ b) ** 2,
                       lambda r, d: [normal(r, (d[1],)), normal(r, (d[0], d[1], d[2]))]),
    "matmul_mat_vec": (lambda a, b: (a @ b) ** 2, lambda a, b: (a @ b) ** 2,
                       lambda r, d: [normal(r, (d[0], d[1])), normal(r, (d[1],))]),
    "matmul_vec_vec": (lambda a, b: (a @ b) ** 2, lambda a, b: (a @ b) ** 2,
                       lambda r, d: [normal(r, (d[1],)), normal(r, (d[1],))]),
    "exp": (lambda a: a.exp(), lambda a: a.exp(), lambda r, d: [normal(r, d)]),
    "log": (lambda a: a.log(), lambda a: a.log(), lambda r, d: [positive(r, d)]),
    "sqrt": (lambda a: a.sqrt(), lambda a: a.sqrt(), lambda r, d: [positive(r, d)]),
    "abs": (lambda a: abs(a) ** 3, lambda a: abs(a) ** 3, lambda r, d: [away(r, d)]),
    "clip": (lambda a: a.clamp(-0.5, 0.5) * a, lambda a: a.clamp(-0.5, 0.5) * a, lambda r, d: [off_bounds(r, d)]),
    "where": (lambda a, b: npgan.where(mask(a.shape), a, b) * a,
              lambda a, b: T().where(T().from_numpy(mask(tuple(a.shape))), a, b) * a,
              lambda r, d: [normal(r, d), normal(r, d[1:])]),
    "maximum": (lambda a, b: npgan.maximum(a, b) ** 2, lambda a, b: T().maximum(a, b) ** 2,
                lambda r, d: (lambda a: [a, a + away(r, d)])(normal(r, d))),
    "minimum": (lambda a, b: npgan.minimum(a, b) ** 2, lambda a, b: T().minimum(a, b) ** 2,
                lambda r, d: (lambda a: [a, a + away(r, d)])(normal(r, d))),
    "sum_all": (lambda a: a.sum() * a, lambda a: a.sum() * a, lambda r, d: [normal(r, d)]),
    "sum_axis": (lambda a: a.sum(axis=1) ** 2, lambda a: a.sum(dim=1) ** 2, lambda r, d: [normal(r, d)]),
    "sum_keepdims": (lambda a: a.sum(axis=(0, 2), keepdims=True) * a, lambda a: a.sum(dim=(0, 2), keepdim=True) * a,
                     lambda r, d: [normal(r, d)]),
    "mean_axis": (lambda a: a.mean(axis=-1) ** 2, lambda a: a.mean(dim=-1) ** 2, lambda r, d: [normal(r, d)]),
    "mean_all": (lambda a: a.mean() * a, lambda a: a.mean() * a, lambda r, d: [normal(r, d)]),
    "var": (lambda a: ops.var(a, axis=0), lambda a: a.var(dim=0, correction=0), lambda r, d: [normal(r, d)]),
    "max_axis": (lambda a: a.max(axis=1) ** 2, lambda a: T().amax(a, dim=1) ** 2, lambda r, d: [distinct(r, d)]),
    "min_all_keepdims": (lambda a: ops.min(a, keepdims=True) * a,
                         lambda a: T().amin(a, dim=(0, 1, 2), keepdim=True) * a, lambda r, d: [distinct(r, d)]),
    "reshape": (lambda a: a.reshape(-1) ** 3, lambda a: a.reshape(-1) ** 3, lambda r, d: [normal(r, d)]),
    "permute": (lambda a: a.permute(2, 0, 1) ** 3, lambda a: a.permute(2, 0, 1) ** 3, lambda r, d: [normal(r, d)]),
    "transpose": (lambda a: a.transpose(0, 1) * a.transpose(0, 1) ** 2,
                  lambda a: a.transpose(0, 1) * a.transpose(0, 1) ** 2, lambda r, d: [normal(r, d)]),
    "broadcast_to": (lambda a: ops.broadcast_to(a, (2,) + a.shape) ** 3,
                     lambda a: T().broadcast_to(a, (2,) + tuple(a.shape)) ** 3, lambda r, d: [normal(r, d)]),
    "sum_to_size": (lambda a: ops.sum_to_size(a, (1, a.shape[1], 1)) ** 3,
                    lambda a: a.sum_to_size(1, a.shape[1], 1) ** 3, lambda r, d: [normal(r, d)]),
    "squeeze_unsqueeze": (lambda a: ops.unsqueeze(a, 1).flatten() ** 3, lambda a: a.unsqueeze(1).flatten() ** 3,
                          lambda r, d: [normal(r, d)]),
    "getitem_slice": (lambda a: a[:, 1:, ::2] ** 3, lambda a: a[:, 1:, ::2] ** 3,
                      lambda r, d: [normal(r, (d[0], d[1] + 1, d[2]))]),
    "getitem_int": (lambda a: a[0, :, -1] ** 3 * a[0, 0, 0], lambda a: a[0, :, -1] ** 3 * a[0, 0, 0],
                    lambda r, d: [normal(r, d)]),
    "getitem_repeated": (lambda a: a[np.array([0, 0, 1, 0])] ** 3,
                         lambda a: a[T().tensor([0, 0, 1, 0])] ** 3, lambda r, d: [normal(r, (2,) + d[1:])]),
    "getitem_bool": (lambda a: a[mask(a.shape)] ** 3, lambda a: a[T().from_numpy(mask(tuple(a.shape)))] ** 3,
                     lambda r, d: [normal(r, d)]),
    "concatenate": (lambda a, b: npgan.cat([a, b, a], axis=1) ** 3, lambda a, b: T().cat([a, b, a], dim=1) ** 3,
                    lambda r, d: [normal(r, d), normal(r, (d[0], 2, d[2]))]),
    "stack": (lambda a, b: npgan.stack([a, b], axis=1) ** 3, lambda a, b: T().stack([a, b], dim=1) ** 3,
              lambda r, d: [normal(r, d), normal(r, d)]),
}

@pytest.mark.parametrize("name", sorted(CASES))
@given(sides=SIDES, seed=st.integers(0, 2 ** 16))
def test_gradgradcheck(name, sides, seed):
    gradgradcheck_case(CASES[name], sides, seed)


@pytest.mark.parametrize("name", sorted(CASES))
def test_third_order(name):
    fn, _, make = CASES[name]
    xs = f64_leaves(make(np.random.default_rng(3), (2, 3, 2)))
    out = fn(*xs)
    if not npgan.grad(out, xs[0], np.ones(out.shape), create_graph=True)[0].requires_grad:
        pytest.skip(f"{name}: the gradient of input 0 is constant (its third derivative is 0)")
    assert npgan.gradgradcheck(third_order(fn), xs, seed=1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_double_backward_parity_with_torch(name):
    torch = torch_or_skip()
    fn, tfn, arrays, v, us = double_backward_inputs(CASES[name])

    xs, vt = f64_leaves(arrays), npgan.tensor(np.asarray(v), requires_grad=True, dtype=F64)
    gs = npgan.grad(fn(*xs), xs, vt, create_graph=True, allow_unused=True)
    s = npgan.sum(gs[0] * npgan.tensor(us[0]))
    for g, u in zip(gs[1:], us[1:]):
        s = s + npgan.sum(g * npgan.tensor(u))
    hs = npgan.grad(s, xs + [vt], allow_unused=True)

    txs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    tv = torch.tensor(v, requires_grad=True)
    tgs = torch.autograd.grad(tfn(*txs), txs, tv, create_graph=True, allow_unused=True)
    ts = sum((g * torch.from_numpy(u)).sum() for g, u in zip(tgs, us) if g is not None)
    ths = torch.autograd.grad(ts, txs + [tv], allow_unused=True)

    for k, (g, tg) in enumerate(zip(gs, tgs)):
        np.testing.assert_allclose(g.numpy(), tg.detach().numpy(), rtol=1e-10, atol=1e-10, err_msg=f"grad {k}")
    for k, (h, th, t) in enumerate(zip(hs, ths, xs + [vt])):
        h = np.zeros(t.shape) if h is None else h.numpy()
        th = np.zeros(t.shape) if th is None else th.detach().numpy()
        np.testing.assert_allclose(h, th, rtol=1e-10, atol=1e-10, err_msg=f"second derivative, input {k}")


def test_astype_double_backward():
    """AsType (float64 → float32 → float64): d²/dx² Σ y³ = 6x, and d³/dx³ = 6, through two casts."""
    x = npgan.tensor(np.array([0.5, -1.25, 2.0]), requires_grad=True, dtype=F64)
    y = x.astype(np.float32).astype(F64)
    g, = npgan.grad((y ** 3).sum(), x, create_graph=True)
    h, = npgan.grad(g.sum(), x, create_graph=True)
    t, = npgan.grad(h.sum(), x)
    assert g.dtype == F64 and h.dtype == F64
    np.testing.assert_allclose(h.numpy(), 6 * x.numpy(), rtol=1e-6)
    np.testing.assert_allclose(t.numpy(), np.full(3, 6.0), rtol=1e-6)


# ============================================================================ gradgradcheck finds faults
class CubeDetached(Function):
    """y = x³ with a correct first derivative but a double backward that treats 3x² as a constant."""

    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, gy):
        return gy * 3 * self.x ** 2

    def backward_graph(self, gy):
        return gy * npgan.Tensor(3 * self.inputs[0].data ** 2)


class CubeDropsGy(CubeDetached):
    """As CubeDetached, but cuts the dependence on the incoming gradient instead."""

    def backward_graph(self, gy):
        return npgan.Tensor(gy.data) * 3.0 * self.inputs[0] ** 2


class CubeWrongValue(CubeDetached):
    def backward_graph(self, gy):
        return gy * 2.0 * self.inputs[0] ** 2


def test_gradgradcheck_reports_a_cut_dependence():
    x = npgan.tensor(np.array([0.5, -1.0, 1.5]), requires_grad=True, dtype=F64)
    with pytest.raises(npgan.GradcheckError, match=r"gradgradcheck failed for input 0 \(shape \(3,\)\) at element "
                       r"\(\d,\): analytic 0 vs numeric [-\d.]+"):
        npgan.gradgradcheck(lambda a: CubeDetached()(a), [x])
    with pytest.raises(npgan.GradcheckError, match=r"gradgradcheck failed for grad_outputs \(shape \(3,\)\)"):
        npgan.gradgradcheck(lambda a: CubeDropsGy()(a), [x])
    with pytest.raises(npgan.GradcheckError, match=r"create_graph gradient vs plain\) failed for input 0"):
        npgan.gradgradcheck(lambda a: CubeWrongValue()(a), [x])
    assert npgan.gradgradcheck(lambda a: a ** 3, [x], directions=3)


def test_gradgradcheck_random_directions_find_a_fault():
    x = npgan.tensor(np.random.default_rng(0).standard_normal((6, 5)), requires_grad=True, dtype=F64)
    assert npgan.gradgradcheck(lambda a: (a @ a.T).exp(), [x], directions=4)
    with pytest.raises(npgan.GradcheckError, match="input 0 .* at direction 0"):
        npgan.gradgradcheck(lambda a: CubeDetached()(a), [x], directions=4)


# ============================================================================ semantics
def quad(x):
    return (x * x * x).sum()


def test_grad_frees_the_graph_unless_retained():
    x = npgan.tensor([1.0, 2.0, 3.0], requires_grad=True, dtype=F64)
    y = quad(x)
    g1, = npgan.grad(y, x, retain_graph=True)
    g2, = npgan.grad(y, x)
    np.testing.assert_array_equal(g1.numpy(), g2.numpy())
    np.testing.assert_array_equal(g1.numpy(), 3 * x.numpy() ** 2)
    with pytest.raises(GraphFreedError, match="a second time"):
        npgan.grad(y, x)
    with pytest.raises(GraphFreedError):
        y.backward()
    z = quad(x)
    npgan.grad(z, x, create_graph=True)  # retain_graph defaults to create_graph
    npgan.grad(z, x)


def test_grad_leaves_dot_grad_alone_and_backward_create_graph_fills_it():
    x = npgan.tensor([1.0, -2.0], requires_grad=True, dtype=F64)
    g, = npgan.grad(quad(x), x, create_graph=True)
    assert x.grad is None and g.requires_grad and g.creator is not None
    y = quad(x)
    y.backward(create_graph=True)
    assert type(x.grad) is type(x.data)  # .grad holds a raw array of the value, never a Tensor
    np.testing.assert_array_equal(x.grad, [3.0, 12.0])
    y.backward()  # the graph was kept (retain_graph defaults to create_graph)
    np.testing.assert_array_equal(x.grad, [6.0, 24.0])


def test_allow_unused_names_the_input():
    x = npgan.tensor([1.0, 2.0, 3.0], requires_grad=True)
    z = npgan.tensor([[1.0, 2.0]], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"inputs\[1\] \(shape \(1, 2\)\) was not used to compute the outputs; "
                       "pass allow_unused=True"):
        npgan.grad(quad(x), [x, z])
    g, none = npgan.grad(quad(x), [x, z], allow_unused=True)
    assert none is None and g.shape == (3,)


def test_refuses_inputs_and_outputs_without_grad():
    x = npgan.tensor([1.0, 2.0, 3.0], requires_grad=True)
    c = npgan.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"inputs\[1\] \(shape \(2,\)\) does not require grad"):
        npgan.grad(quad(x), [x, c])
    with pytest.raises(RuntimeError, match=r"outputs\[0\] \(shape \(2,\)\) does not require grad"):
        npgan.grad(c * 2, x)
    with pytest.raises(TypeError, match=r"inputs\[0\] is a ndarray, not a Tensor"):
        npgan.grad(quad(x), [x.data])


def test_grad_outputs_are_checked():
    x = npgan.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"grad_outputs\[0\] has shape \(2,\), outputs\[0\] has shape \(3,\)"):
        npgan.grad(x * x, x, np.ones(2))
    with pytest.raises(ValueError, match=r"grad_outputs\[0\] has shape \(2,\), outputs\[0\] has shape \(3,\)"):
        npgan.grad(x * x, x, npgan.ones(2), create_graph=True)
    with pytest.raises(RuntimeError, match=r"grad_outputs\[0\] is needed: outputs\[0\] has shape \(3,\)"):
        npgan.grad(x * x, x)
    with pytest.raises(ValueError, match="2 grad_outputs for 1 outputs"):
        npgan.grad(x * x, x, [np.ones(3), np.ones(3)])


def test_several_outputs_non_leaf_inputs_and_an_output_as_input():
    torch = torch_or_skip()
    a = np.array([0.5, -1.0, 2.0])
    x = npgan.tensor(a, requires_grad=True, dtype=F64)
    h = x * x
    y1, y2 = (h * x).sum(), h.exp()
    gh, gx = npgan.grad([y1, y2], [h, x], [None, np.arange(3.0)], create_graph=True)
    tx = torch.tensor(a, requires_grad=True)
    th = tx * tx
    tgh, tgx = torch.autograd.grad([(th * tx).sum(), th.exp()], [th, tx],
                                   [None, torch.arange(3.0, dtype=torch.float64)], create_graph=True)
    np.testing.assert_allclose(gh.numpy(), tgh.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(gx.numpy(), tgx.detach().numpy(), rtol=1e-12)
    hh, = npgan.grad((gx * gh).sum(), x)
    thh, = torch.autograd.grad((tgx * tgh).sum(), tx)
    np.testing.assert_allclose(hh.numpy(), thh.numpy(), rtol=1e-12)
    ones, = npgan.grad(x, x, np.ones(3))
    np.testing.assert_array_equal(ones.numpy(), np.ones(3))


def test_differentiating_through_grad_outputs():
    """grad_outputs that require grad are part of the graph: ∂⟨∇ₓ⟨v, x²⟩, 1⟩/∂v = 2x."""
    x = npgan.tensor([1.0, -3.0], requires_grad=True, dtype=F64)
    v = npgan.tensor([0.5, 2.0], requires_grad=True, dtype=F64)
    g, = npgan.grad(x * x, x, v, create_graph=True)
    gv, gx = npgan.grad(g.sum(), [v, x])
    np.testing.assert_array_equal(gv.numpy(), 2 * x.numpy())
    np.testing.assert_array_equal(gx.numpy(), 2 * v.numpy())


def test_missing_backward_graph_is_named():
    class Twice(Function):
        def forward(self, x):
            return 2 * x

        def backward(self, gy):
            return 2 * gy

    x = npgan.tensor([1.0, 2.0], requires_grad=True)
    y = (Twice()(x) * x).sum()
    np.testing.assert_array_equal(npgan.grad(y, x, retain_graph=True)[0].numpy(), [4.0, 8.0])  # first order works
    with pytest.raises(NotImplementedError, match="double backward is not implemented for Twice"):
        npgan.grad(y, x, create_graph=True)


def test_hessian_vector_product_closed_form():
    """f(x) = Σ x³ + xᵀAx:  ∇f = 3x² + (A + Aᵀ)x,  H v = 6 x ⊙ v + (A + Aᵀ) v; third: ∂(vᵀHv)/∂x = 6 v²."""
    rng = np.random.default_rng(5)
    A, xa, va = rng.standard_normal((4, 4)), rng.standard_normal(4), rng.standard_normal(4)
    x = npgan.tensor(xa, requires_grad=True)
    f = (x ** 3).sum() + (x @ (npgan.tensor(A) @ x))
    g, = npgan.grad(f, x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), 3 * xa ** 2 + (A + A.T) @ xa, rtol=1e-13, atol=1e-13)
    hv, = npgan.grad((g * npgan.tensor(va)).sum(), x, create_graph=True)
    np.testing.assert_allclose(hv.numpy(), 6 * xa * va + (A + A.T) @ va, rtol=1e-13, atol=1e-13)
    t, = npgan.grad((hv * npgan.tensor(va)).sum(), x)
    np.testing.assert_allclose(t.numpy(), 6 * va ** 2, rtol=1e-13, atol=1e-13)


def test_fourth_order():
    """d⁴/dx⁴ Σ x⁵ = 120 x, each order recorded by the one before."""
    x = npgan.tensor([0.5, -2.0, 3.0], requires_grad=True, dtype=F64)
    y = (x ** 5).sum()
    for _ in range(4):
        y, = npgan.grad(y.sum(), x, create_graph=True)
    np.testing.assert_allclose(y.numpy(), 120 * x.numpy(), rtol=1e-14)


# ============================================================================ the fast path and memory
def _mlp(x, w1, w2):
    h = x @ w1
    return (npgan.maximum(h, 0.2 * h) @ w2).sum()


def test_create_graph_false_is_the_plain_backward_bit_for_bit():
    rng = np.random.default_rng(0)
    x, w1, w2 = (npgan.tensor(rng.standard_normal(s), requires_grad=True) for s in ((16, 5), (5, 8), (8, 3)))
    _mlp(x, w1, w2).backward()
    ref = [t.grad.copy() for t in (x, w1, w2)]
    got = npgan.grad(_mlp(x, w1, w2), [x, w1, w2])
    for r, g in zip(ref, got):
        assert g.dtype == F64 and not g.requires_grad and g.creator is None
        np.testing.assert_array_equal(g.numpy(), r)
    gx, = npgan.grad(_mlp(x, w1, w2), x)  # only the path to x is walked; the result is the same
    np.testing.assert_array_equal(gx.numpy(), ref[0])
    graph = npgan.grad(_mlp(x, w1, w2), [x, w1, w2], create_graph=True)
    for r, g in zip(ref, graph):
        np.testing.assert_allclose(g.numpy(), r, rtol=1e-6, atol=1e-6)


def test_memory_does_not_grow_over_1000_second_order_steps():
    """An R1-like step, ‖∇ₓD(x)‖² then backward to the weights, 1,000 times with the cycle collector off:
    the graphs are freed by reference counting alone, and neither memory nor live Functions grow."""
    rng = np.random.default_rng(1)
    w1, w2 = (npgan.tensor(rng.standard_normal(s), requires_grad=True, dtype=F64) for s in ((4, 16), (16, 1)))
    xa = rng.standard_normal((32, 4))

    def step():
        x = npgan.tensor(xa, requires_grad=True)
        g, = npgan.grad(_mlp(x, w1, w2), x, create_graph=True)
        (g * g).sum().backward()
        w1.grad = w2.grad = None

    assert_no_growth(step, "second-order steps")
