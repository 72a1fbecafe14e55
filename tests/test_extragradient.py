"""Extragradient and Extra-Adam in the training loop (npgan.gan.trainer, "Simultaneous steps"; docs/math.md §16).

Against hand-written steps in float64:

* the Dirac-GAN under the Wasserstein loss, G(z) = θ, D(x) = ψx, real data at 0: L_G = −ψθ, L_D = ψθ, so the
  field is v = (−ψ, θ) = A x with A = [[0, −1], [1, 0]] (a pure rotation, eigenvalues ±i). Extragradient with
  SGD is then x_{k+1} = (I − ηA + η²A²) x_k, |eigenvalue|² = 1 − η² + η⁴ < 1: it converges where simultaneous
  steps spiral out; Extra-Adam is written out with its moments updated at both half-steps (Gidel et al. 2019,
  Algorithm 4); weight clipping makes it projected extragradient;
* an MLP GAN with the KDE entropy term and an R1 penalty (and one with WGAN-GP): the look-ahead and the update
  are x − η v(x) and x − η v(x − η v(x)) with v from npgan.game's Game of the same losses on the same batch.

Each comparison is between two float64 evaluations of the same formulas in different orders: a few ulps of the
numbers involved (|x|, |v| ≤ 10 here), so 1e-13 absolute.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import hand_adam
from small_games import TOL, dirac, mlp, state

import npgan
from npgan import backend, optim
from npgan.errors import DivergenceError
from npgan.gan import TrainConfig, Trainer
from npgan.gan.game import game_of


def test_extragradient_with_sgd_is_korpelevichs_step_and_converges_on_the_dirac_gan():
    eta, x = 0.2, np.array([1.0, 0.5])
    tr, G, D = dirac(*x, eta)
    A = np.array([[0.0, -1.0], [1.0, 0.0]])
    for _ in range(40):
        half = x - eta * (A @ x)                 # x_{k+1/2} = x_k − η v(x_k)
        x = x - eta * (A @ half)                 # x_{k+1} = x_k − η v(x_{k+1/2})
        assert tr.step()
        np.testing.assert_allclose(state(G, D), x, rtol=0, atol=TOL)
    # the contraction of docs/math.md §16: |1 − iηb − η²b²| per step on λ = ±i
    rho = math.sqrt(1 - eta ** 2 + eta ** 4)
    assert np.linalg.norm(x) == pytest.approx(rho ** 40 * np.linalg.norm([1.0, 0.5]), rel=1e-12)
    assert np.linalg.norm(x) < 0.5 * np.linalg.norm([1.0, 0.5])
    rows = tr.flush()
    assert list(rows[0])[-1] == "field_norm" and len(rows) == 40


def test_extra_adam_updates_the_moments_at_both_half_steps():
    eta, b1, b2, eps = 0.05, 0.5, 0.9, 1e-8
    x = np.array([0.8, -0.3])
    tr, G, D = dirac(*x, eta, opt="adam")
    A = np.array([[0.0, -1.0], [1.0, 0.0]])
    adam = hand_adam(eta, b1, b2, eps)

    for _ in range(30):
        half = adam(x, A @ x)     # the look-ahead: an Adam step, moments and count updated
        x = adam(x, A @ half)     # the update from x_k, with the moments updated again
        tr.step()
        np.testing.assert_allclose(state(G, D), x, rtol=0, atol=TOL)
    assert tr.opt_g.state[0]["step"] == tr.opt_d.state[0]["step"] == 60  # two Adam steps per iteration


def test_weight_clipping_follows_both_half_steps_projected_extragradient():
    eta, c, x = 0.3, 0.2, np.array([1.0, 0.15])
    tr, G, D = dirac(*x, eta, clip_value=c)
    A = np.array([[0.0, -1.0], [1.0, 0.0]])

    def proj(y):
        return np.array([y[0], np.clip(y[1], -c, c)])  # only D's weight is clipped
    clipped = 0
    for _ in range(10):
        half = proj(x - eta * (A @ x))
        new = proj(x - eta * (A @ half))
        clipped += abs(x[1] - eta * (A @ half)[1]) > c
        x = new
        tr.step()
        np.testing.assert_allclose(state(G, D), x, rtol=0, atol=TOL)
    assert clipped > 0  # the projection bound at least once


@pytest.mark.parametrize("on_nan", ["skip", "stop"])
def test_a_non_finite_look_ahead_restores_the_point_and_the_optimizers(on_nan):
    """G(z) = √θ with θ = 0.01 and ψ = −1: v_θ = −ψ/(2√θ) = 5, so the look-ahead θ − 0.1·5 < 0 makes √θ NaN."""
    tr, G, D = dirac(0.01, -1.0, 0.1, opt="adam", sqrt=True, on_nan=on_nan)
    logged = []
    tr.log = logged.append
    before = state(G, D)
    if on_nan == "skip":
        assert tr.step() is False and tr.skipped == 1
        assert len(logged) == 1 and logged[0].endswith("skipped the step, both players' updates (on_nan = skip)")
    else:
        with pytest.raises(DivergenceError, match="non-finite loss_d .*; neither G nor D was updated by this step"):
            tr.step()
    np.testing.assert_array_equal(state(G, D), before)
    assert tr.opt_g.state == {} and tr.opt_d.state == {}  # Adam's moments and counts as before the step
    assert all(p.grad is None for p in (*G.parameters(), *D.parameters()))


# ============================================================================ an MLP GAN against npgan.game
@pytest.mark.parametrize("extra", [dict(entropy_weight=0.2, bandwidth=0.5, gp="r1", gp_weight=2.0),
                                   dict(loss="wasserstein", gp="wgan-gp", gp_weight=1.0),
                                   dict(consensus=0.3, entropy_weight=0.1, bandwidth=0.5)],
                         ids=["entropy+r1", "wgan-gp", "consensus"])
def test_extragradient_on_an_mlp_gan_is_the_hand_written_step_with_npgan_games_field(extra):
    """x_{1/2} = x − η g(x), x_1 = x − η g(x_{1/2}), g = v (or v + γ Jᵀv) of game_of on the step's batch; with
    WGAN-GP the look-ahead uses the same interpolation weights (the game resets the generator each time)."""
    npgan.set_default_dtype("float64")
    npgan.manual_seed(3)
    G, D = mlp()
    eta, B = 0.05, 16
    cfg = TrainConfig(steps=10, batch_size=B, z_dim=3, lr=eta, extragradient=True, **extra)
    real = npgan.Tensor(np.random.default_rng(1).standard_normal((B, 2)))
    tr = Trainer(G, D, optim.SGD(G.parameters(), lr=eta), optim.SGD(D.parameters(), lr=eta), lambda s: real, cfg)
    gamma = extra.get("consensus", 0.0)
    for step in range(3):
        rng = backend.get_rng_state()
        z = npgan.Tensor(backend.rng().standard_normal((B, 3)))  # the trainer's draw for this step
        game = game_of(cfg, G, D, z, real, step)                 # its generator state: after z, as the trainer's
        backend.set_rng_state(rng)

        def g(x, game=game):
            with game.linearize(x) as lin:
                return lin.v + gamma * lin.vjp(lin.v)
        x = game.get_flat()
        v0 = game.field(x)
        want = x - eta * g(x - eta * g(x))
        tr.step()
        np.testing.assert_allclose(game.get_flat(), want, rtol=0, atol=TOL)
        row = tr.flush()[0]
        assert row["field_norm"] == pytest.approx(float(np.linalg.norm(v0)), rel=1e-12)


def test_the_look_ahead_is_never_what_a_checkpoint_holds_and_resume_is_exact(tmp_path):
    """A run of 6 extragradient steps (checkpoints kept), and one stopped after step 5 (its last checkpoint at 4)
    and resumed: the same weights, optimizer states and history.csv bytes (the field_norm column kept through the
    cut); each kept checkpoint's weights are the iterate x_k the step ended at."""
    from helpers import tiny_ring8_config

    from npgan.run.checkpoint import load_arrays
    from npgan.run.experiment import Run
    from npgan.run.history import read_history

    def cfg():
        c = tiny_ring8_config(6)
        c.hidden, c.train.extragradient, c.keep_checkpoints = 16, True, True
        return c
    full = Run.create(cfg(), tmp_path / "full")
    full.train(progress=False)
    part = Run.create(cfg(), tmp_path / "part")
    for _ in range(5):
        part.trainer.step()
        if part.trainer.step_count in (2, 4):
            part._append_history(part.trainer.flush())
            part.save_checkpoint()
        if part.trainer.step_count == 4:
            at4 = {k: backend.to_numpy(v).copy() for k, v in part.G.state_dict().items()}
    del part
    arrays, meta = load_arrays(tmp_path / "part" / "checkpoints" / "step_000004.npz")
    assert meta["step"] == 4
    for k, v in at4.items():
        np.testing.assert_array_equal(arrays[f"G/{k}"], v)
    with Run.resume(tmp_path / "part") as run:
        assert run.trainer.step_count == 4
        run.train(progress=False)
        for net, other in ((run.G, full.G), (run.D, full.D)):
            for (k, a), (_, b) in zip(net.state_dict().items(), other.state_dict().items()):
                np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b), err_msg=k)
        for s, t in zip(run.opt_d.state.values(), full.opt_d.state.values()):
            assert s["step"] == t["step"] == 12  # two Adam steps a step
            np.testing.assert_array_equal(s["exp_avg_sq"], t["exp_avg_sq"])
    a = (tmp_path / "full" / "history.csv").read_bytes()
    assert a == (tmp_path / "part" / "history.csv").read_bytes()
    assert a.splitlines()[0].endswith(b",gp,field_norm") and len(a.splitlines()) == 7
    rows = read_history(tmp_path / "part" / "history.csv")
    assert len(rows) == 6 and all(math.isfinite(r["field_norm"]) and r["field_norm"] > 0 for r in rows)
    kept = sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir())
    assert kept == ["step_000000.npz", "step_000002.npz", "step_000004.npz", "step_000006.npz"]
    assert (tmp_path / "full" / "checkpoints" / "step_000006.npz").read_bytes() == \
        (tmp_path / "full" / "checkpoint.npz").read_bytes()


@pytest.mark.parametrize("bad,match", [(dict(d_steps=2), "d_steps must be 1"),
                                       (dict(reuse_fake=True), "reuse_fake does not apply"),
                                       (dict(order="g_first"), "order 'g_first' does not apply"),
                                       (dict(extragradient=1), "extragradient must be true or false")])
def test_options_that_do_not_apply_to_simultaneous_steps_are_refused_in_one_line(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{"extragradient": True, **bad}).validate()
