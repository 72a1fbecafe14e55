"""Entropy: Shannon's for coins and dice, npgan's KDE estimate against closed forms, and its gradient.

1. H(P) = −Σ_k P_k log P_k (nats; bits with log₂): the 0.6/0.4 coin has 0.673 nats, a fair coin ln 2 = 0.693,
   the uniform distribution has the most. Differential entropy of a density, h(p) = −∫ p log p, can be negative:
   N(μ, s² I_d) has (d/2) log(2πe s²).
2. npgan.functional.kde_entropy estimates h from n samples with a Gaussian kernel density estimate,
       p̂(x_i) = (1/m) Σ_j N(x_i | x_j, σ² I),   Ĥ = −(1/n) Σ_i log p̂(x_i),
   compared with the closed form for Gaussians as n grows and as the bandwidth σ changes.
3. What its gradient does to a collapsed batch (the generator's regulariser is −λ·Ĥ): an exact collapse is a
   stationary point (the gradient is exactly 0); a nearly collapsed batch is pushed outward, radially,
   without moving its mean (Σ_i ∂Ĥ/∂x_i = 0: Ĥ is translation invariant).

Run: python demos/entropy.py [--quick] [--out DIR] [--device gpu]
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
from demo_utils import Timer, finish, heading, parser, plt, save, setup, show, table, tensor

import npgan
import npgan.functional as F
from npgan import backend
from npgan.gan.losses import kde_bandwidth

NAME = "entropy"


def shannon(p: Any) -> float:
    """H(P) = −Σ P log P with npgan's ops (terms with P_k = 0 are 0)."""
    p = np.asarray(p, dtype=np.float64)
    t = tensor(p[p > 0], dtype="float64")
    return -(t * npgan.log(t)).sum().item()


def gauss_entropy(d: int, s: float = 1.0) -> float:
    return 0.5 * d * math.log(2 * math.pi * math.e * s * s)


def part_discrete() -> dict[str, float]:
    heading("1. Shannon entropy of discrete distributions")
    rows, out = [], {}
    for key, label, p in (("coin_0.6", "coin 0.6 / 0.4", [0.6, 0.4]), ("coin_fair", "fair coin", [0.5, 0.5]),
                          ("coin_0.99", "coin 0.99 / 0.01", [0.99, 0.01]), ("certain", "certain outcome", [1.0]),
                          ("die_fair", "fair die", [1 / 6] * 6),
                          ("die_loaded", "loaded die (1/2, 1/10 x 5)", [0.5] + [0.1] * 5)):
        h = shannon(p) + 0.0  # + 0.0 turns −0.0 into 0.0
        out[key] = h
        rows.append((label, h, h / math.log(2), math.log(len(p))))
    table(("distribution", "H (nats)", "H (bits)", "max = log K"), rows)
    print("  Uniform is the maximum, log K; a certain outcome has 0. Differential entropy of N(0, s^2):")
    rows = [(s, gauss_entropy(1, s)) for s in (0.1, 1 / math.sqrt(2 * math.pi * math.e), 1.0, 2.0)]
    table(("s", "h = 0.5 log(2 pi e s^2)"), rows)
    out["gauss_s0.1"] = rows[0][1]
    return out


def estimate(x: Any, bandwidth: Any, loo: bool) -> float:
    return F.kde_entropy(tensor(x, dtype="float64"), bandwidth=bandwidth, leave_one_out=loo).item()


def part_kde_n(args: Any, rng: Any, ax: Any) -> dict[str, Any]:
    ns = [32, 128, 512] if args.quick else [32, 64, 128, 256, 512, 1024, 2048]
    reps = 3 if args.quick else 8
    heading(f"2a. KDE entropy of N(0, I_d) samples vs the closed form (d/2) log(2 pi e), {reps} draws each")
    out: dict[str, Any] = {"ns": ns}
    for d in (1, 2):
        exact = gauss_entropy(d)
        rows = []
        means = {"plain": [], "loo": []}
        for n in ns:
            est = np.array([[estimate(x, "silverman", False), estimate(x, "silverman", True)]
                            for x in (rng.standard_normal((n, d)) for _ in range(reps))])
            m, s = est.mean(0), est.std(0)
            means["plain"].append(m[0])
            means["loo"].append(m[1])
            rows.append((n, m[0], s[0], m[1], s[1], abs(m[1] - exact)))
        print(f"  d = {d}: exact {exact:.4f} nats (Silverman bandwidth)")
        table(("n", "plain mean", "plain std", "leave-one-out mean", "loo std", "|loo - exact|"), rows)
        out[f"exact_d{d}"] = exact
        out[f"plain_d{d}"] = means["plain"]
        out[f"loo_d{d}"] = means["loo"]
        out[f"loo_err_d{d}"] = [abs(v - exact) for v in means["loo"]]
        ax.semilogx(ns, means["plain"], "o-", color=f"C{d - 1}", label=f"d={d}, plain")
        ax.semilogx(ns, means["loo"], "s--", color=f"C{d - 1}", label=f"d={d}, leave-one-out")
        ax.axhline(exact, color=f"C{d - 1}", lw=0.8, ls=":")
    _plain_log_ticks(ax, ns)
    ax.set_xlabel("n samples")
    ax.set_ylabel("entropy estimate (nats)")
    ax.set_title("KDE entropy (Silverman) vs exact (dotted)")
    ax.legend(fontsize=7)
    return out


def part_kde_bandwidth(args: Any, rng: Any, ax: Any) -> dict[str, Any]:
    n, d = (256, 2) if args.quick else (1024, 2)
    heading(f"2b. The bandwidth decides the estimate: n = {n} samples of N(0, I_{d})")
    x = rng.standard_normal((n, d))
    sig = np.geomspace(0.01, 10, 13 if args.quick else 31)
    plain = np.array([estimate(x, s, False) for s in sig])
    loo = np.array([estimate(x, s, True) for s in sig])
    silver = kde_bandwidth(tensor(x), "silverman")
    exact = gauss_entropy(d)
    # For large σ, p̂ → N(0, (1 + σ²) I) and Ĥ → the cross-entropy H(p, N(0, (1 + σ²) I)) of the data against it:
    smooth = 0.5 * d * (np.log(2 * math.pi * (1 + sig ** 2)) + 1 / (1 + sig ** 2))
    tiny = math.log(n) + 0.5 * d * np.log(2 * math.pi * sig ** 2)    # plain KDE as σ → 0
    rows = [(s, p, q) for s, p, q in zip(sig, plain, loo)][:: max(1, len(sig) // 8)]
    table(("sigma", "plain", "leave-one-out"), rows)
    show("Silverman's sigma for these samples", silver)
    show("estimate at Silverman's sigma, leave-one-out", estimate(x, silver, True), f"exact {exact:.4f}")
    print("  sigma -> 0: the plain estimate falls like log n + (d/2) log(2 pi sigma^2) (each point sees only")
    print("  itself); leave-one-out rises instead. sigma -> inf: both approach the cross-entropy of the data")
    print("  against the over-smoothed N(0, (1 + sigma^2) I): (d/2)(log(2 pi (1 + sigma^2)) + 1/(1 + sigma^2)).")
    ax.semilogx(sig, plain, "o-", ms=3, label="plain")
    ax.semilogx(sig, loo, "s-", ms=3, label="leave-one-out")
    ax.semilogx(sig, smooth, "k--", lw=0.8, label="H(p, N(0, (1+sigma^2) I))")
    ax.semilogx(sig, tiny, "k:", lw=0.8, label="log n + (d/2) log(2 pi sigma^2)")
    ax.axhline(exact, color="gray", lw=0.8)
    ax.axvline(silver, color="C2", lw=0.8, label="Silverman")
    ax.set_ylim(exact - 4, exact + 4)
    _plain_log_ticks(ax)
    ax.set_xlabel("bandwidth sigma")
    ax.set_title(f"n = {n}, d = {d}: exact {exact:.3f} (gray)")
    ax.legend(fontsize=7)
    return {"sigma_grid": sig.tolist(), "plain_vs_sigma": plain.tolist(), "loo_vs_sigma": loo.tolist(),
            "silverman_sigma": silver, "exact_bw": exact}


def _plain_log_ticks(ax: Any, at: Any = None) -> None:
    """A log x-axis labelled only at ``at`` (the values plotted, as plain numbers) or at its decades: matplotlib
    labels minor ticks too when the axis spans less than about two decades, and those labels run together."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator
    if at is not None:
        ax.xaxis.set_major_locator(FixedLocator(at))
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _square_box(ax: Any, pts: Any) -> None:
    """Square limits around ``pts``, with a margin for the arrows: with ``set_aspect("equal")`` the panel keeps
    its full size, where limits that hug a wide, flat cloud (the two clumps) squash it into a strip."""
    lo, hi = pts.min(0), pts.max(0)
    c, half = (lo + hi) / 2, (hi - lo).max() / 2 * 1.3
    ax.set_xlim(c[0] - half, c[0] + half)
    ax.set_ylim(c[1] - half, c[1] + half)


def entropy_grad(x: Any, sigma: float) -> tuple[float, Any]:
    t = tensor(x, requires_grad=True, dtype="float64")
    h = F.kde_entropy(t, bandwidth=sigma)
    h.backward()
    return h.item(), backend.to_numpy(t.grad)


def part_collapse(args: Any, rng: Any, axes: Any) -> dict[str, Any]:
    n, sigma = 64, 0.2
    heading(f"3. The entropy gradient on a collapsed batch (n = {n}, sigma = {sigma}, as the ring8 preset)")
    out: dict[str, Any] = {}
    c = np.array([0.5, 0.3])
    h0, g0 = entropy_grad(np.tile(c, (n, 1)), sigma)
    out["exact_collapse_grad"] = float(np.abs(g0).max())
    show("exact collapse (all rows equal): H", h0)
    show("exact collapse: max |dH/dx|", out["exact_collapse_grad"], "a stationary point")

    x = c + rng.normal(0, 0.02, (n, 2))
    h, g = entropy_grad(x, sigma)
    r = x - x.mean(0)
    cos = (g * r).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(r, axis=1))
    out.update(near_H=h, near_cos_mean=float(cos.mean()), near_cos_min=float(cos.min()),
               near_grad_sum=float(np.abs(g.sum(0)).max()))
    show("near collapse (spread 0.02): H", h)
    show("mean cosine(dH/dx_i, x_i - mean)", out["near_cos_mean"], "1 = straight outward")
    show("min cosine", out["near_cos_min"])
    show("|sum_i dH/dx_i| (the mean does not move)", out["near_grad_sum"])
    # Analytic small-spread limit: W ≈ 1/n, so dH/dx_k ≈ 2 (x_k − mean)/(n σ²).
    lin = 2 * r / (n * sigma ** 2)
    out["near_vs_linear"] = float(np.abs(g - lin).max() / np.abs(lin).max())
    show("max |dH/dx - 2(x - mean)/(n sigma^2)| / max |.|", out["near_vs_linear"], "the small-spread limit")

    two = np.concatenate([c + rng.normal(0, 0.02, (n // 2, 2)), c + [0.25, 0.0] + rng.normal(0, 0.02, (n // 2, 2))])
    _, g2 = entropy_grad(two, sigma)

    steps = 20 if args.quick else 60
    lr = 0.02 * n * sigma ** 2  # ascent on H; the gradient carries a 1/(n σ²)
    y = x.copy()
    hs = [h]
    for _ in range(steps):
        _, gy = entropy_grad(y, sigma)
        y = y + lr * gy
        hs.append(entropy_grad(y, sigma)[0])
    out.update(ascent_steps=steps, H_start=hs[0], H_end=hs[-1], std_start=float(x.std(0).mean()),
               std_end=float(y.std(0).mean()), mean_shift=float(np.abs(y.mean(0) - x.mean(0)).max()),
               H_monotone=bool(np.all(np.diff(hs) > 0)))
    show(f"gradient ascent on H, {steps} steps: H from", hs[0])
    show("to", hs[-1])
    show("per-axis std of the batch from", out["std_start"])
    show("to", out["std_end"])
    show("how far the batch mean moved", out["mean_shift"])
    show("H increased at every step", str(out["H_monotone"]))

    a1, a2, a3 = axes
    for ax, pts, gg, title in ((a1, x, g, "near collapse: arrows = dH/dx"),
                               (a2, two, g2, "two clumps: pushed apart")):
        ax.scatter(pts[:, 0], pts[:, 1], s=8, color="C0")
        ax.quiver(pts[:, 0], pts[:, 1], gg[:, 0], gg[:, 1], color="C3", angles="xy", width=0.004)
        _square_box(ax, pts)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=10)
    from matplotlib.ticker import MaxNLocator
    for ax in axes:  # a few ticks: the equal-aspect panels are narrow, and crowded tick labels run together
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.yaxis.set_major_locator(MaxNLocator(5))
        ax.tick_params(labelsize=8)
    a3.scatter(x[:, 0], x[:, 1], s=6, color="C0", label="start")
    a3.scatter(y[:, 0], y[:, 1], s=6, color="C1", label=f"after {steps} ascent steps")
    _square_box(a3, np.concatenate([x, y]))
    a3.set_aspect("equal")
    a3.legend(fontsize=7, loc="upper right")
    a3.set_title(f"H: {hs[0]:.2f} -> {hs[-1]:.2f} nats", fontsize=10)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser(NAME, __doc__.splitlines()[0]).parse_args(argv)
    out_dir = setup(NAME, args)
    timer = Timer()
    rng = np.random.default_rng(args.seed)
    res: dict[str, Any] = {}
    res.update(part_discrete())
    pyplot = plt()
    fig = pyplot.figure(figsize=(12, 8.5), layout="constrained")  # constrained: labels and titles never overlap
    fig.get_layout_engine().set(h_pad=0.12, hspace=0.08)
    gs = fig.add_gridspec(2, 6)
    res.update(part_kde_n(args, rng, fig.add_subplot(gs[0, :3])))
    res.update(part_kde_bandwidth(args, rng, fig.add_subplot(gs[0, 3:])))
    res.update(part_collapse(args, rng, [fig.add_subplot(gs[1, 2 * k:2 * k + 2]) for k in range(3)]))
    save(fig, out_dir / "entropy.png")
    return finish(NAME, res, timer, out_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
