"""A run's history.csv: one row per training step (:data:`npgan.gan.HISTORY_FIELDS`), on disk only, so that a long
run's memory does not grow with its length.

Rows are appended as training goes; a resume or a rollback cuts the file back to the checkpoint's step (the later
rows are recomputed identically). Reading stops at a damaged or cut row, which a kill may leave at the end.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..files import atomic_write_text
from ..gan.trainer import HISTORY_FIELDS

__all__ = ["read_history", "create", "append", "cut"]


def read_history(path: Path, upto: int | None = None) -> list[dict[str, float]]:
    """The rows of a history.csv (up to step ``upto``), stopping at a damaged or cut row."""
    rows: list[dict[str, float]] = []
    if not path.exists():
        return rows
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.endswith("\n"):  # a line cut by a kill: its last number may be cut short too
        text = text[:text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    # a column added since the file was written (gp) reads as NaN; a cut row still stops the reading (None)
    absent = {k: "nan" for k in HISTORY_FIELDS if k not in (reader.fieldnames or ())}
    for r in reader:
        try:
            if upto is None or int(r["step"]) <= upto:
                r = {**r, **absent}
                rows.append({k: (int(v) if k == "step" else float(v)) for k in HISTORY_FIELDS for v in (r[k],)})
        except (KeyError, ValueError, TypeError):
            break  # a damaged row: drop it and what follows
    return rows


def create(path: Path) -> None:
    """A new history.csv holding only the header (written atomically)."""
    atomic_write_text(path, ",".join(HISTORY_FIELDS) + "\n")


def append(path: Path, rows: list[dict[str, float]]) -> None:
    """Append ``rows`` (nothing when there are none)."""
    if rows:
        with open(path, "a", newline="") as f:
            _write_rows(f, rows)


def cut(path: Path, upto: int) -> None:
    """Keep the rows up to step ``upto`` (written atomically, with today's header)."""
    buf = io.StringIO()
    buf.write(",".join(HISTORY_FIELDS) + "\n")
    _write_rows(buf, read_history(path, upto))
    atomic_write_text(path, buf.getvalue())


def _write_rows(f: Any, rows: list[dict[str, float]]) -> None:
    w = csv.writer(f, lineterminator="\n")
    for r in rows:
        w.writerow([str(v) if isinstance(v, int) else repr(float(v)) for v in (r[k] for k in HISTORY_FIELDS)])
    f.flush()
