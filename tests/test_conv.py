"""conv2d / conv_transpose2d: gradcheck over random geometry, PyTorch parity, layers, errors."""

from __future__ import annotations

import numpy as np
import pytest
from conv_problems import conv_arrays, geometry, leaf_tensors, np_conv, torch_conv
from helpers import assert_close, torch_or_skip
from hypothesis import given, settings

import npgan
import npgan.functional as F
from npgan import nn
from npgan.conv import conv_output_size, conv_transpose_output_size


# ----------------------------------------------------------------------------- gradcheck
@settings(max_examples=25)
@given(g=geometry())
def test_conv2d_gradcheck(device, threads, layout, g):
    npgan.gradcheck(np_conv(g, False), leaf_tensors(conv_arrays(g, False)))


@settings(max_examples=25)
@given(g=geometry(transposed=True))
def test_conv_transpose2d_gradcheck(device, threads, layout, g):
    npgan.gradcheck(np_conv(g, True), leaf_tensors(conv_arrays(g, True)))


# ----------------------------------------------------------------------------- PyTorch parity (functional)
def _parity(g, transposed):
    torch = torch_or_skip()
    arrays = conv_arrays(g, transposed)
    ours = leaf_tensors(arrays)
    theirs = [torch.tensor(a, requires_grad=True) if a is not None else None for a in arrays]
    y = np_conv(g, transposed)(*ours)
    ty = torch_conv(g, transposed)(*theirs)
    gy = np.random.default_rng(g["seed"] + 1).standard_normal(tuple(ty.shape))
    y.backward(gy)
    ty.backward(torch.tensor(gy))
    assert_close(y, ty, what="output")
    for name, a, t in zip(("x", "weight", "bias"), ours, [t for t in theirs if t is not None]):
        assert_close(a.grad, t.grad, what=f"grad of {name}")


@settings(max_examples=30)
@given(g=geometry())
def test_conv2d_matches_torch(device, threads, layout, g):
    _parity(g, False)


@settings(max_examples=30)
@given(g=geometry(transposed=True))
def test_conv_transpose2d_matches_torch(device, threads, layout, g):
    _parity(g, True)


@pytest.mark.parametrize("transposed", [False, True])
def test_dcgan_shapes_match_torch(device, threads, layout, transposed):
    """The DCGAN geometries (k4 s2 p1, k4 s1 p0, k7 s1 p0) on larger channel counts, float64."""
    cases = [(4, 2, 1, (6, 5)), (4, 1, 0, (1, 1) if transposed else (4, 4)), (7, 1, 0, (7, 7))]
    for k, s, p, hw in cases:
        g = dict(N=3, C=5, O=4, k=(k, k), s=(s, s), p=(p, p), d=(1, 1), op=(0, 0), HW=hw, bias=True,
                 seed=k + s)
        _parity(g, transposed)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("k, s, p, d, hw", [
    ((4, 3), (2, 3), (1, 0), (1, 1), (6, 7)),  # stride divides kernel, U = (2, 1): by phase blocks
    ((2, 2), (1, 1), (0, 1), (1, 1), (5, 4)),  # stride 1: by phase blocks, U = k
    ((3, 3), (2, 2), (1, 1), (1, 1), (5, 6)),  # stride does not divide kernel: GEMM, then col2im
    ((3, 2), (1, 2), (2, 1), (2, 1), (5, 5)),  # dilation: GEMM, then col2im
    ((5, 5), (1, 1), (0, 0), (1, 1), None),    # one output pixel tiles the input exactly
])
def test_every_input_gradient_path_matches_torch(device, threads, layout, transposed, k, s, p, d, hw):
    """The input gradient's routes by geometry (it is also the transposed conv's forward): phase blocks, col2im,
    and the dense kind (one output pixel from a kernel that covers the input)."""
    if hw is None:
        hw = (1, 1) if transposed else k
    g = dict(N=2, C=3, O=4, k=k, s=s, p=p, d=d, op=(0, 0), HW=hw, bias=True, seed=sum(k) + sum(s))
    _parity(g, transposed)


# ----------------------------------------------------------------------------- properties
def test_conv_transpose_is_adjoint_of_conv():
    """⟨conv(x, w), y⟩ = ⟨x, convᵀ(y, w)⟩ for the same weight and geometry."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((4, 3, 3, 2))
    y = F.conv2d(npgan.Tensor(x), npgan.Tensor(w), stride=(2, 3), padding=(1, 2), dilation=(2, 1))
    v = rng.standard_normal(y.shape)
    op = tuple(x.shape[2 + a] - conv_transpose_output_size(y.shape[2 + a], w.shape[2 + a], (2, 3)[a],
                                                             (1, 2)[a], 0, (2, 1)[a]) for a in (0, 1))
    xt = F.conv_transpose2d(npgan.Tensor(v), npgan.Tensor(w), stride=(2, 3), padding=(1, 2),
                            output_padding=op, dilation=(2, 1))
    assert xt.shape == x.shape
    np.testing.assert_allclose((y.numpy() * v).sum(), (x * xt.numpy()).sum(), rtol=1e-12)


@pytest.mark.parametrize("transposed", [False, True])
def test_float32_stays_float32_and_inputs_untouched(transposed):
    g = dict(N=2, C=3, O=4, k=(3, 3), s=(2, 2), p=(1, 1), d=(1, 1), op=(1, 1), HW=(5, 6), bias=True, seed=3)
    arrays = [a.astype(np.float32) for a in conv_arrays(g, transposed)]
    before = [a.copy() for a in arrays]
    ts = leaf_tensors(arrays)
    y = np_conv(g, transposed)(*ts)
    y.backward(np.ones(y.shape, np.float32))
    assert y.dtype == np.float32 and y.data.flags.c_contiguous
    for t, b in zip(ts, before):
        assert t.grad.dtype == np.float32 and t.grad.shape == t.shape
        np.testing.assert_array_equal(t.data, b)


def test_conv_output_size_helpers_match_torch():
    torch = torch_or_skip()
    for size, k, s, p, d in [(14, 4, 2, 1, 1), (28, 4, 2, 1, 1), (7, 7, 1, 0, 1), (10, 3, 3, 2, 2)]:
        y = torch.nn.functional.conv2d(torch.zeros(1, 1, size, size), torch.zeros(1, 1, k, k), None, s, p, d)
        assert conv_output_size(size, k, s, p, d) == y.shape[-1]
        yt = torch.nn.functional.conv_transpose2d(torch.zeros(1, 1, size, size), torch.zeros(1, 1, k, k),
                                                  None, s, p, s - 1, 1, d)
        assert conv_transpose_output_size(size, k, s, p, s - 1, d) == yt.shape[-1]


@pytest.mark.parametrize("transposed", [False, True])
def test_forward_peak_memory_is_within_twice_the_columns(transposed):
    """Peak extra allocation of one forward <= 2 x its column matrix (N·OH·OW, kh·kw·C) (float32)."""
    import tracemalloc
    N, cin, cout, hw = 16, 32, 64, (14 if not transposed else 7)
    x = npgan.randn(N, cin, hw, hw)
    w = npgan.randn(*((cin, cout) if transposed else (cout, cin)), 4, 4)
    # columns: of x for the conv (C = cin, 7x7 outputs); of the output for the transposed conv (C = cout)
    col_bytes = N * 7 * 7 * 16 * (cin if not transposed else cout) * 4
    fn = (lambda: F.conv_transpose2d(x, w, stride=2, padding=1)) if transposed else \
        (lambda: F.conv2d(x, w, stride=2, padding=1))
    fn()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        y = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert y.shape[2:] == ((14, 14) if transposed else (7, 7))
    assert peak - base <= 2 * col_bytes, f"peak {(peak - base) / 2**20:.2f} MB vs col {col_bytes / 2**20:.2f} MB"


def test_no_grad_records_nothing():
    x = npgan.randn(2, 3, 6, 6, requires_grad=True)
    w = npgan.randn(4, 3, 3, 3, requires_grad=True)
    with npgan.no_grad():
        y = F.conv2d(x, w, padding=1)
    assert y.shape == (2, 4, 6, 6) and not y.requires_grad and y.creator is None


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, match", [
    (lambda: F.conv2d(npgan.zeros(3, 8, 8), npgan.zeros(4, 3, 3, 3)), r"4-D.*\(3, 8, 8\)"),
    (lambda: F.conv2d(npgan.zeros(1, 3, 8, 8), npgan.zeros(4, 3, 3)), r"weight must be 4-D"),
    (lambda: F.conv2d(npgan.zeros(1, 2, 8, 8), npgan.zeros(4, 3, 3, 3)), r"2 channels.*expects 3"),
    (lambda: F.conv2d(npgan.zeros(1, 3, 8, 8), npgan.zeros(4, 3, 3, 3), npgan.zeros(3)), r"bias.*\(4,\)"),
    (lambda: F.conv2d(npgan.zeros(1, 3, 3, 8), npgan.zeros(4, 3, 5, 3)),
     r"too small.*output size is \(0, 6\)"),
    (lambda: F.conv2d(npgan.zeros(1, 3, 5, 5), npgan.zeros(4, 3, 3, 3), dilation=3),
     r"too small.*dilation \(3, 3\).*output size is \(0, 0\)"),
    (lambda: F.conv2d(npgan.zeros(1, 3, 8, 8), npgan.zeros(4, 3, 3, 3), stride=0), r"stride.*>= 1.*0"),
    (lambda: F.conv2d(npgan.zeros(1, 3, 8, 8), npgan.zeros(4, 3, 3, 3), padding=-1), r"padding.*>= 0.*-1"),
    (lambda: F.conv2d(npgan.zeros(1, 3, 8, 8), npgan.zeros(4, 3, 3, 3), stride=(1, 2, 3)), r"stride"),
    (lambda: F.conv_transpose2d(npgan.zeros(1, 3, 4, 4), npgan.zeros(4, 3, 3, 3)), r"3 channels.*expects 4"),
    (lambda: F.conv_transpose2d(npgan.zeros(1, 3, 4, 4), npgan.zeros(3, 4, 3, 3), stride=2, output_padding=2),
     r"output_padding \(2, 2\) must be smaller than either stride \(2, 2\) or dilation \(1, 1\)"),
    (lambda: F.conv_transpose2d(npgan.zeros(1, 3, 1, 1), npgan.zeros(3, 4, 3, 3), padding=2),
     r"output size \(-1, -1\)"),
    (lambda: F.conv_transpose2d(npgan.zeros(2, 3, 4), npgan.zeros(3, 4, 3, 3)), r"4-D.*\(2, 3, 4\)"),
])
def test_bad_input_raises_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("make, match", [
    (lambda: nn.Conv2d(0, 4, 3), r"in_channels.*positive integer.*0"),
    (lambda: nn.Conv2d(3, -1, 3), r"out_channels.*-1"),
    (lambda: nn.Conv2d(3, 4, 0), r"kernel_size.*0"),
    (lambda: nn.Conv2d(3, 4, (3, 0)), r"kernel_size.*\(3, 0\)"),
    (lambda: nn.Conv2d(3, 4, 3, stride=0), r"stride.*0"),
    (lambda: nn.Conv2d(3, 4, 3, dilation=0), r"dilation.*0"),
    (lambda: nn.ConvTranspose2d(3, 4, 3, padding=-2), r"padding.*-2"),
    (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=2), r"output_padding"),
    (lambda: nn.ConvTranspose2d(3, 0, 3), r"out_channels"),
])
def test_layer_construction_rejects_bad_sizes(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_layer_rejects_wrong_input():
    with pytest.raises(ValueError, match=r"Conv2d\(3, 4\).*\(N, 3, H, W\).*\(2, 5, 8, 8\)"):
        nn.Conv2d(3, 4, 3)(npgan.zeros(2, 5, 8, 8))
    with pytest.raises(ValueError, match=r"ConvTranspose2d\(3, 4\).*\(2, 3, 8\)"):
        nn.ConvTranspose2d(3, 4, 3)(npgan.zeros(2, 3, 8))


# ----------------------------------------------------------------------------- layers
def test_conv2d_layer_matches_torch_layer(device):
    torch = torch_or_skip()
    npgan.set_default_dtype("float64")
    ours = nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    theirs = torch.nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)).double()
    theirs.load_state_dict({k: torch.from_numpy(npgan.backend.to_numpy(v)) for k, v in ours.state_dict().items()})
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight", "bias"]
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 9))
    X, tX = npgan.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (ours(X) ** 2).sum().backward()
    (theirs(tX) ** 2).sum().backward()
    assert_close(X.grad, tX.grad, what="grad x")
    assert_close(ours.weight.grad, theirs.weight.grad, what="grad weight")
    assert_close(ours.bias.grad, theirs.bias.grad, what="grad bias")


def test_conv_transpose2d_layer_output_size_matches_torch():
    torch = torch_or_skip()
    npgan.set_default_dtype("float64")
    ours = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1)
    theirs = torch.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1).double()
    theirs.load_state_dict({k: torch.from_numpy(npgan.backend.to_numpy(v)) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 6))
    for size in [(9, 11), (10, 12), (10, 11)]:
        y, ty = ours(npgan.Tensor(x), output_size=size), theirs(torch.tensor(x), output_size=size)
        assert y.shape == tuple(ty.shape) == (2, 2) + size
        assert_close(y, ty, what=f"output_size={size}")
    with pytest.raises(ValueError, match=r"output size \(8, 11\) is not possible.*sizes 9\.\.10"):
        ours(npgan.Tensor(x), output_size=(8, 11))


@pytest.mark.parametrize("cls, in_c, out_c, fan_in",
                         [(nn.Conv2d, 6, 10, 6 * 9), (nn.ConvTranspose2d, 6, 10, 10 * 9)])
def test_default_init_is_pytorch(cls, in_c, out_c, fan_in):
    """kaiming_uniform(a=√5): weight and bias ~ U(±1/√fan_in); ConvTranspose2d's fan_in is out·kh·kw."""
    torch = torch_or_skip()
    layers = [cls(in_c, out_c, 3) for _ in range(30)]
    w = np.concatenate([m.weight.numpy().ravel() for m in layers])
    b = np.concatenate([m.bias.numpy().ravel() for m in layers])
    bound = 1 / np.sqrt(fan_in)
    ref = getattr(torch.nn, cls.__name__)(in_c, out_c, 3)
    assert abs(ref.weight.detach().abs().max().item() - bound) < 0.1 * bound  # the same bound as PyTorch
    assert layers[0].weight.shape == tuple(ref.weight.shape)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.03 * bound
    assert np.abs(b).max() <= bound and abs(b.mean()) < 0.2 * bound
    assert cls(in_c, out_c, 3, bias=False).bias is None
    assert list(cls(in_c, out_c, 3, bias=False).state_dict()) == ["weight"]


def test_dcgan_init_statistics():
    npgan.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(256, 512, 4, bias=False), nn.BatchNorm2d(20000),
                          nn.ConvTranspose2d(512, 256, 4), nn.BatchNorm2d(20000))
    nn.init.dcgan_init(model)
    for i in (0, 2):
        w = model[i].weight.numpy()
        assert abs(w.mean()) < 1e-3, f"layer {i} weight mean {w.mean()}"
        assert abs(w.std() - 0.02) < 0.02 * 0.01, f"layer {i} weight std {w.std()}"
    for i in (1, 3):
        g = model[i].weight.numpy()
        assert abs(g.mean() - 1.0) < 1e-3 and abs(g.std() - 0.02) < 0.02 * 0.05
        assert np.all(model[i].bias.numpy() == 0)


def test_unflatten_feeds_conv_transpose():
    z = npgan.randn(4, 100, requires_grad=True)
    G = nn.Sequential(nn.Unflatten(1, (100, 1, 1)), nn.ConvTranspose2d(100, 8, 4, 1, 0))
    y = G(z)
    assert y.shape == (4, 8, 4, 4)
    y.sum().backward()
    assert z.grad.shape == (4, 100)
    with pytest.raises(ValueError, match=r"Unflatten.*size 99.*\(100, 1, 1\)"):
        G(npgan.randn(4, 99))


@pytest.mark.parametrize("transposed", [False, True])
def test_leaf_gradients_are_their_own_arrays(transposed):
    """Conv gradients go to leaves without a copy (fresh_grads): each must still be an array of its own,
    so that changing one .grad in place changes nothing else — and a second backward still accumulates."""
    g = dict(N=3, C=2, O=3, k=(1, 1), s=(1, 1), p=(0, 0), d=(1, 1), op=(0, 0), HW=(4, 4), bias=True, seed=7)
    ts = leaf_tensors(conv_arrays(g, transposed))
    y = np_conv(g, transposed)(*ts)
    gy = np.random.default_rng(0).standard_normal(y.shape)
    y.backward(gy, retain_graph=True)
    grads = [t.grad for t in ts]
    first = [a.copy() for a in grads]
    for i, a in enumerate(grads):
        assert not np.shares_memory(a, gy) and not any(np.shares_memory(a, b) for b in grads[i + 1:])
        assert not any(np.shares_memory(a, t.data) for t in ts)
    grads[0] += 1.0  # in place: the others are untouched
    for a, b in zip(grads[1:], first[1:]):
        np.testing.assert_array_equal(a, b)
    y.backward(gy)
    np.testing.assert_allclose(ts[1].grad, 2 * first[1], rtol=1e-12)
