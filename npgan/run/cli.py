"""The ``npgan`` command line: train, resume, sample, info, export, download, study.

    npgan train --preset ring8 --out runs/r8
    npgan train --preset digits-dcgan --steps 500 --seed 3 --out runs/d
    npgan train --preset ring8 --wgan --out runs/w          # the Wasserstein GAN recipe (npgan.run.presets.WGAN)
    npgan train --preset ring8 --wgan-gp --out runs/wg      # WGAN-GP (npgan.run.presets.WGAN_GP)
    npgan train --preset ring8 --gp r1 --gp-weight 1 --gp-every 4 --out runs/r1   # a lazy R1 penalty
    npgan resume runs/r8 [--steps N [--restretch]]
    npgan sample runs/r8 --n 1000 --out samples.npy [--png samples.png]   # or --png alone
    npgan info [runs/r8]
    npgan export runs/r8 --net G --out g.safetensors   # weights for PyTorch (safetensors.torch.load_file)
    npgan train --preset ring8 --model my_gan.py:build --init-g g.safetensors --out runs/mine
    npgan download mnist|cifar10 DIR                        # SHA-256 checked; then --data-dir DIR
    npgan train --preset ring8 --keep-checkpoints --out runs/r8k && npgan study runs/r8k --out study/r8k
    npgan train --preset ring8 --optimizer extragradient --out runs/eg        # Extra-Adam (simultaneous steps)
    npgan train --preset ring8 --consensus 0.1 --out runs/co                  # consensus optimisation
    npgan train --preset shapes-dcgan --nproc 2 --out runs/s2  # one run on 2 processes (pip install "npgan[mpi]")
    mpiexec -n 8 npgan train --preset dcgan64 ...           # or srun -n 8 npgan train ...: one run on 8 ranks

Bad input prints one line on stderr naming the problem and exits with status 2; nothing in an existing run
directory is overwritten. So does an error of your ``--model`` code, found before anything is written (one
training step is tried on 2 samples) or raised at any later step (the line names your file and line; a run
directory this command created is taken back if it holds no checkpoint past step 0). Warnings are one line
``npgan: warning: ...``, each said once. No option may be abbreviated. Ctrl-C saves a checkpoint and exits with
status 130. One writer at a time: ``train`` and ``resume`` hold the run directory's lock
(:mod:`npgan.run.runlock`; a second writer exits 2 naming the holder's PID); ``sample`` and ``info`` only read
(no lock, nothing written: a read-only directory or a run in training is fine).

Exit status: 0 done; 2 bad input, an unusable file, or a batch too large for the machine's memory (found before
training starts); 3 training diverged (a non-finite loss or gradient with ``--on-nan stop``, or rollbacks
exhausted): the last good checkpoint is intact; 4 a file could not be written (e.g. disk full; the line names it):
a previous checkpoint is intact; 130 interrupted (checkpoint saved); 1 a bug in npgan (a traceback with no frame
of your --model code). With several processes (``--nproc N``, or an MPI launcher), rank 0 prints and writes; a
failure every rank meets gives every rank the same status, and one that a single rank meets ends all ranks through
``MPI_Abort`` with that status (:mod:`npgan.distributed`); the ranks comparing their parameters and finding a
difference exit 3.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import __version__, backend, distributed
from ..checks import cli_type, integer, real
from ..parallel import get_num_threads, set_num_threads

__all__ = ["main"]


class UsageError(ValueError):
    pass


def _path(option: str) -> Any:
    """An argparse ``type=`` for a path option: the empty string (which Path reads as the current directory) is
    refused in one line naming the option."""
    def convert(s: str) -> Path:
        if not s:
            raise argparse.ArgumentTypeError(f"{option} must name a path, got an empty string")
        return Path(s)
    convert.__name__ = option  # argparse names the type in some messages
    return convert


class _Parser(argparse.ArgumentParser):
    """argparse, with one-line errors and no abbreviations: ``--step 100`` is an unknown option, never --steps."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too; keep it short)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    from ..gan.config import LOSS_KINDS, MAX_D_STEPS, MAX_SIZE, MAX_STEPS, ON_NAN_ACTIONS, ORDERS, PENALTY_KINDS
    from ..kde import BANDWIDTH_RULES, check_bandwidth
    from .config import DATASETS, MAX_IMAGE_SIZE, MAX_SEED, OPTIMIZER_CHOICES
    from .presets import PRESETS, WGAN, WGAN_GP

    p = _Parser(prog="npgan", description="Train and study GANs with npgan.")
    p.add_argument("--version", action="version", version=f"npgan {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a GAN from a preset (and/or a TOML config)")
    t.add_argument("--preset", choices=list(PRESETS), help="starting configuration")
    t.add_argument("--config", type=_path("--config"), help="a config.toml (e.g. from an earlier run) to start from")
    t.add_argument("--steps", type=cli_type(integer, "--steps", 1, MAX_STEPS),
                   help="total training steps (default: the preset's)")
    t.add_argument("--batch-size", type=cli_type(integer, "--batch-size", 1, MAX_SIZE),
                   help="samples per batch (default: the preset's)")
    t.add_argument("--loss", choices=list(LOSS_KINDS),
                   help="GAN objective (default: the preset's; only the loss: for the WGAN recipe use --wgan)")
    w = WGAN["train"]
    t.add_argument("--wgan", action="store_true",
                   help=f"the Wasserstein GAN recipe (Arjovsky et al. 2017) on top of the preset: loss {w['loss']}, "
                        f"{WGAN['optimizer']}, constant lr {w['lr']:g}, {w['d_steps']} D steps per G step, D's weights "
                        "clipped to ±0.01; options given with it override it")
    wg = WGAN_GP["train"]
    t.add_argument("--wgan-gp", action="store_true",
                   help=f"the WGAN-GP recipe (Gulrajani et al. 2017) on top of the preset: loss {wg['loss']}, "
                        f"penalty {wg['gp']} with λ = {wg['gp_weight']:g}, {wg['d_steps']} D steps per G step, "
                        f"{WGAN_GP['optimizer']} constant lr {wg['lr']:g}, betas ({WGAN_GP['beta1']:g}, "
                        f"{WGAN_GP['beta2']:g}), no weight clipping; a critic with BatchNorm is refused; options "
                        "given with it override it")
    t.add_argument("--gp", metavar="{" + ",".join([*PENALTY_KINDS, "none"]) + "}",
                   help="gradient penalty on D: r1 = (γ/2)·E‖∇D(x)‖² at real data, r2 the same at fake data "
                        "(Mescheder et al. 2018), wgan-gp = λ·E(‖∇D(x̂)‖ − 1)² at interpolates; none switches "
                        "a preset's penalty off")
    t.add_argument("--gp-weight", type=cli_type(real, "--gp-weight", 0), metavar="W",
                   help="the penalty's weight: γ of (γ/2)·R1, λ of WGAN-GP (default 10)")
    t.add_argument("--gp-every", type=cli_type(integer, "--gp-every", 1, MAX_STEPS), metavar="K",
                   help="lazy regularisation: the penalty on every K-th D step, its weight times K (default 1)")
    t.add_argument("--optimizer", choices=OPTIMIZER_CHOICES,
                   help="both networks' optimizer (default: the preset's); extragradient = Extra-Adam (Gidel et al. "
                        "2019): adam with --extragradient")
    t.add_argument("--extragradient", action=argparse.BooleanOptionalAction, default=None,
                   help="simultaneous steps of both players with a look-ahead: one optimizer step to x', then the "
                        "step from x with the gradients at x' (Korpelevich 1976; with adam, Extra-Adam)")
    t.add_argument("--consensus", type=cli_type(real, "--consensus", 0), metavar="GAMMA",
                   help="consensus optimisation (Mescheder et al. 2017): simultaneous steps along v + GAMMA * J^T v, "
                        "v the game's vector field (a double backward a step); 0 = off")
    t.add_argument("--keep-checkpoints", action=argparse.BooleanOptionalAction, default=None,
                   help="keep a copy of every checkpoint in DIR/checkpoints/ (for npgan study)")
    t.add_argument("--d-steps", type=cli_type(integer, "--d-steps", 1, MAX_D_STEPS),
                   help="discriminator updates per generator update (default: the preset's)")
    t.add_argument("--entropy-weight", type=cli_type(real, "--entropy-weight", 0),
                   help="λ of the KDE entropy term (annealed to the preset's final value)")
    t.add_argument("--bandwidth", type=cli_type(check_bandwidth, "--bandwidth"),
                   help=f"KDE σ: a number, or {' | '.join(BANDWIDTH_RULES)}")
    t.add_argument("--lr", type=cli_type(real, "--lr", 0, low_open=True),
                   help="learning rate (the preset's decay keeps its ratio)")
    t.add_argument("--lr-final", type=cli_type(real, "--lr-final", 0, low_open=True), metavar="LR",
                   help="the learning rate of the last step, reached linearly from --lr (overrides the preset's)")
    t.add_argument("--device", help="cpu | gpu | gpu:N (default: $NPGAN_DEVICE, else the config's, cpu)")
    t.add_argument("--seed", type=cli_type(integer, "--seed", 0, MAX_SEED),
                   help="seed of all random draws: weights, batches, noise (default: the config's)")
    t.add_argument("--data", choices=list(DATASETS),
                   help="the training data (default: the preset's): folder = your images under --data-dir, "
                        "cifar10 = CIFAR-10's binary files in --data-dir, mnist = the MNIST IDX files in "
                        "--data-dir, digits = the 8x8 digits, shapes = generated coloured shapes (12 classes), "
                        "ring8 / grid25 = the 2-D mixtures")
    t.add_argument("--data-dir", help="the data's folder: your images (--data folder, any depth), CIFAR-10's "
                                      "binary files or the MNIST IDX files (get them with 'npgan download')")
    t.add_argument("--image-size", type=cli_type(integer, "--image-size", 1, MAX_IMAGE_SIZE),
                   help="side of the square images (resize of the shorter side + centre crop for a folder, "
                        "resize for cifar10 and mnist); the DCGAN needs 4*2^k (8, 16, 32, 64, 128, ...)")
    t.add_argument("--channels", type=int, choices=(1, 3), help="1 (grey) or 3 (RGB); a folder can be either")
    t.add_argument("--z-dim", type=cli_type(integer, "--z-dim", 1, MAX_SIZE),
                   help="size of the generator's noise z (nz)")
    t.add_argument("--width", type=cli_type(integer, "--width", 1, MAX_SIZE),
                   help="both networks' base width (ngf = ndf for the DCGAN, the hidden size for the MLPs)")
    t.add_argument("--d-width", type=cli_type(integer, "--d-width", 1, MAX_SIZE),
                   help="the discriminator's width alone (ndf; default: --width, else the preset's)")
    t.add_argument("--beta1", type=cli_type(real, "--beta1", 0, 1, high_open=True), help="Adam's beta1 (DCGAN: 0.5)")
    t.add_argument("--beta2", type=cli_type(real, "--beta2", 0, 1, high_open=True), help="Adam's beta2 (0.999)")
    t.add_argument("--order", choices=list(ORDERS),
                   help="d_first (default): each step updates D, then G against the new D; g_first: G first")
    t.add_argument("--reuse-fake", action=argparse.BooleanOptionalAction, default=None,
                   help="the G step reuses a D step's fake batch, as PyTorch's DCGAN example trains: one G forward "
                        "a step instead of two (default: the preset's)")
    t.add_argument("--on-nan", choices=list(ON_NAN_ACTIONS),
                   help="on a nan/inf loss or gradient: stop (default; exit 3), skip the step, or roll back to the "
                        "last checkpoint with the learning rate halved")
    t.add_argument("--out", required=True, type=_path("--out"), help="run directory (must not hold a run yet)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--threads", type=cli_type(integer, "--threads", 1, MAX_THREADS),
                   help="CPU threads per op (default: $NPGAN_NUM_THREADS, else the BLAS's thread count)")

    _add_weights_options(t)
    _add_distributed_options(t)

    r = sub.add_parser("resume", help="continue a run from its last checkpoint")
    r.add_argument("dir", type=_path("DIR"), help="run directory written by npgan train")
    r.add_argument("--steps", type=cli_type(integer, "--steps", 1, MAX_STEPS),
                   help="train to step N: beyond the run's end it extends the run with the final lr and λ; "
                        "before it, this session stops at N")
    r.add_argument("--restretch", action="store_true",
                   help="with --steps N beyond the end: lay the lr and λ schedules out anew over N steps "
                        "(written to config.toml) instead of keeping their final values")
    r.add_argument("--on-nan", choices=list(ON_NAN_ACTIONS), help="change the run's on_nan action")
    r.add_argument("--device", help="continue on this device (cpu | gpu | gpu:N) instead of the run's")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--threads", type=cli_type(integer, "--threads", 1, MAX_THREADS), help="CPU threads per op")
    _add_distributed_options(r)

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("dir", type=_path("DIR"), help="run directory to sample from")
    s.add_argument("--n", type=cli_type(integer, "--n", 1, MAX_SAMPLES), default=64,
                   help="number of samples (default 64)")
    s.add_argument("--out", type=_path("--out"), help="FILE.npy (--out, --png or both)")
    s.add_argument("--png", type=_path("--png"), help="a picture of the samples (grid or scatter)")
    _add_reader_options(s, "sample from")

    r.add_argument("--allow-changed-model", action="store_true",
                   help="resume a --model run whose model file changed since the run was created")

    e = sub.add_parser("export", help="write a run's G and/or D to a safetensors file (PyTorch's state_dict keys)")
    e.add_argument("dir", type=_path("DIR"), help="run directory to export from")
    e.add_argument("--net", choices=("G", "D", "both"), default="G",
                   help="which network (default G); both: one file, keys prefixed 'G.' and 'D.'")
    e.add_argument("--out", type=_path("--out"), required=True,
                   help="FILE.safetensors (not inside the run directory)")
    e.add_argument("--force", action="store_true", help="replace an existing --out file")
    _add_reader_options(e, "export")

    _add_study_parser(sub)

    i = sub.add_parser("info", help="version, device, array backend, BLAS; with DIR, that run's state (read-only)")
    i.add_argument("dir", type=_path("DIR"), nargs="?", help="a run directory")
    _add_reader_options(i, "check the weights of")
    dl = sub.add_parser("download", help="fetch MNIST or CIFAR-10 (binary version) into DIR, SHA-256 checked")
    dl.add_argument("dataset", choices=["mnist", "cifar10"],
                    help="mnist: the four IDX .gz files from its mirrors; cifar10: cifar-10-binary.tar.gz (170 MB)")
    dl.add_argument("dir", type=_path("DIR"), help="target folder (created); files already there and intact are kept")

    return p


#: ``npgan sample --n``: at most this many samples (a count that fits a run's memory checks and an .npy)
MAX_SAMPLES = 10**8
#: ``--threads``: at most this many (a thread per op chunk; more than any machine's cores)
MAX_THREADS = 1024


def _add_reader_options(p: argparse.ArgumentParser, verb: str) -> None:
    """--trust-model and --allow-changed-model of the commands that read a run (sample, export, info)."""
    p.add_argument("--trust-model", action="store_true",
                   help=f"{verb} a run whose networks come from its own --model file: that file's code is run "
                        "(never without this option; a run directory is data)")
    p.add_argument("--allow-changed-model", action="store_true",
                   help="with --trust-model: accept a model file that changed since the run was created")


def _add_study_parser(sub: Any) -> None:
    from ..game import BATCHNORM_MODES, WHICH
    from ..gan.config import MAX_SIZE, MAX_STEPS
    st = sub.add_parser("study", help="the spectrum of the game through a run's checkpoints: J's top eigenvalues, "
                                      "each player's Hessian extremes, path angles (PNGs and a JSON)")
    from .config import MAX_SEED
    from .study import MAX_EIGENVALUES, MAX_RESTARTS
    st.add_argument("dir", type=_path("DIR"),
                    help="run directory (keep its checkpoints with npgan train --keep-checkpoints)")
    st.add_argument("--out", type=_path("--out"), required=True,
                    help="output directory (not inside the run directory)")
    st.add_argument("--k", type=cli_type(integer, "--k", 1, MAX_EIGENVALUES), default=20,
                    help="eigenvalues of J per checkpoint (20)")
    st.add_argument("--which", choices=list(WHICH), default="LM",
                    help="which eigenvalues: LM largest |λ| (default), SR smallest Re λ, LR largest Re λ, LI largest "
                         "|Im λ|")
    st.add_argument("--batch", type=cli_type(integer, "--batch", 1, MAX_SIZE),
                    help="size of the fixed batch (default: the run's batch size)")
    st.add_argument("--seed", type=cli_type(integer, "--seed", 0, MAX_SEED), default=0,
                    help="picks the fixed batch and the solvers' start vectors (0)")
    st.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                    help="the analysis's precision (default float64: the weights cast up)")
    st.add_argument("--batchnorm", choices=list(BATCHNORM_MODES), default="batch",
                    help="batch norm with the batch's statistics as in training (default) or running ones (eval)")
    st.add_argument("--limit", type=cli_type(integer, "--limit", 2, MAX_STEPS),
                    help="at most N checkpoints, evenly spaced, the first and the last included")
    st.add_argument("--no-hessians", action="store_true", help="skip each player's Hessian extremes")
    st.add_argument("--max-restarts", type=cli_type(integer, "--max-restarts", 0, MAX_RESTARTS), default=60,
                    help="the eigen-solvers' restart budget (60); unconverged values are reported as such")
    st.add_argument("--device", help="cpu | gpu | gpu:N (default: the run's)")
    st.add_argument("--force", action="store_true", help="replace a study already in --out")
    _add_reader_options(st, "study")
    st.add_argument("--no-progress", action="store_true", help="no progress bar")
    st.add_argument("--threads", type=cli_type(integer, "--threads", 1, MAX_THREADS), help="CPU threads per op")


def cmd_study(a: argparse.Namespace) -> int:
    """``npgan study DIR --out OUT``: :func:`npgan.run.study.study`; prints the claims (numbers) on stdout."""
    from .study import STUDY_FILES, StudyOptions, study
    _set_threads(a)
    opts = StudyOptions(k=a.k, which=a.which, batch=a.batch or 0, seed=a.seed, dtype=a.dtype,
                        batchnorm=a.batchnorm, limit=a.limit or 0, hessians=not a.no_hessians,
                        max_restarts=a.max_restarts, device=a.device)
    result = study(a.dir, a.out, opts, trust_model=a.trust_model, allow_changed_model=a.allow_changed_model,
                   force=a.force, progress=not a.no_progress)
    for line in result["claims"]:
        print(line)
    print(f"wrote {', '.join(STUDY_FILES)} to {a.out}", file=sys.stderr)
    return 0


# ============================================================================ weights in and out
def _add_weights_options(t: argparse.ArgumentParser) -> None:
    t.add_argument("--model", metavar="FILE.py:build",
                   help="your own networks: build(config) in FILE.py (or module:function) returns (G, D) made of "
                        "npgan modules; FILE.py's folder is put first on the import path while it is imported and "
                        "build() runs, so it can import helper modules beside it; the run records the file's "
                        "SHA-256; one step's forward and backward (with the double backward --gp needs) is tried "
                        "on 2 samples before anything is written")
    t.add_argument("--init-g", type=_path("--init-g"), metavar="FILE",
                   help="start G from these weights (safetensors: from npgan export or PyTorch's save_file); "
                        "give the matching --init-d too: a trained G against a fresh D loses its modes within a "
                        "few steps (a warning says so)")
    t.add_argument("--init-d", type=_path("--init-d"), metavar="FILE",
                   help="start D from these weights (as --init-g)")


def _apply_weights_args(a: argparse.Namespace, cfg: Any) -> None:
    """--model, --init-g, --init-d into ``cfg`` (paths made absolute, so that resume works from anywhere)."""
    if a.model is not None:
        from .presets import model_file, split_spec
        where, fn, is_file = split_spec(a.model)
        model_file(a.model)  # a missing file or module: one line now
        cfg.model = "custom"
        cfg.model_build = f"{Path(where).resolve()}:{fn}" if is_file else f"{where}:{fn}"
        cfg.model_sha256 = ""
    for net in ("g", "d"):
        path = getattr(a, f"init_{net}")
        if path is not None:
            if not path.is_file():
                raise UsageError(f"--init-{net} {path} does not exist" if not path.exists()
                                 else f"--init-{net} {path} is not a file")
            setattr(cfg, f"init_{net}", str(path.resolve()))
            setattr(cfg, f"init_{net}_sha256", "")
    cfg.validate()


# ============================================================================ several processes
def _add_distributed_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc", type=cli_type(integer, "--nproc", 1), metavar="N",
                   help="train on N processes of this machine, each on its share of every batch with one BLAS "
                        "thread (starts mpiexec; needs pip install \"npgan[mpi]\"); on a cluster start "
                        "'mpiexec -n N npgan ...' or 'srun -n N npgan ...' instead")
    p.add_argument("--check-every", type=cli_type(integer, "--check-every", 1), metavar="K",
                   help="with several processes: compare the ranks' parameters every K steps (and before each "
                        "checkpoint; default 100)")


def _without_nproc(args: list[str]) -> list[str]:
    """The command line less its ``--nproc N`` (or ``--nproc=N``, or an abbreviation argparse accepted)."""
    out, skip = [], False
    for tok in args:
        if skip:
            skip = False
            continue
        name = tok.split("=", 1)[0]
        if len(name) > 3 and "--nproc".startswith(name) and name.startswith("--n"):
            skip = "=" not in tok
            continue
        out.append(tok)
    return out


def _mpiexec() -> str | None:
    """The mpiexec of the MPI that mpi4py uses: the one beside this Python (the mpich wheel installs it there),
    else the first on PATH."""
    import shutil
    here = Path(sys.executable).parent
    for name in ("mpiexec", "mpirun"):
        if (here / name).is_file() and os.access(here / name, os.X_OK):
            return str(here / name)
    return shutil.which("mpiexec") or shutil.which("mpirun")


def _parent_death_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
    """In mpiexec's process: its own process group (a terminal's Ctrl-C reaches npgan, which forwards it once),
    and SIGTERM when npgan dies (Linux), so that no rank outlives the command that started it."""
    os.setpgid(0, 0)
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def launch(a: argparse.Namespace, argv: list[str] | None) -> int:
    """``--nproc N`` (N > 1): this command on N processes of this machine under the mpiexec of mpi4py's MPI; the
    exit status is mpiexec's. Each rank runs one BLAS thread (``OPENBLAS_NUM_THREADS=1`` and the like) unless
    ``--threads`` or those variables say otherwise. Ctrl-C and SIGTERM are passed on to mpiexec once, which passes
    them to every rank (the run then stops after the same step on all of them, with a checkpoint)."""
    if distributed.launched_size() > 1:
        raise UsageError(f"--nproc {a.nproc} under an MPI launcher that already started "
                         f"{distributed.launched_size()} processes: give one or the other")
    try:
        import mpi4py  # noqa: F401 - only whether it is there; MPI starts in the ranks
    except ImportError:
        raise UsageError(f"--nproc {a.nproc} needs mpi4py and an MPI: {distributed.INSTALL_HINT}") from None
    exe = _mpiexec()
    if exe is None:
        raise UsageError(f"--nproc {a.nproc} needs an mpiexec (none beside {sys.executable} or on PATH): "
                         f"{distributed.INSTALL_HINT}")
    env = dict(os.environ)
    if a.threads is None and not any(env.get(k) for k in ("NPGAN_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                           "OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    args = _without_nproc(list(sys.argv[1:] if argv is None else argv))
    cmd = [exe, "-n", str(a.nproc), sys.executable, "-m", "npgan.run.cli", *args]
    child = subprocess.Popen(cmd, env=env, preexec_fn=_parent_death_signal)  # noqa: PLW1509
    previous = {}

    def forward(signum: int, frame: Any) -> None:
        child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, forward)
        except ValueError:  # not the main thread
            pass
    try:
        code = child.wait()
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
    return 128 - code if code < 0 else code


def _quiet_other_ranks() -> None:
    """Started as one of several processes (an MPI launcher's environment): ranks other than 0 print nothing;
    rank 0 speaks for the run (a failure one rank meets alone is still printed, :func:`_run_command`)."""
    if distributed.launched_size() > 1 and distributed.launched_rank() != 0:
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process


def _one_thread_per_rank(a: argparse.Namespace) -> None:
    """One of several processes: one npgan thread and one BLAS thread, unless ``--threads``,
    ``NPGAN_NUM_THREADS`` or the BLAS's own variables say otherwise (N ranks share the machine's cores; a rank
    never hands work to a sleeping thread). MPI itself starts with the run (:func:`npgan.distributed.world`)."""
    if distributed.launched_size() <= 1:
        return
    told = getattr(a, "threads", None) is not None or any(
        os.environ.get(k) for k in ("NPGAN_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    if not told:
        set_num_threads(1)
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(1, user_api="blas")  # stays for the process (not used as a context)
        except Exception:  # noqa: BLE001 - no threadpoolctl: the BLAS keeps its threads
            pass


def _rank_exit_code(exc: BaseException) -> int:
    """The exit status :func:`main` gives ``exc`` (for the abort of a failure one rank met alone)."""
    from ..errors import CheckpointWriteError, DivergenceError, WriteError
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, (DivergenceError, distributed.ReplicaMismatchError)):
        return 3
    if isinstance(exc, (CheckpointWriteError, WriteError)):
        return 4
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    return 2 if isinstance(exc, (MemoryError, ValueError, TypeError, OSError, RuntimeError)) else 1


def _run_command(a: argparse.Namespace) -> int:
    """The subcommand; with several processes, a failure this rank met alone (not raised on every rank, see
    :func:`npgan.distributed.raised_everywhere`) is printed with the rank and ends every rank (MPI_Abort): the
    others may be waiting in a collective that will never complete."""
    cmd = {"train": cmd_train, "resume": cmd_resume, "sample": cmd_sample, "info": cmd_info,
           "export": cmd_export, "download": cmd_download, "study": cmd_study}[a.cmd]
    try:
        return cmd(a)
    except BaseException as exc:
        w = distributed.started()
        if w is not None and w.size > 1 and not distributed.raised_everywhere(exc):
            print(f"npgan: rank {w.rank}: error: {type(exc).__name__}: {_one_line(exc)}; ending every rank",
                  file=sys.__stderr__, flush=True)
            w.abort(_rank_exit_code(exc))
        raise


def _distributed_note() -> str:
    """", N processes over MPI (...), buffers through ..." for the first line of a run on several processes."""
    w = distributed.world()
    return f", {w.describe()}" if w.size > 1 else ""


def cmd_export(a: argparse.Namespace) -> int:
    """Write G, D or both (keys 'G.…'/'D.…') with their buffers and a metadata block; never writes in the run."""
    from .. import weights
    from ..files import check_target
    from .experiment import read_models
    out = a.out
    if out.suffix != ".safetensors":
        raise UsageError(f"--out must name a .safetensors file, got {out}")
    check_target(out)  # a symlink (a loop too), device, FIFO or directory: refused before anything is read
    try:
        inside = a.dir.is_dir() and out.resolve().is_relative_to(a.dir.resolve())
    except (RuntimeError, OSError) as exc:  # a symlink loop on the way
        raise UsageError(f"--out {out}: {exc}") from None
    if inside:
        raise UsageError(f"--out {out} is inside the run directory {a.dir}; export never writes there")
    if os.path.lexists(out) and not a.force:
        raise UsageError(f"--out {out} already exists; pass --force to replace it")
    cfg, G, D, step = read_models(a.dir, allow_changed_model=a.allow_changed_model, trust_model=a.trust_model)
    meta = {"preset": cfg.preset, "step": str(step), "data": cfg.data, "model": cfg.model,
            "z_dim": str(cfg.train.z_dim), "dtype": cfg.dtype, "net": a.net}
    if cfg.model == "custom":
        meta.update(model_build=cfg.model_build, model_sha256=cfg.model_sha256)
    if a.net == "both":
        state = {f"{n}.{k}": v for n, m in (("G", G), ("D", D)) for k, v in m.state_dict().items()}
        meta.update(architecture=f"G: {G!r}\nD: {D!r}")
    else:
        net = G if a.net == "G" else D
        state = net.state_dict()
        meta.update(architecture=repr(net))
    out.parent.mkdir(parents=True, exist_ok=True)
    weights.save(state, out, meta)
    print(f"wrote {a.net} of {a.dir} (step {step}, {len(state)} tensors) to {out}", file=sys.stderr)
    return 0


def _set_given(target: Any, a: argparse.Namespace, fields: tuple) -> None:
    """``target.NAME = a.OPTION`` for each field, "NAME" or ("OPTION", "NAME"), whose option was given (not None)."""
    for f in fields:
        opt, name = (f, f) if isinstance(f, str) else f
        value = getattr(a, opt)
        if value is not None:
            setattr(target, name, value)


def _config_from_args(a: argparse.Namespace) -> Any:
    from .config import EXTRA_ADAM, read_config
    from .presets import make_config, use_wgan, use_wgan_gp

    if a.config is not None:
        cfg = read_config(a.config)
        if a.preset:
            cfg.preset = a.preset
    elif a.preset:
        cfg = make_config(a.preset)
    else:
        raise UsageError("train needs --preset NAME or --config FILE.toml")
    tr = cfg.train
    if a.wgan and a.wgan_gp:
        raise UsageError("--wgan (weight clipping) and --wgan-gp (gradient penalty) are two recipes; choose one")
    if a.wgan:
        use_wgan(cfg)
    if a.wgan_gp:
        use_wgan_gp(cfg)
    _set_given(tr, a, ("gp", "gp_weight", "gp_every", "loss", "steps", "batch_size", "d_steps", "bandwidth", "z_dim",
                       "order", "on_nan", "reuse_fake", "extragradient", "consensus"))
    _set_given(cfg, a, ("optimizer", "data", "data_dir", "image_size", "channels", ("width", "hidden"), "beta1",
                        "beta2", "keep_checkpoints"))
    if cfg.optimizer == EXTRA_ADAM:  # Extra-Adam: Adam, and the loop's look-ahead
        if a.extragradient is False:
            raise UsageError("--optimizer extragradient and --no-extragradient contradict each other")
        cfg.optimizer, tr.extragradient = "adam", True
    if a.width is not None and a.d_width is None:
        cfg.d_hidden = 0  # --width is ngf = ndf: D follows it unless --d-width says otherwise
    _set_given(cfg, a, (("d_width", "d_hidden"),))
    if tr.gp == "none":
        tr.gp = ""  # the config's spelling of no penalty
    if a.entropy_weight is not None:
        tr.entropy_weight = a.entropy_weight
        if tr.entropy_weight_final is not None and a.entropy_weight == 0:
            tr.entropy_weight_final = 0.0
    if a.lr is not None:
        if tr.lr_final is not None and a.lr_final is None:
            scaled = tr.lr_final * a.lr / tr.lr
            if not scaled > 0:
                raise UsageError(f"--lr {a.lr!r} is too small for the preset's decay: its final learning rate "
                                 f"({tr.lr_final:g} / {tr.lr:g} of --lr) underflows to 0; give --lr-final too, or a "
                                 "larger --lr")
            tr.lr_final = scaled
        tr.lr = a.lr
    if a.lr_final is not None:
        tr.lr_final = a.lr_final
    if a.device is not None:
        cfg.device = a.device
    elif os.environ.get("NPGAN_DEVICE"):
        cfg.device = os.environ["NPGAN_DEVICE"]
    if a.seed is not None:
        if a.seed < 0:
            raise UsageError(f"--seed must be >= 0, got {a.seed}")
        cfg.seed = a.seed
    cfg.log_every = min(cfg.log_every, tr.steps)
    cfg.validate()
    if cfg.data in ("digits", "mnist"):
        _check_batch_vs_data(cfg)
    return cfg


def _check_batch_vs_data(cfg: Any) -> None:
    if cfg.data == "digits":
        from ..data.digits import load_digits
        n = load_digits(split="train")[0].shape[0]
        if cfg.train.batch_size > n:
            raise UsageError(f"batch size {cfg.train.batch_size} is larger than the data set ({n} digits images)")


def _print_metrics(m: dict[str, Any]) -> None:
    keys = [k for k in m if not isinstance(m[k], (list, dict))]
    print("metrics: " + ", ".join(f"{k}={m[k]:.4g}" if isinstance(m[k], float) else f"{k}={m[k]}"
                                  for k in keys))


def _set_threads(a: argparse.Namespace) -> None:
    if a.threads is not None:
        set_num_threads(a.threads)


#: What starting one network from trained weights and the other from scratch did to ring8, printed by
#: :func:`_warn_one_sided_init`. Measured: the ring8 preset trained 12,000 steps with seed 0 (8/8 modes, 97.6 %
#: high-quality samples), its G and D exported, then ``npgan train --preset ring8 --steps N --seed S`` for S = 0, 1
#: with --init-g, --init-d, both or neither (--threads 1, a shared 2-core machine). --init-g alone, N = 5: 1/8 and
#: 5/8 modes, 0.04 % and 0.52 % high-quality (both: 8/8, 66 % and 63 %; by N = 2,000 G alone is back at 8/8).
#: --init-d alone, N = 2,000: 1/8 modes in both seeds (reverse KL log 8), where neither gave 8/8 (71 %, 77 %).
ONE_SIDED_INIT = {
    "g": "the loaded G trains against a fresh D, which undoes it at first (a trained ring8 G fell from 8/8 modes to "
         "1/8 and 5/8 within 5 steps, seeds 0 and 1; with its D it kept 8/8)",
    "d": "a fresh G trains against the loaded D, which collapses it (ring8, seeds 0 and 1: 1 of 8 modes after 2,000 "
         "steps, where G and D both fresh covered 8/8)",
}


def _warn_one_sided_init(cfg: Any) -> None:
    """One line on stderr when only one network starts from a file (``--init-g`` without ``--init-d``, or the
    reverse, from the options or a --config), saying what :data:`ONE_SIDED_INIT` measured. Training goes on: a
    fresh partner can be what you want (a new D to fine-tune against), but the warning says what it costs."""
    for net, other in (("g", "d"), ("d", "g")):
        if getattr(cfg, f"init_{net}") and not getattr(cfg, f"init_{other}"):
            print(f"npgan: warning: --init-{net} without --init-{other}: {ONE_SIDED_INIT[net]}; give --init-{other} "
                  f"the {other.upper()} trained with it to keep both", file=sys.stderr, flush=True)


def cmd_train(a: argparse.Namespace) -> int:
    from .experiment import Run
    _set_threads(a)
    cfg = _config_from_args(a)
    _apply_weights_args(a, cfg)
    with Run.create(cfg, a.out) as run:  # holds the writer lock until done
        _warn_one_sided_init(cfg)  # once the run is accepted: a refusal stays one line
        tr = cfg.train
        if a.check_every is not None:
            run.check_every = a.check_every
        print(f"npgan {__version__}: training preset {cfg.preset} ({cfg.data}, {cfg.model}, loss {tr.loss}, "
              f"{cfg.optimizer} lr {tr.lr:g}, {tr.d_steps} D step{'s' if tr.d_steps > 1 else ''} per G step"
              f"{f', penalty {tr.gp} weight {tr.gp_weight:g} every {tr.gp_every}' if tr.gp else ''}"
              f"{', extragradient' if tr.extragradient else ''}"
              f"{f', consensus {tr.consensus:g}' if tr.consensus > 0 else ''}) "
              f"for {tr.steps} steps on {backend.get_device()}{_distributed_note()} -> {a.out}", file=sys.stderr)
        _print_metrics(run.train(progress=not a.no_progress))
    return 0


def cmd_resume(a: argparse.Namespace) -> int:
    from .experiment import Run
    _set_threads(a)
    with Run.resume(a.dir, steps=a.steps, on_nan=a.on_nan, device=a.device,
                    restretch=getattr(a, "restretch", False),
                    allow_changed_model=a.allow_changed_model) as run:
        at, target = run.trainer.step_count, run.target_step
        if at > target:
            print(f"{a.dir} is at step {at}, past --steps {target}; nothing to do", file=sys.stderr)
            return 0
        finished = distributed.world().bcast(at == target and (a.dir / "metrics.json").exists())  # rank 0's disk
        if finished:
            print(f"{a.dir} has finished its {target} steps; pass --steps N to train further", file=sys.stderr)
            return 0
        if a.check_every is not None:
            run.check_every = a.check_every
        print(f"resuming {a.dir} at step {at} of {target} on {backend.get_device()}{_distributed_note()}",
              file=sys.stderr)
        _print_metrics(run.train(progress=not a.no_progress))
    return 0


def _check_output(path: Path, option: str) -> None:
    """Refuse (UsageError) an output path whose directory is missing or that names a directory, a symlink, a
    device, FIFO or socket (:func:`npgan.files.check_target`), before anything is read or written; the message
    names the path given, never a temporary file."""
    from ..files import check_target
    parent = path.parent
    if not parent.is_dir():
        what = "does not exist" if not parent.exists() else "is not a directory"
        raise UsageError(f"{option} {path}: the directory {parent} {what}")
    if path.is_dir() and not path.is_symlink():
        raise UsageError(f"{option} {path} is a directory; give a file name")
    try:
        check_target(path)
    except ValueError as exc:
        raise UsageError(f"{option} {exc}") from None


def _check_sample_memory(run: Any, n: int) -> None:
    """Refuse (UsageError naming --n) a sample count whose noise, G's activations and the samples' host copies
    would not fit in the available memory: twice :func:`npgan.run.memory.estimate_eval_bytes` (the .npy buffer and
    the host copy of G's output come on top of G's activations)."""
    from . import memory
    from .machine import format_bytes
    avail = memory.available_memory()
    if avail is None:
        return
    need = 2 * memory.estimate_eval_bytes(run.G, run.cfg.train, n)
    if need > 0.9 * avail:
        fit = max(int(0.9 * avail / (need / n)), 1)
        raise UsageError(f"--n {n} needs about {format_bytes(need)} of memory (noise, G's activations and "
                         f"the samples), but only {format_bytes(avail)} is available on "
                         f"{backend.get_device()}; use --n of at most {fit}")


def cmd_sample(a: argparse.Namespace) -> int:
    from ..files import atomic_write_bytes
    from .experiment import load_run_readonly, writing
    if a.out is None and a.png is None:
        raise UsageError("sample needs --out FILE.npy, --png FILE.png or both")
    if a.out is not None:
        if a.out.suffix != ".npy":
            raise UsageError(f"--out must name a .npy file, got {a.out}")
        _check_output(a.out, "--out")
    if a.png is not None:
        _check_output(a.png, "--png")
    # writes nothing in the run directory; runs no code of the run unless --trust-model
    run = load_run_readonly(a.dir, allow_changed_model=a.allow_changed_model, trust_model=a.trust_model)
    _check_sample_memory(run, a.n)
    x = backend.to_numpy(run.trainer.sample(n=a.n).data)  # fresh draws from the restored stream
    if a.out is not None:
        buf = io.BytesIO()
        backend.np.save(buf, x, allow_pickle=False)
        with writing(a.out):
            atomic_write_bytes(a.out, buf.getvalue())
    if a.png is not None:
        from ..eval import plots
        with writing(a.png):
            plots.samples(x, run.cfg.data, a.png)
    where = " and ".join(str(f) for f in (a.out, a.png) if f is not None)
    print(f"wrote {a.n} samples of shape {x.shape[1:]} to {where}", file=sys.stderr)
    return 0


def cmd_download(a: argparse.Namespace) -> int:
    """``npgan download mnist|cifar10 DIR``: :func:`npgan.data.digits.download_mnist` or
    :func:`npgan.data.cifar.download_cifar10` (streamed to a temporary file, SHA-256 checked, renamed into place)."""
    from ..data.cifar import download_cifar10
    from ..data.digits import download_mnist
    print(f"downloading {a.dataset} into {a.dir} (files already there and intact are kept)", file=sys.stderr)
    if a.dataset == "mnist":
        paths = download_mnist(a.dir)
    else:
        paths = [download_cifar10(a.dir)]
    for p in paths:
        print(p)
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    info = {"npgan": __version__, "device": backend.get_device(), "array_backend": backend.current_xp().__name__,
            "numpy": backend.np.__version__, "blas": backend.blas_info(),
            "cupy": getattr(backend.cupy, "__version__", None), "gpu_available": backend.gpu_available(),
            "default_dtype": str(backend.get_default_dtype()), "malloc_tuned": backend.malloc_tuned(),
            "threads": get_num_threads()}
    if getattr(a, "dir", None) is not None:
        from .experiment import load_run_readonly, read_run_summary
        from .runlock import holder
        summary = read_run_summary(a.dir)  # config and checkpoint checked; nothing built, nothing run
        cfg, step, total = summary["cfg"], summary["step"], summary["total_steps"]
        checked = "yes"
        if cfg.model != "custom" or a.trust_model:  # the weights against the networks (a --model file only if told)
            run = load_run_readonly(a.dir, allow_changed_model=a.allow_changed_model, trust_model=a.trust_model)
            step, total = run.step, run.total_steps
        else:
            checked = f"no: the networks come from {cfg.model_build!r} (pass --trust-model to run it and check them)"
        info = {"run": str(a.dir), "preset": cfg.preset, "data": cfg.data, "model": cfg.model,
                "step": step, "total_steps": total, "schedule_steps": cfg.train.steps,
                "finished": step >= total and (a.dir / "metrics.json").is_file(),
                "weights_checked": checked, "last_writer_pid": holder(a.dir).get("pid")}
    for k, v in info.items():
        print(f"{k}: {v}")
    return 0


def _one_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """While inside, a warning prints as one line ``npgan: warning: MESSAGE`` on stderr, once per message
    (Python's format adds the file, line and source line of the warn() call, and repeats a warning whose registry
    was reset); which warnings show is left to the filters (``-W``, ``PYTHONWARNINGS``)."""
    seen: set[str] = set()

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        text = str(message).strip()
        text = text.splitlines()[0] if text else category.__name__
        if text not in seen:
            seen.add(text)
            print(f"npgan: warning: {text}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so that a command stopped by ``kill`` runs its cleanup
    (a download's or an image cache's temporary files are removed; training saves a checkpoint, as it does for
    Ctrl-C). The previous handler comes back after; not in the main thread, nothing changes."""
    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    with _one_line_warnings(), _sigterm_as_ctrl_c():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    from ..errors import CheckpointError, CheckpointWriteError, DivergenceError, WriteError
    from .experiment import Interrupted
    try:
        _quiet_other_ranks()  # before parsing: a bad option is printed by rank 0 alone
        a = build_parser().parse_args(argv)
        if (getattr(a, "nproc", None) or 1) > 1:
            return launch(a, argv)
        _one_thread_per_rank(a)
        return _run_command(a)
    except Interrupted as exc:
        print(f"npgan: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("npgan: interrupted", file=sys.stderr)
        return 130
    except DivergenceError as exc:
        if os.environ.get("NPGAN_DEBUG"):
            raise
        print(f"npgan: diverged: {_one_line(exc)}", file=sys.stderr)
        return 3
    except (CheckpointWriteError, WriteError) as exc:
        if os.environ.get("NPGAN_DEBUG"):
            raise
        print(f"npgan: error: {_one_line(exc)}", file=sys.stderr)
        return 4
    except MemoryError as exc:
        if os.environ.get("NPGAN_DEBUG"):
            raise
        msg = _one_line(exc) if str(exc) else "out of memory; try a smaller --batch-size"
        print(f"npgan: error: {msg}", file=sys.stderr)
        return 2
    except distributed.ReplicaMismatchError as exc:
        if os.environ.get("NPGAN_DEBUG"):
            raise
        print(f"npgan: error: {_one_line(exc)}", file=sys.stderr)
        return 3
    except (UsageError, ValueError, TypeError, CheckpointError, backend.DeviceError, FileNotFoundError,
            PermissionError, OSError, distributed.DistributedError) as exc:
        if os.environ.get("NPGAN_DEBUG"):
            raise
        print(f"npgan: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:  # pragma: no cover - covered by ValueError
        print(f"npgan: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
