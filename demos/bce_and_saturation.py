"""Cross-entropy, the sigmoid-BCE gradient, and why the generator's minimax loss saturates.

1. Cross-entropy H(P, Q) = −Σ_k P_k log Q_k of two discrete distributions, the entropy H(P) = H(P, P) and
   KL(P‖Q) = H(P, Q) − H(P) ≥ 0; binary cross-entropy is H(P, Q) for P = (t, 1 − t), Q = (σ(x), 1 − σ(x)).
2. The gradient of sigmoid-BCE with respect to the logit is σ(x) − t (÷ n for the mean): checked against
   npgan's backward, central differences and npgan.gradcheck.
3. The generator's two objectives on D's logit l = D(G(z)):
       minimax         L = log(1 − σ(l))    ∂L/∂l = −σ(l)       → 0 where D rejects the fakes (l ≪ 0)
       non-saturating  L = −log σ(l)        ∂L/∂l = σ(l) − 1    → −1 there: G keeps learning
   as curves over l, and measured on real early-training batches of a ring8 GAN whose discriminator is made
   strong (5 D steps per G step).

Run: python demos/bce_and_saturation.py [--quick] [--out DIR] [--device gpu]
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
from demo_utils import Timer, finish, heading, parser, plt, save, setup, show, table, tensor

import npgan
import npgan.functional as F
from npgan import backend, optim, parallel
from npgan.data import MIXTURES
from npgan.gan.losses import discriminator_loss, generator_loss
from npgan.run.presets import build_models, make_config

NAME = "bce_and_saturation"


def cross_entropy(p: Any, q: Any) -> float:
    """H(P, Q) = −Σ_k P_k log Q_k in nats (terms with P_k = 0 contribute 0)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    nz = p > 0
    return float(-(p[nz] * np.log(q[nz])).sum())


def part_cross_entropy() -> dict[str, float]:
    heading("1. Cross-entropy from first principles (nats)")
    P = [0.6, 0.4]
    out: dict[str, float] = {}
    rows = []
    for label, Q in (("Q = P", P), ("Q = fair coin", [0.5, 0.5]), ("Q = (0.9, 0.1)", [0.9, 0.1])):
        h = cross_entropy(P, Q)
        rows.append((label, h, h - cross_entropy(P, P)))
    table(("P = (0.6, 0.4) against", "H(P, Q)", "KL(P||Q) = H(P,Q) - H(P)"), rows)
    out["H_P"] = rows[0][1]
    out["H_P_fair"] = rows[1][1]
    out["KL_P_fair"] = rows[1][2]
    out["H_P_skewed"] = rows[2][1]
    print("  H(P, Q) is smallest, and equal to the entropy H(P), exactly when Q = P.")

    # Binary cross-entropy is H((t, 1 − t), (σ(x), 1 − σ(x))): the fused, stable npgan op against it.
    x = np.array([-6.0, -2.0, -0.5, 0.0, 0.5, 2.0, 6.0])
    t = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    s = 1.0 / (1.0 + np.exp(-x))
    by_hand = np.array([cross_entropy([ti, 1 - ti], [si, 1 - si]) for ti, si in zip(t, s)])
    xt = tensor(x, dtype="float64")
    fused = F.binary_cross_entropy_with_logits(xt, tensor(t, dtype="float64"), reduction="none").numpy()
    on_prob = F.binary_cross_entropy(F.sigmoid(xt), tensor(t, dtype="float64"), reduction="none").numpy()
    out["bce_vs_cross_entropy"] = float(np.abs(fused - by_hand).max())
    out["bce_prob_vs_logits"] = float(np.abs(on_prob - fused).max())
    show("max |BCE_with_logits - H((t,1-t), (s,1-s))|", out["bce_vs_cross_entropy"], "7 logits, float64")
    show("max |BCE(sigmoid(x)) - BCE_with_logits(x)|", out["bce_prob_vs_logits"])

    # Why the fused form: −log σ(x) for a very negative logit.
    big = -800.0
    with np.errstate(over="ignore", divide="ignore"):
        naive = float(-np.log(1.0 / (1.0 + np.exp(-big))))
    stable = F.binary_cross_entropy_with_logits(tensor([big], dtype="float64"), 1.0).item()
    out["naive_at_-800"], out["fused_at_-800"] = naive, stable
    show("-log(1/(1+exp(800))) computed naively", naive, "overflow")
    show("max(x,0) - x t + log(1+exp(-|x|)) at x=-800, t=1", stable, "exact: 800")
    return out


def part_gradient() -> dict[str, float]:
    heading("2. The gradient of mean sigmoid-BCE is (sigma(x) - t)/n")
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, size=(16, 1))
    t = (rng.random((16, 1)) < 0.5).astype(np.float64)
    xt = tensor(x, requires_grad=True, dtype="float64")
    tt = tensor(t, dtype="float64")
    F.binary_cross_entropy_with_logits(xt, tt).backward()
    analytic = (1.0 / (1.0 + np.exp(-x)) - t) / x.size
    eps = 1e-6

    def loss(v: Any) -> float:
        return F.binary_cross_entropy_with_logits(tensor(v, dtype="float64"), tt).item()

    numeric = np.zeros_like(x)
    for i in range(x.size):  # 16 elements: central differences one at a time
        e = np.zeros_like(x)
        e.flat[i] = eps
        numeric.flat[i] = (loss(x + e) - loss(x - e)) / (2 * eps)
    ok = npgan.gradcheck(lambda v: F.binary_cross_entropy_with_logits(v, tt),
                         [tensor(x, requires_grad=True, dtype="float64")])
    out = {"autograd_vs_formula": float(np.abs(backend.to_numpy(xt.grad) - analytic).max()),
           "finite_diff_vs_formula": float(np.abs(numeric - analytic).max()),
           "gradcheck": bool(ok)}
    show("max |npgan backward - (sigma(x) - t)/n|", out["autograd_vs_formula"], "16 logits, float64")
    show("max |central difference - (sigma(x) - t)/n|", out["finite_diff_vs_formula"], f"eps = {eps}")
    show("npgan.gradcheck(binary_cross_entropy_with_logits)", str(ok))
    return out


def objectives(logits: Any) -> dict[str, Any]:
    """Per-element loss and ∂L/∂logit of both generator objectives, through npgan's generator_loss."""
    res = {}
    for kind in ("minimax", "non_saturating"):
        l = tensor(np.asarray(logits, dtype=np.float64).reshape(-1, 1), requires_grad=True)
        loss, _ = generator_loss(l, kind)  # the mean over the batch
        loss.backward()
        per = F.binary_cross_entropy_with_logits(tensor(l.numpy()), 0.0 if kind == "minimax" else 1.0,
                                                 reduction="none").numpy().ravel()
        res[kind] = {"loss": -per if kind == "minimax" else per, "grad": backend.to_numpy(l.grad).ravel() * l.size}
    return res


def part_curves(fig_axes: Any) -> dict[str, float]:
    heading("3. The generator's two objectives over D's logit l (D(G(z)) = sigma(l))")
    l = np.linspace(-10, 10, 401)
    o = objectives(l)
    sig = 1.0 / (1.0 + np.exp(-l))
    out = {"mm_grad_vs_formula": float(np.abs(o["minimax"]["grad"] - (-sig)).max()),
           "ns_grad_vs_formula": float(np.abs(o["non_saturating"]["grad"] - (sig - 1)).max())}
    show("max |d/dl log(1 - sigma(l)) - (-sigma(l))| on [-10, 10]", out["mm_grad_vs_formula"])
    show("max |d/dl -log sigma(l) - (sigma(l) - 1)| on [-10, 10]", out["ns_grad_vs_formula"])
    rows = []
    for v in (-8.0, -5.0, -2.0, 0.0, 2.0):
        oo = objectives([v])
        rows.append((v, 1 / (1 + math.exp(-v)), abs(oo["minimax"]["grad"][0]), abs(oo["non_saturating"]["grad"][0])))
    table(("logit l", "D(G(z))", "|dL/dl| minimax", "|dL/dl| non-saturating"), rows)
    out["mm_grad_at_-5"], out["ns_grad_at_-5"] = rows[1][2], rows[1][3]
    print("  Where D confidently rejects the fakes (l << 0), the minimax gradient is sigma(l) ~ 0:")
    print("  the generator gets no signal exactly when it is worst. The non-saturating one stays near 1.")

    ax_loss, ax_grad = fig_axes
    ax_loss.plot(l, o["minimax"]["loss"], label="minimax  log(1 - D)")
    ax_loss.plot(l, o["non_saturating"]["loss"], label="non-saturating  -log D")
    ax_loss.set_xlabel("D's logit l on a fake")
    ax_loss.set_ylabel("generator loss")
    ax_loss.legend(fontsize=8)
    ax_loss.set_title("G's objectives (both minimised)")
    ax_grad.semilogy(l, np.abs(o["minimax"]["grad"]), label="minimax  sigma(l)")
    ax_grad.semilogy(l, np.abs(o["non_saturating"]["grad"]), label="non-saturating  1 - sigma(l)")
    ax_grad.set_xlabel("D's logit l on a fake")
    ax_grad.set_ylabel("|dL/dl|")
    ax_grad.set_title("gradient reaching G")
    return out


def part_training(args: Any, fig_axes: Any) -> dict[str, Any]:
    steps = 40 if args.quick else 300
    every = 10 if args.quick else 25
    heading(f"4. Measured on early training: ring8, {steps} steps, 5 D steps per G step, D lr 10x G's")
    cfg = make_config("ring8")
    npgan.manual_seed(args.seed)
    G, D = build_models(cfg)
    # A strong discriminator: 5 D steps per G step and a D learning rate 10x G's (the Trainer uses one rate).
    opt_g = optim.Adam(G.parameters(), lr=1e-4, betas=(0.5, 0.999))
    opt_d = optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    sampler, batch, zdim = MIXTURES["ring8"].sampler, 256, cfg.train.z_dim

    def train_step() -> None:
        with parallel.fit_blas(parallel.gemm_work((G, D), batch)):  # a small model: one BLAS thread, as the Trainer
            for _ in range(5):
                with npgan.no_grad():
                    fake = G(npgan.randn(batch, zdim))
                opt_d.zero_grad()
                discriminator_loss(D(sampler(batch)), D(fake)).backward()
                opt_d.step()
            opt_g.zero_grad()
            generator_loss(D(G(npgan.randn(batch, zdim))), "non_saturating")[0].backward()
            opt_g.step()

    z = tensor(np.random.default_rng(args.seed + 1).standard_normal((512, zdim)), dtype=backend.get_default_dtype())
    hist = []
    for s in range(steps + 1):
        if s % every == 0:
            logits = backend.to_numpy(D(G(z)).data).astype(np.float64).ravel()
            o = objectives(logits)
            gnorm = {}
            for kind in ("minimax", "non_saturating"):  # ‖∇_θG L‖ through D into G
                G.zero_grad()
                loss, _ = generator_loss(D(G(z)), kind)
                loss.backward()
                sq = [float((backend.to_numpy(p.grad).astype(np.float64) ** 2).sum()) for p in G.parameters()]
                gnorm[kind] = math.sqrt(sum(sq))
            D.zero_grad()
            hist.append({"step": s, "d_g_z": float((1 / (1 + np.exp(-logits))).mean()),
                         "mm": float(np.abs(o["minimax"]["grad"]).mean()),
                         "ns": float(np.abs(o["non_saturating"]["grad"]).mean()),
                         "gnorm_mm": gnorm["minimax"], "gnorm_ns": gnorm["non_saturating"], "logits": logits})
        if s < steps:
            train_step()
    table(("step", "mean D(G(z))", "mean|dL/dl| mm", "mean|dL/dl| ns", "|grad_G| mm", "|grad_G| ns"),
          [(h["step"], h["d_g_z"], h["mm"], h["ns"], h["gnorm_mm"], h["gnorm_ns"]) for h in hist])
    early = min(hist[1:], key=lambda h: h["d_g_z"])  # the batch where D rejects the fakes most
    out = {"train_steps": steps, "early_step": early["step"], "early_d_g_z": early["d_g_z"],
           "early_mm_grad": early["mm"], "early_ns_grad": early["ns"],
           "early_ratio": early["ns"] / early["mm"], "early_gnorm_mm": early["gnorm_mm"],
           "early_gnorm_ns": early["gnorm_ns"]}
    print(f"  At step {early['step']} D rejects the fakes most (mean D(G(z)) = {early['d_g_z']:.4f}):")
    show("mean |dL/dlogit|, minimax", early["mm"])
    show("mean |dL/dlogit|, non-saturating", early["ns"])
    show("ratio non-saturating / minimax", out["early_ratio"])
    show("|grad of G's parameters|, minimax", early["gnorm_mm"])
    show("|grad of G's parameters|, non-saturating", early["gnorm_ns"])

    ax_grad, ax_hist, ax_steps = fig_axes
    lg = early["logits"]
    ax_grad.scatter(lg, np.abs(objectives(lg)["minimax"]["grad"]), s=4, color="C0", alpha=0.5,
                    label=f"measured, step {early['step']}")
    ax_grad.scatter(lg, np.abs(objectives(lg)["non_saturating"]["grad"]), s=4, color="C1", alpha=0.5)
    ax_grad.legend(fontsize=8, loc="lower right")
    ax_hist.hist(lg, bins=40, color="gray")
    ax_hist.set_xlabel("D's logit on 512 fakes")
    ax_hist.set_title(f"step {early['step']}: mean D(G(z)) = {early['d_g_z']:.3f}")
    st = [h["step"] for h in hist]
    ax_steps.semilogy(st, [h["gnorm_mm"] for h in hist], "o-", label="minimax")
    ax_steps.semilogy(st, [h["gnorm_ns"] for h in hist], "o-", label="non-saturating")
    ax_steps.set_xlabel("training step (trained with non-saturating)")
    ax_steps.set_ylabel("|grad of G's parameters|")
    ax_steps.legend(fontsize=8)
    ax_steps.set_title("same batch, both objectives")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser(NAME, __doc__.splitlines()[0]).parse_args(argv)
    out_dir = setup(NAME, args)
    timer = Timer()
    result: dict[str, Any] = {}
    result.update(part_cross_entropy())
    result.update(part_gradient())
    pyplot = plt()
    fig, axes = pyplot.subplots(2, 2, figsize=(10, 7.5))
    result.update(part_curves((axes[0, 0], axes[0, 1])))
    result.update(part_training(args, (axes[0, 1], axes[1, 0], axes[1, 1])))
    fig.tight_layout()
    save(fig, out_dir / "saturation.png")
    return finish(NAME, result, timer, out_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
