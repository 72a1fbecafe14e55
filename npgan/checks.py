"""Argument checks: each returns the value or raises a one-line ValueError naming the argument, the rule and
the value it got.

    integer("batch_size", v, minimum=1)       -> int     "batch_size must be a positive integer, got 0"
    real("Adam: betas", b, 0, 1, high_open=True) -> float "Adam: betas must be a number in [0, 1), got 1.5"
    one_of("loss", v, LOSS_KINDS)             -> v       "unknown loss 'x'; choose one of minimax, ..."
    cli_type(integer, "--steps", minimum=1)   -> an argparse ``type=`` that parses the string and checks it

A bool is neither an integer nor a number here (``True`` is an int to Python, never a sensible size or rate);
numpy's scalars are (numbers.Integral, numbers.Real). The bottom floor: imports nothing from npgan.
"""

from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["integer", "real", "one_of", "cli_type"]


def integer(name: str, v: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``v`` as an int in [minimum, maximum] (either bound may be None)."""
    ok = isinstance(v, numbers.Integral) and not isinstance(v, bool)
    if ok and (minimum is None or v >= minimum) and (maximum is None or v <= maximum):
        return int(v)
    if maximum is not None:
        rule = f"an integer in [{minimum}, {maximum}]" if minimum is not None else f"an integer <= {maximum}"
    else:
        rule = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}")
    raise ValueError(f"{name} must be {rule}, got {v!r}")


def real(name: str, v: Any, low: float | None = None, high: float | None = None, low_open: bool = False,
         high_open: bool = False) -> float:
    """``v`` as a finite float in the interval from ``low`` to ``high`` (closed unless ``*_open``; None: no bound).

    Numbers (numbers.Real) and 0-d arrays count; bools and strings do not.
    """
    f = math.nan
    if isinstance(v, numbers.Real) and not isinstance(v, bool) or getattr(v, "ndim", None) == 0:
        try:
            f = float(v)
        except (TypeError, ValueError):
            pass
    if math.isfinite(f) and (low is None or (f > low if low_open else f >= low)) and (
            high is None or (f < high if high_open else f <= high)):
        return f
    if low is not None and high is not None:
        rule = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low == 0 and low_open:
        rule = "a positive number"
    elif low is not None:
        rule = f"a number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        rule = f"a number {'<' if high_open else '<='} {high:g}"
    else:
        rule = "a finite number"
    raise ValueError(f"{name} must be {rule}, got {v!r}")


def one_of(name: str, v: Any, choices: Iterable[Any]) -> Any:
    """``v`` if it is one of ``choices``."""
    choices = tuple(choices)
    if isinstance(v, str) and v in choices:
        return v
    raise ValueError(f"unknown {name} {v!r}; choose one of {', '.join(map(str, choices))}")


def cli_type(check: Callable[..., Any], name: str, *args: Any, **kwargs: Any) -> Callable[[str], Any]:
    """An argparse ``type=``: the option's string as an int, else a float, else itself, then ``check(name,
    value, *args, **kwargs)``; a failed check becomes argparse's error (one line naming the option)."""
    def convert(s: str) -> Any:
        v: Any = s
        for parse in (int, float):
            try:
                v = parse(s)
                break
            except ValueError:
                pass
        try:
            return check(name, v, *args, **kwargs)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert
