"""Leaving a model exactly as found: one home for the guards every gradient user needs.

Captum's habit (``apply_gradient_requirements`` / ``undo_gradient_requirements``): a method
that changes train/eval modes or ``requires_grad`` flags restores them afterwards, also
when it raises.

Every guard also holds the model's lock (:func:`model_lock`): a model shared between
threads (a Streamlit ``cache_resource`` model used by two reruns or two sessions) must not
see one thread's hooks fire in another thread's forward pass, nor have its modes and flags
restored under a computation that is still running.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Iterator

import torch
from torch import nn

_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock that serialises gaia_viz's use of ``model`` across threads."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


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
    with model_lock(model):
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
    with model_lock(model):
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
