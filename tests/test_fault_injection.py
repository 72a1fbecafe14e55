"""Fault injection: SIGKILL at random moments (also in the middle of a checkpoint write) and a full disk.

Whatever happens, the run directory holds a loadable checkpoint, `npgan resume` reaches exactly the weights and
history of an uninterrupted run, no temporary file is left behind, and a failed write says the previous
checkpoint is intact.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from npgan.checkpoint import CheckpointWriteError, load_arrays, save_arrays
from npgan.cli import main
from npgan.experiment import Run, write_config
from npgan.presets import make_config

KILLS = 20


def _cfg(steps):
    """ring8, batch 64, constant learning rate and entropy weight (so the schedule does not depend on `steps`)."""
    cfg = make_config("ring8")
    cfg.train.steps, cfg.train.batch_size = steps, 64
    cfg.train.lr_final = cfg.train.entropy_weight_final = None
    cfg.log_every, cfg.checkpoint_every, cfg.sample_every, cfg.eval_samples = 5, 7, 10**9, 200
    return cfg


def _spawn(args, pause):
    env = dict(os.environ, PYTHONUNBUFFERED="1", NPGAN_FAULT_SLEEP_IN_SAVE=str(pause))
    return subprocess.Popen([sys.executable, "-m", "npgan.cli", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _stat(path):
    try:
        st = path.stat()
        return st.st_ino, st.st_mtime_ns
    except FileNotFoundError:
        return None


def _temps(out):
    return list(out.glob(".*.tmp"))


def _wait(cond, proc, timeout=30.0):
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early (status {proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError("no progress")
        time.sleep(0.002)


def _weights(d):
    arrays, meta = load_arrays(d / "checkpoint.npz")
    return {k: v for k, v in arrays.items() if not k.startswith("opt")}, meta["step"]


def test_twenty_sigkills_then_resume_reach_the_uninterrupted_weights(tmp_path):
    rnd = random.Random(20240601)
    out = tmp_path / "cut"
    write_config(tmp_path / "c.toml", _cfg(10**6))  # never finishes on its own
    ck = out / "checkpoint.npz"
    steps, mid_save = [], 0
    for i in range(KILLS):
        args = (["train", "--config", tmp_path / "c.toml", "--out", out] if i == 0 else ["resume", out])
        p = _spawn([*args, "--no-progress"], pause=0.02)
        try:
            before = _stat(ck)
            _wait(lambda b=before: _stat(ck) not in (None, b), p)  # this process has saved: training is under way
            if i % 2 == 0:  # kill the moment a checkpoint's temporary file exists: in the middle of a save
                _wait(lambda: bool(_temps(out)), p)
            else:  # a random moment: in a step, a history append, a save...
                time.sleep(rnd.uniform(0.0, 0.15))
            p.send_signal(signal.SIGKILL)
        finally:
            p.kill()
            p.wait(timeout=30)
            p.stderr.close()
        assert p.returncode == -signal.SIGKILL
        mid_save += bool(_temps(out))
        _, step = _weights(out)  # always a loadable, checksum-valid checkpoint
        assert not steps or step >= steps[-1]
        steps.append(step)
    print(f"checkpoint steps after each kill: {steps}; {mid_save} kills during a checkpoint write")
    assert mid_save >= KILLS // 2, f"only {mid_save} kills landed during a checkpoint write"
    assert steps[-1] > 0

    # finish: resume to a fixed total with the CLI, and train the same total without interruption
    total = steps[-1] + 12
    rc = main(["resume", str(out), "--steps", str(total), "--no-progress"])
    assert rc == 0
    ref = Run.create(_cfg(total), tmp_path / "ref")
    ref.train(progress=False)
    wr, sr = _weights(tmp_path / "ref")
    wc, sc = _weights(out)
    assert sr == sc == total
    assert wr.keys() == wc.keys()
    for k in wr:
        assert np.array_equal(wr[k], wc[k]), k
    assert (tmp_path / "ref" / "history.csv").read_text() == (out / "history.csv").read_text()
    assert not _temps(out)


# ============================================================================ a full disk
def _enospc_on_writes_in(monkeypatch, directory, after_bytes=1000):
    """os.write raises ENOSPC for files in ``directory`` once ``after_bytes`` bytes went there (a partial write)."""
    real_write = os.write
    written = {"n": 0}

    def write(fd, buf):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(str(directory)):
            room = after_bytes - written["n"]
            if room <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = real_write(fd, bytes(buf[:room]))
            written["n"] += n
            return n
        return real_write(fd, buf)
    monkeypatch.setattr(os, "write", write)


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")


@needs_proc
def test_disk_full_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch):
    run = Run.create(_cfg(30), tmp_path / "r")
    for _ in range(3):
        run.trainer.step()
    path = run.save_checkpoint()
    good = path.read_bytes()
    for _ in range(2):
        run.trainer.step()
    _enospc_on_writes_in(monkeypatch, tmp_path / "r")
    with pytest.raises(CheckpointWriteError) as ei:
        run.save_checkpoint()
    assert ei.value.errno == errno.ENOSPC
    msg = str(ei.value)
    for frag in ("step 5", "could not write checkpoint", "No space left on device", "ENOSPC",
                 "previous checkpoint", "(step 3) is intact", "no temporary file is left"):
        assert frag in msg, msg
    assert path.read_bytes() == good
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [".npgan.lock", "checkpoint.npz", "config.toml",
                                                                  "history.csv"]  # the lock file stays (runlock.py)


def test_fsync_failure_is_a_write_failure_too(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    save_arrays(path, {"a": np.arange(3.0)}, {"step": 1})
    good = path.read_bytes()

    def fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(CheckpointWriteError, match="EIO.*previous checkpoint .* is intact"):
        save_arrays(path, {"a": np.arange(4.0)}, {"step": 2})
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["c.npz"]


@needs_proc
def test_cli_disk_full_exits_4_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    import npgan.experiment as ex
    out = tmp_path / "r"
    real_save = ex.Run.save_checkpoint
    calls = {"n": 0}

    def save(self):  # the disk fills up after the checkpoints of steps 0 and 7
        calls["n"] += 1
        if calls["n"] == 3:
            _enospc_on_writes_in(monkeypatch, out, after_bytes=500)
        return real_save(self)
    monkeypatch.setattr(ex.Run, "save_checkpoint", save)
    write_config(tmp_path / "c.toml", _cfg(40))
    rc = main(["train", "--config", str(tmp_path / "c.toml"), "--no-progress", "--out", str(out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("npgan:")]
    assert rc == 4
    assert len(err) == 1 and "No space left on device" in err[0] and "(step 7) is intact" in err[0], err
    monkeypatch.undo()
    assert load_arrays(out / "checkpoint.npz")[1]["step"] == 7
    assert not _temps(out)
