"""What every demo shares: its command line, its output folder, figures, and printing its numbers.

Each demo is ``python demos/NAME.py [--device cpu|gpu] [--quick] [--out DIR] [--seed N]``; its ``main(argv)``
prints the numbers it proves and returns them as a dict (the tests call ``main(["--quick", ...])``).
Figures are PNGs written with matplotlib's Agg backend to ``demo_out/NAME/`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import npgan

DPI = 80


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """The common options of a demo; a demo adds its own to the returned parser."""
    p = argparse.ArgumentParser(prog=f"demos/{name}.py", description=description)
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="where to compute (default cpu)")
    p.add_argument("--quick", action="store_true", help="a tiny run of a few seconds (for the tests)")
    p.add_argument("--out", default=None, help=f"folder for the figures (default demo_out/{name})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


def setup(name: str, args: argparse.Namespace) -> Path:
    """Select the device, seed npgan, create and return the output folder."""
    try:
        npgan.set_device(args.device)
    except npgan.DeviceError as exc:
        raise SystemExit(f"{name}: --device {args.device}: {exc}") from None
    npgan.manual_seed(args.seed)
    out = Path(args.out if args.out else os.path.join("demo_out", name))
    out.mkdir(parents=True, exist_ok=True)
    return out


def plt() -> Any:
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as pyplot

    return pyplot


def save(fig: Any, path: Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG and close it; returns the path."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt().close(fig)
    print(f"  wrote {path}")
    return path


def heading(text: str) -> None:
    print()
    print(text)
    print("-" * len(text))


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5) and math.isfinite(v):
            return f"{v:.3e}"
        return f"{v:.4f}"
    return str(v)


def show(label: str, value: Any, note: str = "") -> None:
    """One printed number: ``  label ............ value   (note)``."""
    print(f"  {label:<60s} {fmt(value):>10s}" + (f"   {note}" if note else ""))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain-text table, columns sized to their contents."""
    cells = [[str(h) for h in header]] + [[fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, r in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if k == 0:
            print("  " + "  ".join("-" * w for w in widths))


class Timer:
    """Wall time since construction, for the "ran in N s" line."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


def finish(name: str, result: dict[str, Any], timer: Timer, out: Path) -> dict[str, Any]:
    result["seconds"] = round(timer(), 2)
    result["out"] = str(out)
    print(f"\n{name}: done in {result['seconds']:.1f} s; figures in {out}/")
    return result


def tensor(a: Any, requires_grad: bool = False, dtype: Any = None) -> npgan.Tensor:
    """A host array as a tensor on the current device (``--device gpu`` puts it on the GPU)."""
    from npgan import backend

    return npgan.Tensor(backend.asarray(a, dtype=dtype), requires_grad=requires_grad)
