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
* :func:`check_target` / :func:`open_regular`: the one rule for the paths npgan writes and reads.

**Output paths.** npgan writes regular files only, never through a symlink and never over a device, FIFO,
socket or directory: :func:`check_target` refuses (:class:`~npgan.errors.FileKindError`, one line naming the path
and what it is) a target that is a symlink or exists and is not a regular file, and every write here calls it,
before the temporary file is made and again just before the rename (a rename over a device node would replace
the node itself). Temporary files are created with ``O_CREAT | O_EXCL``, which never follows a symlink.
**Input paths.** :func:`open_regular` opens a file for reading without blocking (a FIFO would block an ``open``
forever) and refuses anything but a regular file (a symlink to one is followed: reading through it changes
nothing).

**Temporary files** are named ``.NAME.PID.XXXXXXXXXXXX`` + suffix and their writer holds an exclusive ``flock`` on
them from creation until they are renamed into place (the kernel drops it when the writer dies, SIGKILL
included). :func:`remove_stale_temps` removes only files nobody holds: the ones killed writers left.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from pathlib import Path
from typing import IO

from .errors import FileKindError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; stale temporary files are then never swept
    fcntl = None  # type: ignore[assignment]

__all__ = ["TEMP_SUFFIX", "atomic_write_bytes", "atomic_write_text", "temp_file", "publish", "remove_stale_temps",
           "sha256_file", "fsync_dir", "check_target", "open_regular", "file_kind", "FileKindError", "append_bytes"]

#: the ending of npgan's temporary files (``.NAME.PID.XXXXXXXXXXXX.npgan.tmp``), which cleanup looks for
TEMP_SUFFIX = ".npgan.tmp"


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a short write is retried; an error propagates)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words: "a regular file", "a directory", "a FIFO (named pipe)", "a socket",
    "a character device", "a block device", "a symlink"."""
    for test, what in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return what
    return "not a regular file"  # pragma: no cover - door, whiteout, event port


def check_target(path: str | os.PathLike) -> None:
    """Refuse to write ``path`` unless it is absent or a regular file (and not a symlink).

    Raises :class:`~npgan.errors.FileKindError` (a ValueError: bad input, exit 2), naming the path and what it is:
    a symlink (writing would replace the link, or write through it), a device, FIFO, socket or directory (a rename
    over a device node replaces the node). Every write in this module calls it; callers that check their outputs
    up front (``npgan sample``, ``npgan export``) call it too, so that they refuse before reading anything.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except NotADirectoryError:
        return  # the rename will fail with its own OSError (a file where a directory should be)
    if stat.S_ISREG(mode):
        return
    if stat.S_ISLNK(mode):
        try:
            to = f" (to {os.readlink(path)})"
        except OSError:  # pragma: no cover - raced away
            to = ""
        raise FileKindError(f"{path} is a symlink{to}; npgan never writes through a symlink or replaces one: "
                            "remove it or give another path")
    raise FileKindError(f"{path} is {file_kind(mode)}; npgan writes only regular files (and never replaces "
                        "anything else): give another path")


def open_regular(path: str | os.PathLike, what: str = "file") -> IO[bytes]:
    """``path`` opened for reading in binary, provided it is a regular file (a symlink to one is followed).

    The ``open`` itself never blocks (``O_NONBLOCK``: a FIFO would block it until a writer comes) and the kind is
    checked on the open descriptor (``fstat``), so a file swapped for a FIFO in between is caught too. Raises
    :class:`~npgan.errors.FileKindError` naming ``what`` and the path for a FIFO, device, socket or directory;
    FileNotFoundError / PermissionError as ``open`` does.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise FileKindError(f"{what} {path} is a directory, not a file") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileKindError(f"{what} {path} is {file_kind(mode)}, not a regular file; npgan reads only "
                                "regular files")
        if fcntl is not None and flags & getattr(os, "O_NONBLOCK", 0):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


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
    file, 0o666 less the umask (not ``tempfile.mkstemp``'s private 0o600). The descriptor holds an exclusive
    ``flock`` on it: keep it open until the file is renamed into place (or removed), so that
    :func:`remove_stale_temps` in another process knows the file is being written. ``target`` itself is checked
    first (:func:`check_target`).
    """
    target = Path(target)
    check_target(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{os.getpid()}.{os.urandom(6).hex()}{suffix}"
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask
        except FileExistsError:  # pragma: no cover - 48 random bits collided
            continue
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # a sweeper may hold it a moment: it then sees a live PID
            except OSError:  # pragma: no cover - a file system without flock: the PID check alone guards it
                pass
        return fd, tmp
    raise FileExistsError(errno.EEXIST, f"no free temporary file name next to {target}")  # pragma: no cover


def publish(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the finished temporary file ``tmp`` over ``target`` with the usual permissions (0o666 less the
    umask), then fsync the directory. ``tmp`` must lie in ``target``'s directory (a rename is atomic there)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    check_target(target)
    os.replace(tmp, target)
    fsync_dir(Path(target).parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and a rename (never a half-written file).

    On any failure the temporary file is removed and the exception (e.g. OSError ENOSPC) propagates; ``path``
    keeps its previous content. The file gets the mode of any newly created file, 0o666 less the umask. A
    ``path`` that is a symlink or exists and is not a regular file is refused (:func:`check_target`).
    """
    path = Path(path)
    fd, tmp = temp_file(path)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
            check_target(path)  # again, just before the rename (the target may have changed meanwhile)
            os.replace(tmp, path)
        finally:
            os.close(fd)  # after the rename: the temporary file stays locked until it has its final name
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


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)\.(?P<tag>[0-9a-f]+)$")


def _pid_started_after(pid: int, mtime: float) -> bool:
    """Whether process ``pid`` started after ``mtime`` (seconds since the epoch): then it cannot have written a
    file last modified at ``mtime`` (its PID was reused). False when it cannot be told (no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        start = btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time in ticks
    except (OSError, ValueError, IndexError, StopIteration):
        return False
    return start > mtime + 1  # btime is whole seconds: a second's margin


def _writer_gone(pid: int, mtime: float) -> bool:
    """Whether the process that made a temporary file (PID ``pid``, last modified at ``mtime``) has ended: no
    process has that PID, or the one that has it started after the file's last change."""
    if pid == os.getpid():
        return _pid_started_after(pid, mtime)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return pid <= 0 or _pid_started_after(pid, mtime)
    return _pid_started_after(pid, mtime)


def append_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Append ``data`` to the regular file ``path`` (created if absent), never through a symlink
    (``O_NOFOLLOW``) and never to anything but a regular file (:class:`~npgan.errors.FileKindError`); the
    ``open`` never blocks (a FIFO)."""
    flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
             | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):  # a symlink, a directory, a FIFO without reader
            check_target(path)
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileKindError(f"{path} is {file_kind(mode)}; npgan writes only regular files: give another path")
        _write_all(fd, data)
    finally:
        os.close(fd)


def remove_stale_temps(directory: str | os.PathLike, suffix: str = TEMP_SUFFIX,
                       require_gone_writer: bool = False) -> list[Path]:
    """Delete the temporary files that killed npgan writers left in ``directory``; returns them.

    Only npgan's own are touched: ``.NAME.PID.XXXXXXXXXXXX`` + ``suffix`` (:func:`temp_file` names them so),
    regular files only (never a symlink); a user's ``.notes.tmp`` stays. A file whose ``flock`` another
    descriptor holds is being written and stays. With ``require_gone_writer`` (the shared image cache and
    download folders, where no writer lock guards the directory) the process named by the PID must also have
    ended, or have started after the file's last change (its PID reused). Without it (a run directory, under its
    writer lock: ``npgan resume`` calls it so) the lock alone decides.
    """
    removed = []
    for p in Path(directory).glob(f".*{suffix}"):
        m = _TEMP_NAME.match(p.name[:-len(suffix)])
        if m is None:
            continue
        try:
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                         | getattr(os, "O_CLOEXEC", 0))
        except OSError:  # a symlink (ELOOP), raced away, unreadable
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                continue
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer holds it
                except OSError:  # pragma: no cover - no flock here: the PID check decides alone
                    pass
            if require_gone_writer and not _writer_gone(int(m["pid"]), st.st_mtime):
                continue
            os.unlink(p)
            removed.append(p)
        except OSError:  # pragma: no cover - raced with another cleaner
            pass
        finally:
            os.close(fd)
    return removed


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of the file at ``path`` as lowercase hex, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
