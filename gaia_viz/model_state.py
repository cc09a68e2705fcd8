"""Leaving a model exactly as found: one home for the guards every gradient user needs.

Captum's habit (``apply_gradient_requirements`` / ``undo_gradient_requirements``): a method
that changes train/eval modes or ``requires_grad`` flags restores them afterwards, also
when it raises.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model without either)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the body with ``model.eval()``, then restore each module's own training flag."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """``requires_grad=False`` on every parameter for the body, then the flags restored.

    With parameters frozen, autograd never computes a parameter gradient: only the
    gradients asked for (activations, inputs) are built and ``p.grad`` is never written.
    """
    flags = [(param, param.requires_grad) for param in model.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield model
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


@contextlib.contextmanager
def activation_gradients_only(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters for the body; everything restored after."""
    with eval_mode(model), frozen_parameters(model):
        yield model
