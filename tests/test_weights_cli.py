"""Weights in and out from the command line: ``npgan export``, ``train --init-g/--init-d``, ``train --model``.

Exported weights are checked three ways: against the checkpoint's arrays (bit for bit), in a PyTorch twin built
independently of the run (same samples for the same z, each engine within its float32 rounding bound of the
float64 twin, tests/error_bounds.py; skipped without torch), and for being
read-only on the run directory (every file's bytes and mtime unchanged). Bad input (a weights file that does not
fit, a broken --model file, a D that ends in Sigmoid) must give exit 2, one line, and no run directory.
"""

import hashlib
from pathlib import Path

import error_bounds
import numpy as np
import pytest
from helpers import one_error_line, run_cli

import npgan
from npgan import nn
from npgan.errors import RunError
from npgan.run.checkpoint import load_arrays
from npgan.run.cli import main
from npgan.run.config import read_config
from npgan.run.experiment import Run, read_models
from npgan.run.presets import build_models, check_models, make_config

FAST = ["--no-progress"]





def _snapshot(d: Path):
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
            for p in sorted(d.rglob("*"))}


def _sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two trained tiny runs: ring8 (5 steps) and digits-dcgan (2 steps, batch 16: BatchNorm statistics)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for preset, extra in (("ring8", ["--steps", "5", "--batch-size", "64"]),
                          ("digits-dcgan", ["--steps", "2", "--batch-size", "16"])):
        d = root / preset
        assert main(["train", "--preset", preset, *extra, *FAST, "--seed", "2", "--out", str(d)]) == 0
        out[preset] = d
    return out


# ============================================================================ export
@pytest.mark.parametrize("preset", ["ring8", "digits-dcgan"])
def test_export_holds_the_checkpoint_weights_and_buffers(runs, preset, tmp_path, capsys):
    run = runs[preset]
    arrays, meta = load_arrays(run / "checkpoint.npz")
    for net in ("G", "D"):
        f = tmp_path / f"{net}.safetensors"
        rc, _, err = run_cli(["export", run, "--net", net, "--out", f], capsys)
        assert rc == 0, err
        state, md = npgan.load(f)
        want = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{net}/")}
        assert sorted(state) == sorted(want)
        for k in want:
            assert state[k].dtype == want[k].dtype and np.array_equal(state[k], want[k]), k
        if preset == "digits-dcgan":
            for buf in ("running_mean", "running_var", "num_batches_tracked"):  # both DCGAN nets have BatchNorm
                assert any(k.endswith(buf) for k in state), buf
        assert md["preset"] == preset and md["step"] == str(meta["step"]) and md["net"] == net
        assert md["npgan_version"] == npgan.__version__ and "Sequential(" in md["architecture"]
    both = tmp_path / "both.safetensors"
    assert run_cli(["export", run, "--net", "both", "--out", both], capsys)[0] == 0
    state, _ = npgan.load(both)
    assert sorted(state) == sorted(k.replace("/", ".", 1) for k in arrays if k[:2] in ("G/", "D/"))


@pytest.mark.parametrize("preset", ["ring8", "digits-dcgan"])
def test_export_into_pytorch_gives_the_same_samples(runs, preset, tmp_path, capsys):
    from helpers import torch_or_skip
    torch_or_skip()
    from safetensors.torch import load_file

    from npgan.interop import to_torch
    run = runs[preset]
    f = tmp_path / "g.safetensors"
    assert run_cli(["export", run, "--out", f], capsys)[0] == 0
    cfg = make_config(preset)
    G_fresh, _ = build_models(cfg)  # another G's weights: only the file can make the twin agree
    twin = to_torch(G_fresh)
    twin.load_state_dict(load_file(str(f)), strict=True)
    _, G, _, step = read_models(run)
    z = np.random.default_rng(5).standard_normal((16, cfg.train.z_dim)).astype(np.float32)
    for mode in ("eval", "train"):
        getattr(G, mode)()
        getattr(twin, mode)()
        runs = error_bounds.check_twins(G, twin, z, mode)  # each within its float32 bound of the float64 twin
        assert runs["npgan"].out.dtype == runs["torch"].out.dtype == np.float32
    assert step == load_arrays(run / "checkpoint.npz")[1]["step"] == int(npgan.load(f)[1]["step"])


def test_export_is_read_only(runs, tmp_path, capsys):
    run = runs["digits-dcgan"]
    before = _snapshot(run)
    for net in ("G", "D", "both"):
        assert run_cli(["export", run, "--net", net, "--out", tmp_path / f"{net}.safetensors"], capsys)[0] == 0
    rc, _, err = run_cli(["export", run, "--out", run / "inside.safetensors"], capsys)
    assert rc == 2 and "inside the run directory" in one_error_line(err)
    assert _snapshot(run) == before


def test_export_refuses_an_existing_out_unless_force(runs, tmp_path, capsys):
    f = tmp_path / "g.safetensors"
    f.write_bytes(b"keep me")
    rc, _, err = run_cli(["export", runs["ring8"], "--out", f], capsys)
    assert rc == 2 and "--force" in one_error_line(err) and f.read_bytes() == b"keep me"
    assert run_cli(["export", runs["ring8"], "--out", f, "--force"], capsys)[0] == 0
    assert set(npgan.load(f)[0]) == {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}
    for bad, why in ((tmp_path / "g.npz", ".safetensors"), (tmp_path / "none" / "g.safetensors", None)):
        rc, _, err = run_cli(["export", tmp_path / "no-run", "--out", bad], capsys)
        assert rc == 2 and (why or "does not exist") in one_error_line(err)
        assert not bad.exists()


# ============================================================================ --init-g / --init-d
def test_init_g_from_an_exported_file_is_g_at_step_0_and_resume_keeps_training(runs, tmp_path, capsys):
    f = tmp_path / "g.safetensors"
    assert run_cli(["export", runs["ring8"], "--out", f], capsys)[0] == 0
    want, _ = npgan.load(f)
    cfg = make_config("ring8")
    cfg.init_g = str(f)
    run = Run.create(cfg, tmp_path / "api")  # what `npgan train --init-g` runs, stopped before the first step
    got = run.G.state_dict()
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert not np.array_equal(run.D.state_dict()["0.weight"], load_arrays(runs["ring8"] / "checkpoint.npz")[0]
                              ["D/0.weight"])  # D is not touched
    # through the command line: the file's SHA-256 is recorded, resume continues from the checkpoint
    out = tmp_path / "cli"
    rc, _, err = run_cli(["train", "--preset", "ring8", "--steps", "3", "--batch-size", "32", *FAST,
                       "--init-g", f, "--out", out], capsys)
    assert rc == 0, err
    cfg2 = read_config(out / "config.toml")
    assert cfg2.init_g == str(f.resolve()) and cfg2.init_g_sha256 == _sha(f) and cfg2.init_d == ""
    trained = load_arrays(out / "checkpoint.npz")[0]["G/0.weight"]
    assert not np.array_equal(trained, want["0.weight"])
    resumed = Run.resume(out)
    assert np.array_equal(resumed.G.state_dict()["0.weight"], trained)  # no re-init on resume
    # `train --config` of that run repeats the init, but not from a file that changed since
    npgan.save(want, f, {"edited": "yes"})  # same tensors, other bytes
    rc, _, err = run_cli(["train", "--config", out / "config.toml", *FAST, "--out", tmp_path / "again"], capsys)
    assert rc == 2 and "has changed since the config recorded it" in one_error_line(err)
    assert not (tmp_path / "again").exists()


def test_one_network_from_a_file_and_the_other_fresh_is_warned_about(runs, tmp_path, capsys):
    """--init-g without --init-d (or the reverse) trains, with one warning line that says what it did to ring8;
    both together, or neither, print none."""
    from npgan.run.cli import ONE_SIDED_INIT
    files = {}
    for net in ("G", "D"):
        files[net] = tmp_path / f"{net}.safetensors"
        assert run_cli(["export", runs["ring8"], "--net", net, "--out", files[net]], capsys)[0] == 0
    common = ["train", "--preset", "ring8", "--steps", "1", "--batch-size", "32", *FAST]
    for given, other in (("g", "d"), ("d", "g")):
        rc, _, err = run_cli([*common, f"--init-{given}", files[given.upper()], "--out", tmp_path / given], capsys)
        assert rc == 0, err
        warned = [ln for ln in err.splitlines() if ln.startswith("npgan: warning:")]
        assert warned == [f"npgan: warning: --init-{given} without --init-{other}: {ONE_SIDED_INIT[given]}; give "
                          f"--init-{other} the {other.upper()} trained with it to keep both"], err
    for extra in (["--init-g", files["G"], "--init-d", files["D"]], []):
        rc, _, err = run_cli([*common, *extra, "--out", tmp_path / f"x{len(extra)}"], capsys)
        assert rc == 0 and "warning" not in err, err


def test_init_file_that_does_not_fit_is_refused_in_one_line_and_nothing_is_written(runs, tmp_path, capsys):
    G, _ = build_models(make_config("ring8"))
    state = G.state_dict()
    del state["0.bias"]
    state["4.weight"] = np.zeros((3, 128), np.float32)
    state["5.weight"] = np.zeros((1,), np.float32)
    f = tmp_path / "bad.safetensors"
    npgan.save(state, f)
    out = tmp_path / "r"
    rc, _, err = run_cli(["train", "--preset", "ring8", "--steps", "2", *FAST, "--init-g", f, "--out", out], capsys)
    line = one_error_line(err)
    assert rc == 2 and "--init-g" in line
    assert "missing [0.bias]" in line and "unexpected [5.weight]" in line
    assert "4.weight (file (3, 128), model (2, 128))" in line
    assert not out.exists()
    # another preset's D (a DCGAN's) as ring8's D; a file that is not there
    dfile = tmp_path / "d.safetensors"
    assert run_cli(["export", runs["digits-dcgan"], "--net", "D", "--out", dfile], capsys)[0] == 0
    rc, _, err = run_cli(["train", "--preset", "ring8", *FAST, "--init-d", dfile, "--out", out], capsys)
    assert rc == 2 and "--init-d" in one_error_line(err) and "missing" in err and not out.exists()
    rc, _, err = run_cli(["train", "--preset", "ring8", *FAST, "--init-d", tmp_path / "nope", "--out", out], capsys)
    assert rc == 2 and "does not exist" in one_error_line(err) and not out.exists()


def test_init_d_from_pytorch_safetensors(tmp_path, capsys):
    from helpers import torch_or_skip
    torch = torch_or_skip()
    from safetensors.torch import save_file
    tnn = torch.nn
    torch.manual_seed(0)
    D_torch = tnn.Sequential(tnn.Linear(2, 128), tnn.LeakyReLU(0.2), tnn.Linear(128, 128), tnn.LeakyReLU(0.2),
                             tnn.Linear(128, 1))  # PyTorch's own init, written by hand
    f = tmp_path / "d_torch.safetensors"
    save_file(D_torch.state_dict(), str(f))
    cfg = make_config("ring8")
    cfg.init_d = str(f)
    run = Run.create(cfg, tmp_path / "api")
    x = np.random.default_rng(1).standard_normal((8, 2)).astype(np.float32)
    error_bounds.check_twins(run.D, D_torch, x, "--init-d")  # each within its float32 bound of the float64 twin
    out = tmp_path / "cli"
    rc, _, err = run_cli(["train", "--preset", "ring8", "--steps", "2", "--batch-size", "32", *FAST,
                       "--init-d", f, "--out", out], capsys)
    assert rc == 0, err
    assert read_config(out / "config.toml").init_d_sha256 == _sha(f)


# ============================================================================ --model
MODEL = '''
from npgan import nn


def build(config):
    z, h = config.train.z_dim, 32
    G = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, 2))
    D = nn.Sequential(nn.Linear(2, h), nn.LeakyReLU(0.2), nn.Linear(h, 1))
    return G, D
'''


def test_model_file_end_to_end(tmp_path, capsys):
    from helpers import torch_or_skip
    f = tmp_path / "my_gan.py"
    f.write_text(MODEL)
    out = tmp_path / "mine"
    rc, _, err = run_cli(["train", "--preset", "ring8", "--model", f"{f}:build", "--steps", "3", "--batch-size", "32",
                       *FAST, "--out", out], capsys)
    assert rc == 0, err
    cfg = read_config(out / "config.toml")
    assert cfg.model == "custom" and cfg.model_build == f"{f.resolve()}:build" and cfg.model_sha256 == _sha(f)
    assert load_arrays(out / "checkpoint.npz")[1]["arch"]["G"]["0.weight"] == [32, 16]
    assert not (tmp_path / "__pycache__").exists()  # the user's folder is left as it was
    assert run_cli(["resume", out, "--steps", "5", *FAST], capsys)[0] == 0
    assert load_arrays(out / "checkpoint.npz")[1]["step"] == 5
    rc, _, err = run_cli(["sample", out, "--n", "7", "--out", tmp_path / "s.npy", "--trust-model"], capsys)
    assert rc == 0, err
    assert np.load(tmp_path / "s.npy").shape == (7, 2)
    g = tmp_path / "g.safetensors"
    assert run_cli(["export", out, "--out", g, "--trust-model"], capsys)[0] == 0
    _, md = npgan.load(g)
    assert md["model_sha256"] == _sha(f) and md["model"] == "custom"
    torch_or_skip()
    from safetensors.torch import load_file

    from npgan.interop import to_torch
    G_fresh, _ = build_models(cfg)
    twin = to_torch(G_fresh)
    twin.load_state_dict(load_file(str(g)), strict=True)
    _, G, _, _ = read_models(out, trust_model=True)
    z = np.random.default_rng(3).standard_normal((10, 16)).astype(np.float32)
    error_bounds.check_twins(G, twin, z, "--model")  # each within its float32 bound of the float64 twin

    # a changed file: refused (resume, export, sample) unless --allow-changed-model; the new hash is then recorded
    f.write_text(MODEL + "\n# a comment\n")
    before = _snapshot(out)
    rc, _, err = run_cli(["resume", out, "--steps", "6", *FAST], capsys)
    assert rc == 2 and "has changed since the run was created" in one_error_line(err)
    rc, _, err = run_cli(["export", out, "--out", tmp_path / "g2.safetensors", "--trust-model"], capsys)
    assert rc == 2 and "--allow-changed-model" in one_error_line(err)
    rc, _, err = run_cli(["sample", out, "--out", tmp_path / "s2.npy", "--trust-model"], capsys)
    assert rc == 2 and "has changed" in one_error_line(err) and not (tmp_path / "s2.npy").exists()
    assert _snapshot(out) == before
    assert run_cli(["sample", out, "--out", tmp_path / "s2.npy", "--trust-model", "--allow-changed-model"],
                capsys)[0] == 0  # the option the message names is accepted by every command that gives it
    assert run_cli(["export", out, "--out", tmp_path / "g2.safetensors", "--trust-model", "--allow-changed-model"],
                capsys)[0] == 0
    assert run_cli(["resume", out, "--steps", "6", *FAST, "--allow-changed-model"], capsys)[0] == 0
    assert read_config(out / "config.toml").model_sha256 == _sha(f)
    # a changed architecture does not fit the checkpoint, allowed or not
    f.write_text(MODEL.replace("h = config.train.z_dim, 32", "h = config.train.z_dim, 48"))
    rc, _, err = run_cli(["resume", out, "--steps", "7", *FAST, "--allow-changed-model"], capsys)
    assert rc == 2 and "another architecture" in one_error_line(err)


BAD_MODELS = {
    "missing file": (None, "does not exist"),
    "no such function": (MODEL.replace("def build", "def make"), "has no function 'build'"),
    "raises on import": ("raise RuntimeError('broken on purpose')\n", "RuntimeError: broken on purpose"),
    "raises in build": (MODEL.replace("    z, h", "    1 / 0\n    z, h"), "ZeroDivisionError"),
    "returns one module": (MODEL.replace("return G, D", "return G"), "must return (G, D), got Sequential"),
    "returns three": (MODEL.replace("return G, D", "return G, D, D"), "must return (G, D), got tuple of length 3"),
    "returns an int": (MODEL.replace("return G, D", "return G, 3"), "returned a builtins.int as D"),
    "G output shape": (MODEL.replace("nn.Linear(h, 2))", "nn.Linear(h, 3))"),
                       "G maps z of shape (2, 16) to (2, 3); the ring8 data are (N, 2)"),
    "D output (N,)": (MODEL.replace("nn.Linear(h, 1))", "nn.Linear(h, 1), nn.Flatten(0))"),
                      "D maps a batch of 2 samples to (2,)"),
    "D fails": (MODEL.replace("nn.Linear(2, h)", "nn.Linear(5, h)"), "D failed on a batch of 2"),
    "Sigmoid D": (MODEL.replace("nn.Linear(h, 1))", "nn.Linear(h, 1), nn.Sigmoid())"),
                  "remove the final Sigmoid: npgan's losses take logits"),
    "Sigmoid then Flatten": (MODEL.replace("nn.Linear(h, 1))", "nn.Linear(h, 1), nn.Sigmoid(), nn.Flatten())"),
                             "remove the final Sigmoid"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_model_file_is_one_line_exit_2_nothing_written(case, tmp_path, capsys):
    text, why = BAD_MODELS[case]
    f = tmp_path / "m.py"
    if text is not None:
        f.write_text(text)
    out = tmp_path / "r"
    rc, _, err = run_cli(["train", "--preset", "ring8", "--model", f"{f}:build", "--steps", "2", *FAST, "--out", out],
                      capsys)
    line = one_error_line(err)
    assert rc == 2 and why in line, line
    assert not out.exists()


def test_model_as_module_function(tmp_path, capsys, monkeypatch):
    (tmp_path / "gan_mod_cli18.py").write_text(MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "r"
    rc, _, err = run_cli(["train", "--preset", "ring8", "--model", "gan_mod_cli18:build", "--steps", "2",
                       "--batch-size", "32", *FAST, "--out", out], capsys)
    assert rc == 0, err
    cfg = read_config(out / "config.toml")
    assert cfg.model_build == "gan_mod_cli18:build" and cfg.model_sha256 == _sha(tmp_path / "gan_mod_cli18.py")
    rc, _, err = run_cli(["train", "--preset", "ring8", "--model", "no_such_mod_cli18:build", *FAST,
                       "--out", tmp_path / "r2"], capsys)
    assert rc == 2 and "no module named 'no_such_mod_cli18'" in one_error_line(err)


def test_sigmoid_check_applies_to_every_model():
    """A preset's D with a Sigmoid appended (or applied inside a custom forward) is refused; as built it passes."""
    from npgan import functional as F
    for preset in ("ring8", "digits-mlp", "digits-dcgan"):
        cfg = make_config(preset)
        G, D = build_models(cfg)
        before = {k: v.copy() for k, v in D.state_dict().items()}
        check_models(cfg, G, D)
        assert G.training and D.training  # modes put back
        assert all(np.array_equal(v, before[k]) for k, v in D.state_dict().items())  # no running stats moved
        with pytest.raises(RunError, match="remove the final Sigmoid"):
            check_models(cfg, G, nn.Sequential(D, nn.Sigmoid()))

    class Prob(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1)

        def forward(self, x):
            return F.sigmoid(self.lin(x))

    cfg = make_config("ring8")
    with pytest.raises(RunError, match="remove the final Sigmoid"):
        check_models(cfg, build_models(cfg)[0], Prob())
