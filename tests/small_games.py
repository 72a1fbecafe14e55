"""Small GANs whose training steps the tests write out by hand: the Dirac-GAN trainer (G(z) = θ, D(x) = ψx, real
data at 0, the Wasserstein loss) and a 2-D MLP GAN; shared by the extragradient and consensus tests.

Each comparison is between two float64 evaluations of the same formulas in different orders: a few ulps of the
numbers involved (|x|, |v| ≤ 10 here), so ``TOL`` = 1e-13 absolute.
"""

from __future__ import annotations

import numpy as np

import npgan
from npgan import nn, optim
from npgan.gan import TrainConfig, Trainer

TOL = 1e-13


class Dirac(nn.Module):
    """G(z) = f(θ) for every z (one number): the Dirac-GAN's generator; f = identity, or √ (to make NaNs)."""

    def __init__(self, theta: float, sqrt: bool = False) -> None:
        super().__init__()
        self.theta = nn.Parameter(npgan.tensor([theta], dtype="float64"))
        self.sqrt = sqrt

    def forward(self, z):
        t = self.theta.sqrt() if self.sqrt else self.theta
        return npgan.ones(z.shape[0], 1, dtype="float64") * t.reshape(1, 1)


def dirac(theta, psi, lr, opt="sgd", sqrt=False, **train):
    npgan.set_default_dtype("float64")
    G = Dirac(theta, sqrt)
    D = nn.Linear(1, 1, bias=False)
    D.weight.data[...] = psi
    make = (lambda ps: optim.SGD(ps, lr=lr)) if opt == "sgd" else (lambda ps: optim.Adam(ps, lr=lr, betas=(0.5, 0.9)))
    cfg = TrainConfig(**{"steps": 1000, "batch_size": 4, "z_dim": 1, "loss": "wasserstein", "lr": lr,
                         "clip_value": 1e9, "extragradient": True, **train})
    real = npgan.zeros(4, 1, dtype="float64")
    return Trainer(G, D, make(G.parameters()), make(D.parameters()), lambda step: real, cfg), G, D


def state(G, D):
    return np.array([float(G.theta.data[0]), float(D.weight.data[0, 0])])


def mlp(z_dim=3, h=8):
    G = nn.Sequential(nn.Linear(z_dim, h), nn.Tanh(), nn.Linear(h, 2))
    D = nn.Sequential(nn.Linear(2, h), nn.Tanh(), nn.Linear(h, 1))
    return G, D
