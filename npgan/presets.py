"""The presets users start from, their architectures and data, and :func:`build`, which makes a run's parts.

A preset is a :class:`~npgan.config.RunConfig` (everything needed to reproduce a run). The architectures are the
ones of the literature, each sized to its data:

* ``mlp2d`` — the 2-D mixtures: G z → 128 → 128 → 2 (ReLU), D 2 → 128 → 128 → 1 (LeakyReLU 0.2);
* ``mlp`` — the MLP GAN: G z → 128 → 256 → D_img (ReLU, ReLU, Tanh), D D_img → 256 → 128 → 1 (LeakyReLU 0.2);
* ``mlp_bn`` — a deeper MLP with BatchNorm1d blocks (G z → 128 → 256 → 512 → D_img; D D_img → 512 → 256 → 1);
* ``dcgan`` — DCGAN: for 28×28, G ConvT(z,128,7,1,0)+BN+ReLU → ConvT(128,64,4,2,1)+BN+ReLU → ConvT(64,1,4,2,1)+
  Tanh and D Conv(1,64,4,2,1)+LReLU → Conv(64,128,4,2,1)+BN+LReLU → Conv(128,1,7,1,0); for 8×8 the same with
  kernel 2 in place of 7 (4×4 → 2×2 → 1×1 in D).

:func:`build` turns a configuration into ``(G, D, opt_g, opt_d, trainer)`` and changes no process-wide state: the
models are made on the current device in the current default dtype, their initial weights drawn from npgan's
generator as it stands (like any ``nn`` layer). Setting the dtype, device and seed from the configuration is
the job of the entry points (:class:`npgan.experiment.Run`, the command line) and of scripts, before they call
it. :data:`WGAN` is the Wasserstein GAN recipe (``npgan train --wgan``).
"""

from __future__ import annotations

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
    }


PRESETS = _presets()


def make_config(preset: str) -> RunConfig:
    """A fresh copy of a preset's configuration."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = RunConfig.from_dict(PRESETS[preset].to_dict())
    cfg.preset = preset
    return cfg


def image_shape(data: str) -> tuple[int, int, int]:
    return (1, 8, 8) if data == "digits" else (1, 28, 28)


def build_models(cfg: RunConfig) -> tuple[nn.Module, nn.Module]:
    """(G, D) for the configuration, initialised from npgan's seeded generator."""
    z, h = cfg.train.z_dim, cfg.hidden
    if cfg.model == "mlp2d":
        G = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))
        D = nn.Sequential(nn.Linear(2, h), nn.LeakyReLU(0.2), nn.Linear(h, h), nn.LeakyReLU(0.2), nn.Linear(h, 1))
        return G, D
    c, H, W = image_shape(cfg.data)
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
    # DCGAN
    k = 7 if H == 28 else 2
    G = nn.Sequential(nn.Unflatten(1, (z, 1, 1)),
                      nn.ConvTranspose2d(z, 2 * h, k, 1, 0, bias=False), nn.BatchNorm2d(2 * h), nn.ReLU(),
                      nn.ConvTranspose2d(2 * h, h, 4, 2, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(),
                      nn.ConvTranspose2d(h, c, 4, 2, 1, bias=False), nn.Tanh())
    D = nn.Sequential(nn.Conv2d(c, h, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
                      nn.Conv2d(h, 2 * h, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * h), nn.LeakyReLU(0.2),
                      nn.Conv2d(2 * h, 1, k, 1, 0, bias=False), nn.Flatten())
    nn.init.dcgan_init(G)
    nn.init.dcgan_init(D)
    return G, D


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
    training images in a fixed order per epoch (:class:`~npgan.data.EpochBatches`)."""
    B = cfg.train.batch_size
    if cfg.data in ("ring8", "grid25"):
        sampler = data.MIXTURES[cfg.data].sampler
        return lambda step: sampler(B)
    return data.EpochBatches(data.load_images(cfg.data, "train", cfg.data_dir), B, cfg.seed)


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
