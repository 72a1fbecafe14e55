"""Checkpoints as data, never code: an ``.npz`` of arrays plus a JSON header, written atomically.

Layout of a checkpoint file (a plain NumPy ``.npz``, read with ``allow_pickle=False``):

* ``__header__``: a uint8 array holding UTF-8 JSON: ``format`` (version), ``npgan`` (version), ``meta`` (anything
  JSON-serialisable the caller adds: step, architecture summary, config hash, optimizer hyper-parameters, RNG
  state), ``keys`` (the array names in order) and ``sha256`` (a checksum over every array's name, dtype, shape and
  bytes, in that order);
* every other entry: one array, under a '/'-separated name (``G/0.weight``, ``opt_g/state/0/exp_avg``).

Writes go to a temporary file in the same directory, are flushed and fsync'ed, then renamed over the target:
a crash or a full disk leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from . import __version__, backend

__all__ = ["FORMAT_VERSION", "CheckpointError", "save_arrays", "load_arrays", "atomic_write_bytes",
           "atomic_write_text"]

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit: names the file and the reason."""


def _digest(arrays: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for k, a in arrays.items():
        a = backend.np.asarray(a, order="C")  # (ascontiguousarray would turn 0-d into 1-d)
        h.update(k.encode())
        h.update(str(a.dtype.str).encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never a half-written file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_arrays(path: str | os.PathLike, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
    """Save host copies of ``arrays`` and the JSON ``meta`` atomically to ``path`` (an .npz)."""
    host = {k: backend.np.asarray(backend.to_numpy(a), order="C") for k, a in arrays.items()}
    for k, a in host.items():
        if a.dtype.kind not in "biuf":
            raise CheckpointError(f"{path}: array {k!r} has dtype {a.dtype}; only numeric arrays are stored")
        if k == "__header__":
            raise CheckpointError(f"{path}: '__header__' is a reserved name")
    header = {"format": FORMAT_VERSION, "npgan": __version__, "meta": meta, "keys": list(host),
              "sha256": _digest(host)}
    buf = io.BytesIO()
    payload = {"__header__": backend.np.frombuffer(json.dumps(header).encode("utf-8"), dtype=backend.np.uint8)}
    payload.update(host)
    backend.np.savez(buf, **payload)
    atomic_write_bytes(path, buf.getvalue())


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(arrays as host numpy arrays, meta) from a checkpoint; :class:`CheckpointError` on any defect.

    Refuses pickled objects (``allow_pickle=False``), files that are not .npz, truncated or altered files (the
    checksum), and files of a newer format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with backend.np.load(path, allow_pickle=False) as z:
            if "__header__" not in z.files:
                raise CheckpointError(f"checkpoint {path} has no npgan header (not an npgan checkpoint)")
            header = json.loads(bytes(z["__header__"]).decode("utf-8"))
            arrays = {k: z[k] for k in z.files if k != "__header__"}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
        if "pickle" in str(exc).lower():
            raise CheckpointError(f"checkpoint {path} holds pickled objects, which npgan never loads") from None
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict) or "format" not in header:
        raise CheckpointError(f"checkpoint {path} has a malformed header")
    if not isinstance(header["format"], int) or header["format"] > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {header['format']}, newer than this npgan "
                              f"({__version__}) reads (format {FORMAT_VERSION}); upgrade npgan")
    keys = header.get("keys")
    if keys is None or sorted(keys) != sorted(arrays):
        raise CheckpointError(f"checkpoint {path}: the arrays do not match the header's list")
    ordered = {k: arrays[k] for k in keys}
    if _digest(ordered) != header.get("sha256"):
        raise CheckpointError(f"checkpoint {path} fails its checksum: the file was altered or damaged")
    return ordered, header.get("meta", {})
