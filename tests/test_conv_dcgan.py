"""Whole DCGAN networks and BatchNorm2d against PyTorch (float64): outputs, every gradient, running stats.

The networks are written once against the shared ``nn`` API and built twice, from ``torch.nn`` and from
``npgan.nn``; the torch weights are copied into npgan through ``state_dict``.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, compare_module_grads, torch_or_skip

import npgan
from npgan import nn


class _Main:
    """Factory of ``Module(main=Sequential(...))`` for either library (PyTorch DCGAN example's key names)."""

    @staticmethod
    def wrap(lib, layers):
        class Net(lib.Module):
            def __init__(self):
                super().__init__()
                self.main = lib.Sequential(*layers)

            def forward(self, x):
                return self.main(x)
        return Net()


def dcgan64(lib, nz=100, ngf=64, ndf=64, nc=3):
    """The 64x64x3 DCGAN of the PyTorch example: 5 transposed convs in G, 5 convs in D, no biases."""
    G = _Main.wrap(lib, [
        lib.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), lib.BatchNorm2d(ngf * 8), lib.ReLU(),
        lib.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), lib.BatchNorm2d(ngf * 4), lib.ReLU(),
        lib.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), lib.BatchNorm2d(ngf * 2), lib.ReLU(),
        lib.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), lib.BatchNorm2d(ngf), lib.ReLU(),
        lib.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), lib.Tanh()])
    D = _Main.wrap(lib, [
        lib.Conv2d(nc, ndf, 4, 2, 1, bias=False), lib.LeakyReLU(0.2),
        lib.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), lib.BatchNorm2d(ndf * 2), lib.LeakyReLU(0.2),
        lib.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), lib.BatchNorm2d(ndf * 4), lib.LeakyReLU(0.2),
        lib.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), lib.BatchNorm2d(ndf * 8), lib.LeakyReLU(0.2),
        lib.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False)])
    return G, D, (nz, 1, 1), (nc, 64, 64)


def dcgan28(lib, nz=100):
    """The 28x28x1 variant: G 1→7→14→28, D 28→14→7→1."""
    G = _Main.wrap(lib, [
        lib.ConvTranspose2d(nz, 128, 7, 1, 0, bias=False), lib.BatchNorm2d(128), lib.ReLU(),
        lib.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), lib.BatchNorm2d(64), lib.ReLU(),
        lib.ConvTranspose2d(64, 1, 4, 2, 1, bias=False), lib.Tanh()])
    D = _Main.wrap(lib, [
        lib.Conv2d(1, 64, 4, 2, 1, bias=False), lib.LeakyReLU(0.2),
        lib.Conv2d(64, 128, 4, 2, 1, bias=False), lib.BatchNorm2d(128), lib.LeakyReLU(0.2),
        lib.Conv2d(128, 1, 7, 1, 0, bias=False)])
    return G, D, (nz, 1, 1), (1, 28, 28)


def _torch_dcgan_init(torch, model):
    """The PyTorch example's weights_init; the batch-norm biases are made non-zero too (sharper test)."""
    for m in model.modules():
        if "Conv" in type(m).__name__:
            torch.nn.init.normal_(m.weight, 0.0, 0.02)
        elif "BatchNorm" in type(m).__name__:
            torch.nn.init.normal_(m.weight, 1.0, 0.02)
            torch.nn.init.normal_(m.bias, 0.0, 0.1)


def _twins(build):
    torch = torch_or_skip()
    torch.manual_seed(0)
    tG, tD, zshape, xshape = build(torch.nn)
    tG, tD = tG.double(), tD.double()
    _torch_dcgan_init(torch, tG)
    _torch_dcgan_init(torch, tD)
    npgan.set_default_dtype("float64")
    G, D, _, _ = build(nn)
    G.load_state_dict(tG.state_dict())
    D.load_state_dict(tD.state_dict())
    assert list(G.state_dict()) == list(tG.state_dict()) and list(D.state_dict()) == list(tD.state_dict())
    return torch, (G, tG), (D, tD), zshape, xshape


def _compare_buffers(ours, theirs):
    tb = dict(theirs.named_buffers())
    for name, b in ours.named_buffers():
        assert_close(b, tb[name], what=f"buffer {name}")


@pytest.mark.parametrize("build", [dcgan28, dcgan64], ids=["28x28", "64x64"])
def test_dcgan_matches_torch(device, threads, build):
    """G and D separately (train mode, then eval mode), and the D(G(z)) chain, on batch 3 (three chunks when split)."""
    torch, (G, tG), (D, tD), zshape, xshape = _twins(build)
    rng = np.random.default_rng(0)
    batch = 3
    for net, tnet, shape in [(G, tG, zshape), (D, tD, xshape)]:
        for training in (True, False):
            net.train(training)
            tnet.train(training)
            net.zero_grad()
            tnet.zero_grad()
            x = rng.standard_normal((batch,) + shape)
            X, tX = npgan.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
            y, ty = net(X), tnet(tX)
            assert_close(y, ty, what=f"{type(net).__name__} output (training={training})")
            gy = rng.standard_normal(y.shape)
            y.backward(gy)
            ty.backward(torch.tensor(gy))
            assert_close(X.grad, tX.grad, what="input grad")
            compare_module_grads(net, tnet)
            _compare_buffers(net, tnet)

    # the GAN chain: a generator loss through D(G(z)), both in training mode
    G.train()
    D.train()
    tG.train()
    tD.train()
    for m in (G, D, tG, tD):
        m.zero_grad()
    z = rng.standard_normal((batch,) + zshape)
    out = D(G(npgan.tensor(z)))
    tout = tD(tG(torch.tensor(z)))
    assert_close(out, tout, what="D(G(z))")
    npgan.functional.binary_cross_entropy_with_logits(out.reshape(batch, 1), 1.0).backward()
    torch.nn.functional.binary_cross_entropy_with_logits(tout.reshape(batch, 1), torch.ones(batch, 1,
                                                         dtype=torch.float64)).backward()
    compare_module_grads(G, tG)
    compare_module_grads(D, tD)
    _compare_buffers(G, tG)
    _compare_buffers(D, tD)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm2d_matches_torch(device, momentum):
    """BatchNorm2d, float64: training (batch statistics, running stats updated twice), then evaluation."""
    torch = torch_or_skip()
    npgan.set_default_dtype("float64")
    ours = nn.BatchNorm2d(3, momentum=momentum)
    theirs = torch.nn.BatchNorm2d(3, momentum=momentum).double()
    rng = np.random.default_rng(5)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(rng.standard_normal(3)))
        theirs.bias.copy_(torch.tensor(rng.standard_normal(3)))
    ours.load_state_dict(theirs.state_dict())
    for training in (True, True, False):
        ours.train(training)
        theirs.train(training)
        ours.zero_grad()
        theirs.zero_grad()
        x = rng.standard_normal((4, 3, 5, 6)) * 3 + 1
        X, tX = npgan.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y, ty = ours(X), theirs(tX)
        assert_close(y, ty, what=f"output (training={training})")
        gy = rng.standard_normal(y.shape)
        y.backward(gy)
        ty.backward(torch.tensor(gy))
        assert_close(X.grad, tX.grad, what="grad x")
        compare_module_grads(ours, theirs)
        _compare_buffers(ours, theirs)
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked)


def test_batchnorm2d_gradcheck(device):
    npgan.set_default_dtype("float64")
    bn = nn.BatchNorm2d(2)
    x = npgan.randn(3, 2, 3, 2, requires_grad=True)
    npgan.gradcheck(lambda x, w, b: npgan.functional.batch_norm(x, None, None, w, b, training=True),
                    [x, bn.weight, bn.bias])
