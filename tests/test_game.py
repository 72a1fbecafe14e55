"""npgan.game: the vector field of a two-player game, J u, Jᵀ u, the eigenvalues of J and of each player's Hessian,
the path angle — checked against dense Jacobians built independently (row by row with npgan.grad, and by
PyTorch), central differences, closed forms (the Dirac-GAN of docs/math.md, a quadratic game) and numpy.linalg.

Error bounds used below (float64, unit roundoff ε = 2⁻⁵³ ≈ 1.1e-16):
* two float64 evaluations of the same derivative that sum in different orders differ by at most about
  n_terms·ε·Σ|terms| (Higham's γ_n); every entry of these J is a sum over the batch (≤ 32) of products through
  two hidden layers (≤ 8 wide): n_terms ≤ 32·8·8 = 2048, and the scale Σ|terms| is bounded here by 10·max|J|.
* a computed eigenvalue λ̂ of A with unit Ritz vector x and residual r = ‖A x − λ̂ x‖ is within κ(λ)·r (first
  order; κ = ‖y‖‖x‖/|yᴴx|, y the left eigenvector) of an eigenvalue of A; numpy's own eig errs by κ·c·n·ε·‖A‖.
  For a symmetric matrix κ = 1 (and |λ̂ − λ| ≤ r exactly).
* central differences (v(x + hu) − v(x − hu)) / 2h err by at most h²/6·max‖v'''‖ + ε·max‖v‖/h.
"""

from __future__ import annotations

import numpy as np
import pytest
import standin
from helpers import torch_or_skip
from hypothesis import given
from hypothesis import strategies as st

import npgan
import npgan.functional as F
import npgan.game as game
from npgan import backend, nn, ops, optim
from npgan.gan.penalties import gradient_penalty

EPS = np.finfo(np.float64).eps
EPS32 = float(np.finfo(np.float32).eps)


# ============================================================================ games to analyse
def g_loss(d_fake, fake):
    return F.binary_cross_entropy_with_logits(d_fake, 1.0)


def d_loss(d_real, d_fake):
    return F.binary_cross_entropy_with_logits(d_real, 1.0) + F.binary_cross_entropy_with_logits(d_fake, 0.0)


ACTS = {"tanh": nn.Tanh, "softplus": nn.Softplus, "lrelu": lambda: nn.LeakyReLU(0.2)}


def mlp_gan(h=8, act="tanh", bn=None, batch=32, z_dim=2, seed=0):
    """A 2-D MLP GAN, G z → h → 2, D 2 → h → 1 (a BatchNorm1d after the first layer of ``bn``, "G" or "D"), in the
    default dtype, with a fixed batch: (G, D, z, real)."""
    npgan.manual_seed(seed)

    def net(n_in, n_out, with_bn):
        layers = [nn.Linear(n_in, h)] + ([nn.BatchNorm1d(h)] if with_bn else []) + [ACTS[act](), nn.Linear(h, n_out)]
        return nn.Sequential(*layers)

    G, D = net(z_dim, 2, bn == "G"), net(2, 1, bn == "D")
    z = npgan.randn(batch, z_dim)
    real = npgan.randn(batch, 2) * 0.5 + 1.0
    return G, D, z, real


def make_game(batchnorm="batch", **kw):
    G, D, z, real = mlp_gan(**kw)
    return game.from_models(G, D, z, real, g_loss, d_loss, batchnorm=batchnorm)


def dense_rows(gm):
    """J row by row, independently of the double-vjp trick: each entry of v recorded with create_graph and
    differentiated by npgan.grad (the way demos/dirac_gan.py builds its Jacobian)."""
    with gm.at():
        lg, ld = gm.losses()
        vs = list(npgan.grad(lg, gm.params_g, create_graph=True, retain_graph=True)) + \
            list(npgan.grad(ld, gm.params_d, create_graph=True, retain_graph=True))
        rows = []
        for t in vs:
            flat = t.reshape(-1)
            for e in range(t.size):
                gs = npgan.grad(flat[e], gm.params, retain_graph=True, allow_unused=True)
                rows.append(np.concatenate([np.zeros(p.size) if g is None else g.numpy().ravel()
                                            for g, p in zip(gs, gm.params)]))
    return np.array(rows)


def dense_by_products(gm, x=None, method="hessian"):
    """(J from J e_i, J from Jᵀ e_i): every column by lin.jvp (by ``method``), every row by lin.vjp."""
    eye = np.eye(gm.n)
    with gm.linearize(x, method) as lin:
        cols = np.stack([backend.to_numpy(lin.jvp(e)) for e in eye], axis=1)
        rows = np.stack([backend.to_numpy(lin.vjp(e)) for e in eye], axis=0)
    return cols.astype(np.float64), rows.astype(np.float64)


def round_off(J):
    """The float64 bound of the module docstring for two evaluations of J: 2048·ε·10·max|J|."""
    return 2048 * EPS * 10 * np.abs(J).max()


def eig_and_condition(A):
    """Eigenvalues of A and their condition numbers κ = ‖y‖‖x‖/|yᴴx| (rows of X⁻¹ are the left eigenvectors)."""
    w, X = np.linalg.eig(A)
    Yh = np.linalg.inv(X)
    return w, np.linalg.norm(Yh, axis=1) * np.linalg.norm(X, axis=0)


def assert_spectrum_matches(spec, A, which, symmetric=False):
    """Each computed eigenvalue is within κ·(residual + c·n·ε‖A‖)·2 of a distinct eigenvalue of the dense A, and
    the computed ones are the best k by ``which`` (their sort keys match the dense top k within the same bound)."""
    n = A.shape[0]
    if symmetric:
        w, kappa = np.linalg.eigvalsh(A).astype(complex), np.ones(n)
    else:
        w, kappa = eig_and_condition(A)
    key = (game.WHICH_SYMMETRIC if symmetric else game.WHICH)[which]
    norm = np.linalg.norm(A, 2)
    used = set()
    bounds = []
    for lam, r in zip(np.atleast_1d(spec.values).astype(complex), spec.residuals):
        d = np.abs(w - lam)
        d[list(used)] = np.inf
        i = int(np.argmin(d))
        bound = 2 * kappa[i] * (r + 10 * n * EPS * norm) + 10 * n * EPS * norm
        assert d[i] <= bound, f"{which}: computed {lam} is {d[i]:.3g} from the nearest eigenvalue {w[i]} (bound " \
                              f"{bound:.3g}, κ {kappa[i]:.3g}, residual {r:.3g})"
        used.add(i)
        bounds.append(bound)
    wk = w.real if symmetric else w
    top = np.sort([key(v) for v in wk])[:len(spec.values)]
    got = np.sort([key(v.real if symmetric else v) for v in np.atleast_1d(spec.values)])
    assert np.all(np.abs(top - got) <= max(bounds)), f"{which}: not the top {len(got)}: {got} vs {top}"


def k_at_gap(A, which, ks=(6, 5, 7, 4, 8, 3), margin=1e-6):
    """A k that does not split a conjugate pair and whose k-th and (k+1)-th keys differ by more than ``margin``."""
    w = np.linalg.eigvals(A)
    keys = np.sort([game.WHICH[which](v) for v in w])
    for k in ks:
        if keys[k] - keys[k - 1] > margin:
            return k
    raise AssertionError("no k with a gap")


# ============================================================================ J u and Jᵀ u against dense Jacobians
@pytest.mark.parametrize("method", game.JVP_METHODS)
@pytest.mark.parametrize("act,bn", [("tanh", None), ("lrelu", None), ("softplus", "G"), ("tanh", "D")])
def test_jvp_and_vjp_equal_the_dense_jacobian_built_row_by_row(act, bn, method):
    npgan.set_default_dtype("float64")
    gm = make_game(act=act, bn=bn)
    assert gm.n == (2 * 8 + 8 + (16 if bn == "G" else 0) + 8 * 2 + 2) + (2 * 8 + 8 + (16 if bn == "D" else 0) + 9)
    J = dense_rows(gm)
    cols, rows = dense_by_products(gm, method=method)
    tol = round_off(J)
    assert np.abs(cols - J).max() <= tol and np.abs(rows - J).max() <= tol
    # J has all four blocks: D's gradient moves with G (the fakes are not detached), G's with D
    ng = gm.n_g
    assert min(np.abs(J[:ng, :ng]).max(), np.abs(J[:ng, ng:]).max(), np.abs(J[ng:, :ng]).max(),
               np.abs(J[ng:, ng:]).max()) > 1e-3


@pytest.mark.parametrize("bn", [None, "G"])
def test_jacobian_equals_pytorchs(bn):
    torch = torch_or_skip()
    from torch.func import functional_call

    from npgan.interop import to_torch
    npgan.set_default_dtype("float64")
    G, D, z, real = mlp_gan(act="tanh", bn=bn)
    G.train()
    gm = game.from_models(G, D, z, real, g_loss, d_loss, batchnorm="batch")
    cols, _ = dense_by_products(gm)
    tG, tD = to_torch(G).double(), to_torch(D).double()
    names_g = [k for k, _ in tG.named_parameters()]
    names_d = [k for k, _ in tD.named_parameters()]
    shapes = [p.shape for p in list(tG.parameters()) + list(tD.parameters())]
    tz, treal = torch.from_numpy(z.numpy()), torch.from_numpy(real.numpy())
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def v_of(x):
        ps, o = [], 0
        for s in shapes:
            n = int(np.prod(s))
            ps.append(x[o:o + n].reshape(s))
            o += n
        pg, pd = dict(zip(names_g, ps[:len(names_g)])), dict(zip(names_d, ps[len(names_g):]))
        fake = functional_call(tG, pg, (tz,))
        df, dr = functional_call(tD, pd, (fake,)), functional_call(tD, pd, (treal,))
        lg = bce(df, torch.ones_like(df))
        ld = bce(dr, torch.ones_like(dr)) + bce(df, torch.zeros_like(df))
        gs = torch.autograd.grad(lg, list(pg.values()), create_graph=True) + \
            torch.autograd.grad(ld, list(pd.values()), create_graph=True)
        return torch.cat([g.reshape(-1) for g in gs])

    x0 = torch.cat([p.detach().reshape(-1) for p in list(tG.parameters()) + list(tD.parameters())])
    Jt = torch.autograd.functional.jacobian(v_of, x0).numpy()
    np.testing.assert_allclose(backend.to_numpy(gm.field()), v_of(x0.clone().requires_grad_(True)).detach().numpy(),
                               rtol=0, atol=round_off(Jt))
    assert np.abs(cols - Jt).max() <= round_off(Jt)


@pytest.mark.parametrize("act", ["tanh", "softplus"])
def test_jvp_matches_central_differences_of_the_field(act):
    npgan.set_default_dtype("float64")
    gm = make_game(act=act)
    rs = np.random.default_rng(0)
    x0 = gm.get_flat()
    h = 1e-5
    with gm.linearize() as lin:
        for _ in range(3):
            u = rs.standard_normal(gm.n)
            u /= np.linalg.norm(u)
            num = (gm.field(x0 + h * u) - gm.field(x0 - h * u)) / (2 * h)
            # h²/6·|v'''| + ε|v|/h ≈ 2e-11 + 1e-11 for |v'''|, |v| of order 1 (tanh/softplus nets, unit u):
            # 1e-8 leaves a factor 300 for larger third derivatives, far below a wrong product's error
            err = np.linalg.norm(lin.jvp(u) - num)
            assert err <= 1e-8 * max(1.0, np.linalg.norm(num)), err


@given(h=st.integers(1, 5), batch=st.integers(2, 12), act=st.sampled_from(["tanh", "softplus", "lrelu"]),
       bn=st.sampled_from([None, "G", "D"]), seed=st.integers(0, 2**16))
def test_property_jvp_and_vjp_are_adjoint_and_jvp_is_the_derivative(h, batch, act, bn, seed):
    npgan.set_default_dtype("float64")
    gm = make_game(h=h, batch=batch, act=act, bn=bn, seed=seed)
    rs = np.random.default_rng(seed)
    u, w = rs.standard_normal(gm.n), rs.standard_normal(gm.n)
    with gm.linearize() as lin:
        ju, jtw = lin.jvp(u), lin.vjp(w)
        assert np.abs(ju - lin.jvp(u, "double_vjp")).max() <= 2048 * EPS * 10 * np.abs(dense_rows(gm)).max() * \
            np.abs(u).sum()
        # ⟨w, J u⟩ = ⟨Jᵀ w, u⟩: both are sums over the n² entries of J weighted by w_i u_j
        scale = np.abs(w) @ (np.abs(dense_rows(gm)) @ np.abs(u))
        assert abs(w @ ju - jtw @ u) <= 2048 * EPS * 10 * scale + 1e-300
        if act != "lrelu":  # central differences need a smooth field (LeakyReLU's kink may lie within h)
            # BatchNorm over a batch of 2 or 3 has large third derivatives, so the truncation error is estimated,
            # not assumed: the central difference with step h errs by about c·h² (c = ‖v‴‖/6 along u), so
            # ‖CD(h) − CD(h/2)‖ ≈ ¾·c·h² bounds CD(h/2)'s c·h²/4; rounding adds about ε·‖v‖/(h/2) per entry
            x0, e, h_ = gm.get_flat(), u / np.linalg.norm(u), 1e-5
            cd = [(gm.field(x0 + s * e) - gm.field(x0 - s * e)) / (2 * s) for s in (h_, h_ / 2)]
            tol = np.linalg.norm(cd[0] - cd[1]) + 1e3 * EPS * (np.linalg.norm(gm.field()) + 1) / h_
            assert np.linalg.norm(ju / np.linalg.norm(u) - cd[1]) <= tol


def test_linearizing_at_another_point_is_the_jacobian_there():
    npgan.set_default_dtype("float64")
    gm = make_game()
    x1 = gm.get_flat() * 0.7 + 0.05
    cols, rows = dense_by_products(gm, x1)
    with gm.at(x1):  # the parameters hold x1 here: the rows are built there
        J1 = dense_rows(gm)
    assert np.abs(cols - J1).max() <= round_off(J1) and np.abs(rows - J1).max() <= round_off(J1)
    assert np.abs(J1 - dense_rows(gm)).max() > 1e-3  # it differs from J at the current point


# ============================================================================ eigenvalues
@pytest.mark.parametrize("which", ["LM", "LR", "SR", "LI"])
def test_eigs_match_numpy_eig_of_the_dense_jacobian(which):
    npgan.set_default_dtype("float64")
    gm = make_game(act="tanh")
    J = dense_rows(gm)
    k = k_at_gap(J, which)
    spec = gm.eigs(k=k, which=which, tol=1e-12)
    assert spec.all_converged and len(spec.values) == k and spec.values.dtype == complex
    assert np.all(spec.residuals <= 1e-10 * spec.scale)
    assert_spectrum_matches(spec, J, which)


def test_eigenvectors_are_returned_and_satisfy_the_residual():
    npgan.set_default_dtype("float64")
    gm = make_game(act="tanh")
    J = dense_rows(gm)
    spec = gm.eigs(k=4, which="LM", tol=1e-12, return_vectors=True)
    X = backend.to_numpy(spec.vectors)
    assert X.shape == (gm.n, 4)
    for i in range(4):
        x = X[:, i]
        r = np.linalg.norm(J @ x - spec.values[i] * x) / np.linalg.norm(x)
        assert abs(r - spec.residuals[i]) <= round_off(J) * np.sqrt(gm.n)


def test_eigs_agree_with_scipy_on_the_linear_operator():
    sla = pytest.importorskip("scipy.sparse.linalg", reason="SciPy is not installed (only the cross-check needs it)")
    npgan.set_default_dtype("float64")
    gm = make_game(act="softplus", h=6)
    J = dense_rows(gm)
    with gm.linearize() as lin:
        op = lin.as_linear_operator()
        np.testing.assert_allclose(op.rmatvec(np.eye(gm.n)[3]), J[3], rtol=0, atol=round_off(J))
        for which in ("LM", "LR"):
            k = k_at_gap(J, which, ks=(4, 5, 6, 3))
            ours = lin.eigs(k, which, tol=1e-12)
            theirs = sla.eigs(op, k=k, which=which, tol=1e-12, return_eigenvectors=False)
            key = game.WHICH[which]
            np.testing.assert_allclose(np.sort([key(v) for v in ours.values]), np.sort([key(v) for v in theirs]),
                                       rtol=0, atol=1e-9)
            for hs in ("G", "D"):
                mine = lin.hessian_eigs(hs, 2, "LA", tol=1e-12).values
                n = gm.n_g if hs == "G" else gm.n_d
                ref = sla.eigsh(sla.LinearOperator((n, n), matvec=lambda u, hs=hs: lin.hvp(hs, u.ravel())), k=2,
                                which="LA", tol=1e-12, return_eigenvectors=False)
                np.testing.assert_allclose(np.sort(mine), np.sort(ref), rtol=0, atol=1e-9)


@pytest.mark.parametrize("player", ["G", "D"])
def test_hessian_eigenvalues_match_the_dense_diagonal_block(player):
    npgan.set_default_dtype("float64")
    gm = make_game(act="tanh", bn="G")
    J = dense_rows(gm)
    blk = slice(0, gm.n_g) if player == "G" else slice(gm.n_g, gm.n)
    H = J[blk, blk]
    assert np.abs(H - H.T).max() <= round_off(J)  # each player's own Hessian is symmetric
    Hs = (H + H.T) / 2
    for which in ("LA", "SA", "LM"):
        spec = gm.hessian_eigs(player, k=3, which=which, tol=1e-12)
        assert spec.all_converged and spec.values.dtype == np.float64
        assert_spectrum_matches(spec, Hs, which, symmetric=True)
    ext = gm.hessian_extremes(tol=1e-12)[player]
    w = np.linalg.eigvalsh(Hs)
    assert abs(ext["min"] - w[0]) <= ext["min_residual"] + round_off(J) and \
        abs(ext["max"] - w[-1]) <= ext["max_residual"] + round_off(J) and ext["converged"]
    with gm.linearize() as lin:  # H u is the block of J u
        u = np.random.default_rng(1).standard_normal(blk.stop - blk.start)
        assert np.abs(lin.hvp(player, u) - H @ u).max() <= round_off(J) * np.abs(u).sum()


@given(n=st.integers(2, 45), k=st.integers(1, 4), which=st.sampled_from(list(game.WHICH)),
       seed=st.integers(0, 2**16))
def test_property_eigs_on_random_matrices(n, k, which, seed):
    k = min(k, n)
    A = np.random.default_rng(seed).standard_normal((n, n))
    spec = game.eigs(lambda x: A @ x, n, k=k, which=which, tol=1e-10, seed=seed)
    assert spec.all_converged, spec.report()
    assert_spectrum_matches(spec, A, which)


@given(n=st.integers(2, 45), k=st.integers(1, 4), which=st.sampled_from(list(game.WHICH_SYMMETRIC)),
       seed=st.integers(0, 2**16))
def test_property_eigsh_on_random_symmetric_matrices(n, k, which, seed):
    k = min(k, n)
    B = np.random.default_rng(seed).standard_normal((n, n))
    A = (B + B.T) / 2
    spec = game.eigsh(lambda x: A @ x, n, k=k, which=which, tol=1e-10, seed=seed)
    assert spec.all_converged, spec.report()
    assert_spectrum_matches(spec, A, which, symmetric=True)


def test_a_nearly_defective_pair_is_kept_by_the_deflation_basis():
    """Two eigenvalues 1e-7 apart with nearly parallel eigenvectors: orthonormalising the eigenvectors loses the
    invariance (the fast basis is rejected), the deflation basis keeps it to round-off."""
    rs = np.random.default_rng(0)
    m = 12
    T = np.triu(rs.standard_normal((m, m)))
    np.fill_diagonal(T, np.linspace(-2, 2, m))
    T[0, 0] = T[1, 1] = 5.0
    T[0, 1], T[1, 0] = 1.0, 1e-13
    Q0, _ = np.linalg.qr(rs.standard_normal((m, m)))
    H = Q0 @ T @ Q0.T
    w, Y = np.linalg.eig(H)
    order, _ = game._ordered(w, game.WHICH["LM"], False)
    keep = order[:3]
    Qf, _ = np.linalg.qr(Y[:, keep].real)
    assert np.linalg.norm(H @ Qf - Qf @ (Qf.T @ H @ Qf)) > 1e-10 * np.linalg.norm(H)  # the fast basis fails here
    Q = game._schur_basis(H, w, Y, keep)
    assert np.abs(Q.T @ Q - np.eye(3)).max() <= 100 * EPS
    assert np.linalg.norm(H @ Q - Q @ (Q.T @ H @ Q)) <= 1e3 * EPS * np.linalg.norm(H)
    # and the solver, restarted through such a basis, finds the pair (a Jordan-like pair: √ε-sensitive)
    n = 60
    T2 = np.diag(np.linspace(-3, 2.5, n))
    T2[:2, :2] = [[5.0, 1.0], [1e-14, 5.0]]
    Q1, _ = np.linalg.qr(rs.standard_normal((n, n)))
    A = Q1 @ T2 @ Q1.T
    spec = game.eigs(lambda x: A @ x, n, k=3, which="LM", ncv=8, tol=1e-10)
    assert spec.all_converged and np.all(spec.residuals <= 1e-9 * spec.scale)
    mags = np.sort(np.abs(spec.values))
    assert np.abs(mags[1:] - 5.0).max() <= 1e-6 and abs(mags[0] - np.abs(np.diag(T2)[2:]).max()) <= 1e-9


def test_not_converging_is_reported_not_raised():
    A = np.diag(np.linspace(1.0, 1.001, 400)) + np.diag(np.full(399, 1e-3), 1)
    spec = game.eigs(lambda x: A @ x, 400, k=5, which="LM", ncv=12, max_restarts=1, tol=1e-14)
    assert not spec.all_converged and spec.restarts == 1
    text = spec.report()
    assert "no" in text.split("\n")[2] and f"{spec.matvecs} products" in text
    d = spec.as_dict()
    assert len(d["values"]) == 5 and d["converged"] == [bool(c) for c in spec.converged]


# ============================================================================ closed forms
def f_dirac(t):
    """f(t) = −log(1 + e^{−t}); f′(0) = 1/2 (docs/math.md, "The Dirac-GAN")."""
    return -ops.log(1 + ops.exp(-t))


def dirac_game(kind, gamma):
    """G = δ_θ, D_ψ(x) = ψx, data δ₀; ℓ_G minimax (L) or non-saturating (−f(−ψθ)), ℓ_D = −L + (γ/2)·R1, at (0, 0)."""
    th, ps = npgan.tensor([0.0], requires_grad=True), npgan.tensor([0.0], requires_grad=True)

    def losses():
        def D(x):
            return ps * x
        zero = npgan.Tensor(th.data * 0)
        L = f_dirac(D(th)) + f_dirac(-D(zero))
        lg = L.sum() if kind == "minimax" else (-f_dirac(-D(th))).sum()
        ld = -L.sum()
        if gamma:
            ld = ld + (gamma / 2) * gradient_penalty(D, zero, kind="r1")
        return lg, ld
    return game.Game([th], [ps], losses)


@pytest.mark.parametrize("method", game.JVP_METHODS)
@pytest.mark.parametrize("kind,gamma", [("minimax", 0.0), ("non_saturating", 0.0), ("non_saturating", 0.3),
                                        ("non_saturating", 2.0)])
def test_dirac_gan_jacobian_and_eigenvalues_are_the_closed_forms(kind, gamma, method):
    """docs/math.md derives J = [[0, −f′(0)], [f′(0), −γ]] for the field −∇ℓ; npgan.game's field is +∇ℓ, so its J
    is the negative, [[0, f′(0)], [−f′(0), γ]], with eigenvalues γ/2 ± √(γ²/4 − f′(0)²) (±i/2 without R1)."""
    npgan.set_default_dtype("float64")
    gm = dirac_game(kind, gamma)
    cols, rows = dense_by_products(gm, method=method)  # with R1, "double_vjp" differentiates four times
    closed = np.array([[0.0, 0.5], [-0.5, gamma]])
    assert np.abs(cols - closed).max() <= 4 * EPS and np.abs(rows - closed).max() <= 4 * EPS
    spec = gm.eigs(k=2, which="LR")
    r = np.sqrt(complex(gamma ** 2 / 4 - 0.25))
    want = np.array([gamma / 2 + r, gamma / 2 - r])
    assert np.abs(np.sort_complex(spec.values) - np.sort_complex(want)).max() <= 8 * EPS
    assert np.all(spec.residuals <= 8 * EPS)
    assert np.abs(backend.to_numpy(gm.field())).max() == 0.0  # (0, 0) is stationary


def quadratic_game():
    """L_G = ½θᵀAθ + θᵀBφ + aᵀθ, L_D = ½φᵀCφ − φᵀBᵀθ + cᵀφ (A, C symmetric; θ and φ each in two tensors):
    v = (Aθ + Bφ + a, Cφ − Bᵀθ + c), J = [[A, B], [−Bᵀ, C]] everywhere."""
    rs = np.random.default_rng(3)
    na, nc = 7, 5
    A0, C0 = rs.standard_normal((na, na)), rs.standard_normal((nc, nc))
    A, C = A0 @ A0.T / na + 0.1 * np.eye(na), (C0 + C0.T) / 2
    B = rs.standard_normal((na, nc))
    a, c = rs.standard_normal(na), rs.standard_normal(nc)
    th = [npgan.tensor(rs.standard_normal((3,)), requires_grad=True), npgan.tensor(rs.standard_normal((2, 2)),
                                                                                   requires_grad=True)]
    ph = [npgan.tensor(rs.standard_normal((5,)), requires_grad=True)]
    tA, tB, tC, ta, tc = (npgan.tensor(m) for m in (A, B, C, a, c))

    def losses():
        t = ops.cat([th[0], th[1].reshape(-1)])
        p = ph[0]
        lg = 0.5 * (t * (tA @ t)).sum() + (t * (tB @ p)).sum() + (ta * t).sum()
        ld = 0.5 * (p * (tC @ p)).sum() - (t * (tB @ p)).sum() + (tc * p).sum()
        return lg, ld
    M = np.block([[A, B], [-B.T, C]])
    return game.Game(th, ph, losses), M, np.concatenate([a, c])


def test_quadratic_game_field_jacobian_spectrum_and_path_angle_are_the_closed_forms():
    npgan.set_default_dtype("float64")
    gm, M, off = quadratic_game()
    x0 = backend.to_numpy(gm.get_flat())
    np.testing.assert_allclose(backend.to_numpy(gm.field()), M @ x0 + off, rtol=0, atol=64 * EPS * np.abs(M).sum())
    for method in game.JVP_METHODS:
        cols, rows = dense_by_products(gm, method=method)
        tol = 16 * EPS * np.abs(M).max()
        assert np.abs(cols - M).max() <= tol and np.abs(rows - M).max() <= tol
    for which in ("LM", "SR"):
        assert_spectrum_matches(gm.eigs(k=4, which=which, tol=1e-13), M, which)
    ext = gm.hessian_extremes(tol=1e-13)
    wa, wc = np.linalg.eigvalsh(M[:7, :7]), np.linalg.eigvalsh(M[7:, 7:])
    assert abs(ext["G"]["min"] - wa[0]) < 1e-12 and abs(ext["D"]["max"] - wc[-1]) < 1e-12
    x1 = x0 + np.random.default_rng(4).standard_normal(12)
    ts = np.array([-0.5, 0.0, 0.25, 1.0, 1.5])
    pa = gm.path_angle(x0, x1, ts)
    d = x1 - x0
    for i, t in enumerate(ts):
        v = M @ (x0 + t * d) + off
        assert abs(pa.cos[i] - v @ d / (np.linalg.norm(v) * np.linalg.norm(d))) <= 64 * EPS
        assert abs(pa.cos_g[i] - v[:7] @ d[:7] / (np.linalg.norm(v[:7]) * np.linalg.norm(d[:7]))) <= 64 * EPS
        assert abs(pa.cos_d[i] - v[7:] @ d[7:] / (np.linalg.norm(v[7:]) * np.linalg.norm(d[7:]))) <= 64 * EPS
        assert abs(pa.norm[i] - np.linalg.norm(v)) <= 64 * EPS * np.linalg.norm(v)
    np.testing.assert_allclose(pa.angle, np.degrees(np.arccos(pa.cos)), rtol=1e-15)
    assert pa.distance == pytest.approx(np.linalg.norm(d), rel=1e-15)
    assert set(pa.as_dict()) >= {"t", "cos", "angle", "norm", "loss_g", "loss_d", "distance"}


# ============================================================================ float32
def test_float32_products_and_eigenvalues_against_float64():
    npgan.set_default_dtype("float64")
    G, D, z, real = mlp_gan(act="tanh")
    g64 = game.from_models(G, D, z, real, g_loss, d_loss)
    J64 = dense_rows(g64)
    G32, D32, _, _ = mlp_gan(act="tanh")
    G32.float()
    D32.float()
    g32 = game.from_models(G32, D32, z.astype("float32"), real.astype("float32"), g_loss, d_loss)
    assert g32.dtype == np.float32 and g32.n == g64.n
    cols, rows = dense_by_products(g32)
    # float32 rounding: products of a dozen chained ops, each a sum of at most 32·8 terms: about
    # 12·256·2⁻²⁴ ≈ 2e-4 of the terms' magnitude, itself at most 10·max|J| (as in the float64 bound)
    tol = 12 * 256 * EPS32 / 2 * 10 * np.abs(J64).max()
    assert np.abs(cols - J64).max() <= tol and np.abs(rows - J64).max() <= tol
    assert np.abs(cols - J64).max() > 0  # it did compute in float32
    dJ = np.linalg.norm(cols - J64, 2)
    assert g32.check().ok  # float32 defaults: ε = 3e-3, rtol 3e-2
    spec = g32.eigs(k=4, which="LM")
    assert spec.all_converged and spec.tol == 1e-4
    w, kappa = eig_and_condition(J64)
    for lam, r in zip(spec.values, spec.residuals):
        i = int(np.argmin(np.abs(w - lam)))
        assert abs(w[i] - lam) <= 2 * kappa[i] * (r + dJ)  # an eigenvalue of J32 = J64 + ΔJ, ‖ΔJ‖₂ = dJ


# ============================================================================ devices
def _small_results(gm):
    rs = np.random.default_rng(5)
    u, x1 = rs.standard_normal(gm.n), rs.standard_normal(gm.n) * 0.1
    with gm.linearize() as lin:
        out = {"v": lin.v, "ju": lin.jvp(u), "jtu": lin.vjp(u), "hu": lin.hvp("D", u[gm.n_g:]),
               "eig": lin.eigs(3, "LM", tol=1e-12).values, "heig": lin.hessian_eigs("G", 2, "SA", tol=1e-12).values}
    pa = gm.path_angle(gm.get_flat(), gm.get_flat() + gm.vector(x1), [0.0, 0.5, 1.0])
    out["cos"], out["norm"] = pa.cos, pa.norm
    return {k: backend.to_numpy(v) for k, v in out.items()}


def test_on_the_stand_in_gpu_results_equal_the_cpus_and_nothing_converts_implicitly():
    npgan.set_default_dtype("float64")
    G, D, z, real = mlp_gan(act="tanh", bn="G")
    cpu = _small_results(game.from_models(G, D, z, real, g_loss, d_loss))
    with standin.installed():
        G.to("gpu")
        D.to("gpu")
        gm = game.from_models(G, D, z.to("gpu"), real.to("gpu"), g_loss, d_loss)
        assert gm.device == "gpu:0" and isinstance(gm.get_flat(), standin.DeviceArray)
        standin.reset_counts()
        dev = _small_results(gm)
        gm.check()
        G.to("cpu")
        D.to("cpu")
    for k in cpu:
        np.testing.assert_array_equal(dev[k], cpu[k], err_msg=k)


def test_on_the_current_device_results_match_float64_cpu(device):
    npgan.set_default_dtype("float64")
    G, D, z, real = mlp_gan(act="tanh")
    ref = _small_results(game.from_models(G, D, z, real, g_loss, d_loss))
    G.to(device)
    D.to(device)
    try:
        got = _small_results(game.from_models(G, D, z.to(device), real.to(device), g_loss, d_loss))
    finally:
        G.to("cpu")
        D.to("cpu")
    for k in ref:  # another BLAS sums in another order: the float64 bound of the module docstring, scale 1
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-9, atol=2048 * EPS * 10, err_msg=k)


# ============================================================================ BatchNorm, randomness, the model
def snapshot(G, D):
    mods = [m for top in (G, D) for m in top.modules()]
    return ([(p, p.data, p.data.copy(), p.grad) for top in (G, D) for p in top.parameters()],
            [b.copy() for top in (G, D) for _, b in top.named_buffers()], [m.training for m in mods],
            backend.get_rng_state())


def assert_unchanged(G, D, snap):
    params, bufs, flags, rng = snap
    for p, obj, val, g in params:
        assert p.data is obj and np.array_equal(p.data, val) and p.grad is g
    for b, b0 in zip([b for top in (G, D) for _, b in top.named_buffers()], bufs):
        assert np.array_equal(b, b0)
    assert [m.training for top in (G, D) for m in top.modules()] == flags
    assert backend.get_rng_state() == rng


def hand_field(G, D, z, real, train):
    """v by hand, with every module in ``train`` mode (the buffers it changes are the caller's to restore)."""
    G.train(train)
    D.train(train)
    fake = G(z)
    df = D(fake)
    vg = npgan.grad(g_loss(df, fake), list(G.parameters()), retain_graph=True)
    vd = npgan.grad(d_loss(D(real), df), list(D.parameters()))
    return np.concatenate([t.numpy().ravel() for t in vg + vd])


@pytest.mark.parametrize("mode", game.BATCHNORM_MODES)
def test_batchnorm_modes_give_the_asked_field_and_leave_the_model_as_it_was(mode):
    npgan.set_default_dtype("float64")
    G, D, z, real = mlp_gan(act="tanh", bn="G")
    G.train()
    G[1].running_mean[...] = 0.3   # running statistics unlike the batch's, so the two modes differ
    G[1].running_var[...] = 2.0
    D.eval()  # mixed flags: restored as they were
    saved = [b.copy() for _, b in G.named_buffers()]
    want = hand_field(G, D, z, real, train=(mode == "batch"))
    for (_, b), s in zip(G.named_buffers(), saved):
        b[...] = s
    G.train()
    D.eval()
    snap = snapshot(G, D)
    gm = game.from_models(G, D, z, real, g_loss, d_loss, batchnorm=mode)
    got = backend.to_numpy(gm.field())
    assert np.abs(got - want).max() <= 64 * EPS * max(1.0, np.abs(want).max())
    other = hand_field(G, D, z, real, train=(mode != "batch"))
    assert np.abs(got - other).max() > 1e-3  # the mode matters
    for (_, b), s in zip(G.named_buffers(), saved):
        b[...] = s
    G.train()
    D.eval()
    assert_unchanged(G, D, snap)
    gm.eigs(k=2, tol=1e-8)
    gm.hessian_extremes(tol=1e-6)
    gm.path_angle(gm.get_flat(), gm.get_flat() * 1.1, [0.0, 1.0])
    gm.check()
    gm.jvp(np.ones(gm.n), x=gm.get_flat() * 0.9)
    assert_unchanged(G, D, snap)


def test_a_loss_that_draws_sees_the_same_numbers_each_time_with_fixed_rng():
    npgan.set_default_dtype("float64")
    G, D, z, real = mlp_gan(act="tanh")

    def noisy_d_loss(d_real, d_fake):
        return d_loss(d_real + 0.1 * npgan.randn(*d_real.shape), d_fake)

    gm = game.from_models(G, D, z, real, g_loss, noisy_d_loss)
    state = backend.get_rng_state()
    a, b = backend.to_numpy(gm.field()), backend.to_numpy(gm.field())
    assert np.array_equal(a, b) and backend.get_rng_state() == state
    gm.check()  # v is a function of x: central differences agree with J u
    loose = game.from_models(G, D, z, real, g_loss, noisy_d_loss, fixed_rng=False)
    assert not np.array_equal(backend.to_numpy(loose.field()), backend.to_numpy(loose.field()))


# ============================================================================ checkpoints and the path angle
def test_path_angle_between_two_checkpoints_by_their_state_dicts():
    npgan.set_default_dtype("float64")
    G, D, z, real = mlp_gan(act="tanh")
    gm = game.from_models(G, D, z, real, g_loss, d_loss)
    s0 = (G.state_dict(), D.state_dict())
    og, od = optim.Adam(G.parameters(), lr=1e-2), optim.Adam(D.parameters(), lr=1e-2)
    for _ in range(5):  # simultaneous Adam steps on v
        v = backend.to_numpy(gm.field())
        for p, gpart in zip(gm.params, np.split(v, np.cumsum([q.size for q in gm.params])[:-1])):
            p.grad = gpart.reshape(p.shape)
        og.step()
        od.step()
    s1 = (G.state_dict(), D.state_dict())
    x0, x1 = gm.flat_from(*s0), gm.flat_from(*s1)
    np.testing.assert_array_equal(x1, gm.get_flat())
    pa = gm.path_angle(x0, x1)
    assert pa.t.shape == (21,) and pa.t[0] == 0 and pa.t[-1] == 1
    v0 = backend.to_numpy(gm.field(x0))
    d = x1 - x0
    assert abs(pa.cos[0] - v0 @ d / (np.linalg.norm(v0) * np.linalg.norm(d))) <= 64 * EPS
    assert pa.cos[0] < -0.5  # the steps went down the field: −v points along x1 − x0 at the start
    lg, ld, _ = gm.evaluate(x0)
    assert pa.loss_g[0] == lg and pa.loss_d[0] == ld
    with pytest.raises(ValueError, match=r"the G state lacks 0\.weight"):
        gm.flat_from({}, s0[1])


# ============================================================================ the check report
class CutSecondDerivative(npgan.Function):
    """y = x³ with the classic double-backward bug: backward_graph gives the right value 3x²·gy but from a saved
    array, so its derivative with respect to x is lost (0 instead of 6x·gy)."""

    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, gy):
        return 3 * self.x ** 2 * gy

    def backward_graph(self, gy):
        return npgan.Tensor(3 * self.x ** 2) * gy


def test_check_passes_on_a_smooth_game_and_catches_a_wrong_double_backward():
    npgan.set_default_dtype("float64")
    gm = make_game(act="tanh")
    report = gm.check(directions=2)
    assert report.ok and len(report.rows) == 10 and "J u vs central differences" in str(report)
    G, D, z, real = mlp_gan(act="tanh")

    class Cubed(nn.Module):
        def forward(self, x):
            return CutSecondDerivative()(x)

    bad = game.from_models(G, nn.Sequential(D, Cubed()), z, real, g_loss, d_loss)
    with pytest.raises(npgan.GradcheckError, match=r"J u vs central differences, direction 0 .* NO"):
        bad.check()
    rep = bad.check(raise_on_failure=False)
    assert not rep.ok and not rep.rows[0][5]


# ============================================================================ bad input: one clear line
def test_bad_arguments_are_refused_in_one_line():
    npgan.set_default_dtype("float64")
    gm = make_game()
    p = gm.params_g[0]
    cases = [
        (lambda: game.Game([], gm.params_d, gm.losses), ValueError, "params_g is empty"),
        (lambda: game.Game([npgan.zeros(2)], gm.params_d, gm.losses), TypeError, r"params_g\[0\] must be a float "),
        (lambda: game.Game([p], [p], gm.losses), ValueError, "appears twice"),
        (lambda: game.Game([p], gm.params_d, gm.losses, batchnorm="train"), ValueError, "choose one of eval, batch"),
        (lambda: game.Game([p], gm.params_d, 3), TypeError, "losses must be a callable"),
        (lambda: game.Game([p], gm.params_d, lambda: gm.losses()[0]).field(), TypeError, "must return"),
        (lambda: game.Game([p], gm.params_d, lambda: (gm.losses()[0], npgan.zeros(3))).field(), TypeError,
         "L_D as a Tensor of shape"),
        (lambda: gm.jvp(np.ones(3)), ValueError, rf"u has 3 entries, the game has n = {gm.n}"),
        (lambda: gm.eigs(which="XX"), ValueError, "unknown which 'XX'; choose one of LM, LR, SR, LI"),
        (lambda: gm.eigs(k=0), ValueError, r"k must be an integer in \[1, n"),
        (lambda: gm.hessian_eigs("G", which="LR"), ValueError, "choose one of LA, SA, LM"),
        (lambda: gm.hessian_eigs("X"), ValueError, "player must be 'G' or 'D'"),
        (lambda: gm.eigs(tol=2.0), ValueError, r"tol must be a number in \(0, 1\)"),
        (lambda: gm.linearize(jvp_method="forward"), ValueError, "choose one of hessian, double_vjp"),
        (lambda: gm.path_angle(gm.get_flat(), gm.get_flat(), [np.nan]), ValueError, "ts must be finite"),
        (lambda: game.eigs(lambda x: x, 4, k=2, v0=np.zeros(4)), ValueError, "v0 has norm 0"),
        (lambda: game.eigs(lambda x: x[:2], 4, k=2), ValueError, r"returned shape \(2,\)"),
    ]
    for fn, exc, msg in cases:
        with pytest.raises(exc, match=msg) as info:
            fn()
        assert "\n" not in str(info.value)
    lin = gm.linearize()
    lin.close()
    with pytest.raises(RuntimeError, match="used after close"):
        lin.jvp(np.ones(gm.n))


def test_import_npgan_does_not_import_the_game_module():
    import subprocess
    import sys
    code = "import sys, npgan; assert 'npgan.game' not in sys.modules; import npgan.game; print(npgan.game.eigs)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
