"""Gradient penalties in the training loop: the D step against a hand-computed one (R1, R2, WGAN-GP, lazy
weights), the history's gp column, exact resume, the WGAN-GP recipe and what the command line refuses."""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest

import npgan
from npgan import backend, nn, optim
from npgan.errors import DivergenceError
from npgan.gan import HISTORY_FIELDS, TrainConfig, Trainer
from npgan.gan.losses import discriminator_loss
from npgan.run.checkpoint import load_arrays
from npgan.run.cli import main
from npgan.run.config import read_config, write_config
from npgan.run.experiment import Run
from npgan.run.presets import WGAN_GP, make_config
from npgan.tensor import Tensor

N, Z = 16, 3


@pytest.fixture
def float64():
    was = npgan.get_default_dtype()
    npgan.set_default_dtype("float64")
    yield
    npgan.set_default_dtype(was)


def _cli(args, capsys):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


# ============================================================================ one D step by hand
def _trainer(kind, every, loss="non_saturating", d_steps=1, weight=10.0, lr=0.1):
    rng = np.random.default_rng(1)
    reals = [rng.standard_normal((N, 2)) for _ in range(4)]
    npgan.manual_seed(5)
    G = nn.Sequential(nn.Linear(Z, 8), nn.ReLU(), nn.Linear(8, 2))
    D = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
    cfg = TrainConfig(steps=3, batch_size=N, z_dim=Z, loss=loss, lr=lr, d_steps=d_steps, gp=kind,
                      gp_weight=weight, gp_every=every)
    return Trainer(G, D, optim.Adam(G.parameters(), lr=lr), optim.SGD(D.parameters(), lr=lr),
                   lambda step: Tensor(reals[step]), cfg), reals


def _hand_gradients(tr, real, kind, w, seed):
    """∇_θ [L_D + w·P] of D at its current weights, on the batch the trainer will draw after manual_seed(seed):
    the penalty written out with npgan.grad (not gradient_penalty)."""
    npgan.manual_seed(seed)
    z = Tensor(backend.rng().standard_normal((N, Z), dtype=np.float64))
    fake = tr.G(z).detach()
    params = list(tr.D.parameters())
    total = discriminator_loss(tr.D(Tensor(real)), tr.D(fake), tr.cfg.loss)
    P = None
    if kind:
        if kind == "wgan-gp":
            eps = backend.rng().random((N, 1), dtype=np.float64)
            pts = eps * real + (1 - eps) * fake.data
        else:
            pts = real if kind == "r1" else fake.data
        x = Tensor(pts, requires_grad=True)
        g, = npgan.grad(tr.D(x).sum(), x, create_graph=True)
        sq = (g * g).sum(axis=1)
        P = ((sq ** 0.5 - 1) ** 2).mean() if kind == "wgan-gp" else sq.mean()
        total = total + w * P
    grads = npgan.grad(total, params)
    return [g.data for g in grads], (None if P is None else P.item())


@pytest.mark.parametrize("kind, every, at, applied", [
    ("r1", 1, 0, True), ("r1", 3, 0, True), ("r1", 3, 1, False), ("r1", 3, 2, False), ("r2", 2, 2, True),
    ("wgan-gp", 1, 1, True), ("wgan-gp", 2, 1, False)])
def test_d_step_equals_the_hand_computed_step(float64, kind, every, at, applied):
    """SGD on D: θ' = θ − lr·∇(L_D + w·P) with w = γ·(1/2 for R1, R2; 1 for WGAN-GP)·k on the D steps
    j ≡ 0 (mod k), and θ' = θ − lr·∇L_D on the others."""
    gamma, lr = 10.0, 0.1
    tr, reals = _trainer(kind, every, weight=gamma, lr=lr)
    tr.step_count = at
    w = gamma * (1.0 if kind == "wgan-gp" else 0.5) * every
    grads, P = _hand_gradients(tr, reals[at], kind if applied else "", w, seed=11)
    plain, _ = _hand_gradients(tr, reals[at], "", 0.0, seed=11)
    before = [p.data.copy() for p in tr.D.parameters()]
    npgan.manual_seed(11)
    rec = {}
    tr._d_phase(rec)
    for b, p, g in zip(before, tr.D.parameters(), grads):
        np.testing.assert_allclose(p.data, b - lr * g, rtol=1e-12, atol=1e-14)
    if applied:
        assert rec["gp"].item() == pytest.approx(P, rel=1e-12)
        # the penalty moves the update: a dropped or mis-weighted penalty would fail the comparison above
        diff = max(np.abs(a - b).max() for a, b in zip(grads, plain))
        assert diff > 1e-4 * max(np.abs(g).max() for g in plain)
    else:
        assert "gp" not in rec


def test_lazy_penalty_every_kth_d_step_over_d_steps(float64):
    """The D steps are numbered over the run (j = step·d_steps + i): d_steps = 2, k = 3 penalise j = 0, 3, 6,
    i.e. generator steps 0 (i = 0), 1 (i = 1), 3 (i = 0), and none in step 2 (j = 4, 5)."""
    tr, _ = _trainer("r1", 3, d_steps=2)
    calls = []
    import npgan.gan.trainer as gan_mod
    orig = gan_mod.gradient_penalty

    def spy(*a, **kw):
        calls.append(tr.step_count)
        return orig(*a, **kw)

    gan_mod.gradient_penalty = spy
    try:
        for _ in range(4):
            tr.step()
    finally:
        gan_mod.gradient_penalty = orig
    assert calls == [0, 1, 3]
    assert [math.isfinite(r["gp"]) for r in tr.flush()] == [True, True, False, True]
    tr2, _ = _trainer("", 1)
    tr2.step()
    assert math.isnan(tr2.flush()[0]["gp"])


def test_wgan_gp_does_not_clip_the_critic(float64):
    tr, _ = _trainer("wgan-gp", 1, loss="wasserstein")
    tr.step()
    assert max(np.abs(p.data).max() for p in tr.D.parameters()) > 0.05  # clip_value 0.01 would bound it
    tr, _ = _trainer("r1", 1, loss="wasserstein")  # the clipping belongs to WGAN, not to every penalty
    tr.step()
    assert max(np.abs(p.data).max() for p in tr.D.parameters()) <= 0.01


def test_non_finite_penalty_is_caught_by_the_guard(float64):
    """L_D is finite but w·P is not (w = 1e308·(1/2)·4 overflows): the guard checks L_D + w·P."""
    tr, _ = _trainer("r1", 4, weight=1e308)
    before = [p.data.copy() for p in tr.D.parameters()]
    with pytest.raises(DivergenceError, match=r"loss_d = inf.*gp = "):
        tr.step()
    assert all(np.array_equal(b, p.data) for b, p in zip(before, tr.D.parameters()))


@pytest.mark.parametrize("bad, msg", [({"gp": "r3"}, "unknown gp .r3.; choose one of r1, r2, wgan-gp"),
                                      ({"gp_weight": -1.0}, "gp_weight must be a number >= 0"),
                                      ({"gp_weight": float("nan")}, "gp_weight"),
                                      ({"gp_every": 0}, r"gp_every must be an integer in \[1, 1000000000\]"),
                                      ({"gp_every": 1.5}, "gp_every")])
def test_bad_penalty_config_is_refused(bad, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**bad).validate()


def test_trainer_refuses_a_batchnorm_critic_under_wgan_gp():
    G = nn.Sequential(nn.Linear(Z, 2))
    D = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    cfg = TrainConfig(steps=2, batch_size=N, z_dim=Z, gp="wgan-gp")
    with pytest.raises(ValueError, match="BatchNorm"):
        Trainer(G, D, optim.Adam(G.parameters()), optim.Adam(D.parameters()), lambda s: None, cfg)
    cfg.gp = "r1"  # R1 allows it
    Trainer(G, D, optim.Adam(G.parameters()), optim.Adam(D.parameters()), lambda s: None, cfg)


# ============================================================================ runs: history and exact resume
def _config(tmp_path, steps=20):
    cfg = make_config("ring8")
    cfg.train.steps, cfg.train.batch_size = steps, 64
    cfg.train.gp, cfg.train.gp_every, cfg.train.gp_weight = "r1", 2, 1.0
    cfg.log_every, cfg.checkpoint_every, cfg.sample_every, cfg.eval_samples = 5, 10, 1000, 300
    write_config(tmp_path / "c.toml", cfg)
    return tmp_path / "c.toml"


def test_r1_run_records_gp_every_second_step_and_resumes_exactly(tmp_path, capsys):
    conf = _config(tmp_path)
    full = tmp_path / "full"
    rc, _, err = _cli(["train", "--config", conf, "--no-progress", "--out", full], capsys)
    assert rc == 0, err
    assert "penalty r1 weight 1 every 2" in err
    rows = list(csv.DictReader((full / "history.csv").read_text().splitlines()))
    assert [int(r["step"]) for r in rows] == list(range(1, 21))
    for r in rows:  # D step j = step − 1 is penalised when j is even
        gp = float(r["gp"])
        assert (math.isfinite(gp) and gp > 0) if (int(r["step"]) - 1) % 2 == 0 else math.isnan(gp), r

    part = tmp_path / "part"
    run = Run.create(read_config(conf), part)
    for _ in range(13):  # killed between checkpoints: steps 11..13 are recomputed
        run.trainer.step()
        if run.trainer.step_count == 10:
            run._append_history(run.trainer.flush())
            run.save_checkpoint()
    run.close()
    del run
    rc, _, err = _cli(["resume", part, "--no-progress"], capsys)
    assert rc == 0, err
    a, _ = load_arrays(full / "checkpoint.npz")
    b, _ = load_arrays(part / "checkpoint.npz")
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert (full / "history.csv").read_text() == (part / "history.csv").read_text()


def test_a_run_written_before_the_penalty_fields_still_resumes(tmp_path, capsys):
    """config.toml without gp/gp_weight/gp_every and history.csv without the gp column (as npgan wrote them
    before the penalty existed): the run resumes, the old rows read gp = NaN and the history is rewritten with the
    column."""
    out = tmp_path / "old"
    cfg = make_config("ring8")
    cfg.train.steps, cfg.train.batch_size = 10, 64
    cfg.log_every, cfg.checkpoint_every, cfg.sample_every, cfg.eval_samples = 5, 5, 1000, 300
    write_config(tmp_path / "c.toml", cfg)
    assert _cli(["train", "--config", tmp_path / "c.toml", "--steps", "5", "--no-progress", "--out", out],
                capsys)[0] == 0
    toml = (out / "config.toml").read_text()
    toml = re.sub(r"^gp(_weight|_every)? = .*\n", "", toml, flags=re.M)
    assert "gp" not in toml
    (out / "config.toml").write_text(toml)
    hist = (out / "history.csv").read_text().splitlines()
    (out / "history.csv").write_text("\n".join(ln.rsplit(",", 1)[0] for ln in hist) + "\n")
    assert not (out / "history.csv").read_text().startswith(",".join(HISTORY_FIELDS))
    rc, _, err = _cli(["resume", out, "--steps", "10", "--no-progress"], capsys)
    assert rc == 0, err
    rows = list(csv.DictReader((out / "history.csv").read_text().splitlines()))
    assert list(rows[0]) == list(HISTORY_FIELDS)
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    assert all(math.isnan(float(r["gp"])) for r in rows)
    assert all(math.isfinite(float(r["loss_d"])) for r in rows)


# ============================================================================ the WGAN-GP recipe, the CLI
def test_wgan_gp_recipe_on_ring8(tmp_path, capsys):
    out = tmp_path / "wg"
    rc, _, err = _cli(["train", "--preset", "ring8", "--wgan-gp", "--steps", "5", "--batch-size", "64",
                       "--no-progress", "--out", out], capsys)
    assert rc == 0, err
    cfg = read_config(out / "config.toml")
    assert (cfg.optimizer, cfg.beta1, cfg.beta2) == ("adam", 0.0, 0.9)
    tr = cfg.train
    assert (tr.loss, tr.gp, tr.gp_weight, tr.gp_every, tr.d_steps, tr.lr, tr.lr_final) == \
        ("wasserstein", "wgan-gp", 10.0, 1, 5, 1e-4, None)
    assert WGAN_GP["train"]["gp_weight"] == 10.0
    rows = list(csv.DictReader((out / "history.csv").read_text().splitlines()))
    assert len(rows) == 5 and all(math.isfinite(float(r["gp"])) for r in rows)
    # options given with the recipe override it
    rc, _, err = _cli(["train", "--preset", "ring8", "--wgan-gp", "--gp-weight", "1", "--d-steps", "2",
                       "--steps", "2", "--batch-size", "64", "--no-progress", "--out", tmp_path / "wg2"], capsys)
    assert rc == 0, err
    tr2 = read_config(tmp_path / "wg2" / "config.toml").train
    assert (tr2.gp_weight, tr2.d_steps) == (1.0, 2)


def test_gp_none_switches_a_presets_penalty_off(tmp_path, capsys):
    """shapes-dcgan trains with R1; ``--gp none`` trains it without: config gp "", no gp values in the history."""
    runs = {}
    for name, extra in (("on", []), ("off", ["--gp", "none"])):
        out = tmp_path / name
        rc, _, err = _cli(["train", "--preset", "shapes-dcgan", *extra, "--width", "4", "--batch-size", "8",
                           "--steps", "4", "--no-progress", "--out", out], capsys)
        assert rc == 0, err
        runs[name] = (read_config(out / "config.toml").train,
                      list(csv.DictReader((out / "history.csv").read_text().splitlines())))
    (on, rows_on), (off, rows_off) = runs["on"], runs["off"]
    assert (on.gp, off.gp) == ("r1", "")
    assert math.isfinite(float(rows_on[0]["gp"]))  # lazy R1 (every 4th D step) starts at step 1
    assert all(math.isnan(float(r["gp"])) for r in rows_off)


@pytest.mark.parametrize("args, needle", [
    (["--preset", "digits-dcgan", "--wgan-gp"], "refuses a critic with BatchNorm"),
    (["--preset", "digits-dcgan", "--gp", "wgan-gp"], "BatchNorm mixes the samples"),
    (["--preset", "ring8", "--gp-every", "0"], "--gp-every must be an integer in [1, 1000000000]"),
    (["--preset", "ring8", "--gp", "r1", "--gp-weight", "-1"], "--gp-weight must be a number >= 0"),
    (["--preset", "ring8", "--gp", "r1", "--gp-weight", "inf"], "--gp-weight"),
    (["--preset", "ring8", "--gp", "r3"], "unknown gp 'r3'; choose one of r1, r2, wgan-gp"),
    (["--preset", "ring8", "--wgan", "--wgan-gp"], "choose one"),
])
def test_bad_penalty_options_exit_2_in_one_line_and_write_nothing(tmp_path, capsys, args, needle):
    out = tmp_path / "x"
    rc, _, err = _cli(["train", *args, "--steps", "3", "--no-progress", "--out", out], capsys)
    assert rc == 2
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_help_documents_the_penalty_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for s in ("--gp {r1,r2,wgan-gp,none}", "--gp-weight", "--gp-every", "--wgan-gp", "betas (0, 0.9)",
              "BatchNorm is refused"):
        assert s in text, s
