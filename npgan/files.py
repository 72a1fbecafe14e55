"""Files written whole or not at all: atomic writes, publishing a finished temporary file, SHA-256 of a file.

Every file npgan writes (checkpoints, weights, config.toml, history.csv, pictures, image caches, downloads) goes
through this module, so that a crash, a full disk or a killed process never leaves a half-written file under the
target's name:

* :func:`atomic_write_bytes` / :func:`atomic_write_text`: the whole content is known; it goes to a temporary file
  in the target's directory (``.NAME.PID.XXXXXXXXXXXX.npgan.tmp``), is fsync'ed, renamed over the target, and the
  directory is fsync'ed. On any failure the temporary file is removed and the exception propagates; the target
  keeps its previous content.
* :func:`temp_file` + :func:`publish`: the content is streamed (a download, an image cache built row by row); the
  caller writes the temporary file, then :func:`publish` gives it the usual permissions and renames it over the
  target.
* :func:`remove_stale_temps`: the temporary files that killed writers left in a directory.
* :func:`sha256_file`: the SHA-256 of a file, read in 1 MB blocks.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

__all__ = ["TEMP_SUFFIX", "atomic_write_bytes", "atomic_write_text", "temp_file", "publish", "remove_stale_temps",
           "sha256_file", "fsync_dir"]

#: the ending of npgan's temporary files (``.NAME.PID.XXXXXXXXXXXX.npgan.tmp``), which cleanup looks for
TEMP_SUFFIX = ".npgan.tmp"


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a short write is retried; an error propagates)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def fsync_dir(d: str | os.PathLike) -> None:
    """fsync a directory, so that a rename inside it survives a crash (a no-op where directories cannot be)."""
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


def temp_file(target: str | os.PathLike, suffix: str = TEMP_SUFFIX) -> tuple[int, Path]:
    """A new, exclusively created temporary file beside ``target``: ``(fd, path)``, opened for writing.

    Its name is ``.NAME.PID.XXXXXXXXXXXX`` + ``suffix`` (48 random bits); its mode is that of any newly created
    file, 0o666 less the umask (not ``tempfile.mkstemp``'s private 0o600).
    """
    target = Path(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{os.getpid()}.{os.urandom(6).hex()}{suffix}"
        try:
            return os.open(tmp, flags, 0o666), tmp  # the kernel applies the umask
        except FileExistsError:  # pragma: no cover - 48 random bits collided
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary file name next to {target}")  # pragma: no cover


def publish(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the finished temporary file ``tmp`` over ``target`` with the usual permissions (0o666 less the
    umask), then fsync the directory. ``tmp`` must lie in ``target``'s directory (a rename is atomic there)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, target)
    fsync_dir(Path(target).parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and a rename (never a half-written file).

    On any failure the temporary file is removed and the exception (e.g. OSError ENOSPC) propagates; ``path``
    keeps its previous content. The file gets the mode of any newly created file, 0o666 less the umask.
    """
    path = Path(path)
    fd, tmp = temp_file(path)
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
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed npgan writers left in ``directory``; returns them.

    Only npgan's own are touched: ``.NAME.PID.XXXXXXXXXXXX.npgan.tmp`` (:func:`temp_file` names them so), regular
    files only; a user's ``.notes.tmp`` stays. Call it only while holding the directory's writer lock
    (:class:`npgan.run.runlock.RunLock`; ``npgan resume`` does, before training): then no live npgan process is
    writing one of them.
    """
    removed = []
    for p in Path(directory).glob(f".*{TEMP_SUFFIX}"):
        try:
            if p.is_symlink() or not p.is_file():
                continue
            p.unlink()
            removed.append(p)
        except OSError:  # pragma: no cover - raced with another cleaner
            pass
    return removed


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of the file at ``path`` as lowercase hex, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
