"""The Dirac-GAN (Mescheder, Geiger & Nowozin 2018): which training methods converge, and why, in two dimensions.

The data are a point mass at 0 (p_data = δ₀), the generator is a point mass at θ (G = δ_θ), the discriminator
is linear, D_ψ(x) = ψ·x. With f(t) = −log(1 + e^{−t}) the GAN objective, maximised by D and minimised by G, is

    L(θ, ψ) = f(D_ψ(θ)) + f(−D_ψ(0)) = f(ψθ) + f(0),

whose only equilibrium is (θ, ψ) = (0, 0). Gradient descent follows the vector field

    v(θ, ψ) = (−∂ℓ_G/∂θ, −∂ℓ_D/∂ψ),      (= (−∂L/∂θ, ∂L/∂ψ) for the minimax game)

with ℓ_G the generator's loss (non-saturating: −f(−ψθ)) and ℓ_D the discriminator's (−L, plus a penalty).
At (0, 0) its Jacobian is [[0, −f′(0)], [f′(0), −γ]] with f′(0) = 1/2 and γ the weight of the R1 penalty
(γ/2)·E‖∇ₓD(x)‖² = (γ/2)ψ²: eigenvalues ±f′(0)·i without a penalty (a rotation: simultaneous gradient descent
spirals out, alternating circles), −γ/2 ± √(γ²/4 − f′(0)²) with it (both in the left half-plane: converges).

The demo computes v with npgan.grad, the Jacobian with npgan's double backward (each row a Hessian-vector
product of the recorded gradient; with R1, whose penalty is itself a gradient, a third derivative) and checks
both against the closed forms; then runs simultaneous and alternating gradient descent for the minimax and
the non-saturating GAN, WGAN with weight clipping, WGAN-GP and the non-saturating GAN with R1 (the settings of
Mescheder's DiracGAN notebook: step 0.1, clip 0.3, WGAN-GP with target norm 0.3 and weight λ = 1/2 (its field
θ − (|ψ| − 0.3)·sign ψ), γ = 0.3; and γ = 2, past critical damping), prints the distance to (0, 0) after N
steps and draws the vector fields with both trajectories, and the distance against the step. What it finds:
simultaneous GD on the minimax GAN spirals out (v ⊥ (θ, ψ), so every step lengthens the radius), alternating
GD circles; on the non-saturating GAN simultaneous GD settles on a cycle of radius ≈ √(2h) (where its outward
drift h²‖v‖² balances the field's inward pull, of fourth order in the radius) and alternating GD creeps inward
with no linear rate; WGAN and WGAN-GP circle the equilibrium; only R1 converges, at the linear rate
max |1 + hλ| its eigenvalues predict. Derivation: docs/math.md, "The Dirac-GAN".

Run: python demos/dirac_gan.py [--quick] [--out DIR] [--seed N] [--device gpu]
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
from demo_utils import Timer, finish, heading, parser, plt, save, setup, show, table, tensor

import npgan
from npgan import backend, ops
from npgan.gan.penalties import gradient_penalty

NAME = "dirac_gan"
H = 0.1                   # step size of both players (Mescheder's notebook)
START = (1.0, 1.0)        # (θ₀, ψ₀)
CLIP = 0.3                # WGAN: ψ ∈ [−0.3, 0.3] after each step
GP_WEIGHT, GP_CENTER = 0.5, 0.3   # WGAN-GP: λ·(|∇ₓD| − c)², gradient λ·2(|ψ| − c)·sign ψ = (|ψ| − 0.3)·sign ψ
GAMMA = 0.3               # R1: (γ/2)·ψ²
GAMMAS = (0.3, 2.0)       # the R1 weights whose Jacobian is checked (γ = 2f′(0) = 1 is a double eigenvalue)
FP0 = 0.5                 # f′(0) = σ(0)
GAMMA_STRONG = 2.0        # R1 past critical damping (γ > 2f′(0)): real eigenvalues, no rotation left
METHODS = ("gan", "nsgan", "wgan", "wgan-gp", "r1", "r1-strong")
TITLES = {"gan": "minimax GAN", "nsgan": "non-saturating GAN", "wgan": f"WGAN, clipping |ψ| ≤ {CLIP}",
          "wgan-gp": f"WGAN-GP (λ = {GP_WEIGHT}, target {GP_CENTER})",
          "r1": f"non-saturating GAN + R1 (γ = {GAMMA})", "r1-strong": f"non-saturating GAN + R1 (γ = {GAMMA_STRONG})"}


def gamma_of(method: str) -> float:
    return GAMMA_STRONG if method == "r1-strong" else GAMMA


def f(t: npgan.Tensor) -> npgan.Tensor:
    """f(t) = −log(1 + e^{−t}) = log σ(t); f′(t) = σ(−t)."""
    return -ops.log(1 + ops.exp(-t))


# ============================================================================ the game, by autograd
def losses(method: str, theta: npgan.Tensor, psi: npgan.Tensor, gamma: float) -> tuple[Any, Any]:
    """(ℓ_G, ℓ_D), summed over independent games (θ, ψ of shape (M,): game i has G = δ_θᵢ, D = ψᵢ·x)."""
    def D(x: npgan.Tensor) -> npgan.Tensor:
        return psi * x

    zero = npgan.Tensor(theta.data * 0)   # the data point x = 0, once per game
    m = theta.shape[0]
    if method in ("wgan", "wgan-gp"):                          # f(t) = t: L = D(θ) − D(0)
        L = D(theta) - D(zero)
        lg = L.sum()
    else:
        L = f(D(theta)) + f(-D(zero))
        lg = (-f(-D(theta))).sum() if method != "gan" else L.sum()
    ld = -L.sum()
    if method.startswith("r1"):      # (γ/2)·‖∇ₓD(0)‖² per game: gradient_penalty is the mean over the M games
        ld = ld + (gamma / 2) * m * gradient_penalty(D, zero, kind="r1")
    elif method == "wgan-gp":
        ld = ld + GP_WEIGHT * m * gradient_penalty(D, zero, theta.detach(), kind="wgan-gp", center=GP_CENTER)
    return lg, ld


def field(method: str, theta: Any, psi: Any, create_graph: bool = False, gamma: float | None = None) -> tuple[Any, Any]:
    """v = (−∂ℓ_G/∂θ, −∂ℓ_D/∂ψ) at the leaves θ, ψ, by npgan.grad (recorded when ``create_graph``)."""
    lg, ld = losses(method, theta, psi, gamma_of(method) if gamma is None else gamma)
    gt, = npgan.grad(lg, theta, retain_graph=True, create_graph=create_graph, allow_unused=True)
    gp, = npgan.grad(ld, psi, create_graph=create_graph, allow_unused=True)
    return (-gt if gt is not None else theta * 0.0), (-gp if gp is not None else psi * 0.0)


def jacobian(method: str, gamma: float | None = None) -> np.ndarray:
    """∂v/∂(θ, ψ) at (0, 0), each row the gradient of one recorded component of v (a Hessian-vector product)."""
    theta, psi = tensor([0.0], requires_grad=True), tensor([0.0], requires_grad=True)
    v = field(method, theta, psi, create_graph=True, gamma=gamma)
    J = np.zeros((2, 2))
    for i, vi in enumerate(v):
        if not vi.requires_grad:
            continue
        for j, g in enumerate(npgan.grad(vi.sum(), [theta, psi], retain_graph=True, allow_unused=True)):
            J[i, j] = 0.0 if g is None else float(backend.to_numpy(g.data).sum())
    return J


# ============================================================================ closed forms (numpy)
def sigmoid(t: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-t))


def field_closed(method: str, th: Any, ps: Any) -> tuple[Any, Any]:
    """Mescheder's vector fields: f′(t) = σ(−t)."""
    if method == "gan":
        return -ps * sigmoid(-ps * th), th * sigmoid(-ps * th)
    if method == "nsgan":
        return -ps * sigmoid(ps * th), th * sigmoid(-ps * th)
    if method.startswith("r1"):
        return -ps * sigmoid(ps * th), th * sigmoid(-ps * th) - gamma_of(method) * ps
    if method == "wgan":
        return -ps, th + 0 * ps
    return -ps, th - 2 * GP_WEIGHT * (np.abs(ps) - GP_CENTER) * np.sign(ps)


def jacobian_closed(fp0: float, gamma: float) -> np.ndarray:
    return np.array([[0.0, -fp0], [fp0, -gamma]])


def eig_closed(fp0: float, gamma: float) -> np.ndarray:
    """−γ/2 ± √(γ²/4 − f′(0)²) (complex when γ < 2f′(0))."""
    r = np.sqrt(complex(gamma ** 2 / 4 - fp0 ** 2))
    return np.array([-gamma / 2 + r, -gamma / 2 - r])


def _sorted(e: Any) -> np.ndarray:
    e = np.asarray(e, dtype=complex)
    return e[np.lexsort((e.imag, e.real))]


# ============================================================================ gradient descent
def run(method: str, steps: int, alternating: bool) -> np.ndarray:
    """(steps + 1, 2) iterates (θ, ψ) of simultaneous or alternating gradient descent with step H."""
    xp = backend.current_xp()
    th, ps = xp.asarray([START[0]]), xp.asarray([START[1]])

    def v(th: Any, ps: Any) -> tuple[Any, Any]:
        a, b = field(method, npgan.Tensor(th, requires_grad=True), npgan.Tensor(ps, requires_grad=True))
        return a.data, b.data

    def post(ps: Any) -> Any:
        return xp.clip(ps, -CLIP, CLIP) if method == "wgan" else ps

    ps = post(ps)
    path = [(float(th[0]), float(ps[0]))]
    for _ in range(steps):
        if alternating:   # G moves first, then D answers the new θ (Mescheder's trajectory_altgd)
            th = th + H * v(th, ps)[0]
            ps = post(ps + H * v(th, ps)[1])
        else:
            a, b = v(th, ps)
            th, ps = th + H * a, post(ps + H * b)
        path.append((float(th[0]), float(ps[0])))
    return np.array(path)


# ============================================================================ figures
def plot_fields(paths: dict, grid: dict, out: Any) -> Any:
    pyplot = plt()
    fig, axes = pyplot.subplots(2, 3, figsize=(15, 10))
    for ax, method in zip(axes.ravel(), METHODS):
        th, ps, a, b = grid[method]
        ax.quiver(th, ps, a, b, color="0.45", angles="xy")
        if method == "wgan":
            ax.axhspan(-2, -CLIP, color="0.85", zorder=0)
            ax.axhspan(CLIP, 2, color="0.85", zorder=0)
        for kind, style in (("simultaneous", "C3"), ("alternating", "C0")):
            p = paths[method][kind]
            ax.plot(p[:, 0], p[:, 1], color=style, lw=1.2, label=f"{kind} GD")
        ax.plot(*START, "ko", ms=5)
        ax.plot(0, 0, "k*", ms=10)
        ax.set_xlim(-2, 2)
        ax.set_ylim(-2, 2)
        ax.set_aspect("equal")
        ax.set_xlabel("θ (generator)")
        ax.set_ylabel("ψ (discriminator)")
        ax.set_title(TITLES[method])
        ax.legend(loc="lower left", fontsize=8)
    fig.suptitle(f"Dirac-GAN: gradient vector field and trajectories (step {H}, from {START}, * = equilibrium)")
    fig.tight_layout()
    return save(fig, out / "dirac_fields.png")


def plot_distance(paths: dict, out: Any) -> Any:
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(8, 4.5))
    for k, method in enumerate(METHODS):
        for kind, ls in (("simultaneous", "-"), ("alternating", "--")):
            d = np.hypot(paths[method][kind][:, 0], paths[method][kind][:, 1])
            ax.semilogy(d, ls, color=f"C{k}", label=f"{TITLES[method]}, {kind}")
    ax.set_xlabel("step")
    ax.set_ylabel("distance to the equilibrium (0, 0)")
    ax.set_title("Dirac-GAN: only the R1 penalty converges")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save(fig, out / "dirac_distance.png")


# ============================================================================ main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser(NAME, __doc__.splitlines()[0]).parse_args(argv)
    timer = Timer()
    out = setup(NAME, args)
    was = npgan.get_default_dtype()
    npgan.set_default_dtype("float64")
    try:
        return finish(NAME, _main(args, out), timer, out)
    finally:
        npgan.set_default_dtype(was)


def _main(args: Any, out: Any) -> dict[str, Any]:
    steps = 150 if args.quick else 1000
    side = 11 if args.quick else 21
    res: dict[str, Any] = {"steps": steps, "step_size": H, "f_prime_0": FP0}

    heading("The vector field by npgan.grad against the closed form")
    g = np.linspace(-2, 2, side)
    th_np, ps_np = np.meshgrid(g, g)
    grid, errs = {}, {}
    for method in METHODS:
        npgan.manual_seed(args.seed)
        th = tensor(th_np.ravel(), requires_grad=True)
        ps = tensor(ps_np.ravel(), requires_grad=True)
        a, b = (backend.to_numpy(t.data).reshape(th_np.shape) for t in field(method, th, ps))
        ca, cb = field_closed(method, th_np, ps_np)
        errs[method] = float(max(np.abs(a - ca).max(), np.abs(b - cb).max()))
        show(f"{TITLES[method]}: max |v_npgan − v_closed| over {side}×{side} points", errs[method])
        grid[method] = (th_np, ps_np, a, b)
    res["field_error"] = max(errs.values())

    heading("The Jacobian of v at (0, 0) by double backward: closed form [[0, −f′(0)], [f′(0), −γ]]")
    cases = [("gan", 0.0), ("nsgan", 0.0)] + [("r1", gm) for gm in GAMMAS]
    eigs, rows = {}, []
    res["jacobian_error"] = res["eig_error"] = 0.0
    for method, gm in cases:
        J = jacobian(method, gm)
        e, ce = _sorted(np.linalg.eigvals(J)), _sorted(eig_closed(FP0, gm))
        jerr = float(np.abs(J - jacobian_closed(FP0, gm)).max())
        eerr = float(np.abs(e - ce).max())
        res["jacobian_error"] = max(res["jacobian_error"], jerr)
        res["eig_error"] = max(res["eig_error"], eerr)
        label = TITLES[method] if method != "r1" else f"non-saturating GAN + R1 (γ = {gm})"
        eigs[label] = {"gamma": gm, "npgan": e.tolist(), "closed": ce.tolist()}
        # one step of simultaneous GD multiplies a small deviation by I + hJ: it grows where |1 + hλ| > 1
        rho = float(np.abs(1 + H * e).max())
        rows.append([label, f"{e[0]:.6f}", f"{ce[0]:.6f}", eerr, jerr, rho])
    table(["method", "eigenvalue (npgan)", "closed form", "eig error", "J error", "max |1 + hλ|"], rows)
    res["eigenvalues"] = eigs
    show("largest Jacobian error", res["jacobian_error"], "(float64; target 1e-9)")
    show("largest eigenvalue error", res["eig_error"], "(float64; target 1e-9)")

    heading(f"Gradient descent from (θ, ψ) = {START}, step {H}, {steps} steps: distance to (0, 0)")
    paths: dict[str, dict[str, np.ndarray]] = {}
    rows, dist, curves = [], {}, {}
    for method in METHODS:
        npgan.manual_seed(args.seed)
        paths[method] = {"simultaneous": run(method, steps, False), "alternating": run(method, steps, True)}
        dist[method] = {k: float(np.hypot(*p[-1])) for k, p in paths[method].items()}
        curves[method] = {k: np.hypot(p[:, 0], p[:, 1]).tolist() for k, p in paths[method].items()}
        rows.append([TITLES[method], dist[method]["simultaneous"], dist[method]["alternating"]])
    res["start_distance"] = float(math.hypot(*START))
    table(["method", "simultaneous", "alternating"], rows)
    show("distance at the start", res["start_distance"])
    res["distance"], res["distance_curves"] = dist, curves

    heading("The non-saturating GAN's cycle under simultaneous GD: radius against √(2h)")
    # long run on the closed-form field (checked above to float64 rounding): cheap, so 10,000 steps
    th, ps = START
    radii = []
    for k in range(10_000):
        a, b = field_closed("nsgan", th, ps)
        th, ps = th + H * a, ps + H * b
        if k >= 9_000:
            radii.append(math.hypot(th, ps))
    res["nsgan_cycle_radius"] = float(np.mean(radii))
    show("mean distance over steps 9,000-10,000", res["nsgan_cycle_radius"])
    show("√(2h): outward drift h²r²/4 = inward pull 2h·r⁴/16 per step", math.sqrt(2 * H))

    heading("Figures")
    res["figures"] = [str(plot_fields(paths, grid, out)), str(plot_distance(paths, out))]
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
