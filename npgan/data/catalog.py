"""The image data sets a run can train on, by name: their own formats and one loader for all of them."""

from __future__ import annotations

import os
from typing import Any

from .. import backend, checks
from .cifar import cifar10_images
from .digits import load_digits, load_mnist
from .images import ImageFolder, UInt8Images
from .shapes import shapes_uint8

__all__ = ["IMAGE_DEFAULTS", "SHAPES_TRAIN", "SHAPES_EVAL_SEED", "image_format", "load_images"]


#: Each image data set's own (channels, image size): what ``RunConfig.channels`` / ``image_size`` = 0 mean.
IMAGE_DEFAULTS = {"digits": (1, 8), "mnist": (1, 28), "cifar10": (3, 32), "shapes": (3, 32), "folder": (3, 64)}
#: The generated shapes data: this many training images (data seed 0) and evaluation images (data seed 1).
SHAPES_TRAIN, SHAPES_EVAL_SEED = 12000, 1


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
    the default dtype, as ever. Otherwise a uint8 store (:class:`npgan.data.images.UInt8Images`, ``shape`` (N, C, S, S),
    ``batch(indices)`` → floats; memory O(batch) in floats): "folder" = :class:`~npgan.data.images.ImageFolder` of
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
    if name == "digits":
        images, _ = load_digits(split=split)
    elif name == "mnist":
        images, _ = load_mnist(data_dir, split=split)
        if not native:  # back to the file's uint8 exactly (v/127.5 − 1 in float32 is within 1e-5 of it)
            u8 = backend.np.rint((backend.to_numpy(images.data).astype("float64") + 1.0) * 127.5).astype("uint8")
            return UInt8Images(u8, None, s, seed)
    elif name == "folder":
        return ImageFolder(data_dir, s, c, seed=seed, progress=progress)
    elif name == "cifar10":
        return cifar10_images(data_dir, split, s, seed=seed)
    else:
        u8, labels = shapes_uint8(SHAPES_TRAIN if split == "train" else 2000, s,
                                     0 if split == "train" else SHAPES_EVAL_SEED)
        return UInt8Images(u8, labels, None, seed)
    return backend.asarray(images.data, dtype=backend.get_default_dtype())
