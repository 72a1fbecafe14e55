"""Mode collapse on ring8 and grid25, without and with the generator's entropy term, same seeds.

A GAN generator is only asked to fool D on the batch in front of it; nothing in L_G = −E log D(G(z)) asks it to
spread over every mode, and it often piles its mass onto a few. The entropy term, L_G = L_adv − λ·Ĥ(G(z)) with Ĥ
the KDE entropy of the generated batch, rewards spreading out (demos/entropy.py shows its gradient).

For each data set the demo trains npgan's preset (npgan.run.presets.make_config) twice per seed — λ = 0 and the
preset's λ = 0.1 annealed to 0 — and reports the VEEGAN/PacGAN metrics of 2,500 samples
(npgan.eval.metrics.mode_metrics): modes covered, the share of high-quality samples (within 3 std of a mode) and the
reverse KL of the mode histogram to uniform. The figure shows samples over training (columns = steps) on top
of D's decision surface sigma(D(x)) (blue: D says fake, red: D says real), seed 0.

So that the whole demo fits in 3 minutes on 2 CPU cores, it trains 1,000 steps per run, far fewer than the
presets (it prints how many they train): the samples are not yet sharp (low HQ), but on ring8 coverage already
differs. The demo prints after each table whether its numbers show the effect; ``--quick`` (30 steps, for the
tests) is too short to show it and says so. Train a preset in full with ``npgan train --preset ring8``.

Run: python demos/mode_collapse.py [--quick] [--out DIR] [--device gpu] [--steps N] [--seeds K]
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from demo_utils import Timer, finish, heading, parser, plt, save, setup, table, tensor

import npgan
from npgan import backend
from npgan.data import MIXTURES
from npgan.run.experiment import evaluate, side_noise
from npgan.run.presets import build, make_config

NAME = "mode_collapse"
ARMS = (("no entropy", 0.0), ("entropy", None))  # None: the preset's λ schedule


def config(data: str, seed: int, lam: float | None, steps: int, quick: bool, device: str) -> Any:
    cfg = make_config(data)
    cfg.seed, cfg.device = seed, device
    cfg.train.steps = steps
    if lam is not None:
        cfg.train.entropy_weight, cfg.train.entropy_weight_final = lam, None
    if quick:
        cfg.train.batch_size = 64
        cfg.eval_samples = 500
    return cfg


def decision_surface(D: Any, lim: float, n: int = 120) -> Any:
    """σ(D(x)) on an n × n grid over [−lim, lim]², rows from top (y = lim) to bottom."""
    v = np.linspace(-lim, lim, n)
    gx, gy = np.meshgrid(v, v[::-1])
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    with npgan.no_grad():
        logits = D(tensor(pts, dtype=backend.get_default_dtype()))
    return (1 / (1 + np.exp(-backend.to_numpy(logits.data).astype(np.float64)))).reshape(n, n)


def train_one(cfg: Any, snap_steps: list[int] | None, lim: float) -> tuple[dict[str, Any], list[Any]]:
    npgan.manual_seed(cfg.seed)  # the script sets the process state; build() makes the parts on it
    _, D, _, _, trainer = build(cfg)
    fixed_z = side_noise(cfg, 1000, tag=7)
    snaps = []
    for s in range(cfg.train.steps + 1):
        if snap_steps is not None and s in snap_steps:
            x = backend.to_numpy(trainer.sample(fixed_z).data)
            snaps.append((s, x, decision_surface(D, lim)))
        if s < cfg.train.steps:
            trainer.step()
            if (s + 1) % 100 == 0:
                trainer.flush()
    trainer.flush()
    return evaluate(cfg, trainer), snaps


def verdict(data: str, per: dict[str, dict[str, list[float]]], steps: int, quick: bool) -> bool | None:
    """Print what this run's numbers show, and only that: True when the entropy arm covered more modes on
    average, False when not, None in quick mode (too short to show anything either way)."""
    on, off = float(np.mean(per["entropy"]["modes"])), float(np.mean(per["no entropy"]["modes"]))
    if quick:
        print(f"  quick mode: {steps} steps are too short to show mode collapse or its cure (here {on:g} modes "
              f"with the entropy term, {off:g} without: noise at this length). Run without --quick.")
        return None
    if on > off:
        print(f"  shown: with the entropy term G covers more modes ({on:g} against {off:g} on average)")
        return True
    print(f"  not shown: after {steps} steps the entropy term does not cover more modes ({on:g} against "
          f"{off:g} on average)")
    if data == "grid25":
        print("  grid25 needs far more steps than this demo trains (its preset trains 25,000): "
              "npgan train --preset grid25")
    return False


def draw(fig_rows: list[tuple[str, list[Any]]], data: str, lim: float, path: Any, metrics: dict[str, Any],
         note: str = "") -> None:
    pyplot = plt()
    centers = MIXTURES[data].centers
    ncol = len(fig_rows[0][1])
    fig, axes = pyplot.subplots(len(fig_rows), ncol, figsize=(2.3 * ncol, 2.45 * len(fig_rows)), squeeze=False)
    for r, (arm, snaps) in enumerate(fig_rows):
        for c, (step, x, surf) in enumerate(snaps):
            ax = axes[r, c]
            ax.imshow(surf, extent=(-lim, lim, -lim, lim), cmap="coolwarm", vmin=0, vmax=1, alpha=0.75)
            # modes: hollow rings under the samples, so the samples that sit on a mode stay visible
            ax.scatter(centers[:, 0], centers[:, 1], s=28, facecolors="none", edgecolors="lime", linewidths=0.8,
                       zorder=2)
            ax.scatter(x[:, 0], x[:, 1], s=1.5, color="k", alpha=0.5, linewidths=0, zorder=3)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"step {step}", fontsize=9)
            if c == 0:
                m = metrics[arm]
                ax.set_ylabel(f"{arm}\n{m['modes']}/{m['n_modes']} modes, HQ {m['hq']:.0f}%", fontsize=8)
    fig.suptitle(f"{data}: G's samples (black) over sigma(D(x)) (red = 'real'), seed 0{note}", fontsize=10)
    fig.tight_layout()
    save(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default 1000; quick 30)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm (default 3; quick 1)")
    p.add_argument("--data", nargs="+", default=["ring8", "grid25"], choices=["ring8", "grid25"])
    args = p.parse_args(argv)
    out_dir = setup(NAME, args)
    timer = Timer()
    steps = args.steps or (30 if args.quick else 1000)
    n_seeds = args.seeds or (1 if args.quick else 3)
    seeds = [args.seed + k for k in range(n_seeds)]
    ncols = 5
    snap_steps = sorted({int(round(steps * f)) for f in (0, 0.1, 0.25, 0.5, 1.0)})[:ncols]
    res: dict[str, Any] = {"steps": steps, "seeds": seeds}
    preset_steps = ", ".join(f"{d} {make_config(d).train.steps}" for d in args.data)
    print(f"{NAME}: {steps} steps per run (the presets train {preset_steps}: shortened to fit 3 minutes), "
          f"seeds {seeds}" + (", batch 64 (--quick)" if args.quick else ""))
    for data in args.data:
        lim = 1.6 if data == "ring8" else 5.6
        preset = make_config(data).train
        heading(f"{data}: lambda = 0 vs lambda = {preset.entropy_weight} -> {preset.entropy_weight_final} "
                f"(bandwidth {preset.bandwidth})")
        rows, fig_rows, first = [], [], {}
        per: dict[str, dict[str, list[float]]] = {}
        for arm, lam in ARMS:
            per[arm] = {"modes": [], "hq": [], "reverse_kl": []}
            for seed in seeds:
                cfg = config(data, seed, lam, steps, args.quick, args.device)
                m, snaps = train_one(cfg, snap_steps if seed == seeds[0] else None, lim)
                for k in per[arm]:
                    per[arm][k].append(float(m[k]))
                rows.append((arm, seed, m["modes"], m["hq"], m["reverse_kl"]))
                if seed == seeds[0]:
                    fig_rows.append((arm, snaps))
                    first[arm] = m
        for arm, _ in ARMS:
            kl = [v for v in per[arm]["reverse_kl"] if not np.isnan(v)]  # NaN: a run with no HQ sample at all
            rows.append((f"{arm}: mean", "-", float(np.mean(per[arm]["modes"])), float(np.mean(per[arm]["hq"])),
                         float(np.mean(kl)) if kl else float("nan")))
        table(("arm", "seed", f"modes (of {len(MIXTURES[data].centers)})", "HQ %", "reverse KL"), rows)
        print("  reverse KL: nan for a run with no HQ sample; the mean is over the runs that have one")
        std = MIXTURES[data].std
        print(f"  HQ = within 3 std = {3 * std:g} of a mode; reverse KL: 0 = every covered mode equally")
        res[data] = per
        res[f"{data}_shown"] = verdict(data, per, steps, args.quick)
        draw(fig_rows, data, lim, out_dir / f"mode_collapse_{data}.png", first,
             f"; --quick, {steps} steps: too short to show mode collapse" if args.quick else "")
    return finish(NAME, res, timer, out_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
