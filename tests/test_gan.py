"""The training loop: what a step records, every loss kind, schedules, reproducibility, exact resume."""

import math

import numpy as np
import pytest
from helpers import copy_state_to_torch, torch_or_skip

import npgan
from npgan import data, nn, optim
from npgan.gan import HISTORY_FIELDS, TrainConfig, Trainer
from npgan.gan.losses import LOSS_KINDS
from npgan.run.experiment import Run
from npgan.run.presets import make_config


def _tiny(loss="non_saturating", **kw):
    G = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    cfg = TrainConfig(steps=20, batch_size=32, z_dim=4, loss=loss, lr=1e-3, **kw)
    real = lambda step: data.ring8(32)
    return Trainer(G, D, optim.Adam(G.parameters(), lr=1e-3), optim.Adam(D.parameters(), lr=1e-3), real, cfg)


@pytest.mark.parametrize("loss", LOSS_KINDS)
def test_every_loss_trains_and_records_finite_scalars(loss):
    tr = _tiny(loss)
    g0 = [p.data.copy() for p in tr.G.parameters()]
    d0 = [p.data.copy() for p in tr.D.parameters()]
    for _ in range(5):
        tr.step()
    rows = tr.flush()
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    for r in rows:
        assert set(r) == set(HISTORY_FIELDS)
        for k in ("loss_d", "loss_g", "d_x", "d_g_z", "grad_norm_g", "grad_norm_d"):
            assert math.isfinite(r[k]), (loss, k, r)
        assert 0 <= r["d_x"] <= 1 and 0 <= r["d_g_z"] <= 1
        assert math.isnan(r["entropy"])  # λ = 0: no entropy computed
    assert all(not np.array_equal(a, p.data) for a, p in zip(g0, tr.G.parameters()))
    # every weight matrix of D moved (the last bias of hinge/wasserstein critics has gradient −1 + 1 = 0)
    assert all(not np.array_equal(a, p.data) for a, p in zip(d0, tr.D.parameters()) if p.ndim == 2)
    assert tr.flush() == []


def test_wasserstein_clips_the_critic():
    tr = _tiny("wasserstein", clip_value=0.005)
    tr.step()
    for p in tr.D.parameters():
        assert np.abs(p.data).max() <= 0.005 + 1e-9


def test_generator_step_leaves_discriminator_untouched_and_records_entropy():
    tr = _tiny(entropy_weight=0.5, bandwidth=0.3, order="g_first")
    d_before = [p.data.copy() for p in tr.D.parameters()]
    tr._g_phase(0.5)
    assert all(np.array_equal(a, p.data) for a, p in zip(d_before, tr.D.parameters()))
    assert all(p.requires_grad for p in tr.D.parameters())  # re-enabled after the G phase
    assert all(p.grad is None for p in tr.D.parameters())  # no D weight gradient was computed
    tr.step()
    r = tr.flush()[0]
    assert math.isfinite(r["entropy"]) and r["entropy_weight"] == 0.5


def test_initial_discriminator_loss_is_the_sum_of_both_bce_terms():
    """At initialisation D's logits are near 0, so BCE(D(x), 1) + BCE(D(G(z)), 0) is near 2·ln 2."""
    tr = _tiny()
    for p in tr.D.parameters():
        p.data *= 1e-3  # logits ≈ 0
    tr.step()
    rec = tr.flush()[0]
    assert rec["loss_d"] == pytest.approx(2 * math.log(2), abs=1e-2)
    assert rec["loss_g"] == pytest.approx(math.log(2), abs=1e-2)
    assert rec["d_x"] == pytest.approx(0.5, abs=1e-2) and rec["d_g_z"] == pytest.approx(0.5, abs=1e-2)


def test_schedules_are_linear():
    cfg = TrainConfig(steps=11, lr=1e-3, lr_final=1e-4, entropy_weight=0.1, entropy_weight_final=0.0)
    assert cfg.schedule(cfg.lr, cfg.lr_final, 0) == pytest.approx(1e-3)
    assert cfg.schedule(cfg.lr, cfg.lr_final, 5) == pytest.approx(5.5e-4)
    assert cfg.schedule(cfg.lr, cfg.lr_final, 10) == pytest.approx(1e-4)
    assert cfg.schedule(cfg.entropy_weight, cfg.entropy_weight_final, 10) == pytest.approx(0.0)
    assert cfg.schedule(0.3, None, 7) == 0.3


@pytest.mark.parametrize("bad, msg", [
    (dict(loss="bogus"), "unknown loss"), (dict(order="sideways"), "order"), (dict(steps=0), "steps"),
    (dict(batch_size=-1), "batch_size"), (dict(lr=0.0), "lr"), (dict(entropy_weight=-1.0), "entropy_weight"),
    (dict(bandwidth="wide"), "bandwidth"), (dict(bandwidth=-0.1), "bandwidth"),
])
def test_bad_config_is_refused(bad, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**bad).validate()


def _small_ring_config(steps=24):
    cfg = make_config("ring8")
    cfg.train.steps = steps
    cfg.train.batch_size = 64
    cfg.log_every = 5
    cfg.checkpoint_every = 10
    cfg.sample_every = 1000
    cfg.eval_samples = 500
    return cfg


def _weights(run):
    return {**{f"G/{k}": v for k, v in run.G.state_dict().items()},
            **{f"D/{k}": v for k, v in run.D.state_dict().items()}}


def test_same_seed_gives_identical_history(tmp_path):
    a = Run.create(_small_ring_config(), tmp_path / "a")
    a.train(progress=False)
    b = Run.create(_small_ring_config(), tmp_path / "b")
    b.train(progress=False)
    assert (tmp_path / "a" / "history.csv").read_text() == (tmp_path / "b" / "history.csv").read_text()
    c_cfg = _small_ring_config()
    c_cfg.seed = 1
    c = Run.create(c_cfg, tmp_path / "c")
    c.train(progress=False)
    assert (tmp_path / "a" / "history.csv").read_text() != (tmp_path / "c" / "history.csv").read_text()


@pytest.mark.parametrize("preset", ["ring8", "digits-mlp", "digits-dcgan", "digits-dcgan reuse_fake"])
def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path, preset):
    def cfg():
        c = _small_ring_config(20) if preset == "ring8" else make_config(preset.split()[0])
        c.train.reuse_fake = preset.endswith("reuse_fake")
        if preset != "ring8":
            c.train.steps, c.train.batch_size = 20, 32
            c.log_every, c.checkpoint_every, c.sample_every, c.eval_samples = 5, 10, 1000, 200
        return c

    full = Run.create(cfg(), tmp_path / "full")
    full.train(progress=False)

    part = Run.create(cfg(), tmp_path / "part")
    for _ in range(13):  # stop between checkpoints: steps 11..13 are lost and recomputed
        part.trainer.step()
        if part.trainer.step_count == 10:
            part._append_history(part.trainer.flush())
            part.save_checkpoint()
    del part
    resumed = Run.resume(tmp_path / "part")
    assert resumed.trainer.step_count == 10
    resumed.train(progress=False)
    wf, wr = _weights(full), _weights(resumed)
    assert wf.keys() == wr.keys()
    for k in wf:
        assert np.array_equal(wf[k], wr[k]), k
    assert (tmp_path / "full" / "history.csv").read_text() == (tmp_path / "part" / "history.csv").read_text()
    sf, sr = full.opt_g.state_dict(), resumed.opt_g.state_dict()
    for i in sf["state"]:
        assert sf["state"][i]["step"] == sr["state"][i]["step"]
        assert np.array_equal(sf["state"][i]["exp_avg_sq"], sr["state"][i]["exp_avg_sq"])


def test_sample_does_not_change_state():
    cfg = make_config("digits-dcgan")
    run = Run(cfg, "/nonexistent-never-written")
    before = {k: v.copy() for k, v in run.G.state_dict().items()}
    rng_before = npgan.backend.get_rng_state()
    x = run.trainer.sample(run.fixed_z)
    assert x.shape == (64, 1, 8, 8)
    assert npgan.backend.get_rng_state() == rng_before
    for k, v in run.G.state_dict().items():
        assert np.array_equal(v, before[k]), k


@pytest.mark.parametrize("order", ["d_first", "g_first"])
def test_reuse_fake_is_pytorchs_dcgan_loop(order):
    """``reuse_fake``: one G forward a step (two without), and three steps equal PyTorch's DCGAN example written in
    torch with the same weights, batches and noise (float64): d_first, D on x and fake.detach(), then G's loss
    on D(fake) of that same fake; g_first, G's step on a fresh fake, then D on that fake detached. G has
    BatchNorm, so a second forward would also move its running statistics a second time."""
    torch = torch_or_skip()
    npgan.set_default_dtype("float64")
    G = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    tG = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                             torch.nn.Linear(16, 2)).double()
    tD = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.LeakyReLU(0.2), torch.nn.Linear(16, 1)).double()
    copy_state_to_torch(G, tG)
    copy_state_to_torch(D, tD)
    reals = [np.asarray(npgan.backend.to_numpy(data.ring8(32).data)) for _ in range(3)]
    cfg = TrainConfig(steps=3, batch_size=32, z_dim=4, lr=1e-3, reuse_fake=True, order=order)
    tr = Trainer(G, D, optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999)),
                 optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999)),
                 lambda step: npgan.Tensor(reals[step % 3]), cfg)
    noises, forwards = [], []
    draw, g_forward = tr._noise, G.forward
    tr._noise = lambda n: noises.append(draw(n)) or noises[-1]
    G.forward = lambda z: forwards.append(1) or g_forward(z)
    for _ in range(3):
        tr.step()
    assert len(noises) == len(forwards) == 3  # one noise draw and one G forward a step

    opt_g = torch.optim.Adam(tG.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(tD.parameters(), lr=1e-3, betas=(0.5, 0.999))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    def d_step(x, fake):
        opt_d.zero_grad()
        out_x, out_f = tD(x), tD(fake.detach())
        (bce(out_x, torch.ones_like(out_x)) + bce(out_f, torch.zeros_like(out_f))).backward()
        opt_d.step()

    def g_step(x, fake):
        opt_g.zero_grad()
        out = tD(fake)
        bce(out, torch.ones_like(out)).backward()
        opt_g.step()

    for step in range(3):
        x = torch.from_numpy(reals[step])
        fake = tG(torch.from_numpy(np.asarray(npgan.backend.to_numpy(noises[step].data))))
        for phase in ((d_step, g_step) if order == "d_first" else (g_step, d_step)):
            phase(x, fake)
    for net, twin in ((G, tG), (D, tD)):
        theirs = twin.state_dict()
        for k, v in net.state_dict().items():
            np.testing.assert_allclose(npgan.backend.to_numpy(v), theirs[k].numpy(), rtol=1e-9, atol=1e-12,
                                       err_msg=f"{order}: {k}")
    cfg.reuse_fake = False  # without it: a fresh z' and a second forward for the G step
    tr.step()
    assert len(noises) == 5 and len(forwards) == 5
