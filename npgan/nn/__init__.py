"""Layers and containers with PyTorch's names, parameter layouts and state_dict keys."""

from . import init
from .conv import Conv2d, ConvTranspose2d
from .layers import (
    BatchNorm1d,
    BatchNorm2d,
    Dropout,
    Flatten,
    Identity,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    Softplus,
    Tanh,
    Unflatten,
)
from .module import Module, ModuleList, Parameter, Sequential, StateDictError

__all__ = ["init", "Module", "ModuleList", "Parameter", "Sequential", "StateDictError", "Linear", "ReLU",
           "LeakyReLU", "Sigmoid", "Tanh", "Softplus", "Identity", "Flatten", "Unflatten", "Dropout",
           "BatchNorm1d", "BatchNorm2d", "Conv2d", "ConvTranspose2d"]
