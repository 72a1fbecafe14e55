"""A stand-in GPU array module for machines without a GPU: arrays that behave like CuPy's where it matters.

``installed()`` registers :data:`xp` as npgan's GPU module (``backend.set_gpu_module``), so
``npgan.set_device("gpu")`` works on a CPU and every tensor, parameter, optimizer state and random number
of the "GPU" is a :class:`DeviceArray`: a wrapper around a NumPy array that

* refuses implicit conversion to NumPy (``numpy.asarray``, ``numpy.array``, ``numpy.testing``, ...): its
  ``__array__`` raises, as CuPy's does — only ``xp.asnumpy`` / ``.get()`` (what ``backend.to_numpy`` calls)
  bring data to the host;
* refuses to meet a host ``numpy.ndarray`` in any operation (ufuncs, numpy functions, indexing,
  assignment): CuPy raises ``TypeError: Unsupported type <class 'numpy.ndarray'>`` there;
* returns 0-d device arrays from reductions (CuPy does; NumPy returns host scalars);
* counts its host synchronisations (``float``, ``int``, ``bool``, ``.item()``, ``.tolist()``) in
  :data:`counts` ``["sync"]``, its explicit transfers to the host in ``counts["to_host"]`` and the copies of
  host data to the device (``xp.asarray`` / ``xp.array`` of host data) in ``counts["to_device"]``.

A host round trip in npgan's code therefore fails a CPU test instead of silently costing a GPU run
its speed. The module functions (``xp.exp``, ``xp.zeros``, ``xp.einsum``, ``xp.add.at``, ...) are NumPy's,
unwrapping their inputs and wrapping their outputs; ``xp.asarray`` / ``xp.array`` accept host data (an
explicit host-to-device copy, as in CuPy).
"""

from __future__ import annotations

import contextlib
import numbers
import types
from typing import Any

import numpy as np

import npgan

counts = {"sync": 0, "to_host": 0, "to_device": 0}


class StandinTypeError(TypeError):
    """What CuPy raises on an implicit conversion or a host array inside a device operation."""


def _host_refused(what: str) -> StandinTypeError:
    return StandinTypeError(f"stand-in GPU array: {what} (CuPy raises here: use backend.to_numpy / "
                            "backend.asarray to move data explicitly)")


def _unwrap(obj: Any, allow_host: bool = False) -> Any:
    """DeviceArray -> its NumPy array (recursively in lists, tuples and dicts); a host ndarray is refused."""
    if isinstance(obj, DeviceArray):
        return obj._a
    if isinstance(obj, np.ndarray):
        if allow_host:
            return obj
        raise _host_refused(f"a host numpy.ndarray of shape {obj.shape} met a device array")
    if isinstance(obj, tuple):
        return tuple(_unwrap(o, allow_host) for o in obj)
    if isinstance(obj, list):
        return [_unwrap(o, allow_host) for o in obj]
    if isinstance(obj, dict):
        return {k: _unwrap(v, allow_host) for k, v in obj.items()}
    return obj


def _wrap(obj: Any) -> Any:
    """NumPy arrays and NumPy scalars -> DeviceArray (a 0-d one for a scalar, as CuPy's reductions return)."""
    if isinstance(obj, np.ndarray):
        return DeviceArray(obj)
    if isinstance(obj, np.generic):
        return DeviceArray(np.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


def _call(fn: Any, args: tuple, kwargs: dict, allow_host: bool = False) -> Any:
    return _wrap(fn(*_unwrap(args, allow_host), **_unwrap(kwargs, allow_host)))


class _Device:
    """What ``cupy.cuda.Device`` offers that npgan uses: a context manager with ``id``, ``use``, ``synchronize``."""

    def __init__(self, device_id: int = 0) -> None:
        self.id = int(device_id)

    def __enter__(self) -> _Device:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def use(self) -> None:
        pass

    def synchronize(self) -> None:
        pass


class DeviceArray(np.lib.mixins.NDArrayOperatorsMixin):
    """A NumPy array posing as a device array (see the module docstring)."""

    __slots__ = ("_a",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    # ------------------------------------------------------------------ what CuPy refuses
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise _host_refused(f"implicit conversion of a device array of shape {self._a.shape} to a NumPy array")

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        for x in inputs:
            if not isinstance(x, (DeviceArray, np.ndarray, numbers.Number, np.generic, bool)):
                return NotImplemented  # e.g. a Tensor: let its reflected operator run
        if method == "__call__":
            _check_ufunc_kwargs(ufunc, kwargs)
        out = kwargs.get("out")
        res = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(res)

    def __array_function__(self, func: Any, types: Any, args: tuple, kwargs: dict) -> Any:
        return _call(func, args, kwargs)

    # ------------------------------------------------------------------ host synchronisations (allowed, counted)
    def _sync(self) -> np.ndarray:
        counts["sync"] += 1
        return self._a

    def __float__(self) -> float:
        return float(self._sync())

    def __int__(self) -> int:
        return int(self._sync())

    def __bool__(self) -> bool:
        return bool(self._sync())

    def __index__(self) -> int:
        raise _host_refused("a device array used as a Python integer (__index__)")

    def item(self) -> Any:
        return self._sync().item()

    def tolist(self) -> Any:
        return self._sync().tolist()

    def get(self) -> np.ndarray:
        counts["to_host"] += 1
        return self._a.copy()

    def __repr__(self) -> str:
        return f"standin.DeviceArray({self._a!r})"

    # ------------------------------------------------------------------ array protocol
    @property
    def device(self) -> _Device:
        return _Device(0)

    @property
    def T(self) -> DeviceArray:
        return DeviceArray(self._a.T)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Any:
        return (_wrap(r) for r in self._a)

    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_unwrap(key)] = _unwrap(value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # never __array_interface__, __array_struct__, ...: numpy would read the data
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            return lambda *args, **kwargs: _call(attr, args, kwargs)
        return _wrap(attr) if isinstance(attr, np.ndarray) else attr


_CUPY_UFUNC_KWARGS = {"out", "dtype", "casting"}


def _check_ufunc_kwargs(uf: Any, kwargs: dict) -> None:
    """CuPy's ufuncs take only out, dtype and casting (no ``where=``, ``order=``, ...): refuse the rest."""
    extra = sorted(set(kwargs) - _CUPY_UFUNC_KWARGS)
    if extra:
        raise StandinTypeError(f"stand-in GPU array: {getattr(uf, '__name__', uf)}() got keyword arguments {extra}; "
                               "CuPy's ufuncs accept only out, dtype and casting")


class _Ufunc:
    """A NumPy ufunc on device arrays (``xp.exp(x)``, ``xp.maximum(a, b, out=a)``, ``xp.add.at(g, idx, v)``)."""

    def __init__(self, uf: Any) -> None:
        self._uf = uf

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _check_ufunc_kwargs(self._uf, kwargs)
        out = kwargs.get("out")
        res = _call(self._uf, args, kwargs)
        if out is not None:
            return out if isinstance(out, DeviceArray) else (out[0] if len(out) == 1 else out)
        return res

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._uf, name)
        if callable(attr):
            return lambda *args, **kwargs: _call(attr, args, kwargs)
        return attr


class _Generator:
    """``xp.random.default_rng(seed)``: NumPy's Generator whose draws land on the device."""

    def __init__(self, seed: Any) -> None:
        self._g = np.random.default_rng(seed)
        self.bit_generator = self._g.bit_generator

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._g, name)
        return lambda *args, **kwargs: _call(attr, args, kwargs)


class _Random:
    def default_rng(self, seed: Any = None) -> _Generator:
        return _Generator(seed)


class XORWOW:
    """Like ``cupy.random.XORWOW``: the whole state is a device byte array ``_state`` (here: a draw counter)."""

    def __init__(self, seed: Any = None, *, size: int = -1) -> None:
        self._seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
        self._size = 4 if size < 0 else int(size)
        self._state = DeviceArray(np.zeros(8 * self._size, dtype=np.int8))
        self._state._a[8:16].view(np.uint64)[0] = self._seed  # as cuRAND's, the state array holds everything


class CupyLikeGenerator:
    """Like ``cupy.random.Generator``: draws depend only on the bit generator's ``_state`` (seed and counter)."""

    def __init__(self, bit_generator: XORWOW) -> None:
        self.bit_generator = bit_generator

    def _next(self) -> np.random.Generator:
        bg = self.bit_generator
        words = bg._state._a[:16].view(np.uint64)
        words[0] += 1
        return np.random.default_rng([int(words[1]), int(words[0])])

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: _call(getattr(self._next(), name), args, kwargs)


class _CupyLikeRandom:
    XORWOW = XORWOW
    Generator = CupyLikeGenerator

    def default_rng(self, seed: Any = None) -> CupyLikeGenerator:
        return CupyLikeGenerator(XORWOW(seed))


class _Runtime:
    @staticmethod
    def getDeviceCount() -> int:  # noqa: N802 - CuPy's name
        return 1


class _Cuda:
    Device = _Device
    runtime = _Runtime()


def _wrap_attr(attr: Any) -> Any:
    if isinstance(attr, np.ufunc):
        return _Ufunc(attr)
    if isinstance(attr, types.ModuleType):
        return _Namespace(attr)  # xp.lib.stride_tricks.as_strided, xp.linalg.norm, ...
    if isinstance(attr, type) or not callable(attr):
        return attr  # dtypes and scalar types (CuPy re-exports NumPy's), constants
    return lambda *args, **kwargs: _call(attr, args, kwargs)


class _Namespace:
    """A NumPy submodule on device arrays."""

    def __init__(self, mod: Any) -> None:
        self._mod = mod

    def __getattr__(self, name: str) -> Any:
        return _wrap_attr(getattr(self._mod, name))


class StandinModule:
    """The stand-in ``xp``: NumPy's namespace on :class:`DeviceArray` (see the module docstring)."""

    __name__ = "standin"
    ndarray = DeviceArray
    random = _Random()
    cuda = _Cuda()

    def asarray(self, a: Any, dtype: Any = None) -> DeviceArray:
        if isinstance(a, DeviceArray):
            return DeviceArray(a._a.astype(dtype, copy=False)) if dtype is not None else a
        counts["to_device"] += 1
        return DeviceArray(np.array(a, dtype=dtype, copy=True))  # host -> device: a copy

    def array(self, a: Any, dtype: Any = None, copy: bool = True) -> DeviceArray:
        if not isinstance(a, DeviceArray):
            counts["to_device"] += 1
        src = a._a if isinstance(a, DeviceArray) else a
        return DeviceArray(np.array(src, dtype=dtype, copy=True))

    def asnumpy(self, a: Any) -> np.ndarray:
        if isinstance(a, DeviceArray):
            return a.get()
        return np.asarray(a)

    def __getattr__(self, name: str) -> Any:
        return _wrap_attr(getattr(np, name))


class CupyRandomStandinModule(StandinModule):
    """The stand-in with CuPy's kind of random generator (state in a device array) instead of NumPy's."""

    random = _CupyLikeRandom()


xp = StandinModule()
xp_cupy_random = CupyRandomStandinModule()


@contextlib.contextmanager
def installed(device: bool = True, module: Any = None):
    """Register the stand-in (or ``module``) as npgan's GPU module, and switch to it when ``device``; undo on exit."""
    prev_device = npgan.get_device()
    prev = npgan.backend.set_gpu_module(xp if module is None else module)
    try:
        if device:
            npgan.set_device("gpu")
        yield xp if module is None else module
    finally:
        npgan.backend.set_gpu_module(prev)
        if prev_device != "cpu" and prev is not None:
            npgan.set_device(prev_device)


def reset_counts() -> None:
    counts["sync"] = counts["to_host"] = counts["to_device"] = 0
