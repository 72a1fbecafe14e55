"""What this machine offers a run: the memory available on the current device, and what a run's floating-point
results depend on besides its data (npgan's thread count and the BLAS)."""

from __future__ import annotations

import os
from typing import Any

from .. import backend, parallel

__all__ = ["available_memory", "format_bytes", "run_environment"]


def available_memory() -> int | None:
    """Bytes of memory available for new allocations on the current device (None when unknown).

    CPU: ``MemAvailable`` of /proc/meminfo (free plus reclaimable caches), else ``os.sysconf`` free pages
    (SC_AVPHYS_PAGES · SC_PAGE_SIZE). GPU: CuPy's free device memory.
    """
    if backend.get_device() != "cpu":  # pragma: no cover - needs a GPU
        try:
            return int(backend.cupy.cuda.runtime.memGetInfo()[0])
        except Exception:  # noqa: BLE001
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def format_bytes(n: float) -> str:
    """``n`` bytes for a message: "512 B", "1.5 KiB", "3.2 GiB" (three significant digits)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} EiB"  # pragma: no cover


def run_environment() -> dict[str, Any]:
    """What a run's floating-point results depend on besides its data: npgan's thread count and the BLAS
    (name, version, threads as threadpoolctl reports them)."""
    blas = [{k: lib[k] for k in ("name", "version", "threads")} for lib in parallel.blas_libraries()]
    return {"threads": parallel.get_num_threads(), "blas": blas}
