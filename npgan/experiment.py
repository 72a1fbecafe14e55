"""A training run on disk: create, train, checkpoint, resume, sample, evaluate.

A run directory holds:

* ``config.toml`` — the :class:`~npgan.presets.RunConfig` (everything needed to reproduce the run);
* ``history.csv`` — one row per step (:data:`npgan.gan.HISTORY_FIELDS`), flushed every ``log_every`` steps;
* ``checkpoint.npz`` — G, D, both optimizers, the RNG state and the step (see :mod:`npgan.checkpoint`), written
  atomically every ``checkpoint_every`` steps, at the end and on Ctrl-C;
* ``samples/step_NNNNNN.png`` — a fixed-noise grid of images, or a scatter of 2-D samples over the mode centres;
* ``losses.png`` and ``metrics.json`` at the end.

Resuming restores every piece of state, so an interrupted and resumed run ends with exactly the weights of an
uninterrupted one (same machine, CPU).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__, backend, optim
from .checkpoint import CheckpointError, atomic_write_text, load_arrays, save_arrays
from .gan import HISTORY_FIELDS, Trainer
from .presets import RunConfig, arch_summary, build_models
from .tensor import Tensor

__all__ = ["Run", "RunError", "read_config", "write_config"]

CONFIG, HISTORY, CHECKPOINT, METRICS = "config.toml", "history.csv", "checkpoint.npz", "metrics.json"


class RunError(ValueError):
    """A run cannot be created or resumed; the message names the directory or file and the reason."""


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
        cfg.validate()
    except (TypeError, ValueError) as exc:
        raise RunError(f"config file {path}: {exc}") from None
    return cfg


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


# ============================================================================ the run
class Run:
    """A configured run bound to a directory. Use :meth:`create` or :meth:`resume`, then :meth:`train`."""

    def __init__(self, cfg: RunConfig, out: Path) -> None:
        self.cfg, self.out = cfg, Path(out)
        backend.set_default_dtype(cfg.dtype)
        backend.set_device(cfg.device)
        backend.manual_seed(cfg.seed)
        self.G, self.D = build_models(cfg)
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
        self.history: list[dict[str, float]] = []

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
    def resume(cls, out: str | os.PathLike, steps: int | None = None) -> Run:
        """Reload a run from its directory: config, weights, optimizers, RNG, step and history."""
        out = Path(out)
        if not out.is_dir():
            raise RunError(f"run directory {out} does not exist")
        cfg = read_config(out / CONFIG)
        if steps is not None:
            if not isinstance(steps, int) or steps <= 0:
                raise RunError(f"--steps must be a positive integer, got {steps!r}")
            cfg.train.steps = steps
        run = cls(cfg, out)
        if (out / CHECKPOINT).exists():
            run.load_checkpoint(out / CHECKPOINT)
        run._restore_history()
        if steps is not None:
            write_config(out / CONFIG, cfg)
        return run

    # ------------------------------------------------------------------ checkpoints
    def _arrays_and_meta(self) -> tuple[dict[str, Any], dict[str, Any]]:
        arrays: dict[str, Any] = {}
        meta: dict[str, Any] = {"step": self.trainer.step_count, "arch": arch_summary(self.G, self.D),
                                "arch_hash": self.cfg.arch_hash(), "config": self.cfg.to_dict(),
                                "rng": backend.get_rng_state(), "optimizers": {}}
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

    def save_checkpoint(self) -> Path:
        arrays, meta = self._arrays_and_meta()
        path = self.out / CHECKPOINT
        save_arrays(path, arrays, meta)
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Restore everything from ``path``; :class:`CheckpointError` (nothing changed) when it does not fit."""
        arrays, meta = load_arrays(path)
        if meta.get("arch_hash") != self.cfg.arch_hash() or meta.get("arch") != arch_summary(self.G, self.D):
            raise CheckpointError(f"checkpoint {path} was written for another architecture "
                                  f"(data/model/widths differ from {self.out / CONFIG})")
        try:
            sds = {"G": {}, "D": {}}
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
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {path} is incomplete ({type(exc).__name__}: {exc})") from None
        self.G.load_state_dict(sds["G"])
        self.D.load_state_dict(sds["D"])
        self.opt_g.load_state_dict(opt_sd["opt_g"])
        self.opt_d.load_state_dict(opt_sd["opt_d"])
        backend.set_rng_state(meta["rng"])
        self.trainer.step_count = step

    # ------------------------------------------------------------------ history
    def _restore_history(self) -> None:
        """Keep the rows up to the checkpoint's step (later ones will be recomputed identically)."""
        path = self.out / HISTORY
        rows = []
        if path.exists():
            with open(path, newline="") as f:
                for r in csv.DictReader(f):
                    try:
                        if int(r["step"]) <= self.trainer.step_count:
                            rows.append({k: (int(v) if k == "step" else float(v)) for k, v in r.items()})
                    except (KeyError, ValueError, TypeError):
                        break  # a row cut by a kill: drop it and what follows
        self.history = rows
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(HISTORY_FIELDS)
        for r in rows:
            w.writerow([_fmt(r[k]) for k in HISTORY_FIELDS])
        atomic_write_text(path, buf.getvalue())

    def _append_history(self, rows: list[dict[str, float]]) -> None:
        if not rows:
            return
        self.history.extend(rows)
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
        """
        cfg, tr = self.cfg, self.trainer
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

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, on_signal)
            except ValueError:  # not the main thread: no handlers
                pass
        try:
            if tr.step_count == 0:
                self.save_samples(0)
            while tr.step_count < total:
                tr.step()
                s = tr.step_count
                if s % cfg.log_every == 0 or s == total or stop:
                    rows = tr.flush()
                    self._append_history(rows)
                    if bar is not None and rows:
                        bar.update(len(rows))
                        bar.set_postfix_str(_postfix(rows[-1]), refresh=False)
                if stop:
                    self.save_checkpoint()
                    raise Interrupted(f"interrupted at step {s}: checkpoint saved in {self.out}; "
                                      f"continue with 'npgan resume {self.out}'")
                if s % cfg.checkpoint_every == 0 and s != total:
                    self.save_checkpoint()
                if s % cfg.sample_every == 0 or s == total:
                    self.save_samples(s)
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)
            if bar is not None:
                bar.close()
        self.save_checkpoint()
        from . import plots
        plots.loss_curves(self.history, self.out / "losses.png")
        result = self.evaluate()
        result = {"step": tr.step_count, **{k: _jsonable(v) for k, v in result.items()}}
        atomic_write_text(self.out / METRICS, json.dumps(result, indent=2) + "\n")
        return result


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
