"""A run's history.csv: one row per training step (:data:`npgan.gan.HISTORY_FIELDS`), on disk only, so that a long
run's memory does not grow with its length.

Rows are appended as training goes; a resume or a rollback cuts the file back to the checkpoint's step (the later
rows are recomputed identically). Reading stops at a damaged or cut row, which a kill may leave at the end.

The columns are :data:`~npgan.gan.HISTORY_FIELDS`, and for a run with simultaneous steps (extragradient, consensus)
also :data:`~npgan.gan.trainer.SIMULTANEOUS_FIELDS` after them (``create(path, trainer.history_fields)``); a file's
own header says which it has, and reading and cutting keep them.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..files import atomic_write_text
from ..gan.trainer import HISTORY_FIELDS, SIMULTANEOUS_FIELDS

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
    fields = _fields(reader.fieldnames)
    for r in reader:
        try:
            if upto is None or int(r["step"]) <= upto:
                r = {**r, **absent}
                rows.append({k: (int(v) if k == "step" else float(v)) for k in fields for v in (r[k],)})
        except (KeyError, ValueError, TypeError):
            break  # a damaged row: drop it and what follows
    return rows


def _fields(header: Any) -> tuple[str, ...]:
    """The columns a file's header calls for: HISTORY_FIELDS, then the optional columns it has."""
    return HISTORY_FIELDS + tuple(k for k in SIMULTANEOUS_FIELDS if k in (header or ()))


def _header(path: Path) -> tuple[str, ...]:
    """The columns of an existing history.csv (HISTORY_FIELDS when it has no readable header)."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            first = f.readline()
    except FileNotFoundError:
        return HISTORY_FIELDS
    return _fields(first.strip().split(","))


def create(path: Path, fields: tuple[str, ...] = HISTORY_FIELDS) -> None:
    """A new history.csv holding only the header (written atomically): ``fields``, HISTORY_FIELDS or a trainer's
    ``history_fields``."""
    unknown = [k for k in fields if k not in HISTORY_FIELDS + SIMULTANEOUS_FIELDS]
    if tuple(fields[:len(HISTORY_FIELDS)]) != HISTORY_FIELDS or unknown:
        raise ValueError(f"history.csv columns must be HISTORY_FIELDS, then any of {SIMULTANEOUS_FIELDS}; got "
                         f"{tuple(fields)}")
    atomic_write_text(path, ",".join(fields) + "\n")


def append(path: Path, rows: list[dict[str, float]]) -> None:
    """Append ``rows`` (nothing when there are none), in the columns of the file's header."""
    if rows:
        with open(path, "a", newline="") as f:
            _write_rows(f, rows, _header(path))


def cut(path: Path, upto: int) -> None:
    """Keep the rows up to step ``upto`` (written atomically, with today's header and the file's optional
    columns)."""
    fields = _header(path)
    buf = io.StringIO()
    buf.write(",".join(fields) + "\n")
    _write_rows(buf, read_history(path, upto), fields)
    atomic_write_text(path, buf.getvalue())


def _write_rows(f: Any, rows: list[dict[str, float]], fields: tuple[str, ...] = HISTORY_FIELDS) -> None:
    w = csv.writer(f, lineterminator="\n")
    for r in rows:
        w.writerow([str(v) if isinstance(v, int) else repr(float(v)) for v in (r[k] for k in fields)])
    f.flush()
