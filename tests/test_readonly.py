"""Readers change nothing: `npgan sample` and `npgan info DIR` (and :func:`npgan.run.experiment.load_run_readonly`)
never write, truncate or delete anything in a run directory, also while it trains.

Tests run as root, where chmod does not stop writes; so besides chmod -R a-w, every way of writing under the run
directory (os.open for writing, open() in a writing mode, os.replace / rename / unlink / remove / mkdir /
truncate) is made to fail there, and every file's bytes and mtime and the listing are compared before and after.
"""

import builtins
import csv
import os
import shutil
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import ring8_config, run_cli

import npgan
from npgan.run.checkpoint import CheckpointError, load_arrays
from npgan.run.experiment import Run, load_run_readonly, write_config


def _snapshot(d):
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None, p.lstat().st_mtime_ns,
                                    p.lstat().st_mode) for p in sorted(d.rglob("*"))}


class WriteAttempt(AssertionError):
    pass


def _forbid_writes_under(monkeypatch, d):
    """Every write, rename, delete or mkdir of a path under ``d`` raises WriteAttempt (and is recorded)."""
    d = os.path.realpath(d)
    attempts = []

    def under(p):
        try:
            r = os.path.realpath(os.fspath(p))
            return r == d or r.startswith(d + os.sep)
        except TypeError:
            return False

    def guard(name, real, *paths_at):
        def wrapped(*a, **k):
            for i in paths_at:
                if i < len(a) and under(a[i]):
                    attempts.append((name, a[i]))
                    raise WriteAttempt(f"{name}({a[i]}) under the run directory")
            return real(*a, **k)
        return wrapped

    real_open = os.open
    wr = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def os_open(path, flags, *a, **k):
        if flags & wr and under(path):
            attempts.append(("os.open", path))
            raise WriteAttempt(f"os.open({path}, {flags:#o}) under the run directory")
        return real_open(path, flags, *a, **k)

    real_bopen = builtins.open

    def b_open(file, mode="r", *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and under(file):
            attempts.append(("open", file))
            raise WriteAttempt(f"open({file}, {mode!r}) under the run directory")
        return real_bopen(file, mode, *a, **k)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", b_open)
    for name, idx in (("replace", (0, 1)), ("rename", (0, 1)), ("unlink", (0,)), ("remove", (0,)),
                      ("mkdir", (0,)), ("truncate", (0,)), ("rmdir", (0,)), ("symlink", (1,)), ("chmod", (0,))):
        monkeypatch.setattr(os, name, guard(f"os.{name}", getattr(os, name), *idx))
    return attempts


def _chmod_tree(d, writable):
    for p in [d, *d.rglob("*")]:
        m = p.stat().st_mode
        p.chmod(m | stat.S_IWUSR if writable else m & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_sample_and_info_change_nothing_in_the_run_directory(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    Run.create(ring8_config(20), out).train(progress=False)
    # what a writer may leave behind, and a user's files: a reader must leave all of it as it is
    with open(out / "history.csv", "a") as f:  # a row past the checkpoint (flushed, not yet checkpointed)
        f.write("21,1.0,1.0,0.5,0.5,nan,0.1,0.1,0.0001,0.0\n")
    (out / ".checkpoint.npz.99999.abcd1234.npgan.tmp").write_bytes(b"a writer's temporary file")
    (out / ".notes.tmp").write_text("a user's file")
    _chmod_tree(out, writable=False)
    try:
        before = _snapshot(out)
        attempts = _forbid_writes_under(monkeypatch, out)
        rc, _, err = run_cli(["sample", out, "--n", "50", "--out", tmp_path / "s.npy", "--png", tmp_path / "s.png"],
                             capsys)
        assert rc == 0, err
        rc, stdout, err = run_cli(["info", out], capsys)
        assert rc == 0 and "step: 20" in stdout, err
        run = load_run_readonly(out)
        assert (run.step, run.total_steps) == (20, 20)
        monkeypatch.undo()
        assert attempts == []
        assert _snapshot(out) == before
    finally:
        monkeypatch.undo()
        _chmod_tree(out, writable=True)
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (50, 2) and np.isfinite(x).all()


def test_a_thread_count_other_than_the_checkpoints_is_a_warning_for_resume_only(tmp_path, capsys):
    """The checkpoint records npgan's threads and the BLAS; on another count a resume is not bit-exact and says
    so once, while sample, info and export, which only read, say nothing about it."""
    out = tmp_path / "r"
    npgan.set_num_threads(1)
    Run.create(ring8_config(20), out).train(progress=False)
    npgan.set_num_threads(2)
    for args in (["sample", out, "--n", "8", "--out", tmp_path / "s.npy"], ["info", out],
                 ["export", out, "--out", tmp_path / "g.safetensors"]):
        rc, _, err = run_cli(args, capsys)
        assert rc == 0 and "not bit-exact" not in err, (args[0], err)
    rc, _, err = run_cli(["resume", out, "--steps", "22", "--no-progress", "--threads", "2"], capsys)
    assert rc == 0 and err.count("not bit-exact") == 1, err


def test_the_write_guard_catches_a_writer(tmp_path, monkeypatch):
    """The guard above can fail: `Run.resume` (a writer) trips it at once."""
    out = tmp_path / "r"
    Run.create(ring8_config(10), out).train(progress=False)
    attempts = _forbid_writes_under(monkeypatch, out)
    with pytest.raises(WriteAttempt):
        Run.resume(out)
    monkeypatch.undo()
    assert attempts


def test_a_reader_reads_again_once_when_the_checkpoint_was_replaced(tmp_path, monkeypatch):
    import npgan.run.experiment as ex
    out = tmp_path / "r"
    Run.create(ring8_config(10), out).train(progress=False)
    good = out / "checkpoint.npz"
    shutil.copy(good, tmp_path / "good.npz")
    real = ex.load_arrays
    calls = []

    def flaky(path, *a, **k):
        calls.append(path)
        if len(calls) == 1:  # the trainer replaced the file while we read it: our read failed
            os.replace(tmp_path / "good.npz", good)
            raise CheckpointError(f"checkpoint {path} is truncated or corrupt (simulated)")
        return real(path, *a, **k)
    monkeypatch.setattr(ex, "load_arrays", flaky)
    assert load_run_readonly(out).step == 10 and len(calls) == 2
    calls.clear()

    def broken(path, *a, **k):
        calls.append(path)
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt (simulated)")
    monkeypatch.setattr(ex, "load_arrays", broken)
    with pytest.raises(CheckpointError):  # unchanged file: no second try
        load_run_readonly(out)
    assert len(calls) == 1


TRIALS = 20


@pytest.mark.slow  # about 15 s alone; minutes on a loaded machine (it waits for events, never for a time)
def test_sampling_in_a_loop_while_training_loses_nothing(tmp_path, capsys):
    """20 `npgan sample` calls against a run that checkpoints every 2 steps and logs every step."""
    cfg_path = tmp_path / "c.toml"
    steps = 600
    write_config(cfg_path, ring8_config(steps, checkpoint_every=2, log_every=1))
    out = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "-m", "npgan.run.cli", "train", "--config", str(cfg_path), "--no-progress",
                          "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    results, during = [], 0
    try:
        t0 = time.monotonic()
        while not (out / "checkpoint.npz").is_file():  # an event, not a time: the first checkpoint exists
            assert p.poll() is None, p.stderr.read()
            assert time.monotonic() - t0 < 900, "no checkpoint"  # a hang guard
            time.sleep(0.01)
        for i in range(TRIALS):
            running = p.poll() is None
            rc, _, err = run_cli(["sample", out, "--n", "20", "--out", tmp_path / f"s{i}.npy"], capsys)
            during += running
            results.append((rc, err))
    finally:
        _, perr = p.communicate(timeout=900)  # a hang guard
    assert p.returncode == 0, perr
    for rc, err in results:
        assert rc == 0 or (rc == 2 and err.count("\n") == 1), err
    assert sum(rc == 0 for rc, _ in results) >= 1
    rows = list(csv.DictReader((out / "history.csv").read_text().splitlines()))
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))  # every step once
    assert load_arrays(out / "checkpoint.npz")[1]["step"] == steps
    assert not list(out.glob(".*.tmp"))
    print(f"{during} of {TRIALS} sample calls started while the run trained; "
          f"{sum(rc == 0 for rc, _ in results)} succeeded")
