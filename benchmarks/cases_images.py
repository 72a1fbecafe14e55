"""Colour DCGAN cases: the write-up's 64×64×3 network at batch 128 and its 32×32×3 variant at batch 64.

    python benchmarks/bench.py --only "64×64×3"      python benchmarks/bench.py --only "32×32×3"

The network of Radford et al. as the write-up trains it: nz = 100, ngf = ndf = 64, no biases;
G = ConvT(100 → 512, k4 s1 p0: 4×4) → 256 (8×8) → 128 (16×16) → 64 (32×32) → 3 (64×64), k4 s2 p1, each hidden
layer BatchNorm2d + ReLU, Tanh out; D its mirror, Conv k4 s2 p1 with LeakyReLU(0.2), BatchNorm2d from the second
layer, one logit from a k4 s1 p0 conv on 4×4. The 32×32 variant has one up-sampling stage fewer
(G 100 → 256 (4×4) → 128 → 64 → 3; D 3 → 64 → 128 → 256 → 1). DCGAN init (N(0, 0.02), γ N(1, 0.02)),
Adam lr 2e-4, betas (0.5, 0.999), one D step and one G step on non-saturating BCE (bench.gan_step; the builders
of cases_conv). Both cases run on ``--device cpu`` and ``--device gpu`` (npgan on CuPy against torch on CUDA).
The target is npgan/torch ≤ 1.5 on the CPU. ``batch_draw.py`` compares the 64×64 step with drawing
its batch from an ImageFolder cache.
"""

from __future__ import annotations

from functools import partial

from bench import Case
from cases_conv import dcgan_step_npgan, dcgan_step_torch


def dcgan(nn, size=64, nz=100, ngf=64, ndf=64, nc=3):
    """(G, D) of the DCGAN for ``size``×``size``×``nc`` images (size = 4·2^k, k ≥ 1), built from ``nn``
    (``npgan.nn`` or ``torch.nn``: the same code makes both twins). G takes (B, nz, 1, 1); D returns (B, 1)."""
    stages = size.bit_length() - 3          # up-sampling stages after the first 4×4: 4 for 64, 3 for 32
    if size != 4 << stages or stages < 1:
        raise ValueError(f"dcgan: image size must be 4·2^k (8, 16, 32, 64, 128...), got {size}")
    widths = [ngf << (stages - 1 - i) for i in range(stages)]            # 64: 512, 256, 128, 64
    g = [nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    for a, b in zip(widths, widths[1:]):
        g += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
    g += [nn.ConvTranspose2d(widths[-1], nc, 4, 2, 1, bias=False), nn.Tanh()]
    dw = [ndf << i for i in range(stages)]                                  # 64: 64, 128, 256, 512
    d = [nn.Conv2d(nc, dw[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
    for a, b in zip(dw, dw[1:]):
        d += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2)]
    d += [nn.Conv2d(dw[-1], 1, 4, 1, 0, bias=False), nn.Flatten()]
    return nn.Sequential(*g), nn.Sequential(*d)


def dcgan_npgan(device, size=64, batch=128):
    return dcgan_step_npgan(partial(dcgan, size=size), (3, size, size), batch)


def dcgan_torch(device, size=64, batch=128):
    return dcgan_step_torch(partial(dcgan, size=size), (3, size, size), batch, device)


DCGAN64 = "DCGAN 64×64×3 train step, batch 128"
DCGAN32 = "DCGAN 32×32×3 train step, batch 64"

CASES = [
    Case(DCGAN64, partial(dcgan_npgan, size=64, batch=128), partial(dcgan_torch, size=64, batch=128)),
    Case(DCGAN32, partial(dcgan_npgan, size=32, batch=64), partial(dcgan_torch, size=32, batch=64)),
]
