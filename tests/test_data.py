"""Data sets and loaders: mixtures, digits, MNIST IDX files, the checked download, minibatch iterators."""

import gzip
import hashlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import serve_directory

import npgan
from npgan import data

# the downloads below read from a server on 127.0.0.1: their socket timeout only turns a hang into a failure
HANG_GUARD = 900

# ============================================================================ mixtures


def test_ring8_centers_are_eight_distinct_points_on_the_circle():
    c = data.ring8_centers()
    assert c.shape == (8, 2)
    np.testing.assert_allclose(np.hypot(c[:, 0], c[:, 1]), 1.0, rtol=0, atol=1e-15)
    d = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1)) + np.eye(8) * 10
    # neighbours 2π/8 apart: chord 2 sin(π/8); linspace(0, 2π, 8) would give a zero distance
    np.testing.assert_allclose(d.min(), 2 * math.sin(math.pi / 8), rtol=1e-12)
    np.testing.assert_allclose(c[1], [math.sqrt(0.5), math.sqrt(0.5)], atol=1e-15)
    assert np.allclose(data.ring8_centers(2.0), 2 * c)


def test_grid25_centers():
    c = data.grid25_centers()
    assert c.shape == (25, 2)
    v = (-4.0, -2.0, 0.0, 2.0, 4.0)
    assert {tuple(p) for p in c.tolist()} == {(a, b) for a in v for b in v}


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_mixture_samples_match_their_modes(name):
    sampler, centers, std = data.MIXTURES[name]
    n = 4000
    x = sampler(n)
    assert isinstance(x, npgan.Tensor) and x.shape == (n, 2) and x.dtype == np.float32
    a = x.numpy().astype(np.float64)
    d2 = ((a[:, None] - centers[None]) ** 2).sum(-1)
    near = d2.argmin(1)
    dist = np.sqrt(d2.min(1))
    assert dist.max() < 6 * std  # P(r > 6σ) = e^-18 per sample
    # every mode drawn with probability 1/K: counts within 5 binomial standard deviations
    k = len(centers)
    counts = np.bincount(near, minlength=k)
    sd = math.sqrt(n * (1 / k) * (1 - 1 / k))
    assert np.all(np.abs(counts - n / k) < 5 * sd), counts
    # the offsets are N(0, σ² I): per-axis std and mean
    off = a - centers[near]
    np.testing.assert_allclose(off.std(0), std, rtol=0.08)
    assert np.all(np.abs(off.mean(0)) < 5 * std / math.sqrt(n))


def test_mixture_sampling_is_seeded_and_follows_default_dtype():
    npgan.manual_seed(7)
    a = data.ring8(50).numpy()
    npgan.manual_seed(7)
    b = data.ring8(50).numpy()
    c = data.ring8(50).numpy()
    assert np.array_equal(a, b) and not np.array_equal(b, c)
    npgan.set_default_dtype("float64")
    assert data.grid25(3).dtype == np.float64
    assert data.ring8(0).shape == (0, 2)


def test_mixture_bad_arguments():
    with pytest.raises(ValueError, match="number of samples"):
        data.ring8(-1)
    with pytest.raises(ValueError, match="number of samples"):
        data.grid25(2.5)
    with pytest.raises(ValueError, match="std"):
        data.ring8(3, std=-0.1)


# ============================================================================ digits
def test_load_digits_splits():
    xtr, ytr = data.load_digits("train")
    xte, yte = data.load_digits("test")
    xall, yall = data.load_digits("all")
    assert xtr.shape == (1438, 1, 8, 8) and xte.shape == (359, 1, 8, 8) and xall.shape == (1797, 1, 8, 8)
    assert ytr.shape == (1438,) and ytr.dtype == np.int64 and xtr.dtype == np.float32
    a = xall.numpy()
    assert a.min() == -1.0 and a.max() == 1.0
    # the values are x/8 − 1 of integers 0..16
    np.testing.assert_allclose((a + 1) * 8, np.round((a + 1) * 8), atol=1e-5)  # exact in float32: powers of 2
    # train and test partition "all": same multiset of (image, label) rows
    def rows(x, y):
        return sorted(map(bytes, np.concatenate([x.numpy().reshape(len(y), -1), y.numpy()[:, None]], 1)))
    assert sorted(rows(xtr, ytr) + rows(xte, yte)) == rows(xall, yall)
    assert set(np.unique(yte.numpy())) == set(range(10))
    # deterministic and independent of npgan's seed
    npgan.manual_seed(99)
    xte2, yte2 = data.load_digits("test")
    assert np.array_equal(xte2.numpy(), xte.numpy()) and np.array_equal(yte2.numpy(), yte.numpy())
    assert data.load_digits("test", test_fraction=0.5)[0].shape == (898, 1, 8, 8)


def test_load_digits_bad_arguments():
    with pytest.raises(ValueError, match="split must be one of"):
        data.load_digits("validation")
    with pytest.raises(ValueError, match="test_fraction"):
        data.load_digits("train", test_fraction=1.5)


def test_import_pulls_in_neither_sklearn_nor_matplotlib():
    code = ("import sys, npgan, npgan.data, npgan.eval.metrics; "
            "bad = [m for m in ('sklearn', 'matplotlib') if m in sys.modules]; "
            "print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)  # a hang guard
    assert r.returncode == 0, r.stdout + r.stderr


# ============================================================================ MNIST IDX files
def idx_images(a):
    a = np.asarray(a, dtype=np.uint8)
    return np.array([2051, *a.shape], dtype=">i4").tobytes() + a.tobytes()


def idx_labels(y):
    y = np.asarray(y, dtype=np.uint8)
    return np.array([2049, len(y)], dtype=">i4").tobytes() + y.tobytes()


def fake_mnist(rng, n_train=12, n_test=5):
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        img, lab = data.MNIST_FILES[split]
        out[img] = idx_images(rng.integers(0, 256, (n, 28, 28)))
        out[lab] = idx_labels(rng.integers(0, 10, n))
    return out


def write_files(d, files, gz=()):
    for name, b in files.items():
        if name in gz:
            (d / (name + ".gz")).write_bytes(gzip.compress(b))
        else:
            (d / name).write_bytes(b)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_reads_raw_and_gz(tmp_path, gz):
    files = fake_mnist(np.random.default_rng(0))
    write_files(tmp_path, files, gz=set(files) if gz else ())
    for split, n in (("train", 12), ("test", 5)):
        x, y = data.load_mnist(tmp_path, split)
        img, lab = data.MNIST_FILES[split]
        raw = np.frombuffer(files[img], np.uint8, offset=16).reshape(n, 1, 28, 28)
        assert x.shape == (n, 1, 28, 28) and x.dtype == np.float32
        np.testing.assert_allclose(x.numpy(), raw / 127.5 - 1, rtol=0, atol=1e-6)  # ≤ 3 roundings of |v| ≤ 2: 6e-7
        assert np.array_equal(y.numpy(), np.frombuffer(files[lab], np.uint8, offset=8))
        assert y.dtype == np.int64


def test_load_mnist_prefers_the_raw_file(tmp_path):
    files = fake_mnist(np.random.default_rng(1))
    write_files(tmp_path, files)
    other = fake_mnist(np.random.default_rng(2))
    write_files(tmp_path, other, gz=set(other))
    x, _ = data.load_mnist(tmp_path, "train")
    want = np.frombuffer(files["train-images-idx3-ubyte"], np.uint8, offset=16).reshape(12, 1, 28, 28)
    assert np.array_equal(np.round((x.numpy() + 1) * 127.5), want)


def test_load_mnist_missing_file_names_directory_and_all_files(tmp_path):
    files = fake_mnist(np.random.default_rng(0))
    del files["t10k-labels-idx1-ubyte"]
    write_files(tmp_path, files)
    data.load_mnist(tmp_path, "train")  # the train split is complete
    with pytest.raises(FileNotFoundError) as ei:
        data.load_mnist(tmp_path, "test")
    msg = str(ei.value)
    assert isinstance(ei.value, data.MNISTNotFoundError) and str(tmp_path) in msg
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert name in msg
    assert "t10k-labels-idx1-ubyte (or .gz) not found" in msg


def _corrupt(files, name, new):
    files = dict(files)
    files[name] = new
    return files


@pytest.mark.parametrize("case, pattern", [
    ("images_magic", "magic number 2049, expected 2051"),
    ("labels_magic", "magic number 2051, expected 2049"),
    ("truncated", "expected 9424 .*truncated"),
    ("trailing", "trailing data"),
    ("short_header", "shorter than the 16-byte IDX header"),
    ("zero_dim", "bad dimensions"),
    ("count_mismatch", "holds 12 images but .* holds 11 labels"),
    ("label_range", "label 12 outside 0..9"),
])
def test_load_mnist_rejects_wrong_files(tmp_path, case, pattern):
    rng = np.random.default_rng(3)
    files = fake_mnist(rng)
    img, lab = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
    bad_file = img
    if case == "images_magic":
        files = _corrupt(files, img, np.array([2049, 12], ">i4").tobytes() + files[img][8:])
    elif case == "labels_magic":
        files = _corrupt(files, lab, np.array([2051, 12], ">i4").tobytes() + files[lab][8:])
        bad_file = lab
    elif case == "truncated":
        files = _corrupt(files, img, files[img][:-100])
    elif case == "trailing":
        files = _corrupt(files, img, files[img] + b"\0")
    elif case == "short_header":
        files = _corrupt(files, img, files[img][:10])
    elif case == "zero_dim":
        files = _corrupt(files, img, idx_images(np.zeros((12, 0, 28))))
    elif case == "count_mismatch":
        files = _corrupt(files, lab, idx_labels(rng.integers(0, 10, 11)))
    elif case == "label_range":
        files = _corrupt(files, lab, idx_labels(np.r_[rng.integers(0, 10, 11), 12]))
        bad_file = lab
    write_files(tmp_path, files)
    with pytest.raises(ValueError, match=pattern) as ei:
        data.load_mnist(tmp_path, "train")
    assert bad_file in str(ei.value)


def test_load_mnist_truncated_gzip(tmp_path):
    files = fake_mnist(np.random.default_rng(4))
    write_files(tmp_path, files, gz=set(files))
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: not a complete gzip file"):
        data.load_mnist(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.load_mnist(tmp_path, "all")


# ============================================================================ download_mnist, 127.0.0.1
@pytest.fixture
def idx_server(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving fake gzipped MNIST files; records the paths requested."""
    root = tmp_path / "www"
    root.mkdir()
    files = fake_mnist(np.random.default_rng(5))
    gz = {name + ".gz": gzip.compress(b, mtime=0) for name, b in files.items()}
    for name, b in gz.items():
        (root / name).write_bytes(b)
    sums = {name: hashlib.sha256(b).hexdigest() for name, b in gz.items()}
    with serve_directory(root, monkeypatch) as (url, requested):
        yield url, sums, gz, requested


def test_download_mnist_fetches_verifies_and_loads(tmp_path, idx_server):
    url, sums, gz, requested = idx_server
    dest = tmp_path / "mnist"
    paths = data.download_mnist(dest, base_url=url, checksums=sums, timeout=HANG_GUARD)
    assert sorted(os.path.basename(p) for p in paths) == sorted(gz)
    for name, b in gz.items():
        assert (dest / name).read_bytes() == b
    assert sorted(os.listdir(dest)) == sorted(gz)  # no temporary files left
    x, y = data.load_mnist(dest, "test")
    assert x.shape == (5, 1, 28, 28) and y.shape == (5,)
    # a second call finds four valid files and fetches nothing
    n = len(requested)
    data.download_mnist(dest, base_url=url, checksums=sums, timeout=HANG_GUARD)
    assert len(requested) == n == 4


def test_download_mnist_checksum_mismatch_leaves_nothing(tmp_path, idx_server):
    url, sums, gz, requested = idx_server
    dest = tmp_path / "mnist"
    bad = dict(sums, **{"t10k-images-idx3-ubyte.gz": "0" * 64})
    with pytest.raises(ValueError, match="checksum mismatch for .*t10k-images-idx3-ubyte.gz"):
        data.download_mnist(dest, base_url=url, checksums=bad, timeout=HANG_GUARD)
    left = os.listdir(dest)
    assert "t10k-images-idx3-ubyte.gz" not in left
    assert not [f for f in left if f.endswith(".part")]


def test_download_mnist_keeps_valid_and_replaces_invalid_files(tmp_path, idx_server):
    url, sums, gz, requested = idx_server
    dest = tmp_path / "mnist"
    dest.mkdir()
    good, broken = "train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
    (dest / good).write_bytes(gz[good])
    os.utime(dest / good, (1_000_000, 1_000_000))
    (dest / broken).write_bytes(b"not the file")
    data.download_mnist(dest, base_url=url, checksums=sums, timeout=HANG_GUARD)
    assert os.stat(dest / good).st_mtime == 1_000_000  # untouched
    assert "/" + good not in requested and "/" + broken in requested
    assert (dest / broken).read_bytes() == gz[broken]


def test_download_mnist_argument_checks(tmp_path, idx_server):
    url, sums, _, requested = idx_server
    with pytest.raises(ValueError, match="not a known MNIST mirror; pass checksums"):
        data.download_mnist(tmp_path, base_url=url)
    with pytest.raises(ValueError, match="http"):
        data.download_mnist(tmp_path, base_url="ftp://127.0.0.1/", checksums=sums)
    with pytest.raises(ValueError, match="checksums lacks"):
        data.download_mnist(tmp_path, base_url=url, checksums={"train-images-idx3-ubyte.gz": "0" * 64})
    with pytest.raises(OSError, match="could not fetch"):
        data.download_mnist(tmp_path / "x", base_url=url + "missing/", checksums=sums, timeout=HANG_GUARD)
    assert requested == ["/missing/train-images-idx3-ubyte.gz"]
    assert data.MNIST_SHA256["train-images-idx3-ubyte.gz"].startswith("440fcabf")


# ============================================================================ loaders
def test_array_loader_epoch_covers_every_sample_once():
    x = npgan.tensor(np.arange(103, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32))
    y = np.arange(103)
    loader = data.ArrayLoader((x, y), batch_size=10)
    assert len(loader) == 10
    got_x, got_y = [], []
    for bx, by in loader:
        assert isinstance(bx, npgan.Tensor) and bx.shape == (10, 3) and by.shape == (10,)
        got_x.append(bx.numpy()[:, 0])
        got_y.append(by.numpy())
    gx, gy = np.concatenate(got_x), np.concatenate(got_y)
    assert np.array_equal(gx, gy)  # pairs stay together
    assert len(set(gy.tolist())) == 100 and not np.array_equal(gy, np.arange(100))  # shuffled, no repeats
    full = data.ArrayLoader(x, 10, shuffle=False, drop_last=False)
    assert len(full) == 11
    parts = [b.numpy()[:, 0] for b in full]
    assert [len(p) for p in parts] == [10] * 10 + [3]
    assert np.array_equal(np.concatenate(parts), np.arange(103))


def test_array_loader_is_seeded_and_reshuffles():
    x = np.arange(40.0)[:, None]
    npgan.manual_seed(3)
    a = [b.numpy() for b in data.ArrayLoader(x, 8)]
    npgan.manual_seed(3)
    loader = data.ArrayLoader(x, 8)
    b = [t.numpy() for t in loader]
    c = [t.numpy() for t in loader]
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(b, c))


def test_loader_errors():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match=r"batch_size 6 is larger than the data set \(5 samples\)"):
        data.ArrayLoader(x, 6)
    with pytest.raises(ValueError, match="positive integer"):
        data.ArrayLoader(x, 0)
    with pytest.raises(ValueError, match="different lengths"):
        data.ArrayLoader((x, np.zeros(4)), 2)
    with pytest.raises(TypeError, match="Tensor or array"):
        data.ArrayLoader([[1, 2], [3, 4]], 1)
    with pytest.raises(ValueError, match=r"batch_size 64 is larger than the data set \(5 samples\)"):
        data.EpochBatches(x, 64, seed=0)


def test_epoch_batches_reshuffle_each_epoch_and_are_a_function_of_seed_and_step():
    x = np.arange(20.0)[:, None]
    real = data.EpochBatches(x, 6, seed=4)  # 3 full batches per epoch, 2 samples dropped
    assert real.per_epoch == 3
    epochs = [np.concatenate([real(3 * e + k).numpy()[:, 0] for k in range(3)]) for e in range(4)]
    for e in epochs:
        assert len(set(e.tolist())) == 18  # no sample twice within an epoch
    assert len({tuple(e) for e in epochs}) == 4  # a new order each epoch
    # a fresh source (a resumed run) gives the same batch for a step, whatever npgan's generator did meanwhile
    npgan.manual_seed(123)
    npgan.randn(5)
    other = data.EpochBatches(x, 6, seed=4)
    assert [other(s).numpy().tolist() for s in (7, 2, 11)] == [real(s).numpy().tolist() for s in (7, 2, 11)]
    assert data.EpochBatches(x, 6, seed=5)(0).numpy().tolist() != real(0).numpy().tolist()


def test_load_images():
    x = data.load_images("digits", "test")
    assert x.shape == (359, 1, 8, 8) and x.dtype == npgan.get_default_dtype() and -1 <= x.min() < x.max() <= 1
    with pytest.raises(ValueError, match="--data-dir"):
        data.load_images("mnist", "train")
    with pytest.raises(ValueError, match="unknown image data set 'ring8'"):
        data.load_images("ring8", "train")
