"""Colour image data (npgan.data.images): image folders and their cache, float batches and streams, colour metrics.

Every image and data file is generated here (Pillow writes them into tmp_path); nothing is downloaded.
"""

import io
import os
import warnings

import numpy as np
import pytest
from PIL import Image

import npgan
import npgan.eval.metrics  # noqa: F401 - npgan.eval.metrics below (import npgan loads no wing)
from npgan.data import images, shapes
from npgan.data.images import ImageDataError, ImageDataWarning


# ============================================================================ helpers
def _save(path, arr, mode=None, fmt=None, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = arr if isinstance(arr, Image.Image) else Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    im.save(path, fmt, **kw)
    return path


def _open(root, size=32, channels=3, **kw):
    return images.ImageFolder(root, size, channels, progress=False, **kw)


def _u8(ds, i):
    """The stored uint8 image i (C, H, W) as an ndarray."""
    return np.asarray(ds.images[i])


@pytest.fixture
def folder(tmp_path):
    """A folder of mixed sizes, modes and formats (nested, one upper-case extension); returns (root, expected)."""
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    exp = {}
    # RGB 48x32 (w x h): short side already 32 -> no resampling, centre crop left = round(16/2) = 8
    rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    _save(root / "a_rgb.png", rgb)
    exp["a_rgb.png"] = rgb[:, 8:40].transpose(2, 0, 1)
    # RGBA 32x32: opaque, half and fully transparent columns over background 0
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :10, 3] = 255
    rgba[:, 10:20, 3] = 128
    rgba[:, 20:, 3] = 0
    _save(root / "b_rgba.png", rgba, "RGBA")
    e = np.zeros((3, 32, 32), dtype=np.uint8)
    e[:, :, :10] = np.array([200, 100, 50])[:, None, None]
    e[:, :, 10:20] = np.rint(np.array([200, 100, 50]) * 128 / 255)[:, None, None]
    exp["b_rgba.png"] = e
    # L 32x32 -> (v, v, v)
    grey = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    _save(root / "sub" / "c_grey.png", grey, "L")
    exp["sub/c_grey.png"] = np.repeat(grey[None], 3, axis=0)
    # P (palette) 32x32 with a transparent entry 0
    idx = (np.arange(32 * 32).reshape(32, 32) % 3).astype(np.uint8)
    p = Image.fromarray(idx, "P")
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    _save(root / "sub" / "d_palette.png", p, transparency=0)
    e = np.zeros((3, 32, 32), dtype=np.uint8)
    e[0][idx == 1] = 255
    e[2][idx == 2] = 255
    exp["sub/d_palette.png"] = e
    # 16-bit grey PNG: v16 -> round(v16 / 257)
    v16 = rng.integers(0, 65536, (32, 32)).astype(np.uint16)
    _save(root / "sub" / "deep" / "e_16bit.png", v16)
    assert Image.open(root / "sub" / "deep" / "e_16bit.png").mode.startswith("I")
    exp["sub/deep/e_16bit.png"] = np.repeat(np.rint(v16 / 257.0).astype(np.uint8)[None], 3, axis=0)
    # JPEG stored 32 wide x 48 tall, top red / bottom blue, EXIF orientation 6 (display = rotated 90° clockwise):
    # shown 48 x 32 with blue on the left, red on the right; cropped at left 8
    j = np.zeros((48, 32, 3), dtype=np.uint8)
    j[:24] = (255, 0, 0)
    j[24:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(root / "f_rotated.JPG", j, fmt="JPEG", exif=exif, quality=95)
    # BMP and WebP, larger and non-square (resized)
    _save(root / "g.bmp", rng.integers(0, 256, (70, 90, 3), dtype=np.uint8))
    _save(root / "h.webp", rng.integers(0, 256, (100, 64, 3), dtype=np.uint8), lossless=True)
    (root / "notes.txt").write_text("not an image")
    return root, exp


# ============================================================================ geometry
def test_resize_crop_box_is_torchvisions_resize_then_center_crop():
    # Resize(s): short side -> s, long side -> int(s * long / short); CenterCrop: int(round((L - s) / 2))
    assert images.resize_crop_box(50, 40, 32) == ((40, 32), (4, 0, 36, 32))     # 32*50/40 = 40
    assert images.resize_crop_box(33, 64, 16) == ((16, 31), (0, 8, 16, 24))     # int(31.03) = 31; round(7.5) = 8
    assert images.resize_crop_box(16, 21, 16) == ((16, 21), (0, 2, 16, 18))     # round(2.5) = 2 (half to even)
    assert images.resize_crop_box(100, 30, 64) == ((213, 64), (74, 0, 138, 64))  # int(213.33); round(74.5) = 74
    assert images.resize_crop_box(64, 64, 64) == ((64, 64), (0, 0, 64, 64))


# ============================================================================ folders
def test_folder_decodes_every_mode_and_format(folder):
    root, exp = folder
    ds = _open(root)
    assert ds.built and len(ds) == 8 and ds.shape == (8, 3, 32, 32)
    assert ds.files == sorted(ds.files) and "notes.txt" not in ds.files and "f_rotated.JPG" in ds.files
    for name, want in exp.items():
        np.testing.assert_array_equal(_u8(ds, ds.files.index(name)), want, err_msg=name)
    rot = _u8(ds, ds.files.index("f_rotated.JPG")).astype(int)
    assert (rot[2, :, :14] > 200).all() and (rot[0, :, :14] < 50).all()      # left: blue (the EXIF rotation)
    assert (rot[0, :, 18:] > 200).all() and (rot[2, :, 18:] < 50).all()      # right: red
    # resized files: Pillow's bilinear resize + the crop box, as torchvision computes it
    for name in ("g.bmp", "h.webp"):
        im = Image.open(root / name).convert("RGB")
        (w, h), box = images.resize_crop_box(*im.size, 32)
        want = np.asarray(im.resize((w, h), Image.BILINEAR).crop(box)).transpose(2, 0, 1)
        np.testing.assert_array_equal(_u8(ds, ds.files.index(name)), want, err_msg=name)


def test_folder_grey_and_background(folder, tmp_path):
    root, exp = folder
    g = _open(root, channels=1, cache_dir=tmp_path / "c1")
    assert g.shape == (8, 1, 32, 32)
    np.testing.assert_array_equal(_u8(g, g.files.index("sub/c_grey.png")), exp["sub/c_grey.png"][:1])
    white = _open(root, background=255, cache_dir=tmp_path / "c2")
    rgba = _u8(white, white.files.index("b_rgba.png"))
    assert (rgba[:, :, 20:] == 255).all() and (rgba[:, 0, 0] == (200, 100, 50)).all()


def test_batches_are_floats_in_range_and_streams_resume(folder):
    ds = _open(folder[0], seed=3)
    x = ds.batch([2, 0, 2])
    assert x.dtype == np.float32 and x.shape == (3, 3, 32, 32)
    np.testing.assert_allclose(x, _u8(ds, [2, 0, 2]) / 127.5 - 1, atol=1e-6)  # ≤ 3 roundings of |v| ≤ 2: 6e-7
    npgan.set_default_dtype("float64")
    assert ds.batch([1]).dtype == np.float64
    npgan.set_default_dtype("float32")
    assert sorted(ds.epoch_order(0)) == list(range(8))
    np.testing.assert_array_equal(ds.epoch_order(1), ds.epoch_order(1))
    assert any((ds.epoch_order(e) != ds.epoch_order(0)).any() for e in (1, 2, 3))
    s = ds.stream(3)
    firsts = [next(s).numpy() for _ in range(5)]  # 2 batches per epoch: crosses two epoch boundaries
    assert s.epoch == 2 and s.step == 5
    np.testing.assert_array_equal(firsts[0], ds.batch(ds.epoch_order(0)[:3]))
    state = s.state_dict()
    more = [next(s).numpy() for _ in range(3)]
    s2 = ds.stream(3)
    s2.load_state_dict(state)
    for a in more:
        np.testing.assert_array_equal(next(s2).numpy(), a)
    with pytest.raises(ImageDataError, match="indices must lie in"):
        ds.batch([8])
    with pytest.raises(ImageDataError, match="batch_size"):
        ds.stream(9)


def test_cache_is_reused_without_decoding_and_rebuilt_when_a_file_changes(folder, monkeypatch):
    root, _ = folder
    ds = _open(root)
    cache = root / ".npgan-cache"
    assert os.path.dirname(ds.cache_path) == str(cache) and len(list(cache.glob("*.npy"))) == 1
    first = np.array(ds.images)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    again = _open(root)
    assert not again.built and opened == [] and again.cache_path == ds.cache_path
    np.testing.assert_array_equal(np.array(again.images), first)
    # a file changes (content and mtime): a new cache, the old one removed
    path = root / "sub" / "c_grey.png"
    _save(path, np.full((32, 32), 7, np.uint8), "L")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = _open(root)
    assert changed.built and changed.cache_path != ds.cache_path and len(opened) == 8
    assert (_u8(changed, changed.files.index("sub/c_grey.png")) == 7).all()
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        os.path.basename(changed.cache_path)[:-4] + e for e in (".npy", ".json"))
    # other size or channels: their own caches, next to it
    assert _open(root, size=16).cache_path != changed.cache_path


def test_interrupted_build_leaves_no_cache(folder, monkeypatch):
    root, _ = folder
    calls = []
    real = images._decode

    def decode(*a):
        calls.append(a[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(images, "_decode", decode)
    with pytest.raises(KeyboardInterrupt):
        _open(root)
    assert not (root / ".npgan-cache").exists()
    monkeypatch.setattr(images, "_decode", real)
    assert _open(root).built and len(_open(root)) == 8


def test_unwritable_root_caches_in_the_user_cache(folder, tmp_path, monkeypatch):
    root, _ = folder
    monkeypatch.setenv("NPGAN_CACHE", str(tmp_path / "usercache"))
    real_access = os.access
    monkeypatch.setattr(images.os, "access", lambda p, m: False if str(p).startswith(str(root)) else real_access(p, m))
    ds = _open(root)
    assert ds.cache_path.startswith(str(tmp_path / "usercache" / "images")) and not (root / ".npgan-cache").exists()


def test_corrupt_and_truncated_images_are_skipped_with_one_warning(tmp_path):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(1)
    for i in range(4):
        _save(root / f"good{i}.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "b_truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "c_garbage.png").write_bytes(b"\x89PNG not really" + bytes(100))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = _open(root)
    msgs = [str(w.message) for w in rec if issubclass(w.category, ImageDataWarning)]
    assert len(msgs) == 1 and "skipped 2 of 6" in msgs[0] and "b_truncated.jpg" in msgs[0]
    assert len(ds) == 4 and ds.files == [f"good{i}.png" for i in range(4)]
    assert ds.skipped == ["b_truncated.jpg", "c_garbage.png"]
    np.testing.assert_array_equal(_u8(ds, 3), np.asarray(
        Image.open(root / "good3.png").resize((32, 32), Image.BILINEAR)).transpose(2, 0, 1))
    with pytest.warns(ImageDataWarning, match="skipped 2 of 6"):  # reused cache: still said once
        assert not _open(root).built


def test_folder_errors_are_one_line_and_write_nothing(tmp_path):
    with pytest.raises(ImageDataError, match="does not exist") as e:
        _open(tmp_path / "nope")
    assert "\n" not in str(e.value) and isinstance(e.value, ValueError)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("x")
    with pytest.raises(ImageDataError, match="no image files"):
        _open(empty)
    small = tmp_path / "small"
    _save(small / "big.png", np.zeros((40, 40, 3), np.uint8))
    _save(small / "tiny.png", np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(ImageDataError, match=r"tiny.png is 30x20, smaller than the 32x32 crop"):
        _open(small, upscale=False)
    assert sorted(os.listdir(small)) == ["big.png", "tiny.png"]
    assert len(_open(small, upscale=True)) == 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"junk")
    with pytest.raises(ImageDataError, match="none of the 1 image files"):
        _open(tmp_path / "bad")
    assert os.listdir(tmp_path / "bad") == ["x.png"]
    for bad in (dict(image_size=0), dict(channels=2), dict(background=300)):
        with pytest.raises(ImageDataError):
            images.ImageFolder(small, **{"image_size": 32, **bad})


# ============================================================================ colour metrics
def test_area_downsample():
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 32, 32))
    np.testing.assert_allclose(images.area_downsample(x, 8), x.reshape(2, 3, 8, 4, 8, 4).mean(axis=(3, 5)))
    y = rng.random((2, 1, 28, 28))  # 28 / 8 = 3.5: fractional edge weights keep the mean
    d = images.area_downsample(y, 8)
    np.testing.assert_allclose(d.mean(axis=(2, 3)), y.mean(axis=(2, 3)), rtol=1e-12)
    np.testing.assert_allclose(d[0, 0, 0, 0], (y[0, 0, :3, :3].sum() + 0.5 * y[0, 0, 3, :3].sum()
                                               + 0.5 * y[0, 0, :3, 3].sum() + 0.25 * y[0, 0, 3, 3]) / 12.25)


def test_colour_image_metrics_sanity():
    real = shapes.shapes(600, 32, seed=11)[0]
    other = shapes.shapes(600, 64, seed=12)[0]   # the same distribution at another size
    good = npgan.eval.metrics.colour_image_metrics(other, real)
    assert good["precision"] > 0.7 and good["recall"] > 0.7 and good["coverage"] > 0.7
    assert good["channel_mean_gap"] < 0.02 and good["channel_std_gap"] < 0.02
    assert good["n_fake"] == good["n_real"] == 600 and "8x8" in good["feature_space"]
    noise = np.random.default_rng(0).uniform(-1, 1, (600, 3, 32, 32)).astype(np.float32)
    bad = npgan.eval.metrics.colour_image_metrics(noise, real)
    assert bad["precision"] < 0.05 and bad["recall"] < 0.05 and bad["coverage"] < 0.05
    shifted = np.clip(real.numpy() + 0.2, -1, 1)
    assert npgan.eval.metrics.colour_image_metrics(shifted, real)["channel_mean_gap"] > 0.1
    collapsed = np.repeat(real.numpy()[:1], 600, axis=0) + 0.01 * noise
    mc = npgan.eval.metrics.colour_image_metrics(collapsed, real)
    assert mc["recall"] < 0.05 and mc["coverage"] < 0.05
    with pytest.raises(ValueError, match="same C"):
        npgan.eval.metrics.colour_image_metrics(noise[:, :1], real)


