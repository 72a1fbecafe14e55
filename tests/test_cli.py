"""The `npgan` command line: what a run directory receives, resume, sample, info, and bad input."""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import npgan
from npgan.run.checkpoint import load_arrays
from npgan.run.cli import main

FAST = ["--steps", "30", "--batch-size", "64", "--no-progress"]


def _cli(args, capsys):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _write_config(path: Path, **over):
    """A small ring8 config.toml (fast intervals) written through the CLI's own writer."""
    from npgan.run.experiment import write_config
    from npgan.run.presets import make_config
    cfg = make_config("ring8")
    cfg.log_every, cfg.checkpoint_every, cfg.sample_every, cfg.eval_samples = 10, 50, 1000, 500
    cfg.train.batch_size = 64
    for k, v in over.items():
        setattr(cfg.train if hasattr(cfg.train, k) else cfg, k, v)
    write_config(path, cfg)
    return path


def test_train_writes_everything_a_user_expects(tmp_path, capsys):
    out = tmp_path / "r8"
    rc, stdout, err = _cli(["train", "--preset", "ring8", *FAST, "--seed", "3", "--out", out], capsys)
    assert rc == 0, err
    for f in ("config.toml", "history.csv", "checkpoint.npz", "losses.png", "metrics.json"):
        assert (out / f).is_file(), f
    assert (out / "samples" / "step_000000.png").is_file() and (out / "samples" / "step_000030.png").is_file()
    rows = list(csv.DictReader((out / "history.csv").read_text().splitlines()))
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    m = json.loads((out / "metrics.json").read_text())
    assert m["step"] == 30 and {"modes", "hq", "reverse_kl"} <= set(m)
    arrays, meta = load_arrays(out / "checkpoint.npz")
    assert meta["step"] == 30 and any(k.startswith("opt_d/state/") for k in arrays)
    assert "seed = 3" in (out / "config.toml").read_text()
    assert "metrics:" in stdout


def test_resume_and_sample(tmp_path, capsys):
    out = tmp_path / "r"
    assert _cli(["train", "--preset", "ring8", *FAST, "--out", out], capsys)[0] == 0
    rc, _, err = _cli(["resume", out, "--steps", "40", "--no-progress", "--threads", "3"], capsys)
    assert rc == 0, err
    assert npgan.get_num_threads() == 3  # --threads took effect (conftest restores the count)
    assert load_arrays(out / "checkpoint.npz")[1]["step"] == 40
    assert len(list(csv.DictReader((out / "history.csv").read_text().splitlines()))) == 40
    rc, _, err = _cli(["sample", out, "--n", "100", "--out", tmp_path / "s.npy", "--png", tmp_path / "s.png"], capsys)
    assert rc == 0, err
    x = np.load(tmp_path / "s.npy", allow_pickle=False)
    assert x.shape == (100, 2) and np.isfinite(x).all()
    assert (tmp_path / "s.png").stat().st_size > 1000
    # a picture alone is enough; nothing at all is one line, exit 2
    only = tmp_path / "only"
    only.mkdir()
    rc, _, err = _cli(["sample", out, "--png", only / "p.png"], capsys)
    assert rc == 0, err
    assert os.listdir(only) == ["p.png"] and (only / "p.png").stat().st_size > 1000
    assert err.strip() == f"wrote 64 samples of shape (2,) to {only / 'p.png'}"
    rc, _, err = _cli(["sample", out], capsys)
    assert rc == 2 and err.strip() == "npgan: error: sample needs --out FILE.npy, --png FILE.png or both"


def test_resume_of_a_directory_without_a_run_suggests_only_what_exists(tmp_path, capsys):
    d = tmp_path / "not_a_run"
    d.mkdir()
    (d / "notes.txt").write_text("x")
    rc, _, err = _cli(["resume", d], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1
    assert lines[0] == (f"npgan: error: {d} holds no run (neither checkpoint.npz nor config.toml); start one with "
                        f"'npgan train --preset NAME --out {d}'")
    assert os.listdir(d) == ["notes.txt"]
    # a run that lost only its checkpoint: its config.toml can start it again
    assert _cli(["train", "--preset", "ring8", *FAST, "--out", tmp_path / "r"], capsys)[0] == 0
    (tmp_path / "r" / "checkpoint.npz").unlink()
    rc, _, err = _cli(["resume", tmp_path / "r"], capsys)
    assert rc == 2 and f"'npgan train --config {tmp_path / 'r' / 'config.toml'} --out NEW_DIR'" in err


def test_info(capsys):
    rc, out, _ = _cli(["info"], capsys)
    assert rc == 0
    for key in ("npgan:", "device: cpu", "array_backend: numpy", "blas:", f"threads: {npgan.get_num_threads()}"):
        assert key in out


@pytest.mark.parametrize("args, needle", [
    (["train", "--preset", "nope", "--out", "{d}"], "nope"),
    (["train", "--preset", "ring8", "--loss", "bogus", "--out", "{d}"], "bogus"),
    (["train", "--preset", "ring8", "--steps", "0", "--out", "{d}"], "--steps"),
    (["train", "--preset", "ring8", "--threads", "0", "--out", "{d}"], "--threads"),
    (["train", "--preset", "ring8", "--batch-size", "-4", "--out", "{d}"], "--batch-size"),
    (["train", "--preset", "ring8", "--lr", "0", "--out", "{d}"], "--lr"),
    (["train", "--preset", "ring8", "--bandwidth", "wide", "--out", "{d}"], "--bandwidth"),
    (["train", "--preset", "digits-mlp", "--batch-size", "100000", "--out", "{d}"], "larger than the data set"),
    (["train", "--preset", "mnist-mlp", "--out", "{d}"], "--data-dir"),
    (["train", "--preset", "mnist-mlp", "--data-dir", "{empty}", "--out", "{d}"], "t10k-labels-idx1-ubyte"),
    (["train", "--preset", "ring8", "--device", "gpu", "--out", "{d}"], "gpu"),
    (["train", "--out", "{d}"], "--preset"),
    (["resume", "{missing}"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, needle):
    if "gpu" in args:
        from npgan import backend
        if backend.gpu_available():
            pytest.skip("a GPU is available here")
    (tmp_path / "empty").mkdir()
    d = tmp_path / "run"
    args = [a.format(d=d, empty=tmp_path / "empty", missing=tmp_path / "missing") for a in args]
    rc, out, err = _cli(args, capsys)
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("npgan: error:"), err
    assert needle in lines[0]
    assert "Traceback" not in err
    assert not d.exists()


def _train_config(*args):
    from npgan.run.cli import _config_from_args, build_parser
    return _config_from_args(build_parser().parse_args(["train", "--preset", "ring8", *args, "--out", "unused"]))


def test_wgan_is_an_explicit_recipe_and_loss_changes_only_the_loss():
    plain = _train_config()
    c = _train_config("--loss", "wasserstein")  # the loss only: no optimizer, lr or d_steps switched behind it
    assert (c.train.loss, c.optimizer, c.train.lr, c.train.lr_final, c.train.d_steps) == (
        "wasserstein", plain.optimizer, plain.train.lr, plain.train.lr_final, plain.train.d_steps)
    w = _train_config("--wgan")
    assert (w.train.loss, w.optimizer, w.train.lr, w.train.lr_final, w.train.d_steps) == (
        "wasserstein", "rmsprop", 5e-5, None, 5)
    o = _train_config("--wgan", "--lr", "1e-4", "--d-steps", "2", "--optimizer", "adam", "--loss", "hinge")
    assert (o.train.loss, o.optimizer, o.train.lr, o.train.lr_final, o.train.d_steps) == (
        "hinge", "adam", 1e-4, None, 2)


def test_train_banner_names_the_recipe(tmp_path, capsys):
    rc, _, err = _cli(["train", "--preset", "ring8", "--wgan", "--steps", "3", "--batch-size", "64",
                       "--no-progress", "--out", tmp_path / "w"], capsys)
    assert rc == 0, err
    assert "loss wasserstein, rmsprop lr 5e-05, 5 D steps per G step" in err.splitlines()[0]
    assert 'optimizer = "rmsprop"' in (tmp_path / "w" / "config.toml").read_text()


def test_existing_run_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "r"
    assert _cli(["train", "--preset", "ring8", *FAST, "--out", out], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    rc, _, err = _cli(["train", "--preset", "ring8", *FAST, "--seed", "9", "--out", out], capsys)
    assert rc == 2 and "already holds a run" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_corrupt_checkpoint_and_config_are_refused(tmp_path, capsys):
    out = tmp_path / "r"
    assert _cli(["train", "--preset", "ring8", *FAST, "--out", out], capsys)[0] == 0
    ck = out / "checkpoint.npz"
    good = ck.read_bytes()
    ck.write_bytes(good[: len(good) // 2])
    rc, _, err = _cli(["resume", out, "--steps", "50"], capsys)
    assert rc == 2 and "checkpoint" in err and "corrupt" in err
    ck.write_bytes(good)
    cfgtext = (out / "config.toml").read_text()
    (out / "config.toml").write_text(cfgtext.replace("hidden = 128", "hidden = 64"))
    rc, _, err = _cli(["resume", out, "--steps", "50"], capsys)
    assert rc == 2 and "another architecture" in err
    (out / "config.toml").write_text("this is = = not toml")
    rc, _, err = _cli(["resume", out], capsys)
    assert rc == 2 and "not valid TOML" in err
    assert ck.read_bytes() == good


def test_config_file_is_a_complete_recipe(tmp_path, capsys):
    cfg = _write_config(tmp_path / "c.toml", steps=20, seed=5)
    a, b = tmp_path / "a", tmp_path / "b"
    assert _cli(["train", "--config", cfg, "--no-progress", "--out", a], capsys)[0] == 0
    assert _cli(["train", "--config", a / "config.toml", "--no-progress", "--out", b], capsys)[0] == 0
    assert (a / "history.csv").read_text() == (b / "history.csv").read_text()
    (tmp_path / "bad.toml").write_text('data = "ring8"\nnot_a_key = 3\n')
    rc, _, err = _cli(["train", "--config", tmp_path / "bad.toml", "--out", tmp_path / "c"], capsys)
    assert rc == 2 and "not_a_key" in err


# The child runs the CLI and prints "ROWS n" each time history.csv has grown to n rows (header included), so
# the test waits for training progress as an event on a pipe, never for wall time.
_CHILD = r"""
import sys
from npgan.run.experiment import Run
real_append = Run._append_history
def append(self, rows):
    real_append(self, rows)
    n = len((self.out / "history.csv").read_text().splitlines())
    print("ROWS", n, flush=True)
Run._append_history = append
from npgan.run.cli import main
sys.argv = ["npgan", *sys.argv[1:]]
sys.exit(main())
"""


def _spawn(args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-c", _CHILD, *map(str, args)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.guard = threading.Timer(900, p.kill)  # a safety net against a hang (the test then fails), not a deadline
    p.guard.start()
    return p


def _wait_rows(path, n, proc):
    """Block until the child reports that ``path`` (history.csv) has more than ``n`` lines."""
    for line in proc.stdout:
        if line.startswith("ROWS") and int(line.split()[1]) > n:
            assert len(path.read_text().splitlines()) > n
            return
    proc.wait()
    raise AssertionError(f"the run ended before {n} history rows (status {proc.returncode}): {proc.stderr.read()}")


def _final_weights(d):
    arrays, meta = load_arrays(d / "checkpoint.npz")
    return {k: v for k, v in arrays.items() if k.startswith(("G/", "D/"))}, meta["step"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_signal_then_resume_reaches_the_uninterrupted_weights(tmp_path, capsys, sig):
    cfg = _write_config(tmp_path / "c.toml", steps=400)
    ref = tmp_path / "ref"
    assert _cli(["train", "--config", cfg, "--no-progress", "--out", ref], capsys)[0] == 0

    out = tmp_path / "cut"
    p = _spawn(["train", "--config", cfg, "--no-progress", "--out", out])
    _wait_rows(out / "history.csv", 120, p)
    p.send_signal(sig)
    _, err = p.communicate()
    p.guard.cancel()
    if sig == signal.SIGINT:
        assert p.returncode == 130, err
        assert "checkpoint saved" in err
    else:
        assert p.returncode == -signal.SIGKILL
    _, step = _final_weights(out)
    assert step >= 100  # at most checkpoint_every (50) steps lost beyond what was logged
    rc, _, err = _cli(["resume", out, "--no-progress"], capsys)
    assert rc == 0, err
    wr, sr = _final_weights(ref)
    wc, sc = _final_weights(out)
    assert sr == sc == 400
    for k in wr:
        assert np.array_equal(wr[k], wc[k]), k
    assert (ref / "history.csv").read_text() == (out / "history.csv").read_text()
