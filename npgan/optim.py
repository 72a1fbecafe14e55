"""Optimizers: SGD (with momentum), Adam and RMSprop, step for step the numbers of torch.optim.

Updates are done in place on the parameters' arrays, outside the graph.
``state_dict()`` holds plain arrays and numbers (``{"state": {i: {...}},
"param_groups": [{..., "params": [i, ...]}]}``, PyTorch's layout).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from . import backend, kernels, parallel
from .checks import real
from .tensor import Tensor

__all__ = ["Optimizer", "SGD", "Adam", "RMSprop"]


def _safe_div(xp: Any, num: Any, den: Any, eps: float) -> Any:
    """num / den; with eps = 0 a zero denominator (its numerator is 0 too: no gradient yet) gives 0, not nan."""
    if num.dtype.type(eps) > 0:  # (an eps below the dtype's smallest number rounds to 0 too)
        return num / den
    ok = den > 0  # (no ``where=``: CuPy's ufuncs do not take it)
    return xp.where(ok, num, 0) / xp.where(ok, den, 1)


def _elementwise(update: Any, *arrays: Any) -> None:
    """update(*arrays), an elementwise update in place, split over npgan's threads for large parameters.

    Each thread takes one contiguous run of the flattened arrays (one hand-off for the whole update): an Adam step
    is nine passes over a parameter and its two moments, which for a DCGAN's large layers (2M numbers, 8 MB
    each) is work a second core halves: over the shapes of DCGAN 32×32's conv weights, 14.1 ms in one piece
    against 7.7 ms on two threads (``python benchmarks/studies/threads.py --only adam``, the quiet Sapphire
    Rapids machine, 2026-12-07), about 1 % of that model's two-thread training step. Every element is computed
    exactly as in one piece, so the result does not depend on the thread count. Runs in one piece below
    :data:`npgan.parallel.ELEMENTWISE_MIN_WORK` elements, for a 0-d parameter, on the GPU, or when an array is
    not laid out contiguously.
    """
    a0 = arrays[0]
    xp = backend.get_array_module(a0)
    whole = (a0.ndim == 0 or xp is not backend.np
             or not all(a.shape == a0.shape and a.flags.c_contiguous for a in arrays))
    bounds = [(0, a0.size)] if whole else parallel.elementwise_bounds(a0.size, a0.size, xp)
    if len(bounds) == 1:
        update(*arrays)
        return
    flat = [a.reshape(-1) for a in arrays]
    parallel.run_bounds(lambda lo, hi: update(*(a[lo:hi] for a in flat)), bounds)


class Optimizer:
    """Base class: holds parameter groups (list of dicts with "params" and hyper-parameters) and per-parameter state."""

    defaults: dict[str, Any]

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups: list[dict[str, Any]] = []
        seen: set[int] = set()
        for g in groups:
            g = dict(g)
            ps = list(g["params"])
            for p in ps:
                if not isinstance(p, Tensor):
                    raise TypeError(f"{type(self).__name__} can only optimise Tensors, got {type(p).__name__}")
                if not p.requires_grad:
                    raise ValueError(f"{type(self).__name__}: a parameter of shape {p.shape} does not require grad")
                if id(p) in seen:
                    raise ValueError(f"{type(self).__name__}: a parameter appears in more than one group")
                seen.add(id(p))
            g["params"] = ps
            for k, v in defaults.items():
                g.setdefault(k, v)
            self._validate(g)
            self.param_groups.append(g)
        self.state: dict[int, dict[str, Any]] = {}  # keyed by the parameter's index over all groups

    def _validate(self, g: dict[str, Any]) -> None:
        real(f"{type(self).__name__}: learning rate lr", g["lr"], 0, low_open=True)
        real(f"{type(self).__name__}: weight_decay", g.get("weight_decay", 0), 0)

    def _indexed(self) -> Iterable[tuple[int, dict[str, Any], Tensor]]:
        i = 0
        for g in self.param_groups:
            for p in g["params"]:
                yield i, g, p
                i += 1

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to None."""
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    def step(self) -> None:
        for i, g, p in self._indexed():
            if p.grad is None:
                continue
            if p.grad.shape != p.data.shape:
                raise ValueError(f"{type(self).__name__}: gradient of shape {p.grad.shape} for a parameter "
                                 f"of shape {p.data.shape}")
            self._update(p.data, p.grad, self.state.setdefault(i, {}), g)

    def _update(self, p: Any, g: Any, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError

    def state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The keys a parameter's state holds once it has been updated under ``group``'s settings (what
        ``_update`` creates; a loaded state that lacks one would fail at the next step). Empty: no state."""
        return ()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        groups = []
        i = 0
        for g in self.param_groups:
            d = {k: v for k, v in g.items() if k != "params"}
            d["params"] = list(range(i, i + len(g["params"])))
            i += len(g["params"])
            groups.append(d)
        state = {k: {n: (v.copy() if backend.is_array(v) else v) for n, v in s.items()}
                 for k, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore hyper-parameters and per-parameter state (arrays moved to each parameter's device)."""
        groups = sd.get("param_groups") if isinstance(sd, dict) else None
        if groups is None or "state" not in sd:
            raise ValueError("optimizer state dict must have 'state' and 'param_groups'")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"optimizer state dict has {len(groups)} parameter groups, this optimizer has "
                             f"{len(self.param_groups)}")
        for sg, g in zip(groups, self.param_groups):
            if len(sg["params"]) != len(g["params"]):
                raise ValueError(f"optimizer state dict group has {len(sg['params'])} parameters, "
                                 f"this optimizer's has {len(g['params'])}")
        params = [p for _, _, p in self._indexed()]
        new_state: dict[int, dict[str, Any]] = {}
        for k, s in sd["state"].items():
            i = int(k)
            if not 0 <= i < len(params):
                raise ValueError(f"optimizer state for parameter {i}, but there are only {len(params)}")
            p = params[i]
            ns = {}
            for n, v in s.items():
                if backend.is_array(v) and getattr(v, "ndim", 0) > 0:
                    if v.shape != p.shape:
                        raise ValueError(f"optimizer state '{n}' of parameter {i} has shape {v.shape}, "
                                         f"the parameter has shape {p.shape}")
                    v = backend.asarray(v, dtype=p.dtype, device=p.device).copy()
                elif backend.is_array(v):
                    v = v.item()
                ns[n] = v
            new_state[i] = ns
        for sg, g in zip(groups, self.param_groups):
            for k, v in sg.items():
                if k != "params":
                    g[k] = tuple(v) if isinstance(v, list) else v
        self.state = new_state


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov and weight decay (torch.optim.SGD).

    g ← g + wd·p;  b ← μ·b + (1 − dampening)·g  (b = g on the first step);
    d = g + μ·b (Nesterov) or b;  p ← p − lr·d.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        real("SGD: momentum", momentum, 0)
        real("SGD: dampening", dampening, 0, 1)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov))

    def _update(self, p, g, state, group):
        wd, mu = group["weight_decay"], group["momentum"]
        if wd:
            g = g + wd * p
        if mu:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= mu
                buf += (1 - group["dampening"]) * g
            g = g + mu * buf if group["nesterov"] else buf
        p -= group["lr"] * g

    def state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] else ()


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba), the same arithmetic as torch.optim.Adam.

    m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²;  t ← t + 1
    p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
    ``weight_decay`` adds wd·p to g first (L2, not AdamW).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        try:
            b1, b2 = betas
            real("Adam: betas", b1, 0, 1, high_open=True)
            real("Adam: betas", b2, 0, 1, high_open=True)
        except (TypeError, ValueError):
            raise ValueError(f"Adam: betas must be two numbers in [0, 1), got {betas}") from None
        real("Adam: eps", eps, 0)
        super().__init__(params, dict(lr=lr, betas=(float(b1), float(b2)), eps=eps, weight_decay=weight_decay))

    def _update(self, p, g, state, group):
        xp = backend.get_array_module(p)
        b1, b2 = group["betas"]
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p
        if "exp_avg" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p)
            state["exp_avg_sq"] = xp.zeros_like(p)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        t = state["step"]
        if kernels.enabled(xp):  # the same arithmetic in one fused kernel
            kernels.adam_update(p, g, m, v, b1, b2, group["lr"] / (1 - b1 ** t), math.sqrt(1 - b2 ** t),
                                group["eps"])
            return
        bc1, bc2_sqrt, eps = 1 - b1 ** t, math.sqrt(1 - b2 ** t), group["eps"]

        def update(p, g, m, v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            denom = xp.sqrt(v)
            denom /= bc2_sqrt
            denom += eps
            upd = _safe_div(xp, m, denom, eps)
            upd *= group["lr"] / bc1
            p -= upd

        _elementwise(update, p, g, m, v)

    def state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("step", "exp_avg", "exp_avg_sq")


class RMSprop(Optimizer):
    """RMSprop (torch.optim.RMSprop without centering/momentum): v ← α·v + (1 − α)·g²;  p ← p − lr·g/(√v + ε)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0) -> None:
        real("RMSprop: alpha", alpha, 0, 1, high_open=True)
        real("RMSprop: eps", eps, 0)
        real("RMSprop: momentum", momentum, 0)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum))

    def _update(self, p, g, state, group):
        xp = backend.get_array_module(p)
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p
        if "square_avg" not in state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p)
            if group["momentum"]:
                state["momentum_buffer"] = xp.zeros_like(p)
        state["step"] += 1
        a = state["square_avg"]
        a *= group["alpha"]
        a += (1 - group["alpha"]) * (g * g)
        d = _safe_div(xp, g, xp.sqrt(a) + group["eps"], group["eps"])
        if group["momentum"]:
            buf = state["momentum_buffer"]
            buf *= group["momentum"]
            buf += d
            d = buf
        p -= group["lr"] * d

    def state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("step", "square_avg", "momentum_buffer") if group["momentum"] else ("step", "square_avg")
