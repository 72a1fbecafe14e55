"""A run's configuration and its file, ``config.toml``.

:class:`RunConfig` holds everything that defines a run: the data, the architecture, the seed, device and dtype,
the optimizer's betas, the logging intervals and the loop's :class:`~npgan.gan.TrainConfig` (its ``[train]``
table). :func:`write_config` writes it as TOML (atomically; ``None`` values are left out, they mean "default")
and :func:`read_config` reads it back, checking every field's type and value, so that
``npgan train --config runs/r8/config.toml`` repeats a run exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .checkpoint import atomic_write_text
from .errors import RunError
from .gan import TrainConfig

__all__ = ["RunConfig", "DATASETS", "MODELS", "OPTIMIZERS", "read_config", "write_config"]

DATASETS = ("ring8", "grid25", "digits", "mnist", "folder", "cifar10", "shapes")
MODELS = ("mlp2d", "mlp", "mlp_bn", "dcgan")
OPTIMIZERS = ("adam", "rmsprop")


@dataclass
class RunConfig:
    """Everything that defines a run; saved as config.toml in the run directory."""

    preset: str = "custom"
    data: str = "ring8"
    data_dir: str = ""
    #: side of the square images the models make and see; 0 = the data set's own (digits 8, mnist 28, cifar10 32,
    #: shapes 32, folder 64). channels: 1 or 3; 0 = the data set's own (1 for digits and mnist, else 3).
    image_size: int = 0
    channels: int = 0
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
        return cls(**d, train=TrainConfig(**tr))

    def validate(self) -> None:
        if self.data not in DATASETS:
            raise ValueError(f"unknown data set {self.data!r}; choose one of {', '.join(DATASETS)}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.model == "mlp2d" and self.data not in ("ring8", "grid25"):
            raise ValueError(f"model 'mlp2d' is for the 2-D mixtures, not {self.data!r}")
        if self.model != "mlp2d" and self.data in ("ring8", "grid25"):
            raise ValueError(f"model {self.model!r} is for images; use 'mlp2d' for {self.data!r}")
        if self.optimizer not in OPTIMIZERS:
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
        if self.image_size or self.channels:  # only when set, so that the runs written before keep their hash
            key.update(image_size=self.image_size, channels=self.channels)
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


# ============================================================================ config.toml
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"cannot write the non-finite number {v} to TOML")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def write_config(path: Path, cfg: RunConfig) -> None:
    """config.toml, atomically; ``None`` values are left out (they mean "default")."""
    d = cfg.to_dict()
    train = d.pop("train")
    lines = [f"# npgan {__version__} run configuration", ""]
    lines += [f"{k} = {_toml_value(v)}" for k, v in d.items() if v is not None]
    lines += ["", "[train]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in train.items() if v is not None]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_config(path: Path) -> RunConfig:
    """A RunConfig from a TOML file; :class:`~npgan.errors.RunError` naming the file on any defect."""
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        d = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        cfg = RunConfig.from_dict(d)
        _check_types(cfg)
        cfg.validate()
    except (TypeError, ValueError) as exc:
        raise RunError(f"config file {path}: {exc}") from None
    return cfg


def _check_types(cfg: RunConfig) -> None:
    """Each field of a config read from a file has the type of its default (an int where a float is wanted)."""
    for obj, prefix in ((cfg, ""), (cfg.train, "train.")):
        for f in dataclasses.fields(obj):
            if f.name == "train":
                continue
            v, default = getattr(obj, f.name), f.default
            if isinstance(default, bool) or isinstance(v, bool):
                ok = isinstance(v, bool) and isinstance(default, bool)
            elif f.name == "bandwidth":
                ok = isinstance(v, (int, float, str))
            elif isinstance(default, float) or default is None:
                ok = isinstance(v, (int, float)) or v is None and default is None
            else:
                ok = isinstance(v, type(default))
            if not ok:
                want = ("true or false" if isinstance(default, bool) else "a number"
                        if isinstance(default, float) or default is None else f"a {type(default).__name__}")
                raise ValueError(f"{prefix}{f.name} must be {want}, got {v!r}")
