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

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any

from .. import backend
from ..files import publish
from ..tensor import Tensor
from .download import cache_dir

__all__ = [
    "ImageDataError", "ImageDataWarning", "UInt8Images", "ImageFolder", "ImageStream", "IMAGE_EXTENSIONS",
    "resize_crop_box", "area_downsample",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_CACHE_FORMAT = 1
_CACHE_SUBDIR = ".npgan-cache"


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


_DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, EOFError)


def _decode(path: str, size: int, channels: int, upscale: bool, background: int) -> Any:
    """One file → uint8 (C, size, size): decode, EXIF transpose, mode, Resize + CenterCrop (torchvision's)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
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


def _scan(root: str) -> list[tuple[str, int, int]]:
    """(relative path with '/', size, mtime_ns) of every image file under root, sorted by path."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != _CACHE_SUBDIR]
        for f in files:
            if f.lower().endswith(IMAGE_EXTENSIONS):
                p = os.path.join(d, f)
                st = os.stat(p)
                out.append((os.path.relpath(p, root).replace(os.sep, "/"), st.st_size, st.st_mtime_ns))
    return sorted(out)


def _default_cache_dir(root: str) -> str:
    """``root/.npgan-cache`` when root is writable, else ``cache_dir()/images``."""
    inside = os.path.join(root, _CACHE_SUBDIR)
    if os.access(inside, os.W_OK) if os.path.isdir(inside) else os.access(root, os.W_OK):
        return inside
    return os.path.join(cache_dir(), "images")


class ImageFolder(UInt8Images):
    """Every image under ``root`` (recursive, sorted by relative path), decoded once into a uint8 memory map.

    Args:
        root: directory of .png/.jpg/.jpeg/.bmp/.webp files (any depth; the extension's case is ignored).
        image_size: side of the square images served: shorter side resized to it (Pillow bilinear, antialiased),
            then centre-cropped — torchvision's ``Resize(image_size)`` + ``CenterCrop(image_size)`` on a PIL image.
        channels: 3 (RGB) or 1 (L, ITU-R 601-2 luma).
        cache_dir: where the cache lives; default ``root/.npgan-cache`` when root is writable, else
            ``npgan.cache_dir()/images``.
        upscale: enlarge images smaller than the crop (True) or refuse them with :class:`ImageDataError`.
        background: grey level 0..255 under transparent pixels (RGBA, LA, palette with transparency).
        seed: seed of the epoch order (:meth:`epoch_order`).
        progress: show a tqdm bar while the cache is built.

    The cache ``images-<root hash>-<S>px-<C>ch-<key>.npy`` (uint8 (N, C, S, S), opened read-only with
    ``mmap_mode="r"``) and its ``.json`` (file list, skipped files) are keyed by SHA-256 of the relative names,
    sizes and mtimes of the files, S, C, upscale, background and the cache format. A key that matches reuses it
    without opening an image; any change of a file builds a new one (and removes the older caches of this root,
    size and channels). The build writes temporary files and renames them into place, so an interrupted build
    leaves no cache behind. Undecodable files (corrupt, truncated, not an image) are skipped with one
    :class:`ImageDataWarning` giving their count and the first path, each time the folder is opened.

    Attributes: ``files`` (relative paths of the N images kept), ``skipped`` (relative paths skipped),
    ``cache_path``, ``images`` (the memory map), ``built`` (True when this call decoded the files).
    """

    def __init__(self, root: str | os.PathLike, image_size: int, channels: int = 3,
                 cache_dir: str | os.PathLike | None = None, upscale: bool = True, background: int = 0,
                 seed: int = 0, progress: bool = True) -> None:
        root = os.fspath(root)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ImageDataError(f"ImageFolder: image_size must be a positive integer, got {image_size!r}")
        if channels not in (1, 3):
            raise ImageDataError(f"ImageFolder: channels must be 1 or 3, got {channels!r}")
        if isinstance(background, bool) or not isinstance(background, int) or not 0 <= background <= 255:
            raise ImageDataError(f"ImageFolder: background must be a grey level in 0..255, got {background!r}")
        if not os.path.isdir(root):
            what = "is not a directory" if os.path.exists(root) else "does not exist"
            raise ImageDataError(f"ImageFolder: image directory {root!r} {what}")
        entries = _scan(root)
        if not entries:
            raise ImageDataError(f"ImageFolder: no image files ({'/'.join(IMAGE_EXTENSIONS)}) under {root!r}")
        self.root, self.upscale, self.background = root, bool(upscale), background
        key_src = json.dumps({"format": _CACHE_FORMAT, "files": entries, "size": image_size, "channels": channels,
                              "upscale": self.upscale, "background": background}, sort_keys=True)
        key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
        root_tag = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:8]
        prefix = f"images-{root_tag}-{image_size}px-{channels}ch-"
        cdir = os.fspath(cache_dir) if cache_dir is not None else _default_cache_dir(root)
        self.cache_path = os.path.join(cdir, prefix + key + ".npy")
        meta = self._load_meta(key, len(entries))
        self.built = meta is None
        if meta is None:
            meta = self._build(entries, key, prefix, image_size, channels, progress)
        self.files, self.skipped = meta["files"], meta["skipped"]
        if self.skipped:
            first = meta["first_error"]
            warnings.warn(f"ImageFolder: skipped {len(self.skipped)} of {len(entries)} files under {root!r} that "
                          f"could not be decoded; first: {self.skipped[0]} ({first})", ImageDataWarning,
                          stacklevel=2)
        mm = backend.np.load(self.cache_path, mmap_mode="r")
        super().__init__(mm, None, None, seed)

    def _load_meta(self, key: str, n_files: int) -> dict[str, Any] | None:
        """The cache's metadata when both files are there and agree with ``key``; else None (rebuild)."""
        meta_path = self.cache_path[:-4] + ".json"
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            mm = backend.np.load(self.cache_path, mmap_mode="r")
            ok = (meta.get("key") == key and mm.dtype == backend.np.uint8 and mm.ndim == 4
                  and mm.shape[0] == len(meta["files"]) and len(meta["files"]) + len(meta["skipped"]) == n_files)
            del mm
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return meta if ok else None

    def _build(self, entries: list[tuple[str, int, int]], key: str, prefix: str, size: int, channels: int,
               progress: bool) -> dict[str, Any]:
        from tqdm import tqdm

        np = backend.np
        cdir = os.path.dirname(self.cache_path)
        made_dir = not os.path.isdir(cdir)
        try:
            os.makedirs(cdir, exist_ok=True)
        except OSError as exc:
            raise ImageDataError(f"ImageFolder: cannot create the cache directory {cdir!r} ({exc.strerror}); "
                                 "pass cache_dir= a writable directory") from None
        temps: list[str] = []

        def temp(suffix: str) -> str:
            fd, p = tempfile.mkstemp(prefix=".images.", suffix=suffix, dir=cdir)
            os.close(fd)
            temps.append(p)
            return p

        n = len(entries)
        try:
            tmp = temp(".npy.part")
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, channels, size, size))
            ok = np.zeros(n, dtype=bool)
            skipped, first_error = [], ""
            bar = tqdm(entries, desc=f"decoding images into {os.path.basename(self.cache_path)}", unit="img",
                       disable=not progress, dynamic_ncols=True)
            for i, (rel, _, _) in enumerate(bar):
                try:
                    mm[i] = _decode(os.path.join(self.root, rel), size, channels, self.upscale, self.background)
                    ok[i] = True
                except ImageDataError:
                    raise
                except _DECODE_ERRORS as exc:
                    first_error = first_error or f"{type(exc).__name__}: {exc}"
                    skipped.append(rel)
            bar.close()
            kept = np.flatnonzero(ok)
            if kept.size == 0:
                raise ImageDataError(f"ImageFolder: none of the {n} image files under {self.root!r} could be "
                                     f"decoded; first: {skipped[0]} ({first_error})")
            if skipped:  # compact the good rows into a second file, a chunk at a time
                tmp2 = temp(".npy.part")
                out = np.lib.format.open_memmap(tmp2, mode="w+", dtype=np.uint8,
                                                shape=(kept.size, channels, size, size))
                for s in range(0, kept.size, 256):
                    out[s:s + 256] = mm[kept[s:s + 256]]
                out.flush()
                del out
                tmp = tmp2
            mm.flush()
            del mm
            meta = {"key": key, "format": _CACHE_FORMAT, "root": os.path.realpath(self.root),
                    "files": [entries[i][0] for i in kept], "skipped": skipped, "first_error": first_error}
            tmp_meta = temp(".json.part")
            with open(tmp_meta, "w", encoding="utf-8") as f:
                json.dump(meta, f)
            publish(tmp, self.cache_path)  # the array first: without its .json a cache is never used
            publish(tmp_meta, self.cache_path[:-4] + ".json")
        except BaseException:
            if made_dir:
                for p in temps:
                    if os.path.exists(p):
                        os.remove(p)
                try:
                    os.rmdir(cdir)
                except OSError:
                    pass
            raise
        finally:
            for p in temps:
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
