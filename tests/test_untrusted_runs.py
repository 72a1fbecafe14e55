"""Untrusted run directories and input files: a run directory is data, never code; history.csv is never silently
shortened; initial weights are finite in the model's dtype; deeply nested JSON, a checkpoint missing an optimizer's
step and counts beyond a run's size are one line each (docs/reliability.md, "Untrusted files and paths").

Every hostile file is crafted here, in tmp_path.
"""

import hashlib
import io
import json

import numpy as np
import pytest
from helpers import ring8_config, run_cli

import npgan
from npgan.run import checkpoint
from npgan.run.checkpoint import load_arrays
from npgan.run.config import read_config, write_config
from npgan.run.experiment import Run
from npgan.run.history import read_history


def _one_error_line(err, rc, code=2):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code and len(lines) == 1 and lines[0].startswith("npgan: error: "), (rc, err)
    return lines[0]


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _rewrite(path, meta):
    """Rewrite a checkpoint with another header ``meta`` and a valid sha256 (so only the validation can refuse)."""
    arrays, head = load_arrays(path, header=True)
    head = dict(head, meta=meta)
    core = {k: head.get(k) for k in ("format", "npgan", "config_hash", "meta", "keys")}
    head["sha256"] = checkpoint._digest(arrays, core)
    buf = io.BytesIO()
    np.savez(buf, __header__=np.frombuffer(json.dumps(head).encode(), dtype=np.uint8), **arrays)
    path.write_bytes(buf.getvalue())


# ============================================================================ a run directory is never code
MODEL = '''
import pathlib
pathlib.Path({marker!r}).write_text("imported")  # what a hostile model file would do instead

from npgan import nn


def build(config):
    z, h = config.train.z_dim, 16
    return (nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, 2)),
            nn.Sequential(nn.Linear(2, h), nn.LeakyReLU(0.2), nn.Linear(h, 1)))
'''


@pytest.fixture
def model_run(tmp_path, capsys):
    """A trained run whose networks come from a model file that leaves a marker file each time it is imported."""
    marker = tmp_path / "IMPORTED"
    f = tmp_path / "evil.py"
    f.write_text(MODEL.format(marker=str(marker)))
    out = tmp_path / "r"
    rc, _, err = run_cli(["train", "--preset", "ring8", "--model", f"{f}:build", "--steps", "3", "--batch-size",
                          "32", "--no-progress", "--out", out], capsys)
    assert rc == 0, err
    assert marker.exists()  # training ran it, as it was told to
    marker.unlink()
    return out, marker


def test_readers_never_import_a_model_file_unless_told(model_run, tmp_path, capsys):
    out, marker = model_run
    rc, _, err = run_cli(["sample", out, "--out", tmp_path / "s.npy"], capsys)
    assert "--trust-model" in _one_error_line(err, rc) and not (tmp_path / "s.npy").exists()
    rc, _, err = run_cli(["export", out, "--out", tmp_path / "g.safetensors"], capsys)
    assert "--trust-model" in _one_error_line(err, rc) and not (tmp_path / "g.safetensors").exists()
    rc, stdout, err = run_cli(["info", out], capsys)  # the header only: step and length, weights unchecked
    assert rc == 0 and "step: 3" in stdout and "weights_checked: no" in stdout and "--trust-model" in stdout, err
    assert not marker.exists()
    with pytest.raises(npgan.errors.RunError, match="--trust-model"):
        npgan.run.experiment.load_run_readonly(out)
    assert not marker.exists()
    rc, stdout, err = run_cli(["info", out, "--trust-model"], capsys)  # told: then it runs
    assert rc == 0 and "weights_checked: yes" in stdout and marker.exists(), err


def test_a_model_file_runs_only_after_the_checkpoint_passed_its_checks(model_run, tmp_path, capsys):
    out, marker = model_run
    (out / "checkpoint.npz").write_bytes(b"")  # the reported case: config + matching model_sha256 + empty file
    for args in (["info", out, "--trust-model"], ["sample", out, "--out", tmp_path / "s.npy", "--trust-model"],
                 ["export", out, "--out", tmp_path / "g.safetensors", "--trust-model"],
                 ["resume", out, "--steps", "5", "--no-progress"]):
        rc, _, err = run_cli(args, capsys)
        assert "checkpoint" in _one_error_line(err, rc) and "empty" in err, args
        assert not marker.exists(), args


def test_a_module_named_by_a_run_is_not_even_looked_up_without_trust(model_run, tmp_path, capsys, monkeypatch):
    out, marker = model_run
    pkg = tmp_path / "evilpkg_untrusted"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('package')\n")
    (pkg / "models.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = read_config(out / "config.toml")
    cfg.model_build = "evilpkg_untrusted.models:build"  # finding a submodule imports its package
    write_config(out / "config.toml", cfg)
    meta = json.loads(json.dumps(load_arrays(out / "checkpoint.npz")[1]))
    meta["config"]["model_build"] = cfg.model_build  # the checkpoint crafted to match
    _rewrite(out / "checkpoint.npz", meta)
    rc, stdout, err = run_cli(["info", out], capsys)
    assert rc == 0 and "weights_checked: no" in stdout, err
    rc, _, err = run_cli(["sample", out, "--out", tmp_path / "s.npy"], capsys)
    assert rc == 2 and not marker.exists(), err


# ============================================================================ history.csv
def test_a_damaged_history_row_is_kept_aside_and_no_later_row_is_lost(tmp_path, capsys):
    out = tmp_path / "r"
    Run.create(ring8_config(30), out).train(progress=False)
    path = out / "history.csv"
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 31
    lines[5] = "5,1.0,garbage\n"  # line 6: step 5's row
    damaged = "".join(lines).encode()
    path.write_bytes(damaged)
    assert [r["step"] for r in read_history(path)] == [*range(1, 5), *range(6, 31)]  # reading skips it only
    rc, _, err = run_cli(["resume", out, "--steps", "40", "--no-progress"], capsys)
    assert rc == 0, err
    warn = [ln for ln in err.splitlines() if "damaged row" in ln]
    assert len(warn) == 1 and "line 6" in warn[0] and "history.csv.damaged" in warn[0], err
    assert (out / "history.csv.damaged").read_bytes() == damaged  # the file as it was, byte for byte
    assert [r["step"] for r in read_history(path)] == [*range(1, 5), *range(6, 41)]
    # a second damage later: another aside name, the first one kept
    path.write_bytes(path.read_bytes().replace(b"\n7,", b"\nx7,", 1))
    rc, _, err = run_cli(["resume", out, "--steps", "45", "--no-progress"], capsys)
    assert rc == 0 and "history.csv.damaged.1" in err, err
    assert (out / "history.csv.damaged").read_bytes() == damaged
    assert [r["step"] for r in read_history(path)] == [*range(1, 5), 6, *range(8, 46)]


def test_a_row_cut_by_a_kill_is_dropped_silently(tmp_path, capsys):
    out = tmp_path / "r"
    Run.create(ring8_config(10), out).train(progress=False)
    with open(out / "history.csv", "a") as f:
        f.write("11,0.69,0.6")  # a kill in the middle of an append: no newline
    rc, _, err = run_cli(["resume", out, "--steps", "12", "--no-progress"], capsys)
    assert rc == 0 and "damaged row" not in err, err
    assert not (out / "history.csv.damaged").exists()
    assert [r["step"] for r in read_history(out / "history.csv")] == list(range(1, 13))


# ============================================================================ initial weights
def _g_weights(tmp_path, name, change):
    from npgan.run.presets import build_models, make_config
    G, _ = build_models(make_config("ring8"))
    sd = {k: np.asarray(v, dtype=np.float64) for k, v in G.state_dict().items()}
    change(sd)
    path = tmp_path / name
    npgan.save(sd, path)
    return path


@pytest.mark.parametrize("value,words", [(1e300, ["1e+300", "float32", "inf"]), (np.nan, ["nan or inf"])])
def test_init_weights_must_be_finite_in_the_models_dtype(tmp_path, capsys, value, words):
    def poison(sd):
        sd["0.weight"][0, 0] = value
    f = _g_weights(tmp_path, "g.safetensors", poison)
    out = tmp_path / "r"
    rc, _, err = run_cli(["train", "--preset", "ring8", "--steps", "2", "--batch-size", "32", "--no-progress",
                          "--init-g", f, "--out", out], capsys)
    line = _one_error_line(err, rc)
    assert str(f) in line and "'0.weight'" in line and all(w in line for w in words), line
    assert not out.exists()  # checked before anything is written


# ============================================================================ deeply nested JSON
DEEP = b"[" * 100_000 + b"]" * 100_000


def test_a_deeply_nested_safetensors_header_is_one_line(tmp_path, capsys):
    f = tmp_path / "deep.safetensors"
    f.write_bytes(len(DEEP).to_bytes(8, "little") + DEEP)
    with pytest.raises(npgan.weights.WeightsError, match="nests too deeply"):
        npgan.load(f)
    rc, _, err = run_cli(["train", "--preset", "ring8", "--steps", "2", "--no-progress", "--init-g", f,
                          "--out", tmp_path / "r"], capsys)
    assert "nests too deeply" in _one_error_line(err, rc) and not (tmp_path / "r").exists()


def test_a_deeply_nested_lock_file_reads_as_no_holder(tmp_path, capsys):
    out = tmp_path / "r"
    Run.create(ring8_config(5), out).train(progress=False)
    (out / ".npgan.lock").write_bytes(DEEP)
    rc, stdout, err = run_cli(["info", out], capsys)
    assert rc == 0 and "last_writer_pid: None" in stdout, err
    assert run_cli(["resume", out, "--steps", "6", "--no-progress"], capsys)[0] == 0  # the lock is taken over


# ============================================================================ optimizer state
@pytest.mark.parametrize("opt,key", [("opt_g", "step"), ("opt_d", "step")])
def test_an_optimizer_state_missing_its_step_is_refused_by_every_reader(tmp_path, capsys, opt, key):
    out = tmp_path / "r"
    Run.create(ring8_config(10), out).train(progress=False)
    p = out / "checkpoint.npz"
    meta = json.loads(json.dumps(load_arrays(p)[1]))
    del meta["optimizers"][opt]["scalars"]["1"][key]
    _rewrite(p, meta)
    for args in (["resume", out, "--steps", "12", "--no-progress"], ["sample", out, "--out", tmp_path / "s.npy"]):
        rc, _, err = run_cli(args, capsys)
        line = _one_error_line(err, rc)
        assert str(p) in line and f"{opt}'s parameter 1 lacks {key}" in line, line
    assert load_arrays(p)[1]["step"] == 10


# ============================================================================ counts
@pytest.mark.parametrize("option,value,name", [
    ("--d-steps", "99999999999999999999", "--d-steps"), ("--steps", str(10**10), "--steps"),
    ("--seed", str(2**64), "--seed"), ("--gp-every", str(10**12), "--gp-every"), ("--threads", str(10**6), "--threads"),
    ("--batch-size", str(2**40), "--batch-size"), ("--image-size", str(10**9), "--image-size"),
    ("--z-dim", str(2**40), "--z-dim"), ("--width", str(2**40), "--width")])
def test_counts_beyond_a_run_are_refused_before_anything_is_written(tmp_path, capsys, option, value, name):
    out = tmp_path / "r"
    rc, _, err = run_cli(["train", "--preset", "ring8", option, value, "--no-progress", "--out", out], capsys)
    line = _one_error_line(err, rc)
    assert name in line and value in line, line
    assert not out.exists()


def test_a_config_file_with_a_huge_count_is_refused(tmp_path, capsys):
    cfg = ring8_config(5)
    write_config(tmp_path / "c.toml", cfg)
    text = (tmp_path / "c.toml").read_text().replace("d_steps = 1", "d_steps = 99999999999")
    (tmp_path / "c.toml").write_text(text)
    rc, _, err = run_cli(["train", "--config", tmp_path / "c.toml", "--out", tmp_path / "r"], capsys)
    assert "d_steps must be an integer in [1, 1000]" in _one_error_line(err, rc)


def test_sample_refuses_more_samples_than_memory_holds(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    Run.create(ring8_config(5), out).train(progress=False)
    import npgan.run.memory as memory
    monkeypatch.setattr(memory, "available_memory", lambda: 50 * 2**20)
    rc, _, err = run_cli(["sample", out, "--n", "100000000", "--out", tmp_path / "s.npy"], capsys)
    line = _one_error_line(err, rc)
    assert "--n 100000000" in line and "at most" in line and "--batch-size" not in line, line
    assert not (tmp_path / "s.npy").exists()


# ============================================================================ messages
def test_a_tiny_lr_names_lr_not_lr_final(tmp_path, capsys):
    rc, _, err = run_cli(["train", "--preset", "ring8", "--lr", "1e-320", "--out", tmp_path / "r"], capsys)
    line = _one_error_line(err, rc)
    assert "--lr 1e-320" in line and "--lr-final" in line and "lr_final must" not in line, line
    rc, _, err = run_cli(["train", "--preset", "ring8", "--lr", "1e-320", "--lr-final", "1e-320", "--steps", "1",
                          "--batch-size", "32", "--no-progress", "--out", tmp_path / "r"], capsys)
    assert rc == 0, err
