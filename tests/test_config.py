"""A run's configuration: config.toml round-trips every string, and values that cannot train (sizes beyond the
memory, a bandwidth outside the data's scale) are refused in one line before anything is written.
"""

from __future__ import annotations

import numpy as np
import pytest
import tomllib
from helpers import tiny_ring8_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npgan
from npgan.errors import InsufficientMemoryError, RunError
from npgan.run import config, memory, presets
from npgan.run.cli import main
from npgan.run.config import read_config, toml_string, write_config
from npgan.run.experiment import Run
from npgan.run.presets import PRESETS, build_models, make_config

GiB = 1 << 30


# ============================================================================ helpers
# ============================================================================ config.toml
_fs_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # astral characters included


@settings(max_examples=200, deadline=None)
@given(_fs_text)
def test_toml_strings_round_trip(s):
    assert tomllib.loads("k = " + toml_string(s))["k"] == s


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(preset=_fs_text, data_dir=_fs_text)
def test_config_file_round_trips_any_string(tmp_path, preset, data_dir):
    cfg = tiny_ring8_config()
    cfg.preset, cfg.data_dir = preset, data_dir
    write_config(tmp_path / "c.toml", cfg)
    assert read_config(tmp_path / "c.toml").to_dict() == cfg.to_dict()


def test_astral_data_dir_run_can_be_resumed(tmp_path):
    cfg = tiny_ring8_config(steps=2)
    cfg.data_dir, cfg.preset = "/data/𝕄NIST", "ring8 🙂"
    out = tmp_path / "r"
    Run.create(cfg, out).train(progress=False, log=lambda m: None)
    assert Run.resume(out).cfg.data_dir == "/data/𝕄NIST"


def test_undecodable_file_name_bytes_are_refused_before_writing(tmp_path):
    cfg = tiny_ring8_config()
    cfg.data_dir = b"/data/\xff".decode("utf-8", "surrogateescape")
    with pytest.raises(ValueError, match="surrogate"):
        Run.create(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_deeply_nested_toml_and_endless_files_give_one_line(tmp_path):
    p = tmp_path / "deep.toml"
    p.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(RunError, match="too deeply"):
        read_config(p)
    endless = tmp_path / "endless.toml"  # a sparse file of 64 MiB: read 1 MiB and refused by its size
    with open(endless, "wb") as f:
        f.truncate(64 << 20)
    with pytest.raises(RunError, match="endless.toml is larger than"):
        read_config(endless)
    with pytest.raises(RunError, match="config file .* is a directory"):  # anything but a regular file: one line
        read_config(tmp_path)


# ============================================================================ checked up front
@pytest.mark.parametrize("field,value,words", [("hidden", 60000, ["hidden = 60000", "smaller hidden"]),
                                               ("z_dim", 2_000_000_000, ["z_dim = 2000000000"]),
                                               ("eval_samples", 10**9, ["eval_samples = 1000000000"])])
def test_sizes_the_memory_estimate_knows_fail_before_anything_is_written(tmp_path, monkeypatch, field, value,
                                                                        words):
    monkeypatch.setattr(memory, "available_memory", lambda: 8 * GiB)
    cfg = tiny_ring8_config()
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


@pytest.mark.parametrize("bw", ["1e300", "1e-300"])
def test_bandwidth_out_of_the_datas_scale_exits_2_before_writing(tmp_path, capsys, bw):
    out = tmp_path / "r"
    assert main(["train", "--preset", "ring8", "--steps", "2", "--bandwidth", bw, "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bandwidth" in err[0], err
    assert not out.exists()
