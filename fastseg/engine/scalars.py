"""Hyperparameters that stay graph inputs under torch.compile.

Dynamo makes a float argument that changed between calls symbolic (from the second value on),
but specializes it again, one graph per value, wherever it meets an op that takes a Python
number: an exponent (``x ** k``), a float argument of an op, ``torch.tensor([k])``, a ``math``
function. Added to a zero tensor it becomes a 0-d tensor computed from the graph's input, and
every later value reuses the graph. Outside torch.compile nothing changes: the numbers stay
numbers, and the ops give the same bits as before.
"""

from __future__ import annotations

import torch
from torch import Tensor


def as_operand(value: float, like: Tensor) -> float | Tensor:
    """``value``, or under torch.compile a 0-d float64 tensor holding it on ``like``'s device (an
    exponent or a base in an op with ``like``; the device keeps CPU nodes out of a CUDA graph)."""
    if not torch.compiler.is_compiling():
        return value
    return like.new_zeros((), dtype=torch.float64) + value


def values_tensor(values: list[float]) -> Tensor:
    """``values`` as a float64 CPU tensor (the ``params`` input of the fused ``custom_op`` pair)."""
    if not torch.compiler.is_compiling():
        return torch.tensor(values, dtype=torch.float64)
    cpu = torch.zeros(())
    return torch.stack([as_operand(v, cpu) for v in values])
