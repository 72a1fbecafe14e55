"""The presets users start from, their architectures and data, and :func:`build`, which makes a run's parts.

A preset is a :class:`~npgan.run.config.RunConfig` (everything needed to reproduce a run). The architectures are the
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
the job of the entry points (:class:`npgan.run.experiment.Run`, the command line) and of scripts, before they call
it. :data:`WGAN` is the Wasserstein GAN recipe (``npgan train --wgan``), :data:`WGAN_GP` the WGAN-GP one
(``npgan train --wgan-gp``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from .. import backend, distributed, nn, ops, optim
from .. import functional as F
from ..checks import one_of
from ..data.catalog import image_format, load_images
from ..data.loader import EpochBatches
from ..data.mixtures import MIXTURES
from ..errors import RunError
from ..gan.config import TrainConfig
from ..gan.trainer import Trainer
from ..tensor import Function, Tensor, graph_functions
from .config import DATASETS, MIXTURE_DATASETS, MODELS, RunConfig

__all__ = ["RunConfig", "PRESETS", "make_config", "build_models", "build", "Built", "real_source", "WGAN",
           "use_wgan", "WGAN_GP", "use_wgan_gp", "DATASETS", "MODELS",
           "model_file", "file_sha256", "load_model_build", "check_models", "model_error", "model_folder"]

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
        # The 32x32 DCGAN made narrow (width 24) to train on 2 CPU cores in under 10 minutes: lr 5e-4 decayed
        # linearly to half of it (2.5e-4; decaying to 1e-5 froze more discs in, see the README) and a lazy R1
        # penalty on D (gamma 1, every 4th D step), which keeps D from winning early. Its results against the
        # target (class KL <= 0.05, coverage >= 0.7) are in the README.
        "shapes-dcgan": RunConfig(data="shapes", model="dcgan", hidden=24, image_size=32, channels=3,
                                  log_every=50, checkpoint_every=500, sample_every=500, eval_samples=2000,
                                  train=TrainConfig(steps=4500, batch_size=64, z_dim=64, lr=5e-4, lr_final=2.5e-4,
                                                    gp="r1", gp_weight=1.0, gp_every=4)),
    }


PRESETS = _presets()


def make_config(preset: str) -> RunConfig:
    """A fresh copy of a preset's configuration."""
    one_of("preset", preset, PRESETS)
    cfg = RunConfig.from_dict(PRESETS[preset].to_dict())
    cfg.preset = preset
    return cfg


def image_shape(cfg: RunConfig | str, image_size: int = 0, channels: int = 0) -> tuple[int, int, int]:
    """(C, H, W) of a run's images: its data set's own (:data:`npgan.data.catalog.IMAGE_DEFAULTS`) unless ``image_size``
    / ``channels`` say otherwise (the config's fields, or the arguments when ``cfg`` is a data set's name)."""
    if isinstance(cfg, RunConfig):
        name, image_size, channels = cfg.data, cfg.image_size, cfg.channels
    else:
        name = cfg
    c, s = image_format(name, image_size, channels)
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


def _dcgan(z: int, w: int, c: int, H: int, model: str, wd: int = 0) -> tuple[nn.Module, nn.Module]:
    """Radford et al.'s DCGAN for C×H×H images, G's width w (ngf) and D's wd (ndf; 0 = w), no biases.

    G: z → ConvT(z, w·2^(n−1), s0, 1, 0) [s0×s0] → BN, ReLU → n − 1 times ConvT(·, ·/2, 4, 2, 1), BN, ReLU
    (doubling the size, halving the channels) → ConvT(w, C, 4, 2, 1), Tanh [H×H]. For 64×64×3, w = 64, z = 100:
    100 → 512 (4×4) → 256 (8×8) → 128 (16×16) → 64 (32×32) → 3 (64×64).
    D, the mirror at width wd: Conv(C, wd, 4, 2, 1), LeakyReLU(0.2) → n − 1 times Conv(·, 2·, 4, 2, 1), BN,
    LeakyReLU(0.2) → Conv(wd·2^(n−1), 1, s0, 1, 0) → one logit. Weights N(0, 0.02), BN γ N(1, 0.02), β 0
    (dcgan_init).
    """
    s0, n = _dcgan_plan(H, model)
    width = [w * 2 ** i for i in range(n)]  # width[i]: channels at the layer that is 2^(i+1) times smaller than H
    g: list[nn.Module] = [nn.Unflatten(1, (z, 1, 1)), nn.ConvTranspose2d(z, width[-1], s0, 1, 0, bias=False),
                          nn.BatchNorm2d(width[-1]), nn.ReLU()]
    for i in range(n - 1, 0, -1):
        g += [nn.ConvTranspose2d(width[i], width[i - 1], 4, 2, 1, bias=False), nn.BatchNorm2d(width[i - 1]),
              nn.ReLU()]
    g += [nn.ConvTranspose2d(w, c, 4, 2, 1, bias=False), nn.Tanh()]
    width = [(wd or w) * 2 ** i for i in range(n)]
    d: list[nn.Module] = [nn.Conv2d(c, width[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
    for i in range(1, n):
        d += [nn.Conv2d(width[i - 1], width[i], 4, 2, 1, bias=False), nn.BatchNorm2d(width[i]), nn.LeakyReLU(0.2)]
    d += [nn.Conv2d(width[-1], 1, s0, 1, 0, bias=False), nn.Flatten()]
    G, D = nn.Sequential(*g), nn.Sequential(*d)
    nn.init.dcgan_init(G)
    nn.init.dcgan_init(D)
    return G, D


def build_models(cfg: RunConfig) -> tuple[nn.Module, nn.Module]:
    """(G, D) for the configuration, initialised from npgan's seeded generator.

    ``cfg.model == "custom"``: ``build(cfg)`` from ``cfg.model_build`` (:func:`load_model_build`), whose result
    must be two npgan modules (:func:`check_models` tests what they compute). A shape the network cannot make (a
    DCGAN image size that is not 4·2^k) raises ValueError at once, in one line naming the sizes it can make.
    """
    if cfg.model == "custom":
        return _custom_models(cfg)
    z, h, hd = cfg.train.z_dim, cfg.hidden, cfg.d_hidden or cfg.hidden
    if cfg.model == "mlp2d":
        G = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))
        D = nn.Sequential(nn.Linear(2, hd), nn.LeakyReLU(0.2), nn.Linear(hd, hd), nn.LeakyReLU(0.2), nn.Linear(hd, 1))
        return G, D
    c, H, W = image_shape(cfg)
    n = c * H * W
    if cfg.model == "mlp":
        G = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, 2 * h), nn.ReLU(), nn.Linear(2 * h, n),
                          nn.Tanh(), nn.Unflatten(1, (c, H, W)))
        D = nn.Sequential(nn.Flatten(), nn.Linear(n, 2 * hd), nn.LeakyReLU(0.2), nn.Linear(2 * hd, hd),
                          nn.LeakyReLU(0.2), nn.Linear(hd, 1))
        return G, D
    if cfg.model == "mlp_bn":
        G = nn.Sequential(nn.Linear(z, h), nn.LeakyReLU(0.2),
                          nn.Linear(h, 2 * h), nn.BatchNorm1d(2 * h, eps=1e-5, momentum=0.1), nn.LeakyReLU(0.2),
                          nn.Linear(2 * h, 4 * h), nn.BatchNorm1d(4 * h, eps=1e-5, momentum=0.1), nn.LeakyReLU(0.2),
                          nn.Linear(4 * h, n), nn.Tanh(), nn.Unflatten(1, (c, H, W)))
        D = nn.Sequential(nn.Flatten(), nn.Linear(n, 4 * hd), nn.LeakyReLU(0.2), nn.Linear(4 * hd, 2 * hd),
                          nn.LeakyReLU(0.2), nn.Linear(2 * hd, 1))
        return G, D
    return _dcgan(z, h, c, H, cfg.model, hd)


def count_parameters(cfg: RunConfig) -> tuple[int, int]:
    """(G's, D's) parameter counts of ``cfg``'s architecture by arithmetic, without building anything (so that a
    huge ``hidden`` or ``z_dim`` is refused before it is allocated; a test checks them against
    :func:`build_models` for every preset). z = z_dim, h = hidden (G's width), e = d_hidden or h (D's width),
    n = C·H·W, BN(c) = 2c:

        mlp2d   G: (z+1)h + (h+1)h + (h+1)2            D: 3e + (e+1)e + (e+1)
        mlp     G: (z+1)h + (h+1)2h + (2h+1)n          D: (n+1)2e + (2e+1)e + (e+1)
        mlp_bn  G: (z+1)h + (h+1)2h + BN(2h) + (2h+1)4h + BN(4h) + (4h+1)n
                D: (n+1)4e + (4e+1)2e + (2e+1)
        dcgan   widths w_i = h·2^i and v_i = e·2^i (i < k), start s0 (:func:`_dcgan_plan`), no biases:
                G: z·w_{k−1}·s0² + Σ_{i≥1} w_i·w_{i−1}·16 + h·C·16 + Σ_i BN(w_i)
                D: C·e·16 + Σ_{i≥1} v_{i−1}·v_i·16 + Σ_{i≥1} BN(v_i) + v_{k−1}·s0²
    A custom model (``--model``) counts as 0: it is built, then measured.
    """
    z, h = int(cfg.train.z_dim), int(cfg.hidden)
    e = int(cfg.d_hidden) or h
    if cfg.model == "custom":
        return 0, 0
    if cfg.model == "mlp2d":
        return (z + 1) * h + (h + 1) * h + (h + 1) * 2, 3 * e + (e + 1) * e + (e + 1)
    c, H, W = image_shape(cfg)
    n = c * H * W
    if cfg.model == "mlp":
        return ((z + 1) * h + (h + 1) * 2 * h + (2 * h + 1) * n,
                (n + 1) * 2 * e + (2 * e + 1) * e + (e + 1))
    if cfg.model == "mlp_bn":
        return ((z + 1) * h + (h + 1) * 2 * h + 4 * h + (2 * h + 1) * 4 * h + 8 * h + (4 * h + 1) * n,
                (n + 1) * 4 * e + (4 * e + 1) * 2 * e + (2 * e + 1))
    s0, k = _dcgan_plan(H, cfg.model)
    w = [h * 2 ** i for i in range(k)]
    v = [e * 2 ** i for i in range(k)]
    g = z * w[-1] * s0 * s0 + sum(w[i] * w[i - 1] * 16 for i in range(1, k)) + h * c * 16 + sum(2 * x for x in w)
    d = c * e * 16 + sum(v[i] * v[i - 1] * 16 for i in range(1, k)) + sum(2 * x for x in v[1:]) + v[-1] * s0 * s0
    return g, d


def arch_summary(G: nn.Module, D: nn.Module) -> dict[str, Any]:
    """Parameter names and shapes of both networks (stored in checkpoints, compared on load)."""
    return {"G": {k: list(v.shape) for k, v in G.state_dict().items()},
            "D": {k: list(v.shape) for k, v in D.state_dict().items()}}


# ============================================================================ your own networks (--model)
def split_spec(spec: str) -> tuple[str, str, bool]:
    """("FILE.py" or "module", "function", is_file) from "FILE.py:function" / "module:function" (default build)."""
    where, sep, fn = spec.rpartition(":")
    if not sep or not fn.isidentifier():
        where, fn = spec, "build"
    is_file = where.endswith(".py") or "/" in where or "\\" in where
    if not where:
        raise RunError(f"--model {spec!r}: expected FILE.py:function or module:function")
    return where, fn, is_file


def model_file(spec: str) -> Path | None:
    """The source file behind a ``--model`` spec, found without running it (None for a module with no file)."""
    where, _, is_file = split_spec(spec)
    if is_file:
        path = Path(where)
        if not path.is_file():
            raise RunError(f"--model {spec}: {path} does not exist" if not path.exists()
                           else f"--model {spec}: {path} is not a file")
        return path
    try:
        found = importlib.util.find_spec(where)
    except (ImportError, ValueError) as exc:
        raise RunError(f"--model {spec}: cannot find module {where!r} ({type(exc).__name__}: {exc})") from None
    if found is None:
        raise RunError(f"--model {spec}: no module named {where!r} (give FILE.py:function, or put the module "
                       "on PYTHONPATH)")
    return Path(found.origin) if found.origin and Path(found.origin).is_file() else None


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@contextlib.contextmanager
def _folder_on_path(path: Path | None) -> Iterator[None]:
    """``path``'s folder first on ``sys.path`` while inside (so that a model file imports the helper modules
    beside it, as ``python FILE.py`` would), taken off again after; nothing for None (a module spec)."""
    if path is None:
        yield
        return
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        try:
            sys.path.remove(folder)  # the first equal entry: ours, or an equal one the import added after it
        except ValueError:
            pass


def load_model_build(spec: str) -> Callable[[RunConfig], Any]:
    """The function named by a ``--model`` spec ("FILE.py:function" or "module:function"), imported.

    A file is run as a fresh module each time (no ``__pycache__`` is written next to it), with its folder first
    on ``sys.path`` while it is imported (a helper module beside it imports as it would under ``python FILE.py``);
    any exception raised while importing it, SystemExit included, becomes one :class:`~npgan.errors.RunError`
    line naming the spec and the line of the file that raised.
    """
    where, fn, is_file = split_spec(spec)
    path = model_file(spec)
    dont_write = sys.dont_write_bytecode
    try:
        sys.dont_write_bytecode = True
        if is_file:
            name = f"npgan_model_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
            mspec = importlib.util.spec_from_file_location(name, path)
            if mspec is None or mspec.loader is None:
                raise RunError(f"--model {spec}: {path} cannot be imported as Python")
            module = importlib.util.module_from_spec(mspec)
            sys.modules[name] = module  # dataclasses and pickling look their module up here
            with _folder_on_path(path):
                mspec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except RunError:
        raise
    except BaseException as exc:  # noqa: BLE001 - user code: any failure is one line (Ctrl-C stays Ctrl-C)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise RunError(f"--model {spec}: importing {where} raised {_exc_line(exc)}"
                       f"{_at(_user_frame(exc, _user_folder_of(path)))}") from None
    finally:
        sys.dont_write_bytecode = dont_write
    f = getattr(module, fn, None)
    if f is None:
        raise RunError(f"--model {spec}: {where} has no function {fn!r}")
    if not callable(f):
        raise RunError(f"--model {spec}: {where}.{fn} is a {type(f).__name__}, not a function")
    return f


def _custom_models(cfg: RunConfig) -> tuple[nn.Module, nn.Module]:
    spec = cfg.model_build
    f = load_model_build(spec)
    path = model_file(spec) if split_spec(spec)[2] else None
    try:
        with _folder_on_path(path):
            out = f(cfg)
    except BaseException as exc:  # noqa: BLE001 - user code: one line, even SystemExit (npgan chooses the exit code)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise RunError(f"--model {spec}: build(config) raised {_exc_line(exc)}"
                       f"{_at(_user_frame(exc, model_folder(cfg)))}") from None
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise RunError(f"--model {spec}: build(config) must return (G, D), got {type(out).__name__}"
                       + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    for name, m in zip("GD", out):
        if not isinstance(m, nn.Module):
            hint = (" (a torch module: convert it with npgan.interop.from_torch)"
                    if type(m).__module__.startswith("torch") else "")
            raise RunError(f"--model {spec}: build(config) returned a {type(m).__module__}.{type(m).__name__} "
                           f"as {name}; it must be an npgan.nn.Module{hint}")
    if out[0] is out[1]:
        raise RunError(f"--model {spec}: build(config) returned the same module as G and D")
    return out[0], out[1]


# ============================================================================ errors in your code
_NPGAN_DIR = Path(__file__).resolve().parents[1]


def _user_folder_of(path: Path | None) -> Path | None:
    return path.resolve().parent if path is not None else None


def model_folder(cfg: RunConfig) -> Path | None:
    """The folder of a ``--model`` run's source file (None for a preset's model or a module without a file)."""
    if cfg.model != "custom":
        return None
    try:
        return _user_folder_of(model_file(cfg.model_build))
    except RunError:
        return None


def _is_user_file(filename: str, folder: Path | None) -> bool:
    """Whether ``filename`` (a code object's) is the user's: under the model file's folder, and neither part
    of npgan nor of an installed package (a virtual environment inside that folder)."""
    if folder is None or filename.startswith("<"):
        return False
    p = Path(filename).resolve()
    if p.is_relative_to(_NPGAN_DIR) or "site-packages" in p.parts or "dist-packages" in p.parts:
        return False
    return p.is_relative_to(folder)


def _frames(exc: BaseException) -> list[Any]:
    """The frames of ``exc``'s traceback, outermost first."""
    out, tb = [], exc.__traceback__
    while tb is not None:
        out.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    return out


def _user_frame(exc: BaseException, folder: Path | None) -> tuple[str, int, str] | None:
    """(file, line, function) of the innermost frame of ``exc``'s traceback in the user's code, or None."""
    for frame, line in reversed(_frames(exc)):
        code = frame.f_code
        if _is_user_file(code.co_filename, folder):
            return code.co_filename, line, getattr(code, "co_qualname", code.co_name)
    return None


def _user_function(exc: BaseException, folder: Path | None) -> Function | None:
    """The innermost npgan Function of the user's whose method (forward, backward, backward_graph) the traceback
    passes through, also when npgan's code raised on its behalf (a missing ``backward``)."""
    for frame, _ in reversed(_frames(exc)):
        f = frame.f_locals.get("self")
        if isinstance(f, Function) and _is_user_file(_defined_at(type(f))[0], folder):
            return f
    return None


def _defined_at(cls: type) -> tuple[str, int]:
    """(source file, line) where a class is defined; ("<module name>", 0) when the source cannot be found."""
    try:
        return inspect.getsourcefile(cls) or f"<{cls.__module__}>", inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        return f"<{cls.__module__}>", 0


def _at(where: tuple[str, int, str] | None) -> str:
    return f" at {where[0]}:{where[1]} (in {where[2]})" if where is not None else ""


def _exc_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def model_error(exc: BaseException, cfg: RunConfig) -> str | None:
    """One line, "your model raised ExcType: message at FILE:LINE (in function)", when ``exc``'s traceback
    passes through the code of the run's ``--model`` (its file, or a helper module beside it) or a Function
    defined there; None otherwise (a preset's model, or npgan's own code alone: a bug in npgan, whose
    traceback the command line shows). The line is the innermost one of the user's code."""
    folder = model_folder(cfg)
    where = _user_frame(exc, folder)
    if where is None:
        f = _user_function(exc, folder)
        if f is None:
            return None
        file, line = _defined_at(type(f))
        return f"your model raised {_exc_line(exc)} in {type(f).__name__} (defined at {file}:{line})"
    return f"your model raised {_exc_line(exc)}{_at(where)}"


def data_shape(cfg: RunConfig) -> tuple[int, ...]:
    """One real sample's shape: (2,) for the 2-D mixtures, (C, H, W) for images (at the run's image size)."""
    return (2,) if cfg.data in MIXTURE_DATASETS else image_shape(cfg)


def _ends_in_sigmoid(t: Tensor) -> bool:
    """Whether ``t`` was made by a Sigmoid, looking back through reshapes (Flatten, Unflatten, views)."""
    c = t.creator
    while c is not None and isinstance(c, (ops.Reshape, ops.Permute, ops.GetItem)):
        c = c.inputs[0].creator
    return isinstance(c, F.Sigmoid)


def check_models(cfg: RunConfig, G: nn.Module, D: nn.Module) -> None:
    """Refuse (one :class:`~npgan.errors.RunError` line) a G or D that cannot train on ``cfg``'s data.

    One forward pass of a batch of 2 in eval mode checks that G maps (N, z_dim) to the data's (N, *shape), that D
    maps that to (N, 1), and that D's output is not made by a Sigmoid: every loss in :mod:`npgan.gan.losses` takes
    logits (``binary_cross_entropy_with_logits`` applies the sigmoid itself). Then :func:`_probe_training` runs
    one training step's computation on 2 samples in training mode, without the update. Nothing changes: no
    weight, no running statistic, no ``.grad``, no draw from npgan's generator (the state a probe touches is
    put back; a custom module's own Python attributes are its business).
    """
    what = f"--model {cfg.model_build}" if cfg.model == "custom" else f"model {cfg.model!r}"
    z_dim, shape = cfg.train.z_dim, data_shape(cfg)
    z = Tensor(backend.asarray(backend.np.random.default_rng(0).standard_normal((2, z_dim)),
                               dtype=backend.get_default_dtype()))
    modes = [(m, m.training) for net in (G, D) for m in net.modules()]
    try:
        G.eval()
        D.eval()
        step = "G"
        try:
            x = G(z)
            if not isinstance(x, Tensor) or tuple(x.shape) != (2, *shape):
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise RunError(f"{what}: G maps z of shape (2, {z_dim}) to {got}; the {cfg.data} data are "
                               f"(N, {', '.join(map(str, shape))})")
            step = "D"
            y = D(x)
        except RunError:
            raise
        except BaseException as exc:  # noqa: BLE001 - user code: one line (SystemExit too; Ctrl-C stays Ctrl-C)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise RunError(f"{what}: {step} failed on a batch of 2 ({_exc_line(exc)})"
                           f"{_at(_user_frame(exc, model_folder(cfg)))}{_gpu_hint()}") from None
        if not isinstance(y, Tensor) or tuple(y.shape) != (2, 1):
            got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise RunError(f"{what}: D maps a batch of 2 samples to {got}; it must give one logit per sample, "
                           "(N, 1) (end with Linear(..., 1), or a Conv2d to 1 channel then Flatten())")
        if _ends_in_sigmoid(y):
            raise RunError(f"{what}: D ends in a Sigmoid; remove the final Sigmoid: npgan's losses take logits "
                           "(binary_cross_entropy_with_logits applies the sigmoid itself)")
        with distributed.local():  # this process alone (a resume builds on rank 0 first): no collective to wait on
            _probe_training(cfg, G, D, what)
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)


def _probe_training(cfg: RunConfig, G: nn.Module, D: nn.Module, what: str) -> None:
    """One training step's computation on 2 samples, in training mode, without the update: G(z), D on real and
    fake, both losses, the gradient penalty (``cfg.train.gp``) and every parameter's gradient (``npgan.grad``:
    no ``.grad`` is written). A Function the run cannot use is refused in one :class:`~npgan.errors.RunError`
    line naming its class and where it is defined: one without ``backward_graph`` on the path from D's input to
    its output when a penalty needs ``create_graph=True`` (:func:`_missing_double_backward`), one whose
    forward or backward fails (on the GPU: a NumPy call on a CuPy array). npgan's running statistics and random
    stream are put back afterwards. A failure inside npgan's code alone propagates as it is (a bug in npgan).
    """
    from ..autograd import grad
    from ..gan.losses import discriminator_loss, generator_loss
    from ..gan.penalties import gradient_penalty

    tr, dtype = cfg.train, backend.get_default_dtype()
    draw = backend.np.random.default_rng(1)  # npgan's own stream is not touched
    z = Tensor(backend.asarray(draw.standard_normal((2, tr.z_dim)), dtype=dtype))
    real = Tensor(backend.asarray(draw.uniform(-1, 1, (2, *data_shape(cfg))), dtype=dtype))
    buffers = [(m, k, b.copy()) for net in (G, D) for m in net.modules() for k, b in m._buffers.items()
               if b is not None]
    rng = backend.get_rng_state()
    stage = "the forward pass"
    try:
        G.train()
        D.train()
        fake = G(z)
        loss_d = discriminator_loss(D(real), D(fake.detach()), tr.loss)
        if tr.gp:
            stage = f"the gradient penalty --gp {tr.gp}"
            missing = _missing_double_backward(D, real if tr.gp != "r2" else fake.detach())
            if missing is not None:
                file, line = _defined_at(type(missing))
                raise RunError(f"{what}: {type(missing).__name__} (defined at {file}:{line}) has no backward_graph "
                               f"(its double backward), which --gp {tr.gp} needs: the penalty differentiates D's "
                               "input gradient (create_graph=True); add backward_graph (docs/extending.md, "
                               "'Double backward') or train without --gp")
            loss_d = loss_d + gradient_penalty(D, real, fake, tr.gp)
        stage = "the backward pass"
        grad(loss_d, list(D.parameters()), allow_unused=True)
        loss_g, _ = generator_loss(D(fake), tr.loss)
        grad(loss_g, list(G.parameters()), allow_unused=True)
    except RunError:
        raise
    except BaseException as exc:  # noqa: BLE001 - user code: one line (SystemExit too; Ctrl-C stays Ctrl-C)
        if isinstance(exc, KeyboardInterrupt):
            raise
        where = model_error(exc, cfg)
        if where is None:
            raise
        raise RunError(f"{what}: {stage} of a training step on 2 samples ({backend.get_device()}) failed: "
                       f"{where}{_gpu_hint()}") from None
    finally:
        for m, k, b in buffers:
            m._buffers[k][...] = b
        backend.set_rng_state(rng)


def _gpu_hint() -> str:
    """The end of a probe's message on the GPU, where the usual cause is NumPy meeting a device array."""
    if backend.get_device() == "cpu":
        return ""
    return ("; on the GPU an op must use get_array_module(x), never numpy directly (docs/extending.md, "
            "'On the GPU')")


def _missing_double_backward(D: nn.Module, x: Tensor) -> Function | None:
    """The first Function (in the order they ran) on a path from D's input to its output that has no
    ``backward_graph``: the one ``npgan.grad(D(x).sum(), x, create_graph=True)`` would stop at."""
    leaf = Tensor(x.data, requires_grad=True)
    out = D(leaf)
    if not isinstance(out, Tensor) or out.creator is None:
        return None
    on_path: set[int] = set()
    for f in graph_functions(out):
        if any(t is leaf or (t.creator is not None and id(t.creator) in on_path) for t in f.inputs):
            on_path.add(id(f))
            if getattr(f, "backward_graph", None) is None:
                return f
    return None


class Built(NamedTuple):
    """A run's working parts, as :func:`build` makes them."""

    G: nn.Module
    D: nn.Module
    opt_g: optim.Optimizer
    opt_d: optim.Optimizer
    trainer: Trainer


def real_source(cfg: RunConfig) -> Callable[[int], Tensor]:
    """The real batch of each step: fresh draws from npgan's generator for the 2-D mixtures, otherwise the
    training images in a fixed order per epoch (:class:`~npgan.data.loader.EpochBatches`: batch k is a function of the
    seed and k, so a resumed run draws the same batches without saving loader state; a folder, CIFAR-10 or shapes
    is read from its uint8 store a batch at a time)."""
    B = cfg.train.batch_size
    if cfg.data in MIXTURE_DATASETS:
        sampler = MIXTURES[cfg.data].sampler
        return lambda step: sampler(B)
    images = load_images(cfg.data, "train", cfg.data_dir, cfg.image_size, cfg.channels, seed=cfg.seed)
    return EpochBatches(images, B, cfg.seed)


def build(cfg: RunConfig, data: bool = True) -> Built:
    """``(G, D, opt_g, opt_d, trainer)`` for ``cfg``; sets nothing process-wide (see the module docstring).

    The optimizers are Adam with betas (beta1, beta2), or RMSprop, at ``cfg.train.lr``; the trainer draws its
    real batches from :func:`real_source` (which reads the image files, if any). ``data=False`` reads no data:
    the trainer can then sample but not train (for readers of a run: ``npgan sample``, ``export``, ``info``).
    """
    G, D = build_models(cfg)
    if cfg.optimizer == "rmsprop":
        opt_g = optim.RMSprop(G.parameters(), lr=cfg.train.lr)
        opt_d = optim.RMSprop(D.parameters(), lr=cfg.train.lr)
    else:
        opt_g = optim.Adam(G.parameters(), lr=cfg.train.lr, betas=(cfg.beta1, cfg.beta2))
        opt_d = optim.Adam(D.parameters(), lr=cfg.train.lr, betas=(cfg.beta1, cfg.beta2))
    return Built(G, D, opt_g, opt_d, Trainer(G, D, opt_g, opt_d, real_source(cfg) if data else _no_data, cfg.train))


def _no_data(step: int) -> Tensor:
    raise RuntimeError("this trainer was built without data (presets.build(cfg, data=False)): it cannot train")


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


#: The WGAN-GP recipe of Gulrajani et al. 2017 (Algorithm 1): the critic loss E D(G(z)) − E D(x) + λ·E(‖∇D(x̂)‖ − 1)²
#: at random interpolates x̂, λ = 10, 5 critic steps per generator step, Adam at a constant lr of 1e-4 with betas
#: (0, 0.9), and no weight clipping. The critic must have no BatchNorm (the per-sample gradient norm is then
#: undefined): :class:`~npgan.gan.Trainer` refuses one (``digits-mlp``'s mlp_bn, the DCGAN's D). ``npgan train
#: --wgan-gp`` applies it to any preset; options given with it override it.
WGAN_GP: dict[str, Any] = {"optimizer": "adam", "beta1": 0.0, "beta2": 0.9,
                           "train": {"loss": "wasserstein", "lr": 1e-4, "lr_final": None, "d_steps": 5,
                                     "gp": "wgan-gp", "gp_weight": 10.0, "gp_every": 1}}


def use_wgan_gp(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the :data:`WGAN_GP` recipe applied (in place; returned for convenience)."""
    cfg.optimizer, cfg.beta1, cfg.beta2 = WGAN_GP["optimizer"], WGAN_GP["beta1"], WGAN_GP["beta2"]
    for k, v in WGAN_GP["train"].items():
        setattr(cfg.train, k, v)
    return cfg
