"""``npgan study RUN --out DIR``: the spectrum of the game through a run's training.

For each checkpoint of a run — the kept ones (``checkpoints/step_NNNNNN.npz``, written by ``npgan train
--keep-checkpoints``) and the last (``checkpoint.npz``) — the game of the run's losses at that step
(:func:`npgan.gan.game.game_of`: the KDE term at the step's λ, the penalty at its every-step weight) on one fixed
batch is analysed with :mod:`npgan.game`:

* the top-k eigenvalues of the game's Jacobian J (``which``: by magnitude by default), each with its residual
  ‖Jx − λx‖/‖x‖, and r = max |Im λ| / |Re λ| over them: rotation when r ≫ 1 (docs/math.md §16);
* the smallest and largest eigenvalue of each player's Hessian H_G = ∇²_θθ L_G and H_D = ∇²_φφ L_D (Lanczos), with
  residuals: both λ_min ≥ 0 where v = 0 is a local Nash equilibrium (second-order conditions);
* ‖v‖ and the two losses;

and, from each checkpoint x_i to the last x_N, the path angle of Berard et al. 2020: cos ∠(v(x_t), x_N − x_i) and
‖v(x_t)‖ along x_t = x_i + t (x_N − x_i), t in [0, 1], with the game of the last step.

The batch: ``batch`` samples (the run's batch size by default): the real ones are the run's batch number ``seed``
(images, in the run's epoch order) or a draw from the mixture under ``seed``; the noise comes from its own
generator, seeded by (the run's seed, ``seed``). It is fixed for the whole study, so v is one function of x. The
analysis runs in float64 by default (the weights cast up: the same function, evaluated more exactly; float32 keeps
the run's arithmetic and loosens the solvers' tolerance to 1e-4).

Outputs, in ``out`` (never inside the run directory, which is only read): ``study.json`` (every number, the options
and the claims), ``eigenvalues.png`` (the top eigenvalues in the complex plane, colour = step), ``ratio.png`` (r,
max |λ| and min Re λ through training), ``hessians.png`` (the Hessians' extremes and ‖v‖) and ``path_angle.png``.
The claims are printed as numbers (:func:`claims`). A run whose networks come from its own ``--model`` file is
read only with ``trust_model`` (its code is run; a run directory is otherwise data) and only after every
checkpoint passed its checks.

Cost: per checkpoint, the eigen-solver's products (each J u about two training steps; see
benchmarks/cases_game.py), four Lanczos runs for the Hessians, and per path 21 field evaluations.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from .. import __version__, backend
from ..checks import integer, one_of
from ..errors import CheckpointError, RunError
from ..files import atomic_write_bytes, atomic_write_text
from ..game import BATCHNORM_MODES, WHICH
from ..gan.game import game_of, penalty_weight
from ..tensor import Tensor
from .checkpoint import CHECKPOINT_FILE, KEPT_CHECKPOINTS, load_arrays, unpack_state
from .config import CONFIG_FILE, RunConfig, read_config
from .presets import arch_summary, build_models, file_sha256, model_file, real_source

__all__ = ["StudyOptions", "study", "claims", "plot", "checkpoint_files", "STUDY_FILES", "MAX_EIGENVALUES",
           "MAX_RESTARTS"]

#: what a study writes into its output directory
STUDY_FILES = ("study.json", "eigenvalues.png", "ratio.png", "hessians.png", "path_angle.png")
#: bounds of the study's counts: k eigenvalues of J keep a Krylov basis of about 2k + 1 vectors of the game's size
#: (500 of ring8's 35k parameters: 280 MB in float64), and each restart of a solver costs up to 2k products J u
MAX_EIGENVALUES = 500
MAX_RESTARTS = 10_000
_KEPT = re.compile(r"step_(\d{6,})\.npz")
_NOISE_TAG = 11  # the study's noise generator: default_rng([run seed, 11, study seed]) (runs use tags 7 and 8)


@dataclasses.dataclass
class StudyOptions:
    """What :func:`study` computes.

    k / which: how many eigenvalues of J and which ("LM" largest magnitude, "SR" smallest real part, "LR", "LI").
    batch: the fixed batch's size (0: the run's). seed: picks the batch and the solvers' start vectors.
    dtype: the analysis's precision. batchnorm: "batch" (as in training) or "eval". limit: at most this many
    checkpoints, evenly spaced, the first and last included (0: all). hessians: each player's Hessian extremes.
    path_points: the number of t in [0, 1] of each path angle. max_restarts / tol: the eigen-solvers' budget and
    tolerance (None: 1e-10 in float64, 1e-4 in float32); a solve that does not converge is reported as such.
    """

    k: int = 20
    which: str = "LM"
    batch: int = 0
    seed: int = 0
    dtype: str = "float64"
    batchnorm: str = "batch"
    limit: int = 0
    hessians: bool = True
    path_points: int = 21
    max_restarts: int = 60
    tol: float | None = None
    device: str | None = None

    def validate(self) -> None:
        integer("k", self.k, 1, MAX_EIGENVALUES)
        one_of("which", self.which, WHICH)
        integer("batch", self.batch, 0)
        integer("seed", self.seed, 0)
        one_of("dtype", self.dtype, ("float32", "float64"))
        one_of("batchnorm", self.batchnorm, BATCHNORM_MODES)
        integer("limit", self.limit, 0)
        if self.limit == 1:
            raise ValueError("limit must be 0 (all checkpoints) or at least 2 (the first and the last)")
        integer("path_points", self.path_points, 2)
        integer("max_restarts", self.max_restarts, 0, MAX_RESTARTS)
        if self.tol is not None and not (isinstance(self.tol, float) and 0 < self.tol < 1):
            raise ValueError(f"tol must be a number in (0, 1) or None, got {self.tol!r}")


def checkpoint_files(run_dir: str | os.PathLike) -> list[Path]:
    """A run's checkpoint files: the kept ones (checkpoints/step_NNNNNN.npz, by step) and checkpoint.npz."""
    run_dir = Path(run_dir)
    kept_dir = run_dir / KEPT_CHECKPOINTS
    kept = []
    if kept_dir.is_dir():
        kept = sorted((int(m.group(1)), p) for p in kept_dir.iterdir() if (m := _KEPT.fullmatch(p.name)))
    files = [p for _, p in kept]
    if os.path.lexists(run_dir / CHECKPOINT_FILE) or not files:
        files.append(run_dir / CHECKPOINT_FILE)
    return files


def _read_states(files: list[Path], cfg: RunConfig) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(step, G's state, D's state) of each file, checked as a resume checks it (format, checksum, the run's
    configuration), one per step (a kept copy and checkpoint.npz of one step are one), by step."""
    out: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    for path in files:
        arrays, meta = load_arrays(path)  # (a regular file: a FIFO or a dangling link is refused unopened)
        if meta.get("arch_hash") != cfg.arch_hash():
            raise CheckpointError(f"checkpoint {path} was written for another architecture than the run's "
                                  f"config.toml describes")
        meta = {k: v for k, v in meta.items() if k != "env"}  # (no resume: the BLAS and threads do not matter)
        st = unpack_state(path, arrays, meta, nets=("G", "D"), opts=("opt_g", "opt_d"), config=cfg.to_dict())
        out.setdefault(st.step, (st.nets["G"], st.nets["D"]))
    return [(s, *out[s]) for s in sorted(out)]


def _check_model(cfg: RunConfig, run_dir: Path, trust_model: bool, allow_changed_model: bool) -> None:
    """A ``--model`` run's networks are built by its file's code: only with ``trust_model``, and only if the file
    is the one the run recorded (or ``allow_changed_model``). The rule and the words of the other readers
    (``npgan.run.experiment.load_run_readonly``), kept here because the study sits below the run's module."""
    if cfg.model != "custom":
        return
    if not trust_model:
        raise RunError(f"{run_dir}: this run's networks are built by the model file {cfg.model_build!r}, whose "
                       "code npgan runs only when told: pass --trust-model if you trust that file")
    path = model_file(cfg.model_build)
    sha = file_sha256(path) if path is not None else ""
    if sha != cfg.model_sha256 and not allow_changed_model:
        raise RunError(f"{run_dir}: the model file {path} has changed since the run was created (sha256 "
                       f"{cfg.model_sha256[:12]}..., now {sha[:12]}...); restore it, or pass --allow-changed-model")


def _pick(n: int, limit: int) -> list[int]:
    """``limit`` indices of range(n), evenly spaced, first and last included (all when limit is 0 or ≥ n)."""
    if limit == 0 or limit >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def _ratio(values: Any) -> float:
    """max |Im λ| / |Re λ| over the eigenvalues (inf when one has Re λ = 0 and Im λ ≠ 0)."""
    r = 0.0
    for lam in values:
        im, re_ = abs(complex(lam).imag), abs(complex(lam).real)
        r = max(r, im / re_ if re_ > 0 else (math.inf if im > 0 else 0.0))
    return r


def _finite(v: Any) -> Any:
    """JSON has no inf or nan: None for them, recursively."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def _batch(cfg: RunConfig, size: int, seed: int, dtype: Any) -> tuple[Tensor, Tensor]:
    """(z, real): the study's fixed batch (module docstring)."""
    bcfg = RunConfig.from_dict(cfg.to_dict())
    bcfg.train.batch_size = size
    backend.manual_seed(seed)
    real = real_source(bcfg)(seed).data
    z = backend.np.random.default_rng([cfg.seed, _NOISE_TAG, seed]).standard_normal((size, cfg.train.z_dim))
    dev = backend.get_device()
    return (Tensor(backend.asarray(z, dtype=dtype, device=dev)),
            Tensor(backend.asarray(backend.to_numpy(real), dtype=dtype, device=dev)))


def study(run_dir: str | os.PathLike, out: str | os.PathLike, options: StudyOptions | None = None,
          trust_model: bool = False, allow_changed_model: bool = False, force: bool = False,
          progress: bool = True) -> dict[str, Any]:
    """Analyse a run's checkpoints (module docstring); write :data:`STUDY_FILES` into ``out``; return the JSON's
    dict. npgan's default dtype, device and random stream are as they were afterwards."""
    opts = options or StudyOptions()
    opts.validate()
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    if out.resolve().is_relative_to(run_dir.resolve()):
        raise RunError(f"--out {out} is inside the run directory {run_dir}; a study never writes there")
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} exists and is not a directory")
    if (out / STUDY_FILES[0]).exists() and not force:
        raise RunError(f"--out {out} already holds a study ({STUDY_FILES[0]}); pass --force to replace it")
    cfg = read_config(run_dir / CONFIG_FILE)
    states = _read_states(checkpoint_files(run_dir), cfg)
    _check_model(cfg, run_dir, trust_model, allow_changed_model)  # after every checkpoint passed its checks
    keep = _pick(len(states), opts.limit)
    states = [states[i] for i in keep]
    saved = backend.get_default_dtype(), backend.get_device(), backend.get_rng_state()
    try:
        backend.set_default_dtype(opts.dtype)
        backend.set_device(opts.device or cfg.device)
        backend.manual_seed(cfg.seed)
        G, D = build_models(cfg)
        want = arch_summary(G, D)
        z, real = _batch(cfg, opts.batch or cfg.train.batch_size, opts.seed, backend.get_default_dtype())
        result = _analyse(cfg, G, D, want, z, real, states, opts, progress, run_dir)
    finally:
        backend.set_default_dtype(saved[0])
        backend.set_device(saved[1])
        backend.set_rng_state(saved[2])
    result["claims"] = claims(result)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.json", json.dumps(_finite(result), indent=1) + "\n")
    plot(result, out)
    return result


def _load(G: Any, D: Any, want: dict[str, Any], step: int, sg: dict[str, Any], sd: dict[str, Any],
          run_dir: Path) -> None:
    if {"G": {k: list(v.shape) for k, v in sg.items()}, "D": {k: list(v.shape) for k, v in sd.items()}} != want:
        raise CheckpointError(f"{run_dir}: the checkpoint of step {step} does not fit the run's networks")
    G.load_state_dict(sg)
    D.load_state_dict(sd)


def _analyse(cfg: RunConfig, G: Any, D: Any, want: dict[str, Any], z: Tensor, real: Tensor,
             states: list[tuple[int, dict[str, Any], dict[str, Any]]], opts: StudyOptions, progress: bool,
             run_dir: Path) -> dict[str, Any]:
    from tqdm import tqdm

    tr = cfg.train
    solver = {"max_restarts": opts.max_restarts, "seed": opts.seed, "tol": opts.tol}
    rows: list[dict[str, Any]] = []
    paths: list[dict[str, Any]] = []
    n_paths = len(states) - 1
    with tqdm(total=len(states) + n_paths, desc="npgan study", unit="task", disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for step, sg, sd in states:
            bar.set_postfix_str(f"step {step}: eigenvalues", refresh=True)
            _load(G, D, want, step, sg, sd, run_dir)
            game = game_of(tr, G, D, z, real, step, opts.batchnorm)
            t0 = time.perf_counter()
            with game.linearize() as lin:
                spec = lin.eigs(min(opts.k, game.n), opts.which, **solver)
                hess = lin.hessian_extremes(**solver) if opts.hessians else None
                xp = backend.get_array_module(lin.v)
                vg, vd = lin.v[:game.n_g], lin.v[game.n_g:]
                row = {"step": step, "entropy_weight": tr.schedule(tr.entropy_weight, tr.entropy_weight_final, step),
                       "loss_g": lin.loss_g, "loss_d": lin.loss_d, "field_norm": float(xp.linalg.norm(lin.v)),
                       "field_norm_g": float(xp.linalg.norm(vg)), "field_norm_d": float(xp.linalg.norm(vd)),
                       "eigenvalues": spec.as_dict(), "ratio": _ratio(spec.values),
                       "max_abs": float(max(abs(complex(v)) for v in spec.values)),
                       "min_real": float(min(complex(v).real for v in spec.values)), "hessians": hess}
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            bar.update(1)
        if n_paths:
            step_n, sg_n, sd_n = states[-1]
            _load(G, D, want, step_n, sg_n, sd_n, run_dir)
            game = game_of(tr, G, D, z, real, step_n, opts.batchnorm)
            x_n = game.flat_from(sg_n, sd_n)
            ts = backend.np.linspace(0.0, 1.0, opts.path_points)
            for step, sg, sd in states[:-1]:
                bar.set_postfix_str(f"path angle {step} -> {step_n}", refresh=True)
                pa = game.path_angle(game.flat_from(sg, sd), x_n, ts)
                paths.append({"from_step": step, "to_step": step_n, **pa.as_dict()})
                bar.update(1)
    n_g = sum(int(p.size) for p in G.parameters() if p.requires_grad)
    n_d = sum(int(p.size) for p in D.parameters() if p.requires_grad)
    return {"npgan": __version__, "run": str(run_dir), "preset": cfg.preset, "data": cfg.data, "model": cfg.model,
            "train": {"loss": tr.loss, "entropy_weight": tr.entropy_weight,
                      "entropy_weight_final": tr.entropy_weight_final, "gp": tr.gp,
                      "gp_weight_every_step": penalty_weight(tr), "extragradient": tr.extragradient,
                      "consensus": tr.consensus, "optimizer": cfg.optimizer, "lr": tr.lr, "steps": tr.steps},
            "options": dataclasses.asdict(opts) | {"batch": int(z.shape[0])}, "n_g": n_g, "n_d": n_d,
            "checkpoints": rows, "path_angles": paths}


# ============================================================================ what it shows, as numbers
def claims(result: dict[str, Any]) -> list[str]:
    """The study's findings as lines of numbers: rotation at the start and the end, the largest |λ| and smallest
    Re λ, the Hessians' extremes and whether the end is a local Nash equilibrium, the path angles."""
    rows, out = result["checkpoints"], []
    if not rows:
        return out
    first, last = rows[0], rows[-1]
    k, which = result["options"]["k"], result["options"]["which"]
    top = max(rows, key=lambda r: r["ratio"])
    out.append(f"rotation: max |Im λ|/|Re λ| over J's top-{k} eigenvalues ({which}): {first['ratio']:.4g} at step "
               f"{first['step']}, {last['ratio']:.4g} at step {last['step']} (the end); largest {top['ratio']:.4g} at "
               f"step {top['step']}")
    out.append(f"scale: max |λ| of J {first['max_abs']:.4g} at step {first['step']}, {last['max_abs']:.4g} at the "
               f"end; ‖v‖ {first['field_norm']:.4g} -> {last['field_norm']:.4g}")
    ev = last["eigenvalues"]
    neg = [i for i, (v, r) in enumerate(zip(ev["values"], ev["residuals"]))
           if (v[0] if isinstance(v, list) else v) < -r]
    out.append(f"stability at the end: smallest Re λ among the top {k}: {last['min_real']:.4g}; {len(neg)} of them "
               f"with Re λ < 0 beyond their residual (simultaneous gradient steps leave along those)")
    h = last.get("hessians")
    if h:
        g, d = h["G"], h["D"]
        psd_g, psd_d = g["min"] >= -g["min_residual"], d["min"] >= -d["min_residual"]
        conv = g["converged"] and d["converged"]
        verdict = ("both positive semi-definite within their residuals: the second-order conditions of a local "
                   "Nash equilibrium hold" if psd_g and psd_d else
                   "not a local Nash equilibrium: " + " and ".join(
                       f"H_{w} has λ_min < 0" for w, ok in (("G", psd_g), ("D", psd_d)) if not ok))
        out.append(f"Hessians at the end: H_G λ_min {g['min']:.4g} (residual {g['min_residual']:.2g}), λ_max "
                   f"{g['max']:.4g}; H_D λ_min {d['min']:.4g} (residual {d['min_residual']:.2g}), λ_max {d['max']:.4g}:"
                   f" {verdict}{'' if conv else ' (a solve did not converge: see study.json)'}; ‖v‖ = "
                   f"{last['field_norm']:.4g}")
    pas = result["path_angles"]
    for pa in pas[:1] + pas[-1:] if len(pas) > 1 else pas:  # from the first checkpoint, and from the one before last
        t, c, nv = pa["t"], pa["cos"], pa["norm"]

        def at(x: float, t: list[float] = t, c: list[float] = c) -> float:
            return c[min(range(len(t)), key=lambda i: abs(t[i] - x))]
        out.append(f"path angle from step {pa['from_step']} to step {pa['to_step']}: cos ∠(v, x_end − x_start) "
                   f"{at(0.0):.3f} at t = 0, {at(0.5):.3f} at t = 0.5, {at(0.9):.3f} at t = 0.9, {at(1.0):.3f} at "
                   f"t = 1 (min {min(c):.3f}); ‖v‖ {nv[0]:.4g} at t = 0, {min(nv):.4g} at its smallest, {nv[-1]:.4g} "
                   f"at t = 1")
    return out


# ============================================================================ pictures
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _title(result: dict[str, Any]) -> str:
    tr = result["train"]
    bits = [result["preset"], tr["loss"]]
    if tr["entropy_weight"]:
        bits.append(f"λ {tr['entropy_weight']:g}→{tr['entropy_weight_final'] or 0:g}")
    if tr["gp"]:
        bits.append(f"{tr['gp']} w {tr['gp_weight_every_step']:g}")
    if tr["extragradient"]:
        bits.append("extragradient")
    if tr["consensus"]:
        bits.append(f"consensus {tr['consensus']:g}")
    return ", ".join(bits)


def _num(v: Any) -> float:
    """A JSON number (None for inf or nan) as a float for plotting: None -> nan."""
    return float("nan") if v is None else float(v)


def plot(result: dict[str, Any], out: str | os.PathLike) -> None:
    """The study's pictures (:data:`STUDY_FILES` but the JSON) from its result, or from a study.json read back
    (``plot(json.load(open("study.json")), out)``: a study is re-plotted without recomputing it)."""
    out = Path(out)
    plt = _plt()
    rows = result["checkpoints"]
    steps = [r["step"] for r in rows]
    cmap = plt.get_cmap("viridis")
    norm = plt.Normalize(min(steps), max(max(steps), min(steps) + 1))
    title = _title(result)
    which, k = result["options"]["which"], result["options"]["k"]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax in axes:
        for r in rows:
            vals = r["eigenvalues"]["values"]
            ax.scatter([v[0] for v in vals], [v[1] for v in vals], s=14, color=cmap(norm(r["step"])), alpha=0.85)
        ax.axvline(0, color="0.6", lw=0.8)
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xlabel("Re λ")
        ax.set_ylabel("Im λ")
    axes[0].set_title("linear axes", fontsize=9)
    axes[1].set_xscale("symlog", linthresh=1.0)
    axes[1].set_yscale("symlog", linthresh=1.0)
    axes[1].set_title("symmetric log axes (linear within ±1)", fontsize=9)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[1], label="step")
    fig.suptitle(f"top-{k} eigenvalues of the game's Jacobian J ({which}); {title}", fontsize=9)
    _save(fig, out / "eigenvalues.png")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(steps, [_num(r["ratio"]) for r in rows], "o-")
    a1.set_yscale("symlog", linthresh=0.01)
    a1.set_xlabel("step")
    a1.set_ylabel("max |Im λ| / |Re λ|  (0: all real)")
    a1.set_title("rotation", fontsize=9)
    a2.plot(steps, [r["max_abs"] for r in rows], "o-", label="max |λ|")
    a2.plot(steps, [r["min_real"] for r in rows], "s-", label="min Re λ")
    a2.set_yscale("symlog", linthresh=1.0)
    a2.axhline(0, color="0.6", lw=0.8)
    a2.set_xlabel("step")
    a2.legend(fontsize=8)
    a2.set_title(f"J's top-{k} ({which})", fontsize=9)
    fig.suptitle(title, fontsize=9)
    _save(fig, out / "ratio.png")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    if all(r["hessians"] for r in rows):
        for who, mk in (("G", "o"), ("D", "s")):
            a1.plot(steps, [r["hessians"][who]["max"] for r in rows], mk + "-", label=f"λ_max(H_{who})")
            a1.plot(steps, [r["hessians"][who]["min"] for r in rows], mk + "--", label=f"λ_min(H_{who})")
        a1.set_yscale("symlog", linthresh=1e-3)
        a1.axhline(0, color="0.6", lw=0.8)
        a1.legend(fontsize=8)
    a1.set_xlabel("step")
    a1.set_title("each player's Hessian: extremes", fontsize=9)
    for key, lab in (("field_norm", "‖v‖"), ("field_norm_g", "‖v_θ‖"), ("field_norm_d", "‖v_φ‖")):
        a2.semilogy(steps, [r[key] for r in rows], "o-", label=lab)
    a2.set_xlabel("step")
    a2.legend(fontsize=8)
    a2.set_title("the vector field's norm", fontsize=9)
    fig.suptitle(title, fontsize=9)
    _save(fig, out / "hessians.png")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for pa in result["path_angles"]:
        c = cmap(norm(pa["from_step"]))
        a1.plot(pa["t"], [_num(x) for x in pa["cos"]], color=c)
        a2.semilogy(pa["t"], pa["norm"], color=c)
    a1.axhline(0, color="0.6", lw=0.8)
    a1.set_xlabel("t")
    a1.set_ylabel("cos ∠(v(x_t), x_end − x_start)")
    a2.set_xlabel("t")
    a2.set_ylabel("‖v(x_t)‖")
    if result["path_angles"]:
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=a2, label="start step")
    fig.suptitle(f"path angle to the last checkpoint; {title}", fontsize=9)
    _save(fig, out / "path_angle.png")
