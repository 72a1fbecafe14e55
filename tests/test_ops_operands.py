"""The core ops refuse operands that are not numbers, name freed graphs and non-scalar backward passes, and turn
integer and bool inputs of real functions into the default float dtype."""

from __future__ import annotations

import numpy as np
import pytest

import npgan
import npgan.functional as F
from npgan.tensor import GraphFreedError

GiB = 1 << 30


# ============================================================================ core ops
@pytest.mark.parametrize("op", [lambda t: t + None, lambda t: None + t, lambda t: t * None, lambda t: t - "a",
                                lambda t: t / {}, lambda t: t + object()])
def test_binary_ops_refuse_non_numeric_operands(op):
    with pytest.raises(TypeError, match="unsupported operand"):
        op(npgan.Tensor([1.0, 2.0]))


def test_graph_freed_and_non_scalar_backward_are_documented_runtime_errors():
    x = npgan.Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(GraphFreedError) as e:
        y.backward()
    assert isinstance(e.value, RuntimeError)
    with pytest.raises(RuntimeError):
        (x * x).backward()
    doc = (__import__("pathlib").Path(__file__).parents[1] / "docs" / "reliability.md").read_text()
    assert "GraphFreedError" in doc and "non-scalar" in doc


@pytest.mark.parametrize("fn", ["relu", "leaky_relu", "sigmoid", "tanh", "softplus", "logsigmoid"])
def test_integer_and_bool_inputs_become_the_default_float_dtype(fn):
    for data in (np.array([[1, -2], [3, 0]], dtype=np.int64), np.array([[True, False]])):
        y = getattr(F, fn)(npgan.tensor(data))
        assert y.dtype == npgan.get_default_dtype(), (fn, data.dtype, y.dtype)
