"""Handwritten digits: scikit-learn's bundled 8×8 digits and MNIST's IDX files.

Nothing here downloads at import or load time: the digits come from the copy bundled with scikit-learn (imported
lazily); MNIST is read from IDX files the user already has, or fetched once with :func:`download_mnist`.

Images are returned as float tensors of shape (N, 1, H, W) scaled to [−1, 1] (the range of a tanh generator),
labels as int64 tensors of shape (N,).
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Sequence
from typing import Any

from .. import backend
from ..errors import FileKindError
from ..files import open_regular
from ..tensor import Tensor
from .download import download_file
from .loader import images_to_tensor, labels_to_tensor

__all__ = ["load_digits", "load_mnist", "download_mnist", "MNISTNotFoundError", "MNIST_FILES", "MNIST_SHA256",
           "MNIST_MIRRORS"]


# ============================================================================ 8×8 digits (scikit-learn)
_SPLITS = ("train", "test", "all")


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
    return images_to_tensor(images, 16.0), labels_to_tensor(labels)


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


#: an IDX file (or what a .gz decompresses to) larger than this is not MNIST's (47 MB for its training images): a
#: gzip bomb or the wrong file is refused by its size instead of exhausting memory
MAX_IDX_BYTES = 1 << 30


def _read_idx_bytes(path: str) -> bytes:
    """The IDX bytes of ``path`` (decompressed when it ends in .gz), at most :data:`MAX_IDX_BYTES`; a regular file
    only (:func:`npgan.files.open_regular`: a FIFO never blocks)."""
    try:
        with open_regular(path, "MNIST file") as f:
            if not path.endswith(".gz"):
                raw = f.read(MAX_IDX_BYTES + 1)
            else:
                try:
                    with gzip.GzipFile(fileobj=f) as g:
                        raw = g.read(MAX_IDX_BYTES + 1)
                except (OSError, EOFError, zlib.error) as exc:
                    raise ValueError(f"MNIST file {path}: not a complete gzip file ({type(exc).__name__}: {exc}); "
                                     "delete it and download it again") from None
    except FileKindError as exc:
        raise ValueError(str(exc)) from None
    if len(raw) > MAX_IDX_BYTES:
        raise ValueError(f"MNIST file {path}: {'decompresses to' if path.endswith('.gz') else 'is'} more than "
                         f"{MAX_IDX_BYTES >> 20} MiB; MNIST's largest file is 47 MB (is it the right file?)")
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
    return images_to_tensor(images, 255.0), labels_to_tensor(labels)


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
    then renamed into place, so a wrong download, an error, Ctrl-C or SIGTERM
    (``npgan download``) leaves nothing behind; the temporary file of a process
    that was killed outright (SIGKILL) is removed by the next download into
    ``data_dir``. A file already present with the right checksum is kept untouched
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
    return [download_file("download_mnist", data_dir, name, mirrors, checksums[name], timeout) for name in names]


