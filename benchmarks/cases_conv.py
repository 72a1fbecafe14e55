"""Convolution cases: conv2d and conv_transpose2d forward+backward, and a full 28x28 DCGAN training step.

The conv cases also report the peak extra memory of one forward (``peak_MB``, via
``bench.peak_extra_bytes``) beside the size of its column matrix (``col_MB``); the target is
peak <= 2 x col.
"""

from __future__ import annotations

from bench import Case, gan_step, peak_extra_bytes

MB = 1024 * 1024


def _np_mods():
    import npgan
    import npgan.functional as F
    from npgan import nn, optim
    return npgan, F, nn, optim


def _torch_dev(device):
    return "cuda" if device == "gpu" else "cpu"


# ----------------------------------------------------------------------------- single layers
CONV = dict(N=64, C=64, H=14, O=128, k=4, s=2, p=1)
CONVT = dict(N=64, C=128, H=7, O=64, k=4, s=2, p=1)


def _col_mb(N, C, k, oh):
    """Size of the (C*k*k, N*oh*oh) float32 column matrix, in MB."""
    return C * k * k * N * oh * oh * 4 / MB


def _layer_npgan(layer_cls, cfg):
    npgan, F, nn, optim = _np_mods()
    N, C, H, O, k, s, p = (cfg[c] for c in "NCHOksp")
    layer = layer_cls(C, O, k, s, p)
    x = npgan.randn(N, C, H, H, requires_grad=True)

    def step():
        layer.zero_grad()
        x.grad = None
        layer(x).sum().backward()

    def forward():
        with npgan.no_grad():
            layer(x)

    y_shape = layer(x).shape
    # the column matrix of the forward (conv) or of the backward (transposed conv: im2col of gy)
    col = _col_mb(N, C, k, y_shape[2]) if layer_cls is nn.Conv2d else _col_mb(N, O, k, H)
    peak = peak_extra_bytes(forward) / MB
    return step, {"peak_MB": round(peak, 1), "col_MB": round(col, 1)}


def _layer_torch(layer_name, cfg, device):
    import torch
    dev = _torch_dev(device)
    N, C, H, O, k, s, p = (cfg[c] for c in "NCHOksp")
    layer = getattr(torch.nn, layer_name)(C, O, k, s, p).to(dev)
    x = torch.randn(N, C, H, H, device=dev, requires_grad=True)

    def step():
        layer.zero_grad()
        x.grad = None
        layer(x).sum().backward()
    return step


def conv_npgan(device):
    return _layer_npgan(_np_mods()[2].Conv2d, CONV)


def conv_torch(device):
    return _layer_torch("Conv2d", CONV, device)


def convt_npgan(device):
    return _layer_npgan(_np_mods()[2].ConvTranspose2d, CONVT)


def convt_torch(device):
    return _layer_torch("ConvTranspose2d", CONVT, device)


# ----------------------------------------------------------------------------- 28x28 DCGAN step
def _dcgan28(nn, leaky):
    G = nn.Sequential(
        nn.ConvTranspose2d(100, 128, 7, 1, 0, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
        nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 1, 4, 2, 1, bias=False), nn.Tanh())
    D = nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, 1, bias=False), leaky(),
        nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), leaky(),
        nn.Conv2d(128, 1, 7, 1, 0, bias=False), nn.Flatten())
    return G, D


def dcgan_step_npgan(build, image_shape, batch):
    """A DCGAN training step in npgan: ``build(nn) -> (G, D)``, DCGAN init, Adam(2e-4, (0.5, 0.999))."""
    npgan, F, nn, optim = _np_mods()
    G, D = build(nn)
    nn.init.dcgan_init(G)
    nn.init.dcgan_init(D)
    og = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    od = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = npgan.rand(batch, *image_shape) * 2 - 1
    ones, zeros = npgan.ones(batch, 1), npgan.zeros(batch, 1)
    return gan_step(F, G, D, og, od, real, lambda: npgan.randn(batch, 100, 1, 1), ones, zeros)


def dcgan_step_torch(build, image_shape, batch, device):
    """The same step in PyTorch, with the PyTorch DCGAN example's initialisation."""
    import torch
    from torch import nn
    dev = _torch_dev(device)
    G, D = build(nn)
    G, D = G.to(dev), D.to(dev)
    for m in list(G.modules()) + list(D.modules()):
        if "Conv" in type(m).__name__:
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif "BatchNorm" in type(m).__name__:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    og = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = torch.rand(batch, *image_shape, device=dev) * 2 - 1
    ones, zeros = torch.ones(batch, 1, device=dev), torch.zeros(batch, 1, device=dev)
    return gan_step(torch.nn.functional, G, D, og, od, real,
                    lambda: torch.randn(batch, 100, 1, 1, device=dev), ones, zeros)


def _dcgan28_leaky(nn):
    return _dcgan28(nn, lambda: nn.LeakyReLU(0.2))


def dcgan_npgan(device, batch=64):
    return dcgan_step_npgan(_dcgan28_leaky, (1, 28, 28), batch)


def dcgan_torch(device, batch=64):
    return dcgan_step_torch(_dcgan28_leaky, (1, 28, 28), batch, device)


CASES = [
    Case("conv2d 64x64x14x14 64->128 k4s2p1 fwd+bwd", conv_npgan, conv_torch),
    Case("conv_transpose2d 64x128x7x7 128->64 k4s2p1 fwd+bwd", convt_npgan, convt_torch),
    Case("DCGAN 28x28 conv train step (D+G, Adam), batch 64", dcgan_npgan, dcgan_torch),
]
