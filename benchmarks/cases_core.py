"""Core engine cases: a dense layer, and a full MLP GAN training step."""

from __future__ import annotations

from bench import Case, gan_step


def _np_mods():
    import npgan
    import npgan.functional as F
    from npgan import nn, optim
    return npgan, F, nn, optim


def linear_npgan(device):
    npgan, F, nn, optim = _np_mods()
    lin = nn.Linear(784, 256)
    x = npgan.randn(256, 784)

    def step():
        lin.zero_grad()
        lin(x).sum().backward()
    return step


def linear_torch(device):
    import torch
    dev = "cuda" if device == "gpu" else "cpu"
    lin = torch.nn.Linear(784, 256).to(dev)
    x = torch.randn(256, 784, device=dev)

    def step():
        lin.zero_grad()
        lin(x).sum().backward()
    return step


def mlp_gan_npgan(device, batch=64):
    npgan, F, nn, optim = _np_mods()
    G = nn.Sequential(nn.Linear(100, 128), nn.ReLU(), nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 784), nn.Tanh())
    D = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 1))
    og = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    od = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = npgan.rand(batch, 784) * 2 - 1
    ones, zeros = npgan.ones(batch, 1), npgan.zeros(batch, 1)

    return gan_step(F, G, D, og, od, real, lambda: npgan.randn(batch, 100), ones, zeros)


def mlp_gan_torch(device, batch=64):
    import torch
    from torch import nn
    F = torch.nn.functional
    dev = "cuda" if device == "gpu" else "cpu"
    G = nn.Sequential(nn.Linear(100, 128), nn.ReLU(), nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 784),
                      nn.Tanh()).to(dev)
    D = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 1)).to(dev)
    og = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = torch.rand(batch, 784, device=dev) * 2 - 1
    ones, zeros = torch.ones(batch, 1, device=dev), torch.zeros(batch, 1, device=dev)

    return gan_step(F, G, D, og, od, real, lambda: torch.randn(batch, 100, device=dev), ones, zeros)


CASES = [
    Case("linear 784->256 fwd+bwd, batch 256", linear_npgan, linear_torch),
    Case("MLP GAN train step (D+G, Adam), batch 64", mlp_gan_npgan, mlp_gan_torch),
]
