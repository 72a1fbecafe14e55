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

from .. import __version__
from ..checks import integer, one_of
from ..data.mixtures import MIXTURES
from ..errors import FileKindError, RunError
from ..files import atomic_write_text, open_regular
from ..gan.config import MAX_SIZE, MAX_STEPS, TrainConfig
from ..kde import BANDWIDTH_RULES

__all__ = ["CONFIG_FILE", "RunConfig", "DATASETS", "MIXTURE_DATASETS", "MODELS", "OPTIMIZERS",
           "EXTRA_ADAM", "OPTIMIZER_CHOICES", "DTYPES", "read_config", "write_config"]

#: a run directory's configuration file
CONFIG_FILE = "config.toml"
MIXTURE_DATASETS = tuple(MIXTURES)  # ("ring8", "grid25"): the 2-D Gaussian mixtures; the rest are images
DATASETS = (*MIXTURE_DATASETS, "digits", "mnist", "folder", "cifar10", "shapes")
MODELS = ("mlp2d", "mlp", "mlp_bn", "dcgan")
OPTIMIZERS = ("adam", "rmsprop")
#: ``npgan train --optimizer``'s name for Extra-Adam; a config file spells it optimizer = "adam" with
#: [train] extragradient = true, so it is a choice of the command line, not of RunConfig.optimizer
EXTRA_ADAM = "extragradient"
OPTIMIZER_CHOICES = (*OPTIMIZERS, EXTRA_ADAM)  # what npgan train --optimizer accepts
DTYPES = ("float32", "float64")

#: the size of the values G must produce for each data set (max |x|): ring8's centres lie on the unit circle,
#: grid25's at −4..4; images are in [−1, 1]. The bandwidth check uses it (tests compare with npgan.data).
DATA_SCALE = {"ring8": 1.0, "grid25": 4.0, "digits": 1.0, "mnist": 1.0}

#: the largest seed (TOML integers are 64-bit: a larger one could not be written to config.toml) and image side
MAX_SEED = 2**63 - 1
MAX_IMAGE_SIZE = 1 << 16

#: read_config refuses larger files (a config.toml is a few hundred bytes; /dev/zero would never end)
MAX_CONFIG_BYTES = 1 << 20


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
    #: D's width alone (ndf, or D's hidden size for the MLPs); 0 = ``hidden`` (ngf = ndf)
    d_hidden: int = 0
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
    #: keep a copy of every checkpoint in checkpoints/step_NNNNNN.npz (``npgan train --keep-checkpoints``), for
    #: ``npgan study``
    keep_checkpoints: bool = False
    # Your own networks and initial weights (npgan train --model / --init-g / --init-d): ``model = "custom"``
    # with ``model_build`` = "FILE.py:function" or "module:function", and the SHA-256 of each file used.
    model_build: str = ""
    model_sha256: str = ""
    init_g: str = ""
    init_g_sha256: str = ""
    init_d: str = ""
    init_d_sha256: str = ""
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
        one_of("data set", self.data, DATASETS)
        if self.model == "custom" or self.model_build:
            if self.model != "custom" or not self.model_build:
                raise ValueError(f"model 'custom' goes with model_build = 'FILE.py:function' (npgan train --model); "
                                 f"got model {self.model!r}, model_build {self.model_build!r}")
        elif self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)} "
                             "(or your own: npgan train --model FILE.py:build)")
        elif self.model == "mlp2d" and self.data not in MIXTURE_DATASETS:
            raise ValueError(f"model 'mlp2d' is for the 2-D mixtures, not {self.data!r}")
        elif self.model != "mlp2d" and self.data in MIXTURE_DATASETS:
            raise ValueError(f"model {self.model!r} is for images; use 'mlp2d' for {self.data!r}")
        if self.optimizer == EXTRA_ADAM:
            raise ValueError(f'optimizer "{EXTRA_ADAM}" is Adam with the look-ahead: write optimizer = "adam" and, '
                             'under [train], extragradient = true (npgan train --optimizer extragradient does)')
        one_of("optimizer", self.optimizer, OPTIMIZERS)
        if not isinstance(self.keep_checkpoints, bool):
            raise ValueError(f"keep_checkpoints must be true or false, got {self.keep_checkpoints!r}")
        one_of("dtype", self.dtype, DTYPES)
        for name in ("log_every", "checkpoint_every", "sample_every"):
            integer(name, getattr(self, name), 1, MAX_STEPS)
        integer("hidden", self.hidden, 1, MAX_SIZE)
        integer("eval_samples", self.eval_samples, 1, MAX_SIZE)
        integer("d_hidden", self.d_hidden, 0, MAX_SIZE)
        integer("image_size", self.image_size, 0, MAX_IMAGE_SIZE)
        integer("seed", self.seed, 0, MAX_SEED)
        for name in ("preset", "data_dir", "device"):
            if isinstance(getattr(self, name), str):
                toml_string(getattr(self, name))  # a lone surrogate cannot be written to config.toml
        self.train.validate()
        self._check_bandwidth()

    def _check_bandwidth(self) -> None:
        """A fixed KDE bandwidth σ must fit the data's scale S (:data:`DATA_SCALE`) in the run's dtype:
        eps·S ≤ σ ≤ S/eps. Below, σ is under the data's float resolution (every point is its own mode);
        above, every kernel weight is equal and the entropy term has no gradient. Checked before anything is
        written."""
        bw, tr = self.train.bandwidth, self.train
        if isinstance(bw, str) or not (tr.entropy_weight > 0 or (tr.entropy_weight_final or 0) > 0):
            return
        eps = 2.0 ** -52 if self.dtype == "float64" else 2.0 ** -23
        S = DATA_SCALE.get(self.data, 1.0)
        lo, hi = eps * S, S / eps
        if not lo <= float(bw) <= hi:
            raise ValueError(f"bandwidth {bw!r} does not fit the {self.data} data (values within ±{S:g}) in "
                             f"{self.dtype}: use a σ between {lo:.3g} and {hi:.3g}, or {', '.join(BANDWIDTH_RULES)}")

    def arch_hash(self) -> str:
        """A short hash of what fixes the architecture (data, model, widths, z): checkpoints must match it."""
        key = {"data": self.data, "model": self.model, "hidden": self.hidden, "z_dim": self.train.z_dim}
        if self.image_size or self.channels:  # only when set, so that the runs written before keep their hash
            key.update(image_size=self.image_size, channels=self.channels)
        if self.d_hidden:  # the same
            key.update(d_hidden=self.d_hidden)
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
        return toml_string(v)
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(s: str) -> str:
    """``s`` as a TOML basic string that reads back as exactly ``s`` (TOML 1.0, "Basic strings").

    ``"`` and ``\\`` are escaped, the control characters U+0000–U+001F and U+007F become ``\\b \\t \\n \\f
    \\r`` or ``\\uXXXX``, everything else is written as itself in UTF-8 (characters outside the Basic
    Multilingual Plane included: json.dumps would write them as surrogate pairs ``\\ud835\\udd44``, which TOML
    forbids). A lone surrogate (an undecodable file-name byte under Python's surrogateescape, U+DC80–U+DCFF) has
    no UTF-8 form and no TOML escape: ValueError naming it.
    """
    out = []
    for ch in s:
        o = ord(ch)
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04X}")
        elif 0xD800 <= o <= 0xDFFF:
            raise ValueError(f"cannot write {s!r} to TOML: it holds the lone surrogate U+{o:04X} (a file-name "
                             "byte that is not UTF-8); rename the file or directory")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


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
        with open_regular(path, "config file") as f:  # a FIFO or device: one line, never a blocking read
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise RunError(f"config file {path} does not exist") from None
    except FileKindError as exc:
        raise RunError(str(exc)) from None
    except OSError as exc:
        raise RunError(f"config file {path} cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise RunError(f"config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB; an npgan config.toml "
                       "is a few hundred bytes (is it the right file?)")
    try:
        d = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"config file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise RunError(f"config file {path} nests arrays or tables too deeply (an npgan config has no nested "
                       "values)") from None
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
