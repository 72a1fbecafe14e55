"""One writer per run directory: an exclusive lock on ``DIR/.npgan.lock``.

``npgan train`` and ``npgan resume`` (:class:`npgan.run.experiment.Run`) hold the lock for as long as they may write
to the directory; a second writer fails at once with :class:`RunLockedError` (a :class:`~npgan.errors.RunError`,
exit 2) naming the holder's PID, host and start time, before it writes anything. Readers (``npgan sample``,
``npgan info``, :func:`npgan.run.experiment.load_run_readonly`) take no lock and write nothing: every file a writer
replaces is replaced atomically (a rename), so a reader that opens a file once reads one complete version.

How. ``fcntl.flock(fd, LOCK_EX | LOCK_NB)`` on the lock file. The kernel owns the lock, not the file: it is
released when the holder closes the file descriptor — on a normal return, on an exception, on a signal that
ends the process, and on SIGKILL or a crash too. So there is no stale lock to detect or break: a lock file
left behind by a killed process holds an old PID as text but no lock, and the next writer simply takes it (and
overwrites the text). The file itself is never deleted (deleting it would let a third process lock a new file
while a second still holds the old one). Limits: flock is advisory (it stops npgan, not ``rm``); on NFS it is
emulated with POSIX locks by Linux ≥ 2.6.12 and works across clients there, on older or other network file
systems it may not; two Run objects in one process conflict as two processes do (flock locks belong to open
file descriptions). Where ``fcntl`` is missing (Windows) the lock is not taken.

The lock file is opened with ``O_NOFOLLOW`` and must be a regular file: a ``.npgan.lock`` that is a symlink (whose
target a writer would truncate), a FIFO, device or directory is refused with one :class:`~npgan.errors.RunError`
line naming it, before anything is written. Its text is read at most :data:`MAX_LOCK_BYTES` and never blocks.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

from ..errors import RunError
from ..files import file_kind, open_regular

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; one writer is then the user's job
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "holder"]

LOCK_NAME = ".npgan.lock"

#: the lock file's text is a short JSON line; reading stops there (a huge or endless file is not read)
MAX_LOCK_BYTES = 64 * 1024


class RunLockedError(RunError):
    """Another process holds a run directory's writer lock; ``pid`` is its process id (None when unknown)."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


def holder(directory: str | os.PathLike) -> dict[str, Any]:
    """What the lock file says about its (last) holder: ``pid``, ``host``, ``started``, ``command``; {} if unknown.

    The text is only informative: whether the lock is held is the kernel's business (:class:`RunLock`). A lock
    file that is not a regular file (a FIFO is never opened for a blocking read), larger than
    :data:`MAX_LOCK_BYTES`, not JSON or nested too deeply reads as {}.
    """
    try:
        with open_regular(Path(directory) / LOCK_NAME, "lock file") as f:
            raw = f.read(MAX_LOCK_BYTES + 1)
        if len(raw) > MAX_LOCK_BYTES:
            return {}
        info = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return info if isinstance(info, dict) else {}


def _locked(directory: Path) -> RunLockedError:
    info = holder(directory)
    pid = info.get("pid") if isinstance(info.get("pid"), int) else None
    who = (f"PID {pid} on {info.get('host', '?')}, {info.get('command') or 'npgan'} since "
           f"{info.get('started', '?')}" if pid is not None else "PID unknown")
    return RunLockedError(f"{directory} is being written by another npgan process ({who}); wait for "
                          "it to finish or stop it, or read the run with 'npgan sample'", pid=pid)


def check_unlocked(directory: str | os.PathLike) -> None:
    """Raise :class:`RunLockedError` naming the holder when a writer holds ``directory``'s lock; writes nothing
    (the lock file is opened read-only, and only when it exists)."""
    path = Path(directory) / LOCK_NAME
    if fcntl is None or path.is_symlink() or not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _locked(Path(directory)) from None
    finally:
        os.close(fd)  # closing drops a lock taken here


def _open_lock_file(path: Path) -> int:
    """The lock file opened for reading and writing (created if absent), never through a symlink and only when it
    is a regular file: :class:`~npgan.errors.RunError` naming it otherwise (a symlinked lock file would make the
    writer truncate the link's target; a FIFO would block)."""
    flags = (os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        if os.path.islink(path):
            raise RunError(f"lock file {path} is a symlink (to {os.readlink(path)}); npgan never opens a lock file "
                           "through a symlink: remove it") from None
        if os.path.isdir(path):
            raise RunError(f"lock file {path} is a directory; remove it") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise RunError(f"lock file {path} is {file_kind(mode)}, not a regular file; remove it")
    return fd


class RunLock:
    """The exclusive writer lock of ``directory`` (which must exist); acquired on construction.

    Use as a context manager or call :meth:`release`; closing the descriptor (also by garbage collection or the
    process ending in any way) releases it. Raises :class:`RunLockedError` when another process holds it.
    """

    def __init__(self, directory: str | os.PathLike, command: str = "") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None
        if fcntl is None:  # pragma: no cover
            return
        fd = _open_lock_file(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _locked(self.directory) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        try:  # informative only: a failure to write it does not release the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        except OSError:
            pass

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Release the lock (idempotent). The file stays; its text is left to say who held it last."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the open file description drops the flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - at interpreter shutdown os may be gone; the kernel releases anyway
            pass
