"""Run configurations: the presets users start from, their architectures and data.

A :class:`RunConfig` holds everything needed to reproduce a run (it is written to ``config.toml``). The
architectures are the ones of the literature, each sized to its data:

* ``mlp2d`` — the 2-D mixtures: G z → 128 → 128 → 2 (ReLU), D 2 → 128 → 128 → 1 (LeakyReLU 0.2);
* ``mlp`` — the MLP GAN: G z → 128 → 256 → D_img (ReLU, ReLU, Tanh), D D_img → 256 → 128 → 1 (LeakyReLU 0.2);
* ``mlp_bn`` — a deeper MLP with BatchNorm1d blocks (G z → 128 → 256 → 512 → D_img; D D_img → 512 → 256 → 1);
* ``dcgan`` — DCGAN: for 28×28, G ConvT(z,128,7,1,0)+BN+ReLU → ConvT(128,64,4,2,1)+BN+ReLU → ConvT(64,1,4,2,1)+
  Tanh and D Conv(1,64,4,2,1)+LReLU → Conv(64,128,4,2,1)+BN+LReLU → Conv(128,1,7,1,0); for 8×8 the same with
  kernel 2 in place of 7 (4×4 → 2×2 → 1×1 in D).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from . import backend, nn
from .gan import TrainConfig

__all__ = ["RunConfig", "PRESETS", "make_config", "build_models", "DATASETS", "MODELS"]

DATASETS = ("ring8", "grid25", "digits", "mnist")
MODELS = ("mlp2d", "mlp", "mlp_bn", "dcgan")


@dataclass
class RunConfig:
    """Everything that defines a run; saved as config.toml in the run directory."""

    preset: str = "custom"
    data: str = "ring8"
    data_dir: str = ""
    model: str = "mlp2d"
    hidden: int = 128
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    beta1: float = 0.5
    beta2: float = 0.999
    optimizer: str = "adam"
    log_every: int = 100
    checkpoint_every: int = 1000
    sample_every: int = 1000
    eval_samples: int = 2500
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"] = dataclasses.asdict(self.train)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid keys are {sorted(known)}")
        tr = d.pop("train", {}) or {}
        tknown = {f.name for f in dataclasses.fields(TrainConfig)}
        tunknown = sorted(set(tr) - tknown)
        if tunknown:
            raise ValueError(f"unknown [train] config keys {tunknown}; valid keys are {sorted(tknown)}")
        cfg = cls(**d, train=TrainConfig(**tr))
        return cfg

    def validate(self) -> None:
        if self.data not in DATASETS:
            raise ValueError(f"unknown data set {self.data!r}; choose one of {', '.join(DATASETS)}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.model == "mlp2d" and self.data not in ("ring8", "grid25"):
            raise ValueError(f"model 'mlp2d' is for the 2-D mixtures, not {self.data!r}")
        if self.model != "mlp2d" and self.data in ("ring8", "grid25"):
            raise ValueError(f"model {self.model!r} is for images; use 'mlp2d' for {self.data!r}")
        if self.optimizer not in ("adam", "rmsprop"):
            raise ValueError(f"optimizer must be 'adam' or 'rmsprop', got {self.optimizer!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        for name in ("hidden", "log_every", "checkpoint_every", "sample_every", "eval_samples"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        self.train.validate()

    def arch_hash(self) -> str:
        """A short hash of what fixes the architecture (data, model, widths, z): checkpoints must match it."""
        key = {"data": self.data, "model": self.model, "hidden": self.hidden, "z_dim": self.train.z_dim}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _mixture(data: str, **train: Any) -> RunConfig:
    return RunConfig(data=data, model="mlp2d", hidden=128, log_every=100, checkpoint_every=1000,
                     sample_every=1000, eval_samples=2500, train=TrainConfig(**train))


# The 2-D mixture recipe that FINDINGS.md measured with PyTorch: batch 512, z 16, Adam (0.5, 0.999),
# lr 1e-3 → 1e-4 linear, λ annealed linearly to 0, fixed σ. On the grid, a 2-D noise (z = 2) is what made the
# difference: with z = 16 every run starved a row or column of modes (18–24 of 25, reverse KL 0.35–0.72); and
# λ = 0.2 rather than 0.1: with 0.1 seed 1 of 0-2 left a mode nearly empty (25/25 but reverse KL 0.065); with
# 0.2 seeds 0-3 scored 25/25, HQ ≥ 94.9 %, reverse KL ≤ 0.01, and seed 4 missed one mode (24/25, 89.6 %, 0.092).
# Without the term no seed of 0-4 met all three (23-25 modes, HQ 87.7-94.4 %, reverse KL 0.013-0.41).
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


def default_dtype_of(cfg: RunConfig) -> Any:
    return backend.np.dtype(cfg.dtype)
