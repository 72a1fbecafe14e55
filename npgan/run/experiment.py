"""A training run on disk: create, train, checkpoint, resume, sample, evaluate.

A run directory holds:

* ``config.toml`` — the :class:`~npgan.run.config.RunConfig` (everything needed to reproduce the run);
* ``history.csv`` — one row per step (:data:`npgan.gan.HISTORY_FIELDS`), flushed every ``log_every`` steps;
* ``checkpoint.npz`` — G, D, both optimizers, the RNG state and the step (see :mod:`npgan.run.checkpoint`), written
  atomically at step 0, every ``checkpoint_every`` steps, at the end and on Ctrl-C (the history is flushed
  first, so it always reaches the checkpoint's step);
* ``checkpoints/step_NNNNNN.npz`` — with ``keep_checkpoints`` (``npgan train --keep-checkpoints``), a copy of every
  checkpoint as it was written, for ``npgan study`` (the spectrum of the game through training);
* ``samples/step_NNNNNN.png`` — a fixed-noise grid of images, or a scatter of 2-D samples over the mode centres;
* ``losses.png`` and ``metrics.json`` at the end;
* ``.npgan.lock`` — the writer lock (:mod:`npgan.run.runlock`): one ``train``/``resume`` at a time; readers
  (:func:`load_run_readonly`: ``npgan sample``, ``npgan info DIR``) take no lock and write nothing.

A failed write of any of these raises :class:`~npgan.errors.WriteError` (the checkpoint:
:class:`~npgan.errors.CheckpointWriteError`) naming the file; the CLI exits 4.

Resuming restores every piece of state, so an interrupted and resumed run ends with exactly the weights of an
uninterrupted one (same machine, CPU), however it was interrupted (Ctrl-C, SIGKILL, even during a checkpoint
write). A failed checkpoint load changes nothing. Training refuses, before it starts, a batch whose first step
would need more memory than the machine has (:mod:`npgan.run.memory`). A non-finite loss or gradient is
handled as ``train.on_nan`` says (see :mod:`npgan.gan`): "stop" raises :class:`~npgan.errors.DivergenceError`
with the last good checkpoint intact, "skip" skips the step, "rollback" reloads the last checkpoint and halves
the learning rate (up to :data:`MAX_ROLLBACKS` times).

A Run is an entry point: it sets the process's default dtype, device and seed from its configuration, then
makes its parts with :func:`npgan.run.presets.build` (which sets nothing). A script that drives a Trainer itself
calls ``build`` and :func:`evaluate` directly.

Several processes (``mpiexec -n N npgan train ...``, ``npgan train --nproc N``; :mod:`npgan.distributed`). Every
rank builds the same run (same seed: same initial weights) and trains its share of each batch; rank 0 alone
touches the run directory: it takes the writer lock and writes config.toml, history.csv, the checkpoints, the
samples and the metrics, and the others write nothing (so a run directory on rank 0's disk is enough). What only
rank 0 does runs through :meth:`npgan.distributed.World.run`, which raises its failure (a full disk, a locked
directory) on every rank, so all ranks stop at the same step. A resume or a rollback loads the checkpoint on rank 0
and sends its state to the others (:func:`_share_state`); the checkpoint is the one a one-process run writes, so a
run continues on any number of processes. A stop request (Ctrl-C, SIGTERM) on any rank stops every rank after the
same step (one small Allreduce a step, :meth:`~npgan.distributed.World.any`), and every ``check_every`` steps and
before each checkpoint the ranks compare a digest of every parameter and buffer
(:meth:`~npgan.distributed.World.check_agreement`): a mismatch stops the run naming the first tensor, before a
checkpoint is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import signal
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from .. import backend, distributed
from ..data.catalog import load_images
from ..data.digits import load_digits, load_mnist
from ..data.mixtures import MIXTURES
from ..errors import DivergenceError, FileKindError, RunError, WriteError
from ..eval import plots
from ..eval.classifiers import digits_classifier, mnist_classifier, shapes_classifier
from ..eval.metrics import colour_image_metrics, image_metrics, mode_metrics
from ..files import atomic_write_bytes, atomic_write_text, check_target, remove_stale_temps
from ..gan.trainer import Trainer
from ..tensor import Tensor
from ..weights import WeightsError, load_into
from . import history
from .checkpoint import (
    CHECKPOINT_FILE,
    KEPT_CHECKPOINTS,
    CheckpointError,
    CheckpointWriteError,
    apply_state,
    config_hash,
    kept_checkpoint,
    load_arrays,
    nonfinite,
    pack_state,
    save_arrays,
    unpack_state,
    warn_environment,
)
from .config import CONFIG_FILE, MIXTURE_DATASETS, RunConfig, read_config, write_config
from .history import read_history
from .machine import available_memory
from .memory import check_memory, check_model_size, estimate_step_bytes
from .presets import arch_summary, build, check_models, count_parameters, file_sha256, model_error, model_file
from .runlock import LOCK_NAME, RunLock, check_unlocked

__all__ = ["Run", "RunError", "Interrupted", "evaluate", "side_noise", "read_config", "write_config",
           "estimate_step_bytes", "available_memory", "MAX_ROLLBACKS", "check_memory", "load_run_readonly",
           "LoadedRun", "check_checkpoint_file", "writing", "read_models", "read_run_summary", "KEPT_CHECKPOINTS",
           "kept_checkpoint"]

CONFIG, HISTORY, CHECKPOINT, METRICS = CONFIG_FILE, "history.csv", CHECKPOINT_FILE, "metrics.json"

#: on_nan = "rollback" gives up (DivergenceError) after this many rollbacks in one ``train`` call
#: (the learning rate is then 2**-MAX_ROLLBACKS of its schedule).
MAX_ROLLBACKS = 20
#: several processes: the ranks compare their parameters every this many steps (and before each checkpoint)
CHECK_EVERY = 100


def side_noise(cfg: RunConfig, n: int, tag: int) -> Tensor:
    """(n, z_dim) standard normal noise from a generator seeded by (seed, tag), not npgan's main stream.

    The noise for pictures and metrics comes from generators of its own, so that drawing it never moves the
    training stream (a resumed run must see exactly the random numbers of an uninterrupted one).
    """
    z = backend.np.random.default_rng([cfg.seed, tag]).standard_normal((n, cfg.train.z_dim))
    return Tensor(backend.asarray(z, dtype=backend.get_default_dtype()))


def evaluate(cfg: RunConfig, trainer: Trainer) -> dict[str, Any]:
    """Quality metrics of the trainer's G on ``cfg.eval_samples`` samples.

    ring8 / grid25: mode coverage (:func:`npgan.eval.metrics.mode_metrics`). digits, mnist and shapes: the shipped
    (or trained) classifier's metrics — classes covered, class KL, classifier score — and PRDC against the test
    split (:func:`npgan.eval.metrics.image_metrics`; shapes: freshly generated images of another data seed). folder
    and cifar10, where npgan has no classifier: :func:`npgan.data.images.colour_image_metrics` (PRDC on 8×8
    area-averaged pixels, per-channel mean/std; not FID) against CIFAR-10's test split, or the folder's own
    images (a folder has no held-out split), at most ``eval_samples`` of them in a seeded order.
    """
    fake = trainer.sample(side_noise(cfg, cfg.eval_samples, tag=8))
    if cfg.data in MIXTURE_DATASETS:
        _, centers, std = MIXTURES[cfg.data]
        return mode_metrics(fake, centers, std)
    if cfg.data in ("folder", "cifar10", "shapes"):
        store = load_images(cfg.data, "test", cfg.data_dir, cfg.image_size, cfg.channels, seed=cfg.seed,
                            progress=False)
        real = store.batch(store.epoch_order(0)[:min(len(store), cfg.eval_samples)])
        if cfg.data == "shapes":
            return image_metrics(fake, real, shapes_classifier())
        return colour_image_metrics(fake, real)
    if cfg.data == "digits":
        clf = digits_classifier()
        real, _ = load_digits(split="test")
    else:
        clf = mnist_classifier(cfg.data_dir)
        real, _ = load_mnist(cfg.data_dir, split="test")
    return image_metrics(fake, real, clf)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError raised inside (disk full, no permission, a missing directory) into :class:`WriteError`
    naming ``path`` (the file meant, not a temporary one) and the errno: ``npgan`` exits 4 with that line."""
    try:
        yield
    except (WriteError, CheckpointWriteError):
        raise
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, "?")
        raise WriteError(exc.errno, f"could not write {path}: {exc.strerror or exc} ({code})") from None


def check_checkpoint_file(path: str | os.PathLike) -> None:
    """:class:`CheckpointError` unless ``path`` is (a symlink to) a regular file, saying what it is instead.

    A run directory without its checkpoint (deleted, a dangling symlink, a directory or FIFO in its place) is an
    error, never a silent restart from step 0; a FIFO is never opened (a read would block forever).
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise CheckpointError(f"checkpoint {path} is a dangling symlink (to {os.readlink(path)}, which does not "
                                  "exist)") from None
        if not (path.parent / CONFIG).is_file():
            raise CheckpointError(f"{path.parent} holds no run (neither {CHECKPOINT} nor {CONFIG}); start one with "
                                  f"'npgan train --preset NAME --out {path.parent}'") from None
        raise CheckpointError(f"checkpoint {path} does not exist: the run directory has lost its checkpoint "
                              f"(start again with 'npgan train --config {path.parent / CONFIG} --out NEW_DIR')"
                              ) from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISREG(mode):
        return
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device file" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file")
    raise CheckpointError(f"checkpoint {path} is {kind}, not a checkpoint file")


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class _ReadCheckpoint(NamedTuple):
    """A checkpoint read and validated against a run's config, before any model exists (:func:`_read_checkpoint`)."""

    state: Any  # checkpoint.TrainingState
    meta: dict[str, Any]
    total: int | None  # the run's recorded total (``total_steps``), when a resume extended it


def _read_checkpoint(cfg: RunConfig, out: Path, path: Path) -> _ReadCheckpoint:
    """Read ``path`` and check everything that needs no model: the file (a regular file, a zip of .npy arrays, its
    sha256, its format), the architecture's hash, ``total_steps`` and every header field
    (:func:`npgan.run.checkpoint.unpack_state`: step, optimizers, RNG, the run's configuration).

    Nothing of the run's code runs before this has passed (a ``--model`` file is imported only after it). The file
    is opened and read once (a writer replaces it by a rename, so one read sees one complete version); if it fails
    to load and was replaced meanwhile, it is read once more.
    """
    for attempt in (0, 1):
        before = _file_identity(path)
        try:
            check_checkpoint_file(path)
            arrays, meta = load_arrays(path)
            break
        except CheckpointError:
            if attempt or _file_identity(path) == before:
                raise
    if meta.get("arch_hash") != cfg.arch_hash():
        raise CheckpointError(f"checkpoint {path} was written for another architecture "
                              f"(data/model/widths differ from {out / CONFIG})")
    total = meta.get("total_steps")
    if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total <= 0):
        raise CheckpointError(f"checkpoint {path}: total_steps must be a positive integer, got {total!r}")
    st = unpack_state(path, arrays, meta, nets=("G", "D"), opts=("opt_g", "opt_d"), config=cfg.to_dict())
    return _ReadCheckpoint(st, meta, total)


def _load_training_state(cfg: RunConfig, out: Path, path: Path, G: Any, D: Any, opt_g: Any, opt_d: Any,
                         trainer: Trainer, read: _ReadCheckpoint | None = None) -> int | None:
    """Restore G, D, the optimizers, the RNG and the trainer's counters from ``path`` (all or nothing); returns
    the run's recorded total (``total_steps``, written when a resume extended the run) or None.

    ``read``: the checkpoint as :func:`_read_checkpoint` already read it (else it is read now).
    """
    read = read if read is not None else _read_checkpoint(cfg, out, path)
    if read.meta.get("arch") != arch_summary(G, D):
        raise CheckpointError(f"checkpoint {path} was written for another architecture "
                              f"(data/model/widths differ from {out / CONFIG})")
    st = read.state
    apply_state(path, st, {"G": G, "D": D}, {"opt_g": opt_g, "opt_d": opt_d})
    trainer.step_count, trainer.lr_scale, trainer.skipped = st.step, st.lr_scale, st.skipped
    return read.total


class LoadedRun(NamedTuple):
    """A run as read by :func:`load_run_readonly`: the config, G and D with the checkpoint's weights, its step, a
    Trainer (for :meth:`~npgan.gan.Trainer.sample`; the process's RNG holds the checkpoint's state) and the
    run's total number of steps."""

    cfg: RunConfig
    G: Any
    D: Any
    step: int
    trainer: Trainer
    total_steps: int


def load_run_readonly(out: str | os.PathLike, allow_changed_model: bool = False,
                      trust_model: bool = False) -> LoadedRun:
    """Read a run (config.toml and checkpoint.npz) without writing, truncating or deleting anything in ``out``.

    Takes no lock: it works on a read-only directory and while another process trains the run (the checkpoint
    is replaced atomically; see :func:`_read_checkpoint`). ``npgan sample``, ``npgan info DIR`` and ``npgan export``
    use it. Like :class:`Run`, it sets the process's default dtype, device and seed from the config first. It reads
    no data set (the trainer it returns can sample, not train).

    A run directory is data, never code: a run whose networks come from a ``--model`` file (config.toml's
    ``model_build``) is refused with one :class:`RunError` line unless ``trust_model`` (``--trust-model``), and even
    then the file is imported only after the checkpoint has passed every check that needs no model
    (:func:`_read_checkpoint`). A model file that changed since the run was created is refused unless
    ``allow_changed_model``.
    """
    out = Path(out)
    cfg, read = _read_run(out)
    _trust_model_file(cfg, out, trust_model, allow_changed_model)
    backend.set_default_dtype(cfg.dtype)
    backend.set_device(cfg.device)
    backend.manual_seed(cfg.seed)
    G, D, opt_g, opt_d, trainer = build(cfg, data=False)
    total = _load_training_state(cfg, out, out / CHECKPOINT, G, D, opt_g, opt_d, trainer, read)
    return LoadedRun(cfg, G, D, trainer.step_count, trainer, max(cfg.train.steps, total or 0))


def _read_run(out: Path) -> tuple[RunConfig, _ReadCheckpoint]:
    """config.toml and the checkpoint of the run in ``out``, read and checked; no model is built, nothing runs."""
    if not out.is_dir():
        raise RunError(f"run directory {out} does not exist")
    check_checkpoint_file(out / CHECKPOINT)
    cfg = read_config(out / CONFIG)
    return cfg, _read_checkpoint(cfg, out, out / CHECKPOINT)


def _trust_model_file(cfg: RunConfig, out: Path, trust_model: bool, allow_changed_model: bool) -> None:
    """For a reader of a ``--model`` run: refuse unless ``trust_model``; then the file's SHA-256 must still be the
    recorded one (:func:`_check_model_file`). A run of npgan's own models passes (no code of the run is run)."""
    if cfg.model != "custom":
        return
    if not trust_model:
        raise RunError(f"{out}: this run's networks are built by the model file {cfg.model_build!r}, whose code "
                       "npgan runs only when told: pass --trust-model if you trust that file")
    _check_model_file(cfg, allow_changed_model, out)


def read_run_summary(out: str | os.PathLike) -> dict[str, Any]:
    """What ``npgan info DIR`` shows of a run without building its networks (so without running a ``--model``
    file): preset, data, model, the checkpoint's step, the run's total and schedule steps, whether it finished.
    config.toml and the checkpoint are read and checked as :func:`load_run_readonly` checks them, less the
    comparison of the arrays with the built networks."""
    out = Path(out)
    cfg, read = _read_run(out)
    total = max(cfg.train.steps, read.total or 0)
    return {"cfg": cfg, "step": read.state.step, "total_steps": total}


# ============================================================================ the run
class Run:
    """A configured run bound to a directory. Use :meth:`create` or :meth:`resume`, then :meth:`train`.

    One writer at a time: :meth:`create` and :meth:`resume` take the directory's writer lock
    (:class:`npgan.run.runlock.RunLock`; another writer gets :class:`~npgan.run.runlock.RunLockedError`, exit 2) and
    hold it until :meth:`train` returns or raises, or :meth:`close` (also ``with Run.resume(d) as run:``).
    ``total_steps`` is the run's length: ``train.steps`` of config.toml, or more when a resume extended it
    (recorded in the checkpoint); ``stop_at`` a step where this session stops (``resume --steps N`` below it).
    """

    def __init__(self, cfg: RunConfig, out: Path) -> None:
        self.cfg, self.out = cfg, Path(out)
        backend.set_default_dtype(cfg.dtype)  # the entry point's job (see the module docstring)
        backend.set_device(distributed.rank_device(cfg.device))  # several processes: gpu:(local rank mod GPUs)
        backend.manual_seed(cfg.seed)
        check_model_size(cfg, count_parameters(cfg))  # by arithmetic, before a huge model is built
        self.G, self.D, self.opt_g, self.opt_d, self.trainer = build(cfg)
        check_models(cfg, self.G, self.D)  # shapes, and no Sigmoid before the logit losses
        check_memory(self.G, self.D, cfg.train, eval_samples=cfg.eval_samples)
        self.fixed_z = side_noise(cfg, 64 if cfg.data not in MIXTURE_DATASETS else 1000, tag=7)
        self.checkpoint_step: int | None = None  # the step of the checkpoint on disk, when known
        self.rollbacks = 0
        self.total_steps = cfg.train.steps  # the run's length (a resume may extend it; see resume)
        self.stop_at: int | None = None  # where this session stops, when before total_steps
        self.lock: RunLock | None = None
        self.made: _Made | None = None  # set by create: what this run may remove if your model fails early
        self.check_every = CHECK_EVERY  # several processes: steps between two agreement checks

    def close(self) -> None:
        """Release the directory's writer lock (idempotent)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _acquire(self, command: str) -> None:
        if not distributed.world().is_root:
            return  # several processes: rank 0 alone writes, and holds the lock
        if self.lock is None or not self.lock.held:
            try:
                self.lock = RunLock(self.out, command)
            except OSError as exc:  # e.g. a read-only directory: a writer cannot work there
                raise RunError(f"cannot take the writer lock {self.out / LOCK_NAME}: "
                               f"{exc.strerror or exc}") from None

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, cfg: RunConfig, out: str | os.PathLike) -> Run:
        """A new run in ``out`` (created; refused when it already holds a run, so nothing is overwritten).

        Several processes: every rank checks and builds (a failure on any rank is raised on all, before anything
        is written), then rank 0 alone makes the directory and its files."""
        w = distributed.world()
        run = w.run(cls._build_new, cfg, Path(out))
        w.run(run._start_files, root_only=True)
        return run

    @classmethod
    def _build_new(cls, cfg: RunConfig, out: Path) -> Run:
        """For :meth:`create`: the checks and the run's parts, nothing written."""
        out = _check_new_run(cfg, out)
        run = cls(cfg, out)  # may raise (bad data dir, device) before anything is written
        _load_initial_weights(cfg, run.G, run.D)  # checked and loaded before anything is written
        return run

    def _start_files(self) -> None:
        """For :meth:`create`: the directory, its writer lock, config.toml and an empty history.csv."""
        out, cfg = self.out, self.cfg
        self.made = _Made.survey(out)  # what this command may take back if your model fails early
        with writing(out):
            out.mkdir(parents=True, exist_ok=True)
        self._acquire("train")  # another writer here: RunLockedError, nothing written
        try:
            _refuse_existing_run(out, os.path.lexists)  # made while we built
            with writing(out / CONFIG):
                write_config(out / CONFIG, cfg)
            with writing(out / HISTORY):
                history.create(out / HISTORY, self.trainer.history_fields)
        except BaseException:
            self.close()
            raise

    @classmethod
    def resume(cls, out: str | os.PathLike, steps: int | None = None, on_nan: str | None = None,
               device: str | None = None, restretch: bool = False,
               allow_changed_model: bool = False) -> Run:
        """Reload a run from its directory: config, weights, optimizers, RNG, step and history.

        ``steps`` and ``restretch`` set this session's end and the run's length (:func:`_session_length`).
        ``on_nan`` changes the run's configuration (written back to config.toml). ``device`` runs this session
        only on another device ("cpu" for a GPU run, or back): the weights and optimizer state move there, the
        random stream cannot (:func:`npgan.backend.set_rng_state`). Takes the writer lock first, then removes the
        temporary files killed writers left. A missing checkpoint is a :class:`CheckpointError` (never a silent
        restart from step 0). A changed ``--model`` file is refused unless ``allow_changed_model`` (its new
        SHA-256 is then written to config.toml; the checkpoint must still fit the architecture).

        Several processes: rank 0 resumes as one process would (lock, config, checkpoint, history), then the
        others build the run from its configuration and take its state (:func:`_resume_other_ranks`).
        """
        w = distributed.world()
        if w.size > 1:
            run = w.run(cls._resume_here, Path(out), steps, on_nan, device, restretch, allow_changed_model,
                        root_only=True)
            return _resume_other_ranks(cls, w, run, Path(out))
        return cls._resume_here(Path(out), steps, on_nan, device, restretch, allow_changed_model)

    @classmethod
    def _resume_here(cls, out: Path, steps: int | None, on_nan: str | None, device: str | None, restretch: bool,
                     allow_changed_model: bool) -> Run:
        """:meth:`resume` in this process (the one process, or rank 0)."""
        cfg, _ = _resume_config(out, steps, None, device, restretch)  # checks, before the lock file is made
        _check_run_files(out)
        if cfg.model == "custom":  # its model file is code: checked (never run) only for a valid checkpoint
            _read_checkpoint(cfg, out, out / CHECKPOINT)
            _check_model_file(cfg, allow_changed_model, out)
        lock = RunLock(out, "resume")
        try:
            cfg, file_cfg = _resume_config(out, steps, on_nan, device, restretch)
            read = _read_checkpoint(cfg, out, out / CHECKPOINT)  # all of it that needs no model, before any is built
            changed = _check_model_file(cfg, allow_changed_model, out)
            file_cfg.model_sha256 = cfg.model_sha256
            run = cls(cfg, out)
            run.lock = lock
            remove_stale_temps(out)  # a writer killed mid-save leaves its temporary file behind
            run.load_checkpoint(out / CHECKPOINT, read)
            if cfg.keep_checkpoints and not kept_checkpoint(out, run.trainer.step_count).is_file():
                run._keep_checkpoint()  # killed between the checkpoint and its copy
            run.total_steps, run.stop_at = _session_length(run.total_steps, run.trainer.step_count, steps, restretch)
            run._restore_history()
            if restretch or on_nan is not None or changed:
                with writing(out / CONFIG):
                    write_config(out / CONFIG, file_cfg)
        except BaseException:
            lock.release()
            raise
        return run

    @property
    def target_step(self) -> int:
        """The step this session trains to: ``stop_at`` when set, else ``total_steps``."""
        return self.stop_at if self.stop_at is not None else self.total_steps

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write ``checkpoint.npz`` atomically (its layout: :mod:`npgan.run.checkpoint`).

        Refuses (:class:`DivergenceError`) to write weights or optimizer state holding nan or inf, and turns a
        failed write (e.g. a full disk) into :class:`CheckpointWriteError`; either way the previous checkpoint
        stays as it was.
        """
        step = self.trainer.step_count
        arrays, meta = _run_state(self.cfg, self.G, self.D, self.opt_g, self.opt_d, self.trainer, self.total_steps)
        bad = nonfinite(arrays)
        if bad:
            raise DivergenceError(f"step {step}: {bad[0]} holds nan or inf (an update overflowed); the checkpoint "
                                  f"was not written, {_last_good(self.out, self.checkpoint_step)}", step=step,
                                  network=bad[0][:1], loss="", values={})
        path = self.out / CHECKPOINT
        try:
            save_arrays(path, arrays, meta, config_hash=config_hash(self.cfg.to_dict()))
        except CheckpointWriteError as exc:
            msg = f"step {step}: {exc.strerror}"
            if self.checkpoint_step is not None:
                msg = msg.replace(" is intact", f" (step {self.checkpoint_step}) is intact")
            raise CheckpointWriteError(exc.errno, msg) from None
        self.checkpoint_step = step
        if self.cfg.keep_checkpoints:
            self._keep_checkpoint()
        return path

    def _keep_checkpoint(self) -> None:
        """checkpoints/step_NNNNNN.npz: a copy of checkpoint.npz as it is now (written atomically)."""
        target = kept_checkpoint(self.out, self.trainer.step_count)
        with writing(target):
            target.parent.mkdir(exist_ok=True)
            atomic_write_bytes(target, (self.out / CHECKPOINT).read_bytes())

    def load_checkpoint(self, path: Path, read: _ReadCheckpoint | None = None) -> None:
        """Restore everything from ``path``; :class:`CheckpointError` when it does not fit, and then nothing changed.

        The file is read and checked completely first (format, checksum, architecture, every array's shape
        against the models and optimizers); the state is then applied as a whole and put back as it was if any
        part fails. ``read``: the file as :func:`_read_checkpoint` already read it.
        """
        read = read if read is not None else _read_checkpoint(self.cfg, self.out, Path(path))
        total = _load_training_state(self.cfg, self.out, Path(path), self.G, self.D, self.opt_g, self.opt_d,
                                     self.trainer, read)
        if distributed.world().is_root:  # training goes on from here: say when it cannot be bit-exact
            warn_environment(path, read.meta.get("env"))
        self.total_steps = max(self.cfg.train.steps, total or 0)
        self.checkpoint_step = self.trainer.step_count

    # ------------------------------------------------------------------ history (on disk: memory stays flat)
    @property
    def history(self) -> list[dict[str, float]]:
        """The run's history rows so far (read from history.csv)."""
        return read_history(self.out / HISTORY)

    def _restore_history(self, log: Callable[[str], None] | None = None) -> None:
        """Cut history.csv back to the checkpoint's step; a damaged file is first kept aside, and ``log`` (default:
        stderr) gets the one line that says so (:func:`npgan.run.history.cut`)."""
        path, step = self.out / HISTORY, self.trainer.step_count
        with writing(path):
            report = history.cut(path, step)
        if report is not None:
            msg = history.describe_cut(path, report, step)
            (log or (lambda m: print(f"npgan: {m}", file=sys.stderr, flush=True)))(msg)

    def _append_history(self, rows: list[dict[str, float]]) -> None:
        with writing(self.out / HISTORY):
            history.append(self.out / HISTORY, rows)

    # ------------------------------------------------------------------ pictures and metrics
    def save_samples(self, step: int) -> None:
        """samples/step_NNNNNN.png: G's samples of the run's fixed noise."""
        _save_samples(self.out, self.cfg, self.trainer.sample(self.fixed_z), step)

    def evaluate(self) -> dict[str, Any]:
        """The run's quality metrics (:func:`evaluate`)."""
        return evaluate(self.cfg, self.trainer)

    # ------------------------------------------------------------------ training
    def train(self, progress: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Train to :attr:`target_step` (``cfg.train.steps`` for a new run); returns the final metrics.

        Holds the directory's writer lock while it runs (taking it if :meth:`create`/:meth:`resume` did not) and
        releases it when it returns or raises.

        Ctrl-C or SIGTERM finishes the step in flight, saves a checkpoint and raises :class:`Interrupted`.
        A non-finite loss or gradient is handled as ``cfg.train.on_nan`` says (see the module docstring);
        ``log`` receives the one-line reports of skipped steps and rollbacks (default: stderr).
        """
        self._acquire("train")
        try:
            return self._train(progress, log)
        except (DivergenceError, Interrupted) as exc:  # several processes: decided alike on every rank (the
            distributed.mark_everywhere(exc)           # guard sees the summed gradients, the stop is agreed)
            raise
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            what = model_error(exc, self.cfg)
            if what is None:
                raise  # npgan's own code alone: a bug in npgan, whose traceback the command line shows
            done = self.trainer.step_count
            self.close()
            raise RunError(f"{what}, after {done} step{'' if done == 1 else 's'}; {self._after_model_error()}"
                           ) from exc
        finally:
            self.close()  # this run's writing is done (train() again takes the lock again)

    def _after_model_error(self) -> str:
        """What becomes of the run directory when your model raised during training (the end of the message).

        A run made by :meth:`create` whose checkpoint has not passed step 0 is taken back: the files it wrote are
        removed, and the directory too when this command created it (anything else in it is kept); otherwise the
        directory stays as it is, with its last checkpoint."""
        step = self.checkpoint_step or 0
        if self.made is not None and step == 0:
            if self.made.take_back(self.out):
                return f"{self.out} was removed (it held no checkpoint past step 0)"
            return f"the files this run wrote in {self.out} were removed (no checkpoint past step 0); the rest is kept"
        if self.checkpoint_step is None:
            return f"{self.out} is left as it was"
        return (f"the checkpoint of step {step} in {self.out} is intact: fix the model, then "
                f"'npgan resume {self.out} --allow-changed-model'")

    def _train(self, progress: bool, log: Callable[[str], None] | None) -> dict[str, Any]:
        cfg, tr, total = self.cfg, self.trainer, self.target_step
        w = distributed.world()  # several processes: rank 0 writes (root), every rank trains its share
        root = w.run if w.size > 1 else None

        def on_root(fn: Callable[..., Any], *args: Any) -> Any:
            return fn(*args) if root is None else root(fn, *args, root_only=True)

        if not w.is_root:
            log = lambda msg: None  # noqa: E731 - rank 0 reports
        tr.log = log = log or (lambda msg: print(f"npgan: {msg}", file=sys.stderr, flush=True))

        def checkpoint() -> None:
            rows = tr.flush()
            self._check_agreement(f"step {tr.step_count}")  # before the checkpoint: never one of disagreeing ranks
            on_root(self._append_history, rows)  # the history always reaches the checkpoint's step
            on_root(self.save_checkpoint)

        with _stop_on_signals() as stop, contextlib.ExitStack() as stack:
            if tr.step_count == 0:
                on_root(self.save_samples, 0)
                checkpoint()  # step 0: a run always has a checkpoint to resume or roll back to
            bar = (stack.enter_context(_progress_bar(total, tr.step_count)) if progress and w.is_root
                   else None)
            while tr.step_count < total:
                try:
                    tr.step()
                    s = tr.step_count
                    stopping = w.any(stop)  # a stop request on any rank stops all after this step
                    if s % cfg.log_every == 0 or s == total or stopping:
                        rows = tr.flush()
                        on_root(self._append_history, rows)
                        if bar is not None and rows:
                            bar.set_postfix_str(_postfix(rows[-1]), refresh=False)  # shown by the next update
                    if bar is not None:
                        _advance(bar, s)
                    if stopping:
                        checkpoint()
                        raise Interrupted(f"interrupted at step {s}: checkpoint saved in {self.out}; "
                                          f"continue with 'npgan resume {self.out}'")
                    if s % cfg.checkpoint_every == 0 and s != total:
                        checkpoint()
                    elif w.size > 1 and s % self.check_every == 0:
                        self._check_agreement(f"step {s}")
                except DivergenceError as exc:
                    on_root(self._append_history, tr.flush())
                    if cfg.train.on_nan != "rollback":
                        raise DivergenceError(f"{exc}; training stopped (on_nan = {cfg.train.on_nan}), "
                                              f"{_last_good(self.out, self.checkpoint_step)}", step=exc.step,
                                              network=exc.network, loss=exc.loss, values=exc.values) from None
                    self._rollback(exc, log)
                    continue
                if s % cfg.sample_every == 0 or s == total:
                    on_root(self.save_samples, s)
        self._check_agreement(f"step {tr.step_count}")
        on_root(self.save_checkpoint)
        if root is None:
            return _write_results(self.out, cfg, tr)
        # rank 0 evaluates alone (however long that takes: no watchdog limit); the others get its metrics
        return w.bcast(root(_write_results, self.out, cfg, tr, root_only=True, limit=None))

    def _check_agreement(self, where: str) -> None:
        """Several processes: the ranks compare every parameter and buffer of G and D (one digest each);
        :class:`~npgan.distributed.ReplicaMismatchError` names the first that differs. One process: nothing."""
        w = distributed.world()
        if w.size > 1:
            w.check_agreement([(f"{n}/{k}", v) for n, m in (("G", self.G), ("D", self.D))
                               for k, v in m.state_dict().items()], where)

    def _rollback(self, exc: DivergenceError, log: Callable[[str], None]) -> None:
        """Reload the last checkpoint and halve the learning rate (on_nan = "rollback"). Several processes: rank 0
        decides and reloads, the others take its state (:func:`_share_state`)."""
        tr = self.trainer
        path = self.out / CHECKPOINT
        scale = tr.lr_scale * 0.5

        def reload() -> None:
            if self.rollbacks >= MAX_ROLLBACKS or not path.is_file():
                why = (f"gave up after {self.rollbacks} rollbacks" if path.is_file()
                       else f"there is no checkpoint in {self.out} to roll back to")
                raise DivergenceError(f"{exc}; {why}", step=exc.step, network=exc.network, loss=exc.loss,
                                      values=exc.values) from None
            self.load_checkpoint(path)

        w = distributed.world()
        if w.size > 1:
            w.run(reload, root_only=True)
            _share_state(w, self)
        else:
            reload()
        tr.lr_scale = scale
        self.rollbacks += 1
        if w.is_root:
            self._restore_history(log)
        lr = self.cfg.train.schedule(self.cfg.train.lr, self.cfg.train.lr_final, tr.step_count) * scale
        log(f"{exc}; rolled back to the checkpoint of step {tr.step_count} and halved the learning rate "
            f"(now {scale:g} x the schedule: lr = {lr:.3g}; rollback {self.rollbacks} of at most {MAX_ROLLBACKS})")


def _share_state(w: distributed.World, run: Run) -> None:
    """Several processes: every rank takes rank 0's training state (weights, buffers, optimizers, the random
    stream, the step and the trainer's counters, the run's length) by one broadcast, after rank 0 loaded a
    checkpoint; the arrays travel as host arrays (the checkpoint's own packing, :func:`_run_state`)."""
    tr = run.trainer
    state = None
    if w.is_root:
        arrays, meta = _run_state(run.cfg, run.G, run.D, run.opt_g, run.opt_d, tr, run.total_steps)
        state = ({k: backend.to_numpy(v) for k, v in arrays.items()}, meta,
                 (run.total_steps, run.stop_at, run.checkpoint_step))
    arrays, meta, (total, stop_at, at) = w.bcast(state)
    if not w.is_root:
        def apply() -> None:
            st = unpack_state("rank 0's state", arrays, meta, nets=("G", "D"), opts=("opt_g", "opt_d"))
            apply_state("rank 0's state", st, {"G": run.G, "D": run.D}, {"opt_g": run.opt_g, "opt_d": run.opt_d})
            tr.step_count, tr.lr_scale, tr.skipped = st.step, st.lr_scale, st.skipped
            run.total_steps, run.stop_at, run.checkpoint_step = total, stop_at, at
        w.run(apply)
    else:
        w.run(lambda: None)


def _resume_other_ranks(cls: type[Run], w: distributed.World, run: Run | None, out: Path) -> Run:
    """:meth:`Run.resume` with several processes, after rank 0 resumed (``run``; None on the others): the others
    build the run from rank 0's configuration (a broadcast: no rank but 0 reads the directory), then every rank
    takes rank 0's state. A failure on any rank is raised on every rank, and rank 0 then releases the lock."""
    cfg_dict = w.bcast(run.cfg.to_dict() if w.is_root else None)
    try:
        run = w.run(lambda: run if w.is_root else cls(RunConfig.from_dict(cfg_dict), out))
        _share_state(w, run)
    except BaseException:
        if run is not None:
            run.close()
        raise
    return run


#: the files a writer (train, resume) replaces or appends to in a run directory
_WRITTEN = (CONFIG, HISTORY, CHECKPOINT, METRICS, "losses.png")


def _check_run_files(out: Path) -> None:
    """Before a writer writes anything in ``out``: each file it replaces or appends to is absent or a regular file
    (never a symlink, whose target or link would be replaced; never a device or FIFO), and ``samples`` is absent
    or a directory (not a symlink to one); else one :class:`~npgan.errors.FileKindError` line naming it."""
    for name in _WRITTEN:
        check_target(out / name)
    samples = out / "samples"
    if samples.is_symlink() or (samples.exists() and not samples.is_dir()):
        what = f"a symlink (to {os.readlink(samples)})" if samples.is_symlink() else "not a directory"
        raise FileKindError(f"{samples} is {what}; a run writes its pictures into a directory of its own")


def _refuse_existing_run(out: Path, exists: Callable[[Path], bool]) -> None:
    if any(exists(out / f) for f in (CONFIG, CHECKPOINT, HISTORY)):
        raise RunError(f"--out {out} already holds a run; resume it with 'npgan resume {out}' "
                       "or choose another directory")


def _check_new_run(cfg: RunConfig, out: Path) -> Path:
    """For :meth:`Run.create`: the config validated and ``out`` checked, before anything is built or written;
    a ``--model`` file's SHA-256 is recorded in ``cfg``."""
    cfg.validate()
    if os.path.islink(out) and not out.is_dir():
        raise RunError(f"--out {out} is a symlink to {os.readlink(out)}, which is not a directory (a dangling or "
                       "looping link)")
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any((out / f).exists() for f in (CONFIG, CHECKPOINT, HISTORY)):
        check_unlocked(out)  # a writer at work there: name it (writes nothing)
        _refuse_existing_run(out, Path.exists)
    if out.is_dir():
        _check_run_files(out)
    if cfg.data == "mnist" and not cfg.data_dir:
        raise RunError("the MNIST presets need --data-dir DIR (a folder with the four MNIST IDX files)")
    if cfg.model == "custom":
        path = model_file(cfg.model_build)
        cfg.model_sha256 = file_sha256(path) if path is not None else ""
    return out


def _last_good(out: Path, step: int | None) -> str:
    """The end of a refusal's message: where the last good checkpoint is (``step``: its step, when known)."""
    path = out / CHECKPOINT
    if not path.is_file():
        return f"there is no checkpoint in {out}"
    return f"the last good checkpoint {path}{f' (step {step})' if step is not None else ''} is intact"


def _run_state(cfg: RunConfig, G: Any, D: Any, opt_g: Any, opt_d: Any, trainer: Trainer,
               total_steps: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a run's checkpoint holds (:func:`npgan.run.checkpoint.pack_state`): the networks, the optimizers, the
    step, the RNG, the trainer's counters and, when a resume extended the run, its new length."""
    tr = trainer
    arrays, meta = pack_state({"G": G, "D": D}, {"opt_g": opt_g, "opt_d": opt_d}, step=tr.step_count,
                              arch=arch_summary(G, D), arch_hash=cfg.arch_hash(), config=cfg.to_dict(),
                              rng=backend.get_rng_state(), lr_scale=tr.lr_scale, skipped=tr.skipped)
    if total_steps != cfg.train.steps:
        meta["total_steps"] = total_steps  # a resume extended the run beyond config.toml's steps
    return arrays, meta


def _save_samples(out: Path, cfg: RunConfig, x: Tensor, step: int) -> None:
    path = out / "samples" / f"step_{step:06d}.png"
    with writing(path.parent):
        path.parent.mkdir(exist_ok=True)
    if path.parent.is_symlink():  # made one meanwhile: never write through it
        _check_run_files(out)
    with writing(path):
        plots.samples(backend.to_numpy(x.data), cfg.data, path, title=f"{cfg.data}, step {step}")


def _write_results(out: Path, cfg: RunConfig, trainer: Trainer) -> dict[str, Any]:
    """At the end of training: losses.png, and metrics.json with the step and :func:`evaluate`'s metrics."""
    with writing(out / "losses.png"):
        plots.loss_curves(read_history(out / HISTORY), out / "losses.png")
    result = {"step": trainer.step_count, **{k: _jsonable(v) for k, v in evaluate(cfg, trainer).items()}}
    with writing(out / METRICS):
        atomic_write_text(out / METRICS, json.dumps(result, indent=2) + "\n")
    return result


def _session_length(total: int, at: int, steps: int | None, restretch: bool) -> tuple[int, int | None]:
    """``resume --steps``: (the run's length, where this session stops or None) for a run of length ``total``
    whose checkpoint is at step ``at``.

    Beyond the run's length ``steps`` extends the run: the new length is recorded in the checkpoint
    (``total_steps``), config.toml is not rewritten, and the lr and λ schedules stay at their final values past
    their end (they were laid out over config.toml's ``train.steps``); below it, this session stops there and
    the run keeps its length. With ``restretch`` the schedules are laid out anew over ``steps`` (config.toml's
    ``train.steps`` becomes ``steps``: the learning rate jumps back up), which needs ``steps`` beyond ``at``.
    """
    if steps is None:
        return total, None
    if restretch and steps <= at:
        raise RunError(f"--restretch --steps {steps} must be beyond the checkpoint's step {at}")
    total = steps if restretch else max(total, steps)
    return total, (steps if steps < total else None)


def _resume_config(out: Path, steps: int | None, on_nan: str | None, device: str | None,
                   restretch: bool) -> tuple[RunConfig, RunConfig]:
    """For :meth:`Run.resume`: the arguments checked, and (the session's config, the config to write back);
    :class:`RunError` / :class:`CheckpointError` before anything is written. The model file is not looked at
    here (see :meth:`Run.resume`)."""
    if not out.is_dir():
        raise RunError(f"run directory {out} does not exist")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0):
        raise RunError(f"--steps must be a positive integer, got {steps!r}")
    if restretch and steps is None:
        raise RunError("--restretch needs --steps N (the new length of the schedules)")
    if device is not None:
        backend._parse_device(device)  # a bad name fails here, before anything is read or written
    check_checkpoint_file(out / CHECKPOINT)
    cfg = read_config(out / CONFIG)
    if on_nan is not None:
        cfg.train.on_nan = on_nan
        cfg.validate()
    if restretch:
        cfg.train.steps = steps
    file_cfg = dataclasses.replace(cfg, device=cfg.device)
    if device is not None:
        cfg.device = device
    return cfg, file_cfg


def _load_initial_weights(cfg: RunConfig, G: Any, D: Any) -> None:
    """Load ``cfg.init_g`` / ``cfg.init_d`` (safetensors) into G / D at step 0 and record each file's SHA-256.

    Keys and shapes are checked first (:func:`npgan.weights.load_into`, strict); a file whose SHA-256 differs
    from the one the config records (``npgan train --config`` of an earlier run) is refused.
    """
    for net, module in (("g", G), ("d", D)):
        path = getattr(cfg, f"init_{net}")
        if not path:
            continue
        try:
            load_into(module, path, strict=True)
        except WeightsError as exc:
            raise WeightsError(f"--init-{net} (the initial weights of {net.upper()}): {exc}") from None
        sha, recorded = file_sha256(path), getattr(cfg, f"init_{net}_sha256")
        if recorded and sha != recorded:
            raise RunError(f"--init-{net} {path} has changed since the config recorded it (sha256 "
                           f"{recorded[:12]}..., now {sha[:12]}...); clear init_{net}_sha256 to use it as is")
        setattr(cfg, f"init_{net}_sha256", sha)


def _check_model_file(cfg: RunConfig, allow_changed: bool, out: Path) -> bool:
    """For a ``--model`` run: refuse a model file whose SHA-256 differs from config.toml's, before running it,
    unless ``allow_changed`` (then ``cfg.model_sha256`` takes the new value). Returns whether it changed."""
    if cfg.model != "custom":
        return False
    path = model_file(cfg.model_build)
    sha = file_sha256(path) if path is not None else ""
    if sha == cfg.model_sha256:
        return False
    if not allow_changed:
        raise RunError(f"{out}: the model file {path} has changed since the run was created (sha256 "
                       f"{cfg.model_sha256[:12]}..., now {sha[:12]}...); restore it, or pass --allow-changed-model "
                       "(the checkpoint must still fit the architecture)")
    cfg.model_sha256 = sha
    return True


def read_models(run_dir: str | os.PathLike, allow_changed_model: bool = False,
                trust_model: bool = False) -> tuple[RunConfig, Any, Any, int]:
    """``(cfg, G, D, step)`` of a run, read as :func:`load_run_readonly` reads it (nothing written, no data set
    read, a ``--model`` file run only with ``trust_model``), leaving npgan's default dtype, device and random
    stream as they were (``npgan export``)."""
    dtype, device, rng = backend.get_default_dtype(), backend.get_device(), backend.get_rng_state()
    try:
        run = load_run_readonly(run_dir, allow_changed_model, trust_model)
    finally:
        backend.set_default_dtype(dtype)
        backend.set_device(device)
        backend.set_rng_state(rng)
    return run.cfg, run.G, run.D, run.step


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


def _progress_bar(total: int, initial: int) -> Any:
    """The training progress bar on stderr: moved every step (:func:`_advance`), so that its rate — seconds per
    step while a step takes longer than a second (tqdm's ``s/step``), else steps per second — shows from the
    first step on; its postfix (losses, D(x), D(G(z))) changes at each log interval. Made after step 0's
    checkpoint, so that its clock starts with the first step."""
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)


def _advance(bar: Any, step: int) -> None:
    """Show ``step`` on the bar: an update (rate and time left recomputed) forward; a rollback sets it back."""
    if step >= bar.n:
        bar.update(step - bar.n)
    else:
        bar.n = step
        bar.refresh()


class _Made:
    """What :meth:`Run.create` found before it made the run directory, so that :meth:`take_back` removes only
    what this run wrote: ``top``, the outermost directory it created (None: ``out`` existed), and ``before``,
    the paths (relative to ``out``) that were already there."""

    #: the files a run writes, relative to its directory (fnmatch patterns); nothing else is ever removed
    RUN_FILES = (CONFIG, HISTORY, CHECKPOINT, METRICS, "losses.png", LOCK_NAME, "*.npgan.tmp", "samples/step_*.png",
                 "samples/*.npgan.tmp")

    def __init__(self, top: Path | None, before: frozenset[str]) -> None:
        self.top, self.before = top, before

    @classmethod
    def survey(cls, out: Path) -> _Made:
        """What is in ``out`` now (its own entries and those of ``out/samples``: where a run writes)."""
        if out.is_dir():
            found = [p for d in (out, out / "samples") if d.is_dir() for p in d.iterdir()]
            return cls(None, frozenset(str(p.relative_to(out)) for p in found))
        top = out
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        return cls(top, frozenset())

    def take_back(self, out: Path) -> bool:
        """Remove the run files this run wrote in ``out``, then the directories it created if they are empty;
        returns whether ``out`` is gone. Never touches a path that was there before."""
        import fnmatch
        for sub in (out / "samples", out):
            if not sub.is_dir():
                continue
            for p in sub.iterdir():
                rel = str(p.relative_to(out))
                if rel not in self.before and not p.is_dir() and \
                        any(fnmatch.fnmatchcase(rel, pat) for pat in self.RUN_FILES):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
        with contextlib.suppress(OSError):
            if "samples" not in self.before:
                (out / "samples").rmdir()
        if self.top is None:
            return False
        d = out
        while True:
            try:
                d.rmdir()  # only when empty: something else in it keeps it
            except OSError:
                return not out.exists()
            if d == self.top:
                return True
            d = d.parent


def _postfix(r: dict[str, float]) -> str:
    s = f"loss_d={r['loss_d']:.3f} loss_g={r['loss_g']:.3f} D(x)={r['d_x']:.2f} D(G(z))={r['d_g_z']:.2f}"
    if not math.isnan(r["entropy"]):
        s += f" H={r['entropy']:.2f}"
    return s
