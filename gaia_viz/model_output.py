"""The logits in what a model's forward returns (:func:`model_logits`): every forward pass of
gaia_viz reads them here, so a model returning a tuple, a dict or an output object is
accepted the same way everywhere, or refused saying what it returned."""

from __future__ import annotations

from torch import Tensor

from gaia_viz.errors import ModelError

WRAP_HINT = ("wrap the model so that forward returns that tensor: class Logits(torch.nn.Module): "
             "def __init__(self, m): super().__init__(); self.m = m; def forward(self, x): return self.m(x)[...]")


def _describe(output) -> str:
    """What a forward returned, in a few words ("a tuple of 2: Tensor(2, 10), str")."""
    if isinstance(output, Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    if isinstance(output, dict):
        keys = ", ".join(repr(k) for k in list(output)[:8]) + (" ..." if len(output) > 8 else "")
        return f"a {type(output).__name__} with keys {keys or '(none)'}"
    if isinstance(output, (tuple, list)):
        parts = ", ".join(f"Tensor{tuple(v.shape)}" if isinstance(v, Tensor) else type(v).__name__
                          for v in list(output)[:4]) + (" ..." if len(output) > 4 else "")
        return f"a {type(output).__name__} of {len(output)}: {parts or '(empty)'}"
    return f"a {type(output).__module__}.{type(output).__qualname__}"


def model_logits(output) -> Tensor:
    """The logits ``(batch, classes)`` in what a model's forward returned.

    Accepted where unambiguous: a tensor; a tuple or list whose first element is the logits
    (torchvision's ``InceptionOutputs`` / ``GoogLeNetOutputs`` are named tuples starting with
    ``logits``; the auxiliary outputs after it are ignored); a dict with a ``"logits"`` entry or
    an object with a ``logits`` attribute (Hugging Face's outputs). Anything else is a
    ModelError saying what was returned and how to wrap the model.
    """
    candidate = output
    if isinstance(output, dict):
        candidate = output.get("logits")
    elif isinstance(output, (tuple, list)):
        candidate = output[0] if output else None
    elif not isinstance(output, Tensor):
        candidate = getattr(output, "logits", None)
    if isinstance(candidate, Tensor) and candidate.ndim == 2:
        return candidate
    where = "" if candidate is output or candidate is None else f" (its logits candidate is {_describe(candidate)})"
    raise ModelError(f"the model must return logits of shape (batch, classes), a tuple or list starting with them, "
                     f"or a dict or object with 'logits'; it returned {_describe(output)}{where}. To use it, "
                     f"{WRAP_HINT}")


__all__ = ["WRAP_HINT", "model_logits"]
