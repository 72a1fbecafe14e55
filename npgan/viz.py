"""Look at the graph that autograd recorded: Graphviz DOT text, a picture, and each step's backward formula.

    loss = F.binary_cross_entropy_with_logits(model(x), t)
    print(viz.graph(loss, model))        # DOT text: Tensors (shape, dtype, name) and the Functions between them
    viz.render(loss, "graph.png", model) # a PNG when Graphviz's ``dot`` is installed, else graph.dot
    viz.explain(loss, model)             # every Function in the order it ran, with its backward formula
    loss.backward()                      # only now: backward() frees the graph

The graph is the one :meth:`Tensor.backward` walks: each non-leaf tensor points to the :class:`Function` that
made it (``tensor.creator``), each Function to its input tensors (``function.inputs``). ``backward()`` frees it
(every Function drops its inputs and saved arrays), so call these functions before ``backward()``, or call
``backward(retain_graph=True)``; on a freed graph they raise a ``RuntimeError`` that says so. Nothing is recorded
inside ``no_grad()`` or when no input requires a gradient: such a result is a lone leaf.

``names``: a :class:`~npgan.nn.Module` (its parameters are labelled with their ``state_dict`` keys, e.g.
``0.weight``) or a mapping from name to tensor; a tensor's own ``.name`` is used when set.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from .backend import is_array
from .tensor import N_OPTIONS_KEY, Function, GraphFreedError, Tensor, graph_functions

__all__ = ["graph", "render", "explain", "functions_in_order", "backward_formula", "function_classes"]

# A line of a docstring that states a gradient: "gx = …", "gW = …", "gx̂ = …", "∂L/∂W₂ = …", "gp_i = …".
_GRAD_LINE = re.compile(r"(^|[\s(,;])(g[^\s=]{0,6}|∂\S*)\s*=")


def _name_map(names: Any) -> dict[int, str]:
    if names is None:
        return {}
    if hasattr(names, "named_parameters"):
        names = dict(names.named_parameters())
    if not isinstance(names, Mapping):
        raise TypeError(f"names must be a Module or a mapping from name to Tensor, got {type(names).__name__}")
    return {id(t): str(k) for k, t in names.items() if isinstance(t, Tensor)}


def functions_in_order(root: Tensor) -> list[Function]:
    """The Functions recorded on the way to ``root``, in an order in which they could have run (inputs first).

    Raises RuntimeError when ``backward()`` has already freed the graph.
    """
    if not isinstance(root, Tensor):
        raise TypeError(f"expected a Tensor, got {type(root).__name__}")
    try:
        return graph_functions(root)
    except GraphFreedError as exc:
        raise RuntimeError(f"the graph was freed by backward() (at {exc.function_name}): call viz before "
                           "backward(), or call backward(retain_graph=True)") from None


def _tensors(root: Tensor, fns: list[Function]) -> list[Tensor]:
    """Every tensor of the graph once: each Function's inputs, then the root."""
    out: dict[int, Tensor] = {}
    for f in fns:
        for t in f.inputs:
            out.setdefault(id(t), t)
    out.setdefault(id(root), root)
    return list(out.values())


def _fmt_value(v: Any) -> str:
    """An option as text: numbers and tuples by value, an array or a tensor by its shape and dtype only."""
    if isinstance(v, Tensor):
        v = v.data
    if is_array(v):
        return f"array{tuple(v.shape)} {v.dtype}"
    if isinstance(v, float):
        return f"{v:g}"
    if hasattr(v, "itemsize") and hasattr(v, "name"):  # a dtype
        return str(v.name)
    text = repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _split(f: Function) -> tuple[dict[str, Any], dict[str, Any]]:
    """A recorded Function's options (what __init__ set, before its first call) and what forward saved."""
    d = getattr(f, "__dict__", {})
    n = d.get(N_OPTIONS_KEY)
    if n is None:  # never called through Function.__call__: no boundary is known, show it all as options
        return dict(d), {}
    items = list(d.items())
    return dict(items[:n]), dict(items[n + 1:])


def _options(f: Function) -> str:
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in _split(f)[0].items())


def _saved(f: Function) -> str:
    return ", ".join(f"{k} {_fmt_value(v)}" for k, v in _split(f)[1].items())


def _describe(t: Tensor, names: dict[int, str]) -> str:
    name = names.get(id(t)) or t.name
    shape = "(" + ", ".join(str(s) for s in t.shape) + ("," if t.ndim == 1 else "") + ")"
    return f"{name + ' ' if name else ''}{shape} {t.dtype}"


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def graph(tensor: Tensor, names: Any = None) -> str:
    """The graph recorded on the way to ``tensor`` as Graphviz DOT text.

    Nodes: one per Tensor (label: name if known, shape, dtype; parameters — leaves that require a gradient —
    are blue boxes, constants gray, the result bold) and one per Function (its class name and options, yellow).
    Edges run in the direction of the forward pass: input tensor → Function → output tensor; an edge into a
    Function with several inputs is labelled with the input's position.
    """
    names_ = _name_map(names)
    fns = functions_in_order(tensor)
    tensors = _tensors(tensor, fns)
    tid = {id(t): f"t{k}" for k, t in enumerate(tensors)}
    fid = {id(f): f"f{k}" for k, f in enumerate(fns)}
    lines = ["digraph npgan {", '  rankdir="TB";', '  node [fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=8];']
    for t in tensors:
        label = _describe(t, names_)
        if t is tensor:
            style = 'shape=ellipse, style="filled,bold", fillcolor="#d9f2d9", penwidth=2'
        elif t.creator is not None:
            style = 'shape=ellipse, style=filled, fillcolor="#ffffff"'
        elif t.requires_grad:
            style = 'shape=box, style=filled, fillcolor="#cfe2ff"'
        else:
            style = 'shape=box, style=filled, fillcolor="#eeeeee"'
        lines.append(f'  {tid[id(t)]} [label="{_esc(label)}", {style}];')
    for f in fns:
        opts = _options(f)
        label = type(f).__name__ + (f"\n{opts}" if opts else "")
        tooltip = (inspect.getdoc(type(f)) or "").split("\n")[0]
        lines.append(f'  {fid[id(f)]} [label="{_esc(label)}", shape=box, style="rounded,filled", '
                     f'fillcolor="#fff3c4", tooltip="{_esc(tooltip)}"];')
    for f in fns:
        many = len(f.inputs) > 1
        for i, t in enumerate(f.inputs):
            attr = f' [label="{i}"]' if many else ""
            lines.append(f"  {tid[id(t)]} -> {fid[id(f)]}{attr};")
    for t in tensors:
        if t.creator is not None:
            lines.append(f"  {fid[id(t.creator)]} -> {tid[id(t)]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(tensor: Tensor, path: str | os.PathLike, names: Any = None) -> Path:
    """Draw the graph of ``tensor``: a PNG at ``path`` when Graphviz's ``dot`` program is on the PATH.

    Without ``dot``, writes the DOT text next to it (``path`` with the suffix ``.dot``), prints where it is and
    how to draw it, and returns that path. Returns the path of the file written.
    """
    path = Path(path)
    text = graph(tensor, names)
    dot = shutil.which("dot")
    if dot is None:
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(text, encoding="utf-8")
        print(f"viz.render: Graphviz's 'dot' program was not found, so no PNG; wrote the graph to {dot_path} "
              f"(draw it with: dot -Tpng {dot_path} -o {path.with_suffix('.png')})")
        return dot_path
    fmt = path.suffix.lstrip(".") or "png"
    proc = subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=text.encode("utf-8"), capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"viz.render: {dot} -T{fmt} failed with exit code {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    return path


def backward_formula(fn: Function | type, full: bool = False) -> str:
    """The math of a Function class from its docstring: the first line and every paragraph that states a
    gradient (all of it with ``full=True``, or when no paragraph looks like a gradient)."""
    cls = fn if isinstance(fn, type) else type(fn)
    doc = inspect.getdoc(cls) or ""
    paragraphs = [p for p in re.split(r"\n\s*\n", doc) if p.strip()]
    if full or not paragraphs:
        return doc
    first, rest = paragraphs[0].splitlines(), paragraphs[1:]
    picked = [paragraphs[0]] if _GRAD_LINE.search(paragraphs[0]) else [first[0]]
    picked += [p for p in rest if _GRAD_LINE.search(p)]
    if len(picked) == 1 and not _GRAD_LINE.search(picked[0]):
        return doc
    return "\n".join(picked)


def function_classes() -> list[type]:
    """Every :class:`Function` subclass defined in npgan (all its modules are imported first), sorted by module
    and name: the differentiable ops whose backward passes docs/math.md derives."""
    import importlib
    import pkgutil

    import npgan

    for m in pkgutil.walk_packages(npgan.__path__, "npgan."):
        importlib.import_module(m.name)
    found: dict[type, None] = {}
    stack = list(Function.__subclasses__())
    while stack:
        c = stack.pop()
        if c.__module__.startswith("npgan.") and c not in found:
            found[c] = None
        stack.extend(c.__subclasses__())
    return sorted(found, key=lambda c: (c.__module__, c.__qualname__))


def explain(tensor: Tensor, names: Any = None, full: bool = False, file: TextIO | None = None) -> str:
    """Print (to ``file``, default stdout) and return every recorded Function in the order it ran, each with its
    options, inputs, output, what its forward saved for backward (arrays by shape and dtype) and its backward
    formula (from the Function's class docstring; ``full=True`` prints it all).

    ``gy`` in the formulas is the gradient arriving at the Function's output; ``backward()`` visits the
    Functions from the last to the first, each turning gy into the gradients of its inputs.
    """
    names_ = _name_map(names)
    fns = functions_in_order(tensor)
    out: list[str] = []
    if not fns:
        out.append(f"{_describe(tensor, names_)} is a leaf: no Function was recorded "
                   "(no input requires a gradient, or it was computed inside no_grad()).")
    else:
        out.append(f"{len(fns)} Functions recorded for {_describe(tensor, names_)}, in the order they ran; "
                   "backward() visits them in reverse, gy = the gradient at each output:")
        result_of = {id(t.creator): t for t in _tensors(tensor, fns) if t.creator is not None}
        width = len(str(len(fns)))
        for k, f in enumerate(fns, 1):
            ins = ", ".join(_describe(t, names_) for t in f.inputs)
            res = result_of.get(id(f))
            opts = _options(f)
            head = f"[{k:>{width}}] {type(f).__module__}.{type(f).__name__}"
            head += f" ({opts})" if opts else ""
            out.append(f"{head}: {ins} -> {_describe(res, names_) if res is not None else '?'}")
            saved = _saved(f)
            out.append(" " * (width + 3) + "saved for backward: " + (saved or "nothing"))
            for ln in backward_formula(f, full).splitlines():
                out.append(" " * (width + 7) + ln)
    text = "\n".join(out) + "\n"
    (file or sys.stdout).write(text)
    return text
