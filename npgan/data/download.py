"""Fetching a data set's files: streamed to a temporary file, checked by SHA-256, then renamed into place; and
npgan's cache directory.

Nothing here runs at import or load time: only ``npgan download`` (or a call of a data set's ``download_*``)
fetches. A file already present with the right checksum is kept and not fetched again; a wrong or interrupted
download leaves nothing under the target's name. The temporary file (``.NAME.PID.XXXXXXXXXXXX.part``) is removed
on any error and on Ctrl-C; one left by a process that was killed (SIGKILL, a power cut) is removed by the next
download into that folder (:func:`npgan.files.remove_stale_temps`: only when no process holds its lock and the
process named in it has ended).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from ..files import check_target, publish, remove_stale_temps, sha256_file, temp_file

__all__ = ["fetch_verified", "download_file", "cache_dir", "PART_SUFFIX"]

#: the ending of a download's temporary file (``.NAME.PID.XXXXXXXXXXXX.part``)
PART_SUFFIX = ".part"


def cache_dir() -> str:
    """npgan's cache directory: ``$NPGAN_CACHE``, else ``$XDG_CACHE_HOME/npgan``, else ``~/.cache/npgan``."""
    if os.environ.get("NPGAN_CACHE"):
        return os.environ["NPGAN_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "npgan")


def fetch_verified(url: str, target: str, sha256: str, timeout: float, caller: str) -> None:
    """Stream ``url`` to a temporary file beside ``target``, check its SHA-256, then rename it onto ``target``.

    ``caller`` (e.g. "download_mnist") starts the error messages. Raises ValueError on a checksum mismatch (the
    file is not kept) and OSError when the server cannot be read; the temporary file is removed either way.
    """
    import urllib.request

    fd, tmp = temp_file(target, PART_SUFFIX)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:  # open (and locked) until the file has its final name
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
            got = h.hexdigest()
            if got != sha256.lower():
                raise ValueError(f"{caller}: checksum mismatch for {url}: SHA-256 {got}, expected {sha256}; "
                                 "the file was not kept")
            out.flush()
            os.fsync(out.fileno())
            publish(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def download_file(caller: str, data_dir: str, name: str, mirrors: Sequence[str], sha256: str,
                  timeout: float) -> str:
    """``data_dir/name``, fetched from the first of ``mirrors`` (URL prefixes) that serves it with ``sha256``.

    A file already there with the right checksum is kept untouched; one with a wrong checksum is replaced by a
    verified download. Raises ValueError (prefixed ``caller:``) when every mirror served a wrong file, OSError
    naming each URL when none could be read, :class:`~npgan.errors.FileKindError` when ``name`` is taken by a
    symlink to a wrong file or by anything but a regular file (never replaced). Returns the path.
    """
    target = os.path.join(data_dir, name)
    if os.path.isdir(data_dir):
        remove_stale_temps(data_dir, PART_SUFFIX, require_gone_writer=True)  # parts killed downloads left
    if os.path.isfile(target) and sha256_file(target) == sha256.lower():
        return target  # a valid file (or a symlink to one) is never overwritten (nor fetched again)
    check_target(target)  # a symlink, FIFO, device or directory in its place: refused, never replaced
    errors = []
    for m in mirrors:
        url = m.rstrip("/") + "/" + name
        try:
            fetch_verified(url, target, sha256, timeout, caller)
            return target
        except (OSError, ValueError) as exc:
            if callable(getattr(exc, "close", None)):  # an HTTPError holds its connection until closed
                exc.close()
            errors.append((url, exc))
    if all(isinstance(e, ValueError) for _, e in errors):
        raise ValueError("; ".join(str(e) for _, e in errors))
    raise OSError(f"{caller}: could not fetch {name}: "
                  + "; ".join(f"{u}: {type(e).__name__}: {e}" for u, e in errors))
