"""Checkpoints as data, never code: an ``.npz`` of arrays plus a JSON header, written atomically.

Layout of a checkpoint file (a plain, uncompressed NumPy ``.npz``, read with ``allow_pickle=False``):

* ``__header__``: a uint8 array holding UTF-8 JSON: ``format`` (version), ``npgan`` (version), ``config_hash`` (the
  sha256 of the run's configuration, or null), ``meta`` (anything JSON-serialisable the caller adds: step,
  architecture summary, optimizer hyper-parameters, RNG state), ``keys`` (the array names in order) and ``sha256``;
* every other entry: one array, under a '/'-separated name (``G/0.weight``, ``opt_g/state/0/exp_avg``).

``sha256`` (format 2) is taken over the canonical JSON of the header's other fields and then every array's name,
dtype, shape and bytes, in order: a flipped byte anywhere — in an array or in the step number — fails the check.
(Format 1 files, whose checksum covers only the arrays, are still read.)

Loading never runs code: the file is read into memory once, must be a zip of stored (uncompressed) ``.npy``
members whose sizes add up, and NumPy parses it with ``allow_pickle=False``; a pickle, an object array, a truncated
or altered file, a newer format or a missing header each give one :class:`CheckpointError` naming the file.

Writes go to a temporary file in the same directory (``.NAME.XXXX.tmp``), are flushed and fsync'ed, then renamed
over the target and the directory is fsync'ed: a crash at any moment leaves either the old or the new file, never
a half-written one; a failed write (disk full) removes its temporary file and raises
:class:`CheckpointWriteError`, leaving the previous checkpoint intact. A process killed between the two steps
leaves a stale temporary file, which :func:`remove_stale_temps` (run by ``npgan resume``) deletes.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from . import __version__, backend
from .errors import CheckpointError, CheckpointWriteError

__all__ = ["FORMAT_VERSION", "CheckpointError", "CheckpointWriteError", "save_arrays", "load_arrays",
           "atomic_write_bytes", "atomic_write_text", "config_hash", "remove_stale_temps"]

FORMAT_VERSION = 2
_READABLE_FORMATS = (1, 2)
_ZIP_MAGIC = b"PK\x03\x04"


def config_hash(config: dict[str, Any]) -> str:
    """sha256 (hex) of a configuration dict's canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(_canonical(config).encode("utf-8")).hexdigest()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _digest(arrays: dict[str, Any], core: dict[str, Any] | None = None) -> str:
    """sha256 over the header's ``core`` fields (format 2; None for format 1) and every array, in order."""
    h = hashlib.sha256()
    if core is not None:
        h.update(_canonical(core).encode("utf-8"))
    for k, a in arrays.items():
        a = backend.np.asarray(a, order="C")  # (ascontiguousarray would turn 0-d into 1-d)
        h.update(k.encode())
        h.update(str(a.dtype.str).encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ============================================================================ atomic writes
def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a short write is retried; an error propagates)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and a rename (never a half-written file).

    On any failure the temporary file is removed and the exception (e.g. OSError ENOSPC) propagates; ``path``
    keeps its previous content. The file gets the mode of any newly created file, 0o666 less the umask (not
    ``tempfile.mkstemp``'s private 0o600).
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask
            break
        except FileExistsError:  # pragma: no cover - 48 random bits collided
            continue
    else:  # pragma: no cover
        raise FileExistsError(errno.EEXIST, f"no free temporary file name next to {path}")
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.NAME.XXXX.tmp``) that a killed writer left in ``directory``; returns them.

    Call it only when no other process writes to the directory (``npgan resume`` does, before training).
    """
    removed = []
    for p in Path(directory).glob(".*.tmp"):
        try:
            p.unlink()
            removed.append(p)
        except OSError:  # pragma: no cover - raced with another cleaner
            pass
    return removed


# ============================================================================ save
def save_arrays(path: str | os.PathLike, arrays: dict[str, Any], meta: dict[str, Any],
                config_hash: str | None = None) -> None:
    """Save host copies of ``arrays`` and the JSON ``meta`` atomically to ``path`` (an .npz).

    Raises :class:`CheckpointError` for an array that is not numeric or a reserved name, and
    :class:`CheckpointWriteError` (an OSError with the errno) when the file cannot be written; in both cases
    ``path`` is untouched.
    """
    path = Path(path)
    host = {k: backend.np.asarray(backend.to_numpy(a), order="C") for k, a in arrays.items()}
    for k, a in host.items():
        if a.dtype.kind not in "biuf":
            raise CheckpointError(f"{path}: array {k!r} has dtype {a.dtype}; only numeric arrays are stored")
        if k == "__header__" or not isinstance(k, str) or not k:
            raise CheckpointError(f"{path}: {k!r} is not a valid array name")
    try:
        core = json.loads(json.dumps({"format": FORMAT_VERSION, "npgan": __version__, "config_hash": config_hash,
                                      "meta": meta, "keys": list(host)}))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the metadata is not JSON-serialisable ({exc})") from None
    header = dict(core, sha256=_digest(host, core))
    buf = io.BytesIO()
    payload = {"__header__": backend.np.frombuffer(json.dumps(header).encode("utf-8"), dtype=backend.np.uint8)}
    payload.update(host)
    backend.np.savez(buf, **payload)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, "?")
        state = (f"the previous checkpoint {path} is intact" if path.is_file()
                 else f"no checkpoint exists at {path}")
        raise CheckpointWriteError(exc.errno, f"could not write checkpoint {path}: {exc.strerror or exc} "
                                   f"({code}); {state}, no temporary file is left") from None


# ============================================================================ load
def _check_zip(path: Path, raw: bytes) -> None:
    """The file is a zip of stored .npy members whose sizes fit the file (no pickle, no zip bomb)."""
    if not raw.startswith(_ZIP_MAGIC):
        if raw[:1] == b"\x80":  # the PROTO opcode that starts every pickle of protocol 2 or later
            raise CheckpointError(f"checkpoint {path} is not an .npz (zip) file: it starts like a pickle, which "
                                  "npgan never loads (checkpoints are .npz data)")
        kind = "empty" if not raw else "not an .npz (zip) file"
        raise CheckpointError(f"checkpoint {path} is {kind}")
    try:
        infos = zipfile.ZipFile(io.BytesIO(raw)).infolist()
    except Exception as exc:  # noqa: BLE001 - zipfile raises many kinds (NotImplementedError for odd versions)
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    total = 0
    for info in infos:
        if not info.filename.endswith(".npy") or info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"checkpoint {path}: unexpected member {info.filename!r} (an npgan checkpoint "
                                  "holds only uncompressed .npy arrays)")
        total += info.file_size
    if total > len(raw):
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt (its members claim {total} bytes, the "
                              f"file has {len(raw)})")


def load_arrays(path: str | os.PathLike, header: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(arrays as host numpy arrays, meta) from a checkpoint; :class:`CheckpointError` on any defect.

    With ``header=True`` the second item is the whole header (``format``, ``npgan``, ``config_hash``, ``meta``,
    ``keys``, ``sha256``). Refuses pickles and object arrays (nothing is ever unpickled), files that are not
    .npz, truncated or altered files (the checksum), and files of a newer format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror or exc})") from None
    _check_zip(path, raw)
    try:
        with backend.np.load(io.BytesIO(raw), allow_pickle=False) as z:
            if "__header__" not in z.files:
                raise CheckpointError(f"checkpoint {path} has no npgan header (not an npgan checkpoint)")
            head = json.loads(bytes(z["__header__"]).decode("utf-8"))
            arrays = {k: z[k] for k in z.files if k != "__header__"}
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure of foreign bytes is one clear error
        if isinstance(exc, zipfile.BadZipFile) and "CRC" in str(exc):
            raise CheckpointError(f"checkpoint {path} fails its checksum: the file was altered or damaged "
                                  f"({exc})") from None
        if "pickle" in str(exc).lower():
            raise CheckpointError(f"checkpoint {path} holds pickled objects, which npgan never loads") from None
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    if not isinstance(head, dict) or "format" not in head:
        raise CheckpointError(f"checkpoint {path} has a malformed header")
    fmt = head["format"]
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise CheckpointError(f"checkpoint {path} has a malformed header (format {fmt!r})")
    if fmt not in _READABLE_FORMATS:
        raise CheckpointError(f"checkpoint {path} has format {fmt} (written by npgan {head.get('npgan', '?')}), "
                              f"newer than this npgan ({__version__}) reads (format {FORMAT_VERSION}); "
                              "upgrade npgan")
    keys = head.get("keys")
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(arrays):
        raise CheckpointError(f"checkpoint {path}: the arrays do not match the header's list")
    ordered = {k: arrays[k] for k in keys}
    core = None if fmt == 1 else {k: head.get(k) for k in ("format", "npgan", "config_hash", "meta", "keys")}
    if _digest(ordered, core) != head.get("sha256"):
        raise CheckpointError(f"checkpoint {path} fails its checksum: the file was altered or damaged")
    meta = head.get("meta", {})
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} has a malformed header (meta is {type(meta).__name__})")
    return ordered, (head if header else meta)
