"""A training run on disk: create, train, checkpoint, resume, sample, evaluate.

A run directory holds:

* ``config.toml`` — the :class:`~npgan.config.RunConfig` (everything needed to reproduce the run);
* ``history.csv`` — one row per step (:data:`npgan.gan.HISTORY_FIELDS`), flushed every ``log_every`` steps;
* ``checkpoint.npz`` — G, D, both optimizers, the RNG state and the step (see :mod:`npgan.checkpoint`), written
  atomically at step 0, every ``checkpoint_every`` steps, at the end and on Ctrl-C (the history is flushed
  first, so it always reaches the checkpoint's step);
* ``samples/step_NNNNNN.png`` — a fixed-noise grid of images, or a scatter of 2-D samples over the mode centres;
* ``losses.png`` and ``metrics.json`` at the end.

Resuming restores every piece of state, so an interrupted and resumed run ends with exactly the weights of an
uninterrupted one (same machine, CPU), however it was interrupted (Ctrl-C, SIGKILL, even during a checkpoint
write). A failed checkpoint load changes nothing. Training refuses, before it starts, a batch whose first step
would need more memory than the machine has (:mod:`npgan.memory`). A non-finite loss or gradient is
handled as ``train.on_nan`` says (see :mod:`npgan.gan`): "stop" raises :class:`~npgan.errors.DivergenceError`
with the last good checkpoint intact, "skip" skips the step, "rollback" reloads the last checkpoint and halves
the learning rate (up to :data:`MAX_ROLLBACKS` times).

A Run is an entry point: it sets the process's default dtype, device and seed from its configuration, then
makes its parts with :func:`npgan.presets.build` (which sets nothing). A script that drives a Trainer itself
calls ``build`` and :func:`evaluate` directly.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import backend
from .checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    apply_state,
    atomic_write_text,
    config_hash,
    load_arrays,
    pack_state,
    remove_stale_temps,
    save_arrays,
    unpack_state,
)
from .config import RunConfig, read_config, write_config
from .errors import DivergenceError, RunError
from .gan import HISTORY_FIELDS, Trainer
from .memory import available_memory, check_memory, estimate_step_bytes
from .presets import arch_summary, build
from .tensor import Tensor

__all__ = ["Run", "RunError", "Interrupted", "evaluate", "side_noise", "read_config", "write_config",
           "estimate_step_bytes", "available_memory", "MAX_ROLLBACKS", "check_memory"]

CONFIG, HISTORY, CHECKPOINT, METRICS = "config.toml", "history.csv", "checkpoint.npz", "metrics.json"

#: on_nan = "rollback" gives up (DivergenceError) after this many rollbacks in one ``train`` call
#: (the learning rate is then 2**-MAX_ROLLBACKS of its schedule).
MAX_ROLLBACKS = 20


def side_noise(cfg: RunConfig, n: int, tag: int) -> Tensor:
    """(n, z_dim) standard normal noise from a generator seeded by (seed, tag), not npgan's main stream.

    The noise for pictures and metrics comes from generators of its own, so that drawing it never moves the
    training stream (a resumed run must see exactly the random numbers of an uninterrupted one).
    """
    z = backend.np.random.default_rng([cfg.seed, tag]).standard_normal((n, cfg.train.z_dim))
    return Tensor(backend.asarray(z, dtype=backend.get_default_dtype()))


def evaluate(cfg: RunConfig, trainer: Trainer) -> dict[str, Any]:
    """Quality metrics of the trainer's G on ``cfg.eval_samples`` samples.

    ring8 / grid25: mode coverage (:func:`npgan.metrics.mode_metrics`). digits, mnist and shapes: the shipped
    (or trained) classifier's metrics — classes covered, class KL, classifier score — and PRDC against the test
    split (:func:`npgan.metrics.image_metrics`; shapes: freshly generated images of another data seed). folder
    and cifar10, where npgan has no classifier: :func:`npgan.images.colour_image_metrics` (PRDC on 8×8
    area-averaged pixels, per-channel mean/std; not FID) against CIFAR-10's test split, or the folder's own
    images (a folder has no held-out split), at most ``eval_samples`` of them in a seeded order.
    """
    from . import data, metrics
    fake = trainer.sample(side_noise(cfg, cfg.eval_samples, tag=8))
    if cfg.data in ("ring8", "grid25"):
        _, centers, std = data.MIXTURES[cfg.data]
        return metrics.mode_metrics(fake, centers, std)
    if cfg.data in ("folder", "cifar10", "shapes"):
        store = data.load_images(cfg.data, "test", cfg.data_dir, cfg.image_size, cfg.channels, seed=cfg.seed,
                                 progress=False)
        real = store.batch(store.epoch_order(0)[:min(len(store), cfg.eval_samples)])
        if cfg.data == "shapes":
            return metrics.image_metrics(fake, real, data._images().shapes_classifier())
        return data._images().colour_image_metrics(fake, real)
    if cfg.data == "digits":
        clf = metrics.digits_classifier()
        real, _ = data.load_digits(split="test")
    else:
        clf = metrics.mnist_classifier(cfg.data_dir)
        real, _ = data.load_mnist(cfg.data_dir, split="test")
    return metrics.image_metrics(fake, real, clf)


def read_history(path: Path, upto: int | None = None) -> list[dict[str, float]]:
    """The rows of a history.csv (up to step ``upto``), stopping at a damaged or cut row."""
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


# ============================================================================ the run
class Run:
    """A configured run bound to a directory. Use :meth:`create` or :meth:`resume`, then :meth:`train`."""

    def __init__(self, cfg: RunConfig, out: Path) -> None:
        self.cfg, self.out = cfg, Path(out)
        backend.set_default_dtype(cfg.dtype)  # the entry point's job (see the module docstring)
        backend.set_device(cfg.device)
        backend.manual_seed(cfg.seed)
        self.G, self.D, self.opt_g, self.opt_d, self.trainer = build(cfg)
        check_memory(self.G, self.D, cfg.train)
        self.fixed_z = side_noise(cfg, 64 if cfg.data not in ("ring8", "grid25") else 1000, tag=7)
        self.checkpoint_step: int | None = None  # the step of the checkpoint on disk, when known
        self.rollbacks = 0

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
    def _last_good(self) -> str:
        path = self.out / CHECKPOINT
        if not path.is_file():
            return f"there is no checkpoint in {self.out}"
        step = self.checkpoint_step
        return f"the last good checkpoint {path}{f' (step {step})' if step is not None else ''} is intact"

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint.npz`` atomically (its layout: :mod:`npgan.checkpoint`).

        Refuses (:class:`DivergenceError`) to write weights or optimizer state holding nan or inf, and turns a
        failed write (e.g. a full disk) into :class:`CheckpointWriteError`; either way the previous checkpoint
        stays as it was.
        """
        tr, step = self.trainer, self.trainer.step_count
        arrays, meta = pack_state({"G": self.G, "D": self.D}, {"opt_g": self.opt_g, "opt_d": self.opt_d},
                                  step=step, arch=arch_summary(self.G, self.D), arch_hash=self.cfg.arch_hash(),
                                  config=self.cfg.to_dict(), rng=backend.get_rng_state(), lr_scale=tr.lr_scale,
                                  skipped=tr.skipped)
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
        st = unpack_state(path, arrays, meta, nets=("G", "D"), opts=("opt_g", "opt_d"))
        apply_state(path, st, {"G": self.G, "D": self.D}, {"opt_g": self.opt_g, "opt_d": self.opt_d})
        self.trainer.step_count, self.trainer.lr_scale, self.trainer.skipped = st.step, st.lr_scale, st.skipped
        self.checkpoint_step = st.step

    # ------------------------------------------------------------------ history (on disk only, so that a long
    # run's memory does not grow with its length)
    def read_history(self, upto: int | None = None) -> list[dict[str, float]]:
        """The rows of history.csv (up to step ``upto``), stopping at a damaged or cut row."""
        return read_history(self.out / HISTORY, upto)

    @property
    def history(self) -> list[dict[str, float]]:
        """The run's history rows so far (read from history.csv)."""
        return self.read_history()

    def _restore_history(self) -> None:
        """Keep the rows up to the checkpoint's step (later ones will be recomputed identically)."""
        buf = io.StringIO()
        buf.write(",".join(HISTORY_FIELDS) + "\n")
        _write_rows(buf, self.read_history(upto=self.trainer.step_count))
        atomic_write_text(self.out / HISTORY, buf.getvalue())

    def _append_history(self, rows: list[dict[str, float]]) -> None:
        if rows:
            with open(self.out / HISTORY, "a", newline="") as f:
                _write_rows(f, rows)

    # ------------------------------------------------------------------ pictures and metrics
    def save_samples(self, step: int) -> None:
        from . import data, plots
        (self.out / "samples").mkdir(exist_ok=True)
        path = self.out / "samples" / f"step_{step:06d}.png"
        x = backend.to_numpy(self.trainer.sample(self.fixed_z).data)
        if self.cfg.data in ("ring8", "grid25"):
            centers = backend.to_numpy(data.MIXTURES[self.cfg.data].centers)
            plots.scatter_2d(x, centers, path, title=f"{self.cfg.data}, step {step}")
        else:
            plots.image_grid(x, path, title=f"{self.cfg.data}, step {step}")

    def evaluate(self) -> dict[str, Any]:
        """The run's quality metrics (:func:`evaluate`)."""
        return evaluate(self.cfg, self.trainer)

    # ------------------------------------------------------------------ training
    def train(self, progress: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Train to ``cfg.train.steps``; returns the final metrics.

        Ctrl-C or SIGTERM finishes the step in flight, saves a checkpoint and raises :class:`Interrupted`.
        A non-finite loss or gradient is handled as ``cfg.train.on_nan`` says (see the module docstring);
        ``log`` receives the one-line reports of skipped steps and rollbacks (default: stderr).
        """
        cfg, tr, total = self.cfg, self.trainer, self.cfg.train.steps
        tr.log = log = log or (lambda msg: print(f"npgan: {msg}", file=sys.stderr, flush=True))
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=total, initial=tr.step_count, unit="step", dynamic_ncols=True, file=sys.stderr)

        def checkpoint() -> None:
            self._append_history(tr.flush())  # the history always reaches the checkpoint's step
            self.save_checkpoint()

        with _stop_on_signals() as stop, (bar if bar is not None else contextlib.nullcontext()):
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
        self.save_checkpoint()
        from . import plots
        plots.loss_curves(self.read_history(), self.out / "losses.png")
        result = {"step": tr.step_count, **{k: _jsonable(v) for k, v in self.evaluate().items()}}
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


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[list[int]]:
    """While inside, SIGINT and SIGTERM append to the yielded list (the loop finishes the step in flight, then
    stops cleanly); a second one raises KeyboardInterrupt at once. The previous handlers come back after."""
    stop: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if stop:
            raise KeyboardInterrupt
        stop.append(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread: no handlers
            pass
    try:
        yield stop
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def _write_rows(f: Any, rows: list[dict[str, float]]) -> None:
    w = csv.writer(f, lineterminator="\n")
    for r in rows:
        w.writerow([str(v) if isinstance(v, int) else repr(float(v)) for v in (r[k] for k in HISTORY_FIELDS)])
    f.flush()


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
