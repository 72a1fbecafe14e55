"""Autograd semantics of Tensor/Function: accumulation, no_grad, retain_graph, deep graphs, detach, dtypes."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import npgan
from npgan import Tensor, ops
from npgan.tensor import sum_to

F64 = np.float64


def leaf(a):
    return Tensor(np.array(a, dtype=F64), requires_grad=True)


# ============================================================================ accumulation
def test_gradients_accumulate_across_backward_calls():
    x = leaf([1.0, 2.0, 3.0])
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2, 4, 6])
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [5, 7, 9])
    x.grad = None
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [3, 3, 3])


def test_a_tensor_used_several_times_gets_the_sum_of_its_uses():
    x = leaf([2.0, -1.0])
    y = x * 3.0
    z = (y * y + y + x * x).sum()  # dz/dx = 18x + 3 + 2x = 20x + 3 (y used twice, x twice)
    z.backward()
    np.testing.assert_allclose(x.grad, 20 * x.data + 3)


def test_diamond_graph():
    x = leaf(1.5)
    a, b = x.exp(), x * x
    (a * b).backward()  # d/dx e^x x^2 = e^x (x^2 + 2x)
    assert x.grad == pytest.approx(np.exp(1.5) * (1.5 ** 2 + 3.0), rel=1e-14)


def test_leaf_backward_and_explicit_gradient():
    x = leaf([1.0, 2.0])
    x.backward(np.array([3.0, 4.0]))
    np.testing.assert_array_equal(x.grad, [3, 4])
    y = x * 2.0
    y.backward(np.array([1.0, -1.0]))
    np.testing.assert_array_equal(x.grad, [5, 2])


def test_the_first_gradient_is_a_copy_not_an_alias():
    x = leaf([1.0, 2.0])
    g = np.array([1.0, 1.0])
    (x + 0.0).backward(g)
    x.grad += 5  # must not change g
    np.testing.assert_array_equal(g, [1, 1])


def test_only_leaves_requiring_grad_receive_gradients():
    x, c = leaf([1.0, 2.0]), Tensor(np.array([3.0, 4.0]))
    y = x * c
    y.sum().backward()
    assert c.grad is None and y.grad is None
    np.testing.assert_array_equal(x.grad, [3, 4])


# ============================================================================ no_grad / retain_graph
def test_no_grad_records_nothing():
    x = leaf([1.0, 2.0])
    with npgan.no_grad():
        y = (x * 2.0).sum()
        assert not npgan.is_grad_enabled()
        with npgan.enable_grad():
            z = (x * 2.0).sum()
    assert npgan.is_grad_enabled()
    assert not y.requires_grad and y.creator is None and y.is_leaf
    assert z.requires_grad and z.creator is not None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_no_grad_is_restored_after_an_exception():
    with pytest.raises(KeyError):
        with npgan.no_grad():
            raise KeyError("boom")
    assert npgan.is_grad_enabled()



def test_no_grad_is_per_thread():
    """As PyTorch's grad mode: a thread inside no_grad leaves another thread recording, and a thread started
    inside no_grad records (each thread waits for the other's event, not for time)."""
    x = leaf([1.0, 2.0])
    inside, built = threading.Event(), threading.Event()
    seen = {}

    def sampler():
        with npgan.no_grad():
            inside.set()
            built.wait(timeout=900)  # stays inside no_grad until the trainer has built its graph
            seen["sampler"] = (x * 2.0).sum().requires_grad

    def trainer():
        inside.wait(timeout=900)
        y = (x * 3.0).sum()
        seen["trainer"] = (y.requires_grad, npgan.is_grad_enabled())
        built.set()

    threads = [threading.Thread(target=f) for f in (sampler, trainer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"sampler": False, "trainer": (True, True)}
    with npgan.no_grad():  # a thread started inside no_grad records
        t = threading.Thread(target=lambda: seen.__setitem__("new", (x * 2.0).sum().requires_grad))
        t.start()
        t.join()
        assert not (x * 2.0).sum().requires_grad
    assert seen["new"] is True

def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward(retain_graph=True)
    np.testing.assert_array_equal(x.grad, [4, 8])
    y.backward()
    np.testing.assert_array_equal(x.grad, [6, 12])
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_backward_frees_saved_values():
    x = leaf(np.ones(3))
    y = x.exp()
    fn = y.creator
    y.sum().backward()
    assert fn.inputs is None and list(fn.__dict__) == ["_n_options"]  # Exp has no options: only their count stays
    z = (x * 2).clip(0.5, 1.5)
    fn = z.creator
    assert set(fn.__dict__) > {"lo", "hi", "_n_options"}  # the options and what forward saved
    z.sum().backward()
    assert fn.inputs is None and list(fn.__dict__) == ["lo", "hi", "_n_options"]  # the saved values are gone


# ============================================================================ deep graphs
def test_deep_chain_backpropagates_without_recursion_error():
    n = max(5000, 2 * sys.getrecursionlimit())
    x = leaf([1.0, 2.0])
    y = x
    for _ in range(n):
        y = y * 1.0001 + 0.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** n] * 2, rtol=1e-10)


def test_deep_chain_is_freed_without_recursion_error():
    y = leaf([1.0])
    for _ in range(50_000):
        y = y + 1.0
    del y  # deallocating a long creator chain must not overflow the C stack


# ============================================================================ purity, detach
def test_ops_do_not_mutate_their_inputs():
    rs = np.random.default_rng(0)
    a0, b0 = rs.standard_normal((3, 4)), rs.uniform(0.5, 1, (4,))
    a, b = leaf(a0), leaf(b0)
    outs = [a + b, a - b, a * b, a / b, -a, a ** 2, a.exp(), b.log(), b.sqrt(), abs(a), a.clip(-0.1, 0.1),
            ops.maximum(a, b), a.sum(0), a.mean(), a.max(1), a.reshape(12), a.T, a[1:, ::2], a[[0, 0]],
            ops.cat([a, a]), ops.stack([b, b]), a @ b, ops.where(a.data > 0, a, b), ops.var(a, 0)]
    for y in outs:
        y.backward(np.ones(y.shape))
    np.testing.assert_array_equal(a.data, a0)
    np.testing.assert_array_equal(b.data, b0)


def test_detach_shares_data_but_cuts_the_graph():
    x = leaf([1.0, 2.0])
    y = x * 2.0
    d = y.detach()
    assert not d.requires_grad and d.creator is None
    assert np.shares_memory(d.data, y.data)
    (d * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2, 4])  # d acted as a constant


def test_requires_grad_flags_propagate():
    x, c = leaf([1.0]), Tensor(np.array([2.0]))
    assert (x * c).requires_grad and not (c * c).requires_grad
    assert not x.detach().requires_grad
    c.requires_grad_()
    assert (c * 2.0).requires_grad


def test_sum_to_reduces_broadcast_axes():
    g = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(sum_to(g, (3, 1)), g.sum(axis=(0, 2)).reshape(3, 1))
    np.testing.assert_array_equal(sum_to(g, (1, 4)), g.sum(axis=(0, 1)).reshape(1, 4))
    np.testing.assert_array_equal(sum_to(g, ()), g.sum())
    assert sum_to(g, g.shape) is g


# ============================================================================ dtypes and factories
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_default_dtype_is_respected_by_factories(dtype):
    npgan.set_default_dtype(dtype)
    want = np.dtype(dtype)
    assert npgan.get_default_dtype() == want
    for t in (npgan.zeros(2, 3), npgan.ones((2, 3)), npgan.randn(2, 3), npgan.rand(2, 3), Tensor([1.0, 2.0]),
              Tensor(1.5), npgan.tensor([[1.0]]), npgan.nn.Parameter(np.zeros(2, dtype=want))):
        assert t.dtype == want, t
    assert Tensor(np.zeros(2, dtype=np.float32)).dtype == np.float32  # arrays keep their dtype
    assert Tensor(np.zeros(2, dtype=np.float64)).dtype == np.float64
    assert Tensor([1, 2]).dtype.kind == "i"
    assert npgan.zeros(2, dtype=np.float64).dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_graphs_stay_float32(dtype):
    x = Tensor(np.ones((2, 3), dtype=dtype), requires_grad=True)
    y = ((x * 2.0 + 1.0) / 3.0 - x ** 2).exp().sum()
    assert y.dtype == dtype
    y.backward()
    assert x.grad.dtype == dtype


def test_mixed_dtype_operands_do_not_promote_and_gradients_keep_their_tensor_dtype():
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    y = (x * np.ones(3, dtype=np.float64)).sum()  # a float64 constant array adopts x's dtype
    assert y.dtype == np.float32
    y.backward()
    assert x.grad.dtype == np.float32
    w = Tensor(np.ones(3, dtype=np.float64), requires_grad=True)
    (x * w).sum().backward()  # two tensors of different dtypes: each gradient in its own dtype
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float64


def test_manual_seed_reproducibility():
    npgan.manual_seed(5)
    a = [npgan.randn(4).numpy(), npgan.rand(3).numpy(), npgan.nn.Linear(3, 2).weight.numpy()]
    npgan.manual_seed(5)
    b = [npgan.randn(4).numpy(), npgan.rand(3).numpy(), npgan.nn.Linear(3, 2).weight.numpy()]
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    npgan.manual_seed(6)
    assert not np.array_equal(npgan.randn(4).numpy(), a[0])


def test_tensor_copy_semantics():
    a = np.ones(3)
    assert np.shares_memory(Tensor(a).data, a)
    assert not np.shares_memory(npgan.tensor(a).data, a)
    t = Tensor(a)
    assert npgan.as_tensor(t) is t


def test_item_tolist_repr_and_comparisons():
    t = Tensor(np.array([[1.5]]))
    assert t.item() == 1.5 and t.tolist() == [[1.5]]
    assert "tensor(" in repr(t)
    assert "grad_fn=<Mul>" in repr(leaf([1.0]) * 2.0)
    np.testing.assert_array_equal((Tensor(np.array([1.0, 3.0])) > 2.0).data, [False, True])
    with pytest.raises(ValueError, match=r"one element, got shape \(1, 2\)"):
        Tensor(np.ones((1, 2))).item()


def test_index_bounds_check_for_the_gpu_matches_numpy():
    """CuPy wraps out-of-range integer index arrays; npgan checks them as NumPy does (ops._check_index_bounds)."""
    from npgan.ops import _check_index_bounds
    x = np.zeros((4, 5, 6))
    m = np.zeros((4, 5), bool)
    m[1, 2] = True
    good = [np.array([0, 3, -4]), (slice(None), np.array([4, -5])), (Ellipsis, np.array([5, -6])),
            (None, 1, np.array([[0], [4]])), (m, np.array([5]))]
    bad = [np.array([4]), (slice(None), np.array([0, 5])), (Ellipsis, np.array([-7])),
           (None, 1, np.array([-6])), (m, np.array([6])), (0, 0, np.array([6]))]
    for key in good:
        x[key]  # NumPy agrees these are in range
        _check_index_bounds(x.shape, key)
    for key in bad:
        with pytest.raises(IndexError):
            x[key]
        with pytest.raises(IndexError, match="out of bounds"):
            _check_index_bounds(x.shape, key)
