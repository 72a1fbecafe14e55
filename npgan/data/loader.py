"""Minibatches: in-memory data served one epoch at a time (:class:`ArrayLoader`), a run's real batches as a pure
function of (seed, step) (:class:`EpochBatches`), and the conversion of raw images and labels to Tensors.

Loaders index with a whole permutation slice at a time (no loop over samples) and keep the data on the current
device:

    >>> images, labels = load_digits("train")
    >>> for x, y in ArrayLoader((images, labels), batch_size=64):   # one epoch
    ...     pass
    >>> real = EpochBatches(images.data, batch_size=64, seed=0)     # GAN loop: batch of step k
    >>> x = real(0)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import backend, checks
from ..tensor import Tensor

__all__ = ["ArrayLoader", "EpochBatches", "images_to_tensor", "labels_to_tensor"]


def images_to_tensor(u8: Any, scale: float) -> Tensor:
    """Host array of raw intensities in [0, scale] -> Tensor on the current device in [−1, 1]."""
    dtype = backend.get_default_dtype()
    x = backend.current_xp().asarray(u8, dtype=dtype)
    return Tensor(x * dtype.type(2.0 / scale) - dtype.type(1.0))


def labels_to_tensor(labels: Any) -> Tensor:
    """Host integer labels -> an int64 Tensor on the current device."""
    return Tensor(backend.current_xp().asarray(labels, dtype=backend.int64))


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

    ``data`` may also be a uint8 store with ``.shape`` and ``.batch(indices)`` (:class:`npgan.data.images.UInt8Images`:
    a folder's memory map, CIFAR-10, shapes): then only the rows of each batch become floats (memory O(batch)),
    and the order is the store's ``epoch_order`` for the same seed (what :class:`npgan.data.images.ImageStream` serves).
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
