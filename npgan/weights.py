"""Weights in and out as safetensors files: the format PyTorch and Hugging Face read without pickle.

A file holds a module's ``state_dict`` (PyTorch's keys and layouts: ``"1.weight"``, ``"2.running_var"``, …) and a
small string→string metadata block. What npgan writes, ``safetensors.torch.load_file`` reads and
``torch_model.load_state_dict(..., strict=True)`` accepts; what ``safetensors.torch.save_file(model.state_dict())``
writes, :func:`load_into` loads into the same npgan architecture.

* :func:`save` — ``save(module_or_state_dict, path, metadata=None)``: host copies of every array (GPU arrays are
  moved to the host), written atomically (a temporary file in the same directory, fsync, rename: never a
  half-written file);
* :func:`load` — ``load(path) -> (state_dict, metadata)``: numpy arrays, float32/float64 (plus int64 for integer
  buffers such as BatchNorm's ``num_batches_tracked``);
* :func:`load_into` — ``load_into(module, path, strict=True) -> metadata``: keys, shapes and kinds checked against
  ``module.state_dict()`` first; nothing is changed unless every entry fits.

A hostile or damaged file is refused with one :class:`WeightsError` line naming the file and the problem, before
anything is applied: not a safetensors file, truncated, a header that claims more bytes than the file has or more
than safetensors' 100 MB limit, duplicate keys, a dtype npgan does not compute in (int8, uint8, bool, complex, fp8,
…). float16 and bfloat16 weights are converted to float32 with a :class:`~npgan.errors.PrecisionWarning` (npgan
computes in float32 or float64; bf16 → f32 is exact: the 16 bits become the float32's high half).

The format itself is written and parsed by the ``safetensors`` package (its NumPy API); npgan reads the 8-byte
header length and the JSON header only to give precise messages and to catch duplicate keys, which the package
accepts silently (the last one wins).
"""

from __future__ import annotations

import errno
import json
import os
import struct
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

from . import __version__, backend
from .errors import CheckpointError, CheckpointWriteError, FileKindError, PrecisionWarning
from .files import atomic_write_bytes, open_regular
from .nn.module import load_problems
from .tensor import Tensor

__all__ = ["WeightsError", "save", "load", "load_into", "MAX_HEADER_BYTES"]

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header
_KEEP = {"F32": "<f4", "F64": "<f8", "I64": "<i8"}  # stored dtype → little-endian numpy dtype, kept as is
_UPCAST = ("F16", "BF16")  # converted to float32 with a PrecisionWarning
_SAVE_KINDS = {"float32", "float64", "int64"}


class WeightsError(CheckpointError):
    """A weights file cannot be read or does not fit the module: names the file and the reason; nothing changed.

    A :class:`~npgan.errors.CheckpointError` (hence a ValueError): the command line reports it in one line, exit 2.
    """


# ============================================================================ save
def _host_arrays(state: Any, path: Path) -> OrderedDict[str, Any]:
    np = backend.np
    if not hasattr(state, "items"):
        raise TypeError(f"npgan.weights.save: expected a Module or a mapping of names to arrays, got "
                        f"{type(state).__name__}")
    out: OrderedDict[str, Any] = OrderedDict()
    for k, v in state.items():
        if not isinstance(k, str) or not k or k == "__metadata__":
            raise WeightsError(f"{path}: {k!r} is not a valid tensor name (a non-empty string other than "
                               "'__metadata__')")
        if isinstance(v, Tensor):
            v = v.data
        elif not backend.is_array(v) and hasattr(v, "detach"):  # a torch tensor
            v = v.detach().cpu().numpy()
        a = np.asarray(backend.to_numpy(v), order="C")  # (ascontiguousarray would turn 0-d into 1-d)
        if a.dtype.name not in _SAVE_KINDS:
            raise WeightsError(f"{path}: tensor {k!r} has dtype {a.dtype}; npgan writes float32, float64 and "
                               "int64 tensors only")
        out[k] = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return out


def _check_metadata(metadata: Any, path: Path) -> dict[str, str]:
    if metadata is None:
        return {}
    if not hasattr(metadata, "items") or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise TypeError(f"npgan.weights.save: metadata for {path} must be a dict of strings to strings (safetensors "
                        f"stores text only), got {metadata!r}"[:300])
    return dict(metadata)


def save(state: Any, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write a module's (or a state dict's) weights and buffers to ``path`` as a safetensors file, atomically.

    Args:
        state: an npgan ``Module`` (its ``state_dict()``) or a mapping ``name -> array`` (numpy/cupy arrays, npgan
            tensors or torch tensors); float32, float64 or int64.
        path: the file to write (conventionally ``*.safetensors``); its directory must exist.
        metadata: extra string → string entries. npgan adds ``format = "pt"`` (PyTorch's layouts, as Hugging Face
            loaders expect), ``npgan_version`` and, for a Module, ``architecture`` (its repr) unless given.

    Raises :class:`WeightsError` for a bad name or dtype and :class:`~npgan.errors.CheckpointWriteError` (an
    OSError with the errno) when the file cannot be written; in every case ``path`` keeps its previous content.

    Example: ``npgan.save(G, "g.safetensors", {"preset": "mnist-dcgan"})``.
    """
    from safetensors.numpy import save as st_save

    path = Path(path)
    meta = {"format": "pt", "npgan_version": __version__}
    if hasattr(state, "state_dict") and hasattr(state, "named_modules"):
        meta["architecture"] = repr(state)
        state = state.state_dict()
    meta.update(_check_metadata(metadata, path))
    data = st_save(dict(_host_arrays(state, path)), metadata=meta)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, "?")
        state_of = f"the previous file {path} is intact" if path.is_file() else f"no file exists at {path}"
        raise CheckpointWriteError(exc.errno, f"could not write weights {path}: {exc.strerror or exc} ({code}); "
                                   f"{state_of}, no temporary file is left") from None


# ============================================================================ load
def _read(path: Path) -> bytes:
    """The whole file, after checking from its first 8 bytes that the header length fits it."""
    try:
        with open_regular(path, "weights file") as f:  # a FIFO or device: one line, never a blocking read
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise WeightsError(f"weights file {path} is not a safetensors file: {size} bytes, too short for "
                                   "the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                raise WeightsError(f"weights file {path} is not a safetensors file (or is damaged): its header "
                                   f"length {n} exceeds safetensors' limit of {MAX_HEADER_BYTES} bytes")
            if n > size - 8:
                raise WeightsError(f"weights file {path} is truncated or not a safetensors file: its header claims "
                                   f"{n} bytes but only {size - 8} follow the 8-byte length")
            return head + f.read()
    except FileNotFoundError:
        raise WeightsError(f"weights file {path} does not exist") from None
    except IsADirectoryError:
        raise WeightsError(f"weights file {path} is a directory") from None
    except PermissionError as exc:
        raise WeightsError(f"weights file {path} cannot be read: {exc.strerror}") from None
    except FileKindError as exc:
        raise WeightsError(str(exc)) from None


def _header(path: Path, raw: bytes) -> dict[str, Any]:
    """The JSON header, refusing duplicate keys (safetensors itself keeps the last one silently)."""
    (n,) = struct.unpack("<Q", raw[:8])

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        dup: set[str] = set()
        for k, _ in pairs:
            (dup if k in seen else seen).add(k)
        if dup:
            raise WeightsError(f"weights file {path} has duplicate keys {sorted(dup)}; refusing to guess which one "
                               "is meant")
        return dict(pairs)

    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(f"weights file {path} is not a safetensors file: its header is not JSON "
                           f"({type(exc).__name__})") from None
    except RecursionError:
        raise WeightsError(f"weights file {path} is not a safetensors file: its JSON header nests too deeply "
                           "(a safetensors header is one flat table of tensors)") from None
    if not isinstance(header, dict):
        raise WeightsError(f"weights file {path} is not a safetensors file: its header is not a JSON object")
    return header


def _convert(path: Path, key: str, dtype: str, shape: list[int], data: Any) -> Any:
    np = backend.np
    if dtype in _KEEP:
        return np.frombuffer(data, dtype=_KEEP[dtype]).reshape(shape).astype(_KEEP[dtype][1:], copy=True)
    if dtype in _UPCAST:
        if dtype == "F16":
            a = np.frombuffer(data, dtype="<f2").astype(np.float32)
        else:  # bfloat16 is the high half of a float32
            a = (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        warnings.warn(f"weights file {path}: tensor {key!r} is {dtype.lower()}, converted to float32 (npgan "
                      "computes in float32 or float64)", PrecisionWarning, stacklevel=4)
        return a.reshape(shape)
    raise WeightsError(f"weights file {path}: tensor {key!r} has dtype {dtype}, which npgan does not compute in "
                       "(float32/float64 weights, int64 counters; float16/bfloat16 are converted)")


def _natural(key: str) -> list[tuple[int, Any]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in key.split(".")]


def _names(keys: list[str], limit: int = 8) -> str:
    """``[a, b, c]``, or the first ``limit`` and how many more (a message stays one readable line)."""
    shown = ", ".join(keys[:limit])
    return f"[{shown}" + (f", ... {len(keys) - limit} more]" if len(keys) > limit else "]")


def load(path: str | os.PathLike) -> tuple[OrderedDict[str, Any], dict[str, str]]:
    """Read a safetensors file: ``(state_dict, metadata)``, host numpy arrays in the file's order.

    float32/float64/int64 tensors are returned as stored, float16/bfloat16 ones as float32 (with a
    :class:`~npgan.errors.PrecisionWarning`); any other dtype, a damaged or hostile file gives one
    :class:`WeightsError` line (see the module docstring). Nothing is returned until the whole file is checked.
    """
    from safetensors import SafetensorError, deserialize

    path = Path(path)
    raw = _read(path)
    header = _header(path, raw)
    try:
        entries = deserialize(raw)
    except SafetensorError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"weights file {path} is damaged or not a safetensors file ({msg})") from None
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightsError(f"weights file {path}: its __metadata__ is not a dict of strings")
    entries = sorted(entries, key=lambda kv: _natural(kv[0]))  # "2.weight" before "10.weight"
    out: OrderedDict[str, Any] = OrderedDict()
    for key, info in entries:
        out[key] = _convert(path, key, info["dtype"], list(info["shape"]), info["data"])
    return out, dict(metadata)


def load_into(module: Any, path: str | os.PathLike, strict: bool = True) -> dict[str, str]:
    """Load a safetensors file into ``module`` after checking every key, shape and kind; returns the metadata.

    With ``strict`` the file's keys must be exactly ``module.state_dict()``'s. A mismatch raises one
    :class:`WeightsError` listing the missing, unexpected and wrong-shape (or float-vs-integer) keys, and the
    module is unchanged; so is it after any other failure. Values are cast to the module's dtypes and device.

    Example: ``npgan.weights.load_into(G, "g.safetensors")`` — ``--init-g FILE`` on the command line.
    """
    path = Path(path)
    state, metadata = load(path)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad = []
    for k, a in own.items():
        if k in state:
            v = state[k]
            if tuple(v.shape) != tuple(a.shape):
                bad.append(f"{k} (file {tuple(v.shape)}, model {tuple(a.shape)})")
            elif (v.dtype.kind == "f") != (a.dtype.kind == "f"):
                bad.append(f"{k} (file dtype {v.dtype}, model {a.dtype})")
    problems = load_problems(strict, missing, unexpected, bad, ("missing", "unexpected", "wrong shape or kind"),
                             (_names, _names, _names))
    if problems:
        raise WeightsError(f"weights file {path} does not fit the {type(module).__name__}: " + "; ".join(problems))
    _check_finite(path, state, own)
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=strict)
    return metadata


def _check_finite(path: Path, state: dict[str, Any], own: dict[str, Any]) -> None:
    """Every float tensor of the file is finite, and stays finite in the module's dtype (a float64 1e300 would
    become inf in float32); :class:`WeightsError` naming the file and the tensor otherwise."""
    np = backend.np
    for k, a in own.items():
        v = state.get(k)
        if v is None or v.dtype.kind != "f" or a.dtype.kind != "f":
            continue
        if not np.isfinite(v).all():
            raise WeightsError(f"weights file {path}: tensor {k!r} holds nan or inf; weights must be finite")
        with np.errstate(over="ignore"):
            cast = v.astype(a.dtype)
        if not np.isfinite(cast).all():
            big = float(np.abs(v).max())
            raise WeightsError(f"weights file {path}: tensor {k!r} holds values up to {big:.3g}, beyond {a.dtype}'s "
                               f"range (±{float(np.finfo(a.dtype).max):.3g}): they would become inf")
