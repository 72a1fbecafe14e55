"""One writer per run directory, resume semantics, a missing checkpoint, write errors.

Each test here fails on the code before the writer lock: two writers both ran, resume rewrote config.toml's
steps and re-stretched the schedules, a missing checkpoint restarted from step 0, write errors exited 2.
"""

import csv
import errno
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import ring8_config, run_cli

from npgan.run.checkpoint import load_arrays
from npgan.run.experiment import Run, write_config
from npgan.run.runlock import LOCK_NAME, RunLock, RunLockedError, holder


def _trained(tmp_path, steps=20, name="r"):
    out = tmp_path / name
    Run.create(ring8_config(steps), out).train(progress=False)
    return out


def _snapshot(d):
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None, p.lstat().st_mtime_ns)
            for p in sorted(d.rglob("*"))}


def _rows(out):
    return list(csv.DictReader((out / "history.csv").read_text().splitlines()))


def _wait(cond, proc, what, timeout=900.0):
    """Wait for an event (a file, a line); the timeout only turns a hang into a failure."""
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended early (status {proc.returncode}) waiting for {what}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"no {what}")
        time.sleep(0.01)


# ============================================================================ one writer
_HOLD = ("import sys; from npgan.run.runlock import RunLock; l = RunLock(sys.argv[1], 'test'); "
         "print('locked', flush=True); sys.stdin.read()")


def test_a_second_writer_exits_2_naming_the_holder_and_changes_nothing(tmp_path, capsys):
    out = _trained(tmp_path)
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=dict(os.environ))
    try:
        assert p.stdout.readline().strip() == "locked"
        before = _snapshot(out)
        for args in (["resume", out, "--steps", "30", "--no-progress"],
                     ["train", "--preset", "ring8", "--steps", "30", "--seed", "9", "--no-progress", "--out", out]):
            rc, _, err = run_cli(args, capsys)
            assert rc == 2, err
            assert err.count("\n") == 1 and f"PID {p.pid}" in err and "another npgan process" in err, err
            assert _snapshot(out) == before
        with pytest.raises(RunLockedError) as ei:
            Run.resume(out)
        assert ei.value.pid == p.pid
    finally:
        p.stdin.close()
        p.wait(timeout=900)  # a hang guard
    Run.resume(out).close()  # the holder exited: the lock is free


def test_train_on_a_directory_that_is_being_trained_is_refused(tmp_path, capsys):
    """A real concurrent `npgan train --out same`: refused with the trainer's PID; the first run is intact."""
    cfg_path = tmp_path / "c.toml"
    write_config(cfg_path, ring8_config(10**6, checkpoint_every=5, log_every=1))
    out = tmp_path / "same"
    p = subprocess.Popen([sys.executable, "-m", "npgan.run.cli", "train", "--config", str(cfg_path), "--no-progress",
                          "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: (out / "checkpoint.npz").is_file(), p, "checkpoint")
        config_before = (out / "config.toml").read_bytes()
        rc, _, err = run_cli(["train", "--preset", "ring8", "--seed", "9", *("--steps", "30", "--no-progress"),
                              "--out", out], capsys)
        assert rc == 2 and f"PID {p.pid}" in err, err
        rc, _, err = run_cli(["resume", out, "--no-progress"], capsys)
        assert rc == 2 and f"PID {p.pid}" in err, err
        assert holder(out)["pid"] == p.pid
        _wait(lambda: len(_rows(out)) >= 12, p, "history rows")
    finally:
        p.send_signal(signal.SIGINT)
        _, perr = p.communicate(timeout=900)  # a hang guard
    assert p.returncode == 130, perr
    assert (out / "config.toml").read_bytes() == config_before
    steps = [int(r["step"]) for r in _rows(out)]
    assert steps == list(range(1, len(steps) + 1))  # every step once
    assert load_arrays(out / "checkpoint.npz")[1]["step"] == steps[-1]


def test_the_lock_is_released_on_every_exit_path(tmp_path, capsys):
    out = _trained(tmp_path)
    RunLock(out).release()  # after a normal train
    run = Run.resume(out, steps=30)

    def boom():
        raise RuntimeError("boom")
    run.trainer.step = boom
    with pytest.raises(RuntimeError):
        run.train(progress=False)
    RunLock(out).release()  # after an exception in training
    (out / "config.toml").write_text((out / "config.toml").read_text() + "bogus = 1\n")
    rc, _, err = run_cli(["resume", out], capsys)
    assert rc == 2 and "bogus" in err
    RunLock(out).release()  # after a failed resume
    # a SIGKILLed holder: the kernel drops the lock; the file still names the dead process
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "locked"
    with pytest.raises(RunLockedError):
        RunLock(out)
    p.kill()
    p.wait(timeout=900)  # a hang guard
    assert holder(out)["pid"] == p.pid
    lock = RunLock(out, "test")  # taken over at once
    assert holder(out)["pid"] == os.getpid() and (out / LOCK_NAME).exists()
    lock.release()


def test_cleanup_removes_only_npgans_temporary_files(tmp_path):
    out = _trained(tmp_path)
    mine = out / ".notes.tmp"
    mine.write_text("a user's file")
    stale = out / ".checkpoint.npz.99999.abcd1234.npgan.tmp"
    stale.write_bytes(b"half a checkpoint")
    Run.resume(out).close()
    assert mine.read_text() == "a user's file" and not stale.exists()


# ============================================================================ resume semantics
def test_extending_a_finished_run_keeps_the_final_lr_and_lambda(tmp_path, capsys):
    out = _trained(tmp_path, steps=40)
    config = (out / "config.toml").read_bytes()
    rc, _, err = run_cli(["resume", out, "--steps", "60", "--no-progress"], capsys)
    assert rc == 0, err
    rows = {int(r["step"]): r for r in _rows(out)}
    assert sorted(rows) == list(range(1, 61))
    final_lr, final_lam = float(rows[40]["lr"]), float(rows[40]["entropy_weight"])
    assert final_lr == pytest.approx(1e-4) and final_lam == 0.0
    for s in range(41, 61):
        assert (float(rows[s]["lr"]), float(rows[s]["entropy_weight"])) == (final_lr, final_lam), s
    assert (out / "config.toml").read_bytes() == config  # the recipe is not rewritten
    assert load_arrays(out / "checkpoint.npz")[1]["total_steps"] == 60
    rc, _, err = run_cli(["resume", out, "--no-progress"], capsys)  # the extension is remembered
    assert rc == 0 and "finished its 60 steps" in err
    rc, out_, _ = run_cli(["info", out], capsys)
    assert rc == 0 and "step: 60" in out_ and "total_steps: 60" in out_ and "schedule_steps: 40" in out_


def test_restretch_lays_the_schedules_out_anew(tmp_path, capsys):
    out = _trained(tmp_path, steps=40)
    rc, _, err = run_cli(["resume", out, "--steps", "60", "--restretch", "--no-progress"], capsys)
    assert rc == 0, err
    rows = {int(r["step"]): r for r in _rows(out)}
    assert float(rows[41]["lr"]) == pytest.approx(1e-3 + (1e-4 - 1e-3) * 40 / 59)
    assert "steps = 60" in (out / "config.toml").read_text()


def test_resume_with_fewer_steps_never_shrinks_the_run(tmp_path, capsys):
    full = _trained(tmp_path, steps=30, name="full")
    out = tmp_path / "part"
    part = Run.create(ring8_config(30), out)
    for _ in range(10):
        part.trainer.step()
    part._append_history(part.trainer.flush())
    part.save_checkpoint()
    part.close()
    config = (out / "config.toml").read_bytes()
    rc, _, err = run_cli(["resume", out, "--steps", "20", "--no-progress"], capsys)  # stop at 20 this time
    assert rc == 0, err
    assert load_arrays(out / "checkpoint.npz")[1]["step"] == 20
    assert (out / "config.toml").read_bytes() == config
    rc, _, err = run_cli(["resume", out, "--steps", "15", "--no-progress"], capsys)
    assert rc == 0 and "past --steps 15" in err
    rc, _, err = run_cli(["resume", out, "--no-progress"], capsys)  # the run is still 30 steps long
    assert rc == 0, err
    assert (out / "config.toml").read_bytes() == config
    assert (out / "history.csv").read_text() == (full / "history.csv").read_text()
    a, b = load_arrays(out / "checkpoint.npz")[0], load_arrays(full / "checkpoint.npz")[0]
    assert all((a[k] == b[k]).all() for k in a)


# ============================================================================ a missing checkpoint
@pytest.mark.parametrize("kind", ["deleted", "dangling", "directory", "fifo"])
def test_a_missing_checkpoint_is_an_error_not_a_restart(tmp_path, capsys, kind):
    out = _trained(tmp_path, steps=10)
    ck = out / "checkpoint.npz"
    ck.unlink()
    if kind == "dangling":
        ck.symlink_to(tmp_path / "gone.npz")
    elif kind == "directory":
        ck.mkdir()
    elif kind == "fifo":
        os.mkfifo(ck)
    before = _snapshot(out)
    want = {"deleted": "does not exist", "dangling": "dangling symlink", "directory": "is a directory",
            "fifo": "is a FIFO"}[kind]
    for args in (["resume", out, "--no-progress"], ["sample", out, "--out", tmp_path / "s.npy"], ["info", out]):
        rc, _, err = run_cli(args, capsys)
        assert rc == 2 and err.count("\n") == 1 and want in err and str(ck) in err, (args, err)
    assert _snapshot(out) == before and not (tmp_path / "s.npy").exists()


# ============================================================================ write errors
def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_writing_history_exits_4_naming_the_file(tmp_path, capsys, monkeypatch):
    import npgan.run.history
    monkeypatch.setattr(npgan.run.history, "_write_rows", _enospc)
    out = tmp_path / "r"
    rc, _, err = run_cli(["train", "--preset", "ring8", "--steps", "10", "--batch-size", "64", "--no-progress",
                          "--out", out], capsys)
    last = err.splitlines()[-1]  # after the banner line, one error line
    assert rc == 4 and last.startswith("npgan: error:") and "Traceback" not in err, err
    assert str(out / "history.csv") in last and "ENOSPC" in last


def test_a_full_disk_while_writing_a_picture_exits_4_naming_it(tmp_path, capsys, monkeypatch):
    import npgan.eval.plots
    out = _trained(tmp_path, steps=10)
    monkeypatch.setattr(npgan.eval.plots, "atomic_write_bytes", _enospc)
    rc, _, err = run_cli(["sample", out, "--out", tmp_path / "s.npy", "--png", tmp_path / "s.png"], capsys)
    assert rc == 4 and err.count("\n") == 1 and str(tmp_path / "s.png") in err and "ENOSPC" in err, err
    rc, _, err = run_cli(["train", "--preset", "ring8", *("--steps", "10", "--no-progress"), "--out", tmp_path / "t"],
                         capsys)
    assert rc == 4 and str(tmp_path / "t" / "samples" / "step_000000.png") in err, err


def test_sample_checks_every_output_directory_before_writing(tmp_path, capsys):
    out = _trained(tmp_path, steps=10)
    rc, _, err = run_cli(["sample", out, "--out", tmp_path / "s.npy", "--png", tmp_path / "no" / "p.png"], capsys)
    assert rc == 2 and str(tmp_path / "no") in err and "does not exist" in err, err
    assert not (tmp_path / "s.npy").exists()
    rc, _, err = run_cli(["sample", out, "--out", tmp_path / "no" / "s.npy"], capsys)
    assert rc == 2 and str(tmp_path / "no") in err and ".tmp" not in err, err
