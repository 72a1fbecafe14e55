"""Colour images as uint8 stores served in float batches: image folders and resizing.

Every colour data set of npgan (a folder of photos here, CIFAR-10 in :mod:`npgan.data.cifar`, the generated
``shapes`` in :mod:`npgan.data.shapes`) keeps uint8 images (N, C, H, W) behind :class:`UInt8Images`, whose
``batch(indices)`` returns floats in [−1, 1] on the current device (x/127.5 − 1, the range of a tanh generator):
memory O(batch) in floats, whatever the size of the uint8 store (for a folder it is a memory map on disk and may be
larger than RAM).

* :class:`ImageFolder` decodes every .png/.jpg/.jpeg/.bmp/.webp under a directory once with Pillow (EXIF
  orientation applied, any mode converted to RGB or L, 16-bit scaled to 8-bit, alpha composited over a
  background), resizes the shorter side and centre-crops as torchvision's ``Resize(s)`` + ``CenterCrop(s)`` do,
  and keeps the result in a ``.npy`` memory map keyed by the files' names, sizes and mtimes.
* :func:`area_downsample`: average pooling by area to any smaller square size (feature spaces of the metrics).

Bad input raises :class:`ImageDataError` (a ValueError: the CLI exits 2) with one line naming the path and values.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import backend
from ..errors import FileKindError
from ..files import file_kind, open_regular, publish, remove_stale_temps, temp_file
from ..tensor import Tensor
from .download import cache_dir

__all__ = [
    "ImageDataError", "ImageDataWarning", "UInt8Images", "ImageFolder", "ImageStream", "IMAGE_EXTENSIONS",
    "resize_crop_box", "area_downsample", "MAX_IMAGE_PIXELS", "MAX_IMAGE_ASPECT",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_CACHE_FORMAT = 2
_CACHE_SUBDIR = ".npgan-cache"
_PART = ".part"  # the ending of a cache build's temporary files (``.NAME.PID.XXXXXXXXXXXX.part``)


class ImageDataError(ValueError):
    """An image folder or file cannot be used (missing, empty, too small, wrong structure or checksum)."""


class ImageDataWarning(UserWarning):
    """Some image files could not be decoded and were skipped (one warning per data set)."""


# ============================================================================ uint8 store → float batches
def _pil_resample_matrix(n: int, m: int) -> Any:
    """The (m, n) matrix A of Pillow's bilinear (antialiased) resize of a length-n line to length m.

    Pillow resizes separably; resizing the float image whose rows are the unit vectors e_j only in width gives
    row j = A[:, j]. So resizing an n×n image x to m×m is A x Aᵀ (in float: equal to Pillow's uint8 result up
    to its fixed-point rounding, ±1 level).
    """
    from PIL import Image

    np = backend.np
    eye = Image.fromarray(np.eye(n, dtype=np.float32), mode="F")
    return np.asarray(eye.resize((m, n), Image.BILINEAR), dtype=np.float64).T.copy()


class UInt8Images:
    """uint8 images (N, C, H, W) served as float batches in [−1, 1] on the current device.

    Args:
        images: uint8 array-like (N, C, H, W) — an ndarray or a read-only memory map.
        labels: optional int array (N,).
        image_size: serve the images resized to this square size (Pillow's bilinear resize as a matrix product,
            per batch; square sources only); None keeps the stored size.
        seed: seed of :meth:`epoch_order`.

    ``batch(indices)`` reads only those rows of the store: memory is O(batch) in floats.
    """

    def __init__(self, images: Any, labels: Any = None, image_size: int | None = None, seed: int = 0) -> None:
        np = backend.np
        if getattr(images, "ndim", 0) != 4 or getattr(images, "dtype", None) != np.uint8:
            raise ImageDataError(f"UInt8Images: images must be a uint8 array (N, C, H, W), got "
                                 f"{getattr(images, 'dtype', type(images).__name__)} of shape "
                                 f"{getattr(images, 'shape', '?')}")
        self.images, self.labels, self.seed = images, labels, int(seed)
        n, c, h, w = images.shape
        self._resize = None
        if image_size is not None and image_size != h:
            if h != w or not isinstance(image_size, int) or image_size < 1:
                raise ImageDataError(f"UInt8Images: can resize square images only, to a positive int size; "
                                     f"got images {h}x{w} and image_size={image_size!r}")
            self._resize = _pil_resample_matrix(h, image_size)
        s = image_size if self._resize is not None else None
        self.shape = (n, c, s or h, s or w)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def channels(self) -> int:
        return self.shape[1]

    @property
    def image_size(self) -> int:
        return self.shape[2]

    def batch(self, indices: Any) -> Any:
        """Images ``indices`` as a float array (B, C, H, W) in [−1, 1], default dtype, current device."""
        np = backend.np
        idx = np.asarray(backend.to_numpy(indices) if backend.is_array(indices) else indices, dtype=np.int64)
        if idx.ndim != 1:
            raise ImageDataError(f"batch: indices must be 1-D, got shape {idx.shape}")
        n = len(self)
        if idx.size and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise ImageDataError(f"batch: indices must lie in [0, {n}), got values in "
                                 f"[{int(idx.min())}, {int(idx.max())}]")
        u8 = np.asarray(self.images[idx])  # reads B rows of the (possibly memory-mapped) store
        xp, dtype = backend.current_xp(), backend.get_default_dtype()
        x = xp.asarray(u8).astype(dtype)
        if self._resize is not None:
            a = xp.asarray(self._resize, dtype=dtype)
            x = xp.clip(xp.rint(a @ x @ a.T), 0, 255)
        return x * dtype.type(2.0 / 255.0) - dtype.type(1.0)

    def epoch_order(self, epoch: int) -> Any:
        """The sample order of epoch ``epoch``: a permutation from ``default_rng([seed, epoch])`` (host int64)."""
        return backend.np.random.default_rng([self.seed, int(epoch)]).permutation(len(self))

    def stream(self, batch_size: int) -> ImageStream:
        """An endless :class:`ImageStream` of batches in the seeded epoch order."""
        return ImageStream(self, batch_size)


class ImageStream:
    """Endless full batches (Tensors (B, C, H, W)) of a :class:`UInt8Images`, epoch by epoch in its seeded order.

    Epoch e visits ``images.epoch_order(e)`` in ``len // batch_size`` batches (the rest is dropped). The order is
    a function of (seed, epoch), so ``state_dict()`` (epoch, step, pos) restores the position exactly.
    """

    def __init__(self, images: UInt8Images, batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= len(images):
            raise ImageDataError(f"ImageStream: batch_size must be an integer in [1, {len(images)}] (the number "
                                 f"of images), got {batch_size!r}")
        self.images, self.batch_size = images, batch_size
        self.epoch = self.step = self.pos = 0
        self._order = images.epoch_order(0)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.images) // self.batch_size

    def __iter__(self) -> ImageStream:
        return self

    def __next__(self) -> Tensor:
        if self.pos >= self.batches_per_epoch:
            self.epoch, self.pos = self.epoch + 1, 0
            self._order = self.images.epoch_order(self.epoch)
        bs = self.batch_size
        x = self.images.batch(self._order[self.pos * bs:(self.pos + 1) * bs])
        self.pos += 1
        self.step += 1
        return Tensor(x)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step, "pos": self.pos, "seed": self.images.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or not {"epoch", "step", "pos"} <= set(state):
            raise ImageDataError(f"ImageStream.load_state_dict: expected epoch, step and pos, got {state!r:.200}")
        if "seed" in state and int(state["seed"]) != self.images.seed:
            raise ImageDataError(f"ImageStream.load_state_dict: saved with seed {state['seed']}, "
                                 f"these images use seed {self.images.seed}")
        self.epoch, self.step, self.pos = int(state["epoch"]), int(state["step"]), int(state["pos"])
        self._order = self.images.epoch_order(self.epoch)


# ============================================================================ image folders
def resize_crop_box(width: int, height: int, size: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """torchvision's ``Resize(size)`` + ``CenterCrop(size)`` geometry for a width×height image.

    Resize: the shorter side becomes ``size``, the longer ``int(size · long / short)`` (truncated, as
    torchvision's ``_compute_resized_output_size``). CenterCrop: top = ``int(round((H' − size) / 2))``,
    left = ``int(round((W' − size) / 2))`` (Python's round, half to even). Returns ((W', H'), (left, top,
    right, bottom)) — Pillow's size and crop box.
    """
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return (new_w, new_h), (left, top, left + size, top + size)


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _to_mode(im: Any, channels: int, background: int) -> Any:
    """A Pillow image in mode "RGB" (channels 3) or "L" (channels 1).

    16-bit and 32-bit integer grey ("I;16*", "I": what 16-bit PNGs open as) → round(v / 257) clipped to 0..255;
    palette → RGBA when it has a transparent entry, else RGB; any alpha → composited over the grey level
    ``background``; "L" from RGB is ITU-R 601-2 luma (Pillow's convert, torchvision's Grayscale).
    """
    from PIL import Image

    np = backend.np
    if im.mode in _SIXTEEN_BIT:
        v = np.asarray(im).astype(np.float64)
        im = Image.fromarray(np.clip(np.rint(v / 257.0), 0, 255).astype(np.uint8), mode="L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (background,) * 3 + (255,)), rgba)
    return im.convert("RGB" if channels == 3 else "L")


#: Decoding limits (docs/images.md): an image of more pixels than this (width × height, as its header says) is
#: skipped with the undecodable files, before its pixels are decoded (a 389 KB PNG can claim 20000 × 20000, 1.2
#: GB decoded); a JPEG above it is decoded at a reduced scale (Pillow's ``draft``: 1/2, 1/4 or 1/8, done by the
#: decoder) when that brings it under the limit. 2^26 = 8192 × 8192. Raise it with ``ImageFolder(max_pixels=...)``
#: or the environment variable ``NPGAN_MAX_IMAGE_PIXELS``.
MAX_IMAGE_PIXELS = 1 << 26
#: An image whose longer side is more than this many times its shorter side is skipped (a 1,000,000 × 1 PNG would
#: be resized to 64,000,000 × 64 before its centre crop). ``ImageFolder(max_aspect=...)`` or
#: ``NPGAN_MAX_IMAGE_ASPECT`` raise it.
MAX_IMAGE_ASPECT = 64


class _Undecodable(Exception):
    """An image file skipped for a reason npgan states (not a regular file, beyond a decoding limit)."""


def _limit(name: str, given: int | None, env: str, default: int) -> int:
    if given is None:
        raw = os.environ.get(env, "")
        if not raw:
            return default
        try:
            given = int(raw)
        except ValueError:
            raise ImageDataError(f"ImageFolder: ${env} must be a positive integer, got {raw!r}") from None
    if isinstance(given, bool) or not isinstance(given, int) or given < 1:
        raise ImageDataError(f"ImageFolder: {name} must be a positive integer, got {given!r}")
    return given


@contextlib.contextmanager
def _pillow_limit() -> Iterator[None]:
    """While an ImageFolder decodes, npgan's limits (checked on the header's size, before any pixel is decoded)
    stand in for Pillow's own decompression-bomb check (``Image.MAX_IMAGE_PIXELS``: a warning, then an error at
    twice it), so that a file beyond them is skipped with npgan's message and ``max_pixels`` can be raised past
    Pillow's figure. Pillow's setting is put back after each file."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def _decode(path: str, size: int, channels: int, upscale: bool, background: int,
            max_pixels: int = MAX_IMAGE_PIXELS, max_aspect: int = MAX_IMAGE_ASPECT) -> Any:
    """One file → uint8 (C, size, size): decode, EXIF transpose, mode, Resize + CenterCrop (torchvision's).

    Only a regular file is opened (:func:`npgan.files.open_regular`: a FIFO never blocks); its header's size is
    checked against ``max_pixels`` and ``max_aspect`` before any pixel is decoded (:class:`_Undecodable`).
    """
    from PIL import Image, ImageOps

    try:
        f = open_regular(path, "image")
    except FileKindError as exc:
        raise _Undecodable(str(exc).replace(f"image {path} is ", "")) from None
    with f, _pillow_limit(), Image.open(f) as im:
        w, h = im.size
        if min(w, h) < 1:
            raise _Undecodable(f"its header says {w}x{h} pixels")
        if max(w, h) > max_aspect * min(w, h):
            raise _Undecodable(f"{w}x{h} pixels, an aspect ratio beyond {max_aspect}:1 (max_aspect, "
                               "$NPGAN_MAX_IMAGE_ASPECT)")
        if w * h > max_pixels and im.format == "JPEG":
            im.draft("L" if channels == 1 else "RGB", (size, size))  # the decoder scales by 1/2, 1/4 or 1/8
        if im.size[0] * im.size[1] > max_pixels:
            raise _Undecodable(f"{w}x{h} = {w * h:,} pixels, more than the limit of {max_pixels:,} (max_pixels, "
                               "$NPGAN_MAX_IMAGE_PIXELS)")
        im.load()  # the whole image now: a truncated or corrupt file fails here
        im = ImageOps.exif_transpose(im)
    w, h = im.size
    if min(w, h) < size and not upscale:
        raise ImageDataError(f"ImageFolder: image {path} is {w}x{h}, smaller than the {size}x{size} crop "
                             "(upscale=False refuses to enlarge it)")
    im = _to_mode(im, channels, background)
    (nw, nh), box = resize_crop_box(w, h, size)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BILINEAR)  # Pillow's bilinear is antialiased when shrinking
    a = backend.np.asarray(im.crop(box), dtype=backend.np.uint8)
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


def _scan(root: str) -> list[tuple[str, int, int, int, int, str]]:
    """(relative path with '/', size, mtime_ns, ctime_ns, inode, kind) of every image file name under root, sorted
    by path; kind is "" for a regular file (or a symlink to one), else what it is ("a FIFO (named pipe)", "a
    dangling symlink", ...), and such an entry is skipped when the cache is built. ctime and inode are in the cache's
    key so that a file replaced with its old size and mtime kept (``cp -p``, ``rsync -a``) is still seen."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x != _CACHE_SUBDIR)
        for f in files:
            if f.lower().endswith(IMAGE_EXTENSIONS):
                p = os.path.join(d, f)
                rel = os.path.relpath(p, root).replace(os.sep, "/")
                try:
                    st = os.stat(p)
                except FileNotFoundError:
                    out.append((rel, -1, 0, 0, 0, "a dangling symlink" if os.path.islink(p) else "gone"))
                    continue
                except OSError as exc:
                    out.append((rel, -1, 0, 0, 0, f"unreadable ({exc.strerror or exc})"))
                    continue
                kind = "" if stat.S_ISREG(st.st_mode) else file_kind(st.st_mode)
                out.append((rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, kind))
    return sorted(out)


def _default_cache_dir(root: str) -> str:
    """``root/.npgan-cache`` when root is writable (and that name is not a symlink or a file), else
    ``cache_dir()/images``."""
    inside = os.path.join(root, _CACHE_SUBDIR)
    if os.path.islink(inside) or (os.path.lexists(inside) and not os.path.isdir(inside)):
        return os.path.join(cache_dir(), "images")
    if os.access(inside, os.W_OK) if os.path.isdir(inside) else os.access(root, os.W_OK):
        return inside
    return os.path.join(cache_dir(), "images")


# ---------------------------------------------------------------------------- the cache's integrity
#: the pixel block of a cache is checksummed in blocks of this many bytes (SHA-256 of each, recorded at build)
CACHE_BLOCK = 1 << 20
#: a cache of at most this many blocks (64 MiB) is checked whole each time it is opened; a larger one in
#: :data:`CACHE_SAMPLED_BLOCKS` blocks (its first, its last and others drawn at random), and whole on demand
#: (:meth:`ImageFolder.verify`, ``ImageFolder(verify="full")``)
CACHE_FULL_CHECK_BLOCKS = 64
CACHE_SAMPLED_BLOCKS = 32
#: the cache's .json is a file list: larger than this, it is not an npgan cache's
_MAX_META_BYTES = 256 << 20


class _CacheDefect(Exception):
    """Why a cache cannot be used (it is then rebuilt, and one warning says why)."""


def _npy_layout(f: Any, path: str) -> tuple[tuple[int, ...], Any, bool, int]:
    """(shape, dtype, fortran_order, data offset) from a .npy file's header (NumPy's own parser)."""
    np = backend.np
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    except (ValueError, OSError, SyntaxError, TypeError) as exc:
        raise _CacheDefect(f"its .npy header cannot be read ({type(exc).__name__}: {exc})") from None
    return tuple(shape), dtype, bool(fortran), f.tell()


def _block_digests(f: Any, offset: int, nbytes: int, block: int, blocks: Any = None) -> dict[int, str]:
    """SHA-256 (32 hex digits) of the ``block``-byte pixel blocks ``blocks`` (all when None) of the data at
    ``offset``."""
    n = -(-nbytes // block)
    out = {}
    for b in range(n) if blocks is None else blocks:
        f.seek(offset + b * block)
        chunk = f.read(min(block, nbytes - b * block))
        out[b] = hashlib.sha256(chunk).hexdigest()[:32]
    return out


def _check_cache(path: str, meta: dict[str, Any], shape: tuple[int, ...], full: bool) -> None:
    """The cache at ``path`` has exactly the layout its key asks for (``shape``, uint8, C order, the recorded header
    length and file size) and its pixel blocks the recorded SHA-256s (all of them when ``full`` or when the cache
    is small, else a sample); :class:`_CacheDefect` naming what differs."""
    np = backend.np
    try:
        f = open_regular(path, "image cache")
    except (OSError, FileKindError) as exc:
        raise _CacheDefect(str(exc)) from None
    with f:
        got, dtype, fortran, offset = _npy_layout(f, path)
        if got != shape or dtype != np.dtype(np.uint8) or fortran:
            raise _CacheDefect(f"it holds {dtype} {got}{' in Fortran order' if fortran else ''}, its key asks for "
                               f"uint8 {shape} in C order")
        nbytes = int(np.prod(shape))
        size = os.fstat(f.fileno()).st_size
        if offset != meta.get("offset") or size != offset + nbytes:
            raise _CacheDefect(f"its size ({size} bytes, data at {offset}) is not the {offset + nbytes} bytes "
                               f"(data at {meta.get('offset')}) it was built with")
        want, block = meta.get("sha256"), meta.get("block")
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise _CacheDefect(f"its checksum block size {block!r} is not a positive integer")
        n = -(-nbytes // block)
        if not isinstance(want, list) or len(want) != n:
            raise _CacheDefect("its checksums are missing")
        if full or n <= CACHE_FULL_CHECK_BLOCKS:
            blocks = range(n)
        else:
            rng = np.random.default_rng()
            blocks = sorted({0, n - 1, *rng.choice(n, CACHE_SAMPLED_BLOCKS - 2, replace=False).tolist()})
        for b, digest in _block_digests(f, offset, nbytes, block, blocks).items():
            if digest != want[b]:
                raise _CacheDefect(f"its pixel block {b} (bytes {offset + b * block}..) fails its SHA-256 "
                                   "(the cache was altered or damaged)")


def _read_meta(meta_path: str) -> dict[str, Any]:
    """A cache's .json, read safely: a regular file, at most :data:`_MAX_META_BYTES`, JSON of sane depth."""
    try:
        with open_regular(meta_path, "image cache metadata") as f:
            raw = f.read(_MAX_META_BYTES + 1)
    except FileNotFoundError:
        raise
    except (OSError, FileKindError) as exc:
        raise _CacheDefect(str(exc)) from None
    if len(raw) > _MAX_META_BYTES:
        raise _CacheDefect(f"its metadata {meta_path} is larger than {_MAX_META_BYTES >> 20} MiB")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _CacheDefect(f"its metadata {meta_path} is not JSON ({type(exc).__name__})") from None
    except RecursionError:
        raise _CacheDefect(f"its metadata {meta_path} nests too deeply (an npgan cache's is a flat table)") from None
    if not isinstance(meta, dict):
        raise _CacheDefect(f"its metadata {meta_path} is not a JSON table")
    return meta


class ImageFolder(UInt8Images):
    """Every image under ``root`` (recursive, sorted by relative path), decoded once into a uint8 memory map.

    Args:
        root: directory of .png/.jpg/.jpeg/.bmp/.webp files (any depth; the extension's case is ignored).
        image_size: side of the square images served: shorter side resized to it (Pillow bilinear, antialiased),
            then centre-cropped — torchvision's ``Resize(image_size)`` + ``CenterCrop(image_size)`` on a PIL image.
        channels: 3 (RGB) or 1 (L, ITU-R 601-2 luma).
        cache_dir: where the cache lives; default ``root/.npgan-cache`` when root is writable, else
            ``npgan.cache_dir()/images`` (``$NPGAN_CACHE/images``).
        upscale: enlarge images smaller than the crop (True) or refuse them with :class:`ImageDataError`.
        background: grey level 0..255 under transparent pixels (RGBA, LA, palette with transparency).
        seed: seed of the epoch order (:meth:`epoch_order`).
        progress: show a tqdm bar while the cache is built.
        max_pixels, max_aspect: decoding limits (:data:`MAX_IMAGE_PIXELS`, :data:`MAX_IMAGE_ASPECT`; default from
            ``$NPGAN_MAX_IMAGE_PIXELS`` / ``$NPGAN_MAX_IMAGE_ASPECT``, else those): a file beyond them is skipped.
        verify: "auto" (a cache of up to 64 MiB is checked whole when opened, a larger one in 32 sampled blocks) or
            "full" (every block).

    The cache ``images-<root hash>-<S>px-<C>ch-<key>.npy`` (uint8 (N, C, S, S), opened read-only with
    ``mmap_mode="r"``) and its ``.json`` (file list, skipped files, the layout and a SHA-256 of every 1 MiB block
    of pixels) are keyed by SHA-256 of the relative names, sizes, mtimes, ctimes and inodes of the files, S, C,
    upscale, background, the limits and the cache format. A key that matches reuses it without opening an image,
    once its layout (shape, dtype, order, size) matches the key and its blocks their checksums; a cache that fails
    is rebuilt, with one :class:`ImageDataWarning` saying why. Any change of a file builds a new one (and removes
    the older caches of this root, size and channels). The build writes temporary files and renames them into
    place, so an interrupted build leaves no cache behind; the temporary files a killed build left are removed by
    the next build. Undecodable files (corrupt, truncated, not an image, not a regular file, beyond the limits) are
    skipped with one :class:`ImageDataWarning` giving their count and the first path, each time the folder is opened.

    Attributes: ``files`` (relative paths of the N images kept), ``skipped`` (relative paths skipped),
    ``cache_path``, ``images`` (the memory map), ``built`` (True when this call decoded the files).
    """

    def __init__(self, root: str | os.PathLike, image_size: int, channels: int = 3,
                 cache_dir: str | os.PathLike | None = None, upscale: bool = True, background: int = 0,
                 seed: int = 0, progress: bool = True, max_pixels: int | None = None,
                 max_aspect: int | None = None, verify: str = "auto") -> None:
        root = os.fspath(root)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ImageDataError(f"ImageFolder: image_size must be a positive integer, got {image_size!r}")
        if channels not in (1, 3):
            raise ImageDataError(f"ImageFolder: channels must be 1 or 3, got {channels!r}")
        if isinstance(background, bool) or not isinstance(background, int) or not 0 <= background <= 255:
            raise ImageDataError(f"ImageFolder: background must be a grey level in 0..255, got {background!r}")
        if verify not in ("auto", "full"):
            raise ImageDataError(f"ImageFolder: verify must be 'auto' or 'full', got {verify!r}")
        self.max_pixels = _limit("max_pixels", max_pixels, "NPGAN_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS)
        self.max_aspect = _limit("max_aspect", max_aspect, "NPGAN_MAX_IMAGE_ASPECT", MAX_IMAGE_ASPECT)
        if not os.path.isdir(root):
            what = "is not a directory" if os.path.exists(root) else "does not exist"
            raise ImageDataError(f"ImageFolder: image directory {root!r} {what}")
        entries = _scan(root)
        if not entries:
            raise ImageDataError(f"ImageFolder: no image files ({'/'.join(IMAGE_EXTENSIONS)}) under {root!r}")
        self.root, self.upscale, self.background = root, bool(upscale), background
        key_src = json.dumps({"format": _CACHE_FORMAT, "files": entries, "size": image_size, "channels": channels,
                              "upscale": self.upscale, "background": background, "max_pixels": self.max_pixels,
                              "max_aspect": self.max_aspect}, sort_keys=True)
        key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
        root_tag = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:8]
        prefix = f"images-{root_tag}-{image_size}px-{channels}ch-"
        cdir = os.fspath(cache_dir) if cache_dir is not None else _default_cache_dir(root)
        self.cache_path = os.path.join(cdir, prefix + key + ".npy")
        meta = self._load_meta(key, len(entries), (channels, image_size, image_size), verify == "full")
        self.built = meta is None
        if meta is None:
            meta = self._build(entries, key, prefix, image_size, channels, progress)
        self.files, self.skipped = meta["files"], meta["skipped"]
        self._meta = meta
        if self.skipped:
            first = meta["first_error"]
            warnings.warn(f"ImageFolder: skipped {len(self.skipped)} of {len(entries)} files under {root!r} that "
                          f"could not be decoded; first: {self.skipped[0]} ({first})", ImageDataWarning,
                          stacklevel=2)
        mm = backend.np.load(self.cache_path, mmap_mode="r")
        super().__init__(mm, None, None, seed)

    def verify(self) -> None:
        """Check every pixel block of the cache against the SHA-256s recorded when it was built (the sampled
        check on opening reads only some); :class:`ImageDataError` naming the cache and the block that differs."""
        try:
            _check_cache(self.cache_path, self._meta, tuple(self.images.shape), full=True)
        except _CacheDefect as exc:
            raise ImageDataError(f"ImageFolder: cache {self.cache_path}: {exc}; delete it to rebuild it") from None

    def _load_meta(self, key: str, n_files: int, image_shape: tuple[int, int, int],
                   full: bool) -> dict[str, Any] | None:
        """The cache's metadata when both files are there, agree with ``key`` and pass the integrity check
        (:func:`_check_cache`); else None (rebuild; a cache that is there but fails is named in one warning)."""
        meta_path = self.cache_path[:-4] + ".json"
        if not os.path.lexists(meta_path) and not os.path.lexists(self.cache_path):
            return None
        try:
            meta = _read_meta(meta_path)
            files, skipped = meta.get("files"), meta.get("skipped")
            if (meta.get("key") != key or meta.get("format") != _CACHE_FORMAT or not isinstance(files, list)
                    or not isinstance(skipped, list) or len(files) + len(skipped) != n_files
                    or not all(isinstance(x, str) for x in files + skipped)
                    or not isinstance(meta.get("first_error", ""), str)):
                raise _CacheDefect(f"its metadata {meta_path} does not match its name (key, format or file list)")
            _check_cache(self.cache_path, meta, (len(files), *image_shape), full)
        except FileNotFoundError:
            return None
        except _CacheDefect as exc:
            warnings.warn(f"ImageFolder: cache {self.cache_path} is not used: {exc}; rebuilding it", ImageDataWarning,
                          stacklevel=3)
            return None
        return meta

    def _build(self, entries: list[tuple[str, int, int, int, int, str]], key: str, prefix: str, size: int,
               channels: int, progress: bool) -> dict[str, Any]:
        from tqdm import tqdm

        np = backend.np
        cdir = os.path.dirname(self.cache_path)
        made_dir = not os.path.isdir(cdir)
        try:
            os.makedirs(cdir, exist_ok=True)
        except OSError as exc:
            raise ImageDataError(f"ImageFolder: cannot create the cache directory {cdir!r} ({exc.strerror}); set "
                                 "NPGAN_CACHE to a writable directory (ImageFolder: cache_dir=)") from None
        remove_stale_temps(cdir, _PART, require_gone_writer=True)  # what builds killed before us left
        temps: list[tuple[int, Path]] = []

        def temp(target: str) -> str:
            fd, p = temp_file(target, _PART)  # locked until published or removed
            temps.append((fd, p))
            return os.fspath(p)

        n = len(entries)
        try:
            tmp = temp(self.cache_path)
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, channels, size, size))
            ok = np.zeros(n, dtype=bool)
            skipped, first_error = [], ""
            bar = tqdm(entries, desc=f"decoding images into {os.path.basename(self.cache_path)}", unit="img",
                       disable=not progress, dynamic_ncols=True)
            for i, (rel, *_, kind) in enumerate(bar):
                try:
                    if kind:
                        raise _Undecodable(f"{kind}, not a regular file")
                    mm[i] = _decode(os.path.join(self.root, rel), size, channels, self.upscale, self.background,
                                    self.max_pixels, self.max_aspect)
                    ok[i] = True
                except ImageDataError:
                    raise
                except _Undecodable as exc:
                    first_error = first_error or str(exc)
                    skipped.append(rel)
                except Exception as exc:  # noqa: BLE001 - a decoder fed foreign bytes may raise anything
                    first_error = first_error or f"{type(exc).__name__}: {exc}"
                    skipped.append(rel)
            bar.close()
            kept = np.flatnonzero(ok)
            if kept.size == 0:
                raise ImageDataError(f"ImageFolder: none of the {n} image files under {self.root!r} could be "
                                     f"decoded; first: {skipped[0]} ({first_error})")
            if skipped:  # compact the good rows into a second file, a chunk at a time
                tmp2 = temp(self.cache_path)
                out = np.lib.format.open_memmap(tmp2, mode="w+", dtype=np.uint8,
                                                shape=(kept.size, channels, size, size))
                for s in range(0, kept.size, 256):
                    out[s:s + 256] = mm[kept[s:s + 256]]
                out.flush()
                del out
                tmp = tmp2
            mm.flush()
            del mm
            with open(tmp, "rb") as f:  # the layout and the checksums of what is published
                _, _, _, offset = _npy_layout(f, tmp)
                nbytes = kept.size * channels * size * size
                digests = _block_digests(f, offset, nbytes, CACHE_BLOCK)
            meta = {"key": key, "format": _CACHE_FORMAT, "root": os.path.realpath(self.root),
                    "files": [entries[i][0] for i in kept], "skipped": skipped, "first_error": first_error,
                    "offset": offset, "block": CACHE_BLOCK, "sha256": [digests[b] for b in range(len(digests))]}
            meta_path = self.cache_path[:-4] + ".json"
            tmp_meta = temp(meta_path)
            with open(tmp_meta, "w", encoding="utf-8") as f:
                json.dump(meta, f)
            publish(tmp, self.cache_path)  # the array first: without its .json a cache is never used
            publish(tmp_meta, meta_path)
        except BaseException:
            if made_dir:
                for _, p in temps:
                    if os.path.exists(p):
                        os.remove(p)
                try:
                    os.rmdir(cdir)
                except OSError:
                    pass
            raise
        finally:
            for fd, p in temps:
                os.close(fd)
                if os.path.exists(p):
                    os.remove(p)
        for f in os.listdir(cdir):  # older caches of this root, size and channels
            if f.startswith(prefix) and not f.startswith(os.path.basename(self.cache_path)[:-4]):
                try:
                    os.remove(os.path.join(cdir, f))
                except OSError:
                    pass
        return meta


# ============================================================================ resizing by area
def area_downsample(x: Any, size: int) -> Any:
    """Average-pool images (N, C, H, W) to (N, C, size, size) by area: output cell i averages input rows
    [i·H/size, (i+1)·H/size) with fractional edge weights (a plain k×k mean when size divides H). Raw arrays."""
    xp = backend.get_array_module(x)
    n, c, hh, ww = x.shape
    if hh % size == 0 and ww % size == 0:
        return x.reshape(n, c, size, hh // size, size, ww // size).mean(axis=(3, 5))
    return xp.einsum("ih,nchw,jw->ncij", _area_matrix(xp, hh, size, x.dtype), x, _area_matrix(xp, ww, size, x.dtype))


def _area_matrix(xp: Any, n: int, m: int, dtype: Any) -> Any:
    """(m, n) weights: row i is the overlap of [j, j+1) with [i·n/m, (i+1)·n/m), divided by n/m."""
    np = backend.np
    lo, hi = np.arange(m)[:, None] * n / m, (np.arange(m)[:, None] + 1) * n / m
    j = np.arange(n)[None, :]
    w = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None) * m / n
    return xp.asarray(w, dtype=dtype)
