"""Your own ops and networks all the way through ``npgan train --model``: what is checked before anything is
written, and what an exception in your code does at any later step.

Before anything is written, ``check_models`` tries one training step's computation on 2 samples (the penalty's
double backward with ``--gp``, the GPU with ``--device gpu``) without changing any state; a Function the run
cannot use is one line naming its class and where it is defined, exit 2. Later, an exception raised in your
code is one line "your model raised ExcType: message at FILE:LINE (in function)", exit 2; a run directory this
command created is taken back if it holds no checkpoint past step 0, and nothing that was there before is
touched. An exception in npgan's own code keeps its traceback (exit 1: a bug to report).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import one_error_line, run_cli

import npgan
from npgan import backend
from npgan.errors import RunError
from npgan.run.checkpoint import load_arrays
from npgan.run.cli import main
from npgan.run.experiment import Run
from npgan.run.presets import build_models, check_models, make_config

FAST = ["--no-progress", "--batch-size", "32"]

# A Swish written as docs/extending.md teaches: forward and backward on arrays; backward_graph is added below.
SWISH = '''
from npgan import Function, nn
from npgan.backend import get_array_module


class Swish(Function):
    """y = x·σ(x).   gx = gy · (σ + x σ (1 − σ))."""

    def forward(self, x):
        xp = get_array_module(x)
        self.x, self.s = x, 1 / (1 + xp.exp(-x))
        return x * self.s

    def backward(self, gy):
        s = self.s
        return gy * (s + self.x * s * (1 - s))
BACKWARD_GRAPH

class SwishLayer(nn.Module):
    def forward(self, x):
        return Swish()(x)


def build(config):
    z, h = config.train.z_dim, 16
    G = nn.Sequential(nn.Linear(z, h), SwishLayer(), nn.Linear(h, 2))
    D = nn.Sequential(nn.Linear(2, h), SwishLayer(), nn.Linear(h, 1))
    return G, D
'''

SWISH_BACKWARD_GRAPH = '''
    def backward_graph(self, gy):
        (x,) = self.inputs
        s = npgan.functional.sigmoid(x)
        return gy * (s + x * s * (1 - s))
'''





def _error_after_banner(err):
    """The one error line of a run that failed after it started: the banner, then that line, nothing else."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 2 and lines[0].startswith(f"npgan {npgan.__version__}: training "), err
    assert lines[1].startswith("npgan: error: ") and "Traceback" not in err, err
    return lines[1]


def _line_of(path: Path, text: str) -> int:
    """The 1-based number of the first line of ``path`` that contains ``text``."""
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if text in ln)


def _swish(tmp_path, backward_graph=False, name="swish_gan.py"):
    f = tmp_path / name
    body = SWISH.replace("BACKWARD_GRAPH", SWISH_BACKWARD_GRAPH if backward_graph else "")
    f.write_text(("import npgan\n" if backward_graph else "") + body)
    return f


def _tree(d: Path):
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}


# ============================================================================ checked before anything is written
@pytest.mark.parametrize("gp", ["r1", "r2", "wgan-gp"])
def test_a_function_without_double_backward_is_refused_under_gp_before_anything_is_written(gp, tmp_path, capsys):
    f = _swish(tmp_path)
    out = tmp_path / "runs" / "swish"
    rc, _, err = run_cli(["train", "--preset", "ring8", "--model", f"{f}:build", "--gp", gp, "--steps", "2", *FAST,
                       "--out", out], capsys)
    line = one_error_line(err)
    assert rc == 2
    assert f"Swish (defined at {f}:{_line_of(f, 'class Swish')}) has no backward_graph" in line, line
    assert f"--gp {gp} needs" in line and "docs/extending.md" in line
    assert not (tmp_path / "runs").exists()


def test_the_same_op_trains_without_gp_and_with_its_backward_graph(tmp_path, capsys):
    f = _swish(tmp_path)
    rc, _, err = run_cli(["train", "--preset", "ring8", "--model", f"{f}:build", "--steps", "2", *FAST,
                       "--out", tmp_path / "plain"], capsys)
    assert rc == 0, err  # no penalty: backward is enough
    g = _swish(tmp_path, backward_graph=True, name="swish_gg.py")
    rc, _, err = run_cli(["train", "--preset", "ring8", "--model", f"{g}:build", "--gp", "r1", "--steps", "3", *FAST,
                       "--out", tmp_path / "gp"], capsys)
    assert rc == 0, err
    rows = (tmp_path / "gp" / "history.csv").read_text().splitlines()
    assert len(rows) == 4 and all(np.isfinite(float(r.split(",")[-1])) for r in rows[1:])  # gp recorded each step


def test_a_function_without_backward_is_refused_naming_its_class(tmp_path, capsys):
    f = tmp_path / "nobackward.py"
    f.write_text(SWISH.replace("BACKWARD_GRAPH", "").replace("    def backward(self, gy):\n        s = self.s\n"
                                                               "        return gy * (s + self.x * s * (1 - s))\n",
                                                               ""))
    out = tmp_path / "r"
    rc, _, err = run_cli(["train", "--preset", "ring8", "--model", f"{f}:build", "--steps", "2", *FAST, "--out", out],
                      capsys)
    line = one_error_line(err)
    assert rc == 2 and "the backward pass of a training step on 2 samples (cpu) failed" in line, line
    assert f"NotImplementedError in Swish (defined at {f}:{_line_of(f, 'class Swish')})" in line
    assert not out.exists()


def test_numpy_inside_an_op_is_refused_on_the_gpu_before_anything_is_written(tmp_path, capsys):
    """The stand-in GPU (tests/standin.py) refuses NumPy functions on device arrays, as CuPy does."""
    import standin
    f = tmp_path / "host_swish.py"
    f.write_text(SWISH.replace("BACKWARD_GRAPH", "").replace("xp = get_array_module(x)", "import numpy as xp")
                 .replace("xp.exp(-x)", "xp.exp(-xp.asarray(x))"))  # a host copy of a device array: refused
    out = tmp_path / "r"
    with standin.installed(device=False), _back_to_cpu():
        rc, _, err = run_cli(["train", "--preset", "ring8", "--model", f"{f}:build", "--device", "gpu", "--steps",
                           "2", *FAST, "--out", out], capsys)
        line = one_error_line(err)
        assert rc == 2 and "G failed on a batch of 2 (StandinTypeError: " in line, line
        assert f"at {f}:{_line_of(f, 'self.x, self.s =')} (in Swish.forward)" in line
        assert "get_array_module(x), never numpy directly" in line
        assert not out.exists()
        # the op as written with get_array_module passes the same probe on the stand-in GPU
        npgan.set_device("gpu")
        cfg = make_config("ring8")
        cfg.model, cfg.model_build, cfg.train.gp = "custom", f"{_swish(tmp_path, True, 'dev.py')}:build", "r1"
        G, D = build_models(cfg)
        check_models(cfg, G, D)


@contextlib.contextmanager
def _back_to_cpu():
    try:
        yield
    finally:
        npgan.set_device("cpu")


@pytest.mark.parametrize("preset, gp", [("digits-dcgan", "r1"), ("digits-mlp", "r2"), ("ring8", "wgan-gp")])
def test_the_probe_changes_no_state(preset, gp):
    """Weights, running statistics, .grad, training modes and npgan's random stream are as they were."""
    cfg = make_config(preset)
    cfg.train.gp = gp
    npgan.manual_seed(5)
    G, D = build_models(cfg)
    G.eval()  # a mode of the caller's, to be kept
    state = {n: {k: v.copy() for k, v in net.state_dict().items()} for n, net in (("G", G), ("D", D))}
    rng = backend.get_rng_state()
    check_models(cfg, G, D)
    assert backend.get_rng_state() == rng
    for n, net in (("G", G), ("D", D)):
        after = net.state_dict()
        assert sorted(after) == sorted(state[n])
        for k, v in state[n].items():
            np.testing.assert_array_equal(after[k], v, err_msg=f"{n}.{k}")
        assert all(p.grad is None for p in net.parameters())
    assert not G.training and D.training
    assert any("running_mean" in k for k in state["G"]) == (preset != "ring8")  # BN statistics were covered


# ============================================================================ exceptions while training
PICKY = '''
from npgan import nn


class Picky(nn.Module):
    """Fine on the 2 samples of the check; fails on a training batch: the error surfaces mid-run."""

    calls = 0

    def __init__(self, h):
        super().__init__()
        self.lin = nn.Linear(2, h)

    def forward(self, x):
        if x.shape[0] == 32:
            Picky.calls += 1
            if Picky.calls > FAIL_AFTER:
                RAISE
        return self.lin(x)


def build(config):
    z, h = config.train.z_dim, 16
    G = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, 2))
    D = nn.Sequential(Picky(h), nn.LeakyReLU(0.2), nn.Linear(h, 1))
    return G, D
'''


def _picky(tmp_path, fail_after=0, raise_="raise RuntimeError('no batches of 32 here')"):
    f = tmp_path / "picky_gan.py"
    f.write_text(PICKY.replace("FAIL_AFTER", str(fail_after)).replace("RAISE", raise_))
    return f


def test_an_exception_in_your_model_while_training_is_one_line_and_the_new_directory_goes(tmp_path, capsys):
    f = _picky(tmp_path)
    out = tmp_path / "new" / "deeper" / "run"
    rc, _, err = run_cli(["train", "--preset", "ring8", "--model", f"{f}:build", "--steps", "5", *FAST, "--out", out],
                      capsys)
    line = _error_after_banner(err)
    assert rc == 2
    assert line == (f"npgan: error: your model raised RuntimeError: no batches of 32 here at {f}:"
                    f"{_line_of(f, 'RuntimeError')} (in Picky.forward), after 0 steps; {out} was removed (it held "
                    "no checkpoint past step 0)")
    assert not (tmp_path / "new").exists()  # and the folders this command made for it


def test_a_directory_that_was_there_before_keeps_everything_it_had(tmp_path, capsys):
    f = _picky(tmp_path)
    out = tmp_path / "mine"
    (out / "samples").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    (out / "samples" / "mine.png").write_bytes(b"my own picture, not npgan's")
    (out / ".hidden.npgan.tmp").write_bytes(b"not a temporary file of this run")
    before = _tree(out)
    rc, _, err = run_cli(["train", "--preset", "ring8", "--model", f"{f}:build", "--steps", "5", *FAST, "--out", out],
                      capsys)
    line = _error_after_banner(err)
    assert rc == 2 and f"the files this run wrote in {out} were removed" in line and "the rest is kept" in line
    assert _tree(out) == before  # what was there is there, byte for byte; what the run wrote is gone
    # and the directory takes a new run, as before
    g = tmp_path / "fine.py"
    g.write_text(PICKY.replace("FAIL_AFTER", "10**9").replace("RAISE", "pass"))
    rc, _, err = run_cli(["train", "--preset", "ring8", "--model", f"{g}:build", "--steps", "2", *FAST, "--out", out],
                      capsys)
    assert rc == 0, err
    assert (out / "notes.txt").read_text() == "my notes"


def test_past_a_checkpoint_the_run_is_kept_and_resumable(tmp_path):
    f = _picky(tmp_path, fail_after=6)  # D sees 3 training batches a step (real, fake; fake for G): fails in step 3
    cfg = make_config("ring8")
    cfg.model, cfg.model_build = "custom", f"{f}:build"
    cfg.train.steps, cfg.train.batch_size, cfg.checkpoint_every, cfg.log_every = 10, 32, 2, 1
    out = tmp_path / "r"
    run = Run.create(cfg, out)
    with pytest.raises(RunError) as e:
        run.train(progress=False)
    msg = str(e.value)
    assert msg.startswith("your model raised RuntimeError: no batches of 32 here at ") and "after 2 steps" in msg
    assert f"the checkpoint of step 2 in {out} is intact" in msg
    assert f"'npgan resume {out} --allow-changed-model'" in msg
    assert isinstance(e.value.__cause__, RuntimeError)  # the original, for NPGAN_DEBUG and scripts
    assert load_arrays(out / "checkpoint.npz")[1]["step"] == 2 and (out / "config.toml").is_file()
    f.write_text(PICKY.replace("FAIL_AFTER", "10**9").replace("RAISE", "pass"))
    assert main(["resume", str(out), "--no-progress", "--allow-changed-model"]) == 0
    assert load_arrays(out / "checkpoint.npz")[1]["step"] == 10


def test_a_helper_module_beside_the_model_is_blamed_at_its_own_line(tmp_path, capsys):
    (tmp_path / "blocks_for_ux_test.py").write_text(
        "from npgan import nn\n\n\nclass Block(nn.Module):\n    def __init__(self, h):\n        super().__init__()\n"
        "        self.lin = nn.Linear(2, h)\n\n    def forward(self, x):\n"
        "        if x.shape[0] == 32:\n            raise ValueError(f'bad batch {x.shape}')\n"
        "        return self.lin(x)\n")
    f = tmp_path / "uses_blocks.py"
    f.write_text("from blocks_for_ux_test import Block\nfrom npgan import nn\n\n\ndef build(config):\n"
                 "    G = nn.Sequential(nn.Linear(config.train.z_dim, 8), nn.ReLU(), nn.Linear(8, 2))\n"
                 "    return G, nn.Sequential(Block(8), nn.LeakyReLU(0.2), nn.Linear(8, 1))\n")
    path_before = list(sys.path)
    out = tmp_path / "r"
    try:
        rc, _, err = run_cli(["train", "--preset", "ring8", "--model", f"{f}:build", "--steps", "2", *FAST,
                           "--out", out], capsys)
    finally:
        sys.modules.pop("blocks_for_ux_test", None)
    line = _error_after_banner(err)
    assert rc == 2 and "your model raised ValueError: bad batch (32, 2) at " in line
    assert f"{tmp_path / 'blocks_for_ux_test.py'}:11 (in Block.forward)" in line
    assert sys.path == path_before and not out.exists()


@pytest.mark.parametrize("where", ["import", "build", "training"])
def test_your_code_cannot_choose_npgans_exit_status(where, tmp_path, capsys):
    """SystemExit(3) from your code is an error of your model like any other: one line, exit 2."""
    if where == "training":
        f = _picky(tmp_path, raise_="raise SystemExit(3)")
    else:
        f = tmp_path / "exits.py"
        f.write_text(("raise SystemExit(3)\n" if where == "import" else "") +
                     "def build(config):\n    raise SystemExit(3)\n")
    out = tmp_path / "r"
    rc, _, err = run_cli(["train", "--preset", "ring8", "--model", f"{f}:build", "--steps", "2", *FAST, "--out", out],
                      capsys)
    line = _error_after_banner(err) if where == "training" else one_error_line(err)
    assert rc == 2 and "SystemExit: 3 at " in line and str(f) in line, line
    assert not out.exists()


def test_a_bug_in_npgan_keeps_its_traceback(tmp_path, monkeypatch):
    """An exception raised by npgan's own code alone (here a stand-in for a bug in the loop) is not blamed on the
    model: it propagates as it is (the command line then exits 1 with a traceback), for a --model run too."""
    from npgan.gan.trainer import Trainer

    def broken(self):
        raise RuntimeError("a bug in npgan")

    monkeypatch.setattr(Trainer, "step", broken)
    g = _picky(tmp_path, fail_after=10**9)
    for extra in ([], ["--model", f"{g}:build"]):
        with pytest.raises(RuntimeError, match="a bug in npgan"):
            main(["train", "--preset", "ring8", *extra, "--steps", "2", *FAST, "--out", str(tmp_path / "r")])
        assert (tmp_path / "r" / "checkpoint.npz").is_file()  # not taken back: this was not the model's error
        shutil.rmtree(tmp_path / "r")


# ============================================================================ the model's folder on the import path
def test_the_model_file_imports_modules_beside_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # not the model's folder: the import must not depend on the cwd
    (tmp_path / "helpers_for_ux_test.py").write_text(
        "from npgan import nn\n\n\ndef mlp(a, h, b):\n    return nn.Sequential(nn.Linear(a, h), nn.ReLU(), "
        "nn.Linear(h, b))\n")
    (tmp_path / "lazy_for_ux_test.py").write_text("H = 8\n")
    f = tmp_path / "gan.py"
    f.write_text("from helpers_for_ux_test import mlp\n\n\ndef build(config):\n    from lazy_for_ux_test import H\n"
                 "    return mlp(config.train.z_dim, H, 2), mlp(2, H, 1)\n")
    path_before = list(sys.path)
    try:
        rc, _, err = run_cli(["train", "--preset", "ring8", "--model", f"{f}:build", "--steps", "2", *FAST,
                           "--out", tmp_path / "r"], capsys)
        assert rc == 0, err
        assert sys.path == path_before  # put back after the import
        assert main(["resume", str(tmp_path / "r"), "--steps", "3", "--no-progress"]) == 0
    finally:
        for m in ("helpers_for_ux_test", "lazy_for_ux_test"):
            sys.modules.pop(m, None)
