"""``npgan.grad``: gradients of outputs with respect to chosen inputs, returned as Tensors (PyTorch's
``torch.autograd.grad``), and with ``create_graph=True`` differentiable again, to any order.

Without ``create_graph`` the raw-array backward runs (each Function's ``backward``), along the paths that lead
to ``inputs`` only; with it, each Function's ``backward_graph`` builds the gradient out of npgan ops, so the
result carries a graph (an R1 penalty ‖∇ₓD(x)‖², a Hessian-vector product ∇ₓ⟨∇ₓf, v⟩).

Semantics as PyTorch's: ``retain_graph`` defaults to ``create_graph``, and without it the graph is freed (a
second backward through it raises :class:`~npgan.tensor.GraphFreedError`); ``.grad`` of leaves is left alone;
an input the outputs do not depend on raises unless ``allow_unused=True`` (then its gradient is None); an
input that does not require grad is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .backend import get_array_module, is_array
from .tensor import Tensor, run_backward_arrays, run_backward_graph, seed_grad

__all__ = ["grad"]


def _as_list(x: Any, name: str) -> list[Tensor]:
    xs = [x] if isinstance(x, Tensor) else list(x) if isinstance(x, (list, tuple)) else None
    if xs is None:
        raise TypeError(f"grad: {name} must be a Tensor or a sequence of Tensors, got {type(x).__name__}")
    for i, t in enumerate(xs):
        if not isinstance(t, Tensor):
            raise TypeError(f"grad: {name}[{i}] is a {type(t).__name__}, not a Tensor")
    if not xs:
        raise ValueError(f"grad: {name} is empty")
    return xs


def grad(outputs: Tensor | Sequence[Tensor], inputs: Tensor | Sequence[Tensor],
         grad_outputs: Any = None, retain_graph: bool | None = None, create_graph: bool = False,
         allow_unused: bool = False) -> tuple[Tensor | None, ...]:
    """Σᵢ ⟨grad_outputs[i], outputs[i]⟩ differentiated with respect to each of ``inputs``.

    Args:
        outputs: a Tensor or a sequence of Tensors that require grad.
        inputs: a Tensor or a sequence of Tensors that require grad (leaves or intermediate results).
        grad_outputs: one gradient per output (arrays or Tensors of the output's shape; a Tensor that requires
            grad is differentiated through under ``create_graph``); None, or a None entry, means 1 and needs a
            one-element output.
        retain_graph: keep the graph for another backward (default: ``create_graph``).
        create_graph: record the gradients' own graph, so they can be differentiated again.
        allow_unused: give None for an input the outputs do not depend on instead of raising.

    Returns a tuple with one Tensor (or None) per input, however ``inputs`` was given; no ``.grad`` changes.
    """
    outs = _as_list(outputs, "outputs")
    ins = _as_list(inputs, "inputs")
    if grad_outputs is None:
        gos: list[Any] = [None] * len(outs)
    else:
        gos = [grad_outputs] if isinstance(grad_outputs, Tensor) or not isinstance(grad_outputs, (list, tuple)) \
            else list(grad_outputs)
        if len(gos) != len(outs):
            raise ValueError(f"grad: {len(gos)} grad_outputs for {len(outs)} outputs")
    for i, t in enumerate(ins):
        if not t.requires_grad:
            raise RuntimeError(f"grad: inputs[{i}] (shape {t.shape}) does not require grad; "
                               "call requires_grad_() on it before the computation, or leave it out")
    for i, o in enumerate(outs):
        if not o.requires_grad:
            raise RuntimeError(f"grad: outputs[{i}] (shape {o.shape}) does not require grad: it does not depend "
                               "on any tensor with requires_grad=True")
    if retain_graph is None:
        retain_graph = create_graph
    seeds = [seed_grad(o, g, f"grad_outputs[{i}]", f"outputs[{i}]", create_graph)
             for i, (o, g) in enumerate(zip(outs, gos))]
    targets = {id(t): t for t in ins}
    if create_graph:
        got: dict[int, Any] = run_backward_graph(outs, seeds, retain_graph, targets)
    else:
        got = {k: Tensor(g if is_array(g) else get_array_module(g).asarray(g))  # a NumPy scalar keeps its dtype
               for k, g in run_backward_arrays(outs, seeds, retain_graph, targets).items()}
    res: list[Tensor | None] = []
    for i, t in enumerate(ins):
        g = got.get(id(t))
        if g is None and not allow_unused:
            raise RuntimeError(f"grad: inputs[{i}] (shape {t.shape}) was not used to compute the outputs; "
                               "pass allow_unused=True to get None for it")
        res.append(g)
    return tuple(res)
