"""A training run on disk: create, train, checkpoint, resume, sample, evaluate.

A run directory holds:

* ``config.toml`` — the :class:`~npgan.presets.RunConfig` (everything needed to reproduce the run);
* ``history.csv`` — one row per step (:data:`npgan.gan.HISTORY_FIELDS`), flushed every ``log_every`` steps;
* ``checkpoint.npz`` — G, D, both optimizers, the RNG state and the step (see :mod:`npgan.checkpoint`), written
  atomically at step 0, every ``checkpoint_every`` steps, at the end and on Ctrl-C (the history is flushed
  first, so it always reaches the checkpoint's step);
* ``samples/step_NNNNNN.png`` — a fixed-noise grid of images, or a scatter of 2-D samples over the mode centres;
* ``losses.png`` and ``metrics.json`` at the end.

Resuming restores every piece of state, so an interrupted and resumed run ends with exactly the weights of an
uninterrupted one (same machine, CPU), however it was interrupted (Ctrl-C, SIGKILL, even during a checkpoint
write). A failed checkpoint load changes nothing. Training refuses, before it starts, a batch whose first step
would need more memory than the machine has (:func:`estimate_step_bytes`). A non-finite loss or gradient is
handled as ``train.on_nan`` says (see :mod:`npgan.gan`): "stop" raises :class:`~npgan.errors.DivergenceError`
with the last good checkpoint intact, "skip" skips the step, "rollback" reloads the last checkpoint and halves
the learning rate (up to :data:`MAX_ROLLBACKS` times).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__, backend, nn, optim
from .checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    atomic_write_text,
    config_hash,
    load_arrays,
    remove_stale_temps,
    save_arrays,
)
from .errors import DivergenceError, InsufficientMemoryError, RunError
from .gan import HISTORY_FIELDS, TrainConfig, Trainer
from .presets import RunConfig, arch_summary, build_models
from .tensor import Tensor, no_grad

__all__ = ["Run", "RunError", "read_config", "write_config", "estimate_step_bytes", "available_memory",
           "MAX_ROLLBACKS", "check_memory"]

CONFIG, HISTORY, CHECKPOINT, METRICS = "config.toml", "history.csv", "checkpoint.npz", "metrics.json"

#: on_nan = "rollback" gives up (DivergenceError) after this many rollbacks in one ``train`` call
#: (the learning rate is then 2**-MAX_ROLLBACKS of its schedule).
MAX_ROLLBACKS = 20


# ============================================================================ config files
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
    """A RunConfig from a TOML file; :class:`RunError` naming the file on any defect."""
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


# ============================================================================ data sources
class EpochBatches:
    """Minibatches of an on-device array, reshuffled each epoch; batch ``k`` is a pure function of (seed, k).

    The permutation of epoch e comes from a generator seeded with (seed, e), so a resumed run draws exactly the
    batches an uninterrupted one would, without saving loader state. Indexing is one vectorised gather.
    """

    def __init__(self, data: Any, batch_size: int, seed: int) -> None:
        n = data.shape[0]
        if batch_size > n:
            raise ValueError(f"batch size {batch_size} is larger than the data set ({n} samples)")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.per_epoch = n // batch_size
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> Tensor:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            perm = backend.np.random.default_rng([self.seed, epoch]).permutation(self.data.shape[0])
            self._perm = backend.asarray(perm, device=backend.device_of(self.data))
            self._epoch = epoch
        idx = self._perm[k * self.batch_size:(k + 1) * self.batch_size]
        return Tensor(self.data[idx])


def _load_images(cfg: RunConfig, split: str) -> Any:
    from . import data
    if cfg.data == "digits":
        images, _ = data.load_digits(split=split)
    else:
        if not cfg.data_dir:
            raise RunError("the MNIST presets need --data-dir DIR (a folder with the four MNIST IDX files)")
        images, _ = data.load_mnist(cfg.data_dir, split=split)
    arr = images.data if isinstance(images, Tensor) else images
    return backend.asarray(arr, dtype=backend.get_default_dtype())


def _real_source(cfg: RunConfig) -> Callable[[int], Tensor]:
    from . import data
    B = cfg.train.batch_size
    if cfg.data in ("ring8", "grid25"):
        sampler = data.MIXTURES[cfg.data][0]
        return lambda step: sampler(B)
    return EpochBatches(_load_images(cfg, "train"), B, cfg.seed)


# ============================================================================ memory
def _layer_bytes(net: nn.Module, x: Tensor) -> tuple[int, Tensor]:
    """Bytes of the arrays one forward pass of ``net`` on ``x`` makes (each layer's output, plus the column
    matrix of a convolution), and the output. Runs in eval mode without a graph: no state changes."""
    mods = list(net._modules.values()) if isinstance(net, nn.Sequential) else [net]
    total = 0
    with no_grad():
        h = x
        for m in mods:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                kh, kw = m.kernel_size
                n, _, H, W = h.shape
                if isinstance(m, nn.Conv2d):
                    out = m(h)
                    total += n * out.shape[2] * out.shape[3] * kh * kw * m.in_channels * h.data.itemsize
                else:
                    out = m(h)
                    total += n * H * W * kh * kw * m.out_channels * h.data.itemsize
                h = out
            else:
                h = m(h)
            total += h.data.nbytes
    return total, h


def estimate_step_bytes(G: nn.Module, D: nn.Module, train: TrainConfig) -> int:
    """An estimate of the peak memory (bytes) that one training step adds to the weights and optimizer state.

    From one forward pass of a 2-sample batch (eval mode, no graph, no state change) it takes a_G and a_D, the
    bytes per sample of every layer output (and convolution column matrix) of G and of D; the step keeps
    D's activations for the real and the fake batch and G's for the fake one, and the backward pass makes
    arrays of the same sizes again; the weights' gradients add the weights' bytes W (the optimizer's temporaries
    exist for one parameter at a time):

        bytes ≈ 2 · B · (a_G + 2 a_D)  +  [λ > 0]  3 · B² · itemsize (the KDE's n×n matrices)  +  W

    Measured against tracemalloc's peak over a real first step it is within a factor 3 (tests/test_reliability.py).
    """
    training = [(m, m.training) for net in (G, D) for m in net.modules()]
    G.eval()
    D.eval()
    try:
        z = Tensor(backend.current_xp().zeros((2, train.z_dim), dtype=backend.get_default_dtype()))
        a_g, fake = _layer_bytes(G, z)
        a_d, _ = _layer_bytes(D, fake)
    finally:
        for m, mode in training:
            object.__setattr__(m, "training", mode)
    per_sample = (a_g + 2 * a_d) / 2  # the probe batch holds 2 samples
    weights = sum(p.data.nbytes for net in (G, D) for p in net.parameters())
    return _scale_estimate(per_sample, train, train.batch_size) + weights


def _uses_kde(train: TrainConfig) -> bool:
    return train.entropy_weight > 0 or (train.entropy_weight_final or 0) > 0


def _scale_estimate(per_sample: float, train: TrainConfig, batch: int) -> int:
    quad = 3 * backend.get_default_dtype().itemsize if _uses_kde(train) else 0
    return int(2 * batch * per_sample + quad * batch * batch)


def available_memory() -> int | None:
    """Bytes of memory available for new allocations on the current device (None when unknown).

    CPU: ``MemAvailable`` of /proc/meminfo (free plus reclaimable caches), else ``os.sysconf`` free pages
    (SC_AVPHYS_PAGES · SC_PAGE_SIZE). GPU: CuPy's free device memory.
    """
    if backend.get_device() != "cpu":  # pragma: no cover - needs a GPU
        try:
            return int(backend.cupy.cuda.runtime.memGetInfo()[0])
        except Exception:  # noqa: BLE001
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} EiB"  # pragma: no cover


def check_memory(G: nn.Module, D: nn.Module, train: TrainConfig, available: int | None = None) -> int:
    """Raise :class:`InsufficientMemoryError` before training when one step would not fit in memory.

    Compares :func:`estimate_step_bytes` with 90% of :func:`available_memory` (or ``available``); returns the
    estimate. The message gives both figures and the largest batch size that fits.
    """
    est = estimate_step_bytes(G, D, train)
    avail = available_memory() if available is None else available
    if avail is None or est <= 0.9 * avail:
        return est
    B = train.batch_size
    quad = 3 * backend.get_default_dtype().itemsize * B * B if _uses_kde(train) else 0
    fixed = sum(p.data.nbytes for net in (G, D) for p in net.parameters())
    per_sample = (est - quad - fixed) / (2 * B)
    lo, hi = 0, B  # the largest batch whose estimate fits (the estimate grows with the batch)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _scale_estimate(per_sample, train, mid) + fixed <= 0.9 * avail:
            lo = mid
        else:
            hi = mid - 1
    raise InsufficientMemoryError(
        f"batch size {B} needs about {_fmt_bytes(est)} of memory for one training step (activations of G and D"
        f"{' and the KDE entropy matrices' if quad else ''}), but only {_fmt_bytes(avail)} is available on "
        f"{backend.get_device()}; use a batch size of at most {max(lo, 1)} (--batch-size)")


# ============================================================================ the run
class Run:
    """A configured run bound to a directory. Use :meth:`create` or :meth:`resume`, then :meth:`train`."""

    def __init__(self, cfg: RunConfig, out: Path) -> None:
        self.cfg, self.out = cfg, Path(out)
        backend.set_default_dtype(cfg.dtype)
        backend.set_device(cfg.device)
        backend.manual_seed(cfg.seed)
        self.G, self.D = build_models(cfg)
        check_memory(self.G, self.D, cfg.train)
        betas = (cfg.beta1, cfg.beta2)
        if cfg.optimizer == "rmsprop":
            self.opt_g = optim.RMSprop(self.G.parameters(), lr=cfg.train.lr)
            self.opt_d = optim.RMSprop(self.D.parameters(), lr=cfg.train.lr)
        else:
            self.opt_g = optim.Adam(self.G.parameters(), lr=cfg.train.lr, betas=betas)
            self.opt_d = optim.Adam(self.D.parameters(), lr=cfg.train.lr, betas=betas)
        self.trainer = Trainer(self.G, self.D, self.opt_g, self.opt_d, _real_source(cfg), cfg.train)
        # noise for pictures and metrics comes from generators of its own, so that drawing it never moves the
        # training stream (a resumed run must see exactly the random numbers of an uninterrupted one)
        self.fixed_z = self.side_noise(64 if cfg.data not in ("ring8", "grid25") else 1000, tag=7)
        self.checkpoint_step: int | None = None  # the step of the checkpoint on disk, when known
        self.rollbacks = 0

    def side_noise(self, n: int, tag: int) -> Tensor:
        """(n, z_dim) standard normal noise from a generator seeded by (seed, tag), not npgan's main stream."""
        z = backend.np.random.default_rng([self.cfg.seed, tag]).standard_normal((n, self.cfg.train.z_dim))
        return Tensor(backend.asarray(z, dtype=backend.get_default_dtype()))

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, cfg: RunConfig, out: str | os.PathLike) -> Run:
        """A new run in ``out`` (created; refused when it already holds a run, so nothing is overwritten)."""
        cfg.validate()
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise RunError(f"--out {out} exists and is not a directory")
        if out.is_dir() and any((out / f).exists() for f in (CONFIG, CHECKPOINT, HISTORY)):
            raise RunError(f"--out {out} already holds a run; resume it with 'npgan resume {out}' "
                           "or choose another directory")
        if cfg.data == "mnist" and not cfg.data_dir:
            raise RunError("the MNIST presets need --data-dir DIR (a folder with the four MNIST IDX files)")
        run = cls(cfg, out)  # may raise (bad data dir, device) before anything is written
        out.mkdir(parents=True, exist_ok=True)
        write_config(out / CONFIG, cfg)
        atomic_write_text(out / HISTORY, ",".join(HISTORY_FIELDS) + "\n")
        return run

    @classmethod
    def resume(cls, out: str | os.PathLike, steps: int | None = None, on_nan: str | None = None,
               device: str | None = None) -> Run:
        """Reload a run from its directory: config, weights, optimizers, RNG, step and history.

        ``steps`` (a new total) and ``on_nan`` change the run's configuration (written back to config.toml).
        ``device`` runs it on another device than its config's ("cpu" for a GPU run, or back), for this
        session only (not written); the weights and optimizer state move there, the random stream cannot
        (see :func:`npgan.backend.set_rng_state`). Temporary files left by a writer that was killed are removed.
        """
        out = Path(out)
        if not out.is_dir():
            raise RunError(f"run directory {out} does not exist")
        cfg = read_config(out / CONFIG)
        if steps is not None:
            if not isinstance(steps, int) or steps <= 0:
                raise RunError(f"--steps must be a positive integer, got {steps!r}")
            cfg.train.steps = steps
        if on_nan is not None:
            cfg.train.on_nan = on_nan
            cfg.validate()
        file_cfg = cfg
        if device is not None:
            backend._parse_device(device)  # a bad name fails here, before anything is read or written
            file_cfg = dataclasses.replace(cfg, device=cfg.device)
            cfg.device = device
        run = cls(cfg, out)
        remove_stale_temps(out)  # a writer killed mid-save leaves its temporary file behind
        if (out / CHECKPOINT).exists():
            run.load_checkpoint(out / CHECKPOINT)
        run._restore_history()
        if steps is not None or on_nan is not None:
            write_config(out / CONFIG, file_cfg)
        return run

    # ------------------------------------------------------------------ checkpoints
    def _arrays_and_meta(self) -> tuple[dict[str, Any], dict[str, Any]]:
        arrays: dict[str, Any] = {}
        meta: dict[str, Any] = {"step": self.trainer.step_count, "arch": arch_summary(self.G, self.D),
                                "arch_hash": self.cfg.arch_hash(), "config": self.cfg.to_dict(),
                                "rng": backend.get_rng_state(), "optimizers": {},
                                "lr_scale": self.trainer.lr_scale, "skipped": self.trainer.skipped}
        for prefix, net in (("G", self.G), ("D", self.D)):
            for k, v in net.state_dict().items():
                arrays[f"{prefix}/{k}"] = v
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            sd = opt.state_dict()
            scalars: dict[str, dict[str, Any]] = {}
            for i, st in sd["state"].items():
                for k, v in st.items():
                    if backend.is_array(v):
                        arrays[f"{name}/state/{i}/{k}"] = v
                    else:
                        scalars.setdefault(str(i), {})[k] = v
            groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                      for g in sd["param_groups"]]
            meta["optimizers"][name] = {"param_groups": groups, "scalars": scalars}
        return arrays, meta

    def _last_good(self) -> str:
        path = self.out / CHECKPOINT
        if not path.is_file():
            return f"there is no checkpoint in {self.out}"
        step = self.checkpoint_step
        return f"the last good checkpoint {path}{f' (step {step})' if step is not None else ''} is intact"

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint.npz`` atomically.

        Refuses (:class:`DivergenceError`) to write weights or optimizer state holding nan or inf, and turns a
        failed write (e.g. a full disk) into :class:`CheckpointWriteError`; either way the previous checkpoint
        stays as it was.
        """
        arrays, meta = self._arrays_and_meta()
        step = self.trainer.step_count
        bad = [k for k, v in arrays.items()
               if backend.np.dtype(v.dtype).kind == "f" and not bool(backend.get_array_module(v).isfinite(v).all())]
        if bad:
            raise DivergenceError(f"step {step}: {bad[0]} holds nan or inf (an update overflowed); the checkpoint "
                                  f"was not written, {self._last_good()}", step=step, network=bad[0][:1],
                                  loss="", values={})
        path = self.out / CHECKPOINT
        try:
            save_arrays(path, arrays, meta, config_hash=config_hash(self.cfg.to_dict()))
        except CheckpointWriteError as exc:
            msg = f"step {step}: {exc.strerror}"
            if self.checkpoint_step is not None:
                msg = msg.replace(" is intact", f" (step {self.checkpoint_step}) is intact")
            raise CheckpointWriteError(exc.errno, msg) from None
        self.checkpoint_step = step
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Restore everything from ``path``; :class:`CheckpointError` when it does not fit, and then nothing changed.

        The file is read and checked completely first (format, checksum, architecture, every array's shape
        against the models and optimizers); the state is then applied as a whole and put back as it was if any
        part fails.
        """
        arrays, meta = load_arrays(path)
        if meta.get("arch_hash") != self.cfg.arch_hash() or meta.get("arch") != arch_summary(self.G, self.D):
            raise CheckpointError(f"checkpoint {path} was written for another architecture "
                                  f"(data/model/widths differ from {self.out / CONFIG})")
        try:
            sds: dict[str, dict[str, Any]] = {"G": {}, "D": {}}
            opt_states: dict[str, dict[int, dict[str, Any]]] = {"opt_g": {}, "opt_d": {}}
            for k, v in arrays.items():
                head, _, rest = k.partition("/")
                if head in sds:
                    sds[head][rest] = v
                elif head in opt_states:
                    _, i, name = rest.split("/")
                    opt_states[head].setdefault(int(i), {})[name] = v
                else:
                    raise CheckpointError(f"checkpoint {path}: unexpected entry {k!r}")
            opt_sd = {}
            for name, st in opt_states.items():
                info = meta["optimizers"][name]
                for i, sc in info["scalars"].items():
                    st.setdefault(int(i), {}).update(sc)
                opt_sd[name] = {"state": st, "param_groups": info["param_groups"]}
            step = int(meta["step"])
            lr_scale = float(meta.get("lr_scale", 1.0))
            skipped = int(meta.get("skipped", 0))
            rng = meta["rng"]
            if step < 0 or not (0 < lr_scale <= 1) or not isinstance(rng, dict):
                raise ValueError(f"step {step}, lr_scale {lr_scale}, rng {type(rng).__name__}")
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"checkpoint {path} is incomplete ({type(exc).__name__}: {exc})") from None
        before = self._snapshot()
        try:
            self.G.load_state_dict(sds["G"])
            self.D.load_state_dict(sds["D"])
            self.opt_g.load_state_dict(opt_sd["opt_g"])
            self.opt_d.load_state_dict(opt_sd["opt_d"])
            backend.set_rng_state(rng)
        except Exception as exc:  # noqa: BLE001 - put everything back, then one clear error
            self._restore(before)
            raise CheckpointError(f"checkpoint {path} does not fit this run ({type(exc).__name__}: {exc}); "
                                  "nothing was changed") from None
        self.trainer.step_count = step
        self.trainer.lr_scale = lr_scale
        self.trainer.skipped = skipped
        self.checkpoint_step = step

    def _snapshot(self) -> dict[str, Any]:
        return {"G": {k: v.copy() for k, v in self.G.state_dict().items()},
                "D": {k: v.copy() for k, v in self.D.state_dict().items()},
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "rng": backend.get_rng_state()}

    def _restore(self, snap: dict[str, Any]) -> None:
        self.G.load_state_dict(snap["G"])
        self.D.load_state_dict(snap["D"])
        self.opt_g.load_state_dict(snap["opt_g"])
        self.opt_d.load_state_dict(snap["opt_d"])
        backend.set_rng_state(snap["rng"])

    # ------------------------------------------------------------------ history
    def read_history(self, upto: int | None = None) -> list[dict[str, float]]:
        """The rows of history.csv (up to step ``upto``), stopping at a damaged or cut row.

        The history lives on disk only: a long run's memory does not grow with its length.
        """
        path = self.out / HISTORY
        rows: list[dict[str, float]] = []
        if not path.exists():
            return rows
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text.endswith("\n"):  # a line cut by a kill: its last number may be cut short too
            text = text[:text.rfind("\n") + 1]
        for r in csv.DictReader(io.StringIO(text)):
            try:
                if upto is None or int(r["step"]) <= upto:
                    rows.append({k: (int(v) if k == "step" else float(v)) for k in HISTORY_FIELDS for v in (r[k],)})
            except (KeyError, ValueError, TypeError):
                break  # a damaged row: drop it and what follows
        return rows

    @property
    def history(self) -> list[dict[str, float]]:
        """The run's history rows so far (read from history.csv)."""
        return self.read_history()

    def _restore_history(self) -> None:
        """Keep the rows up to the checkpoint's step (later ones will be recomputed identically)."""
        rows = self.read_history(upto=self.trainer.step_count)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(HISTORY_FIELDS)
        for r in rows:
            w.writerow([_fmt(r[k]) for k in HISTORY_FIELDS])
        atomic_write_text(self.out / HISTORY, buf.getvalue())

    def _append_history(self, rows: list[dict[str, float]]) -> None:
        if not rows:
            return
        with open(self.out / HISTORY, "a", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            for r in rows:
                w.writerow([_fmt(r[k]) for k in HISTORY_FIELDS])
            f.flush()

    # ------------------------------------------------------------------ pictures and metrics
    def save_samples(self, step: int) -> None:
        from . import plots
        (self.out / "samples").mkdir(exist_ok=True)
        path = self.out / "samples" / f"step_{step:06d}.png"
        if self.cfg.data in ("ring8", "grid25"):
            from . import data
            x = backend.to_numpy(self.trainer.sample(self.fixed_z).data)
            _, centers, _ = data.MIXTURES[self.cfg.data]
            plots.scatter_2d(x, backend.to_numpy(centers), path, title=f"{self.cfg.data}, step {step}")
        else:
            x = backend.to_numpy(self.trainer.sample(self.fixed_z).data)
            plots.image_grid(x, path, title=f"{self.cfg.data}, step {step}")

    def evaluate(self) -> dict[str, Any]:
        """The run's quality metrics (mode coverage for the mixtures, image metrics otherwise)."""
        from . import data, metrics
        n = self.cfg.eval_samples
        if self.cfg.data in ("ring8", "grid25"):
            _, centers, std = data.MIXTURES[self.cfg.data]
            x = self.trainer.sample(self.side_noise(n, tag=8))
            return metrics.mode_metrics(x, centers, std)
        fake = self.trainer.sample(self.side_noise(n, tag=8))
        if self.cfg.data == "digits":
            clf = metrics.digits_classifier()
            real, _ = data.load_digits(split="test")
        else:
            clf = metrics.mnist_classifier(self.cfg.data_dir)
            real, _ = data.load_mnist(self.cfg.data_dir, split="test")
        return metrics.image_metrics(fake, real, clf)

    # ------------------------------------------------------------------ training
    def train(self, progress: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Train to ``cfg.train.steps``; returns the final metrics.

        Ctrl-C or SIGTERM finishes the step in flight, saves a checkpoint and raises :class:`Interrupted`.
        A non-finite loss or gradient is handled as ``cfg.train.on_nan`` says (see the module docstring);
        ``log`` receives the one-line reports of skipped steps and rollbacks (default: stderr).
        """
        cfg, tr = self.cfg, self.trainer
        if log is None:
            def log(msg: str) -> None:
                print(f"npgan: {msg}", file=sys.stderr, flush=True)
        tr.log = log
        total = cfg.train.steps
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=total, initial=tr.step_count, unit="step", dynamic_ncols=True, file=sys.stderr)
        stop: list[int] = []

        def on_signal(signum: int, frame: Any) -> None:  # finish the step in flight, then stop cleanly
            if stop:
                raise KeyboardInterrupt  # a second Ctrl-C: stop at once
            stop.append(signum)

        def checkpoint() -> None:
            self._append_history(tr.flush())  # the history always reaches the checkpoint's step
            self.save_checkpoint()

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, on_signal)
            except ValueError:  # not the main thread: no handlers
                pass
        try:
            if tr.step_count == 0:
                self.save_samples(0)
                checkpoint()  # step 0: a run always has a checkpoint to resume or roll back to
            while tr.step_count < total:
                try:
                    tr.step()
                    s = tr.step_count
                    if s % cfg.log_every == 0 or s == total or stop:
                        rows = tr.flush()
                        self._append_history(rows)
                        if bar is not None and rows:
                            bar.n = s
                            bar.set_postfix_str(_postfix(rows[-1]), refresh=False)
                            bar.refresh()
                    if stop:
                        checkpoint()
                        raise Interrupted(f"interrupted at step {s}: checkpoint saved in {self.out}; "
                                          f"continue with 'npgan resume {self.out}'")
                    if s % cfg.checkpoint_every == 0 and s != total:
                        checkpoint()
                except DivergenceError as exc:
                    self._append_history(tr.flush())
                    if cfg.train.on_nan != "rollback":
                        raise DivergenceError(f"{exc}; training stopped (on_nan = {cfg.train.on_nan}), "
                                              f"{self._last_good()}", step=exc.step, network=exc.network,
                                              loss=exc.loss, values=exc.values) from None
                    self._rollback(exc, log)
                    continue
                if s % cfg.sample_every == 0 or s == total:
                    self.save_samples(s)
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)
            if bar is not None:
                bar.close()
        self.save_checkpoint()
        from . import plots
        plots.loss_curves(self.read_history(), self.out / "losses.png")
        result = self.evaluate()
        result = {"step": tr.step_count, **{k: _jsonable(v) for k, v in result.items()}}
        atomic_write_text(self.out / METRICS, json.dumps(result, indent=2) + "\n")
        return result

    def _rollback(self, exc: DivergenceError, log: Callable[[str], None]) -> None:
        """Reload the last checkpoint and halve the learning rate (on_nan = "rollback")."""
        tr = self.trainer
        path = self.out / CHECKPOINT
        if self.rollbacks >= MAX_ROLLBACKS or not path.is_file():
            why = (f"gave up after {self.rollbacks} rollbacks" if path.is_file()
                   else f"there is no checkpoint in {self.out} to roll back to")
            raise DivergenceError(f"{exc}; {why}", step=exc.step, network=exc.network, loss=exc.loss,
                                  values=exc.values) from None
        scale = tr.lr_scale * 0.5
        self.load_checkpoint(path)
        tr.lr_scale = scale
        self.rollbacks += 1
        self._restore_history()
        lr = self.cfg.train.schedule(self.cfg.train.lr, self.cfg.train.lr_final, tr.step_count) * scale
        log(f"{exc}; rolled back to the checkpoint of step {tr.step_count} and halved the learning rate "
            f"(now {scale:g} x the schedule: lr = {lr:.3g}; rollback {self.rollbacks} of at most {MAX_ROLLBACKS})")


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM after a complete step; the checkpoint is saved."""


def _fmt(v: Any) -> str:
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def _jsonable(v: Any) -> Any:
    if backend.is_array(v):
        v = backend.to_numpy(v).tolist()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    return v


def _postfix(r: dict[str, float]) -> str:
    s = f"loss_d={r['loss_d']:.3f} loss_g={r['loss_g']:.3f} D(x)={r['d_x']:.2f} D(G(z))={r['d_g_z']:.2f}"
    if not math.isnan(r["entropy"]):
        s += f" H={r['entropy']:.2f}"
    return s
