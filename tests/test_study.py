"""``npgan study``: a tiny ring8 run with its checkpoints kept, studied; the JSON's numbers against npgan.game called
directly (and against dense matrices: n = 331 here), the pictures, the refusals, and that the run is only read."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from helpers import tiny_ring8_config

import npgan
from npgan import backend
from npgan.errors import RunError
from npgan.gan.game import game_of
from npgan.run.checkpoint import load_arrays
from npgan.run.cli import main
from npgan.run.experiment import Run
from npgan.run.presets import build_models, real_source
from npgan.run.study import STUDY_FILES, StudyOptions, plot, study

K, BATCH, SEED = 6, 24, 1


def tiny_config(keep=True):
    cfg = tiny_ring8_config(6)
    cfg.hidden, cfg.keep_checkpoints = 8, keep
    return cfg


@pytest.fixture(scope="module")
def studied(tmp_path_factory):
    """(run directory, study directory, the study's result) of a 6-step ring8 run with checkpoints at 0, 2, 4, 6."""
    npgan.set_default_dtype("float32")
    npgan.manual_seed(0)
    base = tmp_path_factory.mktemp("study")
    Run.create(tiny_config(), base / "run").train(progress=False)
    result = study(base / "run", base / "out", StudyOptions(k=K, batch=BATCH, seed=SEED, max_restarts=200),
                   progress=False)
    return base / "run", base / "out", result


def game_at(run_dir, step, cfg):
    """The study's game at ``step``, rebuilt as the module docstring of npgan.run.study describes, in float64."""
    npgan.set_default_dtype("float64")
    npgan.manual_seed(cfg.seed)
    G, D = build_models(cfg)
    path = run_dir / ("checkpoint.npz" if step == 6 else f"checkpoints/step_{step:06d}.npz")
    arrays, meta = load_arrays(path)
    assert meta["step"] == step
    G.load_state_dict({k[2:]: v for k, v in arrays.items() if k.startswith("G/")})
    D.load_state_dict({k[2:]: v for k, v in arrays.items() if k.startswith("D/")})
    bcfg = tiny_config()
    bcfg.train.batch_size = BATCH
    npgan.manual_seed(SEED)
    real = npgan.Tensor(real_source(bcfg)(SEED).data.astype("float64"))
    z = npgan.Tensor(np.random.default_rng([cfg.seed, 11, SEED]).standard_normal((BATCH, cfg.train.z_dim)))
    return game_of(cfg.train, G, D, z, real, step), G, D


def test_the_json_and_the_pictures(studied):
    run_dir, out, result = studied
    on_disk = json.loads((out / "study.json").read_text())
    assert [r["step"] for r in on_disk["checkpoints"]] == [0, 2, 4, 6]
    assert [(p["from_step"], p["to_step"]) for p in on_disk["path_angles"]] == [(0, 6), (2, 6), (4, 6)]
    row = on_disk["checkpoints"][-1]
    assert len(row["eigenvalues"]["values"]) == K and all(row["eigenvalues"]["converged"])
    assert set(row["hessians"]) == {"G", "D"} and set(row["hessians"]["G"]) >= {"min", "max", "min_residual"}
    assert on_disk["n_g"] + on_disk["n_d"] == 331 and on_disk["options"]["batch"] == BATCH
    assert on_disk["claims"] == result["claims"] and len(result["claims"]) == 6
    assert result["claims"][0].startswith("rotation: max |Im λ|/|Re λ| over J's top-6 eigenvalues (LM): ")
    for name in STUDY_FILES[1:]:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name


def test_a_study_json_read_back_is_plotted_again(studied, tmp_path):
    """JSON has no inf or nan (None in their place: a ratio with Re λ = 0, a cos with v = 0); plot() takes them."""
    data = json.loads((studied[1] / "study.json").read_text())
    data["checkpoints"][0]["ratio"] = None
    data["path_angles"][0]["cos"][3] = None
    plot(data, tmp_path)
    assert all((tmp_path / name).read_bytes()[:4] == b"\x89PNG" for name in STUDY_FILES[1:])


def test_the_numbers_are_npgan_games_and_the_dense_matrices(studied):
    run_dir, _, result = studied
    cfg = tiny_config()
    row = result["checkpoints"][2]
    game, G, D = game_at(run_dir, 4, cfg)
    lg, ld, v = game.evaluate()
    assert row["field_norm"] == pytest.approx(float(np.linalg.norm(v)), rel=1e-12)
    assert (row["loss_g"], row["loss_d"]) == pytest.approx((lg, ld), rel=1e-12)
    n, ng = game.n, game.n_g
    with game.linearize() as lin:
        J = np.stack([lin.jvp(e) for e in np.eye(n)], axis=1)
        HG = np.stack([lin.hvp("G", e) for e in np.eye(ng)], axis=1)
        HD = np.stack([lin.hvp("D", e) for e in np.eye(n - ng)], axis=1)
    lam, X = np.linalg.eig(J)
    Y = np.linalg.inv(X).conj().T  # left eigenvectors: columns with y_iᴴ x_i = 1
    got = np.array([complex(*v) for v in row["eigenvalues"]["values"]])
    want = lam[np.argsort(-np.abs(lam), kind="stable")][:K]
    for mu, res in zip(got, row["eigenvalues"]["residuals"]):
        i = int(np.argmin(np.abs(lam - mu)))
        # to first order |μ − λ| ≤ κ(λ)·‖r‖ (docs/math.md §16), κ = ‖y‖‖x‖/|yᴴx|; plus numpy's own error, about
        # κ·n·ε·‖J‖
        kappa = np.linalg.norm(Y[:, i]) * np.linalg.norm(X[:, i]) / abs(Y[:, i].conj() @ X[:, i])
        bound = 2 * kappa * res + kappa * n * 2.2e-16 * np.linalg.norm(J, 2)
        assert abs(mu - lam[i]) <= bound, (mu, lam[i], kappa, res)
    np.testing.assert_allclose(np.sort(np.abs(got)), np.sort(np.abs(want)), rtol=1e-6)
    for who, H in (("G", HG), ("D", HD)):
        w = np.linalg.eigvalsh((H + H.T) / 2)
        h = row["hessians"][who]
        # symmetric: |λ − λ_H| ≤ ‖r‖ exactly, plus eigvalsh's n·ε·‖H‖
        for mine, ref, r in ((h["min"], w[0], h["min_residual"]), (h["max"], w[-1], h["max_residual"])):
            assert abs(mine - ref) <= r + len(w) * 2.2e-16 * abs(w).max(), (who, mine, ref, r)
    assert row["ratio"] == pytest.approx(max(abs(m.imag) / abs(m.real) for m in got), rel=1e-12)


def test_the_path_angles_are_npgan_games(studied):
    run_dir, _, result = studied
    cfg = tiny_config()
    game, _, _ = game_at(run_dir, 6, cfg)
    x6 = game.get_flat()
    g0, G0, D0 = game_at(run_dir, 0, cfg)
    x0 = game.flat_from(G0.state_dict(), D0.state_dict())
    pa = game.path_angle(x0, x6, np.linspace(0, 1, 21))
    mine = result["path_angles"][0]
    np.testing.assert_allclose(mine["cos"], pa.cos, rtol=1e-12)
    np.testing.assert_allclose(mine["norm"], pa.norm, rtol=1e-12)


def snapshot(d):
    return {str(p.relative_to(d)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_the_cli_reads_the_run_and_writes_nothing_there(studied, tmp_path, capsys):
    run_dir = studied[0]
    before = snapshot(run_dir)
    dtype, rng = backend.get_default_dtype(), backend.get_rng_state()
    assert main(["study", str(run_dir), "--out", str(tmp_path / "s"), "--k", "4", "--limit", "2", "--no-hessians",
                 "--no-progress", "--batch", "16"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    data = json.loads((tmp_path / "s" / "study.json").read_text())
    assert out == data["claims"] and [r["step"] for r in data["checkpoints"]] == [0, 6]
    assert snapshot(run_dir) == before
    assert backend.get_default_dtype() == dtype and backend.get_rng_state() == rng
    # a study is there: not replaced without --force; never inside the run directory
    assert main(["study", str(run_dir), "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    assert "already holds a study" in capsys.readouterr().err
    assert main(["study", str(run_dir), "--out", str(run_dir / "inside"), "--no-progress"]) == 2
    assert "inside the run directory" in capsys.readouterr().err
    assert snapshot(run_dir) == before and not (run_dir / "inside").exists()


def test_a_run_without_kept_checkpoints_is_studied_at_its_last(tmp_path):
    Run.create(tiny_config(keep=False), tmp_path / "run").train(progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()
    result = study(tmp_path / "run", tmp_path / "out", StudyOptions(k=3, batch=16, hessians=False), progress=False)
    assert [r["step"] for r in result["checkpoints"]] == [6] and result["path_angles"] == []
    assert len(result["claims"]) == 3 and (tmp_path / "out" / "path_angle.png").is_file()


def test_a_model_file_run_is_studied_only_with_trust_model(tmp_path, capsys):
    marker = tmp_path / "imported"
    model = tmp_path / "my_gan.py"
    model.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('yes')\nfrom npgan import nn\n\n\n"
                     "def build(cfg):\n"
                     "    return (nn.Sequential(nn.Linear(cfg.train.z_dim, 8), nn.Tanh(), nn.Linear(8, 2)),\n"
                     "            nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)))\n")
    cfg = tiny_config()
    cfg.model, cfg.model_build = "custom", f"{model}:build"
    Run.create(cfg, tmp_path / "run").train(progress=False)
    marker.unlink()
    with pytest.raises(RunError, match="--trust-model"):
        study(tmp_path / "run", tmp_path / "out", StudyOptions(k=2, batch=8, hessians=False), progress=False)
    assert not marker.exists() and not (tmp_path / "out").exists()
    assert main(["study", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--k", "2", "--batch", "8",
                 "--no-hessians", "--no-progress", "--trust-model"]) == 0
    assert marker.exists() and (tmp_path / "out" / "study.json").is_file()
    model.write_text(model.read_text() + "\n# changed\n")
    assert main(["study", str(tmp_path / "run"), "--out", str(tmp_path / "out2"), "--trust-model",
                 "--no-progress"]) == 2
    assert "has changed since the run was created" in capsys.readouterr().err


@pytest.mark.parametrize("bad,match", [(dict(k=0), r"k must be an integer in \[1, 500\], got 0"),
                                       (dict(which="XX"), "unknown which"), (dict(limit=1), "limit must be 0"),
                                       (dict(dtype="float16"), "unknown dtype")])
def test_bad_options_are_one_line(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        study(tmp_path, tmp_path / "out", StudyOptions(**bad), progress=False)


def test_on_the_stand_in_gpu_the_study_gives_the_cpus_numbers(studied, tmp_path):
    """--device gpu on the stand-in (NumPy underneath, the same operations): the same JSON numbers as on the CPU."""
    import standin
    run_dir = studied[0]
    opts = dict(k=2, batch=16, limit=2, hessians=False, path_points=3)
    cpu = study(run_dir, tmp_path / "cpu", StudyOptions(**opts), progress=False)
    with standin.installed(device=False):
        gpu = study(run_dir, tmp_path / "gpu", StudyOptions(**opts, device="gpu"), progress=False)
        assert backend.get_device() == "cpu"  # restored
    for a, b in zip(cpu["checkpoints"], gpu["checkpoints"]):
        assert a["eigenvalues"]["values"] == b["eigenvalues"]["values"] and a["field_norm"] == b["field_norm"]
    assert cpu["path_angles"][0]["cos"] == gpu["path_angles"][0]["cos"]
