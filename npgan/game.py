"""The spectrum of a two-player game: its vector field, Jacobian products, eigenvalues, Hessians and path angle.

Two players with parameters θ (the generator, n_G numbers) and φ (the discriminator, n_D), each minimising its
own loss, L_G(θ, φ) and L_D(θ, φ). Stacking x = (θ, φ) (n = n_G + n_D), the game's **vector field** and its
**Jacobian** are (Mescheder, Nowozin & Geiger 2017; Berard et al. 2020)

    v(x) = ( ∇_θ L_G ,  ∇_φ L_D ),        J(x) = ∂v/∂x = [[ ∇²_θθ L_G ,  ∇²_θφ L_G ],
                                                         [ ∇²_φθ L_D ,  ∇²_φφ L_D ]].

Simultaneous gradient descent is x ← x − η v(x); near a stationary point x* (v(x*) = 0) one step multiplies the
deviation by I − ηJ, so it converges for small η iff every eigenvalue λ of J(x*) has Re λ > 0 (and for a given
η iff every |1 − ηλ| < 1). Large imaginary parts mean rotation; the eigenvalues that threaten convergence are
those with the smallest real parts (``which="SR"``). The diagonal blocks are the players' own Hessians
H_G = ∇²_θθ L_G and H_D = ∇²_φφ L_D (symmetric): x* is a local Nash equilibrium when both are positive
semi-definite there. docs/math.md, "The spectrum of the game", derives all of this.

**Products, no finite differences.** Both losses' gradients with respect to all of x are recorded with
``npgan.grad(..., create_graph=True)``: g_G = ∇_x L_G, g_D = ∇_x L_D, so v = ((g_G)_θ, (g_D)_φ) is a function of x
in the graph. Then, for vectors u (the flat layout of x: θ's parameters, then φ's, each flattened in order):

* ``J^T u = ∇_x ⟨u, v(x)⟩`` — one backward pass through v's graph (a vector–Jacobian product);
* ``J u`` by **Hessian rows** (the default): the θ-rows of J are rows of L_G's full Hessian ∇²_xx L_G, which is
  symmetric, so (J u)_θ = ∇²_θx L_G u = ∇_θ ⟨g_G, u⟩ and likewise (J u)_φ = ∇_φ ⟨g_D, u⟩ — two backward passes
  (Pearlmutter's Hessian-vector product, one per loss), second derivatives only;
* ``J u`` by the **double-vjp trick** (``jvp_method="double_vjp"``), which needs no symmetry: with a dummy vector
  w (any value; zeros), y(w) = J^T w = ∇_x⟨w, v⟩ is recorded (a backward pass with ``create_graph=True``); y is
  linear in w, and ⟨u, y(w)⟩ = ⟨u, J^T w⟩ = ⟨J u, w⟩, so J u = ∇_w ⟨u, y(w)⟩ — one more backward pass, through
  y's graph, along the paths that lead to w only. It differentiates the losses three times (four with a gradient
  penalty) where Hessian rows need two (three), and records y besides; the two agree to round-off and
  :meth:`Game.check` compares them. npgan has no forward mode, so forward-over-reverse is not offered (it would
  need a tangent rule per op);
* ``H_G u_θ = ∇_θ ⟨u_θ, (g_G)_θ⟩`` and ``H_D u_φ`` likewise — each player's Hessian-vector product, one pass.

With the graphs kept (:class:`Linearization`), every further product is only its last backward pass(es).

**Eigenvalues** of J (non-symmetric: complex, in conjugate pairs) by a restarted Arnoldi method, of H_G and H_D
(symmetric: real) by the same method with a symmetric projection — Lanczos with full reorthogonalisation — in
:func:`eigs` / :func:`eigsh`. Both keep their Krylov basis in the operator's array module (NumPy or CuPy) in
float64 and only the small projected matrix on the host. Each eigenvalue λ comes with its residual
‖J x − λ x‖ / ‖x‖, computed with one more product per eigenvector (two for a complex one), not estimated.

**Path angle** (Berard et al. 2020): for two points x_0, x_1 (e.g. two checkpoints) and x_t = x_0 + t (x_1 − x_0),
the cosine between v(x_t) and the direction x_1 − x_0, and ‖v(x_t)‖, along t (:meth:`Game.path_angle`).

**What is fixed.** A :class:`Game` evaluates its ``losses`` callable at the current parameters: it must use a fixed
batch (fixed z, fixed real data) for v to be a function of x. With ``modules`` given, every evaluation runs with
Dropout off and BatchNorm in the asked mode ("eval": running statistics; "batch": the batch's own statistics,
as in a training step), and restores afterwards every module's ``training`` flag and every buffer (the running
statistics that a batch-mode forward updates); with ``fixed_rng`` the random generator is set to the state it had
when the Game was made before every evaluation (a loss that draws, e.g. WGAN-GP's interpolation weights, draws
the same numbers each time) and restored after. Parameters are set for an evaluation and restored afterwards:
analysing a model never changes it.

Example (2-D GAN; see :func:`from_models`)::

    game = npgan.game.from_models(G, D, z, real, g_loss=lambda d_fake, fake: bce(d_fake, 1.0),
                                  d_loss=lambda d_real, d_fake: bce(d_real, 1.0) + bce(d_fake, 0.0))
    spec = game.eigs(k=20, which="LM")            # top-20 eigenvalues of J by magnitude, with residuals
    print(spec.report())
    with game.linearize() as lin:                  # keep the graphs: each product is then its last pass(es)
        ju, jtu = lin.jvp(u), lin.vjp(u)

Cost: a :class:`Linearization` holds the recorded gradients' graphs (a few times one training step's graph; with
"double_vjp" also y's); a J u through them costs about two training steps. The Krylov basis holds (ncv + 1)
float64 vectors of length n. ``import npgan.game``: the module is not imported by ``import npgan``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import backend
from .autograd import grad
from .gradcheck import GradcheckError
from .nn.module import Module
from .tensor import Tensor

__all__ = ["Game", "Linearization", "Spectrum", "PathAngle", "CheckReport", "from_models", "eigs", "eigsh",
           "BATCHNORM_MODES", "WHICH", "WHICH_SYMMETRIC", "JVP_METHODS"]

np = backend.np
BATCHNORM_MODES = ("eval", "batch")
# sort keys: the wanted eigenvalues come first
WHICH = {"LM": lambda w: -abs(w), "LR": lambda w: -w.real, "SR": lambda w: w.real, "LI": lambda w: -abs(w.imag)}
WHICH_SYMMETRIC = {"LA": lambda w: -w, "SA": lambda w: w, "LM": lambda w: -abs(w)}


# ============================================================================ Krylov eigen-solvers
@dataclass
class Spectrum:
    """Eigenvalues from :func:`eigs` / :func:`eigsh`, best first by ``which``.

    values: (k,) complex (eigs) or float (eigsh), host NumPy. residuals: ‖A x − λ x‖ / ‖x‖ per eigenvalue, computed
    with the operator. converged: whether the Ritz estimate met ``tol`` · ρ (ρ = the largest |Ritz value|, the
    operator's scale). vectors: (n, k) eigenvectors in the operator's array module, when asked.
    """

    values: Any
    residuals: Any
    converged: Any
    which: str
    tol: float
    matvecs: int
    restarts: int
    seconds: float
    scale: float
    vectors: Any = None

    @property
    def all_converged(self) -> bool:
        return bool(np.all(self.converged))

    def report(self) -> str:
        """A table: index, eigenvalue, |λ|, residual ‖Ax − λx‖/‖x‖, residual / ρ, converged."""
        lines = [f"{len(self.values)} eigenvalues ({self.which}), {self.matvecs} products, {self.restarts} restarts, "
                 f"{self.seconds:.2f} s; scale ρ = {self.scale:.6g}, tol {self.tol:g}",
                 f"{'#':>3} {'eigenvalue':>34} {'|λ|':>12} {'residual':>10} {'res/ρ':>10}  ok"]
        for i, (lam, r, c) in enumerate(zip(self.values, self.residuals, self.converged)):
            s = f"{lam.real:.10g} {'+' if lam.imag >= 0 else '-'} {abs(lam.imag):.6g}i" \
                if np.iscomplexobj(self.values) else f"{lam:.10g}"
            lines.append(f"{i:>3} {s:>34} {abs(lam):>12.6g} {r:>10.3g} {r / max(self.scale, 1e-300):>10.3g}  "
                         f"{'yes' if c else 'no'}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        vals = [[float(v.real), float(v.imag)] if np.iscomplexobj(self.values) else float(v) for v in self.values]
        return {"which": self.which, "values": vals, "residuals": [float(r) for r in self.residuals],
                "converged": [bool(c) for c in self.converged], "tol": self.tol, "matvecs": self.matvecs,
                "restarts": self.restarts, "seconds": self.seconds, "scale": self.scale}


def _groups(theta: Any) -> list[list[int]]:
    """Indices of ``theta`` (eigenvalues of a real matrix, as numpy's eig orders them: a conjugate pair adjacent,
    positive imaginary part first) grouped: [i] for a real one, [i, i+1] for a pair."""
    out, i = [], 0
    while i < len(theta):
        if theta[i].imag != 0 and i + 1 < len(theta) and theta[i + 1] == np.conj(theta[i]):
            out.append([i, i + 1])
            i += 2
        else:
            out.append([i])
            i += 1
    return out


def _ordered(theta: Any, key: Callable[[Any], Any], symmetric: bool) -> tuple[list[int], list[list[int]]]:
    """(indices best first, the groups best first): a conjugate pair stays together, its +imag member first."""
    groups = [[i] for i in range(len(theta))] if symmetric else _groups(theta)
    groups.sort(key=lambda g: key(theta[g[0]]))
    return [i for g in groups for i in g], groups


def _schur_basis(Hm: Any, theta: Any, Y: Any, keep: list[int]) -> Any:
    """A real orthonormal basis Q (m, p) of the invariant subspace of ``Hm`` for the eigenvalues ``theta[keep]``
    (closed under conjugation): H Q = Q T.

    First the kept eigenvectors' real and imaginary parts, orthonormalised (QR), accepted when
    ‖H Q − Q QᵀHQ‖_F ≤ 1e-12·‖H‖_F. When eigenvectors are nearly parallel (two close eigenvalues, a nearly
    defective H) that span is inaccurate, and the basis is built by deflation instead: for each kept eigenvalue an
    eigenvector x of the deflated matrix (backward stable: a small residual even when x is ill-conditioned), then
    the deflation onto x's orthogonal complement. The complex Schur vectors q_1..q_p so found span the subspace;
    as it is closed under conjugation, the real matrix [Re Q, Im Q] has p singular values 1 (its column space, real,
    is the subspace) and the rest 0, so its p leading left singular vectors are the real basis."""
    cols = []
    for i in keep:
        if theta[i].imag == 0:
            cols.append(Y[:, i].real)
        elif theta[i].imag > 0:
            cols += [Y[:, i].real, Y[:, i].imag]
    Q, _ = np.linalg.qr(np.stack(cols, axis=1))
    HQ = Hm @ Q
    if np.linalg.norm(HQ - Q @ (Q.T @ HQ)) <= 1e-12 * np.linalg.norm(Hm):
        return Q
    m = Hm.shape[0]
    A = Hm.astype(complex)
    U = np.eye(m, dtype=complex)
    qs = []
    for lam in theta[keep]:
        w, X = np.linalg.eig(A)
        x = X[:, int(np.argmin(np.abs(w - lam)))]
        q, _ = np.linalg.qr(x[:, None] / np.linalg.norm(x), mode="complete")
        qs.append(U @ q[:, 0])
        B = q[:, 1:]
        U = U @ B
        A = B.conj().T @ A @ B
    Qc = np.stack(qs, axis=1)
    Ur, _, _ = np.linalg.svd(np.concatenate([Qc.real, Qc.imag], axis=1), full_matrices=False)
    return Ur[:, :len(keep)]


def _krylov(matvec: Callable[[Any], Any], n: int, k: int, which: str, symmetric: bool, ncv: int | None,
            tol: float | None, max_restarts: int, seed: int, v0: Any, like: Any, op_dtype: Any,
            return_vectors: bool) -> Spectrum:
    """Thick-restarted Arnoldi (Krylov–Schur, Stewart 2001) / Lanczos (Wu & Simon 2000); see :func:`eigs`."""
    name = "eigsh" if symmetric else "eigs"
    keys = WHICH_SYMMETRIC if symmetric else WHICH
    if which not in keys:
        raise ValueError(f"{name}: unknown which {which!r}; choose one of {', '.join(keys)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name}: the operator's size n must be an integer >= 1, got {n!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"{name}: k must be an integer in [1, n = {n}], got {k!r}")
    if ncv is not None and (isinstance(ncv, bool) or not isinstance(ncv, (int, np.integer)) or ncv < 1):
        raise ValueError(f"{name}: ncv must be an integer >= 1 (or None), got {ncv!r}")
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, (int, np.integer)) or max_restarts < 0:
        raise ValueError(f"{name}: max_restarts must be an integer >= 0, got {max_restarts!r}")
    if tol is None:
        tol = 1e-10 if np.dtype(op_dtype) == np.float64 else 1e-4
    elif isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not 0 < tol < 1:
        raise ValueError(f"{name}: tol must be a number in (0, 1), got {tol!r}")
    m = min(n, max(int(ncv) if ncv is not None else 0, 2 * k + 1, 20))  # the basis size: more than k, at most n
    key = keys[which]
    xp = backend.get_array_module(like) if like is not None else np
    dev = backend.device_of(like) if like is not None else "cpu"
    f64 = np.float64
    rs = np.random.default_rng(seed)

    def to_dev(a: Any, dtype: Any = f64) -> Any:
        return backend.asarray(a, dtype=dtype, device=dev)

    def mv(x: Any) -> Any:
        y = matvec(x)
        if y.shape != (n,):
            raise ValueError(f"{name}: the operator returned shape {tuple(y.shape)} for a vector of shape ({n},)")
        return y.astype(f64, copy=False)

    t0 = time.perf_counter()
    V = xp.zeros((m + 1, n), dtype=f64)
    H = np.zeros((m + 1, m))
    start = to_dev(rs.standard_normal(n)) if v0 is None else to_dev(v0).reshape(-1)
    if start.shape != (n,):
        raise ValueError(f"{name}: v0 has {start.size} elements, the operator's size is {n}")
    nrm = float(xp.linalg.norm(start))
    if not nrm > 0 or not math.isfinite(nrm):
        raise ValueError(f"{name}: the start vector v0 has norm {nrm}")
    V[0] = start / nrm
    p, nmv, restarts = 0, 0, 0
    while True:
        for j in range(p, m):
            w = mv(V[j])
            nmv += 1
            Vj = V[:j + 1]
            h = Vj @ w                       # classical Gram–Schmidt, twice (CGS2): orthogonal to working accuracy
            w = w - h @ Vj
            h2 = Vj @ w
            w = w - h2 @ Vj
            H[:j + 1, j] = backend.to_numpy(h + h2)
            beta = float(xp.linalg.norm(w))
            if j + 1 >= n:                   # the whole space is spanned: nothing is left outside it
                H[j + 1, j] = 0.0
            elif beta > 1e-12 * max(np.abs(H[:j + 2, j]).max(), 1e-300):
                H[j + 1, j] = beta
                V[j + 1] = w / beta
            else:                            # an invariant subspace: go on with a fresh direction, uncoupled
                H[j + 1, j] = 0.0
                r = to_dev(rs.standard_normal(n))
                for _ in range(2):
                    r = r - (Vj @ r) @ Vj
                V[j + 1] = r / float(xp.linalg.norm(r))
        Hm, b = H[:m, :m].copy(), H[m, :m].copy()
        if symmetric:
            theta, Y = np.linalg.eigh((Hm + Hm.T) / 2)
        else:
            theta, Y = np.linalg.eig(Hm)
        order, groups = _ordered(theta, key, symmetric)
        est = np.abs(b @ Y)                  # ‖A V y − θ V y‖ = |bᵀ y| for ‖y‖ = 1: the Ritz residual
        scale = float(np.abs(theta).max()) if theta.size else 0.0
        wanted = order[:k]
        if bool(np.all(est[wanted] <= tol * scale)) or restarts >= max_restarts:
            break
        # thick restart: keep about half of the basis, the best Ritz directions (a conjugate pair never split)
        keep, target = [], max(k, (m + k) // 2)
        for g in groups:
            if len(keep) >= target or len(keep) + len(g) > m - 1:
                break
            keep.extend(g)
        p = len(keep)
        Q = Y[:, keep] if symmetric else _schur_basis(Hm, theta, Y, keep)
        T = Q.T @ Hm @ Q
        newV = to_dev(Q).T @ V[:m]
        V[:p] = newV
        V[p] = V[m]
        H[:] = 0.0
        H[:p, :p] = T
        H[p, :p] = b @ Q
        restarts += 1
    # eigenvectors and true residuals ‖A x − θ x‖ / ‖x‖
    Yw = Y[:, wanted]
    X = V[:m].T @ to_dev(Yw, complex if not symmetric else f64)
    vals = theta[wanted]
    res = np.zeros(k)
    done: dict[int, float] = {}
    for i in range(k):
        lam = vals[i]
        x = X[:, i]
        if not symmetric and lam.imag < 0 and any(np.conj(lam) == vals[j] for j in done):
            res[i] = done[next(j for j in done if vals[j] == np.conj(lam))]
            continue
        if symmetric or lam.imag == 0:
            xr = x.real if not symmetric else x
            ax = mv(xr)
            r = float(xp.linalg.norm(ax - lam.real * xr)) / max(float(xp.linalg.norm(xr)), 1e-300)
        else:
            ax = mv(xp.ascontiguousarray(x.real)) + 1j * mv(xp.ascontiguousarray(x.imag))
            r = float(xp.linalg.norm(ax - lam * x)) / max(float(xp.linalg.norm(x)), 1e-300)
        nmv += 1 if (symmetric or lam.imag == 0) else 2
        res[i] = done[i] = r
    return Spectrum(values=vals, residuals=res, converged=est[wanted] <= tol * scale, which=which, tol=float(tol),
                    matvecs=nmv, restarts=restarts, seconds=time.perf_counter() - t0, scale=scale,
                    vectors=X if return_vectors else None)


def eigs(matvec: Callable[[Any], Any], n: int, k: int = 6, which: str = "LM", ncv: int | None = None,
         tol: float | None = None, max_restarts: int = 300, seed: int = 0, v0: Any = None, like: Any = None,
         dtype: Any = "float64", return_vectors: bool = False) -> Spectrum:
    """The k eigenvalues of a real n×n operator A, best first by ``which``, by thick-restarted Arnoldi.

    ``which``: "LM" largest magnitude, "LR" largest real part, "SR" smallest real part, "LI" largest |imaginary
    part| (:data:`WHICH`). ``matvec(x)`` returns A x for a float64 vector x of shape (n,) in the array module of
    ``like`` (NumPy when None); ``dtype`` is the operator's precision, which sets the default ``tol``.

    Method (Krylov–Schur, Stewart 2001, restarted with a Schur basis instead of implicit QR shifts). An Arnoldi
    basis V (m = ``ncv`` orthonormal vectors, CGS2) gives A V = V H + v bᵀ, H the m×m projection. The Ritz pairs
    (θ, V y) of H have residual ‖A V y − θ V y‖ = |bᵀ y|. Until the k wanted ones have |bᵀ y| ≤ tol·ρ (ρ = max |θ|,
    the operator's scale), keep p ≈ (m + k)/2 of the best Ritz values: with Q (m×p, real orthonormal) a basis of
    H's invariant subspace for them, H Q = Q T and A (V Q) = (V Q) T + v (bᵀ Q) is again a Krylov relation; the
    Arnoldi process goes on from v. Q is built by deflation (one eigenvector at a time, backward stable) and made
    real from the complex Schur vectors (the kept set is closed under conjugation). Default ``ncv`` max(2k + 1,
    20) (at most n); default ``tol`` 1e-10 for a float64 operator, 1e-4 for float32.

    Returns a :class:`Spectrum`; the residuals ‖A x − λ x‖/‖x‖ are computed with ``matvec`` (one product per real
    eigenvalue, two per complex pair). Not converging within ``max_restarts`` is not an error: ``converged`` says
    which met the tolerance. A conjugate pair split by k: only its first member is returned.
    """
    return _krylov(matvec, n, k, which, False, ncv, tol, max_restarts, seed, v0, like, dtype, return_vectors)


def eigsh(matvec: Callable[[Any], Any], n: int, k: int = 6, which: str = "LA", ncv: int | None = None,
          tol: float | None = None, max_restarts: int = 300, seed: int = 0, v0: Any = None, like: Any = None,
          dtype: Any = "float64", return_vectors: bool = False) -> Spectrum:
    """The k eigenvalues of a real symmetric operator, best first by ``which`` ("LA" largest, "SA" smallest,
    "LM" largest magnitude), by thick-restarted Lanczos (Wu & Simon 2000) with full reorthogonalisation: the
    Arnoldi process of :func:`eigs` on a symmetric A, whose projection is symmetric (tridiagonal but for the
    restart's arrow), restarted with its orthonormal eigenvectors. Arguments and result as :func:`eigs`'s."""
    return _krylov(matvec, n, k, which, True, ncv, tol, max_restarts, seed, v0, like, dtype, return_vectors)


# ============================================================================ the game
@dataclass
class PathAngle:
    """The field along x_t = x_0 + t (x_1 − x_0): for each t, cos ∠(v(x_t), x_1 − x_0) for the whole game and per
    player (v_θ against θ_1 − θ_0, v_φ against φ_1 − φ_0; nan where a vector is 0), the angle in degrees, the
    norms ‖v‖, ‖v_θ‖, ‖v_φ‖ and the two losses. Host NumPy arrays."""

    t: Any
    cos: Any
    cos_g: Any
    cos_d: Any
    norm: Any
    norm_g: Any
    norm_d: Any
    loss_g: Any
    loss_d: Any
    distance: float

    @property
    def angle(self) -> Any:
        return np.degrees(np.arccos(np.clip(self.cos, -1.0, 1.0)))

    def as_dict(self) -> dict:
        out: dict[str, Any] = {k: [float(v) for v in getattr(self, k)]
                               for k in ("t", "cos", "cos_g", "cos_d", "norm", "norm_g", "norm_d", "loss_g", "loss_d")}
        out["angle"] = [float(a) for a in self.angle]
        out["distance"] = self.distance
        return out


@dataclass
class CheckReport:
    """Rows (what, analytic, numeric, abs error, tolerance, ok) of :meth:`Game.check`; ``str()`` is a table."""

    rows: list[tuple[str, float, float, float, float, bool]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r[5] for r in self.rows)

    def __str__(self) -> str:
        lines = [f"{'check':<52} {'analytic':>13} {'numeric':>13} {'abs error':>10} {'tolerance':>10}  ok"]
        lines += [f"{w:<52} {a:>13.6g} {b:>13.6g} {e:>10.3g} {t:>10.3g}  {'yes' if ok else 'NO'}"
                  for w, a, b, e, t, ok in self.rows]
        return "\n".join(lines)


class Game:
    """A two-player game: each player's parameters and a callable returning (L_G, L_D) at the current parameters.

    Args:
        params_g, params_d: the players' parameters (Tensors with ``requires_grad``; one dtype, one device).
        losses: ``losses() -> (L_G, L_D)``, two one-element Tensors computed from the parameters on a fixed batch.
        modules: the modules that ``losses`` runs (for ``batchnorm``, Dropout and buffer restoring); may be empty.
        batchnorm: "batch" (BatchNorm normalises with the batch's statistics, as in a training step; its running
            statistics are restored after each evaluation) or "eval" (running statistics). Other modules run in
            eval mode (Dropout off), whatever the mode.
        fixed_rng: reset npgan's random generator before each evaluation to its state now (and restore it after).
        names_g, names_d: the parameters' names (for :meth:`flat_from`); :func:`from_models` sets them.

    Flat vectors (x, u, v) have n = n_G + n_D entries: θ's parameters, then φ's, each flattened (C order), in the
    parameters' dtype and on their device; an argument may also be a host array or a Tensor.
    """

    def __init__(self, params_g: Sequence[Tensor], params_d: Sequence[Tensor],
                 losses: Callable[[], tuple[Tensor, Tensor]], modules: Sequence[Module] = (),
                 batchnorm: str = "batch", fixed_rng: bool = True, names_g: Sequence[str] | None = None,
                 names_d: Sequence[str] | None = None) -> None:
        pg, pd = self._check_params("params_g", params_g), self._check_params("params_d", params_d)
        every = pg + pd
        if len({id(p) for p in every}) != len(every):
            raise ValueError("Game: a parameter appears twice (in params_g and params_d, or twice in one list)")
        dtypes = {str(p.dtype) for p in every}
        devices = {p.device for p in every}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(f"Game: the parameters must share one dtype and one device, got dtypes "
                             f"{sorted(dtypes)} on devices {sorted(devices)}")
        if not callable(losses):
            raise TypeError(f"Game: losses must be a callable returning (L_G, L_D), got {type(losses).__name__}")
        if batchnorm not in BATCHNORM_MODES:
            raise ValueError(f"Game: unknown batchnorm mode {batchnorm!r}; choose one of {', '.join(BATCHNORM_MODES)}")
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Game: modules[{i}] is a {type(m).__name__}, not an npgan.nn.Module")
        self.params_g, self.params_d, self.params = pg, pd, every
        self.losses, self.modules, self.batchnorm = losses, list(modules), batchnorm
        self.n_g = sum(int(p.size) for p in pg)
        self.n_d = sum(int(p.size) for p in pd)
        self.n = self.n_g + self.n_d
        self.dtype = every[0].dtype
        self.device = every[0].device
        self.names_g = list(names_g) if names_g is not None else None
        self.names_d = list(names_d) if names_d is not None else None
        self._rng_state = backend.get_rng_state() if fixed_rng else None
        offs = [0]
        for p in every:
            offs.append(offs[-1] + int(p.size))
        self._offsets = offs

    @staticmethod
    def _check_params(name: str, ps: Sequence[Tensor]) -> list[Tensor]:
        ps = list(ps)
        if not ps:
            raise ValueError(f"Game: {name} is empty; each player needs at least one parameter")
        for i, p in enumerate(ps):
            if not isinstance(p, Tensor) or not p.requires_grad or p.dtype.kind != "f":
                raise TypeError(f"Game: {name}[{i}] must be a float Tensor with requires_grad=True, got "
                                f"{type(p).__name__}" + (f" of dtype {p.dtype}" if isinstance(p, Tensor) else ""))
        return ps

    # ------------------------------------------------------------------ flat vectors
    def _xp(self) -> Any:
        return backend.get_array_module(self.params[0].data)

    def vector(self, u: Any, what: str = "u") -> Any:
        """``u`` (array, host array or Tensor, n entries) as a flat array in the game's dtype, on its device."""
        if isinstance(u, Tensor):
            u = u.data
        a = backend.asarray(u, dtype=self.dtype, device=self.device).reshape(-1)
        if a.shape != (self.n,):
            raise ValueError(f"Game: {what} has {a.size} entries, the game has n = {self.n} parameters "
                             f"({self.n_g} for G, {self.n_d} for D)")
        return a

    def _parts(self, u: Any, lo: int = 0, hi: int | None = None) -> list[Any]:
        """Views of the flat ``u`` as the shapes of parameters lo..hi (all by default)."""
        hi = len(self.params) if hi is None else hi
        o, base = self._offsets, self._offsets[lo]
        return [u[o[i] - base:o[i + 1] - base].reshape(self.params[i].shape) for i in range(lo, hi)]

    def _flat(self, parts: Sequence[Any], lo: int = 0, hi: int | None = None) -> Any:
        """One flat array of ``parts`` (arrays, Tensors or None = zeros) for parameters lo..hi."""
        hi = len(self.params) if hi is None else hi
        xp = self._xp()
        out = []
        for p, a in zip(self.params[lo:hi], parts):
            a = a.data if isinstance(a, Tensor) else a
            out.append(xp.zeros(int(p.size), dtype=self.dtype) if a is None else a.reshape(-1).astype(self.dtype))
        return xp.concatenate(out)

    def get_flat(self) -> Any:
        """The current parameters as one flat array (a copy)."""
        return self._flat([p.data for p in self.params])

    def split(self, u: Any) -> tuple[Any, Any]:
        """(u_θ, u_φ): the two players' parts of a flat vector (views)."""
        u = self.vector(u)
        return u[:self.n_g], u[self.n_g:]

    def flat_from(self, state_g: Any, state_d: Any) -> Any:
        """The flat x of two state dicts (name → array, e.g. a checkpoint's G and D weights), by the parameters'
        names (``names_g``, ``names_d``; :func:`from_models` sets them)."""
        if self.names_g is None or self.names_d is None:
            raise ValueError("Game.flat_from needs the parameters' names: build the game with from_models, or pass "
                             "names_g and names_d")
        parts = []
        for who, names, state, ps in (("G", self.names_g, state_g, self.params_g),
                                      ("D", self.names_d, state_d, self.params_d)):
            missing = [k for k in names if k not in state]
            if missing:
                raise ValueError(f"Game.flat_from: the {who} state lacks {', '.join(missing)}")
            for k, p in zip(names, ps):
                a = state[k].data if isinstance(state[k], Tensor) else state[k]
                a = backend.asarray(a, dtype=self.dtype, device=self.device)
                if tuple(a.shape) != p.shape:
                    raise ValueError(f"Game.flat_from: {who} {k!r} has shape {tuple(a.shape)}, the parameter "
                                     f"{p.shape}")
                parts.append(a)
        return self._flat(parts)

    # ------------------------------------------------------------------ evaluation
    @contextlib.contextmanager
    def at(self, x: Any = None) -> Iterator[None]:
        """Within the block, the parameters hold ``x`` (fresh copies; the current values when None), BatchNorm and
        Dropout are in the game's modes, and the random generator is at the game's state; all restored after."""
        saved = [p.data for p in self.params]
        src = saved if x is None else self._parts(self.vector(x, "x"))
        mods = [m for top in self.modules for m in top.modules()]
        flags = [(m, m.training) for m in mods]
        bufs = [(b, b.copy()) for top in self.modules for _, b in top.named_buffers()]
        rng = backend.get_rng_state() if self._rng_state is not None else None
        try:
            for p, a in zip(self.params, src):  # copies: a graph recorded here never sees a later in-place change
                p.data = a.reshape(p.shape).copy()
            for m in mods:  # a batch norm (a module that mixes the batch) in training mode for "batch"
                object.__setattr__(m, "training", self.batchnorm == "batch" and getattr(m, "mixes_batch", False))
            if rng is not None:
                backend.set_rng_state(self._rng_state)
            yield
        finally:
            for p, a in zip(self.params, saved):
                p.data = a
            for m, flag in flags:
                object.__setattr__(m, "training", flag)
            for b, copy in bufs:
                b[...] = copy
            if rng is not None:
                backend.set_rng_state(rng)

    def _losses(self) -> tuple[Tensor, Tensor]:
        out = self.losses()
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError(f"Game: losses() must return (L_G, L_D), got {type(out).__name__}")
        for who, t in zip(("L_G", "L_D"), out):
            if not isinstance(t, Tensor) or t.size != 1:
                raise TypeError(f"Game: losses() returned {who} as "
                                + (f"a Tensor of shape {t.shape}" if isinstance(t, Tensor) else type(t).__name__)
                                + "; it must be a one-element Tensor")
        return out[0], out[1]

    @staticmethod
    def _grads(loss: Tensor, ps: list[Tensor], create_graph: bool, retain: bool) -> list[Any]:
        """∇ loss with respect to each of ``ps`` (None where the loss does not depend on one)."""
        if not loss.requires_grad:
            return [None] * len(ps)
        return list(grad(loss, ps, retain_graph=retain, create_graph=create_graph, allow_unused=True))

    def _field_parts(self, lg: Tensor, ld: Tensor) -> list[Any]:
        """[∇_θ L_G parts..., ∇_φ L_D parts...] as raw-backward Tensors (None where a loss does not depend on one)."""
        return self._grads(lg, self.params_g, False, True) + self._grads(ld, self.params_d, False, False)

    def evaluate(self, x: Any = None) -> tuple[float, float, Any]:
        """(L_G, L_D, v) at ``x`` (the current parameters when None): the losses as floats and the flat field."""
        with self.at(x):
            lg, ld = self._losses()
            v = self._flat(self._field_parts(lg, ld))
            return float(lg.data.reshape(())), float(ld.data.reshape(())), v

    def field(self, x: Any = None) -> Any:
        """v(x) = (∇_θ L_G, ∇_φ L_D), flat."""
        return self.evaluate(x)[2]

    def linearize(self, x: Any = None, jvp_method: str = "hessian") -> Linearization:
        """The game linearised at ``x``: the players' gradients recorded, for products with J, Jᵀ and the Hessians
        (``jvp_method``: see :class:`Linearization`)."""
        return Linearization(self, x, jvp_method)

    def jvp(self, u: Any, x: Any = None, jvp_method: str = "hessian") -> Any:
        """J(x) u, flat (records the graphs, one product, frees them; see :class:`Linearization` to reuse)."""
        with self.linearize(x, jvp_method) as lin:
            return lin.jvp(u)

    def vjp(self, u: Any, x: Any = None) -> Any:
        """J(x)ᵀ u, flat."""
        with self.linearize(x) as lin:
            return lin.vjp(u)

    def eigs(self, k: int = 6, which: str = "LM", x: Any = None, **solver: Any) -> Spectrum:
        """The k eigenvalues of J(x), best first by ``which`` ("LM", "LR", "SR", "LI"); ``solver``: :func:`eigs`'s
        ncv, tol, max_restarts, seed, v0, return_vectors."""
        with self.linearize(x) as lin:
            return lin.eigs(k, which, **solver)

    def hessian_eigs(self, player: str, k: int = 6, which: str = "LA", x: Any = None, **solver: Any) -> Spectrum:
        """The k eigenvalues of H_G = ∇²_θθ L_G (``player`` "G") or H_D = ∇²_φφ L_D ("D"), by :func:`eigsh`."""
        with self.linearize(x) as lin:
            return lin.hessian_eigs(player, k, which, **solver)

    def hessian_extremes(self, x: Any = None, **solver: Any) -> dict[str, dict[str, Any]]:
        """{"G": {"min": λ_min(H_G), "max": λ_max(H_G), "min_residual", "max_residual", "converged"}, "D": ...}.

        Both players' Hessians positive semi-definite (min ≥ 0, up to the residual) is the second-order condition
        of a local Nash equilibrium."""
        with self.linearize(x) as lin:
            return lin.hessian_extremes(**solver)

    def path_angle(self, x0: Any, x1: Any, ts: Any = None) -> PathAngle:
        """cos ∠(v(x_t), x_1 − x_0) and ‖v(x_t)‖ along x_t = x_0 + t (x_1 − x_0) (Berard et al. 2020).

        ``ts``: the values of t (default 21 points in [0, 1]; values outside [0, 1] extrapolate the line). One field
        evaluation per t (no double backward)."""
        ts = np.linspace(0.0, 1.0, 21) if ts is None else np.asarray(ts, dtype=np.float64).reshape(-1)
        if ts.size == 0 or not np.all(np.isfinite(ts)):
            raise ValueError(f"path_angle: ts must be finite numbers, got {ts!r}")
        a, b = self.vector(x0, "x0"), self.vector(x1, "x1")
        d = b - a
        xp = self._xp()
        dg, dd = d[:self.n_g], d[self.n_g:]
        nd, ndg, ndd = (float(xp.linalg.norm(a_)) for a_ in (d, dg, dd))

        def cos(p: Any, q: Any, n1: float, n2: float) -> float:
            return float(xp.vdot(p, q)) / (n1 * n2) if n1 > 0 and n2 > 0 else math.nan
        rows = []
        for t in ts:
            lg, ld, v = self.evaluate(a + float(t) * d)
            vg, vd = v[:self.n_g], v[self.n_g:]
            nv, nvg, nvd = (float(xp.linalg.norm(a_)) for a_ in (v, vg, vd))
            rows.append((cos(v, d, nv, nd), cos(vg, dg, nvg, ndg), cos(vd, dd, nvd, ndd), nv, nvg, nvd, lg, ld))
        cols = np.array(rows, dtype=np.float64).T
        return PathAngle(ts, *cols, distance=nd)

    def check(self, x: Any = None, directions: int = 2, eps: float | None = None, rtol: float | None = None,
              seed: int = 0, raise_on_failure: bool = True) -> CheckReport:
        """Check the products at ``x`` along random unit directions u, gradcheck-style:

        * J u against central differences (v(x + εu) − v(x − εu)) / 2ε (norm of the difference ≤ rtol·‖numeric‖);
        * J u by the two methods of :class:`Linearization` ("hessian" and "double_vjp") against each other;
        * ⟨w, J u⟩ = ⟨Jᵀ w, u⟩ for a random w (the two products are each other's adjoints);
        * H_G u_θ and H_D u_φ against central differences of v_θ along (u_θ, 0) and of v_φ along (0, u_φ).

        Central differences need a smooth game near x (no ReLU kink within ε of the batch's pre-activations) and
        float64: their error is about ε²‖v'''‖ + ε_mach‖v‖/ε. Defaults: ε = 1e-5, rtol = 1e-6 (float64); ε = 3e-3,
        rtol = 3e-2 (float32). Returns a :class:`CheckReport`, or raises :class:`~npgan.GradcheckError` with it.
        """
        f64 = self.dtype == np.float64
        eps = (1e-5 if f64 else 3e-3) if eps is None else float(eps)
        rtol = (1e-6 if f64 else 3e-2) if rtol is None else float(rtol)
        rs = np.random.default_rng(seed)
        xp = self._xp()
        report = CheckReport()

        def unit(n: int) -> Any:
            u = rs.standard_normal(n)
            return u / np.linalg.norm(u)

        def row(what: str, a: Any, b: Any) -> None:
            a64, b64 = backend.to_numpy(a).astype(np.float64), backend.to_numpy(b).astype(np.float64)
            err, nb = float(np.linalg.norm(a64 - b64)), float(np.linalg.norm(b64))
            tol = rtol * nb + 1e-300
            report.rows.append((what, float(np.linalg.norm(a64)), nb, err, tol, err <= tol))

        with self.linearize(x) as lin:
            x0 = lin.x
            for d in range(directions):
                u = self.vector(unit(self.n))
                ju = lin.jvp(u)
                num = (self.field(x0 + eps * u) - self.field(x0 - eps * u)) / (2 * eps)
                row(f"J u vs central differences, direction {d}", ju, num)
                row(f"J u (hessian) vs J u (double_vjp), direction {d}", ju, lin.jvp(u, "double_vjp"))
                w = self.vector(unit(self.n))
                lhs, rhs = float(xp.vdot(w, ju)), float(xp.vdot(lin.vjp(w), u))
                tol = rtol * max(abs(rhs), float(xp.linalg.norm(ju))) + 1e-300  # |⟨w, Ju⟩| ≤ ‖Ju‖ for a unit w
                report.rows.append((f"<w, J u> vs <J^T w, u>, direction {d}", lhs, rhs, abs(lhs - rhs), tol,
                                    abs(lhs - rhs) <= tol))
                for who, lo, hi in (("G", 0, self.n_g), ("D", self.n_g, self.n)):
                    up = self.vector(np.concatenate([np.zeros(lo), unit(hi - lo), np.zeros(self.n - hi)]))
                    hu = lin.hvp(who, up[lo:hi])
                    num = (self.field(x0 + eps * up)[lo:hi] - self.field(x0 - eps * up)[lo:hi]) / (2 * eps)
                    row(f"H_{who} u vs central differences, direction {d}", hu, num)
        if raise_on_failure and not report.ok:
            raise GradcheckError(f"npgan.game check failed:\n{report}")
        return report


JVP_METHODS = ("hessian", "double_vjp")


class Linearization:
    """The game at one point x, the players' gradients recorded: products with J, Jᵀ, H_G and H_D.

    At construction both losses' full gradients are recorded with ``create_graph=True``: g_G = ∇_x L_G and
    g_D = ∇_x L_D (with respect to all n parameters), so v = ((g_G)_θ, (g_D)_φ) is a part of them. Then

    * ``vjp(u)`` = Jᵀ u = ∇_x ⟨u, v⟩: one backward pass through v's graph;
    * ``hvp("G", u)`` = H_G u = ∇_θ ⟨u, (g_G)_θ⟩ (and "D" alike): one pass;
    * ``jvp(u)`` = J u, by ``jvp_method``:
      "hessian" (the default): row block by row block, each a Hessian-vector product of one loss,
      (J u)_θ = ∇_θ ⟨g_G, u⟩ and (J u)_φ = ∇_φ ⟨g_D, u⟩ — two backward passes, second derivatives only. It holds
      because the rows of J for θ are rows of L_G's full Hessian, which is symmetric (Schwarz):
      (J u)_θᵢ = Σⱼ ∂²L_G/∂xⱼ∂θᵢ uⱼ = ∂/∂θᵢ Σⱼ (∂L_G/∂xⱼ) uⱼ.
      "double_vjp": the trick of the module docstring, which needs no symmetry: y(w) = Jᵀ w recorded once
      (a backward pass of v's graph with ``create_graph=True``, a third derivative of the losses), then
      J u = ∇_w ⟨u, y(w)⟩, one backward pass of y's graph.
      Both agree to round-off (the tests and :meth:`Game.check` compare them); "hessian" records less (no y) and
      needs one order of derivative fewer (a loss with a gradient penalty: third, not fourth).

    ``with game.linearize(x) as lin:`` (or call :meth:`close`) frees the graphs at the end. Attributes: ``x`` (the
    flat point, a copy), ``v`` (the flat field), ``loss_g``, ``loss_d``.
    """

    def __init__(self, game: Game, x: Any = None, jvp_method: str = "hessian") -> None:
        if jvp_method not in JVP_METHODS:
            raise ValueError(f"Linearization: unknown jvp_method {jvp_method!r}; choose one of "
                             f"{', '.join(JVP_METHODS)}")
        self.game, self.jvp_method = game, jvp_method
        self.x = game.get_flat() if x is None else game.vector(x, "x").copy()
        with game.at(self.x):
            lg, ld = game._losses()
            self._gG = game._grads(lg, game.params, True, True)
            self._gD = game._grads(ld, game.params, True, True)
            self.loss_g, self.loss_d = float(lg.data.reshape(())), float(ld.data.reshape(()))
            self._params = list(game.params)  # the Tensors the graph was recorded on
            self._held = [p.data for p in self._params]  # their data then: x (a later recording needs it again)
        ng = len(game.params_g)
        self._v = self._gG[:ng] + self._gD[ng:]
        self.v = game._flat(self._v)
        self._y: list[Any] | None = None
        self._w: list[Tensor] | None = None
        self.closed = False

    def __enter__(self) -> Linearization:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Free the recorded graphs."""
        self._gG, self._gD, self._v, self._y, self._w, self._held, self.closed = [], [], [], None, None, [], True

    def _live(self) -> None:
        if self.closed:
            raise RuntimeError("Linearization: used after close(); call game.linearize(x) again")

    @staticmethod
    def _pass(outs: Sequence[Any], targets: list[Tensor], seeds: Sequence[Any]) -> list[Any]:
        """∇_targets Σᵢ ⟨seeds[i], outs[i]⟩ over the outputs that carry a graph (None for a target none reaches)."""
        used = [(t, s) for t, s in zip(outs, seeds) if t is not None and t.requires_grad]
        if not used:
            return [None] * len(targets)
        return list(grad([t for t, _ in used], targets, [s for _, s in used], retain_graph=True, allow_unused=True))

    def vjp(self, u: Any) -> Any:
        """Jᵀ u = ∇_x ⟨u, v(x)⟩: one backward pass through v's graph."""
        self._live()
        g = self.game
        return g._flat(self._pass(self._v, self._params, g._parts(g.vector(u))))

    def jvp(self, u: Any, method: str | None = None) -> Any:
        """J u, by ``method`` (default: the Linearization's ``jvp_method``; see the class docstring)."""
        self._live()
        method = self.jvp_method if method is None else method
        if method not in JVP_METHODS:
            raise ValueError(f"jvp: unknown method {method!r}; choose one of {', '.join(JVP_METHODS)}")
        g = self.game
        parts = g._parts(g.vector(u))
        ng = len(g.params_g)
        if method == "hessian":
            return g._flat(self._pass(self._gG, self._params[:ng], parts)
                           + self._pass(self._gD, self._params[ng:], parts))
        if self._y is None:
            outs = [(i, t) for i, t in enumerate(self._v) if t is not None and t.requires_grad]
            xp = g._xp()
            self._w = [Tensor(xp.zeros(t.shape, dtype=g.dtype), requires_grad=True) for _, t in outs]
            self._wi = [i for i, _ in outs]
            saved = [p.data for p in self._params]
            try:  # recording Jᵀ w runs v's backward_graph, which reads the parameters: they must hold x again
                for p, a in zip(self._params, self._held):
                    p.data = a
                self._y = [None] * len(g.params) if not outs else list(grad(
                    [t for _, t in outs], self._params, self._w, retain_graph=True, create_graph=True,
                    allow_unused=True))
            finally:
                for p, a in zip(self._params, saved):
                    p.data = a
        res: list[Any] = [None] * len(g.params)
        if self._w:
            for i, gw in zip(self._wi, self._pass(self._y, self._w, parts)):
                res[i] = gw
        return g._flat(res)

    def hvp(self, player: str, u: Any) -> Any:
        """H_G u (``player`` "G", u of n_G entries) or H_D u ("D", n_D entries): ∇ ⟨u, ∇ L⟩ within one player."""
        self._live()
        g = self.game
        if player not in ("G", "D"):
            raise ValueError(f"hvp: player must be 'G' or 'D', got {player!r}")
        lo, hi = (0, len(g.params_g)) if player == "G" else (len(g.params_g), len(g.params))
        size = g.n_g if player == "G" else g.n_d
        if isinstance(u, Tensor):
            u = u.data
        u = backend.asarray(u, dtype=g.dtype, device=g.device).reshape(-1)
        if u.shape != (size,):
            raise ValueError(f"hvp: u has {u.size} entries, player {player} has {size} parameters")
        return g._flat(self._pass(self._v[lo:hi], self._params[lo:hi], g._parts(u, lo, hi)), lo, hi)

    def eigs(self, k: int = 6, which: str = "LM", **solver: Any) -> Spectrum:
        """The k eigenvalues of J here by :func:`eigs` (products: :meth:`jvp`)."""
        return eigs(self.jvp, self.game.n, k, which, like=self.v, dtype=self.game.dtype, **solver)

    def hessian_eigs(self, player: str, k: int = 6, which: str = "LA", **solver: Any) -> Spectrum:
        """The k eigenvalues of H_G (``player`` "G") or H_D ("D") here by :func:`eigsh`."""
        if player not in ("G", "D"):
            raise ValueError(f"hessian_eigs: player must be 'G' or 'D', got {player!r}")
        n = self.game.n_g if player == "G" else self.game.n_d
        return eigsh(lambda u: self.hvp(player, u), n, k, which, like=self.v, dtype=self.game.dtype, **solver)

    def hessian_extremes(self, **solver: Any) -> dict[str, dict[str, Any]]:
        """The smallest and largest eigenvalue of each player's Hessian (see :meth:`Game.hessian_extremes`)."""
        out = {}
        for who in ("G", "D"):
            hi, lo = self.hessian_eigs(who, 1, "LA", **solver), self.hessian_eigs(who, 1, "SA", **solver)
            out[who] = {"max": float(hi.values[0]), "min": float(lo.values[0]), "max_residual": float(hi.residuals[0]),
                        "min_residual": float(lo.residuals[0]), "converged": hi.all_converged and lo.all_converged}
        return out

    def as_linear_operator(self) -> Any:
        """J here as a ``scipy.sparse.linalg.LinearOperator`` (CPU; matvec = :meth:`jvp`, rmatvec = :meth:`vjp`),
        e.g. for ``scipy.sparse.linalg.eigs``. Needs SciPy (not one of npgan's dependencies)."""
        try:
            from scipy.sparse.linalg import LinearOperator  # type: ignore[import-untyped]
        except ImportError:
            raise ImportError("Linearization.as_linear_operator needs SciPy (pip install scipy)") from None
        n = self.game.n
        return LinearOperator((n, n), matvec=lambda u: backend.to_numpy(self.jvp(u.reshape(-1))),
                              rmatvec=lambda u: backend.to_numpy(self.vjp(u.reshape(-1))),
                              dtype=np.dtype(self.game.dtype))


def from_models(G: Module, D: Module, z: Any, real: Any, g_loss: Callable[[Tensor, Tensor], Tensor],
                d_loss: Callable[[Tensor, Tensor], Tensor], batchnorm: str = "batch", fixed_rng: bool = True) -> Game:
    """The GAN game of G and D on a fixed batch: fake = G(z), L_G = g_loss(D(fake), fake),
    L_D = d_loss(D(real), D(fake)) — fake not detached, so that ∂v_φ/∂θ (how D's gradient moves with G) is in J.

    ``z`` and ``real`` are Tensors or arrays (kept as they are: the batch is fixed). For a loss that needs more
    (a gradient penalty on D), build a :class:`Game` from a ``losses`` callable directly.
    """
    for name, m in (("G", G), ("D", D)):
        if not isinstance(m, Module):
            raise TypeError(f"from_models: {name} must be an npgan.nn.Module, got {type(m).__name__}")
    z = z if isinstance(z, Tensor) else Tensor(z)
    real = real if isinstance(real, Tensor) else Tensor(real)

    def losses() -> tuple[Tensor, Tensor]:
        fake = G(z)
        d_fake = D(fake)
        return g_loss(d_fake, fake), d_loss(D(real), d_fake)

    ng = [(k, p) for k, p in G.named_parameters() if p.requires_grad]
    nd = [(k, p) for k, p in D.named_parameters() if p.requires_grad]
    return Game([p for _, p in ng], [p for _, p in nd], losses, modules=(G, D), batchnorm=batchnorm,
                fixed_rng=fixed_rng, names_g=[k for k, _ in ng], names_d=[k for k, _ in nd])
