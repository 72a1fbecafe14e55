"""Colour image data (npgan.images): image folders and their cache, CIFAR-10 binary files, shapes, colour metrics.

Every image and data file is generated here (Pillow writes them into tmp_path); nothing is downloaded.
"""

import functools
import hashlib
import http.server
import io
import os
import tarfile
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

import npgan
from npgan import images
from npgan.images import ImageDataError, ImageDataWarning


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
    np.testing.assert_allclose(x, _u8(ds, [2, 0, 2]) / 127.5 - 1, atol=1e-6)
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


# ============================================================================ CIFAR-10
def _cifar_records(seed, n=10000):
    rng = np.random.default_rng(seed)
    rec = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
    rec[:, 0] = rng.integers(0, 10, n)
    return rec


def _expected(recs):
    r = np.concatenate(recs)
    return r[:, 1:].reshape(-1, 3, 32, 32), r[:, 0]


def _sha(b):
    return hashlib.sha256(b).hexdigest()


def _tar(path, members, level=1):
    with tarfile.open(path, "w:gz", compresslevel=level) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def test_records():
    return _cifar_records(10)


def test_cifar10_binary_files_read_back_exactly(tmp_path, test_records):
    recs = [np.roll(test_records, 7 * i + 1, axis=0) for i in range(5)]  # five distinct files, cheaply
    d = tmp_path / "cifar" / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    sums = {}
    for name, r in zip(images.CIFAR10_FILES["train"], recs):
        (d / name).write_bytes(r.tobytes())
        sums[name] = _sha(r.tobytes())
    x, y = images.read_cifar10(tmp_path / "cifar", "train", checksums=sums)
    ex, ey = _expected(recs)
    assert x.shape == (50000, 3, 32, 32) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
    # the official manifest is the default: these files are not the official ones
    with pytest.raises(ImageDataError, match="data_batch_1.bin .*SHA-256 .*expected cee91656"):
        images.read_cifar10(tmp_path / "cifar", "train")


def test_cifar10_test_split_tensors_and_resized_batches(tmp_path, test_records):
    (tmp_path / "test_batch.bin").write_bytes(test_records.tobytes())
    sums = {"test_batch.bin": _sha(test_records.tobytes())}
    xt, yt = images.load_cifar10(tmp_path, "test", checksums=sums)
    ex, ey = _expected([test_records])
    assert xt.shape == (10000, 3, 32, 32) and yt.numpy().dtype == np.int64
    np.testing.assert_allclose(xt.numpy()[::50], ex[::50] / 127.5 - 1, atol=1e-6)  # a subset: 30M floats are slow
    np.testing.assert_array_equal(yt.numpy(), ey)
    ds = images.cifar10_images(tmp_path, "test", image_size=64, checksums=sums)
    b = ds.batch(np.arange(6))
    assert b.shape == (6, 3, 64, 64) and len(ds) == 10000
    for i in range(6):  # Pillow's uint8 bilinear resize, up to its fixed-point rounding
        want = np.asarray(Image.fromarray(ex[i].transpose(1, 2, 0)).resize((64, 64), Image.BILINEAR))
        got = np.rint((b[i] + 1) * 127.5).transpose(1, 2, 0)
        assert np.abs(got - want).max() <= 1


def test_cifar10_archive_read_without_extraction(tmp_path, test_records):
    data = test_records.tobytes()
    arc = _tar(tmp_path / images.CIFAR10_ARCHIVE, {"cifar-10-batches-bin/test_batch.bin": data,
                                                    "cifar-10-batches-bin/batches.meta.txt": b"airplane\n"})
    sums = {images.CIFAR10_ARCHIVE: _sha(arc.read_bytes())}
    x, y = images.read_cifar10(tmp_path, "test", checksums=sums)
    ex, ey = _expected([test_records])
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
    assert sorted(os.listdir(tmp_path)) == [images.CIFAR10_ARCHIVE]  # nothing extracted
    x2, _ = images.read_cifar10(arc, "test", checksums={"test_batch.bin": _sha(data)})  # member checksums
    np.testing.assert_array_equal(x2, ex)
    with pytest.raises(ImageDataError, match="SHA-256 .* expected 0000"):
        images.read_cifar10(tmp_path, "test", checksums={images.CIFAR10_ARCHIVE: "0" * 64})
    with pytest.raises(ImageDataError, match="no SHA-256 for cifar-10-binary.tar.gz"):
        images.read_cifar10(tmp_path, "test", checksums={"other": "0" * 64})
    with pytest.raises(ImageDataError, match="no regular file cifar-10-batches-bin/data_batch_1.bin"):
        images.read_cifar10(tmp_path, "train", checksums=None)
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / images.CIFAR10_ARCHIVE).write_bytes(arc.read_bytes()[:200000])
    with pytest.raises(ImageDataError, match="not a complete .tar.gz|truncated"):
        images.read_cifar10(cut, "test", checksums=None)


def test_cifar10_truncated_wrong_and_pickled_files_are_refused(tmp_path, test_records):
    data = test_records.tobytes()
    (tmp_path / "test_batch.bin").write_bytes(data[:-3073])
    with pytest.raises(ImageDataError, match=r"truncated: 30726927 bytes, expected 30730000 \(10000 records"):
        images.read_cifar10(tmp_path, "test", checksums=None)
    (tmp_path / "test_batch.bin").write_bytes(data + b"x")
    with pytest.raises(ImageDataError, match="trailing data"):
        images.read_cifar10(tmp_path, "test", checksums=None)
    (tmp_path / "test_batch.bin").write_bytes(data)
    with pytest.raises(ImageDataError, match="SHA-256"):
        images.read_cifar10(tmp_path, "test", checksums={"test_batch.bin": _sha(data[::-1])})
    bad = test_records.copy()
    bad[5, 0] = 17
    (tmp_path / "test_batch.bin").write_bytes(bad.tobytes())
    with pytest.raises(ImageDataError, match="label 17 outside 0..9"):
        images.read_cifar10(tmp_path, "test", checksums=None)
    py = tmp_path / "py"
    py.mkdir()
    (py / "data_batch_1").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ImageDataError, match="binary version .*cifar-10-binary.tar.gz"):
        images.read_cifar10(py, "train")
    (py / "cifar-10-python.tar.gz").write_bytes(b"x")
    with pytest.raises(ImageDataError, match="not the pickled Python version"):
        images.read_cifar10(py / "cifar-10-python.tar.gz", "train")
    (tmp_path / "t").mkdir()
    tar_py = _tar(tmp_path / "t" / images.CIFAR10_ARCHIVE, {"cifar-10-batches-py/data_batch_1": b"\x80\x04"})
    with pytest.raises(ImageDataError, match="binary version"):
        images.read_cifar10(tar_py, "train", checksums=None)
    with pytest.raises(images.CIFAR10NotFoundError, match="download_cifar10"):
        images.read_cifar10(tmp_path / "t" / "none", "test")
    with pytest.raises(ImageDataError, match="split"):
        images.read_cifar10(tmp_path, "all")


@pytest.fixture
def www(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving a made-up CIFAR archive; records the paths requested."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    root = tmp_path / "www"
    root.mkdir()
    arc = _tar(root / images.CIFAR10_ARCHIVE, {"cifar-10-batches-bin/test_batch.bin": _cifar_records(3).tobytes()})
    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/", arc.read_bytes(), requested
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def test_download_cifar10_fetches_verifies_and_reads(tmp_path, www):
    url, blob, requested = www
    sums = {images.CIFAR10_ARCHIVE: _sha(blob)}
    dest = tmp_path / "dl"
    path = images.download_cifar10(dest, base_url=url, checksums=sums, timeout=5)
    assert path == str(dest / images.CIFAR10_ARCHIVE) and (dest / images.CIFAR10_ARCHIVE).read_bytes() == blob
    assert requested == ["/" + images.CIFAR10_ARCHIVE]
    x, _ = images.read_cifar10(dest, "test", checksums=sums)
    np.testing.assert_array_equal(x, _expected([_cifar_records(3)])[0])
    images.download_cifar10(dest, base_url=url, checksums=sums, timeout=5)  # valid file kept, not fetched again
    assert len(requested) == 1
    other = tmp_path / "other"
    with pytest.raises(ImageDataError, match="download_cifar10: checksum mismatch"):
        images.download_cifar10(other, base_url=url, checksums={images.CIFAR10_ARCHIVE: "0" * 64}, timeout=5)
    assert os.listdir(other) == []
    with pytest.raises(ImageDataError, match="not the official server"):
        images.download_cifar10(other, base_url=url)
    with pytest.raises(ImageDataError, match="http"):
        images.download_cifar10(other, base_url="ftp://127.0.0.1/", checksums=sums)
    with pytest.raises(OSError, match="could not fetch"):
        images.download_cifar10(other, base_url=url + "missing/", checksums=sums, timeout=5)
    assert os.listdir(other) == []


# ============================================================================ shapes
def test_shapes_labels_balance_and_determinism():
    x, y = images.shapes_uint8(1205, 32, seed=7)
    assert x.shape == (1205, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    counts = np.bincount(y, minlength=12)
    assert counts.size == 12 and counts.max() - counts.min() <= 1
    x2, y2 = images.shapes_uint8(1205, 32, seed=7)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = images.shapes_uint8(1205, 32, seed=8)
    assert (x3 != x).mean() > 0.5
    p, _ = images.shapes_uint8(50, 64, seed=1, background="plain")
    assert p.shape == (50, 3, 64, 64)
    t, ty = images.shapes(40, 32, seed=2)
    assert t.shape == (40, 3, 32, 32) and float(t.numpy().min()) >= -1 and float(t.numpy().max()) <= 1
    np.testing.assert_allclose(t.numpy(), images.shapes_uint8(40, 32, 2)[0] / 127.5 - 1, atol=1e-6)
    for bad in (dict(n=-1), dict(image_size=30), dict(background="stars")):
        with pytest.raises(ImageDataError):
            images.shapes_uint8(**{"n": 4, **bad})


def test_shapes_colour_and_size_follow_the_label():
    x, y = images.shapes_uint8(600, 32, seed=4, background="plain")
    f = x.astype(float) / 255
    sat = f.max(axis=1) - f.min(axis=1)                  # background grey: saturation 0
    fg = sat > 0.3
    mean_rgb = (f * fg[:, None]).sum(axis=(2, 3)) / fg.sum(axis=(1, 2))[:, None]
    ref = np.asarray(list(images.SHAPE_COLOURS.values()))
    nearest = np.argmin(((mean_rgb[:, None] / mean_rgb.max(1, keepdims=True)[:, None]
                          - ref[None] / ref.max(1)[None, :, None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(nearest, y % 4)
    # squares fill their bounding box, discs π/4 of it, triangles about half
    rows, cols = fg.any(axis=2), fg.any(axis=1)
    fill = fg.sum(axis=(1, 2)) / (rows.sum(1) * cols.sum(1))
    for k, (lo, hi) in enumerate([(0.7, 0.86), (0.9, 1.01), (0.4, 0.65)]):
        v = fill[y // 4 == k]
        assert lo < np.median(v) < hi, (images.SHAPES[k], np.median(v))


def test_shipped_shapes_classifier_accuracy_on_fresh_shapes():
    clf = images.shapes_classifier()
    assert isinstance(clf, images.ShapesClassifier) and clf.meta["test_accuracy"] >= 0.99
    assert os.path.getsize(images.SHAPES_CLASSIFIER_PATH) < 1_000_000
    for size in (32, 64):
        for bg in ("noisy", "plain"):
            x, y = images.shapes(1200, size, seed=98765, background=bg)
            acc = float((clf.predict(x) == y.numpy()).mean())
            assert acc >= 0.99, (size, bg, acc)
    m = npgan.metrics.classifier_metrics(images.shapes(1200, 32, seed=5)[0], clf)
    assert m["classes_covered"] == 12 and m["class_kl"] < 0.01 and m["classifier_score"] > 10
    collapsed = np.repeat(images.shapes(1, 32, seed=5)[0].numpy(), 200, axis=0)
    assert npgan.metrics.classifier_metrics(collapsed, clf)["classes_covered"] == 1
    with pytest.raises(ValueError, match="multiple of 16"):
        clf.predict(np.zeros((2, 3, 28, 28), np.float32))


def test_shapes_features_remove_the_position():
    x = images.shapes(50, 32, seed=3, background="plain")[0].numpy()
    f = images.shapes_features(x)
    assert f.shape == (50, 3, 16, 16)
    moved = np.roll(x, (3, -3), axis=(2, 3))  # down 3, left 3: compare the images whose shape does not wrap
    tinted = (x.max(axis=1) - x.min(axis=1)) > 0.02
    keep = ~tinted[:, -3:, :].any(axis=(1, 2)) & ~tinted[:, :, :3].any(axis=(1, 2))
    assert keep.sum() >= 25
    np.testing.assert_allclose(images.shapes_features(moved[keep]), f[keep], atol=1e-6)
    flat = np.zeros((2, 3, 32, 32), np.float32)  # no saturated pixel: no shift, plain average
    np.testing.assert_array_equal(images.shapes_features(flat), np.zeros((2, 3, 16, 16)))


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
    real = images.shapes(600, 32, seed=11)[0]
    other = images.shapes(600, 64, seed=12)[0]   # the same distribution at another size
    good = images.colour_image_metrics(other, real)
    assert good["precision"] > 0.7 and good["recall"] > 0.7 and good["coverage"] > 0.7
    assert good["channel_mean_gap"] < 0.02 and good["channel_std_gap"] < 0.02
    assert good["n_fake"] == good["n_real"] == 600 and "8x8" in good["feature_space"]
    noise = np.random.default_rng(0).uniform(-1, 1, (600, 3, 32, 32)).astype(np.float32)
    bad = images.colour_image_metrics(noise, real)
    assert bad["precision"] < 0.05 and bad["recall"] < 0.05 and bad["coverage"] < 0.05
    shifted = np.clip(real.numpy() + 0.2, -1, 1)
    assert images.colour_image_metrics(shifted, real)["channel_mean_gap"] > 0.1
    collapsed = np.repeat(real.numpy()[:1], 600, axis=0) + 0.01 * noise
    mc = images.colour_image_metrics(collapsed, real)
    assert mc["recall"] < 0.05 and mc["coverage"] < 0.05
    with pytest.raises(ValueError, match="same C"):
        images.colour_image_metrics(noise[:, :1], real)
