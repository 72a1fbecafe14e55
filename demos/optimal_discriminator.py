"""The optimal discriminator D* = p_data/(p_data + p_g), the value V(D*, G) = −log 4 + 2·JSD, and 2 ln 2.

For a fixed generator distribution p_g, the discriminator's objective

    V(D, G) = E_{x~p_data}[log D(x)] + E_{x~p_g}[log(1 − D(x))]

is maximised pointwise: a log D + b log(1 − D) peaks at D = a/(a + b), so D*(x) = p_data(x)/(p_data(x) + p_g(x)).
Putting D* back in,

    V(D*, G) = E_data[log(p_data/(2m))] + E_g[log(p_g/(2m))] = −log 4 + KL(p_data‖m) + KL(p_g‖m)
             = −log 4 + 2·JSD(p_data‖p_g),                   m = (p_data + p_g)/2.

The demo (1) trains a discriminator alone on two known 1-D Gaussians and compares it with D*, (2) checks
the identity by quadrature, (3) lets p_g become p_data: D* = 1/2 everywhere, and the discriminator's loss as the
training loop reports it (BCE on reals + BCE on fakes = −V) settles at 2 ln 2 ≈ 1.386, not at 0.

Run: python demos/optimal_discriminator.py [--quick] [--out DIR] [--device gpu]
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
from demo_utils import Timer, finish, heading, parser, plt, save, setup, show, tensor

import npgan
from npgan import backend, nn, optim, parallel
from npgan.gan.losses import discriminator_loss

NAME = "optimal_discriminator"
DATA = (1.0, 0.6)    # p_data = N(1, 0.6²)
GEN = (-0.5, 1.0)    # p_g    = N(−0.5, 1²)


def log_gauss(x: Any, mu: float, s: float) -> Any:
    return -0.5 * ((x - mu) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))


def gauss(x: Any, mu: float, s: float) -> Any:
    return np.exp(log_gauss(x, mu, s))


def d_star(x: Any, data: tuple[float, float], gen: tuple[float, float]) -> Any:
    lp, lq = log_gauss(x, *data), log_gauss(x, *gen)
    return np.exp(lp - np.logaddexp(lp, lq))


def quad(f: Any, x: Any) -> float:
    """Trapezoid rule on the grid x (fine enough that its error is far below the digits printed)."""
    return float(np.sum((f[1:] + f[:-1]) * np.diff(x)) / 2)


def value_and_jsd(data: tuple[float, float], gen: tuple[float, float], logit: Any = None) -> tuple[float, float]:
    """(V(D, G), JSD(p_data‖p_g)), both by quadrature, in log space (no 0·log 0 in the tails).

    D = D* unless ``logit`` (x ↦ D's logit) is given: then log D = −softplus(−l), log(1 − D) = −softplus(l).
    """
    x = np.linspace(-15, 15, 300_001)
    lp, lq = log_gauss(x, *data), log_gauss(x, *gen)
    lse = np.logaddexp(lp, lq)                 # log(p + q)
    if logit is None:
        log_d, log_1md = lp - lse, lq - lse     # log D*, log(1 − D*)
    else:
        lg = logit(x)
        log_d, log_1md = -np.logaddexp(0, -lg), -np.logaddexp(0, lg)
    p, q = np.exp(lp), np.exp(lq)
    v = quad(p * log_d + q * log_1md, x)
    lm = lse - math.log(2)                     # log m, m = (p + q)/2
    jsd = (quad(p * (lp - lm), x) + quad(q * (lq - lm), x)) / 2
    return v, jsd


def make_d() -> nn.Module:
    return nn.Sequential(nn.Linear(1, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))


def d_logit(D: nn.Module, x: Any) -> Any:
    """D's logit on the host for a host grid x."""
    with npgan.no_grad():
        logits = D(tensor(np.asarray(x, dtype=np.float32).reshape(-1, 1)))
    return backend.to_numpy(logits.data).astype(np.float64).ravel()


def d_prob(D: nn.Module, x: Any) -> Any:
    """σ(D(x)) on the host for a host grid x."""
    return 1.0 / (1.0 + np.exp(-d_logit(D, x)))


def train_d(D: nn.Module, opt: Any, data: tuple[float, float], gen: tuple[float, float], steps: int,
            batch: int) -> list[float]:
    """Train D alone; returns the loop's L_D = BCE(D(x), 1) + BCE(D(fake), 0) at every step."""
    losses = []
    with parallel.fit_blas(parallel.gemm_work((D,), batch)):  # a small model: one BLAS thread, as the Trainer
        for _ in range(steps):
            real = npgan.randn(batch, 1) * data[1] + data[0]
            fake = npgan.randn(batch, 1) * gen[1] + gen[0]
            opt.zero_grad()
            loss = discriminator_loss(D(real), D(fake))
            loss.backward()
            opt.step()
            losses.append(loss.data)
    return [float(v) for v in backend.to_numpy(npgan.backend.current_xp().stack(losses))]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser(NAME, __doc__.splitlines()[0]).parse_args(argv)
    out_dir = setup(NAME, args)
    timer = Timer()
    steps = 200 if args.quick else 3000
    batch = 512
    res: dict[str, Any] = {"steps": steps}
    grid = np.linspace(-3, 3, 601)
    mix = (gauss(grid, *DATA) + gauss(grid, *GEN)) / 2
    where = mix >= 0.02  # where the two distributions put their mass (the samples D learns from)

    heading(f"1. D trained alone for {steps} steps vs D* = p_data/(p_data + p_g)")
    print(f"  p_data = N({DATA[0]}, {DATA[1]}^2), p_g = N({GEN[0]}, {GEN[1]}^2), batch {batch} of each, Adam 2e-3")
    D = make_d()
    opt = optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    losses1 = train_d(D, opt, DATA, GEN, steps, batch)
    ds, dt = d_star(grid, DATA, GEN), d_prob(D, grid)
    res["max_abs_err"] = float(np.abs(dt - ds)[where].max())
    res["mean_abs_err"] = float(np.abs(dt - ds)[where].mean())
    show("max |sigma(D(x)) - D*(x)| where (p_data+p_g)/2 >= 0.02", res["max_abs_err"],
         f"x in [{grid[where][0]:.2f}, {grid[where][-1]:.2f}]")
    show("mean |sigma(D(x)) - D*(x)| there", res["mean_abs_err"])

    heading("2. V(D*, G) = -log 4 + 2 JSD(p_data || p_g), by quadrature")
    v, jsd = value_and_jsd(DATA, GEN)
    res.update(V_quadrature=v, JSD=jsd, V_formula=-math.log(4) + 2 * jsd)
    res["V_identity_err"] = abs(v - res["V_formula"])
    show("V(D*, G) = int p_data log D* + p_g log(1 - D*)", v)
    show("JSD(p_data || p_g) = (KL(p_data||m) + KL(p_g||m))/2", jsd, "nats, <= log 2 = 0.6931")
    show("-log 4 + 2 JSD", res["V_formula"])
    show("|difference|", res["V_identity_err"])
    v_trained, _ = value_and_jsd(DATA, GEN, lambda x: d_logit(D, x))
    res["V_trained"] = v_trained
    show("V(D_trained, G) (<= V(D*, G): D* is the maximiser)", v_trained)
    res["loss_d_final"] = float(np.mean(losses1[-100:]))
    show("loop's L_D = BCE(real,1) + BCE(fake,0), last 100 steps", res["loss_d_final"],
         f"-> -V(D*, G) = {-v:.4f}")

    heading("3. When p_g = p_data: D* = 1/2 and L_D -> 2 ln 2 = 1.3863")
    res["d_dev_before"] = float(np.abs(d_prob(D, grid) - 0.5)[where].max())
    losses2 = train_d(D, opt, DATA, DATA, steps, batch)  # the same D, now facing a perfect generator
    res["d_dev_after"] = float(np.abs(d_prob(D, grid) - 0.5)[where].max())
    res["loss_d_equal"] = float(np.mean(losses2[-100:]))
    res["two_ln_2"] = 2 * math.log(2)
    v_eq, jsd_eq = value_and_jsd(DATA, DATA)
    res["V_equal"], res["JSD_equal"] = v_eq, jsd_eq
    show("max |sigma(D(x)) - 1/2| before (D trained on p_g != p_data)", res["d_dev_before"])
    show(f"max |sigma(D(x)) - 1/2| after {steps} steps on p_g = p_data", res["d_dev_after"])
    show("loop's L_D, mean of the last 100 steps", res["loss_d_equal"], "2 ln 2 = 1.3863")
    show("V(D*, G) at p_g = p_data (quadrature)", v_eq, f"-log 4 = {-math.log(4):.4f}; JSD = {jsd_eq:.1e}")
    print("  A discriminator loss of 1.386 means D can no longer tell: the equilibrium, not a failure.")

    # Separation sweep: the generator's cost C(G) = max_D V(D, G) as p_g moves away from p_data.
    mus = np.linspace(DATA[0], DATA[0] - 6, 25)
    vals = [value_and_jsd(DATA, (m, DATA[1])) for m in mus]

    pyplot = plt()
    fig, ax = pyplot.subplots(2, 2, figsize=(10, 7.5))
    a = ax[0, 0]
    a.plot(grid, gauss(grid, *DATA), "k-", lw=1, label="p_data")
    a.plot(grid, gauss(grid, *GEN), "k--", lw=1, label="p_g")
    a.plot(grid, ds, "C0", lw=2.5, label="D* = p_data/(p_data+p_g)")
    a.plot(grid, dt, "C1", lw=1.5, label=f"sigma(D(x)), trained {steps} steps")
    a.set_title(f"trained D vs D*: max error {res['max_abs_err']:.3f}")
    a.set_xlabel("x")
    a.legend(fontsize=8)
    a = ax[0, 1]
    a.plot(losses1, lw=0.5, color="C1", alpha=0.6, label="p_g != p_data")
    a.plot(np.arange(steps, 2 * steps), losses2, lw=0.5, color="C2", alpha=0.6, label="then p_g = p_data")
    a.axhline(-v, color="C0", ls="--", lw=1, label=f"-V(D*, G) = {-v:.3f}")
    a.axhline(2 * math.log(2), color="k", ls=":", lw=1, label="2 ln 2 = 1.386")
    a.set_xlabel("D step")
    a.set_ylabel("L_D = BCE(real, 1) + BCE(fake, 0)")
    a.set_title("the discriminator's loss as the loop reports it")
    a.legend(fontsize=8)
    a = ax[1, 0]
    a.plot(grid, gauss(grid, *DATA), "k-", lw=1, label="p_data = p_g")
    a.plot(grid, dt, "C1", lw=1, ls="--", label="sigma(D(x)) before")
    a.plot(grid, d_prob(D, grid), "C2", lw=2, label="sigma(D(x)) after")
    a.axhline(0.5, color="C0", lw=1, label="D* = 1/2")
    a.set_title("p_g = p_data: D unlearns to 1/2")
    a.set_xlabel("x")
    a.legend(fontsize=8)
    a = ax[1, 1]
    a.plot(DATA[0] - mus, [t[0] for t in vals], "C0", lw=3, label="V(D*, G) by quadrature")
    a.plot(DATA[0] - mus, [-math.log(4) + 2 * t[1] for t in vals], "C1--", lw=1.5, label="-log 4 + 2 JSD")
    a.axhline(-math.log(4), color="gray", lw=0.5)
    a.axhline(0, color="gray", lw=0.5)
    a.set_xlabel("distance between the means of p_data and p_g (same std)")
    a.set_title("C(G) = max_D V: from -log 4 (p_g = p_data) to 0")
    a.legend(fontsize=8)
    fig.tight_layout()
    save(fig, out_dir / "optimal_discriminator.png")
    return finish(NAME, res, timer, out_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
