"""Files npgan writes get the mode of any new file, 0o666 less the umask (they were 0o600, mkstemp's mode)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from npgan.files import atomic_write_bytes
from npgan.run.checkpoint import save_arrays

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes and the umask are POSIX")


@pytest.fixture
def umask():
    """Set the process umask for the test; the previous one is restored afterwards."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027])
def test_atomic_writes_honour_the_umask_like_open(tmp_path, umask, mask):
    umask(mask)
    want = 0o666 & ~mask
    with open(tmp_path / "plain.txt", "w") as f:  # what an ordinary file gets
        f.write("x")
    assert _mode(tmp_path / "plain.txt") == want
    atomic_write_bytes(tmp_path / "a.bin", b"data")
    save_arrays(tmp_path / "c.npz", {"a": np.arange(3.0)}, {"step": 1})
    atomic_write_bytes(tmp_path / "a.bin", b"replaced")  # a rewrite too
    assert (_mode(tmp_path / "a.bin"), _mode(tmp_path / "c.npz")) == (want, want)
    assert (tmp_path / "a.bin").read_bytes() == b"replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "c.npz", "plain.txt"]


def test_a_run_directory_has_no_private_files(tmp_path, umask):
    from npgan.run.experiment import Run
    from npgan.run.presets import make_config
    umask(0o022)
    cfg = make_config("ring8")
    cfg.train.steps, cfg.train.batch_size, cfg.eval_samples = 3, 32, 100
    Run.create(cfg, tmp_path / "r").train(progress=False)
    files = [p for p in (tmp_path / "r").rglob("*") if p.is_file()]
    assert any(p.name == "checkpoint.npz" for p in files) and any(p.name == "config.toml" for p in files)
    assert {p.relative_to(tmp_path).as_posix(): oct(_mode(p)) for p in files if _mode(p) != 0o644} == {}
