"""``gradcheck``: compare a function's hand-written backward with central differences.

For a function f of tensors returning a tensor y, the analytic side is the
gradient of the scalar ⟨v, y⟩ for a fixed random v (one backward pass); the
numeric side perturbs each input element by ±eps:

    ∂⟨v, y⟩/∂x_k ≈ (⟨v, f(x + eps·e_k)⟩ − ⟨v, f(x − eps·e_k)⟩) / (2·eps)

Everything runs in float64: float32 central differences have errors near
1e-3 and cannot tell a correct gradient from a slightly wrong one. Large
inputs can be checked along random directions instead of every element
(``directions=k``), as Chainer's ``check_backward`` does.

``gradgradcheck`` does the same one order up: with G(x, v) = ∇ₓ⟨v, f(x)⟩ computed by
``npgan.grad(..., create_graph=True)`` and fixed random u, it compares the analytic
gradient of the scalar S = Σᵢ⟨uᵢ, Gᵢ⟩ (a second backward, through the graph of G)
with central differences of S, with respect to every checked input and to v
(which checks that the double backward keeps its dependence on the incoming
gradient). It first checks that the create_graph gradient G equals the plain
backward's, so a wrong first derivative cannot pass as a consistent one.
"""


from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import backend
from .tensor import Tensor, no_grad

__all__ = ["gradcheck", "gradgradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with the numeric one; the message says where and by how much."""


def _as_f64(x: Any) -> Any:
    if isinstance(x, Tensor):
        if x.dtype.kind != "f":
            return x
        return Tensor(x.data.astype(backend.float64), requires_grad=x.requires_grad)
    return x


def _scalar_of(out: Any, v: Any) -> Any:
    return float((out.data * v).sum()) if v is not None else float(out.data.sum())


def _checked_inputs(who: str, inputs: Any, cast: bool) -> tuple[list[Any], list[int]]:
    """The inputs as a list (float ones as float64 copies when ``cast``) and the indices of those to check."""
    if isinstance(inputs, Tensor):
        inputs = [inputs]
    inputs = [(_as_f64(x) if cast else x) for x in inputs]
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError(f"{who}: no input is a float Tensor with requires_grad=True")
    return inputs, checked


def gradcheck(fn: Callable[..., Tensor], inputs: Sequence[Any] | Tensor, eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, directions: int | None = None, seed: int = 0, cast: bool = True) -> bool:
    """Check ``fn``'s backward against central differences for every input that requires grad.

    Args:
        fn: takes the inputs (tensors and constants) positionally and returns a Tensor.
        inputs: a sequence of inputs (or a single Tensor). Only float tensors with
            ``requires_grad=True`` are checked; other entries pass through unchanged.
        eps: finite-difference step.
        atol, rtol: an element fails when |analytic − numeric| > atol + rtol·|numeric|.
        directions: check this many random unit directions per input instead of
            every element (for large inputs).
        seed: seed of the random projection vector and directions.
        cast: convert float inputs to float64 copies first (recommended).

    Returns True, or raises :class:`GradcheckError` naming the input, the worst
    element's index, the analytic and numeric values and the errors.
    """
    inputs, checked = _checked_inputs("gradcheck", inputs, cast)
    rs = backend.np.random.default_rng(seed)

    for i in checked:
        inputs[i].grad = None
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    xp = backend.get_array_module(out.data)
    v = None
    if out.size != 1:
        v = xp.asarray(rs.standard_normal(out.shape), dtype=out.dtype)
    if not out.requires_grad:
        raise GradcheckError("gradcheck: the output does not depend on any input that requires grad")
    out.backward(v if v is not None else None)
    analytic = {}
    for i in checked:
        g = inputs[i].grad
        analytic[i] = xp.zeros_like(inputs[i].data) if g is None else g.copy()
        inputs[i].grad = None

    def f_at() -> float:
        with no_grad():
            return _scalar_of(fn(*inputs), v)

    for i in checked:
        x = inputs[i]
        a = backend.to_numpy(analytic[i]).astype(backend.float64)
        _check_input(i, x, a, f_at, eps, atol, rtol, directions, rs, xp, "gradcheck")
    return True


def _check_input(label: int | str, x: Any, a: Any, f_at: Any, eps: float, atol: float, rtol: float,
                 directions: int | None, rs: Any, xp: Any, check: str) -> None:
    """Compare the analytic gradient ``a`` (host float64) of the scalar ``f_at()`` with respect to the tensor
    ``x`` with central differences (f(x + εe) − f(x − εe)) / 2ε: element by element (``directions`` None), or
    along ``directions`` random unit directions u, ⟨a, u⟩ against (f(x + εu) − f(x − εu)) / 2ε. ``x.data`` is
    restored afterwards; a mismatch raises GradcheckError naming ``check`` and ``label``."""
    base = x.data.copy()
    if directions is None:
        num = backend.np.zeros(x.shape)
        x.data = x.data.copy()  # C-contiguous, same shape (ascontiguousarray would make 0-d arrays 1-d)
        flat = x.data.reshape(-1)  # a view: perturb in place, restore after
        for k in range(x.size):
            old = flat[k].item()
            flat[k] = old + eps
            fp = f_at()
            flat[k] = old - eps
            fm = f_at()
            flat[k] = old
            num.reshape(-1)[k] = (fp - fm) / (2 * eps)
        _compare(label, x.shape, a, num, atol, rtol, check=check)
    else:
        for d in range(directions):
            u = rs.standard_normal(x.shape)
            u /= backend.np.linalg.norm(u) or 1.0
            ud = xp.asarray(u, dtype=x.dtype)
            x.data = base + eps * ud
            fp = f_at()
            x.data = base - eps * ud
            fm = f_at()
            x.data = base
            _compare(label, (), backend.np.array(float((a * u).sum())), backend.np.array((fp - fm) / (2 * eps)),
                     atol, rtol, what=f"direction {d}", check=check)
    x.data = base


def _compare(i: int | str, shape: tuple, a: Any, num: Any, atol: float, rtol: float, what: str = "",
             check: str = "gradcheck") -> None:
    np = backend.np
    err = np.abs(a - num)
    tol = atol + rtol * np.abs(num)
    bad = ~(err <= tol)  # also catches nan
    if bad.any():
        excess = np.where(np.isnan(err), np.inf, err - tol)
        k = int(np.argmax(excess))
        idx = np.unravel_index(k, a.shape) if a.shape else ()
        av, nv = float(a.reshape(-1)[k]), float(num.reshape(-1)[k])
        rel = abs(av - nv) / max(abs(nv), 1e-300)
        where = what or f"element {tuple(int(j) for j in idx)}"
        name = i if isinstance(i, str) else f"input {i}"
        raise GradcheckError(
            f"{check} failed for {name} (shape {tuple(shape) if shape else a.shape}) at {where}: "
            f"analytic {av:.10g} vs numeric {nv:.10g}; abs error {abs(av - nv):.3g}, rel error {rel:.3g} "
            f"(atol {atol:g}, rtol {rtol:g}); {int(bad.sum())} of {bad.size} elements out of tolerance")


def gradgradcheck(fn: Callable[..., Tensor], inputs: Sequence[Any] | Tensor, grad_outputs: Any = None,
                  eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3, directions: int | None = None,
                  seed: int = 0, cast: bool = True) -> bool:
    """Check ``fn``'s double backward (``create_graph=True``) against central differences of its gradient.

    Args are as :func:`gradcheck`'s; ``grad_outputs`` is the v of G = ∇ₓ⟨v, f(x)⟩ (an array of the output's
    shape; random when None). Each input that requires grad, and v, is checked element by element, or along
    ``directions`` random unit directions each.

    Returns True, or raises :class:`GradcheckError` naming the input (or ``grad_outputs``), the worst element,
    the analytic and numeric second derivatives and the errors.
    """
    from .autograd import grad

    inputs, checked = _checked_inputs("gradgradcheck", inputs, cast)
    rs = backend.np.random.default_rng(seed)
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradgradcheck: fn must return a Tensor, got {type(out).__name__}")
    if not out.requires_grad:
        raise GradcheckError("gradgradcheck: the output does not depend on any input that requires grad")
    xp = backend.get_array_module(out.data)
    if grad_outputs is None:
        v0 = xp.asarray(rs.standard_normal(out.shape), dtype=out.dtype)
    else:
        v0 = grad_outputs.data if isinstance(grad_outputs, Tensor) else grad_outputs
        v0 = xp.asarray(v0, dtype=out.dtype)
        if v0.shape != out.shape:
            raise ValueError(f"gradgradcheck: grad_outputs has shape {v0.shape}, the output has shape {out.shape}")
    v = Tensor(v0.copy(), requires_grad=True)
    xs = [inputs[i] for i in checked]
    us = [xp.asarray(rs.standard_normal(x.shape), dtype=x.dtype) for x in xs]

    # the create_graph gradient must be the plain one
    plain = grad(out, xs, v0, retain_graph=True, allow_unused=True)
    gs = grad(out, xs, v, create_graph=True, allow_unused=True)
    for i, p, g in zip(checked, plain, gs):
        a = backend.np.zeros(inputs[i].shape) if g is None else backend.to_numpy(g.data).astype(backend.float64)
        b = backend.np.zeros(inputs[i].shape) if p is None else backend.to_numpy(p.data).astype(backend.float64)
        _compare(i, inputs[i].shape, a, b, 1e-12, 1e-10, check="gradgradcheck (create_graph gradient vs plain)")

    def s_of(gs: Sequence[Tensor | None]) -> Any:
        terms = [(g * Tensor(u)).sum() for g, u in zip(gs, us) if g is not None]
        if not terms:
            return None
        s = terms[0]
        for t in terms[1:]:
            s = s + t
        return s

    s = s_of(gs)
    targets = xs + [v]
    if s is None or not s.requires_grad:
        analytic = [None] * len(targets)
    else:
        analytic = list(grad(s, targets, allow_unused=True))
    analytic = [backend.np.zeros(t.shape) if a is None else backend.to_numpy(a.data).astype(backend.float64)
                for t, a in zip(targets, analytic)]

    def s_at() -> float:
        o = fn(*inputs)
        if not o.requires_grad:
            return 0.0
        s = s_of(grad(o, xs, v, create_graph=True, allow_unused=True))
        return 0.0 if s is None else float(s.data)

    labels: list[int | str] = [*checked, "grad_outputs"]
    for label, x, a in zip(labels, targets, analytic):
        _check_input(label, x, a, s_at, eps, atol, rtol, directions, rs, xp, "gradgradcheck")
    return True
