"""Dense layers, activations, dropout, reshaping and batch normalisation as modules."""

from __future__ import annotations

from typing import Any

from .. import backend, distributed
from .. import functional as F
from ..checks import integer, real
from ..collective import sync_batch_norm
from ..ops import flatten, reshape
from ..tensor import Tensor
from . import init
from .module import Module, Parameter

__all__ = ["Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softplus", "Identity", "Flatten", "Unflatten",
           "Dropout", "BatchNorm1d", "BatchNorm2d"]


def _empty(*shape: int) -> Any:
    return backend.current_xp().empty(shape, dtype=backend.get_default_dtype())


class Linear(Module):
    """y = x Wᵀ + b;  weight: (out_features, in_features), bias: (out_features,).

    Initialised as PyTorch: W ~ U(±1/√in), b ~ U(±1/√in).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = integer("in_features", in_features, 1)
        self.out_features = integer("out_features", out_features, 1)
        self.weight = Parameter(_empty(out_features, in_features))
        self.bias = Parameter(_empty(out_features)) if bias else None
        init.default_linear_init_(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}): input of shape {tuple(x.shape)} "
                             f"does not fit weight of shape {self.weight.shape}; the last axis must be "
                             f"{self.in_features}")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = real("LeakyReLU: negative_slope", negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class Softplus(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x)


class Identity(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class Flatten(Module):
    """Merge axes start_dim..end_dim (default: all but the batch axis)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Tensor) -> Tensor:
        return flatten(x, self.start_dim, self.end_dim)


class Unflatten(Module):
    """Split axis ``dim`` into ``unflattened_size`` (e.g. (N, 784) → (N, 1, 28, 28))."""

    def __init__(self, dim: int, unflattened_size: tuple[int, ...]) -> None:
        super().__init__()
        sizes = tuple(unflattened_size) if isinstance(unflattened_size, (tuple, list)) else None
        if not isinstance(dim, (int, backend.np.integer)) or isinstance(dim, bool):
            raise TypeError(f"Unflatten: dim must be an integer, got {dim!r}")
        if sizes is None or not sizes or not all(
                isinstance(v, (int, backend.np.integer)) and not isinstance(v, bool) and v >= 0 for v in sizes):
            raise ValueError(f"Unflatten: unflattened_size must be a tuple of integers >= 0, got {unflattened_size!r}")
        self.dim, self.unflattened_size = int(dim), tuple(int(v) for v in sizes)

    def forward(self, x: Tensor) -> Tensor:
        if not -x.ndim <= self.dim < x.ndim:
            raise ValueError(f"Unflatten: dim {self.dim} is out of range for input shape {tuple(x.shape)}")
        d = self.dim % x.ndim
        n = 1
        for s in self.unflattened_size:
            n *= s
        if x.shape[d] != n:
            raise ValueError(f"Unflatten: axis {self.dim} of input shape {x.shape} has size {x.shape[d]}, "
                             f"but {self.unflattened_size} needs {n}")
        return reshape(x, x.shape[:d] + self.unflattened_size + x.shape[d + 1:])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Dropout(Module):
    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = real("Dropout: probability p", p, 0, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _BatchNorm(Module):
    _dims: tuple[int, ...] = ()
    #: a batch norm mixes the samples of a batch (in training mode), so a per-sample gradient is not defined
    #: through it: the WGAN-GP penalty refuses a critic with one (it looks for this attribute)
    mixes_batch = True

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__()
        self.num_features = integer("num_features", num_features, 1)
        eps = real(f"{type(self).__name__}: eps", eps, 0, low_open=True)
        if momentum is not None:
            momentum = real(f"{type(self).__name__}(num_features, eps, momentum): momentum (or None)", momentum, 0, 1)
        self.eps, self.momentum, self.affine = float(eps), momentum, affine
        self.track_running_stats = track_running_stats
        xp, dt = backend.current_xp(), backend.get_default_dtype()
        if affine:
            self.weight = Parameter(xp.ones(num_features, dtype=dt))
            self.bias = Parameter(xp.zeros(num_features, dtype=dt))
        else:
            self.weight = None
            self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", xp.zeros(num_features, dtype=dt))
            self.register_buffer("running_var", xp.ones(num_features, dtype=dt))
            self.register_buffer("num_batches_tracked", xp.zeros((), dtype=backend.int64))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in self._dims or x.shape[1] != self.num_features:
            dims = " or ".join(f"{d}-D" for d in self._dims)
            raise ValueError(f"{type(self).__name__}({self.num_features}): expected a {dims} input with "
                             f"{self.num_features} channels on axis 1, got shape {tuple(x.shape)}")
        tracking = self.track_running_stats
        if (self.training or not tracking) and distributed.world().size > 1:
            return self._synchronised(x, tracking)
        return F.batch_norm(
            x, self._buffers.get("running_mean") if tracking else None,
            self._buffers.get("running_var") if tracking else None,
            self.weight, self.bias, training=self.training or not tracking,
            momentum=self.momentum, eps=self.eps,
            num_batches_tracked=self._buffers.get("num_batches_tracked") if self.training and tracking else None)

    def _synchronised(self, x: Tensor, tracking: bool) -> Tensor:
        """Batch statistics over every rank of a data-parallel run (:func:`npgan.collective.sync_batch_norm`,
        PyTorch's SyncBatchNorm): N ranks normalise with the statistics of the whole batch, as one process would.
        Used in training mode whenever :func:`npgan.distributed.world` has more than one process (inside
        :func:`npgan.distributed.local` it has one)."""
        C = self.num_features
        xp = backend.get_array_module(x.data)
        weight = self.weight if self.weight is not None else Tensor(xp.ones(C, dtype=x.dtype))
        bias = self.bias if self.bias is not None else Tensor(xp.zeros(C, dtype=x.dtype))
        return sync_batch_norm(
            x, self._buffers.get("running_mean") if tracking else None,
            self._buffers.get("running_var") if tracking else None, weight, bias, momentum=self.momentum,
            eps=self.eps, num_batches_tracked=self._buffers.get("num_batches_tracked") if tracking else None)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class BatchNorm1d(_BatchNorm):
    """Batch norm of (N, C) or (N, C, L) over everything but C; running statistics as PyTorch.

    The second positional argument is eps (not momentum).
    """

    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm of (N, C, H, W) over N, H, W per channel; running statistics as PyTorch."""

    _dims = (4,)
