"""A checkpoint is validated before anything of it is used: header fields, array dtypes, finite values, the
environment it was written in, and its size against the memory available (docs/reliability.md, "Loaded state is
validated"). Each crafted file here carries a valid checksum, so only the field checks can refuse it.
"""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from helpers import tiny_ring8_config

from npgan import nn, parallel
from npgan.run import checkpoint, machine, memory
from npgan.run.checkpoint import CheckpointError, load_arrays
from npgan.run.cli import main
from npgan.run.config import write_config
from npgan.run.experiment import Run

GiB = 1 << 30


# ============================================================================ helpers
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 4-step ring8 run (config.toml, history.csv, checkpoint.npz)."""
    out = tmp_path_factory.mktemp("checkpoint") / "run"
    Run.create(tiny_ring8_config(), out).train(progress=False, log=lambda m: None)
    return out


@pytest.fixture
def run_dir(trained, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(trained, d)
    return d


def _rewrite(path, arrays=None, meta=None, **head_fields):
    """Rewrite a checkpoint with changed arrays / meta, any dtype allowed, and a valid sha256 (a crafted file)."""
    arrays0, head = load_arrays(path, header=True)
    arrays = dict(arrays0 if arrays is None else arrays)
    head = dict(head, **head_fields)
    if meta is not None:
        head["meta"] = meta
    head["keys"] = list(arrays)
    core = {k: head.get(k) for k in ("format", "npgan", "config_hash", "meta", "keys")}
    head["sha256"] = checkpoint._digest(arrays, core)
    buf = io.BytesIO()
    np.savez(buf, __header__=np.frombuffer(json.dumps(head).encode(), dtype=np.uint8), **arrays)
    path.write_bytes(buf.getvalue())


def _meta(path):
    return json.loads(json.dumps(load_arrays(path)[1]))


def _refused(run_dir, *words):
    with pytest.raises(CheckpointError) as e:
        Run.resume(run_dir)
    msg = str(e.value)
    assert "\n" not in msg and str(run_dir / "checkpoint.npz") in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


# ============================================================================ header fields
@pytest.mark.parametrize("field,value", [("step", float("inf")), ("step", 12.7), ("step", "x"), ("step", -1),
                                         ("skipped", float("inf")), ("skipped", 2.5)])
def test_step_and_skipped_must_be_non_negative_integers(run_dir, field, value):
    p = run_dir / "checkpoint.npz"
    meta = _meta(p)
    meta[field] = value
    _rewrite(p, meta=meta)
    _refused(run_dir, field)


@pytest.mark.parametrize("key,value", [("betas", "ab"), ("weight_decay", "x"), ("lr", "x"), ("eps", -1),
                                       ("lr", -1), ("betas", [0.5, 1.5]), ("eps", float("inf"))])
def test_optimizer_settings_from_the_header_are_checked(run_dir, key, value):
    p = run_dir / "checkpoint.npz"
    meta = _meta(p)
    meta["optimizers"]["opt_d"]["param_groups"][0][key] = value
    _rewrite(p, meta=meta)
    _refused(run_dir, f"opt_d.param_groups[0].{key}")


def test_an_empty_rng_state_is_refused(run_dir):
    p = run_dir / "checkpoint.npz"
    meta = _meta(p)
    meta["rng"] = {}
    _rewrite(p, meta=meta)
    _refused(run_dir, "rng", "reseed")


# ============================================================================ arrays
@pytest.mark.parametrize("dtype", ["float64", "int32", "bool", "complex64", "U3", "f4,f4", "datetime64[s]",
                                   "float16", ">f4"])
def test_arrays_of_another_dtype_are_refused_not_cast(run_dir, dtype):
    p = run_dir / "checkpoint.npz"
    arrays = load_arrays(p)[0]
    w = arrays["D/0.weight"]
    arrays["D/0.weight"] = np.zeros(w.shape, dtype=dtype)
    _rewrite(p, arrays=arrays)
    _refused(run_dir, "D/0.weight", "dtype")


@pytest.mark.parametrize("key", ["G/0.weight", "opt_g/state/0/exp_avg_sq"])
def test_non_finite_weights_and_optimizer_state_are_refused(run_dir, key):
    p = run_dir / "checkpoint.npz"
    arrays = load_arrays(p)[0]
    arrays[key] = arrays[key].copy()
    arrays[key].flat[0] = np.nan if key.startswith("G") else np.inf
    _rewrite(p, arrays=arrays)
    _refused(run_dir, key, "nan or inf")


def test_nan_weights_make_sample_exit_2_with_one_line(run_dir, tmp_path, capsys):
    p = run_dir / "checkpoint.npz"
    arrays = load_arrays(p)[0]
    arrays["G/0.weight"] = np.full_like(arrays["G/0.weight"], np.nan)
    _rewrite(p, arrays=arrays)
    assert main(["sample", str(run_dir), "--n", "4", "--out", str(tmp_path / "s.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "G/0.weight" in err[0], err
    assert not (tmp_path / "s.npy").exists()


def test_another_runs_checkpoint_is_refused(run_dir, tmp_path):
    other = tiny_ring8_config()
    other.seed = 7
    write_config(run_dir / "config.toml", other)  # one run's config with another's checkpoint
    _refused(run_dir, "another run", "seed")


def test_resume_with_new_steps_is_still_the_same_run(run_dir):
    run = Run.resume(run_dir, steps=6)  # train.steps may change between sessions
    assert run.trainer.step_count == 4


def test_load_state_dict_refuses_nan_and_complex():
    lin = nn.Linear(2, 3)
    before = lin.weight.data.copy()
    for bad in (np.full((3, 2), np.nan, np.float32), np.full((3, 2), np.inf, np.float32),
                np.ones((3, 2), np.complex64)):
        with pytest.raises(ValueError) as e:
            lin.load_state_dict({"weight": bad, "bias": np.zeros(3, np.float32)})
        assert "weight" in str(e.value) and "\n" not in str(e.value)
        assert np.array_equal(lin.weight.data, before)
    good = np.full((3, 2), 0.5, np.float32)
    lin.load_state_dict({"weight": good, "bias": np.zeros(3, np.float32)})
    assert np.array_equal(lin.weight.data, good) and "weight" in dict(lin.named_parameters())


# ============================================================================ environment
def test_checkpoint_records_threads_and_blas_and_resume_warns_when_they_differ(run_dir, capsys):
    env = load_arrays(run_dir / "checkpoint.npz")[1]["env"]
    assert env == machine.run_environment() and isinstance(env["threads"], int) and isinstance(env["blas"], list)
    Run.resume(run_dir)
    assert "warning" not in capsys.readouterr().err
    n = parallel.get_num_threads()
    parallel.set_num_threads(n + 1)
    try:
        Run.resume(run_dir)
    finally:
        parallel.set_num_threads(n)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exact resume needs the same thread count and BLAS" in err[0], err


# ============================================================================ size
def test_a_huge_sparse_checkpoint_is_refused_by_its_size(run_dir, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 8 * GiB)
    p = run_dir / "checkpoint.npz"
    with open(p, "r+b") as f:
        f.truncate(60 * GiB)  # sparse: no disk used
    msg = _refused(run_dir, "60 GiB")
    assert "--batch-size" not in msg
