"""``gradcheck``: compare a function's hand-written backward with central differences.

For a function f of tensors returning a tensor y, the analytic side is the
gradient of the scalar ⟨v, y⟩ for a fixed random v (one backward pass); the
numeric side perturbs each input element by ±eps:

    ∂⟨v, y⟩/∂x_k ≈ (⟨v, f(x + eps·e_k)⟩ − ⟨v, f(x − eps·e_k)⟩) / (2·eps)

Everything runs in float64: float32 central differences have errors near
1e-3 and cannot tell a correct gradient from a slightly wrong one. Large
inputs can be checked along random directions instead of every element
(``directions=k``), as Chainer's ``check_backward`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import backend
from .tensor import Tensor, no_grad

__all__ = ["gradcheck", "GradcheckError"]


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
    if isinstance(inputs, Tensor):
        inputs = [inputs]
    inputs = [(_as_f64(x) if cast else x) for x in inputs]
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input is a float Tensor with requires_grad=True")
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
            _compare(i, x.shape, a, num, atol, rtol)
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
                num_d = (fp - fm) / (2 * eps)
                an_d = float((a * u).sum())
                _compare(i, (), backend.np.array(an_d), backend.np.array(num_d), atol, rtol,
                         what=f"direction {d}")
        x.data = base
    return True


def _compare(i: int, shape: tuple, a: Any, num: Any, atol: float, rtol: float, what: str = "") -> None:
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
        raise GradcheckError(
            f"gradcheck failed for input {i} (shape {tuple(shape) if shape else a.shape}) at {where}: "
            f"analytic {av:.10g} vs numeric {nv:.10g}; abs error {abs(av - nv):.3g}, rel error {rel:.3g} "
            f"(atol {atol:g}, rtol {rtol:g}); {int(bad.sum())} of {bad.size} elements out of tolerance")
