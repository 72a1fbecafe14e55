"""The ``npgan`` command line: train, resume, sample, info, export, download, study.

    npgan train --preset ring8 --out runs/r8
    npgan train --preset digits-dcgan --steps 500 --seed 3 --out runs/d
    npgan train --preset ring8 --wgan --out runs/w          # the Wasserstein GAN recipe (npgan.run.presets.WGAN)
    npgan train --preset ring8 --wgan-gp --out runs/wg      # WGAN-GP (npgan.run.presets.WGAN_GP)
    npgan train --preset ring8 --gp r1 --gp-weight 1 --gp-every 4 --out runs/r1   # a lazy R1 penalty
    npgan resume runs/r8 [--steps N [--restretch]]
    npgan sample runs/r8 --n 1000 --out samples.npy [--png samples.png]
    npgan info [runs/r8]
    npgan export runs/r8 --net G --out g.safetensors   # weights for PyTorch (safetensors.torch.load_file)
    npgan train --preset ring8 --model my_gan.py:build --init-g g.safetensors --out runs/mine
    npgan download mnist|cifar10 DIR                        # SHA-256 checked; then --data-dir DIR
    npgan train --preset ring8 --keep-checkpoints --out runs/r8k && npgan study runs/r8k --out study/r8k
    npgan train --preset ring8 --optimizer extragradient --out runs/eg        # Extra-Adam (simultaneous steps)
    npgan train --preset ring8 --consensus 0.1 --out runs/co                  # consensus optimisation

Bad input prints one line on stderr naming the problem and exits with status 2; nothing in an existing run
directory is overwritten. Ctrl-C saves a checkpoint and exits with status 130. One writer at a time: ``train`` and
``resume`` hold the run directory's lock (:mod:`npgan.run.runlock`; a second writer exits 2 naming the holder's PID);
``sample`` and ``info`` only read (no lock, nothing written: a read-only directory or a run in training is fine).

Exit status: 0 done; 2 bad input, an unusable file, or a batch too large for the machine's memory (found before
training starts); 3 training diverged (a non-finite loss or gradient with ``--on-nan stop``, or rollbacks
exhausted): the last good checkpoint is intact; 4 a file could not be written (e.g. disk full; the line names it):
a previous checkpoint is intact; 130 interrupted (checkpoint saved).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from .. import __version__, backend
from ..checks import cli_type, integer, real
from ..parallel import get_num_threads, set_num_threads

__all__ = ["main"]


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too; keep it short)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    from ..gan.config import LOSS_KINDS, ON_NAN_ACTIONS, ORDERS, PENALTY_KINDS
    from ..kde import BANDWIDTH_RULES, check_bandwidth
    from .config import DATASETS, OPTIMIZERS
    from .presets import PRESETS, WGAN, WGAN_GP

    p = _Parser(prog="npgan", description="Train and study GANs with npgan.")
    p.add_argument("--version", action="version", version=f"npgan {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a GAN from a preset (and/or a TOML config)")
    t.add_argument("--preset", choices=list(PRESETS), help="starting configuration")
    t.add_argument("--config", type=Path, help="a config.toml (e.g. from an earlier run) to start from")
    t.add_argument("--steps", type=cli_type(integer, "--steps", 1), help="total training steps (default: the preset's)")
    t.add_argument("--batch-size", type=cli_type(integer, "--batch-size", 1),
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
    t.add_argument("--gp-every", type=cli_type(integer, "--gp-every", 1), metavar="K",
                   help="lazy regularisation: the penalty on every K-th D step, its weight times K (default 1)")
    t.add_argument("--optimizer", choices=[*OPTIMIZERS, "extragradient"],
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
    t.add_argument("--d-steps", type=cli_type(integer, "--d-steps", 1),
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
    t.add_argument("--seed", type=cli_type(integer, "--seed", 0),
                   help="seed of all random draws: weights, batches, noise (default: the config's)")
    t.add_argument("--data", choices=list(DATASETS),
                   help="the training data (default: the preset's): folder = your images under --data-dir, "
                        "cifar10 = CIFAR-10's binary files in --data-dir, mnist = the MNIST IDX files in "
                        "--data-dir, digits = the 8x8 digits, shapes = generated coloured shapes (12 classes), "
                        "ring8 / grid25 = the 2-D mixtures")
    t.add_argument("--data-dir", help="the data's folder: your images (--data folder, any depth), CIFAR-10's "
                                      "binary files or the MNIST IDX files (get them with 'npgan download')")
    t.add_argument("--image-size", type=cli_type(integer, "--image-size", 1),
                   help="side of the square images (resize of the shorter side + centre crop for a folder, "
                        "resize for cifar10 and mnist); the DCGAN needs 4*2^k (8, 16, 32, 64, 128, ...)")
    t.add_argument("--channels", type=int, choices=(1, 3), help="1 (grey) or 3 (RGB); a folder can be either")
    t.add_argument("--z-dim", type=cli_type(integer, "--z-dim", 1), help="size of the generator's noise z (nz)")
    t.add_argument("--width", type=cli_type(integer, "--width", 1),
                   help="both networks' base width (ngf = ndf for the DCGAN, the hidden size for the MLPs)")
    t.add_argument("--d-width", type=cli_type(integer, "--d-width", 1),
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
    t.add_argument("--out", required=True, type=Path, help="run directory (must not hold a run yet)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--threads", type=cli_type(integer, "--threads", 1),
                   help="CPU threads per op (default: $NPGAN_NUM_THREADS, else the BLAS's thread count)")

    _add_weights_options(t)

    r = sub.add_parser("resume", help="continue a run from its last checkpoint")
    r.add_argument("dir", type=Path, help="run directory written by npgan train")
    r.add_argument("--steps", type=cli_type(integer, "--steps", 1),
                   help="train to step N: beyond the run's end it extends the run with the final lr and λ; "
                        "before it, this session stops at N")
    r.add_argument("--restretch", action="store_true",
                   help="with --steps N beyond the end: lay the lr and λ schedules out anew over N steps "
                        "(written to config.toml) instead of keeping their final values")
    r.add_argument("--on-nan", choices=list(ON_NAN_ACTIONS), help="change the run's on_nan action")
    r.add_argument("--device", help="continue on this device (cpu | gpu | gpu:N) instead of the run's")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--threads", type=cli_type(integer, "--threads", 1), help="CPU threads per op")

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("dir", type=Path, help="run directory to sample from")
    s.add_argument("--n", type=cli_type(integer, "--n", 1), default=64, help="number of samples (default 64)")
    s.add_argument("--out", type=Path, required=True, help="FILE.npy")
    s.add_argument("--png", type=Path, help="also a picture (grid or scatter)")

    r.add_argument("--allow-changed-model", action="store_true",
                   help="resume a --model run whose model file changed since the run was created")

    e = sub.add_parser("export", help="write a run's G and/or D to a safetensors file (PyTorch's state_dict keys)")
    e.add_argument("dir", type=Path, help="run directory to export from")
    e.add_argument("--net", choices=("G", "D", "both"), default="G",
                   help="which network (default G); both: one file, keys prefixed 'G.' and 'D.'")
    e.add_argument("--out", type=Path, required=True, help="FILE.safetensors (not inside the run directory)")
    e.add_argument("--force", action="store_true", help="replace an existing --out file")
    e.add_argument("--allow-changed-model", action="store_true",
                   help="export a --model run whose model file changed since the run was created")

    _add_study_parser(sub)

    i = sub.add_parser("info", help="version, device, array backend, BLAS; with DIR, that run's state (read-only)")
    i.add_argument("dir", type=Path, nargs="?", help="a run directory")
    dl = sub.add_parser("download", help="fetch MNIST or CIFAR-10 (binary version) into DIR, SHA-256 checked")
    dl.add_argument("dataset", choices=["mnist", "cifar10"],
                    help="mnist: the four IDX .gz files from its mirrors; cifar10: cifar-10-binary.tar.gz (170 MB)")
    dl.add_argument("dir", type=Path, help="target folder (created); files already there and intact are kept")

    return p


def _add_study_parser(sub: Any) -> None:
    from ..game import BATCHNORM_MODES, WHICH
    st = sub.add_parser("study", help="the spectrum of the game through a run's checkpoints: J's top eigenvalues, "
                                      "each player's Hessian extremes, path angles (PNGs and a JSON)")
    st.add_argument("dir", type=Path, help="run directory (keep its checkpoints with npgan train --keep-checkpoints)")
    st.add_argument("--out", type=Path, required=True, help="output directory (not inside the run directory)")
    st.add_argument("--k", type=cli_type(integer, "--k", 1), default=20, help="eigenvalues of J per checkpoint (20)")
    st.add_argument("--which", choices=list(WHICH), default="LM",
                    help="which eigenvalues: LM largest |λ| (default), SR smallest Re λ, LR largest Re λ, LI largest "
                         "|Im λ|")
    st.add_argument("--batch", type=cli_type(integer, "--batch", 1),
                    help="size of the fixed batch (default: the run's batch size)")
    st.add_argument("--seed", type=cli_type(integer, "--seed", 0), default=0,
                    help="picks the fixed batch and the solvers' start vectors (0)")
    st.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                    help="the analysis's precision (default float64: the weights cast up)")
    st.add_argument("--batchnorm", choices=list(BATCHNORM_MODES), default="batch",
                    help="batch norm with the batch's statistics as in training (default) or running ones (eval)")
    st.add_argument("--limit", type=cli_type(integer, "--limit", 2),
                    help="at most N checkpoints, evenly spaced, the first and the last included")
    st.add_argument("--no-hessians", action="store_true", help="skip each player's Hessian extremes")
    st.add_argument("--max-restarts", type=cli_type(integer, "--max-restarts", 0), default=60,
                    help="the eigen-solvers' restart budget (60); unconverged values are reported as such")
    st.add_argument("--device", help="cpu | gpu | gpu:N (default: the run's)")
    st.add_argument("--force", action="store_true", help="replace a study already in --out")
    st.add_argument("--trust-model", action="store_true",
                    help="study a run whose networks come from its own --model file: that file's code is run "
                         "(never without this option; a run directory is data)")
    st.add_argument("--allow-changed-model", action="store_true",
                    help="with --trust-model: accept a model file that changed since the run was created")
    st.add_argument("--no-progress", action="store_true", help="no progress bar")
    st.add_argument("--threads", type=cli_type(integer, "--threads", 1), help="CPU threads per op")


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
                        "npgan modules; the run records the file's SHA-256")
    t.add_argument("--init-g", type=Path, metavar="FILE",
                   help="start G from these weights (safetensors: from npgan export or PyTorch's save_file)")
    t.add_argument("--init-d", type=Path, metavar="FILE", help="start D from these weights (as --init-g)")


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


def cmd_export(a: argparse.Namespace) -> int:
    """Write G, D or both (keys 'G.…'/'D.…') with their buffers and a metadata block; never writes in the run."""
    from .. import weights
    from .experiment import read_models
    out = a.out
    if out.suffix != ".safetensors":
        raise UsageError(f"--out must name a .safetensors file, got {out}")
    if a.dir.is_dir() and out.resolve().is_relative_to(a.dir.resolve()):
        raise UsageError(f"--out {out} is inside the run directory {a.dir}; export never writes there")
    if out.exists() and not a.force:
        raise UsageError(f"--out {out} already exists; pass --force to replace it")
    if out.exists() and not out.is_file():
        raise UsageError(f"--out {out} exists and is not a file")
    cfg, G, D, step = read_models(a.dir, allow_changed_model=a.allow_changed_model)
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
    from .config import read_config
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
    if cfg.optimizer == "extragradient":  # Extra-Adam: Adam, and the loop's look-ahead
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
        if tr.lr_final is not None:
            tr.lr_final = tr.lr_final * a.lr / tr.lr
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


def cmd_train(a: argparse.Namespace) -> int:
    from .experiment import Run
    _set_threads(a)
    cfg = _config_from_args(a)
    _apply_weights_args(a, cfg)
    with Run.create(cfg, a.out) as run:  # holds the writer lock until done
        tr = cfg.train
        print(f"npgan {__version__}: training preset {cfg.preset} ({cfg.data}, {cfg.model}, loss {tr.loss}, "
              f"{cfg.optimizer} lr {tr.lr:g}, {tr.d_steps} D step{'s' if tr.d_steps > 1 else ''} per G step"
              f"{f', penalty {tr.gp} weight {tr.gp_weight:g} every {tr.gp_every}' if tr.gp else ''}"
              f"{', extragradient' if tr.extragradient else ''}"
              f"{f', consensus {tr.consensus:g}' if tr.consensus > 0 else ''}) "
              f"for {tr.steps} steps on {backend.get_device()} -> {a.out}", file=sys.stderr)
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
        if at == target and (a.dir / "metrics.json").exists():
            print(f"{a.dir} has finished its {target} steps; pass --steps N to train further", file=sys.stderr)
            return 0
        print(f"resuming {a.dir} at step {at} of {target}", file=sys.stderr)
        _print_metrics(run.train(progress=not a.no_progress))
    return 0


def _check_output(path: Path, option: str) -> None:
    """Refuse (UsageError) an output path whose directory is missing or that names a directory, before
    anything is written; the message names the path given, never a temporary file."""
    parent = path.parent
    if not parent.is_dir():
        what = "does not exist" if not parent.exists() else "is not a directory"
        raise UsageError(f"{option} {path}: the directory {parent} {what}")
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory; give a file name")


def cmd_sample(a: argparse.Namespace) -> int:
    from ..files import atomic_write_bytes
    from .experiment import load_run_readonly, writing
    if a.out.suffix != ".npy":
        raise UsageError(f"--out must name a .npy file, got {a.out}")
    _check_output(a.out, "--out")
    if a.png is not None:
        _check_output(a.png, "--png")
    run = load_run_readonly(a.dir)  # writes nothing in the run directory
    x = backend.to_numpy(run.trainer.sample(n=a.n).data)  # fresh draws from the restored stream
    buf = io.BytesIO()
    backend.np.save(buf, x, allow_pickle=False)
    with writing(a.out):
        atomic_write_bytes(a.out, buf.getvalue())
    if a.png is not None:
        from ..eval import plots
        with writing(a.png):
            plots.samples(x, run.cfg.data, a.png)
    print(f"wrote {a.n} samples of shape {x.shape[1:]} to {a.out}", file=sys.stderr)
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
        from .experiment import load_run_readonly
        from .runlock import holder
        run = load_run_readonly(a.dir)  # writes nothing in the run directory
        tr = run.cfg.train
        info = {"run": str(a.dir), "preset": run.cfg.preset, "data": run.cfg.data, "model": run.cfg.model,
                "step": run.step, "total_steps": run.total_steps, "schedule_steps": tr.steps,
                "finished": run.step >= run.total_steps and (a.dir / "metrics.json").is_file(),
                "last_writer_pid": holder(a.dir).get("pid")}
    for k, v in info.items():
        print(f"{k}: {v}")
    return 0


def _one_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    from ..errors import CheckpointError, CheckpointWriteError, DivergenceError, WriteError
    from .experiment import Interrupted
    try:
        a = build_parser().parse_args(argv)
        return {"train": cmd_train, "resume": cmd_resume, "sample": cmd_sample, "info": cmd_info,
                "export": cmd_export, "download": cmd_download, "study": cmd_study}[a.cmd](a)
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
    except (UsageError, ValueError, TypeError, CheckpointError, backend.DeviceError, FileNotFoundError,
            PermissionError, OSError) as exc:
        if os.environ.get("NPGAN_DEBUG"):
            raise
        print(f"npgan: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:  # pragma: no cover - covered by ValueError
        print(f"npgan: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
