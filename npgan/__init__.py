"""npgan: a small, exact, fast deep-learning engine on NumPy (CuPy on GPU) for GANs.

Every differentiable op has a hand-written backward pass with its formula in
the docstring, checked numerically (``npgan.gradcheck``) and against PyTorch.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import backend, functional, nn, ops, optim, parallel
from .autograd import grad
from .backend import (
    DeviceError,
    get_default_dtype,
    get_device,
    manual_seed,
    set_default_dtype,
    set_device,
)
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .ops import (
    abs,
    cat,
    clamp,
    clip,
    concatenate,
    exp,
    log,
    matmul,
    maximum,
    mean,
    minimum,
    permute,
    reshape,
    sqrt,
    stack,
    sum,
    transpose,
    where,
)
from .parallel import get_num_threads, set_num_threads
from .tensor import (
    Function,
    Tensor,
    as_tensor,
    enable_grad,
    is_grad_enabled,
    no_grad,
    ones,
    rand,
    randn,
    tensor,
    zeros,
)
from .weights import load, save  # safetensors files (npgan.weights; the package is imported when called)

__all__ = [
    "__version__", "backend", "functional", "nn", "ops", "optim", "Tensor", "Function", "tensor", "as_tensor",
    "zeros", "ones", "randn", "rand", "no_grad", "enable_grad", "is_grad_enabled", "gradcheck", "GradcheckError",
    "grad", "gradgradcheck",
    "manual_seed", "set_default_dtype", "get_default_dtype", "set_device", "get_device", "DeviceError",
    "parallel", "get_num_threads", "set_num_threads",
    "abs", "cat", "clamp", "clip", "concatenate", "exp", "log", "matmul", "maximum", "minimum", "mean",
    "permute", "reshape", "sqrt", "stack", "sum", "transpose", "where", "save", "load",
]
