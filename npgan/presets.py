"""The presets users start from, their architectures and data, and :func:`build`, which makes a run's parts.

A preset is a :class:`~npgan.config.RunConfig` (everything needed to reproduce a run). The architectures are the
ones of the literature, each sized to its data:

* ``mlp2d`` — the 2-D mixtures: G z → 128 → 128 → 2 (ReLU), D 2 → 128 → 128 → 1 (LeakyReLU 0.2);
* ``mlp`` — the MLP GAN: G z → 128 → 256 → D_img (ReLU, ReLU, Tanh), D D_img → 256 → 128 → 1 (LeakyReLU 0.2);
* ``mlp_bn`` — a deeper MLP with BatchNorm1d blocks (G z → 128 → 256 → 512 → D_img; D D_img → 512 → 256 → 1);
* ``dcgan`` — DCGAN: for 28×28, G ConvT(z,128,7,1,0)+BN+ReLU → ConvT(128,64,4,2,1)+BN+ReLU → ConvT(64,1,4,2,1)+
  Tanh and D Conv(1,64,4,2,1)+LReLU → Conv(64,128,4,2,1)+BN+LReLU → Conv(128,1,7,1,0); for 8×8 the same with
  kernel 2 in place of 7 (4×4 → 2×2 → 1×1 in D); for any other size S = 4·2^n, Radford et al.'s DCGAN: a 4×4
  start and n stride-2 stages of widths h·2^(n−1) … h (``dcgan64``: 100 → 512 → 256 → 128 → 64 → 3 at 64×64), D the
  mirror; C channels from the data (:func:`image_shape`). Another size fails at construction, naming the sizes.

Colour presets: ``dcgan64`` (the write-up's network and hyper-parameters, a folder or CIFAR-10 at 64),
``cifar10-dcgan`` (32×32) and ``shapes-dcgan`` (the generated shapes, narrow enough for a CPU).

:func:`build` turns a configuration into ``(G, D, opt_g, opt_d, trainer)`` and changes no process-wide state: the
models are made on the current device in the current default dtype, their initial weights drawn from npgan's
generator as it stands (like any ``nn`` layer). Setting the dtype, device and seed from the configuration is
the job of the entry points (:class:`npgan.experiment.Run`, the command line) and of scripts, before they call
it. :data:`WGAN` is the Wasserstein GAN recipe (``npgan train --wgan``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from . import data, nn, optim
from .config import DATASETS, MODELS, RunConfig
from .gan import TrainConfig, Trainer
from .tensor import Tensor

__all__ = ["RunConfig", "PRESETS", "make_config", "build_models", "build", "Built", "real_source", "WGAN",
           "use_wgan", "DATASETS", "MODELS"]

def _mixture(data: str, **train: Any) -> RunConfig:
    return RunConfig(data=data, model="mlp2d", hidden=128, log_every=100, checkpoint_every=1000,
                     sample_every=1000, eval_samples=2500, train=TrainConfig(**train))


# The 2-D mixture recipe: batch 512, z 16, Adam (0.5, 0.999), lr 1e-3 → 1e-4 linear, λ annealed linearly to 0,
# fixed σ. On the grid, a 2-D noise (z = 2) is what made the difference: with z = 16 every run starved a row or
# column of modes (18–24 of 25, reverse KL 0.35–0.72); and λ = 0.2 rather than 0.1: with 0.1 seed 1 of 0-2 left
# a mode nearly empty (25/25 but reverse KL 0.065); with 0.2 seeds 0-3 scored 25/25, HQ ≥ 94.9 %, reverse KL
# ≤ 0.01, and seed 4 missed one mode (24/25, 89.6 %, 0.092). Without the term no seed of 0-4 met all three
# (23-25 modes, HQ 87.7-94.4 %, reverse KL 0.013-0.41).
def _presets() -> dict[str, RunConfig]:
    return {
        "ring8": _mixture("ring8", steps=12000, batch_size=512, z_dim=16, lr=1e-3, lr_final=1e-4,
                          entropy_weight=0.1, entropy_weight_final=0.0, bandwidth=0.2),
        "grid25": _mixture("grid25", steps=25000, batch_size=512, z_dim=2, lr=1e-3, lr_final=1e-4,
                           entropy_weight=0.2, entropy_weight_final=0.0, bandwidth=0.5),
        # The plain MLP GAN collapses on the 1,438 training digits (8/10 classes, recall 0 after 4,000 steps);
        # the BatchNorm MLP with the KDE entropy term (λ = 0.1, Silverman σ) covers 10/10 with class KL ≈ 0.04.
        "digits-mlp": RunConfig(data="digits", model="mlp_bn", hidden=128, log_every=50, checkpoint_every=1000,
                                sample_every=500, eval_samples=2000,
                                train=TrainConfig(steps=4000, batch_size=64, z_dim=100, lr=2e-4,
                                                  entropy_weight=0.1, bandwidth="silverman")),
        "digits-dcgan": RunConfig(data="digits", model="dcgan", hidden=64, log_every=50, checkpoint_every=1000,
                                  sample_every=500, eval_samples=2000,
                                  train=TrainConfig(steps=3000, batch_size=64, z_dim=100, lr=2e-4)),
        "mnist-mlp": RunConfig(data="mnist", model="mlp", hidden=128, log_every=100, checkpoint_every=1000,
                               sample_every=1000, eval_samples=2000,
                               train=TrainConfig(steps=10000, batch_size=64, z_dim=100, lr=2e-4)),
        "mnist-dcgan": RunConfig(data="mnist", model="dcgan", hidden=64, log_every=100, checkpoint_every=1000,
                                 sample_every=1000, eval_samples=2000,
                                 train=TrainConfig(steps=5000, batch_size=64, z_dim=100, lr=2e-4)),
        # Radford et al.'s DCGAN exactly as the write-up has it (64x64x3, ngf = ndf = 64, z 100, Adam 2e-4
        # (0.5, 0.999), batch 128), on a folder of images (--data-dir) or, with --data cifar10, CIFAR-10 at 64.
        "dcgan64": RunConfig(data="folder", model="dcgan", hidden=64, image_size=64, channels=3, log_every=50,
                             checkpoint_every=500, sample_every=500, eval_samples=1000,
                             train=TrainConfig(steps=10000, batch_size=128, z_dim=100, lr=2e-4)),
        # The same at CIFAR-10's own 32x32: one up-sampling stage fewer (256 (4x4) -> 128 -> 64 -> 3).
        "cifar10-dcgan": RunConfig(data="cifar10", model="dcgan", hidden=64, image_size=32, channels=3,
                                   log_every=50, checkpoint_every=1000, sample_every=1000, eval_samples=2000,
                                   train=TrainConfig(steps=10000, batch_size=128, z_dim=100, lr=2e-4)),
        # The 32x32 DCGAN made narrow enough to train on 2 CPU cores in minutes. Measured (seed 0, README): 12/12
        # classes but class KL 0.18, coverage 0.76 after 2,000 steps (~200 s CPU); the target (KL <= 0.05,
        # coverage >= 0.7) is not met yet at this width.
        "shapes-dcgan": RunConfig(data="shapes", model="dcgan", hidden=SHAPES_WIDTH, image_size=32, channels=3,
                                  log_every=50, checkpoint_every=500, sample_every=500, eval_samples=2000,
                                  train=TrainConfig(steps=SHAPES_STEPS, batch_size=SHAPES_BATCH, z_dim=64,
                                                    lr=2e-4)),
    }


# shapes-dcgan's size (see its comment above).
SHAPES_WIDTH, SHAPES_STEPS, SHAPES_BATCH = 16, 2000, 64

PRESETS = _presets()


def make_config(preset: str) -> RunConfig:
    """A fresh copy of a preset's configuration."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = RunConfig.from_dict(PRESETS[preset].to_dict())
    cfg.preset = preset
    return cfg


def image_shape(cfg: RunConfig | str, image_size: int = 0, channels: int = 0) -> tuple[int, int, int]:
    """(C, H, W) of a run's images: its data set's own (:data:`npgan.data.IMAGE_DEFAULTS`) unless ``image_size``
    / ``channels`` say otherwise (the config's fields, or the arguments when ``cfg`` is a data set's name)."""
    if isinstance(cfg, RunConfig):
        name, image_size, channels = cfg.data, cfg.image_size, cfg.channels
    else:
        name = cfg
    c, s = data.image_format(name, image_size, channels)
    return c, s, s


def _dcgan_plan(H: int, model: str) -> tuple[int, int]:
    """(first kernel = first size s0, up-sampling stages n) with s0 · 2^n = H; ValueError naming the shapes.

    8 and 28 keep the small DCGANs' plan (2×2 and 7×7 starts, two stages); any other size must be 4 · 2^k
    (k ≥ 1): a 4×4 start and k stride-2 stages, as in Radford et al.
    """
    if H in (8, 28):
        return H // 4, 2
    n = max(1, round(math.log2(max(H, 1) / 4)))
    if H == 4 * 2 ** n:
        return 4, n
    lo = max(1, int(math.floor(math.log2(max(H, 4) / 4))))
    sizes = " -> ".join(f"{4 * 2 ** i}x{4 * 2 ** i}" for i in range(lo + 2))
    raise ValueError(f"model {model!r} cannot make {H}x{H} images: its generator doubles a 4x4 start "
                     f"({sizes}: 4*2^k pixels), so the image size must be one of 8, 16, 32, 64, 128, ... "
                     f"(or 28), not {H}")


def _dcgan(z: int, w: int, c: int, H: int, model: str) -> tuple[nn.Module, nn.Module]:
    """Radford et al.'s DCGAN for C×H×H images, width w (= ngf = ndf), no biases.

    G: z → ConvT(z, w·2^(n−1), s0, 1, 0) [s0×s0] → BN, ReLU → n − 1 times ConvT(·, ·/2, 4, 2, 1), BN, ReLU
    (doubling the size, halving the channels) → ConvT(w, C, 4, 2, 1), Tanh [H×H]. For 64×64×3, w = 64, z = 100:
    100 → 512 (4×4) → 256 (8×8) → 128 (16×16) → 64 (32×32) → 3 (64×64).
    D, the mirror: Conv(C, w, 4, 2, 1), LeakyReLU(0.2) → n − 1 times Conv(·, 2·, 4, 2, 1), BN, LeakyReLU(0.2)
    → Conv(w·2^(n−1), 1, s0, 1, 0) → one logit. Weights N(0, 0.02), BN γ N(1, 0.02), β 0 (dcgan_init).
    """
    s0, n = _dcgan_plan(H, model)
    width = [w * 2 ** i for i in range(n)]  # width[i]: channels at the layer that is 2^(i+1) times smaller than H
    g: list[nn.Module] = [nn.Unflatten(1, (z, 1, 1)), nn.ConvTranspose2d(z, width[-1], s0, 1, 0, bias=False),
                          nn.BatchNorm2d(width[-1]), nn.ReLU()]
    for i in range(n - 1, 0, -1):
        g += [nn.ConvTranspose2d(width[i], width[i - 1], 4, 2, 1, bias=False), nn.BatchNorm2d(width[i - 1]),
              nn.ReLU()]
    g += [nn.ConvTranspose2d(w, c, 4, 2, 1, bias=False), nn.Tanh()]
    d: list[nn.Module] = [nn.Conv2d(c, w, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
    for i in range(1, n):
        d += [nn.Conv2d(width[i - 1], width[i], 4, 2, 1, bias=False), nn.BatchNorm2d(width[i]), nn.LeakyReLU(0.2)]
    d += [nn.Conv2d(width[-1], 1, s0, 1, 0, bias=False), nn.Flatten()]
    G, D = nn.Sequential(*g), nn.Sequential(*d)
    nn.init.dcgan_init(G)
    nn.init.dcgan_init(D)
    return G, D


def build_models(cfg: RunConfig) -> tuple[nn.Module, nn.Module]:
    """(G, D) for the configuration, initialised from npgan's seeded generator.

    A shape the network cannot make (a DCGAN image size that is not 4·2^k) raises ValueError at once, in one
    line naming the sizes it can make.
    """
    z, h = cfg.train.z_dim, cfg.hidden
    if cfg.model == "mlp2d":
        G = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))
        D = nn.Sequential(nn.Linear(2, h), nn.LeakyReLU(0.2), nn.Linear(h, h), nn.LeakyReLU(0.2), nn.Linear(h, 1))
        return G, D
    c, H, W = image_shape(cfg)
    n = c * H * W
    if cfg.model == "mlp":
        G = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, 2 * h), nn.ReLU(), nn.Linear(2 * h, n),
                          nn.Tanh(), nn.Unflatten(1, (c, H, W)))
        D = nn.Sequential(nn.Flatten(), nn.Linear(n, 2 * h), nn.LeakyReLU(0.2), nn.Linear(2 * h, h),
                          nn.LeakyReLU(0.2), nn.Linear(h, 1))
        return G, D
    if cfg.model == "mlp_bn":
        G = nn.Sequential(nn.Linear(z, h), nn.LeakyReLU(0.2),
                          nn.Linear(h, 2 * h), nn.BatchNorm1d(2 * h, eps=1e-5, momentum=0.1), nn.LeakyReLU(0.2),
                          nn.Linear(2 * h, 4 * h), nn.BatchNorm1d(4 * h, eps=1e-5, momentum=0.1), nn.LeakyReLU(0.2),
                          nn.Linear(4 * h, n), nn.Tanh(), nn.Unflatten(1, (c, H, W)))
        D = nn.Sequential(nn.Flatten(), nn.Linear(n, 4 * h), nn.LeakyReLU(0.2), nn.Linear(4 * h, 2 * h),
                          nn.LeakyReLU(0.2), nn.Linear(2 * h, 1))
        return G, D
    return _dcgan(z, h, c, H, cfg.model)


def arch_summary(G: nn.Module, D: nn.Module) -> dict[str, Any]:
    """Parameter names and shapes of both networks (stored in checkpoints, compared on load)."""
    return {"G": {k: list(v.shape) for k, v in G.state_dict().items()},
            "D": {k: list(v.shape) for k, v in D.state_dict().items()}}


class Built(NamedTuple):
    """A run's working parts, as :func:`build` makes them."""

    G: nn.Module
    D: nn.Module
    opt_g: optim.Optimizer
    opt_d: optim.Optimizer
    trainer: Trainer


def real_source(cfg: RunConfig) -> Callable[[int], Tensor]:
    """The real batch of each step: fresh draws from npgan's generator for the 2-D mixtures, otherwise the
    training images in a fixed order per epoch (:class:`~npgan.data.EpochBatches`: batch k is a function of the
    seed and k, so a resumed run draws the same batches without saving loader state; a folder, CIFAR-10 or shapes
    is read from its uint8 store a batch at a time)."""
    B = cfg.train.batch_size
    if cfg.data in ("ring8", "grid25"):
        sampler = data.MIXTURES[cfg.data].sampler
        return lambda step: sampler(B)
    images = data.load_images(cfg.data, "train", cfg.data_dir, cfg.image_size, cfg.channels, seed=cfg.seed)
    return data.EpochBatches(images, B, cfg.seed)


def build(cfg: RunConfig) -> Built:
    """``(G, D, opt_g, opt_d, trainer)`` for ``cfg``; sets nothing process-wide (see the module docstring).

    The optimizers are Adam with betas (beta1, beta2), or RMSprop, at ``cfg.train.lr``; the trainer draws its
    real batches from :func:`real_source` (which reads the image files, if any).
    """
    G, D = build_models(cfg)
    if cfg.optimizer == "rmsprop":
        opt_g = optim.RMSprop(G.parameters(), lr=cfg.train.lr)
        opt_d = optim.RMSprop(D.parameters(), lr=cfg.train.lr)
    else:
        opt_g = optim.Adam(G.parameters(), lr=cfg.train.lr, betas=(cfg.beta1, cfg.beta2))
        opt_d = optim.Adam(D.parameters(), lr=cfg.train.lr, betas=(cfg.beta1, cfg.beta2))
    return Built(G, D, opt_g, opt_d, Trainer(G, D, opt_g, opt_d, real_source(cfg), cfg.train))


#: The Wasserstein GAN recipe of Arjovsky et al. 2017 (Algorithm 1): the critic loss E D(G(z)) − E D(x) with
#: D's weights clipped to ±clip_value after each update, RMSprop at a constant lr of 5e-5 and 5 critic steps per
#: generator step. ``npgan train --wgan`` applies it to any preset; options given with it override it.
WGAN: dict[str, Any] = {"optimizer": "rmsprop",
                        "train": {"loss": "wasserstein", "lr": 5e-5, "lr_final": None, "d_steps": 5}}


def use_wgan(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the :data:`WGAN` recipe applied (in place; returned for convenience)."""
    cfg.optimizer = WGAN["optimizer"]
    for k, v in WGAN["train"].items():
        setattr(cfg.train, k, v)
    return cfg
