"""benchmarks/gpu_check.sh without a GPU: one line that says so, exit status 0, nothing written.

The three ways a machine can lack a usable GPU are made here whatever the machine has: no ``nvidia-smi`` on the
PATH, an ``nvidia-smi`` that sees no device, and a GPU that CuPy cannot use (CUDA_VISIBLE_DEVICES="" hides every
device from CUDA). The GPU branch itself needs a GPU; see the script's header.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"
BASH = shutil.which("bash")
HANG_GUARD = 900  # seconds: only turns a hang into a failure, never a deadline the script must beat

pytestmark = pytest.mark.skipif(BASH is None, reason="needs bash")


def _fake_nvidia_smi(bin_dir: Path, status: int) -> None:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\necho 'fake nvidia-smi'\nexit {status}\n")
    tool.chmod(0o755)


def _run(out: Path, path: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PATH": path, "PYTHON": sys.executable, **env}
    return subprocess.run([BASH, str(SCRIPT), str(out)], capture_output=True, text=True, env=full,
                          timeout=HANG_GUARD)


def _check_one_line(res: subprocess.CompletedProcess, out: Path, why: str) -> None:
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    lines = res.stdout.splitlines()
    assert len(lines) == 1 and res.stderr == "", (res.stdout, res.stderr)
    assert lines[0].startswith("gpu_check.sh: no ") and "nothing to check" in lines[0] and why in lines[0]
    assert not out.exists()  # nothing written


def test_no_nvidia_smi(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH holding only what the script needs before it looks for the GPU
    bin_dir.mkdir()
    os.symlink(shutil.which("dirname"), bin_dir / "dirname")
    _check_one_line(_run(tmp_path / "out", str(bin_dir)), tmp_path / "out", "nvidia-smi not found")


def test_nvidia_smi_sees_no_device(tmp_path):
    _fake_nvidia_smi(tmp_path / "bin", 9)
    res = _run(tmp_path / "out", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    _check_one_line(res, tmp_path / "out", "nvidia-smi -L sees no device")


def test_cupy_sees_no_device(tmp_path):
    _fake_nvidia_smi(tmp_path / "bin", 0)
    res = _run(tmp_path / "out", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               CUDA_VISIBLE_DEVICES="")
    _check_one_line(res, tmp_path / "out", "no GPU usable from CuPy (")


def test_usage(tmp_path):
    res = subprocess.run([BASH, str(SCRIPT)], capture_output=True, text=True, timeout=HANG_GUARD)
    assert res.returncode == 2 and "usage: bash benchmarks/gpu_check.sh DIR" in res.stderr
