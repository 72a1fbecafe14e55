"""The array backend: the only module in npgan that imports numpy or cupy.

Everything else asks this module for the array module (``xp``) of the current
device or of a given array, for the default float dtype and for the seeded
random generator. CuPy is optional: when it is missing, :data:`cupy` stays
``None`` and asking for the GPU raises :class:`DeviceError` that says why and
how to install it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy

np = numpy

try:  # CuPy is an optional extra: keep the reason when it is missing.
    import cupy  # type: ignore[import-not-found]

    _CUPY_IMPORT_ERROR: BaseException | None = None
except Exception as exc:  # pragma: no cover - depends on the machine
    cupy = None
    _CUPY_IMPORT_ERROR = exc

ndarray = numpy.ndarray
float16, float32, float64 = numpy.float16, numpy.float32, numpy.float64
int64, bool_ = numpy.int64, numpy.bool_

__all__ = [
    "DeviceError", "np", "cupy", "get_array_module", "set_default_dtype", "get_default_dtype",
    "manual_seed", "rng", "set_device", "get_device", "to_numpy", "is_array", "asarray",
]


class DeviceError(RuntimeError):
    """Asked for a device that cannot be used (no CuPy, no GPU, bad name)."""


# ----------------------------------------------------------------------------- state
class _State:
    __slots__ = ("device", "gpu_id", "xp", "dtype", "seed", "rng")

    def __init__(self) -> None:
        self.device = "cpu"
        self.gpu_id = 0
        self.xp: Any = numpy
        self.dtype = numpy.dtype(numpy.float32)
        self.seed: int | None = None
        self.rng: Any = numpy.random.default_rng()


_state = _State()


def __getattr__(name: str) -> Any:  # module attribute ``backend.xp`` follows the device
    if name == "xp":
        return _state.xp
    raise AttributeError(f"module 'npgan.backend' has no attribute {name!r}")


# ----------------------------------------------------------------------------- arrays
def get_array_module(*arrays: Any) -> Any:
    """The array module (numpy or cupy) that owns ``arrays``; numpy for host data."""
    if cupy is not None:
        for a in arrays:
            if isinstance(a, cupy.ndarray):
                return cupy
    return numpy


def is_array(a: Any) -> bool:
    """True for a numpy or cupy ndarray."""
    return isinstance(a, numpy.ndarray) or (cupy is not None and isinstance(a, cupy.ndarray))


def device_of(a: Any) -> str:
    """"cpu" or "gpu:N" for an array."""
    if cupy is not None and isinstance(a, cupy.ndarray):
        return f"gpu:{a.device.id}"
    return "cpu"


def to_numpy(a: Any) -> numpy.ndarray:
    """A host (numpy) copy or view of ``a``: the one explicit way data leaves the GPU."""
    if cupy is not None and isinstance(a, cupy.ndarray):
        return cupy.asnumpy(a)
    return numpy.asarray(a)


def asarray(data: Any, dtype: Any = None, device: str | None = None) -> Any:
    """``data`` as an array on ``device`` (default: the current device)."""
    dev = _state.device if device is None else _parse_device(device)[0]
    if dev == "cpu":
        return numpy.asarray(to_numpy(data), dtype=dtype)
    _require_gpu()
    with cupy.cuda.Device(_state.gpu_id if device is None else _parse_device(device)[1]):
        return cupy.asarray(data, dtype=dtype)


def finfo(dtype: Any) -> Any:
    return numpy.finfo(dtype)


def dtype(d: Any) -> numpy.dtype:
    return numpy.dtype(d)


# ----------------------------------------------------------------------------- dtype
_ALLOWED_DTYPES = {"float32": numpy.float32, "float64": numpy.float64}


def set_default_dtype(d: Any) -> None:
    """Set the float dtype of tensors, parameters and layers created afterwards.

    ``d`` is ``"float32"`` (the default) or ``"float64"`` (or the numpy dtype).
    """
    name = numpy.dtype(d).name if not isinstance(d, str) else d
    if name not in _ALLOWED_DTYPES:
        raise ValueError(f"default dtype must be 'float32' or 'float64', got {d!r}")
    _state.dtype = numpy.dtype(_ALLOWED_DTYPES[name])


def get_default_dtype() -> numpy.dtype:
    """The current default float dtype (numpy dtype object)."""
    return _state.dtype


# ----------------------------------------------------------------------------- randomness
def manual_seed(seed: int) -> None:
    """Seed npgan's random generator (parameter init, noise, dropout, shuffling)."""
    if not isinstance(seed, (int, numpy.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _state.seed = int(seed)
    _state.rng = _make_rng(int(seed))


def _make_rng(seed: int | None) -> Any:
    if _state.device == "cpu":
        return numpy.random.default_rng(seed)
    with cupy.cuda.Device(_state.gpu_id):
        return cupy.random.default_rng(seed)


def rng() -> Any:
    """The seeded random Generator of the current device (numpy or cupy ``Generator``)."""
    return _state.rng


def get_rng_state() -> dict:
    """A picklable-free description of the generator state (for checkpoints)."""
    if _state.device == "cpu":
        return {"device": "cpu", "bit_generator": _state.rng.bit_generator.state}
    return {"device": _state.device, "bit_generator": None, "seed": _state.seed}


def set_rng_state(state: dict) -> None:
    """Restore a state from :func:`get_rng_state`."""
    if state.get("bit_generator") is not None and _state.device == "cpu":
        g = numpy.random.default_rng()
        g.bit_generator.state = state["bit_generator"]
        _state.rng = g


# ----------------------------------------------------------------------------- devices
def _parse_device(device: str) -> tuple[str, int]:
    if not isinstance(device, str):
        raise ValueError(f"device must be 'cpu', 'gpu' or 'gpu:N', got {device!r}")
    d = device.strip().lower()
    if d == "cpu":
        return "cpu", 0
    if d in ("gpu", "cuda"):
        return "gpu", 0
    for prefix in ("gpu:", "cuda:"):
        if d.startswith(prefix) and d[len(prefix):].isdigit():
            return "gpu", int(d[len(prefix):])
    raise ValueError(f"device must be 'cpu', 'gpu' or 'gpu:N', got {device!r}")


def _require_gpu(gpu_id: int = 0) -> None:
    if cupy is None:
        raise DeviceError(
            "device 'gpu' needs CuPy, which could not be imported "
            f"({type(_CUPY_IMPORT_ERROR).__name__}: {_CUPY_IMPORT_ERROR}); "
            "install it with: pip install \"npgan[gpu]\""
        )
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise DeviceError(f"device 'gpu': CuPy is installed but no CUDA GPU answers ({exc})") from exc
    if n == 0:
        raise DeviceError("device 'gpu': CuPy is installed but no CUDA GPU was found")
    if gpu_id >= n:
        raise DeviceError(f"device 'gpu:{gpu_id}' does not exist: {n} GPU(s) found")


def gpu_available() -> bool:
    """True when CuPy imports and at least one GPU answers."""
    try:
        _require_gpu()
        return True
    except DeviceError:
        return False


def set_device(device: str) -> None:
    """Make ``device`` ("cpu", "gpu" or "gpu:N") the current device.

    New tensors, parameters and random numbers live there. Raises
    :class:`DeviceError` when the GPU cannot be used, saying why.
    """
    kind, gid = _parse_device(device)
    if kind == "gpu":
        _require_gpu(gid)
        cupy.cuda.Device(gid).use()
        _state.xp = cupy
    else:
        _state.xp = numpy
    changed = (_state.device != ("cpu" if kind == "cpu" else f"gpu:{gid}"))
    _state.device = "cpu" if kind == "cpu" else f"gpu:{gid}"
    _state.gpu_id = gid
    if changed:
        _state.rng = _make_rng(_state.seed)


def get_device() -> str:
    """The current device: "cpu" or "gpu:N"."""
    return _state.device


def current_xp() -> Any:
    """The array module of the current device."""
    return _state.xp


def blas_info() -> str:
    """A one-line description of the BLAS numpy uses (for ``npgan info``)."""
    try:
        cfg = numpy.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # pragma: no cover - old numpy
        return "unknown"


if os.environ.get("NPGAN_DEVICE"):  # pragma: no cover - exercised in a subprocess test
    set_device(os.environ["NPGAN_DEVICE"])
