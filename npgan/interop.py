"""The PyTorch bridge: the same network, with the same weights, in ``torch.nn`` — and back.

npgan's layers take PyTorch's constructor arguments and keep PyTorch's parameter layouts and state_dict keys,
so a conversion is a structural copy followed by ``load_state_dict(strict=True)``:

* :func:`to_torch` — ``to_torch(module) -> torch.nn.Module``: the twin built from ``torch.nn`` layers, with the
  same parameters, buffers (BatchNorm running statistics and ``num_batches_tracked``), ``requires_grad`` flags,
  dtype and train/eval mode; on the CPU (call ``.to("cuda")`` on the result to move it);
* :func:`from_torch` — ``from_torch(module) -> npgan.nn.Module``: the reverse, on npgan's current device. It does
  not draw from npgan's random generator (layers are built and then overwritten; the generator is restored).

Converted, layer by layer (exact types only — a subclass may change ``forward``):
Sequential, ModuleList, Linear, Conv2d, ConvTranspose2d, BatchNorm1d, BatchNorm2d, ReLU, LeakyReLU, Sigmoid,
Tanh, Softplus (torch's default beta = 1, threshold = 20: above the threshold torch returns x, which differs from
log(1 + eˣ) by less than e⁻²⁰ ≈ 2·10⁻⁹), Identity, Flatten, Unflatten, Dropout. Anything else — a custom Module
subclass, a grouped or non-zero-padded convolution, a Softplus with another beta — is named in one TypeError:
``npgan.interop.to_torch: cannot convert 'main.3' (MyBlock): ...``.

torch is imported only inside these functions: ``import npgan`` never imports it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from . import backend, nn

__all__ = ["to_torch", "from_torch"]


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ImportError("npgan.interop needs PyTorch (pip install torch); the rest of npgan does not") from None
    return torch


def _refuse(fn: str, path: str, m: Any, why: str) -> TypeError:
    return TypeError(f"npgan.interop.{fn}: cannot convert {path or '<root>'!r} ({type(m).__name__}): {why}")


def _float_dtype(arrays: list[Any]) -> Any:
    """The float dtype of a layer's arrays (None for a layer without any)."""
    for a in arrays:
        if a is not None and a.dtype.kind == "f":
            return a.dtype
    return None


def _twin(new_layer: Any, torch: Any, m: Any, path: str, memo: dict[int, Any]) -> Any:
    """The twin of one layer, ``new_layer(torch, m, path, memo)`` (recursively for containers), either way; a
    module used twice is converted once (``memo`` maps id(m) to its twin)."""
    if id(m) not in memo:
        memo[id(m)] = new_layer(torch, m, path, memo)
    return memo[id(m)]


def _twin_children(new_layer: Any, torch: Any, m: Any, path: str, memo: dict[int, Any]) -> OrderedDict:
    """The twins of a container's children by name (``path.name`` in messages); None children are left out."""
    return OrderedDict((k, _twin(new_layer, torch, c, f"{path}.{k}" if path else k, memo))
                       for k, c in m._modules.items() if c is not None)


def _same_layer(lib: Any, m: Any) -> Any:
    """``m``'s twin in ``lib`` (``torch.nn`` or ``npgan.nn``) for the layers whose class names and constructor
    arguments the two libraries share: Linear, Conv2d, ConvTranspose2d, BatchNorm1d/2d, LeakyReLU."""
    name = type(m).__name__
    if name == "Linear":
        return lib.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    if name == "LeakyReLU":
        return lib.LeakyReLU(m.negative_slope)
    if name.startswith("BatchNorm"):
        return getattr(lib, name)(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                                  track_running_stats=m.track_running_stats)
    extra = {"output_padding": m.output_padding} if name == "ConvTranspose2d" else {}
    return getattr(lib, name)(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                              dilation=m.dilation, bias=m.bias is not None, **extra)


# ============================================================================ npgan → torch
def _new_torch_layer(torch: Any, m: Any, path: str, memo: dict[int, Any]) -> Any:
    tnn = torch.nn
    t = type(m)
    if t is nn.Sequential or t is nn.ModuleList:
        kids = _twin_children(_new_torch_layer, torch, m, path, memo)
        return tnn.Sequential(kids) if t is nn.Sequential else tnn.ModuleList(list(kids.values()))
    if t in (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.LeakyReLU):
        out = _same_layer(tnn, m)
    elif t is nn.Flatten:
        out = tnn.Flatten(m.start_dim, m.end_dim)
    elif t is nn.Unflatten:
        out = tnn.Unflatten(m.dim, m.unflattened_size)
    elif t is nn.Dropout:
        out = tnn.Dropout(m.p)
    elif t in (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Identity):
        out = getattr(tnn, t.__name__)()
    else:
        why = ("a custom Module subclass: convert its layers one by one, or build it as nn.Sequential"
               if isinstance(m, nn.Module) else "not an npgan.nn.Module")
        raise _refuse("to_torch", path, m, why)
    arrays = [p.data for p in m._parameters.values() if p is not None] + list(m._buffers.values())
    dt = _float_dtype(arrays)
    if dt is not None:
        out = out.to(getattr(torch, dt.name))
    return out


def _copy_modes(src: Any, dst: Any) -> None:
    """train/eval mode, module by module (both trees have the same names)."""
    twins = dict(dst.named_modules())
    for name, a in src.named_modules():
        twins[name].training = a.training


def to_torch(module: Any) -> Any:
    """The ``torch.nn`` twin of an npgan module: same structure, weights, buffers, dtype and train/eval mode.

    ``to_torch(G)(torch.from_numpy(z))`` equals ``G(npgan.tensor(z))`` to float32 rounding, in train mode (batch
    statistics; the running statistics are updated alike) and in eval mode. Raises TypeError naming the first
    layer that cannot be converted (see the module docstring), ImportError without PyTorch.
    """
    torch = _torch()
    tm = _twin(_new_torch_layer, torch, module, "", {})
    state = OrderedDict((k, torch.from_numpy(backend.np.array(backend.to_numpy(v))))
                        for k, v in module.state_dict().items())
    tm.load_state_dict(state, strict=True)
    grads = {k: p.requires_grad for k, p in module.named_parameters()}
    for k, p in tm.named_parameters():
        p.requires_grad_(grads[k])
    _copy_modes(module, tm)
    return tm


# ============================================================================ torch → npgan
def _new_npgan_layer(torch: Any, m: Any, path: str, memo: dict[int, Any]) -> Any:
    tnn = torch.nn
    t = type(m)
    if t is tnn.Sequential or t is tnn.ModuleList:
        kids = _twin_children(_new_npgan_layer, torch, m, path, memo)
        return nn.Sequential(kids) if t is tnn.Sequential else nn.ModuleList(list(kids.values()))
    if t in (tnn.Conv2d, tnn.ConvTranspose2d):
        if m.groups != 1:
            raise _refuse("from_torch", path, m, f"groups={m.groups} (npgan convolutions have groups=1)")
        if m.padding_mode != "zeros":
            raise _refuse("from_torch", path, m, f"padding_mode={m.padding_mode!r} (npgan pads with zeros)")
        if isinstance(m.padding, str):  # Conv2d(padding="same"/"valid")
            raise _refuse("from_torch", path, m, f"padding={m.padding!r} (give the padding as numbers)")
    if t in (tnn.Linear, tnn.Conv2d, tnn.ConvTranspose2d, tnn.BatchNorm1d, tnn.BatchNorm2d, tnn.LeakyReLU):
        out = _same_layer(nn, m)
    elif t is tnn.Softplus:
        if m.beta != 1 or m.threshold != 20:
            raise _refuse("from_torch", path, m, f"beta={m.beta}, threshold={m.threshold} (npgan's Softplus is "
                          "log(1 + exp(x)): beta=1, threshold=20 only)")
        out = nn.Softplus()
    elif t is tnn.Flatten:
        out = nn.Flatten(m.start_dim, m.end_dim)
    elif t is tnn.Unflatten:
        if isinstance(m.dim, str):
            raise _refuse("from_torch", path, m, f"a named dimension {m.dim!r}")
        out = nn.Unflatten(m.dim, tuple(m.unflattened_size))
    elif t is tnn.Dropout:
        out = nn.Dropout(m.p)
    elif t in (tnn.ReLU, tnn.Sigmoid, tnn.Tanh, tnn.Identity):
        out = getattr(nn, t.__name__)()
    else:
        why = ("a custom Module subclass: convert its layers one by one, or build it as torch.nn.Sequential"
               if isinstance(m, tnn.Module) else "not a torch.nn.Module")
        raise _refuse("from_torch", path, m, why)
    tensors = [v for v in list(m._parameters.values()) + list(m._buffers.values()) if v is not None]
    if any(v.dtype == torch.float64 for v in tensors):
        out = out.double()
    return out


def _host(torch: Any, v: Any) -> Any:
    """A torch tensor as a numpy array; float16/bfloat16 → float32 with a PrecisionWarning."""
    v = v.detach().cpu()
    if v.dtype in (torch.float16, torch.bfloat16):
        import warnings

        from .errors import PrecisionWarning
        warnings.warn(f"a {v.dtype} tensor of shape {tuple(v.shape)} converted to float32 (npgan computes in "
                      "float32 or float64)", PrecisionWarning, stacklevel=3)
        v = v.float()
    return v.numpy()


def from_torch(module: Any) -> Any:
    """The npgan twin of a ``torch.nn`` module: same structure, weights, buffers, dtype and train/eval mode.

    The inverse of :func:`to_torch`; the twin lives on npgan's current device. npgan's random generator is left
    where it was (building the layers draws default initial weights, which are then overwritten). Raises
    TypeError naming the first layer that cannot be converted, ImportError without PyTorch.
    """
    torch = _torch()
    rng_state = backend.get_rng_state()
    try:
        nm = _twin(_new_npgan_layer, torch, module, "", {})
    finally:
        backend.set_rng_state(rng_state)
    nm.load_state_dict(OrderedDict((k, _host(torch, v)) for k, v in module.state_dict().items()), strict=True)
    grads = {k: p.requires_grad for k, p in module.named_parameters()}
    for k, p in nm.named_parameters():
        p.requires_grad = grads[k]
    _copy_modes(module, nm)
    return nm
