"""docs/extending.md runs as printed: its Python blocks, in order, as one script; each block followed by a
``text`` block must print exactly that. Also: viz shows a Function's saved arrays by shape and dtype only."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

import npgan
from npgan import Function, viz

DOC = Path(__file__).resolve().parent.parent / "docs" / "extending.md"
README = DOC.parent.parent / "README.md"


def _blocks():
    """(code, expected output or None) for every ```python block, in order."""
    text = DOC.read_text(encoding="utf-8")
    found = re.findall(r"```(python|text)\n(.*?)```", text, re.S)
    out = []
    for k, (lang, body) in enumerate(found):
        if lang == "python":
            nxt = found[k + 1] if k + 1 < len(found) else None
            out.append((body, nxt[1] if nxt and nxt[0] == "text" else None))
    return out


def _run(blocks):
    ns: dict = {"__name__": "__main__"}
    for i, (code, expected) in enumerate(blocks):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(code, f"docs/extending.md block {i + 1}", "exec"), ns)
        if expected is not None:
            got = [ln.rstrip() for ln in buf.getvalue().strip("\n").splitlines()]
            assert got == [ln.rstrip() for ln in expected.strip("\n").splitlines()], f"block {i + 1} printed:\n" \
                + buf.getvalue()
    return ns


def test_the_doc_has_its_examples_and_the_readme_links_it():
    blocks = _blocks()
    assert len(blocks) >= 6
    assert sum(expected is not None for _, expected in blocks) >= 5
    readme = README.read_text(encoding="utf-8")
    assert "(docs/extending.md)" in readme and "(docs/reliability.md)" in readme


def test_the_code_blocks_run_and_print_what_the_doc_shows():
    blocks = [b for b in _blocks() if "import torch" not in b[0]]
    ns = _run(blocks)
    # the doc's ops are real ones: a reused instance gets the right gradient too
    x = npgan.tensor([0.3, -1.2], requires_grad=True, dtype="float64")
    f = ns["Softsign"]()
    assert npgan.gradcheck(lambda t: (f(t) * f(t * 3)).sum(), [x])


def test_the_pytorch_parity_block_runs():
    pytest.importorskip("torch", reason="PyTorch is not installed: the doc's parity block needs torch")
    _run(_blocks())


class _KeepsArrays(Function):
    """y = x · w.   gx = gy · w."""

    def __init__(self, w):
        self.w = w  # an array option

    def forward(self, x):
        self.x = x  # saved, though not needed: shows that explain lists it
        return x * self.w

    def backward(self, gy):
        return gy * self.w


def test_explain_shows_arrays_by_shape_and_dtype_never_their_values():
    w = np.full((50, 40), 0.123456789)
    x = npgan.tensor(np.full((50, 40), 7.654321), requires_grad=True, dtype="float64")
    y = _KeepsArrays(w)(x).sum()
    text = viz.explain(y, file=io.StringIO())
    assert "_KeepsArrays (w=array(50, 40) float64): (50, 40) float64 -> (50, 40) float64" in text
    assert "saved for backward: x array(50, 40) float64" in text
    assert "0.123" not in text and "7.65" not in text and "..." not in text
    assert "_KeepsArrays\\nw=array(50, 40) float64" in viz.graph(y)
