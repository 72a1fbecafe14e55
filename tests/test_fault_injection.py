"""Fault injection: SIGKILL at chosen events (in the middle of a checkpoint write, right after its rename, between
two optimizer updates, in the middle of a history append) and a full disk.

Whatever happens, the run directory holds a loadable checkpoint, `npgan resume` reaches exactly the weights and
history of an uninterrupted run, no temporary file is left behind, and a failed write says the previous
checkpoint is intact. The kills wait for events, never for wall time: the child process runs the CLI under a
small wrapper (``_CHILD``) that stops at the chosen event, says so on stdout, and waits there to be killed.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from npgan.run.checkpoint import CheckpointWriteError, load_arrays, save_arrays
from npgan.run.cli import main
from npgan.run.experiment import Run, write_config
from npgan.run.presets import make_config

KILLS = 20

# The child: `python -c _CHILD EVENT N npgan-cli-args...` runs the CLI and stops at the N-th EVENT of the process:
#   save     before the rename of a checkpoint's temporary file (written and fsync'ed: the middle of a save)
#   renamed  right after that rename (before the directory's fsync)
#   update   after an optimizer's update (between D's and G's update, or between two steps)
#   history  in the middle of an append to history.csv (the file ends in a cut row)
# There it prints "PAUSED ..." and waits for the SIGKILL. The hooks live here, not in npgan.
_CHILD = r"""
import os, sys, threading
event, n = sys.argv[1], int(sys.argv[2])
seen = [0]

def hit(name):
    if name != event:
        return False
    seen[0] += 1
    return seen[0] == n

def pause(what):
    print("PAUSED", event, n, what, flush=True)
    threading.Event().wait()  # until the test kills this process

real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    checkpoint = os.fspath(dst).endswith("checkpoint.npz")
    if checkpoint and hit("save"):
        pause(f"before renaming {os.path.basename(os.fspath(src))}")
    real_replace(src, dst, *args, **kwargs)
    if checkpoint and hit("renamed"):
        pause("after the rename")
os.replace = replace

from npgan import optim
from npgan.run.experiment import Run
real_step = optim.Optimizer.step
def step(self):
    real_step(self)
    if hit("update"):
        pause(type(self).__name__)
optim.Optimizer.step = step

real_append = Run._append_history
def append(self, rows):
    path = self.out / "history.csv"
    before = path.stat().st_size
    real_append(self, rows)
    if rows and hit("history"):
        after = path.stat().st_size
        os.truncate(path, before + (after - before) // 2)
        pause(f"history.csv cut at byte {before + (after - before) // 2} of {after}")
Run._append_history = append

from npgan.run.cli import main
sys.argv = ["npgan", *sys.argv[3:]]
sys.exit(main())
"""


def _cfg(steps):
    """ring8, batch 64, constant learning rate and entropy weight (so the schedule does not depend on `steps`)."""
    cfg = make_config("ring8")
    cfg.train.steps, cfg.train.batch_size = steps, 64
    cfg.train.lr_final = cfg.train.entropy_weight_final = None
    cfg.log_every, cfg.checkpoint_every, cfg.sample_every, cfg.eval_samples = 5, 7, 10**9, 200
    return cfg


def _run_until_paused(args, event, n, log):
    """Start the CLI with ``args``, wait until it stops at its ``n``-th ``event``, SIGKILL it; the PAUSED line."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "w") as err:
        p = subprocess.Popen([sys.executable, "-c", _CHILD, event, str(n), *map(str, args)], env=env,
                             stdout=subprocess.PIPE, stderr=err, text=True)
    # a safety net against a hang, not a pass/fail criterion: a child that never reaches its event is killed,
    # and the test then fails below on "ended before its event"
    guard = threading.Timer(900, p.kill)
    guard.start()
    try:
        paused = None
        for line in p.stdout:
            if line.startswith("PAUSED"):
                paused = line.strip()
                p.send_signal(signal.SIGKILL)
                break
    finally:
        guard.cancel()
        p.kill()
        p.wait()
        p.stdout.close()
    if paused is None:
        raise AssertionError(f"the run ended before its {event} #{n} (status {p.returncode}): "
                             f"{log.read_text()[-2000:]}")
    assert p.returncode == -signal.SIGKILL
    return paused


def _temps(out):
    return list(out.glob(".*.tmp"))


def _weights(d):
    arrays, meta = load_arrays(d / "checkpoint.npz")
    return {k: v for k, v in arrays.items() if not k.startswith("opt")}, meta["step"]


def _plan(rnd):
    """The event of each kill: every other one in the middle of a checkpoint write (the 2nd or 3rd save of that
    process, so every such round commits at least one new checkpoint), the rest after a rename, an optimizer
    update or in a history append."""
    plan = []
    for i in range(KILLS):
        if i % 2 == 0:
            plan.append(("save", rnd.randint(2, 3)))
        else:
            event = ("update", "history", "renamed")[(i // 2) % 3]
            plan.append((event, {"update": rnd.randint(1, 40), "history": rnd.randint(1, 4),
                                 "renamed": rnd.randint(1, 2)}[event]))
    return plan


def test_twenty_sigkills_then_resume_reach_the_uninterrupted_weights(tmp_path):
    out = tmp_path / "cut"
    write_config(tmp_path / "c.toml", _cfg(10**6))  # never finishes on its own
    steps, mid_save = [], 0
    for i, (event, n) in enumerate(_plan(random.Random(20240601))):
        args = (["train", "--config", tmp_path / "c.toml", "--out", out] if i == 0 else ["resume", out])
        paused = _run_until_paused([*args, "--no-progress"], event, n, tmp_path / f"kill{i}.log")
        assert paused.startswith(f"PAUSED {event} {n}"), paused
        temps = _temps(out)
        assert bool(temps) == (event == "save"), (paused, temps)  # a kill mid-save leaves its temporary file
        mid_save += bool(temps)
        _, step = _weights(out)  # always a loadable, checksum-valid checkpoint
        assert not steps or step >= steps[-1]
        if event == "save" and steps:
            assert step > steps[-1], f"kill {i} ({paused}): no checkpoint was committed before it"
        steps.append(step)
    print(f"checkpoint steps after each kill: {steps}; {mid_save} kills during a checkpoint write")
    assert mid_save == KILLS // 2
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
    import npgan.run.experiment as ex
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
