"""GPU cases (run with ``--device gpu`` only): training steps and the KDE entropy at GPU-sized batches.

    python benchmarks/bench.py --device gpu --only GPU [--compare-cpu]

npgan on CuPy beside PyTorch on CUDA, the same models, optimizers and shapes:

* the MLP GAN training step (D then G, Adam) at batch 64 and 1024 (cases_core's builders);
* the 28×28 DCGAN training step at batch 64 and 512 (cases_conv's builders);
* the 64×64 DCGAN of Radford et al. (nz 100, ngf = ndf = 64, 3 channels) at batch 128;
* the KDE entropy forward + backward at n = 4096, d = 3072 (cases_kde's builders: Silverman, leave-one-out).

The builders place their tensors on the current device (bench.py sets it) and torch's on ``cuda``.
"""

from __future__ import annotations

from functools import partial

from bench import Case
from cases_conv import dcgan_npgan, dcgan_step_npgan, dcgan_step_torch, dcgan_torch
from cases_core import mlp_gan_npgan, mlp_gan_torch
from cases_kde import _npgan_builder as kde_npgan
from cases_kde import _torch_builder as kde_torch


def _dcgan64(nn, nz=100, ngf=64, ndf=64, nc=3):
    """The DCGAN of the PyTorch example: G (nz,1,1) → (nc,64,64), D (nc,64,64) → (1,1,1) logits."""
    G = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())
    D = nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Flatten())
    return G, D


def dcgan64_npgan(device, batch=128):
    return dcgan_step_npgan(_dcgan64, (3, 64, 64), batch)


def dcgan64_torch(device, batch=128):
    return dcgan_step_torch(_dcgan64, (3, 64, 64), batch, device)


GPU = ("gpu",)

CASES = [
    Case("GPU: MLP GAN train step (D+G, Adam), batch 64", partial(mlp_gan_npgan, batch=64),
         partial(mlp_gan_torch, batch=64), devices=GPU),
    Case("GPU: MLP GAN train step (D+G, Adam), batch 1024", partial(mlp_gan_npgan, batch=1024),
         partial(mlp_gan_torch, batch=1024), devices=GPU),
    Case("GPU: DCGAN 28x28 train step (D+G, Adam), batch 64", partial(dcgan_npgan, batch=64),
         partial(dcgan_torch, batch=64), devices=GPU),
    Case("GPU: DCGAN 28x28 train step (D+G, Adam), batch 512", partial(dcgan_npgan, batch=512),
         partial(dcgan_torch, batch=512), devices=GPU),
    Case("GPU: DCGAN 64x64 train step (D+G, Adam), batch 128", dcgan64_npgan, dcgan64_torch, devices=GPU),
    Case("GPU: kde_entropy fwd+bwd n=4096 d=3072 (silverman, LOO)", kde_npgan(4096, 3072), kde_torch(4096, 3072),
         devices=GPU),
]
