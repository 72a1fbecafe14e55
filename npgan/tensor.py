"""The autograd core: :class:`Tensor`, :class:`Function` and reverse-mode backward.

A :class:`Function` turns raw arrays into a raw array in ``forward`` and maps the
output's gradient to its inputs' gradients in ``backward``; calling it on
tensors records it in the graph when gradients are wanted. ``Tensor.backward``
walks the recorded graph once, in reverse topological order, without recursion.

Graph semantics (the same as PyTorch's):
  * gradients of leaf tensors accumulate in ``.grad`` across ``backward`` calls;
    ``zero_grad`` (modules, optimizers) or ``t.grad = None`` resets them;
  * ``backward()`` frees what the graph saved for the backward pass; a second
    ``backward`` through the same graph raises unless the first one used
    ``retain_graph=True``;
  * inside ``with no_grad():`` nothing is recorded; the mode is per thread (as PyTorch's), so a thread
    that samples under ``no_grad`` leaves another thread's training recorded, and a new thread records.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from . import backend
from .backend import get_array_module, is_array

__all__ = ["Tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled", "tensor",
           "zeros", "ones", "randn", "rand", "as_tensor", "sum_to"]

_grad_mode = threading.local()  # .off: True inside no_grad on this thread (absent: recording, as in a new thread)
# Key in a Function's __dict__: how many entries before it are options (set by __init__, before the first call).
N_OPTIONS_KEY = "_n_options"


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Context manager in which operations record no graph (inference, parameter updates)."""
    prev = not is_grad_enabled()
    _grad_mode.off = True
    try:
        yield
    finally:
        _grad_mode.off = prev


@contextlib.contextmanager
def enable_grad() -> Iterator[None]:
    """Context manager that turns recording back on inside ``no_grad``."""
    prev = not is_grad_enabled()
    _grad_mode.off = False
    try:
        yield
    finally:
        _grad_mode.off = prev


def is_grad_enabled() -> bool:
    """Whether operations on this thread record the graph now (False inside ``no_grad``)."""
    return not getattr(_grad_mode, "off", False)


def _as_data(data: Any, dtype: Any = None) -> Any:
    """Turn user data into a backend array; Python floats/lists get the default dtype."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None and backend.dtype(dtype).kind not in "fiub":
        raise TypeError(f"tensors hold float, integer or bool data; dtype {backend.dtype(dtype)} "
                        "is not supported")
    if dtype is not None and backend.dtype(dtype) == backend.float16:
        raise TypeError("dtype float16 is not supported: npgan computes in float32 or float64")
    if is_array(data):
        if data.dtype.kind not in "fiub":
            raise TypeError(f"cannot make a tensor from an array of dtype {data.dtype} "
                            "(only float, integer and bool data)")
        if data.dtype == backend.float16:
            data = _upcast_half(data)
        return data if dtype is None or data.dtype == dtype else data.astype(dtype)
    xp = backend.current_xp()
    arr = backend.np.asarray(data)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"cannot make a tensor from {type(data).__name__} data of dtype {arr.dtype} "
                        "(only float, integer and bool data)")
    if arr.dtype == backend.float16 and dtype is None:
        arr = _upcast_half(arr)
    if dtype is None and arr.dtype.kind == "f":
        dtype = backend.get_default_dtype()
    return xp.asarray(arr, dtype=dtype)


def _upcast_half(a: Any) -> Any:
    """float16 data → the default dtype, with a PrecisionWarning (npgan never computes in float16)."""
    import warnings

    from .errors import PrecisionWarning
    warnings.warn(f"float16 data of shape {a.shape} converted to {backend.get_default_dtype()} (npgan computes in "
                  "float32 or float64)", PrecisionWarning, stacklevel=4)
    return a.astype(backend.get_default_dtype())


class Tensor:
    """An n-dimensional array that can record the operations applied to it.

    Args:
        data: array-like (list, scalar, numpy/cupy array). Python floats and
            lists of floats get the default dtype (``npgan.set_default_dtype``);
            arrays keep theirs.
        requires_grad: when True, ``backward`` fills ``.grad``.
    """

    __slots__ = ("data", "grad", "requires_grad", "creator", "name", "__weakref__")
    __array_priority__ = 1000  # numpy scalars/arrays defer to Tensor's operators

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None, name: str | None = None):
        self.data = _as_data(data, dtype)
        self.grad: Any = None
        self.requires_grad = bool(requires_grad)
        if self.requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only float tensors can require gradients, got dtype {self.data.dtype}")
        self.creator: Function | None = None
        self.name = name

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self.creator is None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = repr(backend.to_numpy(self.data)).replace("array(", "tensor(", 1)
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self.creator is not None:
            extra = f", grad_fn=<{type(self.creator).__name__}>"
        return body[:-1] + extra + ")" if body.endswith(")") else body

    # ------------------------------------------------------------------ conversion
    def numpy(self) -> Any:
        """The data as a host numpy array (a copy when it lives on the GPU)."""
        return backend.to_numpy(self.data)

    def item(self) -> float:
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def detach(self) -> Tensor:
        """A tensor sharing the data, cut from the graph."""
        return Tensor(self.data)

    def float(self) -> Tensor:
        return self.astype(backend.get_default_dtype())

    def requires_grad_(self, flag: bool = True) -> Tensor:
        if flag and self.data.dtype.kind != "f":
            raise TypeError(f"only float tensors can require gradients, got dtype {self.data.dtype}")
        self.requires_grad = bool(flag)
        return self

    def zero_grad(self) -> None:
        self.grad = None

    # ------------------------------------------------------------------ backward
    def backward(self, grad: Any = None, retain_graph: bool | None = None, create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is the gradient of some scalar with respect to ``self``; it may be
        left out only when ``self`` holds one element (then it is 1).
        ``retain_graph`` (default: ``create_graph``) keeps the graph for another backward.

        ``create_graph=True`` computes the gradients with the differentiable backward
        (``Function.backward_graph``, in npgan ops) and keeps the graph; ``.grad`` still
        receives a raw array of the value (so optimizers, clipping and checkpoints see
        one type). To differentiate a gradient again, use :func:`npgan.grad` with
        ``create_graph=True``, which returns the gradients as Tensors carrying their graph.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input of the computation had requires_grad=True)")
        if retain_graph is None:
            retain_graph = create_graph
        if create_graph:
            gt = seed_grad(self, grad, "backward(grad)", "the tensor", True)
            leaves: dict[int, Tensor] = {}
            got = run_backward_graph([self], [gt], retain_graph, None, leaves)
            for k, gx in got.items():
                t = leaves[k]
                t.grad = gx.data.copy() if t.grad is None else t.grad + gx.data
            return
        xp = get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient argument needs a one-element tensor; "
                                   f"got shape {self.shape}: pass grad= of that shape, or reduce first")
            g = xp.ones_like(self.data)
        else:
            g = _as_data(grad, self.data.dtype)
            if backend.device_of(g) != backend.device_of(self.data):  # e.g. a host array for a GPU tensor
                g = backend.asarray(g, device=backend.device_of(self.data))
            if g.shape != self.shape:
                raise ValueError(f"backward(grad): grad has shape {g.shape}, tensor has shape {self.shape}")
        if self.creator is None:
            self.grad = g.copy() if self.grad is None else self.grad + g
            return
        run_backward(self, g, retain_graph)

    # ------------------------------------------------------------------ operators (bound in ops.py)
    # ops.py defines each operator as a Function and, when it is imported (``import npgan`` does so), sets
    # these on Tensor (ops._bind; the lazy binding keeps tensor.py free of an import of ops.py):
    #   arithmetic   + − * / (and reflected), unary −, unary +, ** (__pow__), @ (and reflected), abs()
    #   indexing     t[key] (__getitem__)
    #   comparisons  < <= > >= (no gradient: a bool Tensor)
    #   methods      sum mean var max min exp log sqrt abs clip clamp pow matmul
    #                reshape view flatten squeeze unsqueeze permute transpose, astype, to (a device), and the
    #                property T
    # ``==`` is not bound: Tensors compare by identity and hash by id, so they can key dicts and sets.
    def __hash__(self) -> int:
        return id(self)


class GraphFreedError(RuntimeError):
    """The graph's saved values were freed by an earlier ``backward()`` (at Function ``function_name``)."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        super().__init__(f"backward through the graph a second time ({function_name}): its saved values were "
                         "freed by the first backward(); call backward(retain_graph=True) the first time")


def graph_functions(root: Tensor) -> list[Function]:
    """The Functions recorded for ``root``, each after those that made its inputs (the order they ran in).

    An iterative depth-first walk (no recursion limit on deep graphs); raises :class:`GraphFreedError` when an
    earlier ``backward()`` freed part of the graph.
    """
    return _walk([root])[0]


def _topo_order(root: Tensor) -> list[Function]:
    """Functions reachable from ``root`` in an order where every function comes before its inputs'."""
    return graph_functions(root)[::-1]


def run_backward(root: Tensor, grad: Any, retain_graph: bool = False) -> None:
    """Propagate ``grad`` from ``root`` to every leaf that requires grad."""
    order = _topo_order(root)
    grads: dict[int, Any] = {id(root.creator): grad}
    for f in order:
        gy = grads.pop(id(f), None)
        if gy is None:
            continue
        gxs = f.backward(gy)
        if not isinstance(gxs, tuple):
            gxs = (gxs,)
        for t, gx in zip(f.inputs, gxs):
            if gx is None or not t.requires_grad:
                continue
            if gx.shape != t.data.shape:
                raise RuntimeError(f"internal error: {type(f).__name__}.backward returned a gradient of "
                                   f"shape {gx.shape} for an input of shape {t.data.shape}")
            fresh = f.fresh_grads
            if gx.dtype != t.data.dtype:  # mixed-dtype ops: a gradient always has its tensor's dtype
                gx, fresh = gx.astype(t.data.dtype), True
            c = t.creator
            if c is None:
                t.grad = (gx if fresh else gx.copy()) if t.grad is None else t.grad + gx
            else:
                k = id(c)
                prev = grads.get(k)
                grads[k] = gx if prev is None else prev + gx
        if not retain_graph:
            f.release()


# ----------------------------------------------------------------------------- higher order (create_graph)
def _walk(roots: Sequence[Tensor]) -> tuple[list[Function], dict[int, Tensor]]:
    """The Functions recorded for all ``roots`` in the order they ran (as :func:`graph_functions`), and each
    Function's output tensor by ``id`` (held only while a backward runs: no reference cycle outlives it)."""
    order: list[Function] = []
    out_of: dict[int, Tensor] = {}
    seen: set[int] = set()
    stack: list[tuple[Function, bool]] = []
    for r in reversed(roots):
        if r.creator is not None:
            out_of[id(r.creator)] = r
            stack.append((r.creator, False))
    while stack:
        f, expanded = stack.pop()
        if expanded:
            order.append(f)
            continue
        if id(f) in seen:
            continue
        seen.add(id(f))
        if f.inputs is None:
            raise GraphFreedError(type(f).__name__)
        stack.append((f, True))
        for t in reversed(f.inputs):
            c = t.creator
            if c is not None:
                out_of[id(c)] = t
                if id(c) not in seen:
                    stack.append((c, False))
    return order, out_of


def _needed(order: list[Function], targets: dict[int, Tensor]) -> dict[int, tuple[bool, ...]]:
    """For each Function (by id), which inputs lie on a path to one of ``targets``: only those get a gradient."""
    leads: dict[int, bool] = {}
    need: dict[int, tuple[bool, ...]] = {}
    for f in order:
        m = tuple(t.requires_grad and (id(t) in targets or (t.creator is not None and leads[id(t.creator)]))
                  for t in f.inputs)
        need[id(f)] = m
        leads[id(f)] = True in m
    return need


def seed_grad(root: Tensor, grad: Any, what: str, whose: str, as_tensor: bool) -> Any:
    """The gradient that starts a backward at ``root``: ones for a one-element root when ``grad`` is None,
    else ``grad`` checked against root's shape and brought to its dtype and device; a Tensor when
    ``as_tensor`` (a Tensor ``grad`` keeps its graph), else a raw array."""
    if grad is None:
        if root.data.size != 1:
            raise RuntimeError(f"{what} is needed: {whose} has shape {root.shape}, and only a one-element "
                               "output has the implicit gradient 1")
        g = get_array_module(root.data).ones_like(root.data)
        return Tensor(g) if as_tensor else g
    if isinstance(grad, Tensor) and as_tensor:
        if grad.device != root.device:
            grad = grad.to(root.device)
        if grad.dtype != root.dtype:
            grad = grad.astype(root.dtype)
        g = grad
    else:
        g = _as_data(grad, root.data.dtype)
        if backend.device_of(g) != backend.device_of(root.data):
            g = backend.asarray(g, device=backend.device_of(root.data))
    if g.shape != root.shape:
        raise ValueError(f"{what} has shape {tuple(g.shape)}, {whose} has shape {root.shape}")
    return Tensor(g) if as_tensor and not isinstance(g, Tensor) else g


def run_backward_graph(roots: Sequence[Tensor], grads: Sequence[Tensor], retain_graph: bool,
                       targets: dict[int, Tensor] | None = None,
                       leaves: dict[int, Tensor] | None = None) -> dict[int, Tensor]:
    """The differentiable backward (``create_graph=True``): gradients as Tensors that carry their own graph.

    Each Function's ``backward_graph(gy)`` maps the output's gradient (a Tensor) to its inputs' gradients,
    written in npgan ops, so recording is on while it runs; it reads its inputs as ``self.inputs`` (Tensors)
    and its output as ``self.output`` (set only during the call). With ``targets`` (tensors by id), only the
    paths that lead to them are walked and their gradients returned (a non-leaf target's is the total that
    reached it); without, the gradients of every leaf that requires grad are returned, and ``leaves`` is
    filled with those leaves by id. Nothing is written to ``.grad``.
    """
    order, out_of = _walk(roots)
    need = _needed(order, targets) if targets is not None else None
    result: dict[int, Tensor] = {}
    pending: dict[int, Tensor] = {}

    def to_leaf(t: Tensor, g: Tensor) -> None:
        if targets is None:
            if leaves is not None:
                leaves[id(t)] = t
        elif id(t) not in targets:
            return
        k = id(t)
        result[k] = g if k not in result else result[k] + g

    with enable_grad():
        for r, g in zip(roots, grads):
            if r.creator is None:
                if r.requires_grad:
                    to_leaf(r, g)
            else:
                k = id(r.creator)
                pending[k] = g if k not in pending else pending[k] + g
        for f in reversed(order):
            gy = pending.pop(id(f), None)
            if gy is None:
                continue
            out = out_of[id(f)]
            if targets is not None and id(out) in targets:
                result[id(out)] = gy
            mask = f.needs_grad if need is None else need[id(f)]
            if True in mask:
                bg = getattr(f, "backward_graph", None)
                if bg is None:
                    raise NotImplementedError(f"double backward is not implemented for {type(f).__name__} "
                                              "(create_graph=True needs its backward_graph)")
                saved, f.needs_grad, f.output = f.needs_grad, mask, out
                try:
                    gxs = bg(gy)
                finally:
                    f.needs_grad = saved
                    f.__dict__.pop("output", None)
                for t, gx, _ in _input_grads(f, gxs, mask, "backward_graph"):
                    c = t.creator
                    if c is None:
                        to_leaf(t, gx)
                    else:
                        k = id(c)
                        pending[k] = gx if k not in pending else pending[k] + gx
            if not retain_graph:
                f.release()
    return result


def _input_grads(f: Function, gxs: Any, mask: Sequence[bool], method: str) -> Iterator[tuple[Tensor, Any, bool]]:
    """(input, its gradient, whether it was cast) for each input of ``f`` that ``mask`` selects and ``f.<method>``
    gave a gradient: the shape checked, the dtype made the input's (mixed-dtype ops)."""
    for t, gx, m in zip(f.inputs, gxs if isinstance(gxs, tuple) else (gxs,), mask):
        if gx is None or not m:
            continue
        if gx.shape != t.data.shape:
            raise RuntimeError(f"internal error: {type(f).__name__}.{method} returned a gradient of shape "
                               f"{gx.shape} for an input of shape {t.data.shape}")
        cast = gx.dtype != t.data.dtype
        yield t, (gx.astype(t.data.dtype) if cast else gx), cast


def run_backward_arrays(roots: Sequence[Tensor], grads: Sequence[Any], retain_graph: bool,
                        targets: dict[int, Tensor]) -> dict[int, Any]:
    """The raw-array backward of :func:`npgan.grad` without ``create_graph``: as :func:`run_backward`, but
    walking only the paths to ``targets`` and returning their gradients (by id) instead of filling ``.grad``.
    Every returned array is newly allocated."""
    order, out_of = _walk(roots)
    need = _needed(order, targets)
    result: dict[int, Any] = {}
    fresh: set[int] = set()
    pending: dict[int, Any] = {}

    def put(store: dict[int, Any], k: int, g: Any, is_fresh: bool) -> None:
        if k in store:
            store[k] = store[k] + g
            if store is result:
                fresh.add(k)
        else:
            store[k] = g
            if store is result and is_fresh:
                fresh.add(k)

    for r, g in zip(roots, grads):
        if r.creator is None:
            if id(r) in targets:
                put(result, id(r), g, False)
        else:
            put(pending, id(r.creator), g, False)
    for f in reversed(order):
        gy = pending.pop(id(f), None)
        if gy is None:
            continue
        out = out_of[id(f)]
        if id(out) in targets:
            result[id(out)] = gy
        mask = need[id(f)]
        if True in mask:
            saved, f.needs_grad = f.needs_grad, mask
            try:
                gxs = f.backward(gy)
            finally:
                f.needs_grad = saved
            for t, gx, cast in _input_grads(f, gxs, mask, "backward"):
                is_fresh = f.fresh_grads or cast
                if t.creator is None:
                    put(result, id(t), gx, is_fresh)
                else:
                    put(pending, id(t.creator), gx, is_fresh)
        if not retain_graph:
            f.release()
    return {k: (g if k in fresh else g.copy()) for k, g in result.items()}


class Function:
    """Base class of differentiable operations.

    Subclasses implement ``forward(*arrays) -> array`` and
    ``backward(gy) -> grad or tuple of grads`` (one per input, ``None`` for an
    input that needs none) on raw backend arrays, and keep in ``self`` exactly
    what ``backward`` needs. ``self.needs_grad[i]`` tells whether input ``i``
    wants a gradient, so a backward can skip work. Options go in ``__init__``;
    a Function is called on tensors: ``Softsign()(x)``, ``Scale(2.0)(x)``.
    docs/extending.md walks through writing one.

    One instance may be called many times: the first call records the instance itself as the graph node,
    every later call records a fresh node that holds a copy of the options only (what ``__init__`` set), so
    two nodes never share saved values (PyTorch's ``Function.apply`` gives each call its own node too).
    The options are the attributes set before the first call; ``release`` (after backward) keeps them.

    ``fresh_grads = True`` on a subclass promises that every gradient its ``backward`` returns is a newly
    allocated array that nothing else references (not ``gy``, not a view, not shared between inputs): a leaf
    then keeps it as its ``.grad`` instead of a copy (what a leaf receives is otherwise always copied, so that
    changing one ``.grad`` in place can never change another).

    Higher order (``create_graph=True``, see :func:`run_backward_graph`): a subclass may also define
    ``backward_graph(gy) -> grad or tuple`` taking and returning Tensors and written in npgan ops, so that the
    gradient it returns is itself recorded and can be differentiated again. It reads the inputs as Tensors
    (``self.inputs``), the output as ``self.output`` (a Tensor, available only during the call) and constants
    from ``self`` (masks, shapes); it must never use a saved raw array that depends on the inputs, as that
    would cut the dependence. Without it, ``create_graph=True`` through the Function raises
    ``NotImplementedError``; the plain ``backward`` path never uses it.
    """

    __slots__ = ("inputs", "needs_grad", "__dict__")
    fresh_grads = False

    def __call__(self, *inputs: Any) -> Tensor:
        ts = [x if isinstance(x, Tensor) else Tensor(x) for x in inputs]
        if backend._gpu_type is not None and len(ts) > 1:  # only with a GPU module: one test per input
            backend.check_same_device([t.data for t in ts], type(self).__name__)
        d = self.__dict__
        n = d.get(N_OPTIONS_KEY)
        if n is None:  # the first call: this instance is the node; what __init__ set so far are its options
            d[N_OPTIONS_KEY] = len(d)
            node = self
        else:  # a later call: a node of its own, so this call's forward cannot overwrite the first one's saves
            node = object.__new__(type(self))
            node.__dict__.update(itertools.islice(d.items(), n + 1))
        y = node.forward(*[t.data for t in ts])
        out = Tensor.__new__(Tensor)
        out.data = y
        out.grad = None
        out.name = None
        out.creator = None
        out.requires_grad = False
        if is_grad_enabled():
            needs = tuple(t.requires_grad for t in ts)
            if True in needs:
                out.requires_grad = True
                out.creator = node
                node.inputs = ts
                node.needs_grad = needs
        return out

    def forward(self, *xs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, gy: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def release(self) -> None:
        """Drop the inputs and everything saved for backward (after a backward pass); keep the options."""
        self.inputs = None
        d = self.__dict__
        n = d.get(N_OPTIONS_KEY)
        if n:  # keep the options (and the count), so that a later call of this instance still has them
            options = list(itertools.islice(d.items(), n + 1))
            d.clear()
            d.update(options)
        else:  # keep the count: a later call must make a fresh node, not revive this freed one
            d.clear()
            if n is not None:
                d[N_OPTIONS_KEY] = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def sum_to(g: Any, shape: Sequence[int]) -> Any:
    """Sum ``g`` over the axes that broadcasting added or stretched, down to ``shape``."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape) if s == 1 and g.shape[i + lead] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    if lead:
        g = g.reshape(shape)
    return g


# ----------------------------------------------------------------------------- factories
def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """A new tensor holding a copy of ``data``, on the current device (``npgan.set_device``).

    ``Tensor(array)`` wraps an array where it lives; ``tensor(array)`` copies it to the current device.
    """
    d = _as_data(data, dtype)
    if backend.device_of(d) != backend.get_device():
        d = backend.asarray(d)
    elif is_array(data) or isinstance(data, Tensor):
        d = d.copy()
    return Tensor(d, requires_grad=requires_grad)


def as_tensor(data: Any, dtype: Any = None) -> Tensor:
    """``data`` as a tensor, sharing memory where possible."""
    if isinstance(data, Tensor) and (dtype is None or data.dtype == dtype):
        return data
    return Tensor(data, dtype=dtype)


def _shape(shape: tuple) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for s in shape:
        if not isinstance(s, (int, backend.np.integer)) or isinstance(s, bool) or s < 0:
            raise ValueError(f"shape must be non-negative integers, got {shape}")
    return tuple(int(s) for s in shape)


def zeros(*shape: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    xp = backend.current_xp()
    return Tensor(xp.zeros(_shape(shape), dtype=dtype or backend.get_default_dtype()), requires_grad)


def ones(*shape: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    xp = backend.current_xp()
    return Tensor(xp.ones(_shape(shape), dtype=dtype or backend.get_default_dtype()), requires_grad)


def randn(*shape: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """Standard normal samples from npgan's seeded generator."""
    d = backend.np.dtype(dtype or backend.get_default_dtype())
    return Tensor(backend.rng().standard_normal(_shape(shape), dtype=d), requires_grad)


def rand(*shape: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """Uniform [0, 1) samples from npgan's seeded generator."""
    d = backend.np.dtype(dtype or backend.get_default_dtype())
    return Tensor(backend.rng().random(_shape(shape), dtype=d), requires_grad)
