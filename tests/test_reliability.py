"""Reliability: the divergence guard, checkpoints as safe data, a full disk, memory checks, extreme-value numerics."""

from __future__ import annotations

import io
import json
import math
import pickle
import zipfile
from pathlib import Path

import mpmath
import numpy as np
import pytest

import npgan
import npgan.functional as F
from npgan import data, nn, optim
from npgan.errors import DivergenceError, InsufficientMemoryError, PrecisionWarning
from npgan.gan import TrainConfig, Trainer
from npgan.gan.losses import kde_entropy
from npgan.run import checkpoint
from npgan.run.checkpoint import CheckpointError, config_hash, load_arrays, save_arrays
from npgan.run.cli import main
from npgan.run.experiment import Run, check_memory, estimate_step_bytes
from npgan.run.memory import traced_peak
from npgan.run.presets import make_config


# ============================================================================ helpers
def _ring_cfg(steps=30, **train):
    cfg = make_config("ring8")
    cfg.train.steps, cfg.train.batch_size = steps, 64
    cfg.log_every, cfg.checkpoint_every, cfg.sample_every, cfg.eval_samples = 5, 10, 10_000, 200
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def _state(run):
    """Every piece of state a checkpoint load may change, as host copies."""
    s = {f"G/{k}": v.copy() for k, v in run.G.state_dict().items()}
    s.update({f"D/{k}": v.copy() for k, v in run.D.state_dict().items()})
    for name, opt in (("opt_g", run.opt_g), ("opt_d", run.opt_d)):
        sd = opt.state_dict()
        for i, st in sd["state"].items():
            for k, v in st.items():
                s[f"{name}/{i}/{k}"] = np.array(v)
        s[f"{name}/groups"] = json.dumps(sd["param_groups"], default=str)
    s["rng"] = json.dumps(npgan.backend.get_rng_state(), default=str)
    s["step"] = run.trainer.step_count
    s["lr_scale"] = run.trainer.lr_scale
    return s


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert np.array_equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def _nan_at(step_to_poison, once=False):
    """A real-batch source for ring8 whose batch of one step is all nan (once, or every time that step runs)."""
    fired = []

    def source(cfg):
        B = cfg.train.batch_size

        def real(step):
            x = data.ring8(B)
            if step + 1 == step_to_poison and not (once and fired):
                fired.append(step)
                x.data[...] = np.nan
            return x
        return real
    return source


def _params(net):
    return [p.data.copy() for p in net.parameters()]


def _tiny_trainer(on_nan="stop", order="d_first", real=None):
    G = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    cfg = TrainConfig(steps=20, batch_size=32, z_dim=4, lr=1e-3, on_nan=on_nan, order=order)
    logs = []
    tr = Trainer(G, D, optim.Adam(G.parameters(), lr=1e-3), optim.Adam(D.parameters(), lr=1e-3),
                 real or (lambda step: data.ring8(32)), cfg, log=logs.append)
    return tr, logs


# ============================================================================ divergence guard
@pytest.mark.parametrize("order", ["d_first", "g_first"])
def test_nan_batch_stops_before_any_parameter_changes(order):
    bad = {"on": False}

    def real(step):
        x = data.ring8(32)
        if bad["on"]:
            x.data[0, 0] = np.nan  # one poisoned value is enough
        return x
    tr, _ = _tiny_trainer(order=order, real=real)
    for _ in range(3):
        tr.step()
    g0, d0 = _params(tr.G), _params(tr.D)
    adam_d = {i: {k: np.array(v) for k, v in st.items()} for i, st in tr.opt_d.state.items()}
    bad["on"] = True
    with pytest.raises(DivergenceError, match=r"step 4: non-finite loss_d or gradient of D") as ei:
        tr.step()
    assert (ei.value.step, ei.value.network, ei.value.loss) == (4, "D", "loss_d")
    assert math.isnan(ei.value.values["loss_d"])
    assert tr.step_count == 3
    assert all(np.array_equal(a, p.data) for a, p in zip(d0, tr.D.parameters()))
    assert all(p.grad is None for p in tr.D.parameters())
    for i, st in tr.opt_d.state.items():
        for k, v in st.items():
            assert np.array_equal(adam_d[i][k], np.array(v)), (i, k)
    if order == "d_first":  # D's phase comes first: G was not touched either
        assert all(np.array_equal(a, p.data) for a, p in zip(g0, tr.G.parameters()))


def test_nan_generator_loss_names_g(monkeypatch):
    import npgan.gan.trainer as gan
    real_loss = gan.generator_loss

    def poisoned(*a, **k):
        loss, h = real_loss(*a, **k)
        return loss * float("inf"), h
    tr, _ = _tiny_trainer()
    tr.step()
    g0 = _params(tr.G)
    monkeypatch.setattr(gan, "generator_loss", poisoned)
    with pytest.raises(DivergenceError, match="step 2: non-finite loss_g or gradient of G") as ei:
        tr.step()
    assert ei.value.network == "G" and ei.value.loss == "loss_g"
    assert all(np.array_equal(a, p.data) for a, p in zip(g0, tr.G.parameters()))


def test_skip_drops_the_step_and_training_goes_on():
    poison = {5}

    def real(step):
        x = data.ring8(32)
        if step + 1 in poison:
            x.data[:] = np.inf
        return x
    tr, logs = _tiny_trainer(on_nan="skip", real=real)
    for _ in range(4):
        assert tr.step() is True
    g0, d0 = _params(tr.G), _params(tr.D)
    assert tr.step() is False
    assert all(np.array_equal(a, p.data) for a, p in zip(d0, tr.D.parameters()))
    assert all(np.array_equal(a, p.data) for a, p in zip(g0, tr.G.parameters()))  # the rest of the step too
    for _ in range(5):
        assert tr.step() is True
    rows = tr.flush()
    assert [r["step"] for r in rows] == list(range(1, 11)) and tr.skipped == 1
    assert not math.isfinite(rows[4]["loss_d"]) and math.isnan(rows[4]["loss_g"])
    assert all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for i, r in enumerate(rows) if i != 4)
    assert len(logs) == 1 and "step 5" in logs[0] and "skipped" in logs[0] and "D" in logs[0]
    assert all(np.isfinite(p.data).all() for p in [*tr.G.parameters(), *tr.D.parameters()])


def test_exploding_learning_rate_is_stopped_with_finite_weights():
    tr, _ = _tiny_trainer()
    tr.cfg.lr = 1e6  # Adam moves every weight by ~lr per step: the second step overflows
    with pytest.raises(DivergenceError) as ei:
        for _ in range(20):
            tr.step()
    assert ei.value.step <= 5
    for p in [*tr.G.parameters(), *tr.D.parameters()]:
        assert np.isfinite(p.data).all()


def _cli(args, capsys):
    """(status, stdout, stderr without the banner line that `train` prints first)."""
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    err = "\n".join(ln for ln in err.splitlines() if ln.strip() and not ln.startswith("npgan 0."))
    return rc, out, err


def _write_cfg(path, cfg):
    from npgan.run.experiment import write_config
    write_config(path, cfg)
    return path


def test_cli_stop_exits_3_with_one_line_and_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(npgan.run.presets, "real_source", _nan_at(25))
    out = tmp_path / "r"
    rc, _, err = _cli(["train", "--config", _write_cfg(tmp_path / "c.toml", _ring_cfg(40)), "--no-progress",
                       "--out", out], capsys)
    assert rc == 3
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for frag in ("npgan: diverged: step 25", "loss_d", "gradient of D", "checkpoint.npz (step 20) is intact"):
        assert frag in lines[0], lines[0]
    arrays, meta = load_arrays(out / "checkpoint.npz")
    assert meta["step"] == 20
    assert all(np.isfinite(v).all() for v in arrays.values())
    assert not list(out.glob(".*.tmp"))


def test_rollback_reloads_the_checkpoint_and_halves_the_learning_rate(tmp_path, monkeypatch):
    monkeypatch.setattr(npgan.run.presets, "real_source", _nan_at(25, once=True))
    run = Run.create(_ring_cfg(40, on_nan="rollback"), tmp_path / "r")
    logs = []
    run.train(progress=False, log=logs.append)
    monkeypatch.undo()
    assert len(logs) == 1
    assert "step 25" in logs[0] and "rolled back to the checkpoint of step 20" in logs[0] and "halved" in logs[0]
    assert run.trainer.lr_scale == 0.5 and run.trainer.step_count == 40
    _, meta = load_arrays(tmp_path / "r" / "checkpoint.npz")
    assert meta["lr_scale"] == 0.5
    hist = (tmp_path / "r" / "history.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in hist] == list(range(1, 41))
    lrs = [float(r.split(",")[8]) for r in hist]
    sched = [run.cfg.train.schedule(run.cfg.train.lr, run.cfg.train.lr_final, t) for t in range(40)]
    assert lrs[:20] == pytest.approx(sched[:20]) and lrs[20:] == pytest.approx([0.5 * v for v in sched[20:]])
    # the rolled-back run is reproducible: resuming its checkpoint gives what it gave
    assert all(np.isfinite(p.data).all() for p in run.G.parameters())


def test_rollback_survives_an_exploding_learning_rate(tmp_path):
    cfg = _ring_cfg(30, on_nan="rollback", lr=1e-3, lr_final=3e4, entropy_weight=0.0, entropy_weight_final=None)
    run = Run.create(cfg, tmp_path / "r")
    logs = []
    run.train(progress=False, log=logs.append)
    assert logs and all("rolled back" in m for m in logs)
    assert run.trainer.lr_scale == 0.5 ** len(logs) and run.trainer.step_count == 30
    assert all(np.isfinite(p.data).all() for p in [*run.G.parameters(), *run.D.parameters()])


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    run = Run.create(_ring_cfg(), tmp_path / "r")
    run.save_checkpoint()
    before = (tmp_path / "r" / "checkpoint.npz").read_bytes()
    next(iter(run.D.parameters())).data[0, 0] = np.inf
    with pytest.raises(DivergenceError, match="D/0.weight holds nan or inf"):
        run.save_checkpoint()
    assert (tmp_path / "r" / "checkpoint.npz").read_bytes() == before


def test_on_nan_is_validated_and_stored(tmp_path, capsys):
    with pytest.raises(ValueError, match="on_nan"):
        TrainConfig(on_nan="panic").validate()
    rc, _, err = _cli(["train", "--preset", "ring8", "--on-nan", "panic", "--out", tmp_path / "x"], capsys)
    assert rc == 2 and "--on-nan" in err
    cfg = _ring_cfg(5)
    rc, _, err = _cli(["train", "--config", _write_cfg(tmp_path / "c.toml", cfg), "--on-nan", "skip",
                       "--no-progress", "--out", tmp_path / "r"], capsys)
    assert rc == 0, err
    assert 'on_nan = "skip"' in (tmp_path / "r" / "config.toml").read_text()


# ============================================================================ checkpoints: data, never code
@pytest.fixture
def saved_run(tmp_path):
    run = Run.create(_ring_cfg(), tmp_path / "r")
    for _ in range(3):
        run.trainer.step()
    path = run.save_checkpoint()
    for _ in range(2):  # the state now differs from the file's
        run.trainer.step()
    return run, path


def test_header_holds_format_version_config_hash_and_checksum(saved_run):
    run, path = saved_run
    arrays, head = load_arrays(path, header=True)
    assert head["format"] == checkpoint.FORMAT_VERSION == 2 and head["npgan"] == npgan.__version__
    assert head["config_hash"] == config_hash(run.cfg.to_dict()) and len(head["config_hash"]) == 64
    assert head["meta"]["step"] == 3 and head["meta"]["arch"]["G"]["0.weight"] == [128, 16]
    assert len(head["sha256"]) == 64 and head["keys"] == list(arrays)
    with zipfile.ZipFile(path) as z:  # plain stored .npy members, nothing else
        assert all(i.filename.endswith(".npy") and i.compress_type == zipfile.ZIP_STORED for i in z.infolist())


def _member_span(path, name):
    """(start, end) byte offsets of an .npz member's array data (after its .npy header) in the file."""
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name + ".npy")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    member = raw[start:start + info.file_size]
    hlen = int.from_bytes(member[8:10], "little") + 10
    return start + hlen, start + info.file_size


def _flip(path, offset):
    b = bytearray(path.read_bytes())
    b[offset] ^= 0x10
    path.write_bytes(bytes(b))


@pytest.mark.parametrize("damage", ["truncate_half", "truncate_tail", "truncate_head", "empty",
                                    "flip_weight", "flip_adam", "flip_header_step", "garbage", "garbage_0x80",
                                    "rewritten"])
def test_damaged_checkpoint_gives_one_clear_error_and_changes_nothing(saved_run, damage):
    run, path = saved_run
    raw = path.read_bytes()
    if damage.startswith("truncate"):
        cut = {"truncate_half": len(raw) // 2, "truncate_tail": len(raw) - 7, "truncate_head": 100}[damage]
        path.write_bytes(raw[:cut])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage.startswith("garbage"):  # random bytes; one file in 256 starts with 0x80, as a pickle does
        junk = bytearray(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        junk[0] = 0x80 if damage == "garbage_0x80" else 0x3F
        path.write_bytes(bytes(junk))
    elif damage == "rewritten":  # an array changed and the zip rewritten with valid CRCs: only sha256 can tell
        with np.load(path) as z:
            members = {k: z[k] for k in z.files}
        members["G/0.weight"] = members["G/0.weight"].copy()
        members["G/0.weight"][0, 0] += 1e-3
        np.savez(path, **members)
    elif damage == "flip_header_step":
        s, e = _member_span(path, "__header__")
        text = raw[s:e]
        i = text.index(b'"step": 3')
        path.write_bytes(raw[:s + i] + text[i:i + 8] + b"8" + raw[s + i + 9:])  # step 3 -> 8, same length
    else:
        name = "D/2.weight" if damage == "flip_weight" else "opt_g/state/0/exp_avg_sq"
        s, e = _member_span(path, name)
        _flip(path, (s + e) // 2)
    before = _state(run)
    with pytest.raises(CheckpointError) as ei:
        run.load_checkpoint(path)
    msg = str(ei.value)
    assert str(path) in msg and "\n" not in msg
    assert any(w in msg for w in ("truncated", "corrupt", "checksum", "empty", "not an .npz")), msg
    if damage.startswith("flip") or damage == "rewritten":
        assert "fails its checksum" in msg
    _assert_same_state(before, _state(run))


def test_newer_format_and_other_architecture_are_refused(saved_run, tmp_path):
    run, path = saved_run
    arrays, head = load_arrays(path, header=True)
    future = tmp_path / "future.npz"
    core = {k: head[k] for k in ("format", "npgan", "config_hash", "meta", "keys")}
    core["format"] = 99
    hdr = dict(core, sha256=checkpoint._digest(arrays, core))
    payload = {"__header__": np.frombuffer(json.dumps(hdr).encode(), dtype=np.uint8), **arrays}
    np.savez(future, **payload)
    cfg = _ring_cfg()
    cfg.hidden = 64
    other_path = Run.create(cfg, tmp_path / "other").save_checkpoint()  # (this reseeds npgan's generator)
    before = _state(run)
    with pytest.raises(CheckpointError, match="format 99.*newer than this npgan.*upgrade npgan"):
        run.load_checkpoint(future)
    _assert_same_state(before, _state(run))
    with pytest.raises(CheckpointError, match="another architecture"):
        run.load_checkpoint(other_path)
    _assert_same_state(before, _state(run))


def test_a_checkpoint_that_fits_only_partly_is_rolled_back(saved_run, tmp_path):
    """Weights fit but an optimizer state does not: G and D were loaded first and must be put back."""
    run, path = saved_run
    arrays, head = load_arrays(path, header=True)
    arrays["opt_d/state/2/exp_avg"] = np.zeros((3, 3), np.float32)  # a wrong shape, under a valid checksum
    save_arrays(tmp_path / "odd.npz", arrays, head["meta"], config_hash=head["config_hash"])
    before = _state(run)
    with pytest.raises(CheckpointError, match="does not fit this run.*nothing was changed"):
        run.load_checkpoint(tmp_path / "odd.npz")
    _assert_same_state(before, _state(run))
    run.load_checkpoint(path)  # the good file still loads
    assert run.trainer.step_count == 3


def test_format_1_checkpoints_are_still_read(saved_run, tmp_path):
    run, path = saved_run
    arrays, head = load_arrays(path, header=True)
    old = {"format": 1, "npgan": "0.1.0", "meta": head["meta"], "keys": list(arrays),
           "sha256": checkpoint._digest(arrays)}
    np.savez(tmp_path / "v1.npz", __header__=np.frombuffer(json.dumps(old).encode(), dtype=np.uint8), **arrays)
    run.load_checkpoint(tmp_path / "v1.npz")
    assert run.trainer.step_count == 3


class _Payload:
    """Unpickling this calls Path.touch(marker): detectable execution."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickles_are_refused_without_executing_anything(saved_run, tmp_path):
    run, path = saved_run
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.exists()  # the payload does run when unpickled: the test below can fail
    marker = tmp_path / "pwned"
    before = _state(run)

    evil = tmp_path / "a" / "checkpoint.npz"  # a real pickle under the checkpoint's name
    evil.parent.mkdir()
    evil.write_bytes(pickle.dumps({"G/0.weight": _Payload(marker)}))
    with pytest.raises(CheckpointError, match="pickle"):
        run.load_checkpoint(evil)

    # an .npz whose member is an object array (np.save pickles it), next to a valid-looking header
    arrays, head = load_arrays(path, header=True)
    buf = io.BytesIO()
    np.save(buf, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    evil2 = tmp_path / "b" / "checkpoint.npz"
    evil2.parent.mkdir()
    with zipfile.ZipFile(evil2, "w") as z:
        hb = io.BytesIO()
        np.save(hb, np.frombuffer(json.dumps(head).encode(), dtype=np.uint8))
        z.writestr("__header__.npy", hb.getvalue())
        z.writestr("G/0.weight.npy", buf.getvalue())
    with pytest.raises(CheckpointError, match="pickle"):
        run.load_checkpoint(evil2)

    # the same, compressed (np.savez_compressed-style members are refused outright)
    evil3 = tmp_path / "c" / "checkpoint.npz"
    evil3.parent.mkdir()
    with zipfile.ZipFile(evil3, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("__header__.npy", hb.getvalue())
        z.writestr("G/0.weight.npy", buf.getvalue())
    with pytest.raises(CheckpointError):
        run.load_checkpoint(evil3)
    assert not marker.exists()
    _assert_same_state(before, _state(run))


def test_resume_refuses_a_pickle_checkpoint_via_cli(tmp_path, capsys):
    out = tmp_path / "r"
    assert _cli(["train", "--config", _write_cfg(tmp_path / "c.toml", _ring_cfg(5)), "--no-progress",
                 "--out", out], capsys)[0] == 0
    marker = tmp_path / "pwned"
    (out / "checkpoint.npz").write_bytes(pickle.dumps(_Payload(marker)))
    rc, _, err = _cli(["resume", out, "--steps", "10", "--no-progress"], capsys)
    assert rc == 2 and "pickle" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


# ============================================================================ memory
def test_a_batch_too_large_for_memory_fails_before_training(tmp_path, capsys):
    out = tmp_path / "r"
    rc, _, err = _cli(["train", "--preset", "ring8", "--batch-size", "2000000000", "--out", out], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    for frag in ("batch size 2000000000 needs about", "TiB" if "PiB" not in lines[0] else "PiB", "available",
                 "--batch-size"):
        assert frag in lines[0], lines[0]
    assert not out.exists()


def test_memory_check_suggests_a_batch_that_fits():
    cfg = make_config("ring8")
    G, D = npgan.run.presets.build_models(cfg)
    cfg.train.batch_size = 4096
    est = estimate_step_bytes(G, D, cfg.train)
    with pytest.raises(InsufficientMemoryError) as ei:
        check_memory(G, D, cfg.train, available=est // 2)
    fit = int(str(ei.value).split("at most ")[1].split(" ")[0])
    cfg.train.batch_size = fit
    assert check_memory(G, D, cfg.train, available=est // 2) <= 0.9 * est // 2
    cfg.train.batch_size = fit + 1
    assert estimate_step_bytes(G, D, cfg.train) > 0.9 * (est // 2)


@pytest.mark.parametrize("preset, batch", [("ring8", 512), ("digits-dcgan", 32)])
def test_memory_estimate_is_close_to_the_measured_peak(preset, batch):
    """The estimate is within a factor 3 of the peak that tracemalloc sees during a real first step."""
    cfg = make_config(preset)
    cfg.train.batch_size = batch
    run = Run(cfg, "/nonexistent-never-written")
    est = estimate_step_bytes(run.G, run.D, cfg.train)
    peak = traced_peak(run.trainer.step)
    assert peak / 3 <= est <= 3 * peak, (est, peak)


# ============================================================================ numerics at the extremes
mpmath.mp.prec = 200


def _ulps(got, want, dtype):
    """Distance in units of the last place of ``want`` (relative error / eps, with an absolute floor at tiny)."""
    want = float(want)
    fi = np.finfo(dtype)
    scale = max(abs(want), float(fi.tiny))
    return abs(float(got) - want) / (scale * float(fi.eps))


EXTREME = [-1e4, -745.0, -100.0, -30.0, -1.0, -1e-8, 0.0, 1e-8, 0.5, 20.0, 40.0, 100.0, 745.0, 1e4]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_logsigmoid_softplus_match_mpmath(dtype):
    x = np.array(EXTREME, dtype=dtype)
    t = npgan.Tensor(x)
    outs = {"sigmoid": F.sigmoid(t).data, "logsigmoid": F.logsigmoid(t).data, "softplus": F.softplus(t).data}
    exact = {"sigmoid": lambda v: 1 / (1 + mpmath.exp(-v)), "logsigmoid": lambda v: -mpmath.log1p(mpmath.exp(-v)),
             "softplus": lambda v: mpmath.log1p(mpmath.exp(v))}
    for name, got in outs.items():
        assert np.isfinite(got).all(), name
        for xi, gi in zip(x, got):
            want = exact[name](mpmath.mpf(float(xi)))
            fw = float(want)
            if abs(fw) < np.finfo(dtype).tiny:  # below the normal range: correctly rounded to 0 or a denormal
                assert abs(float(gi)) <= np.finfo(dtype).tiny, (name, xi, gi, fw)
                continue
            assert _ulps(gi, fw, dtype) <= 4, (name, xi, gi, fw)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bce_with_logits_matches_mpmath(dtype):
    x = np.array(EXTREME, dtype=dtype)
    for target in (0.0, 1.0, 0.25):
        got = F.binary_cross_entropy_with_logits(npgan.Tensor(x), target, reduction="none").data
        assert np.isfinite(got).all()
        for xi, gi in zip(x, got):
            v, tt = mpmath.mpf(float(xi)), mpmath.mpf(float(dtype(target)))
            want = float(-(tt * -mpmath.log1p(mpmath.exp(-v)) + (1 - tt) * -mpmath.log1p(mpmath.exp(v))))
            if abs(want) < np.finfo(dtype).tiny:
                assert abs(float(gi)) <= np.finfo(dtype).tiny
                continue
            # max(x,0) − x t + log1p(e^−|x|) loses |x|·t·eps to cancellation when the sum is small
            tol = 4 + 2 * abs(float(xi)) * float(dtype(target)) / max(abs(want), 1e-300)
            assert _ulps(gi, want, dtype) <= tol, (target, xi, gi, want)
    # the gradient σ(x) − t stays exact and finite too
    t = npgan.Tensor(x, requires_grad=True)
    F.binary_cross_entropy_with_logits(t, 1.0, reduction="sum").backward()
    for xi, gi in zip(x, t.grad):
        want = float(1 / (1 + mpmath.exp(-mpmath.mpf(float(xi)))) - 1)
        assert np.isfinite(gi) and (abs(want) < np.finfo(dtype).tiny or _ulps(gi, want, dtype) <= 4), (xi, gi)


def test_bce_on_tiny_probabilities_matches_mpmath():
    p = np.array([1e-300, 1e-200, 1e-40, 1e-10, 0.5, 1 - 1e-10, 1.0 - 2.0 ** -53, 0.0, 1.0])
    for target in (0.0, 1.0):
        got = F.binary_cross_entropy(npgan.Tensor(p), target, reduction="none").data
        assert np.isfinite(got).all()
        for pi, gi in zip(p, got):
            pm = mpmath.mpf(float(pi))
            lp = max(mpmath.log(pm), -100) if pm > 0 else mpmath.mpf(-100)  # PyTorch's clamp at −100
            l1p = max(mpmath.log1p(-pm), -100) if pm < 1 else mpmath.mpf(-100)
            want = float(-(target * lp + (1 - target) * l1p))
            if want == 0:
                assert gi == 0
            elif abs(want) < 1e-290:
                assert abs(gi - want) <= 1e-300
            else:
                assert _ulps(gi, want, np.float64) <= 4, (target, pi, gi, want)


def _kde_exact(x, sigma, loo):
    n, d = x.shape
    m = n - 1 if loo else n
    s2 = mpmath.mpf(sigma) ** 2
    tot = mpmath.mpf(0)
    for i in range(n):
        acc = mpmath.mpf(0)
        for j in range(n):
            if loo and i == j:
                continue
            dd = sum((mpmath.mpf(float(x[i, k])) - mpmath.mpf(float(x[j, k]))) ** 2 for k in range(d))
            acc += mpmath.exp(-dd / (2 * s2))
        tot += mpmath.log(acc / m)
    return float(-tot / n + mpmath.mpf(d) / 2 * mpmath.log(2 * mpmath.pi * s2))


@pytest.mark.parametrize("case", ["all_equal", "duplicates", "far_apart", "huge_offset", "tiny_sigma"])
@pytest.mark.parametrize("loo", [False, True])
def test_kde_entropy_stays_finite_and_exact(case, loo):
    rng = np.random.default_rng(0)
    sigma = 0.3
    if case == "all_equal":
        x = np.full((6, 2), 1.25)
        if loo:
            sigma = 0.1
    elif case == "duplicates":
        base = rng.normal(size=(3, 2))
        x = np.concatenate([base, base, base[:1]])
    elif case == "far_apart":
        x = rng.normal(size=(6, 2)) * 1e4
    elif case == "huge_offset":
        x = rng.normal(size=(6, 2)) + 1e6
    else:
        x, sigma = rng.normal(size=(6, 2)), 1e-3
    t = npgan.Tensor(x, requires_grad=True)
    h = kde_entropy(t, bandwidth=sigma, leave_one_out=loo)
    h.backward()
    assert np.isfinite(h.data) and np.isfinite(t.grad).all()
    want = _kde_exact(x, sigma, loo)
    # the distances are computed from x − x_c: rounding x to float64 at its own magnitude (1e6 → 1e-10) is the
    # only error that the exact formula does not see
    scale = np.abs(x - x.mean(0)).max() ** 2 / sigma ** 2 if case != "all_equal" else 1.0
    assert abs(float(h.data) - want) <= 64 * np.finfo(np.float64).eps * max(abs(want), scale, 1.0), (h.data, want)


def test_float16_is_upcast_with_a_warning_and_never_requested():
    x16 = np.array([[0.5, -2.0], [1e4, -1e4]], dtype=np.float16)
    with pytest.warns(PrecisionWarning, match="float16"):
        t = npgan.Tensor(x16)
    assert t.dtype == npgan.get_default_dtype()
    assert np.array_equal(t.data, x16.astype(np.float32))
    with pytest.warns(PrecisionWarning):
        y = F.sigmoid(x16)  # raw float16 arrays given to functions take the same path
    assert y.dtype == np.float32 and np.isfinite(y.data).all()
    with pytest.raises(TypeError, match="float16"):
        npgan.Tensor([1.0, 2.0], dtype=np.float16)
    with pytest.raises(TypeError, match="float16"):
        npgan.Tensor([1.0, 2.0]).astype(np.float16)
