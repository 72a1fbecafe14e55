"""The colour presets and options: dcgan64 / cifar10-dcgan / shapes-dcgan, --data folder|cifar10|shapes,
--image-size, --channels, --z-dim, --width, --beta1/2, --order, and ``npgan download``.

Every image and data file is generated here; nothing is downloaded (the download test serves 127.0.0.1).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import sys

import error_bounds
import numpy as np
import pytest
from helpers import serve_directory, torch_or_skip
from PIL import Image

import npgan
from npgan import backend, data, nn
from npgan.data import cifar, digits
from npgan.run import presets
from npgan.run.checkpoint import load_arrays
from npgan.run.cli import main
from npgan.run.config import RunConfig, read_config, write_config


# ============================================================================ generated data
def _folder(root, n=500, seed=0):
    """``n`` images of mixed sizes (18..90 px a side), modes and formats: RGB, RGBA, L, P, 16-bit PNG, and JPEGs
    with an EXIF rotation; nested; plus a file that is not an image."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        w, h = (int(v) for v in rng.integers(18, 91, 2))
        kind = i % 6
        d = root / f"d{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if kind == 0:
            Image.fromarray(rgb).save(d / f"{i}.png")
        elif kind == 1:
            Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (h, w), dtype=np.uint8)]), "RGBA").save(
                d / f"{i}.png")
        elif kind == 2:
            Image.fromarray(rgb[..., 0], "L").save(d / f"{i}.png")
        elif kind == 3:
            Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16).save(d / f"{i}.png")
        elif kind == 4:
            Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16)).save(d / f"{i}.png")
        else:
            exif = Image.Exif()
            exif[0x0112] = 6  # displayed rotated 90° clockwise
            Image.fromarray(rgb).save(d / f"{i}.JPG", "JPEG", exif=exif, quality=90)
    (root / "README.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("photos") / "faces")


def _small_config(tmp_path, preset, **fields):
    """A config.toml of ``preset`` with few evaluation samples (to keep the tests fast)."""
    cfg = presets.make_config(preset)
    cfg.eval_samples = 64
    for k, v in fields.items():
        setattr(cfg, k, v)
    path = tmp_path / f"{preset}.toml"
    write_config(path, cfg)
    return str(path)


def _train(*args):
    return main(["train", "--no-progress", *map(str, args)])


def _one_line_error(capsys, code, *args):
    rc = _train(*args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code, err
    assert len(lines) == 1 and lines[0].startswith("npgan: error: "), err
    return lines[0]


def _arrays(run_dir):
    return load_arrays(run_dir / "checkpoint.npz")[0]


def _cache_files(root):
    d = root / ".npgan-cache"
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in d.iterdir()}


# ============================================================================ a folder with dcgan64
def test_dcgan64_folder_trains_resumes_exactly_and_reuses_the_cache(tmp_path, photos, capsys):
    root = tmp_path / "faces"
    shutil.copytree(photos, root)
    conf = _small_config(tmp_path, "dcgan64")
    common = ["--config", conf, "--preset", "dcgan64", "--data-dir", root, "--width", "8", "--batch-size", "16"]
    assert _train(*common, "--steps", "20", "--out", tmp_path / "whole") == 0
    cache = _cache_files(root)
    assert len([n for n in cache if n.endswith(".npy")]) == 1
    n_images = np.load(root / ".npgan-cache" / next(n for n in cache if n.endswith(".npy")), mmap_mode="r").shape
    assert n_images == (500, 3, 64, 64)  # every file decoded, the text file ignored
    m = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert m["step"] == 20 and m["n_real"] == 64 and {"precision", "coverage", "channel_mean_gap"} <= set(m)

    # interrupted at 10 and resumed to 20: bitwise the same final state; the cache was reused, not rebuilt
    assert _train(*common, "--steps", "10", "--out", tmp_path / "split") == 0
    assert main(["resume", str(tmp_path / "split"), "--steps", "20", "--no-progress"]) == 0
    assert _cache_files(root) == cache
    a, b = _arrays(tmp_path / "whole"), _arrays(tmp_path / "split")
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert read_config(tmp_path / "split" / "config.toml").image_size == 64

    # a changed file: a new cache (the old one removed), and the run trains on the new pixels
    victim = root / "d0" / "0.png"
    Image.fromarray(np.full((40, 50, 3), 7, dtype=np.uint8)).save(victim)
    os.utime(victim, ns=(1, 1))
    assert _train(*common, "--steps", "1", "--out", tmp_path / "changed") == 0
    after = _cache_files(root)
    assert not set(after) & set(cache) and len(after) == len(cache)
    new = np.load(root / ".npgan-cache" / next(n for n in after if n.endswith(".npy")), mmap_mode="r")
    files = sorted(os.path.relpath(p, root) for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg"))
    assert (np.asarray(new[files.index(os.path.join("d0", "0.png"))]) == 7).all()


def test_dcgan64_true_shapes_on_a_folder(tmp_path, photos):
    """The write-up's network itself (width 64, 64x64x3, z 100) for 2 steps at batch 8."""
    root = tmp_path / "faces"
    shutil.copytree(photos, root)
    out = tmp_path / "r"
    assert _train("--config", _small_config(tmp_path, "dcgan64"), "--preset", "dcgan64", "--data-dir", root,
                  "--batch-size", "8", "--steps", "2", "--out", out) == 0
    shapes = {k: v.shape for k, v in _arrays(out).items() if k[:2] in ("G/", "D/") and v.ndim == 4}
    assert shapes == {"G/1.weight": (100, 512, 4, 4), "G/4.weight": (512, 256, 4, 4), "G/7.weight": (256, 128, 4, 4),
                      "G/10.weight": (128, 64, 4, 4), "G/13.weight": (64, 3, 4, 4),
                      "D/0.weight": (64, 3, 4, 4), "D/2.weight": (128, 64, 4, 4), "D/5.weight": (256, 128, 4, 4),
                      "D/8.weight": (512, 256, 4, 4), "D/11.weight": (1, 512, 4, 4)}
    cfg = read_config(out / "config.toml")
    assert (cfg.hidden, cfg.image_size, cfg.channels, cfg.train.z_dim, cfg.train.lr, cfg.beta1, cfg.beta2) == (
        64, 64, 3, 100, 2e-4, 0.5, 0.999)
    assert presets.PRESETS["dcgan64"].train.batch_size == 128


def test_a_damaged_file_is_one_warning_line_said_once(tmp_path, capsys):
    """The folder is read twice (training, then evaluation against its own images): the warning is one line
    ``npgan: warning: ...``, printed once, without Python's file, line and source line."""
    root = _folder(tmp_path / "imgs", n=12)
    (root / "broken.png").write_bytes(b"\x89PNG but not really" + bytes(50))
    conf = _small_config(tmp_path, "dcgan64")
    rc = _train("--config", conf, "--preset", "dcgan64", "--data-dir", root, "--image-size", "8", "--width", "4",
                "--batch-size", "4", "--steps", "1", "--out", tmp_path / "r")
    err = capsys.readouterr().err
    assert rc == 0, err
    lines = [ln for ln in re.split(r"[\r\n]", err) if "warning" in ln.lower() or "skipped" in ln]
    assert len(lines) == 1 and lines[0].startswith("npgan: warning: ImageFolder: skipped 1 of 13 files under "), err
    assert "broken.png" in lines[0]
    assert "catalog.py" not in err and "ImageDataWarning" not in err and "return ImageFolder(" not in err


def test_folder_errors_exit_2_in_one_line_and_write_nothing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    for d, words in ((empty, "no image files"), (tmp_path / "missing", "does not exist")):
        out = tmp_path / f"run_{d.name}"
        line = _one_line_error(capsys, 2, "--preset", "dcgan64", "--data-dir", d, "--out", out)
        assert words in line and str(d) in line
        assert not out.exists()
    assert os.listdir(empty) == ["notes.txt"]
    line = _one_line_error(capsys, 2, "--preset", "dcgan64", "--out", tmp_path / "nodir")
    assert "--data-dir" in line and not (tmp_path / "nodir").exists()


def test_an_image_size_the_dcgan_cannot_make_fails_at_construction(tmp_path, photos, capsys):
    out = tmp_path / "r"
    line = _one_line_error(capsys, 2, "--preset", "dcgan64", "--data-dir", photos, "--image-size", "48",
                           "--out", out)
    assert "cannot make 48x48" in line and "4x4 -> 8x8 -> 16x16 -> 32x32 -> 64x64" in line, line
    assert not out.exists()
    cfg = presets.make_config("dcgan64")
    for size, g_out in ((16, (3, 16, 16)), (32, (3, 32, 32)), (128, (3, 128, 128))):
        cfg.image_size, cfg.hidden = size, 4
        G, D = presets.build_models(cfg)
        x = G(npgan.randn(2, 100))
        assert x.shape == (2, *g_out) and D(x).shape == (2, 1)
    cfg.image_size = 100
    with pytest.raises(ValueError, match="cannot make 100x100 images"):
        presets.build_models(cfg)


# ============================================================================ CIFAR-10 and shapes
def _cifar_dir(tmp_path, monkeypatch):
    """Six CIFAR-10 binary files of random records, with their SHA-256 in the official manifest's place."""
    d = tmp_path / "cifar"
    d.mkdir()
    rng = np.random.default_rng(3)
    for name in cifar.CIFAR10_FILES["train"] + cifar.CIFAR10_FILES["test"]:
        rec = rng.integers(0, 256, (10000, 3073), dtype=np.uint8)
        rec[:, 0] %= 10
        (d / name).write_bytes(rec.tobytes())
        monkeypatch.setitem(cifar.CIFAR10_SHA256, name, hashlib.sha256(rec.tobytes()).hexdigest())
    return d


def test_cifar10_dcgan_trains_on_binary_files(tmp_path, monkeypatch, capsys):
    d = _cifar_dir(tmp_path, monkeypatch)
    out = tmp_path / "r"
    conf = _small_config(tmp_path, "cifar10-dcgan")
    assert _train("--config", conf, "--preset", "cifar10-dcgan", "--data-dir", d, "--width", "8",
                  "--batch-size", "16", "--steps", "3", "--out", out) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["step"] == 3 and m["n_real"] == 64 and len(m["channel_mean_real"]) == 3
    assert m["feature_space"].startswith("area-averaged 8x8")
    assert _arrays(out)["G/10.weight"].shape == (8, 3, 4, 4)  # 32x32: four transposed convs
    # the 64x64 dcgan64 on CIFAR-10 (resized per batch)
    assert _train("--config", _small_config(tmp_path, "dcgan64"), "--preset", "dcgan64", "--data", "cifar10",
                  "--data-dir", d, "--width", "4", "--batch-size", "8", "--steps", "1", "--out", tmp_path / "r64") == 0
    assert _arrays(tmp_path / "r64")["G/13.weight"].shape == (4, 3, 4, 4)
    # a damaged file: exit 2, one line, nothing written
    (d / "data_batch_2.bin").write_bytes(b"\0" * 10)
    capsys.readouterr()
    line = _one_line_error(capsys, 2, "--preset", "cifar10-dcgan", "--data-dir", d, "--out", tmp_path / "bad")
    assert "data_batch_2.bin" in line and not (tmp_path / "bad").exists()


def test_shapes_data_and_metrics():
    cfg = presets.make_config("shapes-dcgan")
    store = data.load_images("shapes", "train", image_size=cfg.image_size, seed=0)
    assert store.shape == (data.SHAPES_TRAIN, 3, 32, 32) and presets.image_shape(cfg) == (3, 32, 32)
    x = store.batch(np.arange(5))
    assert x.dtype == backend.get_default_dtype() and -1 <= float(x.min()) < float(x.max()) <= 1
    test = data.load_images("shapes", "test", image_size=32)
    assert not np.array_equal(backend.to_numpy(test.images[:5]), backend.to_numpy(store.images[:5]))

    class Real:  # a "generator" that returns real shapes: the classifier metrics must call it good
        def sample(self, z):
            return npgan.Tensor(test.batch(np.arange(2000, 2000 + z.shape[0]) % len(test)))

    cfg.eval_samples = 600
    from npgan.run.experiment import evaluate
    m = evaluate(cfg, Real())
    assert m["n_classes"] == 12 and m["classes_covered"] == 12 and m["class_kl"] < 0.05, m
    assert {"classifier_score", "precision", "recall", "density", "coverage"} <= set(m)


def test_image_format_refusals():
    for args, words in ((("digits", 16), "8x8"), (("shapes", 48), "16, 32, 64 or 128"),
                        (("cifar10", 32, 1), "3 channels"), (("folder", 32, 2), r"1 \(grey\) or 3"),
                        (("mnist", 28, 3), "1 channel"), (("ring8",), "unknown image data set")):
        with pytest.raises(ValueError, match=words):
            data.image_format(*args)
    assert data.image_format("mnist") == (1, 28) and data.image_format("folder", 0, 1) == (1, 64)
    assert presets.image_shape("digits") == (1, 8, 8) and presets.image_shape("cifar10", 64) == (3, 64, 64)


# ============================================================================ options and config
def test_options_reach_the_config_and_config_toml_round_trips(tmp_path):
    out = tmp_path / "r"
    assert _train("--preset", "digits-dcgan", "--steps", "1", "--z-dim", "7", "--width", "4", "--beta1", "0.3",
                  "--beta2", "0.9", "--order", "g_first", "--lr", "1e-3", "--lr-final", "2e-4", "--reuse-fake",
                  "--out", out) == 0
    cfg = read_config(out / "config.toml")
    assert (cfg.train.z_dim, cfg.hidden, cfg.beta1, cfg.beta2, cfg.train.order) == (7, 4, 0.3, 0.9, "g_first")
    assert cfg.train.reuse_fake is True
    assert (cfg.train.lr, cfg.train.lr_final) == (1e-3, 2e-4)
    assert _arrays(out)["G/1.weight"].shape == (7, 8, 2, 2)
    full = presets.make_config("dcgan64")
    write_config(tmp_path / "c.toml", full)
    assert read_config(tmp_path / "c.toml") == full
    # a config.toml written before the image fields existed still loads, with the data set's own sizes
    old = "\n".join(ln for ln in (out / "config.toml").read_text().splitlines()
                    if not ln.startswith(("image_size", "channels")))
    (tmp_path / "old.toml").write_text(old + "\n")
    cfg = read_config(tmp_path / "old.toml")
    assert (cfg.image_size, cfg.channels) == (0, 0) and presets.image_shape(cfg) == (1, 8, 8)
    assert RunConfig(data="digits", model="dcgan").arch_hash() == RunConfig(data="digits", model="dcgan",
                                                                          image_size=0).arch_hash()


def test_width_sets_both_networks_and_d_width_d_alone(tmp_path):
    """--width sets both networks' widths (ngf = ndf), also over a config whose D has a width of its own;
    --d-width sets D's alone; D's width is part of the architecture's hash (a checkpoint of the other width is
    refused)."""
    cfg = presets.make_config("shapes-dcgan")
    cfg.d_hidden = 6
    write_config(tmp_path / "d6.toml", cfg)
    for start, extra, (wg, wd), d_hidden in ((["--preset", "shapes-dcgan"], [], (4, 4), 0),
                                             (["--config", tmp_path / "d6.toml"], [], (4, 4), 0),
                                             (["--preset", "shapes-dcgan"], ["--d-width", "2"], (4, 2), 2),
                                             (["--config", tmp_path / "d6.toml"], ["--d-width", "2"], (4, 2), 2)):
        out = tmp_path / f"w{len(list(tmp_path.iterdir()))}"
        assert _train(*start, "--width", "4", *extra, "--batch-size", "8", "--steps", "1", "--out", out) == 0
        assert read_config(out / "config.toml").d_hidden == d_hidden
        saved = _arrays(out)
        assert (saved["G/10.weight"].shape, saved["D/0.weight"].shape) == ((wg, 3, 4, 4), (wd, 3, 4, 4))
        assert saved["D/2.weight"].shape == (2 * wd, wd, 4, 4)
    out = tmp_path / "d6"
    assert _train("--config", tmp_path / "d6.toml", "--batch-size", "8", "--steps", "1", "--out", out) == 0
    assert (read_config(out / "config.toml").d_hidden, _arrays(out)["D/0.weight"].shape) == (6, (6, 3, 4, 4))
    hashes = {RunConfig(data="shapes", model="dcgan", hidden=8, d_hidden=e).arch_hash() for e in (0, 4, 16)}
    assert len(hashes) == 3


@pytest.mark.parametrize("bad", [["--beta1", "1"], ["--beta2", "-0.1"], ["--channels", "2"], ["--image-size", "0"],
                                 ["--data", "lsun"], ["--order", "sideways"], ["--z-dim", "0"], ["--width", "x"],
                                 ["--lr-final", "0"], ["--d-width", "0"]])
def test_bad_options_exit_2(tmp_path, capsys, bad):
    line = _one_line_error(capsys, 2, "--preset", "shapes-dcgan", *bad, "--out", tmp_path / "r")
    assert bad[0] in line or bad[1] in line, line
    assert not (tmp_path / "r").exists()


def test_order_g_first_trains_g_before_d(tmp_path):
    """The CLI's --order g_first run equals a Trainer stepped with order g_first and differs from d_first."""
    out = tmp_path / "g"
    assert _train("--preset", "digits-dcgan", "--width", "8", "--steps", "2", "--order", "g_first",
                  "--out", out) == 0
    saved = _arrays(out)

    def replay(order):
        cfg = read_config(out / "config.toml")
        cfg.train.order = order
        backend.set_default_dtype(cfg.dtype)
        npgan.manual_seed(cfg.seed)
        b = presets.build(cfg)
        for _ in range(2):
            b.trainer.step()
        return {**{f"G/{k}": v for k, v in b.G.state_dict().items()},
                **{f"D/{k}": v for k, v in b.D.state_dict().items()}}

    g_first, d_first = replay("g_first"), replay("d_first")
    for k, v in g_first.items():
        np.testing.assert_array_equal(backend.to_numpy(v), saved[k], err_msg=k)
    assert any(not np.array_equal(backend.to_numpy(d_first[k]), saved[k]) for k in g_first)


# ============================================================================ PyTorch's twin
def _writeup_dcgan(torch, nz=100, ngf=64, ndf=64, nc=3):
    """The write-up's code (the PyTorch DCGAN tutorial): Generator and Discriminator as it defines them."""
    tnn = torch.nn

    class Generator(tnn.Module):
        def __init__(self):
            super().__init__()
            self.main = tnn.Sequential(
                tnn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), tnn.BatchNorm2d(ngf * 8), tnn.ReLU(True),
                tnn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), tnn.BatchNorm2d(ngf * 4), tnn.ReLU(True),
                tnn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), tnn.BatchNorm2d(ngf * 2), tnn.ReLU(True),
                tnn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), tnn.BatchNorm2d(ngf), tnn.ReLU(True),
                tnn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), tnn.Tanh())

        def forward(self, input):
            return self.main(input)

    class Discriminator(tnn.Module):
        def __init__(self):
            super().__init__()
            self.main = tnn.Sequential(
                tnn.Conv2d(nc, ndf, 4, 2, 1, bias=False), tnn.LeakyReLU(0.2, inplace=True),
                tnn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), tnn.BatchNorm2d(ndf * 2),
                tnn.LeakyReLU(0.2, inplace=True),
                tnn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), tnn.BatchNorm2d(ndf * 4),
                tnn.LeakyReLU(0.2, inplace=True),
                tnn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), tnn.BatchNorm2d(ndf * 8),
                tnn.LeakyReLU(0.2, inplace=True),
                tnn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), tnn.Sigmoid())

        def forward(self, input):
            return self.main(input)

    return Generator(), Discriminator()


def test_dcgan64_equals_the_writeups_pytorch_twin():
    """npgan's dcgan64 is the write-up's network: its state_dict loads into the write-up's modules (names shifted
    by the Unflatten that npgan's G starts with), and G then D's logit, in training mode, give the same values and
    gradients as the write-up's modules: each engine within its float32 rounding bound of the float64 twin,
    layer by layer and end to end (tests/error_bounds.py)."""
    torch = torch_or_skip()
    tnn = torch.nn
    G, D = presets.build_models(presets.make_config("dcgan64"))
    tG, tD = _writeup_dcgan(torch)
    for ours, theirs, shift in ((G, tG, 1), (D, tD, 0)):  # our G starts with Unflatten (z (B, 100) -> (B, 100, 1, 1))
        sd = {}
        for k, v in ours.state_dict().items():
            i, rest = k.split(".", 1)
            sd[f"main.{int(i) - shift}.{rest}"] = torch.from_numpy(np.array(backend.to_numpy(v)))
        theirs.load_state_dict(sd, strict=True)
    for m in list(tG.modules()) + list(tD.modules()):  # in-place activations would overwrite the recorded inputs
        if hasattr(m, "inplace"):
            m.inplace = False
    # the write-up's modules in npgan's order: Unflatten first, D without its final Sigmoid (the logit), Flatten
    twin = tnn.Sequential(tnn.Sequential(tnn.Unflatten(1, (100, 1, 1)), *tG.main),
                          tnn.Sequential(*tD.main[:-1], tnn.Flatten()))
    ours = nn.Sequential(G, D)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 100)).astype(np.float32)
    w = rng.standard_normal((4, 1)).astype(np.float32)
    runs = error_bounds.check_twins(ours, twin, z, "G then D", grads=True, w=w)
    # the write-up's D ends in a Sigmoid: σ of the two engines' logits a, b differs by at most |a − b|/4 (σ' ≤ 1/4)
    # plus each engine's own error of σ, 12u relative and TINY absolute (tests/error_bounds.py)
    logit, tlogit = runs["npgan"].out, runs["torch"].out
    p = npgan.functional.stable_sigmoid(logit)
    with torch.no_grad():
        tp = tD(twin[0](torch.from_numpy(z))).reshape(-1, 1).numpy()
    u, tiny = error_bounds.U, error_bounds.TINY
    bound = np.abs(logit.astype(np.float64) - tlogit) / 4 + 12 * u * (np.abs(p) + np.abs(tp)) + 2 * tiny
    error_bounds.assert_within(p, tp, bound, "the write-up's D(G(z)) probability")
    assert len(list(G.named_parameters())) == 13 and len(list(D.named_parameters())) == 11


# ============================================================================ npgan download
@pytest.fixture
def server(tmp_path, monkeypatch):
    """A 127.0.0.1 HTTP server with made-up MNIST .gz files and a CIFAR-10 archive; returns (url, requested)."""
    root = tmp_path / "www"
    root.mkdir()
    rng = np.random.default_rng(1)
    for name in data.MNIST_SHA256:
        blob = gzip.compress(rng.integers(0, 256, 100, dtype=np.uint8).tobytes(), mtime=0)
        (root / name).write_bytes(blob)
        monkeypatch.setitem(data.MNIST_SHA256, name, hashlib.sha256(blob).hexdigest())
    arc = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    (root / cifar.CIFAR10_ARCHIVE).write_bytes(arc)
    monkeypatch.setitem(cifar.CIFAR10_SHA256, cifar.CIFAR10_ARCHIVE, hashlib.sha256(arc).hexdigest())
    with serve_directory(root, monkeypatch) as (url, requested):
        monkeypatch.setattr(digits, "MNIST_MIRRORS", (url,))
        cifar_module = sys.modules[cifar.download_cifar10.__module__]
        monkeypatch.setattr(cifar_module, "CIFAR10_URL", url)
        yield root, requested


def test_download_command(tmp_path, server, capsys):
    root, requested = server
    dest = tmp_path / "data"
    assert main(["download", "mnist", str(dest)]) == 0
    assert sorted(os.listdir(dest)) == sorted(data.MNIST_SHA256)
    for name in data.MNIST_SHA256:
        assert (dest / name).read_bytes() == (root / name).read_bytes()
    assert main(["download", "cifar10", str(dest)]) == 0
    name = cifar.CIFAR10_ARCHIVE
    assert (dest / name).read_bytes() == (root / name).read_bytes()
    assert str(dest / name) in capsys.readouterr().out
    n = len(requested)
    assert n == 5 and main(["download", "cifar10", str(dest)]) == 0 and len(requested) == n  # kept, not refetched
    # a file that does not match its checksum: exit 2, one line, nothing kept
    (root / name).write_bytes(b"tampered")
    other = tmp_path / "other"
    assert main(["download", "cifar10", str(other)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("npgan:")]
    assert len(err) == 1 and "checksum" in err[0] and os.listdir(other) == []


def test_mnist_not_found_names_the_download_command(tmp_path, capsys):
    line = _one_line_error(capsys, 2, "--preset", "mnist-dcgan", "--data-dir", tmp_path, "--out", tmp_path / "r")
    assert "npgan download mnist DIR" in line
