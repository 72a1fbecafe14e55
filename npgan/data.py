"""Data sets and minibatch loaders: 2-D Gaussian mixtures, 8×8 digits, MNIST.

Nothing here downloads at import or load time. The toy mixtures are sampled
from npgan's seeded generator on the current device; the digits come from the
copy bundled with scikit-learn (imported lazily); MNIST is read from IDX files
the user already has, or fetched once with :func:`download_mnist`.

Images are returned as float tensors of shape (N, 1, H, W) scaled to [−1, 1]
(the range of a tanh generator), labels as int64 tensors of shape (N,).

Loaders index with a whole permutation slice at a time (no loop over samples)
and keep the data on the current device:

    >>> images, labels = load_digits("train")
    >>> for x, y in ArrayLoader((images, labels), batch_size=64):   # one epoch
    ...     pass
    >>> real = EpochBatches(images.data, batch_size=64, seed=0)     # GAN loop: batch of step k
    >>> x = real(0)
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from . import backend, checks
from .tensor import Tensor

__all__ = [
    "ring8", "grid25", "ring8_centers", "grid25_centers", "Mixture", "MIXTURES",
    "load_digits", "load_mnist", "download_mnist", "MNISTNotFoundError", "MNIST_FILES", "MNIST_SHA256",
    "MNIST_MIRRORS", "ArrayLoader", "EpochBatches", "load_images", "image_format", "IMAGE_DEFAULTS",
]


# ============================================================================ 2-D Gaussian mixtures
def ring8_centers(radius: float = 1.0) -> Any:
    """The 8 mode centres (r cos 2πi/8, r sin 2πi/8), i = 0..7, as a host float64 array (8, 2).

    The angles are 2πi/8 for i < 8: ``linspace(0, 2π, 8)`` would put the first
    and last mode on top of each other and give 7 distinct modes.
    """
    np = backend.np
    a = 2.0 * math.pi * np.arange(8) / 8.0
    return radius * np.stack([np.cos(a), np.sin(a)], axis=1)


def grid25_centers() -> Any:
    """The 25 mode centres {−4, −2, 0, 2, 4}² as a host float64 array (25, 2), row-major."""
    np = backend.np
    v = np.arange(-4.0, 5.0, 2.0)
    gx, gy = np.meshgrid(v, v, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def sample_mixture(n: int, centers: Any, std: float) -> Tensor:
    """n samples of the equal-weight isotropic Gaussian mixture (1/K) Σ_k N(c_k, std² I).

    Each sample picks a centre uniformly, then adds std·ε, ε ~ N(0, I); both
    draws use npgan's seeded generator on the current device. Returns a
    Tensor (n, d) in the default dtype.
    """
    n, std = checks.integer("number of samples n", n, 0), checks.real("std", std, 0)
    xp, g, dtype = backend.current_xp(), backend.rng(), backend.get_default_dtype()
    c = xp.asarray(backend.to_numpy(centers), dtype=dtype)
    k = g.integers(0, c.shape[0], size=n)
    eps = g.standard_normal((n, c.shape[1]), dtype=dtype)
    return Tensor(c[k] + dtype.type(std) * eps)


def ring8(n: int, std: float = 0.01, radius: float = 1.0) -> Tensor:
    """n samples (n, 2) of 8 Gaussians of std ``std`` on a circle of radius ``radius`` (PacGAN's 2D-ring)."""
    return sample_mixture(n, ring8_centers(radius), std)


def grid25(n: int, std: float = 0.05) -> Tensor:
    """n samples (n, 2) of 25 Gaussians of std ``std`` centred on {−4, −2, 0, 2, 4}² (PacGAN's 2D-grid)."""
    return sample_mixture(n, grid25_centers(), std)


class Mixture(NamedTuple):
    """A 2-D toy data set: ``sampler(n) -> Tensor (n, 2)``, mode ``centers`` (K, 2), the modes' ``std``."""

    sampler: Callable[[int], Tensor]
    centers: Any
    std: float


MIXTURES: dict[str, Mixture] = {
    "ring8": Mixture(ring8, ring8_centers(), 0.01),
    "grid25": Mixture(grid25, grid25_centers(), 0.05),
}


# ============================================================================ 8×8 digits (scikit-learn)
_SPLITS = ("train", "test", "all")


def _images_to_tensor(u8: Any, scale: float) -> Tensor:
    """Host array of raw intensities in [0, scale] -> Tensor on the current device in [−1, 1]."""
    dtype = backend.get_default_dtype()
    x = backend.current_xp().asarray(u8, dtype=dtype)
    return Tensor(x * dtype.type(2.0 / scale) - dtype.type(1.0))


def _labels_to_tensor(labels: Any) -> Tensor:
    return Tensor(backend.current_xp().asarray(labels, dtype=backend.int64))


def load_digits(split: str = "train", test_fraction: float = 0.2) -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, values 0..16).

    Returns ``(images, labels)``: images (N, 1, 8, 8) scaled to [−1, 1] as
    x/8 − 1, in the default dtype on the current device; labels int64 (N,).
    The split is fixed and deterministic (a permutation from a private
    generator with seed 0, independent of ``npgan.manual_seed``): the last
    ``round(test_fraction · 1797)`` permuted images form "test", the rest
    "train"; "all" returns every image in the original order.
    """
    if split not in _SPLITS:
        raise ValueError(f"load_digits: split must be one of {_SPLITS}, got {split!r}")
    if not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
        raise ValueError(f"load_digits: test_fraction must lie strictly between 0 and 1, "
                         f"got {test_fraction!r}")
    from sklearn.datasets import load_digits as _sk_load_digits  # lazy: `import npgan` must not need sklearn

    d = _sk_load_digits()
    np = backend.np
    images = np.asarray(d.images).reshape(-1, 1, 8, 8)
    labels = np.asarray(d.target)
    if split != "all":
        n = len(labels)
        n_test = int(round(test_fraction * n))
        if not 0 < n_test < n:
            raise ValueError(f"load_digits: test_fraction={test_fraction} leaves an empty split "
                             f"of {n} images")
        perm = np.random.default_rng(0).permutation(n)
        idx = perm[n - n_test:] if split == "test" else perm[:n - n_test]
        images, labels = images[idx], labels[idx]
    return _images_to_tensor(images, 16.0), _labels_to_tensor(labels)


# ============================================================================ MNIST (IDX files)
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: SHA-256 of the four original ``.gz`` files (identical on every mirror below).
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

#: Mirrors that serve the original files (the PyTorch and TensorFlow ones), tried in order.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_IDX_IMAGES, _IDX_LABELS = 2051, 2049


class MNISTNotFoundError(FileNotFoundError):
    """An MNIST IDX file is missing from the data directory."""


def _all_mnist_names() -> list[str]:
    return [name for pair in MNIST_FILES.values() for name in pair]


def _find_idx(data_dir: str, name: str) -> str | None:
    for candidate in (name, name + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.isfile(path):
            return path
    return None


def _read_idx_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".gz"):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"MNIST file {path}: not a complete gzip file ({type(exc).__name__}: {exc}); "
                             "delete it and download it again") from None
    return raw


def _parse_idx(path: str, buf: bytes, magic: int) -> Any:
    """The payload of an IDX file as a uint8 array: (n, rows, cols) for images, (n,) for labels.

    Header (big-endian int32): magic, n[, rows, cols]; then exactly n[·rows·cols] bytes.
    """
    np = backend.np
    what = "images" if magic == _IDX_IMAGES else "labels"
    ndim = 3 if magic == _IDX_IMAGES else 1
    header = 4 * (1 + ndim)
    if len(buf) < header:
        raise ValueError(f"MNIST {what} file {path}: {len(buf)} bytes, shorter than the {header}-byte "
                         "IDX header (truncated or not an IDX file)")
    head = np.frombuffer(buf, dtype=">i4", count=1 + ndim)
    if int(head[0]) != magic:
        raise ValueError(f"MNIST {what} file {path}: magic number {int(head[0])}, expected {magic} "
                         f"(IDX {what}: {'2051 for images' if magic == _IDX_IMAGES else '2049 for labels'}); "
                         "wrong file or corrupted")
    dims = tuple(int(d) for d in head[1:])
    if any(d <= 0 for d in dims):
        raise ValueError(f"MNIST {what} file {path}: bad dimensions {dims} in the header (all must be > 0)")
    expected = header + math.prod(dims)
    if len(buf) != expected:
        raise ValueError(f"MNIST {what} file {path}: {len(buf)} bytes, expected {expected} "
                         f"({header}-byte header + {' x '.join(map(str, dims))} bytes of data); "
                         f"{'truncated' if len(buf) < expected else 'trailing data'}")
    return np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist(data_dir: str | os.PathLike, split: str = "train") -> tuple[Tensor, Tensor]:
    """MNIST from the IDX files in ``data_dir`` (each raw or ``.gz``; the raw file wins).

    Returns ``(images, labels)``: images (N, 1, rows, cols) — (60000, 1, 28, 28)
    for "train", (10000, 1, 28, 28) for "test" — scaled to [−1, 1] as
    x/127.5 − 1 in the default dtype on the current device; labels int64 (N,).

    Raises :class:`MNISTNotFoundError` (a FileNotFoundError) naming the directory
    and the four expected files when one is missing, and ValueError naming the
    file for a wrong magic number, bad dimensions, a wrong length, a broken
    gzip stream, labels outside 0..9 or image/label counts that differ.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"load_mnist: split must be 'train' or 'test', got {split!r}")
    data_dir = os.fspath(data_dir)
    img_name, lab_name = MNIST_FILES[split]
    img_path, lab_path = _find_idx(data_dir, img_name), _find_idx(data_dir, lab_name)
    if img_path is None or lab_path is None:
        missing = [n for n, p in ((img_name, img_path), (lab_name, lab_path)) if p is None]
        raise MNISTNotFoundError(
            f"MNIST {split} split: {', '.join(missing)} (or .gz) not found in directory {data_dir!r}. "
            f"Expected the four IDX files {', '.join(_all_mnist_names())} (raw or .gz); "
            "get them with: npgan download mnist DIR")
    images = _parse_idx(img_path, _read_idx_bytes(img_path), _IDX_IMAGES)
    labels = _parse_idx(lab_path, _read_idx_bytes(lab_path), _IDX_LABELS)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST {split} split: {img_path} holds {images.shape[0]} images but {lab_path} "
                         f"holds {labels.shape[0]} labels")
    if labels.size and int(labels.max()) > 9:
        raise ValueError(f"MNIST labels file {lab_path}: label {int(labels.max())} outside 0..9")
    images = images.reshape(images.shape[0], 1, images.shape[1], images.shape[2])
    return _images_to_tensor(images, 255.0), _labels_to_tensor(labels)


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _publish(tmp: str, target: str) -> None:
    """Give a finished temporary file the usual permissions (0666 minus umask), rename it onto target."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, target)


def _fetch_verified(url: str, target: str, sha256: str, timeout: float) -> None:
    """Stream ``url`` to a temporary file beside ``target``, check SHA-256, then rename onto ``target``."""
    import urllib.request

    d = os.path.dirname(target) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".part", dir=d)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        got = h.hexdigest()
        if got != sha256.lower():
            raise ValueError(f"download_mnist: checksum mismatch for {url}: SHA-256 {got}, "
                             f"expected {sha256}; the file was not kept")
        _publish(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def download_mnist(data_dir: str | os.PathLike, base_url: str | Sequence[str] | None = None,
                   checksums: dict[str, str] | None = None, timeout: float = 60.0) -> list[str]:
    """Download the four MNIST ``.gz`` files into ``data_dir`` and verify their SHA-256.

    Args:
        data_dir: target directory (created if needed).
        base_url: one URL prefix or a sequence of mirrors tried in order; the
            default is :data:`MNIST_MIRRORS`. Only http(s) URLs are accepted.
        checksums: {file name: SHA-256 hex} for the four ``.gz`` names. With the
            default mirrors it defaults to :data:`MNIST_SHA256`; with any other
            ``base_url`` it is required (we cannot vouch for other servers).
        timeout: seconds per connection attempt.

    Each file is streamed to a temporary file in ``data_dir``, checked, and only
    then renamed into place, so an interrupted or wrong download leaves nothing
    behind. A file already present with the right checksum is kept untouched
    (not downloaded again); one with a wrong checksum is replaced by a verified
    download. Returns the four paths. Raises ValueError on a checksum mismatch
    (from every mirror) and OSError when no mirror answers.
    """
    if base_url is None:
        mirrors: tuple[str, ...] = MNIST_MIRRORS
        checksums = MNIST_SHA256 if checksums is None else checksums
    else:
        mirrors = (base_url,) if isinstance(base_url, str) else tuple(base_url)
        if checksums is None:
            if not set(mirrors) <= set(MNIST_MIRRORS):
                raise ValueError(f"download_mnist: base_url {base_url!r} is not a known MNIST mirror; pass "
                                 "checksums={file name: sha256} for its four files")
            checksums = MNIST_SHA256
    if not mirrors:
        raise ValueError("download_mnist: base_url is an empty sequence of mirrors")
    for m in mirrors:
        if not isinstance(m, str) or not m.startswith(("http://", "https://")):
            raise ValueError(f"download_mnist: base_url must be http(s) URL(s), got {m!r}")
    names = [n + ".gz" for n in _all_mnist_names()]
    lacking = [n for n in names if n not in checksums]
    if lacking:
        raise ValueError(f"download_mnist: checksums lacks {lacking} (needs SHA-256 of all of {names})")
    data_dir = os.fspath(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    paths = []
    for name in names:
        target = os.path.join(data_dir, name)
        paths.append(target)
        if os.path.isfile(target) and _sha256_file(target) == checksums[name].lower():
            continue  # a valid file is never overwritten (nor fetched again)
        errors = []
        for m in mirrors:
            url = m.rstrip("/") + "/" + name
            try:
                _fetch_verified(url, target, checksums[name], timeout)
                break
            except (OSError, ValueError) as exc:
                if callable(getattr(exc, "close", None)):  # an HTTPError holds its connection until closed
                    exc.close()
                errors.append((url, exc))
        else:
            if all(isinstance(e, ValueError) for _, e in errors):
                raise ValueError("; ".join(str(e) for _, e in errors))
            raise OSError(f"download_mnist: could not fetch {name}: "
                          + "; ".join(f"{u}: {type(e).__name__}: {e}" for u, e in errors))
    return paths


# ============================================================================ minibatch loaders
def _as_columns(data: Any) -> tuple[list[Any], bool]:
    """Data (a Tensor/array or a tuple/list of them) as arrays on the current device, and a 'single' flag."""
    single = not isinstance(data, (tuple, list))
    cols = [data] if single else list(data)
    if not cols:
        raise ValueError("loader: data is an empty tuple")
    out = []
    for i, c in enumerate(cols):
        a = c.data if isinstance(c, Tensor) else c
        if not backend.is_array(a):
            raise TypeError(f"loader: data item {i} is a {type(c).__name__}; expected a Tensor or array")
        if a.ndim == 0:
            raise ValueError(f"loader: data item {i} is a scalar; expected a leading sample axis")
        if backend.device_of(a) != backend.get_device():
            a = backend.asarray(a)
        if a.dtype == backend.float16:
            a = Tensor(a).data  # upcast once, with one PrecisionWarning (not one per batch)
        out.append(a)
    n = out[0].shape[0]
    if any(a.shape[0] != n for a in out):
        raise ValueError(f"loader: data items have different lengths {[a.shape[0] for a in out]}")
    return out, single


def _check_batch(batch_size: Any, n: int) -> int:
    batch_size = checks.integer("batch_size", batch_size, 1)
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the data set ({n} samples)")
    return batch_size


def _permutation(n: int, shuffle: bool) -> Any:
    """A random permutation of 0..n−1 from npgan's generator (argsort of uniforms: numpy and cupy alike)."""
    xp = backend.current_xp()
    if not shuffle:
        return xp.arange(n)
    return xp.argsort(backend.rng().random(n))


class ArrayLoader:
    """Minibatches of in-memory data, one epoch per iteration (a small ``DataLoader``).

    Args:
        data: a Tensor/array with samples on axis 0, or a tuple of them of equal
            length (e.g. ``(images, labels)``); moved once to the current device.
        batch_size: samples per batch (must not exceed the data set size).
        shuffle: draw a fresh permutation from ``npgan.backend.rng()`` each epoch.
        drop_last: skip the final incomplete batch.

    Iterating yields Tensors (or tuples of Tensors), each batch one fancy-index
    of the permuted index slice. ``len(loader)`` is the number of batches.
    """

    def __init__(self, data: Any, batch_size: int, shuffle: bool = True, drop_last: bool = True) -> None:
        self._cols, self._single = _as_columns(data)
        self.n = int(self._cols[0].shape[0])
        self.batch_size = _check_batch(batch_size, self.n)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def _take(self, idx: Any) -> Any:
        batch = tuple(Tensor(c[idx]) for c in self._cols)
        return batch[0] if self._single else batch

    def __iter__(self) -> Iterator[Any]:
        perm = _permutation(self.n, self.shuffle)
        bs = self.batch_size
        for i in range(len(self)):
            yield self._take(perm[i * bs:(i + 1) * bs])


class EpochBatches:
    """Minibatches of an on-device array, reshuffled each epoch; batch ``k`` is a pure function of (seed, k).

    The training runs' source of real images (``EpochBatches(images, batch_size, seed)(step)``). The permutation
    of epoch e comes from a generator seeded with (seed, e), not npgan's main stream, so a resumed run draws
    exactly the batches an uninterrupted one would without saving loader state. Each epoch serves
    ``n // batch_size`` batches (the rest is dropped); a batch is one vectorised gather.

    ``data`` may also be a uint8 store with ``.shape`` and ``.batch(indices)`` (:class:`npgan.images.UInt8Images`:
    a folder's memory map, CIFAR-10, shapes): then only the rows of each batch become floats (memory O(batch)),
    and the order is the store's ``epoch_order`` for the same seed (what :class:`npgan.images.ImageStream` serves).
    """

    def __init__(self, data: Any, batch_size: int, seed: int) -> None:
        self.data, self.seed = data, seed
        self._store = callable(getattr(data, "batch", None)) and not backend.is_array(data)
        self.batch_size = _check_batch(batch_size, data.shape[0])
        self.per_epoch = data.shape[0] // self.batch_size
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> Tensor:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            perm = backend.np.random.default_rng([self.seed, epoch]).permutation(self.data.shape[0])
            self._perm = perm if self._store else backend.asarray(perm, device=backend.device_of(self.data))
            self._epoch = epoch
        idx = self._perm[k * self.batch_size:(k + 1) * self.batch_size]
        return Tensor(self.data.batch(idx) if self._store else self.data[idx])


# ============================================================================ the runs' image data
#: Each image data set's own (channels, image size): what ``RunConfig.channels`` / ``image_size`` = 0 mean.
IMAGE_DEFAULTS = {"digits": (1, 8), "mnist": (1, 28), "cifar10": (3, 32), "shapes": (3, 32), "folder": (3, 64)}
#: The generated shapes data: this many training images (data seed 0) and evaluation images (data seed 1).
SHAPES_TRAIN, SHAPES_EVAL_SEED = 12000, 1


def _images() -> Any:
    """npgan's colour-image module (folders, CIFAR-10, shapes), imported lazily: the one place that names it."""
    from . import images
    return images


def image_format(name: str, image_size: int = 0, channels: int = 0) -> tuple[int, int]:
    """(channels, image size) of data set ``name`` with 0 meaning its own; ValueError for one it cannot give."""
    checks.one_of("image data set", name, IMAGE_DEFAULTS)
    for what, v in (("image size", image_size), ("channels", channels)):
        checks.integer(f"{what} (0: the data set's own)", v, 0)
    c0, s0 = IMAGE_DEFAULTS[name]
    c, s = channels or c0, image_size or s0
    if name == "folder":
        if c not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB) for a folder, got {c}")
    elif c != c0:
        raise ValueError(f"{name} images have {c0} channel{'s' if c0 > 1 else ''}, not {c}")
    if name == "digits" and s != s0:
        raise ValueError(f"digits images are {s0}x{s0}; --image-size {s} is for mnist, cifar10, shapes, folder")
    if name == "shapes" and s not in (16, 32, 64, 128):
        raise ValueError(f"shapes images are made at 16, 32, 64 or 128 pixels, not {s}")
    return c, s


def load_images(name: str, split: str, data_dir: str | os.PathLike = "", image_size: int = 0, channels: int = 0,
                seed: int = 0, progress: bool = True) -> Any:
    """The images of data set ``name``, in [−1, 1], for a run's real batches.

    "digits" and "mnist" (from ``data_dir``) at their own size: one array (N, 1, H, W) on the current device in
    the default dtype, as ever. Otherwise a uint8 store (:class:`npgan.images.UInt8Images`, ``shape`` (N, C, S, S),
    ``batch(indices)`` → floats; memory O(batch) in floats): "folder" = :class:`~npgan.images.ImageFolder` of
    ``data_dir`` (decoded once into its memory-map cache; the split is ignored: a folder is all training data),
    "cifar10" = the binary files in ``data_dir`` (SHA-256 checked), "shapes" = :data:`SHAPES_TRAIN` generated
    images (data seed 0; split "test" gives ``eval`` images of data seed :data:`SHAPES_EVAL_SEED`), "mnist" at
    another size = its uint8 images resized per batch. ``image_size`` / ``channels``: 0 = the data set's own
    (:data:`IMAGE_DEFAULTS`); ``seed`` fixes a store's epoch order. The labels are dropped.
    """
    if name not in IMAGE_DEFAULTS:
        raise ValueError(f"load_images: unknown image data set {name!r}; choose one of {', '.join(IMAGE_DEFAULTS)}")
    c, s = image_format(name, image_size, channels)
    native = s == IMAGE_DEFAULTS[name][1]
    if name in ("mnist", "folder", "cifar10") and not data_dir:
        what = {"mnist": "the four MNIST IDX files; get them with: npgan download mnist DIR",
                "folder": "your images, at any depth",
                "cifar10": "CIFAR-10's binary files; get them with: npgan download cifar10 DIR"}[name]
        raise ValueError(f"data set {name} needs --data-dir DIR (a folder with {what})")
    im = _images() if name in ("folder", "cifar10", "shapes") or not native else None
    if name == "digits":
        images, _ = load_digits(split=split)
    elif name == "mnist":
        images, _ = load_mnist(data_dir, split=split)
        if not native:  # back to the file's uint8 exactly (v/127.5 − 1 in float32 is within 1e-5 of it)
            u8 = backend.np.rint((backend.to_numpy(images.data).astype("float64") + 1.0) * 127.5).astype("uint8")
            return im.UInt8Images(u8, None, s, seed)
    elif name == "folder":
        return im.ImageFolder(data_dir, s, c, seed=seed, progress=progress)
    elif name == "cifar10":
        return im.cifar10_images(data_dir, split, s, seed=seed)
    else:
        u8, labels = im.shapes_uint8(SHAPES_TRAIN if split == "train" else 2000, s,
                                     0 if split == "train" else SHAPES_EVAL_SEED)
        return im.UInt8Images(u8, labels, None, seed)
    return backend.asarray(images.data, dtype=backend.get_default_dtype())
