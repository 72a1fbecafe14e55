"""CIFAR-10, binary version (npgan.data.cifar): batch files and archives read back exactly, checksums, refusals,
download.

Every data file is generated here (records of random bytes written into tmp_path); the download is served by a
local HTTP server. Nothing is fetched from the network.
"""

import hashlib
import io
import os
import tarfile

import numpy as np
import pytest
from helpers import serve_directory
from PIL import Image

from npgan.data import cifar
from npgan.data.images import ImageDataError

# the downloads below read from a server on 127.0.0.1: their socket timeout only turns a hang into a failure
HANG_GUARD = 900


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
def cifar_records():
    return _cifar_records(10)


def test_cifar10_binary_files_read_back_exactly(tmp_path, cifar_records):
    recs = [np.roll(cifar_records, 7 * i + 1, axis=0) for i in range(5)]  # five distinct files, cheaply
    d = tmp_path / "cifar" / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    sums = {}
    for name, r in zip(cifar.CIFAR10_FILES["train"], recs):
        (d / name).write_bytes(r.tobytes())
        sums[name] = _sha(r.tobytes())
    x, y = cifar.read_cifar10(tmp_path / "cifar", "train", checksums=sums)
    ex, ey = _expected(recs)
    assert x.shape == (50000, 3, 32, 32) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
    # the official manifest is the default: these files are not the official ones
    with pytest.raises(ImageDataError, match="data_batch_1.bin .*SHA-256 .*expected cee91656"):
        cifar.read_cifar10(tmp_path / "cifar", "train")


def test_cifar10_test_split_tensors_and_resized_batches(tmp_path, cifar_records):
    (tmp_path / "test_batch.bin").write_bytes(cifar_records.tobytes())
    sums = {"test_batch.bin": _sha(cifar_records.tobytes())}
    xt, yt = cifar.load_cifar10(tmp_path, "test", checksums=sums)
    ex, ey = _expected([cifar_records])
    assert xt.shape == (10000, 3, 32, 32) and yt.numpy().dtype == np.int64
    # x/127.5 − 1 in float32: a division (or a product by the rounded 1/127.5) and a subtraction of values ≤ 2,
    # at most 5u·2 = 6e-7 from the float64 value (tests/error_bounds.py); a subset: 30M floats are slow
    np.testing.assert_allclose(xt.numpy()[::50], ex[::50] / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(yt.numpy(), ey)
    ds = cifar.cifar10_images(tmp_path, "test", image_size=64, checksums=sums)
    b = ds.batch(np.arange(6))
    assert b.shape == (6, 3, 64, 64) and len(ds) == 10000
    for i in range(6):  # Pillow's uint8 bilinear resize, up to its fixed-point rounding
        want = np.asarray(Image.fromarray(ex[i].transpose(1, 2, 0)).resize((64, 64), Image.BILINEAR))
        got = np.rint((b[i] + 1) * 127.5).transpose(1, 2, 0)
        assert np.abs(got - want).max() <= 1


def test_cifar10_archive_read_without_extraction(tmp_path, cifar_records):
    data = cifar_records.tobytes()
    arc = _tar(tmp_path / cifar.CIFAR10_ARCHIVE, {"cifar-10-batches-bin/test_batch.bin": data,
                                                    "cifar-10-batches-bin/batches.meta.txt": b"airplane\n"})
    sums = {cifar.CIFAR10_ARCHIVE: _sha(arc.read_bytes())}
    x, y = cifar.read_cifar10(tmp_path, "test", checksums=sums)
    ex, ey = _expected([cifar_records])
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
    assert sorted(os.listdir(tmp_path)) == [cifar.CIFAR10_ARCHIVE]  # nothing extracted
    x2, _ = cifar.read_cifar10(arc, "test", checksums={"test_batch.bin": _sha(data)})  # member checksums
    np.testing.assert_array_equal(x2, ex)
    with pytest.raises(ImageDataError, match="SHA-256 .* expected 0000"):
        cifar.read_cifar10(tmp_path, "test", checksums={cifar.CIFAR10_ARCHIVE: "0" * 64})
    with pytest.raises(ImageDataError, match="no SHA-256 for cifar-10-binary.tar.gz"):
        cifar.read_cifar10(tmp_path, "test", checksums={"other": "0" * 64})
    with pytest.raises(ImageDataError, match="no regular file cifar-10-batches-bin/data_batch_1.bin"):
        cifar.read_cifar10(tmp_path, "train", checksums=None)
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / cifar.CIFAR10_ARCHIVE).write_bytes(arc.read_bytes()[:200000])
    with pytest.raises(ImageDataError, match="not a complete .tar.gz|truncated"):
        cifar.read_cifar10(cut, "test", checksums=None)


def test_cifar10_truncated_wrong_and_pickled_files_are_refused(tmp_path, cifar_records):
    data = cifar_records.tobytes()
    (tmp_path / "test_batch.bin").write_bytes(data[:-3073])
    with pytest.raises(ImageDataError, match=r"truncated: 30726927 bytes, expected 30730000 \(10000 records"):
        cifar.read_cifar10(tmp_path, "test", checksums=None)
    (tmp_path / "test_batch.bin").write_bytes(data + b"x")
    with pytest.raises(ImageDataError, match="trailing data"):
        cifar.read_cifar10(tmp_path, "test", checksums=None)
    (tmp_path / "test_batch.bin").write_bytes(data)
    with pytest.raises(ImageDataError, match="SHA-256"):
        cifar.read_cifar10(tmp_path, "test", checksums={"test_batch.bin": _sha(data[::-1])})
    bad = cifar_records.copy()
    bad[5, 0] = 17
    (tmp_path / "test_batch.bin").write_bytes(bad.tobytes())
    with pytest.raises(ImageDataError, match="label 17 outside 0..9"):
        cifar.read_cifar10(tmp_path, "test", checksums=None)
    py = tmp_path / "py"
    py.mkdir()
    (py / "data_batch_1").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ImageDataError, match="binary version .*cifar-10-binary.tar.gz"):
        cifar.read_cifar10(py, "train")
    (py / "cifar-10-python.tar.gz").write_bytes(b"x")
    with pytest.raises(ImageDataError, match="not the pickled Python version"):
        cifar.read_cifar10(py / "cifar-10-python.tar.gz", "train")
    (tmp_path / "t").mkdir()
    tar_py = _tar(tmp_path / "t" / cifar.CIFAR10_ARCHIVE, {"cifar-10-batches-py/data_batch_1": b"\x80\x04"})
    with pytest.raises(ImageDataError, match="binary version"):
        cifar.read_cifar10(tar_py, "train", checksums=None)
    with pytest.raises(cifar.CIFAR10NotFoundError, match="download_cifar10"):
        cifar.read_cifar10(tmp_path / "t" / "none", "test")
    with pytest.raises(ImageDataError, match="split"):
        cifar.read_cifar10(tmp_path, "all")


@pytest.fixture
def www(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving a made-up CIFAR archive; records the paths requested."""
    root = tmp_path / "www"
    root.mkdir()
    arc = _tar(root / cifar.CIFAR10_ARCHIVE, {"cifar-10-batches-bin/test_batch.bin": _cifar_records(3).tobytes()})
    with serve_directory(root, monkeypatch) as (url, requested):
        yield url, arc.read_bytes(), requested


def test_download_cifar10_fetches_verifies_and_reads(tmp_path, www):
    url, blob, requested = www
    sums = {cifar.CIFAR10_ARCHIVE: _sha(blob)}
    dest = tmp_path / "dl"
    path = cifar.download_cifar10(dest, base_url=url, checksums=sums, timeout=HANG_GUARD)
    assert path == str(dest / cifar.CIFAR10_ARCHIVE) and (dest / cifar.CIFAR10_ARCHIVE).read_bytes() == blob
    assert requested == ["/" + cifar.CIFAR10_ARCHIVE]
    x, _ = cifar.read_cifar10(dest, "test", checksums=sums)
    np.testing.assert_array_equal(x, _expected([_cifar_records(3)])[0])
    cifar.download_cifar10(dest, base_url=url, checksums=sums, timeout=HANG_GUARD)  # valid file kept, not fetched again
    assert len(requested) == 1
    other = tmp_path / "other"
    with pytest.raises(ImageDataError, match="download_cifar10: checksum mismatch"):
        cifar.download_cifar10(other, base_url=url, checksums={cifar.CIFAR10_ARCHIVE: "0" * 64}, timeout=HANG_GUARD)
    assert os.listdir(other) == []
    with pytest.raises(ImageDataError, match="not the official server"):
        cifar.download_cifar10(other, base_url=url)
    with pytest.raises(ImageDataError, match="http"):
        cifar.download_cifar10(other, base_url="ftp://127.0.0.1/", checksums=sums)
    with pytest.raises(OSError, match="could not fetch"):
        cifar.download_cifar10(other, base_url=url + "missing/", checksums=sums, timeout=HANG_GUARD)
    assert os.listdir(other) == []
