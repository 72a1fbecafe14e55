"""CIFAR-10, binary version: reading the batch files or the archive (checked by SHA-256), and downloading it.

* :func:`read_cifar10` reads ``data_batch_1..5.bin`` / ``test_batch.bin`` or ``cifar-10-binary.tar.gz`` (never the
  pickled Python version) into host uint8 arrays; :func:`load_cifar10` gives Tensors, :func:`cifar10_images` a
  :class:`npgan.data.images.UInt8Images` served at any square size;
* :func:`download_cifar10` fetches the archive and verifies it, as :func:`npgan.data.digits.download_mnist` does.

Bad input raises :class:`npgan.data.images.ImageDataError` (a ValueError: the CLI exits 2); nothing found,
:class:`CIFAR10NotFoundError` (a FileNotFoundError).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Mapping, Sequence
from typing import Any

from .. import backend
from ..files import sha256_file
from ..tensor import Tensor
from .download import download_file
from .images import ImageDataError, UInt8Images
from .loader import images_to_tensor, labels_to_tensor

__all__ = ["CIFAR10_FILES", "CIFAR10_ARCHIVE", "CIFAR10_SHA256", "CIFAR10_URL", "CIFAR10_CLASSES",
           "CIFAR10NotFoundError", "read_cifar10", "load_cifar10", "cifar10_images", "download_cifar10"]

CIFAR10_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: SHA-256 of the official binary archive (170,052,171 bytes; MD5 c32a1d4ab5d03f1284b67883e8d87530) and of its
#: six batch files. Sources: the archive's from TensorFlow Datasets' url_checksums/cifar10.txt; the files' from
#: the torchvision port for Ruby (ankane/torchvision-ruby, datasets/cifar10.rb), test_batch.bin's matching an
#: independent listing. Not checked here against a download (no network).
CIFAR10_SHA256 = {
    CIFAR10_ARCHIVE: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    "data_batch_1.bin": "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    "data_batch_2.bin": "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    "data_batch_3.bin": "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    "data_batch_4.bin": "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    "data_batch_5.bin": "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    "test_batch.bin": "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
}

_CIFAR_RECORDS, _CIFAR_RECORD = 10000, 3073  # per file: 10,000 × (1 label byte + 3 × 32 × 32 pixel bytes)
_CIFAR_SUBDIR = "cifar-10-batches-bin"
_CIFAR_PICKLE_HINT = ("npgan reads only CIFAR-10's binary version (cifar-10-binary.tar.gz: data_batch_1..5.bin, "
                      "test_batch.bin), not the pickled Python version (unpickling can run code); get it from "
                      f"{CIFAR10_URL}cifar-10-binary.tar.gz or with npgan.data.cifar.download_cifar10(dir)")


class CIFAR10NotFoundError(FileNotFoundError):
    """No CIFAR-10 binary files or archive in the data directory."""


def _cifar_fill(src: Any, out: Any, name: str, where: str, want: str | None) -> None:
    """Read exactly one batch file from the binary stream ``src`` into ``out`` (10000, 3073), check SHA-256."""
    view = memoryview(out).cast("B")
    got = 0
    while got < len(view):
        k = src.readinto(view[got:])
        if not k:
            break
        got += k
    extra = len(src.read(1)) if got == len(view) else 0
    if got != len(view) or extra:
        raise ImageDataError(f"CIFAR-10 file {name} in {where}: {'truncated' if not extra else 'trailing data'}: "
                             f"{got}{'+' if extra else ''} bytes, expected {len(view)} ({_CIFAR_RECORDS} records × "
                             f"{_CIFAR_RECORD} bytes)")
    if want is not None:
        digest = hashlib.sha256(view).hexdigest()
        if digest != want.lower():
            raise ImageDataError(f"CIFAR-10 file {name} in {where}: SHA-256 {digest}, expected {want}; "
                                 "the file is damaged or not the official one")


def _checksum_for(checksums: Mapping[str, str] | None, name: str, required: bool) -> str | None:
    if checksums is None:
        return None
    if name not in checksums:
        if required:
            raise ImageDataError(f"read_cifar10: checksums has no SHA-256 for {name}; pass a manifest with it, "
                                 "or checksums=None to check the structure only")
        return None
    return checksums[name]


def read_cifar10(data_dir: str | os.PathLike, split: str = "train",
                 checksums: Mapping[str, str] | None = CIFAR10_SHA256) -> tuple[Any, Any]:
    """CIFAR-10's binary version as host uint8 arrays: images (N, 3, 32, 32) and labels (N,).

    ``data_dir`` holds the batch files (directly or in ``cifar-10-batches-bin/``) or ``cifar-10-binary.tar.gz``
    (or is that archive). "train" = data_batch_1..5.bin (N = 50,000), "test" = test_batch.bin (10,000). Each file
    must be exactly 10,000 records of 1 label byte (0..9) + 3,072 pixel bytes (R, G, B planes of 32×32, row-major).
    The archive is read member by member with ``tarfile`` (nothing is extracted to disk; only regular files named
    ``cifar-10-batches-bin/<name>`` are read).

    checksums: {file name: SHA-256 hex}. The default :data:`CIFAR10_SHA256` is the official manifest: every batch
    file read, and the archive when it is read, must match. Pass your own manifest for other copies, or None to
    check the structure only (sizes and labels). The pickled Python version (``data_batch_1`` without ``.bin``,
    ``cifar-10-batches-py/``, ``cifar-10-python.tar.gz``) is refused with a line naming the binary version.
    Errors: :class:`CIFAR10NotFoundError` (FileNotFoundError) when nothing is found, :class:`ImageDataError`
    (ValueError) for a wrong size, checksum or label.
    """
    np = backend.np
    if split not in CIFAR10_FILES:
        raise ImageDataError(f"read_cifar10: split must be 'train' or 'test', got {split!r}")
    data_dir = os.fspath(data_dir)
    names = CIFAR10_FILES[split]
    buf = np.empty((len(names) * _CIFAR_RECORDS, _CIFAR_RECORD), dtype=np.uint8)
    parts = [buf[i * _CIFAR_RECORDS:(i + 1) * _CIFAR_RECORDS] for i in range(len(names))]
    for sub in ("", _CIFAR_SUBDIR):
        paths = [os.path.join(data_dir, sub, n) for n in names]
        if os.path.isdir(data_dir) and all(os.path.isfile(p) for p in paths):
            for p, n, part in zip(paths, names, parts):
                with open(p, "rb") as f:
                    _cifar_fill(f, part, n, os.path.dirname(p), _checksum_for(checksums, n, True))
            return _cifar_split(buf, data_dir)
    archive = data_dir if os.path.isfile(data_dir) else os.path.join(data_dir, CIFAR10_ARCHIVE)
    if os.path.basename(archive) == "cifar-10-python.tar.gz":
        raise ImageDataError(f"{archive}: {_CIFAR_PICKLE_HINT}")
    if os.path.isfile(archive):
        _read_cifar_archive(archive, names, parts, checksums)
        return _cifar_split(buf, archive)
    pickled = [p for p in ("data_batch_1", "test_batch", "cifar-10-batches-py", "cifar-10-python.tar.gz")
               if os.path.exists(os.path.join(data_dir, p))]
    if pickled:
        raise ImageDataError(f"{os.path.join(data_dir, pickled[0])}: {_CIFAR_PICKLE_HINT}")
    raise CIFAR10NotFoundError(f"CIFAR-10 {split} split: neither {', '.join(names)} nor {CIFAR10_ARCHIVE} found in "
                               f"{data_dir!r}; get it with npgan.data.cifar.download_cifar10(dir)")


def _read_cifar_archive(archive: str, names: Sequence[str], parts: list[Any],
                        checksums: Mapping[str, str] | None) -> None:
    want = _checksum_for(checksums, CIFAR10_ARCHIVE, False)
    if want is None and checksums is not None and not all(n in checksums for n in names):
        _checksum_for(checksums, CIFAR10_ARCHIVE, True)  # neither the archive's nor every member's: refuse
    if want is not None:
        digest = sha256_file(archive)
        if digest != want.lower():
            raise ImageDataError(f"CIFAR-10 archive {archive}: SHA-256 {digest}, expected {want}; the file is "
                                 "damaged, truncated or not the official one")
    try:
        with tarfile.open(archive, "r:gz") as tf:
            members = {m.name: m for m in tf.getmembers()}
            if any(m.startswith("cifar-10-batches-py/") for m in members):
                raise ImageDataError(f"{archive}: {_CIFAR_PICKLE_HINT}")
            for n, part in zip(names, parts):
                m = members.get(f"{_CIFAR_SUBDIR}/{n}")
                if m is None or not m.isfile():
                    raise ImageDataError(f"CIFAR-10 archive {archive}: no regular file {_CIFAR_SUBDIR}/{n} in it")
                f = tf.extractfile(m)
                _cifar_fill(f, part, n, archive, _checksum_for(checksums, n, False))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ImageDataError(f"CIFAR-10 archive {archive}: not a complete .tar.gz ({type(exc).__name__}: {exc})"
                             ) from None


def _cifar_split(buf: Any, where: str) -> tuple[Any, Any]:
    labels = buf[:, 0]
    if int(labels.max()) > 9:
        raise ImageDataError(f"CIFAR-10 in {where}: label {int(labels.max())} outside 0..9 (not CIFAR-10's binary "
                             "format: CIFAR-100's has two label bytes)")
    return buf[:, 1:].reshape(-1, 3, 32, 32), labels.copy()


def load_cifar10(data_dir: str | os.PathLike, split: str = "train",
                 checksums: Mapping[str, str] | None = CIFAR10_SHA256) -> tuple[Tensor, Tensor]:
    """CIFAR-10 as Tensors: images (N, 3, 32, 32) in [−1, 1] (x/127.5 − 1, default dtype, current device) and
    int64 labels (N,); see :func:`read_cifar10` (50,000 float32 images take 614 MB: :func:`cifar10_images`
    keeps them as uint8)."""
    images, labels = read_cifar10(data_dir, split, checksums)
    return images_to_tensor(images, 255.0), labels_to_tensor(labels)


def cifar10_images(data_dir: str | os.PathLike, split: str = "train", image_size: int = 32,
                   checksums: Mapping[str, str] | None = CIFAR10_SHA256, seed: int = 0) -> UInt8Images:
    """CIFAR-10 as :class:`UInt8Images` (uint8 in memory, 154 MB for "train"), served at ``image_size``
    (e.g. 64: Pillow's bilinear resize applied per batch)."""
    images, labels = read_cifar10(data_dir, split, checksums)
    return UInt8Images(images, labels, image_size, seed)


def download_cifar10(data_dir: str | os.PathLike, base_url: str | None = None,
                     checksums: Mapping[str, str] | None = None, timeout: float = 60.0) -> str:
    """Download ``cifar-10-binary.tar.gz`` (170 MB) into ``data_dir``, verify its SHA-256, return its path.

    As :func:`npgan.data.digits.download_mnist`: streamed to a temporary file beside the target, checked, then renamed
    into place (a wrong or interrupted download leaves nothing under its name; a SIGKILLed one's temporary file is
    removed by the next download); a file already there with the right checksum is kept and not fetched again.
    ``base_url`` defaults to :data:`CIFAR10_URL`; any other server needs ``checksums={CIFAR10_ARCHIVE: sha256}``.
    :func:`read_cifar10` reads the archive as it is.
    """
    url_base = CIFAR10_URL if base_url is None else base_url
    if not isinstance(url_base, str) or not url_base.startswith(("http://", "https://")):
        raise ImageDataError(f"download_cifar10: base_url must be an http(s) URL, got {url_base!r}")
    if checksums is None:
        if url_base != CIFAR10_URL:
            raise ImageDataError(f"download_cifar10: base_url {url_base!r} is not the official server; pass "
                                 f"checksums={{{CIFAR10_ARCHIVE!r}: sha256}}")
        checksums = CIFAR10_SHA256
    if CIFAR10_ARCHIVE not in checksums:
        raise ImageDataError(f"download_cifar10: checksums lacks {CIFAR10_ARCHIVE}")
    want = checksums[CIFAR10_ARCHIVE].lower()
    data_dir = os.fspath(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    try:
        return download_file("download_cifar10", data_dir, CIFAR10_ARCHIVE, (url_base,), want, timeout)
    except ValueError as exc:  # every server answered with a wrong file
        raise ImageDataError(str(exc)) from None
