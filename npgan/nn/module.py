"""``Module`` and ``Parameter``: containers of weights with PyTorch's naming.

A module's parameters, buffers and sub-modules are registered by attribute
assignment, in order; ``state_dict`` keys are the dotted attribute paths
(``"0.weight"``, ``"main.3.running_var"``), exactly as PyTorch names them, and
its values are plain backend arrays, so ``{k: v.numpy() for k, v in
torch_model.state_dict().items()}`` loads into the same npgan architecture.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from .. import backend
from ..tensor import Tensor

__all__ = ["Parameter", "Module", "Sequential", "ModuleList", "StateDictError"]


class StateDictError(ValueError):
    """A state dict does not fit the module: missing, unexpected or mis-shaped keys."""


def load_problems(strict: bool, missing: list, unexpected: list, bad: list,
                  words: tuple = ("missing keys", "unexpected keys", "bad entries:"),
                  show: tuple = (str, str, "; ".join)) -> list[str]:
    """Why a state does not load: ``WORD SHOW(items)`` for the missing and the unexpected keys (only when
    ``strict``), then for the bad entries, each that is not empty; [] when the state fits. Shared by
    Module.load_state_dict and npgan.weights.load_into, each with its own words."""
    return [f"{word} {sh(items)}" for items, word, sh, counts in
            zip((missing, unexpected, bad), words, show, (strict, strict, True)) if counts and items]


class Parameter(Tensor):
    """A tensor that is a module's learnable weight (``requires_grad=True``)."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True):
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of layers and models: override ``forward``; call the module to run it."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ---------------------------------------------------------------- registration
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if name in self._buffers and not isinstance(value, (Parameter, Module)):
            self._buffers[name] = value
            return
        for d in (self._parameters, self._buffers, self._modules):
            d.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif value is None and name in ("weight", "bias"):
            self._parameters[name] = None
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array: Any) -> None:
        """Keep ``array`` (a backend array, e.g. running statistics) in the state dict, not in parameters."""
        self.__dict__.pop(name, None)
        self._buffers[name] = array

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        self.__dict__.pop(name, None)
        self._parameters[name] = param

    def add_module(self, name: str, module: Module) -> None:
        self._modules[name] = module

    # ---------------------------------------------------------------- running
    def forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    # ---------------------------------------------------------------- traversal
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            children = [(f"{name}.{k}" if name else k, c) for k, c in m._modules.items() if c is not None]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for k, m in self._modules.items():
            if m is not None:
                yield k, m

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        seen: set[int] = set()
        mods = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for mname, m in mods:
            for k, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{k}" if mname else k), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        for mname, m in self.named_modules(prefix):
            for k, b in m._buffers.items():
                if b is not None:
                    yield (f"{mname}.{k}" if mname else k), b

    def buffers(self) -> Iterator[Any]:
        for _, b in self.named_buffers():
            yield b

    def apply(self, fn: Any) -> Module:
        """Call ``fn(m)`` on every sub-module (children first) and on self."""
        for m in list(self.modules())[::-1]:
            fn(m)
        return self

    def zero_grad(self) -> None:
        """Clear every parameter's ``.grad`` (set it to None)."""
        for p in self.parameters():
            p.grad = None

    def num_parameters(self) -> int:
        return sum(int(p.size) for p in self.parameters())

    # ---------------------------------------------------------------- state
    def _state_entries(self) -> Iterator[tuple[str, Any, Module, str, str]]:
        """(key, array, owner module, local name, kind) in PyTorch's order: per module, params then buffers.

        A module reachable under several names appears under each of them, as in PyTorch's state_dict.
        """
        stack: list[tuple[str, Module]] = [("", self)]
        while stack:
            mname, m = stack.pop()
            stack.extend(reversed([(f"{mname}.{k}" if mname else k, c) for k, c in m._modules.items()
                                   if c is not None]))
            for k, p in m._parameters.items():
                if p is not None:
                    yield (f"{mname}.{k}" if mname else k), p.data, m, k, "param"
            for k, b in m._buffers.items():
                if b is not None:
                    yield (f"{mname}.{k}" if mname else k), b, m, k, "buffer"

    def state_dict(self) -> OrderedDict[str, Any]:
        """Ordered {dotted name: backend array (a copy)} of every parameter and buffer."""
        return OrderedDict((k, a.copy()) for k, a, *_ in self._state_entries())

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Copy arrays from ``state`` into this module's parameters and buffers.

        Values may be numpy/cupy arrays, npgan tensors or anything with ``.numpy()``
        (e.g. torch tensors, after ``.detach()``). With ``strict``, the keys must
        match exactly; shapes must always match; values must be real (bool, integer
        or float, never complex) and finite. Nothing is changed unless every entry
        fits: the one-line error lists every missing, unexpected, mis-shaped,
        complex or non-finite key.
        """
        if not hasattr(state, "items"):
            raise TypeError(f"load_state_dict expects a mapping of names to arrays, got {type(state).__name__}")
        entries = list(self._state_entries())
        own = {k for k, *_ in entries}
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        staged = []
        bad = []
        for key, arr, m, local, kind in entries:
            if key not in state:
                continue
            v = state[key]
            if isinstance(v, Tensor):
                v = v.data
            elif not backend.is_array(v) and hasattr(v, "numpy"):
                v = v.detach().numpy() if hasattr(v, "detach") else v.numpy()
            v = backend.to_numpy(v) if backend.get_array_module(v) is not backend.get_array_module(arr) else v
            shape = tuple(getattr(v, "shape", ()))
            if shape != arr.shape:
                bad.append(f"{key}: expected shape {arr.shape}, got {shape}")
                continue
            if not backend.is_array(v):
                v = backend.np.asarray(v)
            dkind = v.dtype.kind
            if dkind not in ("b", "i", "u", "f"):
                bad.append(f"{key}: dtype {v.dtype} is not real numbers")
                continue
            if dkind == "f" and not bool(backend.get_array_module(v).isfinite(v).all()):
                bad.append(f"{key}: holds nan or inf")
                continue
            staged.append((m, local, kind, v, arr))
        problems = load_problems(strict, missing, unexpected, bad)
        if problems:
            raise StateDictError(f"load_state_dict into {type(self).__name__}: " + "; ".join(problems))
        for m, local, kind, v, arr in staged:
            new = backend.asarray(v, dtype=arr.dtype, device=backend.device_of(arr))  # arr's GPU, not the current
            if new is v:
                new = v.copy()
            if kind == "param":
                m._parameters[local].data = new
            else:
                m._buffers[local] = new

    # ---------------------------------------------------------------- devices and dtypes
    def to(self, device: str) -> Module:
        """Move every parameter and buffer to ``device`` ("cpu", "gpu", "gpu:N") in place."""
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    p.data = backend.asarray(p.data, device=device)
                    if p.grad is not None:
                        p.grad = backend.asarray(p.grad, device=device)
            for k, b in list(m._buffers.items()):
                if b is not None:
                    m._buffers[k] = backend.asarray(b, device=device)
        return self

    def double(self) -> Module:
        return self._cast(backend.float64)

    def float(self) -> Module:
        return self._cast(backend.float32)

    def _cast(self, dtype: Any) -> Module:
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    p.data = p.data.astype(dtype)
            for k, b in list(m._buffers.items()):
                if b is not None and b.dtype.kind == "f":
                    m._buffers[k] = b.astype(dtype)
        return self

    # ---------------------------------------------------------------- printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for k, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({k}): {sub}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n" + "\n".join(lines) + "\n)"


class Sequential(Module):
    """Modules run one after another; children are named "0", "1", … (or by an OrderedDict's keys)."""

    def __init__(self, *modules: Any) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for k, m in modules[0].items():
                self.add_module(k, m)
        else:
            for i, m in enumerate(modules):
                if not isinstance(m, Module):
                    raise TypeError(f"Sequential: argument {i} is a {type(m).__name__}, not a Module")
                self.add_module(str(i), m)

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):  # keeps the children's names, as PyTorch does
            return Sequential(OrderedDict(list(self._modules.items())[i]))
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, m: Module) -> Sequential:
        self.add_module(str(len(self._modules)), m)
        return self


class ModuleList(Module):
    """A list of modules, registered as "0", "1", …"""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, m: Module) -> ModuleList:
        self.add_module(str(len(self._modules)), m)
        return self

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())
