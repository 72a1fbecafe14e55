"""Convolution layers with PyTorch's names, weight layouts, default init and state_dict keys."""

from __future__ import annotations

from typing import Any

from .. import backend
from ..checks import integer
from ..conv import conv2d, conv_transpose2d, conv_transpose_output_size, int_pair
from ..tensor import Tensor
from . import init
from .module import Module, Parameter

__all__ = ["Conv2d", "ConvTranspose2d"]


def _empty(*shape: int) -> Any:
    return backend.current_xp().empty(shape, dtype=backend.get_default_dtype())


class _ConvNd(Module):
    """Shared construction: checked sizes, weight of ``weight_shape``, PyTorch's default init."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, kernel_size: Any, stride: Any,
                 padding: Any, dilation: Any, bias: bool, transposed: bool) -> None:
        super().__init__()
        self.in_channels = integer(f"{kind}: in_channels", in_channels, 1)
        self.out_channels = integer(f"{kind}: out_channels", out_channels, 1)
        self.kernel_size = int_pair(f"{kind}: kernel_size", kernel_size, 1)
        self.stride = int_pair(f"{kind}: stride", stride, 1)
        self.padding = int_pair(f"{kind}: padding", padding, 0)
        self.dilation = int_pair(f"{kind}: dilation", dilation, 1)
        first, second = (in_channels, out_channels) if transposed else (out_channels, in_channels)
        self.weight = Parameter(_empty(first, second, *self.kernel_size))
        self.bias = Parameter(_empty(out_channels)) if bias else None
        # PyTorch: kaiming_uniform(a=√5) and U(±1/√fan_in), fan_in from weight.shape[1]·kh·kw — for the
        # transposed layer's (in, out, kh, kw) weight that is out·kh·kw, as PyTorch computes it.
        init.default_linear_init_(self.weight, self.bias)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}({self.in_channels}, {self.out_channels}): expected a "
                             f"4-D input (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}")

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if getattr(self, "output_padding", (0, 0)) != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv2d(_ConvNd):
    """2-D convolution layer: y = conv2d(x, weight, bias), x (N, in, H, W) → (N, out, OH, OW).

    weight: (out_channels, in_channels, kh, kw), bias: (out_channels,), both ~ U(±1/√(in·kh·kw))
    (PyTorch's default). OH = ⌊(H + 2p − d(kh − 1) − 1)/s⌋ + 1. See :func:`npgan.functional.conv2d`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, bias: bool = True) -> None:
        super().__init__("Conv2d", in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                         transposed=False)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution layer: x (N, in, H, W) → (N, out, OH, OW).

    weight: (in_channels, out_channels, kh, kw) (PyTorch's layout), bias: (out_channels,), both
    ~ U(±1/√(out·kh·kw)) (PyTorch's default). OH = (H − 1)s − 2p + d(kh − 1) + output_padding + 1.

    ``forward(x, output_size=None)``: as in PyTorch, ``output_size`` ((H, W) or (N, C, H, W)) picks the
    output size among the ones the matching convolution maps to (H, W) and overrides output_padding.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, bias: bool = True, dilation: Any = 1) -> None:
        super().__init__("ConvTranspose2d", in_channels, out_channels, kernel_size, stride, padding, dilation,
                         bias, transposed=True)
        self.output_padding = int_pair("ConvTranspose2d: output_padding", output_padding, 0)
        for a in (0, 1):
            if self.output_padding[a] >= max(self.stride[a], self.dilation[a]):
                raise ValueError(f"ConvTranspose2d: output_padding {self.output_padding} must be smaller "
                                 f"than either stride {self.stride} or dilation {self.dilation}")

    def _output_padding(self, x: Tensor, output_size: Any) -> tuple[int, int]:
        if output_size is None:
            return self.output_padding
        size = tuple(int(v) for v in output_size)[-2:]
        if len(size) != 2:
            raise ValueError(f"ConvTranspose2d: output_size must end with (H, W), got {output_size!r}")
        op = []
        for a in (0, 1):
            lo = conv_transpose_output_size(x.shape[2 + a], self.kernel_size[a], self.stride[a],
                                            self.padding[a], 0, self.dilation[a])
            hi = lo + self.stride[a] - 1
            if not lo <= size[a] <= hi:
                raise ValueError(f"ConvTranspose2d: requested output size {size} is not possible for input "
                                 f"shape {tuple(x.shape)}: on axis {'HW'[a]} the sizes {lo}..{hi} are")
            op.append(size[a] - lo)
        return op[0], op[1]

    def forward(self, x: Tensor, output_size: Any = None) -> Tensor:
        self._check_input(x)
        return conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                self._output_padding(x, output_size), self.dilation)
