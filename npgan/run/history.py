"""A run's history.csv: one row per training step (:data:`npgan.gan.HISTORY_FIELDS`), on disk only, so that a long
run's memory does not grow with its length.

Rows are appended as training goes; a resume or a rollback cuts the file back to the checkpoint's step (the later
rows are recomputed identically). A last line without its newline is a row a kill cut short: it is dropped.

history.csv is never silently shortened: a damaged row (not numbers, a wrong number of fields, a step that does
not follow the one before) is skipped when reading, and when :func:`cut` rewrites the file it first keeps the
file as it was, byte for byte, beside it (``history.csv.damaged``, or ``.damaged.1`` ... when taken) and returns
what it did, so that the caller says so in one line; every valid row up to the checkpoint's step is kept.

The columns are :data:`~npgan.gan.HISTORY_FIELDS`, and for a run with simultaneous steps (extragradient, consensus)
also :data:`~npgan.gan.trainer.SIMULTANEOUS_FIELDS` after them (``create(path, trainer.history_fields)``); a file's
own header says which it has, and reading, appending and cutting keep them. A run without those options writes the
bytes it always wrote.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, NamedTuple

from ..files import append_bytes, atomic_write_bytes, atomic_write_text, open_regular
from ..gan.trainer import HISTORY_FIELDS, SIMULTANEOUS_FIELDS

__all__ = ["read_history", "create", "append", "cut", "HistoryScan", "scan_history"]


class HistoryScan(NamedTuple):
    """A history.csv as read: its valid rows, the 1-based line numbers of the damaged ones, its raw bytes."""

    rows: list[dict[str, float]]
    damaged: list[int]
    raw: bytes


def scan_history(path: Path) -> HistoryScan:
    """Every valid row of a history.csv and the line numbers of the damaged ones (a last line cut by a kill, which
    has no newline, is neither). An absent file has no rows."""
    try:
        with open_regular(path, "history file") as f:
            raw = f.read()
    except FileNotFoundError:
        return HistoryScan([], [], b"")
    text = raw.decode("utf-8", errors="replace")
    if not text.endswith("\n"):  # a line cut by a kill: its last number may be cut short too
        text = text[:text.rfind("\n") + 1]
    lines = text.splitlines(keepends=True)
    if not lines:
        return HistoryScan([], [], raw)
    header = next(csv.reader([lines[0]]), [])
    # a column added since the file was written (gp) reads as NaN
    absent = {k: "nan" for k in HISTORY_FIELDS if k not in header}
    fields = _fields(header)
    rows: list[dict[str, float]] = []
    damaged: list[int] = []
    last = 0
    for lineno, line in enumerate(lines[1:], start=2):
        values = next(csv.reader([line]), [])
        try:
            if len(values) != len(header):
                raise ValueError("wrong number of fields")
            r = {**dict(zip(header, values)), **absent}
            row = {k: (int(r[k]) if k == "step" else float(r[k])) for k in fields}
            if row["step"] <= last:
                raise ValueError("step out of order")
        except (KeyError, ValueError, TypeError):
            damaged.append(lineno)
            continue
        last = int(row["step"])
        rows.append(row)
    return HistoryScan(rows, damaged, raw)


def read_history(path: Path, upto: int | None = None) -> list[dict[str, float]]:
    """The valid rows of a history.csv (up to step ``upto``); damaged rows are skipped (:func:`scan_history`)."""
    return [r for r in scan_history(path).rows if upto is None or r["step"] <= upto]


def _fields(header: Any) -> tuple[str, ...]:
    """The columns a file's header calls for: HISTORY_FIELDS, then the optional columns it has."""
    return HISTORY_FIELDS + tuple(k for k in SIMULTANEOUS_FIELDS if k in (header or ()))


def _header(path: Path) -> tuple[str, ...]:
    """The columns of an existing history.csv (HISTORY_FIELDS when it has no readable header)."""
    try:
        with open_regular(path, "history file") as f:
            first = f.readline().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return HISTORY_FIELDS
    return _fields(next(csv.reader([first]), []))


def create(path: Path, fields: tuple[str, ...] = HISTORY_FIELDS) -> None:
    """A new history.csv holding only the header (written atomically): ``fields``, HISTORY_FIELDS or a trainer's
    ``history_fields``."""
    unknown = [k for k in fields if k not in HISTORY_FIELDS + SIMULTANEOUS_FIELDS]
    if tuple(fields[:len(HISTORY_FIELDS)]) != HISTORY_FIELDS or unknown:
        raise ValueError(f"history.csv columns must be HISTORY_FIELDS, then any of {SIMULTANEOUS_FIELDS}; got "
                         f"{tuple(fields)}")
    atomic_write_text(path, ",".join(fields) + "\n")


def append(path: Path, rows: list[dict[str, float]]) -> None:
    """Append ``rows`` (nothing when there are none) in the columns of the file's header; a regular file only,
    never through a symlink."""
    if rows:
        buf = io.StringIO()
        _write_rows(buf, rows, _header(path))
        append_bytes(path, buf.getvalue().encode("utf-8"))


class CutReport(NamedTuple):
    """What :func:`cut` did about damaged rows: their line numbers and where the file as it was is kept."""

    damaged: list[int]
    kept_as: Path


def cut(path: Path, upto: int) -> CutReport | None:
    """Keep the rows up to step ``upto`` (written atomically, with today's header and the file's optional columns).

    When the file holds damaged rows, it is first kept as it was beside it (``NAME.damaged``, ``.damaged.1``, ...)
    and a :class:`CutReport` is returned (the caller says so); else None.
    """
    scan = scan_history(path)
    report = None
    if scan.damaged:
        aside = _free_name(path)
        atomic_write_bytes(aside, scan.raw)
        report = CutReport(scan.damaged, aside)
    buf = io.StringIO()
    fields = _header(path)
    buf.write(",".join(fields) + "\n")
    _write_rows(buf, [r for r in scan.rows if r["step"] <= upto], fields)
    atomic_write_text(path, buf.getvalue())
    return report


def describe_cut(path: Path, report: CutReport, upto: int) -> str:
    """The one line that says what :func:`cut` did with a damaged history.csv."""
    lines = ", ".join(map(str, report.damaged[:5])) + (" ..." if len(report.damaged) > 5 else "")
    return (f"warning: {path} had {len(report.damaged)} damaged row(s) (line {lines}); the file as it was is kept as "
            f"{report.kept_as}, and {path} keeps every valid row up to step {upto}")


def _free_name(path: Path) -> Path:
    """``path.damaged``, or the first free ``path.damaged.N``."""
    cand = path.with_name(path.name + ".damaged")
    n = 0
    while cand.exists() or cand.is_symlink():
        n += 1
        cand = path.with_name(f"{path.name}.damaged.{n}")
    return cand


def _write_rows(f: Any, rows: list[dict[str, float]], fields: tuple[str, ...] = HISTORY_FIELDS) -> None:
    w = csv.writer(f, lineterminator="\n")
    for r in rows:
        w.writerow([str(v) if isinstance(v, int) else repr(float(v)) for v in (r[k] for k in fields)])
