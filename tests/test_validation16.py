"""Issue #16: loaded state is validated, bad values are caught up front, the KDE is finite at every scale, the
core ops refuse None, TOML round-trips every string, the environment of a checkpoint is recorded.

Each test here failed on the main branch before the fix (see docs/reliability.md, "Loaded state is validated").
"""

from __future__ import annotations

import io
import json
import shutil

import error_bounds
import numpy as np
import pytest
import tomllib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npgan
import npgan.functional as F
from npgan import checkpoint, config, memory, nn, parallel, presets
from npgan.checkpoint import CheckpointError, load_arrays
from npgan.cli import main
from npgan.config import read_config, toml_string, write_config
from npgan.errors import InsufficientMemoryError, RunError
from npgan.experiment import Run
from npgan.presets import PRESETS, build_models, make_config
from npgan.tensor import GraphFreedError

GiB = 1 << 30


# ============================================================================ helpers
def _ring_cfg(steps=4):
    cfg = make_config("ring8")
    cfg.train.steps, cfg.train.batch_size = steps, 32
    cfg.log_every, cfg.checkpoint_every, cfg.sample_every, cfg.eval_samples = 2, 2, 10_000, 100
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 4-step ring8 run (config.toml, history.csv, checkpoint.npz)."""
    out = tmp_path_factory.mktemp("v16") / "run"
    Run.create(_ring_cfg(), out).train(progress=False, log=lambda m: None)
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


# ============================================================================ 1. header fields
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


# ============================================================================ 1. arrays
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
    other = _ring_cfg()
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


# ============================================================================ 5. environment
def test_checkpoint_records_threads_and_blas_and_resume_warns_when_they_differ(run_dir, capsys):
    env = load_arrays(run_dir / "checkpoint.npz")[1]["env"]
    assert env == checkpoint._env() and isinstance(env["threads"], int) and isinstance(env["blas"], list)
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


# ============================================================================ 2. TOML
_fs_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # astral characters included


@settings(max_examples=200, deadline=None)
@given(_fs_text)
def test_toml_strings_round_trip(s):
    assert tomllib.loads("k = " + toml_string(s))["k"] == s


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(preset=_fs_text, data_dir=_fs_text)
def test_config_file_round_trips_any_string(tmp_path, preset, data_dir):
    cfg = _ring_cfg()
    cfg.preset, cfg.data_dir = preset, data_dir
    write_config(tmp_path / "c.toml", cfg)
    assert read_config(tmp_path / "c.toml").to_dict() == cfg.to_dict()


def test_astral_data_dir_run_can_be_resumed(tmp_path):
    cfg = _ring_cfg(steps=2)
    cfg.data_dir, cfg.preset = "/data/𝕄NIST", "ring8 🙂"
    out = tmp_path / "r"
    Run.create(cfg, out).train(progress=False, log=lambda m: None)
    assert Run.resume(out).cfg.data_dir == "/data/𝕄NIST"


def test_undecodable_file_name_bytes_are_refused_before_writing(tmp_path):
    cfg = _ring_cfg()
    cfg.data_dir = b"/data/\xff".decode("utf-8", "surrogateescape")
    with pytest.raises(ValueError, match="surrogate"):
        Run.create(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_deeply_nested_toml_and_endless_files_give_one_line(tmp_path):
    p = tmp_path / "deep.toml"
    p.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(RunError, match="too deeply"):
        read_config(p)
    with pytest.raises(RunError, match="/dev/zero is larger than"):
        read_config("/dev/zero")


# ============================================================================ 3. up-front checks
@pytest.mark.parametrize("field,value,words", [("hidden", 60000, ["hidden = 60000", "smaller hidden"]),
                                               ("z_dim", 2_000_000_000, ["z_dim = 2000000000"]),
                                               ("eval_samples", 10**9, ["eval_samples = 1000000000"])])
def test_sizes_the_memory_estimate_knows_fail_before_anything_is_written(tmp_path, monkeypatch, field, value,
                                                                        words):
    monkeypatch.setattr(memory, "available_memory", lambda: 8 * GiB)
    cfg = _ring_cfg()
    setattr(cfg.train if field == "z_dim" else cfg, field, value)
    with pytest.raises(InsufficientMemoryError) as e:
        Run.create(cfg, tmp_path / "r")
    for w in words:
        assert w in str(e.value)
    assert "--batch-size" not in str(e.value)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", list(PRESETS))
def test_parameter_count_arithmetic_matches_the_built_models(name):
    cfg = make_config(name)
    for h, e in ((3, 0), (16, 0), (3, 5), (16, 8)):  # e: D's own width (0 = h)
        cfg.hidden, cfg.d_hidden = h, e
        G, D = build_models(cfg)
        assert presets.count_parameters(cfg) == (sum(p.data.size for p in G.parameters()),
                                                sum(p.data.size for p in D.parameters()))


def test_data_scale_matches_the_mixtures():
    from npgan.data import MIXTURES
    for name, mix in MIXTURES.items():
        # the centres in the default dtype: one rounding to float32 (u = 6e-8) inside approx's default rel 1e-6
        assert config.DATA_SCALE[name] == pytest.approx(float(np.abs(npgan.backend.to_numpy(mix.centers)).max()))


def test_a_huge_sparse_checkpoint_is_refused_by_its_size(run_dir, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 8 * GiB)
    p = run_dir / "checkpoint.npz"
    with open(p, "r+b") as f:
        f.truncate(60 * GiB)  # sparse: no disk used
    msg = _refused(run_dir, "60 GiB")
    assert "--batch-size" not in msg


@pytest.mark.parametrize("bw", ["1e300", "1e-300"])
def test_bandwidth_out_of_the_datas_scale_exits_2_before_writing(tmp_path, capsys, bw):
    out = tmp_path / "r"
    assert main(["train", "--preset", "ring8", "--steps", "2", "--bandwidth", bw, "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bandwidth" in err[0], err
    assert not out.exists()


# ============================================================================ 4. KDE at every scale
@settings(max_examples=30, deadline=None)
@given(exp=st.integers(-30, 30), dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**16),
       bw=st.sampled_from([None, "silverman", "median"]))
def test_kde_entropy_is_finite_and_scale_equivariant(exp, dtype, seed, bw):
    x = np.random.default_rng(seed).standard_normal((12, 3)).astype(dtype)
    c = 10.0 ** exp
    xc = (x * c).astype(dtype)
    base = F.kde_entropy(npgan.Tensor(x), bandwidth=0.7 if bw is None else bw)
    t = npgan.Tensor(xc, requires_grad=True)
    h = F.kde_entropy(t, bandwidth=0.7 * c if bw is None else bw)
    h.backward()
    assert np.isfinite(float(h.data)) and np.isfinite(t.grad.data).all()
    want = float(base.data) + 3 * np.log(c)
    if dtype == "float64":  # float64: γ_n-sized errors of 2⁻⁵³ per rounding, far inside 1e-9
        assert float(h.data) == pytest.approx(want, rel=1e-9, abs=1e-7)
        return
    # float32: both entropies within their rounding bounds (tests/error_bounds.py), the scaled points rounded
    # once more (x·c to float32: e_input = u), and a rule's σ within its own float32 error
    x64 = x.astype(np.float64)
    sig = 0.7 if bw is None else F.kde_bandwidth(x64, bw)
    e_sig = 0.0 if bw is None else error_bounds.kde_rule_sigma_error(x64, bw)
    e_base = error_bounds.kde_entropy_bounds(x64, sig, False, e_sigma=e_sig)[1]
    e_scaled = error_bounds.kde_entropy_bounds(x64, sig, False, e_sigma=e_sig, e_input=error_bounds.U)[1]
    assert abs(float(h.data) - want) <= e_base + e_scaled + 2 * error_bounds.U * abs(want)


def test_kde_entropy_with_a_huge_bandwidth_is_finite():
    x = npgan.Tensor(np.random.default_rng(0).standard_normal((10, 2)), requires_grad=True)
    h = F.kde_entropy(x, bandwidth=1e200)
    h.backward()
    assert float(h.data) == pytest.approx(2 * (np.log(1e200) + 0.5 * np.log(2 * np.pi)), rel=1e-12)
    assert np.isfinite(x.grad.data).all()


# ============================================================================ core ops
@pytest.mark.parametrize("op", [lambda t: t + None, lambda t: None + t, lambda t: t * None, lambda t: t - "a",
                                lambda t: t / {}, lambda t: t + object()])
def test_binary_ops_refuse_non_numeric_operands(op):
    with pytest.raises(TypeError, match="unsupported operand"):
        op(npgan.Tensor([1.0, 2.0]))


def test_graph_freed_and_non_scalar_backward_are_documented_runtime_errors():
    x = npgan.Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(GraphFreedError) as e:
        y.backward()
    assert isinstance(e.value, RuntimeError)
    with pytest.raises(RuntimeError):
        (x * x).backward()
    doc = (__import__("pathlib").Path(__file__).parents[1] / "docs" / "reliability.md").read_text()
    assert "GraphFreedError" in doc and "non-scalar" in doc


@pytest.mark.parametrize("fn", ["relu", "leaky_relu", "sigmoid", "tanh", "softplus", "logsigmoid"])
def test_integer_and_bool_inputs_become_the_default_float_dtype(fn):
    for data in (np.array([[1, -2], [3, 0]], dtype=np.int64), np.array([[True, False]])):
        y = getattr(F, fn)(npgan.tensor(data))
        assert y.dtype == npgan.get_default_dtype(), (fn, data.dtype, y.dtype)
