"""Consensus optimisation in the training loop (Mescheder et al. 2017; npgan.gan.trainer, "Simultaneous steps";
docs/math.md §16): each optimizer follows g = v + γ Jᵀv, Jᵀv = ∇½‖v‖².

Against hand-written steps in float64:

* the Dirac-GAN under the Wasserstein loss (tests/small_games.py): v = A x with A = [[0, −1], [1, 0]], so
  Jᵀv = AᵀA x = x and one SGD step is x ← ((1 − ηγ) I − η A) x: the eigenvalues γ ± i of J + γJᵀJ have positive
  real parts and the iteration contracts by |1 − ηγ − iη| a step, where simultaneous steps (γ = 0) spiral out;
  with Adam the same g goes through hand-written Adam;
* an MLP GAN with the KDE entropy term and an R1 penalty: g against npgan.game's field and Jᵀv (Linearization.vjp),
  and Jᵀv against central differences of ½‖v‖² along random directions (no npgan.game in that one).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import hand_adam
from small_games import TOL, dirac, mlp, state

import npgan
from npgan import backend, optim
from npgan.gan import HISTORY_FIELDS, TrainConfig, Trainer
from npgan.gan.game import game_of

A = np.array([[0.0, -1.0], [1.0, 0.0]])


def test_consensus_with_sgd_is_the_hand_written_step_and_contracts_the_dirac_gan():
    eta, gamma, x0 = 0.1, 0.5, np.array([1.0, -0.4])
    tr, G, D = dirac(*x0, eta, extragradient=False, consensus=gamma)
    M = (1 - eta * gamma) * np.eye(2) - eta * A
    x = x0
    for _ in range(50):
        x = x - eta * (A @ x + gamma * (A.T @ (A @ x)))  # g = v + γ Jᵀv
        tr.step()
        np.testing.assert_allclose(state(G, D), x, rtol=0, atol=TOL)
    np.testing.assert_allclose(x, np.linalg.matrix_power(M, 50) @ x0, rtol=0, atol=TOL)
    rho = abs(1 - eta * gamma - 1j * eta)  # |1 − η(γ ± i)|
    assert rho < 1 and np.linalg.norm(x) == pytest.approx(rho ** 50 * np.linalg.norm(x0), rel=1e-12)
    rows = tr.flush()
    assert [r["field_norm"] for r in rows[:1]] == pytest.approx([np.linalg.norm(A @ x0)], rel=1e-14)
    # the gradient norms recorded are those of g, not of v
    assert rows[0]["grad_norm_g"] == pytest.approx(abs((A @ x0 + gamma * x0)[0]), rel=1e-14)


def test_consensus_with_adam_and_with_extragradient():
    eta, gamma, b1, b2, eps = 0.05, 0.3, 0.5, 0.9, 1e-8
    for extra in (False, True):
        x = np.array([0.6, 0.7])
        tr, G, D = dirac(*x, eta, opt="adam", extragradient=extra, consensus=gamma)
        adam = hand_adam(eta, b1, b2, eps)

        def g(y):
            return A @ y + gamma * y  # v + γ AᵀA y
        for _ in range(20):
            x = adam(x, g(adam(x, g(x)))) if extra else adam(x, g(x))
            tr.step()
            np.testing.assert_allclose(state(G, D), x, rtol=0, atol=TOL, err_msg=f"extragradient={extra}")


def test_consensus_on_an_mlp_gan_is_v_plus_gamma_jtv_of_npgan_games_field():
    npgan.set_default_dtype("float64")
    npgan.manual_seed(5)
    G, D = mlp()
    eta, gamma, B = 0.05, 0.7, 16
    cfg = TrainConfig(steps=10, batch_size=B, z_dim=3, lr=eta, consensus=gamma, entropy_weight=0.2, bandwidth=0.5,
                      gp="r1", gp_weight=1.0)
    real = npgan.Tensor(np.random.default_rng(2).standard_normal((B, 2)))
    tr = Trainer(G, D, optim.SGD(G.parameters(), lr=eta), optim.SGD(D.parameters(), lr=eta), lambda s: real, cfg)
    for step in range(3):
        rng = backend.get_rng_state()
        z = npgan.Tensor(backend.rng().standard_normal((B, 3)))
        backend.set_rng_state(rng)
        game = game_of(cfg, G, D, z, real, step)
        x = game.get_flat()
        with game.linearize() as lin:
            v, jtv = lin.v, lin.vjp(lin.v)
        tr.step()
        np.testing.assert_allclose(game.get_flat(), x - eta * (v + gamma * jtv), rtol=0, atol=TOL)
        assert tr.flush()[0]["field_norm"] == pytest.approx(float(np.linalg.norm(v)), rel=1e-12)
        # Jᵀv = ∇½‖v‖², by central differences along random unit directions u: the error of the difference
        # quotient is about ε²·|f'''| + ε_mach·|f|/ε ≈ 1e-10 · 1 + 1e-16 / 1e-5 here, far below the 1e-6 allowed
        rs = np.random.default_rng(step)
        for _ in range(2):
            u = rs.standard_normal(game.n)
            u /= np.linalg.norm(u)
            eps = 1e-5
            f = [0.5 * float(np.sum(game.field(x + s * eps * u) ** 2)) for s in (1, -1)]
            assert float(jtv @ u) == pytest.approx((f[0] - f[1]) / (2 * eps), abs=1e-6 * max(1.0, np.linalg.norm(jtv)))


def test_runs_without_the_options_keep_their_history_columns_and_path(tmp_path):
    """history.csv of an alternating run: exactly HISTORY_FIELDS (the simultaneous step's column absent), in the
    bytes the writer wrote before these options, and the alternating loop runs (not the simultaneous step) when both
    options are off. (Checked once by hand as well: ring8 with R1, 300 steps, one thread, this branch against main's
    code: history.csv byte-identical, every checkpoint array equal.)"""
    from helpers import tiny_ring8_config

    from npgan.run.experiment import Run
    run = Run.create(tiny_ring8_config(2), tmp_path / "r")
    assert run.trainer.history_fields == HISTORY_FIELDS
    called = []
    run.trainer._simultaneous_step = lambda *a: called.append(a)
    run.train(progress=False)
    assert called == []
    text = (tmp_path / "r" / "history.csv").read_text()
    assert text.splitlines()[0] == ",".join(HISTORY_FIELDS) and "field_norm" not in text
    # every row is HISTORY_FIELDS written as the writer always wrote them (ints plain, floats by repr), nothing else
    from npgan.run.history import read_history
    rows = read_history(tmp_path / "r" / "history.csv")
    assert [r["step"] for r in rows] == [1, 2] and all(tuple(r) == HISTORY_FIELDS for r in rows)
    lines = [",".join(str(r[k]) if k == "step" else repr(float(r[k])) for k in HISTORY_FIELDS) for r in rows]
    assert text == "\n".join([",".join(HISTORY_FIELDS), *lines]) + "\n"


@pytest.mark.parametrize("argv,match", [(["--consensus", "-1"], "--consensus must be a number >= 0"),
                                        (["--consensus", "0.1", "--d-steps", "2"], "d_steps must be 1"),
                                        (["--optimizer", "extragradient", "--wgan"], "d_steps must be 1"),
                                        (["--optimizer", "extragradient", "--no-extragradient"], "contradict")])
def test_cli_refuses_bad_options_in_one_line_with_exit_2(tmp_path, capsys, argv, match):
    from npgan.run.cli import main
    assert main(["train", "--preset", "ring8", "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "x").exists()


def test_cli_optimizer_extragradient_is_adam_with_the_look_ahead_in_config_toml(tmp_path, capsys):
    from npgan.run.cli import main
    from npgan.run.config import read_config
    out = tmp_path / "eg"
    assert main(["train", "--preset", "ring8", "--steps", "2", "--batch-size", "16", "--width", "8", "--optimizer",
                 "extragradient", "--consensus", "0.25", "--keep-checkpoints", "--out", str(out),
                 "--no-progress"]) == 0
    cfg = read_config(out / "config.toml")
    assert (cfg.optimizer, cfg.train.extragradient, cfg.train.consensus, cfg.keep_checkpoints) == \
        ("adam", True, 0.25, True)
    assert "extragradient, consensus 0.25" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000000.npz", "step_000002.npz"]


def test_simultaneous_steps_stay_on_the_stand_in_gpu_and_match_the_cpu(tmp_path):
    """ring8 with Extra-Adam, consensus and R1 on the stand-in GPU (tests/standin.py): no transfer to the host during
    the steps (only the divergence guard's bools: two per evaluation of the field, two evaluations a step), one at
    the flush, and the CPU's numbers bit for bit (NumPy underneath, one thread on the CPU side: the same operations
    in the same order)."""
    import standin
    from helpers import tiny_ring8_config

    from npgan.run.experiment import Run
    npgan.set_num_threads(1)  # restored by conftest's _fresh_state
    rows = {}
    for dev in ("cpu", "gpu"):
        with standin.installed(device=False):
            cfg = tiny_ring8_config(3)
            cfg.device, cfg.hidden = dev, 16
            cfg.train.extragradient, cfg.train.consensus, cfg.train.gp, cfg.train.gp_weight = True, 0.2, "r1", 1.0
            run = Run(cfg, tmp_path / dev)
            standin.reset_counts()
            for _ in range(3):
                run.trainer.step()
            steps = dict(standin.counts)
            rows[dev] = run.trainer.flush()
            if dev == "gpu":
                assert isinstance(run.G[0].weight.data, standin.DeviceArray)
                assert steps["to_host"] == 0, steps
                # the guard's 4 bools a step, and the KDE term's finiteness check of each evaluation's fakes
                assert steps["sync"] <= 3 * (4 + 2), steps
    assert [list(r) for r in rows["gpu"]] == [list(r) for r in rows["cpu"]] and len(rows["gpu"]) == 3
    np.testing.assert_array_equal([list(r.values()) for r in rows["gpu"]], [list(r.values()) for r in rows["cpu"]])
