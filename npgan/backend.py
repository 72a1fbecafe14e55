"""The array backend: the only module in npgan that imports numpy or cupy.

Everything else asks this module for the array module (``xp``) of the current
device or of a given array, for the default float dtype and for the seeded
random generator. CuPy is optional: when it is missing, :data:`cupy` stays
``None`` and asking for the GPU raises :class:`DeviceError` that says why and
how to install it.

Devices. ``set_device("gpu")`` (or ``"gpu:N"``, or the ``NPGAN_DEVICE``
environment variable read at import) makes new tensors, parameters and random
numbers live on the GPU. Data leaves the GPU only through :func:`to_numpy`
(``Tensor.numpy()``, checkpoints, plots); CuPy refuses ``numpy.asarray`` of a
device array, so an accidental host round trip is an error, not a slowdown.
The GPU array module is held in one place (:func:`set_gpu_module`), so the tests
can put a stand-in there that behaves like CuPy on a machine without a GPU.

Random numbers. Each device has its own generator, seeded by
:func:`manual_seed` (numpy's PCG64 on the CPU, CuPy's XORWOW on the GPU), so the
same seed gives different streams on the two devices. :func:`get_rng_state` /
:func:`set_rng_state` save and restore the generator exactly on the same kind of
device (on the GPU the whole cuRAND state array is copied, about 1.5 MB); a
state saved on the other kind of device cannot be continued, and restoring it
seeds a fresh generator from a digest of the saved state instead (so resuming
the same checkpoint twice still draws the same numbers).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zlib
from typing import Any

import numpy

np = numpy

try:  # CuPy is an optional extra: keep the reason when it is missing.
    import cupy  # type: ignore[import-not-found]

    _CUPY_IMPORT_ERROR: BaseException | None = None
except Exception as exc:  # pragma: no cover - depends on the machine
    cupy = None
    _CUPY_IMPORT_ERROR = exc

# The GPU array module in use (CuPy, or a stand-in installed by the tests) and its array type; None without one.
_gpu_xp: Any = cupy
_gpu_type: Any = cupy.ndarray if cupy is not None else None
_gpu_checked: set[int] = set()  # GPU ids known to answer (checked once each)
_multi_gpu = False              # True once more than one GPU was seen: only then do device ids need comparing

ndarray = numpy.ndarray
float16, float32, float64 = numpy.float16, numpy.float32, numpy.float64
int64, bool_ = numpy.int64, numpy.bool_

__all__ = [
    "DeviceError", "np", "cupy", "get_array_module", "set_default_dtype", "get_default_dtype",
    "manual_seed", "rng", "set_device", "get_device", "to_numpy", "is_array", "asarray", "device_of",
    "check_same_device", "get_rng_state", "set_rng_state", "gpu_available", "current_xp", "synchronize",
    "set_gpu_module", "tune_malloc", "malloc_tuned", "gpu_count",
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
    t = _gpu_type
    if t is not None:
        for a in arrays:
            if isinstance(a, t):
                return _gpu_xp
    return numpy


def is_array(a: Any) -> bool:
    """True for a numpy or cupy ndarray."""
    return isinstance(a, numpy.ndarray) or (_gpu_type is not None and isinstance(a, _gpu_type))


def device_of(a: Any) -> str:
    """"cpu" or "gpu:N" for an array."""
    if _gpu_type is not None and isinstance(a, _gpu_type):
        return f"gpu:{a.device.id}"
    return "cpu"


def check_same_device(arrays: Any, what: str) -> None:
    """Raise ValueError naming both devices when ``arrays`` do not all live on one device.

    Called by every Function when a GPU module is present (never otherwise): a type test per
    input, and a device-id comparison only once more than one GPU has been seen.
    """
    t = _gpu_type
    on_gpu = [isinstance(a, t) for a in arrays]
    if all(on_gpu):
        if not _multi_gpu:
            return
        ids = [a.device.id for a in arrays]
        if all(i == ids[0] for i in ids):
            return
    elif not any(on_gpu):
        return
    devs = [device_of(a) for a in arrays]
    i = next(k for k, d in enumerate(devs) if d != devs[0])
    raise ValueError(f"{what}: inputs live on different devices: input 0 on {devs[0]}, input {i} on {devs[i]}; "
                     "move them to one device first (tensor.to(device), module.to(device))")


def to_numpy(a: Any) -> numpy.ndarray:
    """A host (numpy) copy or view of ``a``: the one explicit way data leaves the GPU."""
    if _gpu_type is not None and isinstance(a, _gpu_type):
        return _gpu_xp.asnumpy(a)
    return numpy.asarray(a)


def asarray(data: Any, dtype: Any = None, device: str | None = None) -> Any:
    """``data`` as an array on ``device`` (default: the current device); no copy when already there."""
    if device is None:
        kind, gid = ("cpu", 0) if _state.device == "cpu" else ("gpu", _state.gpu_id)
    else:
        kind, gid = _parse_device(device)
    if kind == "cpu":
        return numpy.asarray(to_numpy(data), dtype=dtype)
    _require_gpu(gid)
    with _gpu_xp.cuda.Device(gid):
        if isinstance(data, _gpu_type) and data.device.id != gid:  # another GPU: a peer copy
            return _gpu_xp.array(data, dtype=dtype, copy=True)
        return _gpu_xp.asarray(data, dtype=dtype)


def scatter_add(a: Any, key: Any, values: Any) -> None:
    """a[key] += values in place, repeated indices accumulating (``numpy.add.at``; CuPy's scatter_add)."""
    xp = get_array_module(a)
    at = getattr(xp.add, "at", None)
    if at is None:  # pragma: no cover - a CuPy without ufunc.at
        import cupyx  # type: ignore[import-not-found]
        cupyx.scatter_add(a, key, values)
    else:
        at(a, key, values)


def synchronize() -> None:
    """Wait for the work queued on the current GPU (for timing); nothing on the CPU."""
    if _state.device != "cpu":
        _gpu_xp.cuda.Device(_state.gpu_id).synchronize()


def set_gpu_module(xp: Any) -> Any:
    """Make ``xp`` the GPU array module (CuPy by default; None for none) and return the previous one.

    For tests: a stand-in module that behaves like CuPy (its own ``ndarray`` type that refuses
    ``numpy.asarray``, ``asarray``/``asnumpy``, ``random.default_rng``, ``cuda.Device``,
    ``cuda.runtime.getDeviceCount``) checks the GPU code paths on a machine without a GPU.
    The current device is reset to "cpu".
    """
    global _gpu_xp, _gpu_type, _multi_gpu
    if _state.device != "cpu":
        set_device("cpu")
    prev = _gpu_xp
    _gpu_xp = xp
    _gpu_type = xp.ndarray if xp is not None else None
    _gpu_checked.clear()
    _multi_gpu = False
    return prev


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


def _make_rng(seed: Any) -> Any:
    if _state.device == "cpu":
        return numpy.random.default_rng(seed)
    with _gpu_xp.cuda.Device(_state.gpu_id):
        return _gpu_xp.random.default_rng(seed)


def rng() -> Any:
    """The seeded random Generator of the current device (numpy or cupy ``Generator``)."""
    return _state.rng


def get_rng_state() -> dict:
    """The generator's state as JSON-serialisable data (for checkpoints).

    CPU: ``{"device": "cpu", "bit_generator": numpy's state dict}``. GPU (CuPy): the cuRAND
    state array of the bit generator, zlib-compressed and base64-encoded, with its class and size;
    restoring it continues the stream exactly (see :func:`set_rng_state`).
    """
    g = _state.rng
    bg = g.bit_generator
    kind = "cpu" if _state.device == "cpu" else "gpu"
    if isinstance(getattr(bg, "state", None), dict):  # numpy (and the tests' stand-in GPU module)
        return {"device": kind, "kind": "numpy", "bit_generator": bg.state}
    try:  # CuPy: bit_generator._state is a device array of curandState structs, _size their count
        raw = to_numpy(bg._state).tobytes()
        return {"device": kind, "kind": type(bg).__name__, "size": int(bg._size), "seed": int(bg._seed),
                "state": base64.b64encode(zlib.compress(raw, 1)).decode("ascii")}
    except AttributeError:  # pragma: no cover - a CuPy whose bit generators keep their state elsewhere
        return {"device": kind, "kind": "unknown", "seed": _state.seed}


def set_rng_state(state: dict) -> None:
    """Restore a state from :func:`get_rng_state`.

    Exact when the state was saved on the same kind of device (CPU → CPU, GPU → GPU). A state from
    the other kind of device (a GPU run resumed on the CPU, or back) cannot be continued: the
    generator is then seeded from a digest of the saved state, deterministically.
    """
    if not isinstance(state, dict):
        raise TypeError(f"set_rng_state expects the dict of get_rng_state(), got {type(state).__name__}")
    here = "cpu" if _state.device == "cpu" else "gpu"
    saved_dev = str(state.get("device", "cpu"))
    saved = "cpu" if saved_dev == "cpu" else "gpu"
    kind = state.get("kind", "numpy" if state.get("bit_generator") is not None else None)
    if saved == here and kind == "numpy" and state.get("bit_generator") is not None:
        g = _make_rng(0)
        g.bit_generator.state = state["bit_generator"]
        _state.rng = g
        return
    if saved == here == "gpu" and isinstance(state.get("state"), str):
        cls = getattr(getattr(_gpu_xp, "random", None), str(kind), None)
        if cls is not None:
            raw = zlib.decompress(base64.b64decode(state["state"]))
            with _gpu_xp.cuda.Device(_state.gpu_id):
                bg = cls(int(state["seed"]), size=int(state["size"]))
                if bg._state.nbytes != len(raw):
                    raise ValueError(f"set_rng_state: the saved {kind} state has {len(raw)} bytes, this CuPy's "
                                     f"has {bg._state.nbytes}")
                bg._state[...] = _gpu_xp.asarray(numpy.frombuffer(raw, dtype=bg._state.dtype))
                _state.rng = _gpu_xp.random.Generator(bg)
            return
    # Another kind of device (or an unknown generator): a fresh stream seeded by the saved state's digest.
    digest = hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).digest()
    _state.rng = _make_rng(int.from_bytes(digest[:8], "little"))


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
    """Raise :class:`DeviceError` saying why GPU ``gpu_id`` cannot be used (checked once per id)."""
    global _multi_gpu
    if gpu_id in _gpu_checked:
        return
    if _gpu_xp is None:
        why = (f"could not be imported ({type(_CUPY_IMPORT_ERROR).__name__}: {_CUPY_IMPORT_ERROR})"
               if _CUPY_IMPORT_ERROR is not None else "was switched off (set_gpu_module(None))")
        raise DeviceError(f"device 'gpu' needs CuPy, which {why}; "
                          "install it with: pip install \"npgan[gpu]\" (CuPy for CUDA 12)")
    try:
        n = int(_gpu_xp.cuda.runtime.getDeviceCount())
    except Exception as exc:
        raise DeviceError(f"device 'gpu': CuPy is installed but no CUDA GPU answers ({type(exc).__name__}: "
                          f"{exc}); check the NVIDIA driver (nvidia-smi) and that the CuPy wheel matches its "
                          "CUDA version") from exc
    if n == 0:
        raise DeviceError("device 'gpu': CuPy is installed but no CUDA GPU was found (nvidia-smi lists none)")
    if gpu_id >= n:
        raise DeviceError(f"device 'gpu:{gpu_id}' does not exist: {n} GPU(s) found (gpu:0 to gpu:{n - 1})")
    _gpu_checked.add(gpu_id)
    _multi_gpu = _multi_gpu or n > 1


def gpu_available() -> bool:
    """True when CuPy imports and at least one GPU answers."""
    try:
        _require_gpu()
        return True
    except DeviceError:
        return False


def gpu_count() -> int:
    """The number of GPUs the GPU module sees (0 without one or when none answers)."""
    try:
        _require_gpu()
        return int(_gpu_xp.cuda.runtime.getDeviceCount())
    except DeviceError:
        return 0


def set_device(device: str) -> None:
    """Make ``device`` ("cpu", "gpu" or "gpu:N") the current device.

    New tensors, parameters and random numbers live there. Raises
    :class:`DeviceError` when the GPU cannot be used, saying why (and the device
    stays as it was); ValueError for a name that is not a device.
    """
    kind, gid = _parse_device(device)
    if kind == "gpu":
        _require_gpu(gid)
        _gpu_xp.cuda.Device(gid).use()
        _state.xp = _gpu_xp
    else:
        _state.xp = numpy
    name = "cpu" if kind == "cpu" else f"gpu:{gid}"
    changed = _state.device != name
    _state.device = name
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


# ----------------------------------------------------------------------------- host allocator
# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MALLOC_MMAP_THRESHOLD = 32 * 2**20   # glibc's ceiling for this parameter on 64-bit machines
MALLOC_TRIM_THRESHOLD = 256 * 2**20
MALLOC_TOP_PAD = 64 * 2**20
_malloc_tuned: bool | None = None    # None: never asked; True / False: the last outcome of tune_malloc


def tune_malloc(enable: bool = True) -> bool:
    """Let glibc keep freed arrays of up to 32 MB in the heap for reuse; True when the setting took.

    Why. A training step allocates and frees the same few-MB arrays (activations, column matrices,
    gradients) every time. By default glibc hands blocks above its mmap threshold straight back to the
    kernel on free and trims the heap top above 128 KB, so the next step's arrays start as untouched
    pages: one page fault per 4 KB, about 16,000 per 28x28 DCGAN step (``benchmarks/README.md`` has the
    time it costs). With an mmap threshold of 32 MB, a trim
    threshold of 256 MB and a top pad of 64 MB, freed blocks stay mapped and are reused.

    Cost: up to 256 MB of freed memory may stay with the process instead of going back to the system, for the
    whole process (it is glibc's setting, not npgan's). So it is an opt-in: ``import npgan`` leaves glibc alone
    unless the environment variable ``NPGAN_TUNE_MALLOC=1`` is set; call this function to turn it on from a
    script. ``tune_malloc(False)`` restores glibc's defaults (dynamic mmap threshold from 128 KB, trim at
    128 KB, no top pad). Elsewhere than Linux with glibc it does nothing and returns False. Arrays on the GPU
    are unaffected (CuPy has its own memory pool). ``npgan info`` reports :func:`malloc_tuned`.
    """
    global _malloc_tuned
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        mallopt, _ = libc.mallopt, libc.gnu_get_libc_version
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        _malloc_tuned = False
        return False
    if enable:
        values = ((_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD),
                  (_M_TOP_PAD, MALLOC_TOP_PAD))
    else:  # glibc's defaults (setting M_MMAP_THRESHOLD switches its dynamic threshold off until restart)
        values = ((_M_MMAP_THRESHOLD, 128 * 1024), (_M_TRIM_THRESHOLD, 128 * 1024), (_M_TOP_PAD, 0))
    ok = all(mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1 for param, value in values)
    _malloc_tuned = bool(enable and ok)
    return _malloc_tuned


def malloc_tuned() -> bool | None:
    """Whether :func:`tune_malloc` is in effect (None: never called, the default)."""
    return _malloc_tuned


if os.environ.get("NPGAN_TUNE_MALLOC", "").strip().lower() in ("1", "true", "yes", "on"):  # opt-in
    tune_malloc(True)

if os.environ.get("NPGAN_DEVICE"):  # pragma: no cover - exercised in a subprocess test
    try:
        set_device(os.environ["NPGAN_DEVICE"])
    except (DeviceError, ValueError) as _exc:
        raise type(_exc)(f"NPGAN_DEVICE={os.environ['NPGAN_DEVICE']!r}: {_exc}") from None
