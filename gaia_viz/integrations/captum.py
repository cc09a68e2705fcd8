"""The per-layer gradient maps GAIA reads, as a Captum layer attribution.

::

    from captum.attr import LayerAttribution
    from gaia_viz.integrations.captum import GaiaMaps

    maps = GaiaMaps(model, ["bn1", "bn2"]).attribute(x)           # [(B, C1, H1, W1), (B, C2, H2, W2)]
    fraction = (maps[0] != 0).float().mean(1, keepdim=True)         # GAIA-Z's non-zero fraction
    upsampled = LayerAttribution.interpolate(fraction, x.shape[-2:])  # to the input's size

``GaiaMaps(model, layers, objective="max_logit").attribute(inputs, target=None)`` returns the
gradient of a GAIA objective with respect to each layer's output, as GAIA computes it
(:func:`gaia_viz.gaia.layer_gradients`): one tensor per layer (a list for a list of layers,
one tensor for one layer, as Captum's layer methods do), on the inputs' device. Objectives
(:data:`gaia_viz.gaia.OBJECTIVES`):

- ``max_logit``: :math:`\\sum_b \\max_k f(x_b)_k`, GAIA-Z's; its exact zeros are what GAIA-Z
  counts. ``target`` (a class index, or one per sample) uses that class's logit instead, as
  Captum's ``target`` does; ``None`` is GAIA's own objective, not the predicted class's
  logit (they agree: the maximum logit is the predicted class's).
- ``log_softmax_sum``: :math:`\\sum_b \\sum_k \\log\\mathrm{softmax}(f(x_b))_k`, GAIA-A's output
  component (read at the head layer).
- ``before_head_sum``: the sum of the pooled features fed to the classifier, GAIA-A's inner
  gradients.

Layers are modules of ``model`` or names as in ``model.named_modules()``. "The gradient at a
layer" is GAIA's: for a norm fused with its activation (timm's ``BatchNormAct2d``) it is taken
before the activation. Maps are channels first, ``(B, C, H, W)``, also for a channels-last
layer (a LayerNorm over the last dimension).

The model is left as found (hooks removed, ``requires_grad`` flags and train/eval modes
restored); gradients are taken with respect to activations only, in eval mode.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from gaia_viz.errors import LayerError, ModelError
from gaia_viz.integrations import missing_package_error

try:
    from captum.attr import LayerAttribution
except ImportError as error:  # one error that says what to install, not a chain of two
    raise missing_package_error(__name__, "captum", "pip install captum", error) from None

from gaia_viz.gaia import OBJECTIVES, layer_gradients


def _layer_name(layer: nn.Module | str, modules: dict[str, nn.Module], names_of: dict[int, str]) -> str:
    if isinstance(layer, str):
        if layer not in modules:
            raise LayerError(f"the model has no module named {layer!r} (names as in model.named_modules())")
        return layer
    if isinstance(layer, nn.Module) and id(layer) in names_of:
        return names_of[id(layer)]
    raise LayerError(f"{type(layer).__name__} is not a module of the model: give modules of the "
                     "model or their names as in model.named_modules()")


class GaiaMaps(LayerAttribution):
    """Gradients of a GAIA objective with respect to layer outputs, Captum's way (see the
    module docstring)."""

    def __init__(self, model: nn.Module, layers: Sequence[nn.Module | str] | nn.Module | str,
                 objective: str = "max_logit"):
        """
        :param model: a classifier over image batches ``(B, C, H, W)`` (a module: GAIA hooks
            its layers, so a plain forward function will not do)
        :param layers: one layer or a list of them: modules of ``model`` or their names
        :param objective: ``max_logit`` (GAIA-Z's), ``log_softmax_sum`` or ``before_head_sum``
            (GAIA-A's), see :data:`gaia_viz.gaia.OBJECTIVES`
        """
        if not isinstance(model, nn.Module):
            raise ModelError(f"GaiaMaps needs the model as an nn.Module, got {type(model).__name__}")
        if objective not in OBJECTIVES:
            raise ModelError(f"unknown objective {objective!r}; choose one of {sorted(OBJECTIVES)}")
        self.single_layer = isinstance(layers, (str, nn.Module)) and not isinstance(layers, nn.ModuleList)
        chosen = [layers] if self.single_layer else list(layers)
        if not chosen:
            raise LayerError("no layer given: pass a layer or a list of layers")
        modules = dict(model.named_modules())
        names_of = {id(module): name for name, module in modules.items()}
        self.layer_names = [_layer_name(layer, modules, names_of) for layer in chosen]
        layer_modules = [modules[name] for name in self.layer_names]
        super().__init__(model, layer_modules[0] if self.single_layer else layer_modules)
        self.model = model
        self.objective = objective

    def attribute(self, inputs: Tensor | tuple[Tensor], target=None) -> Tensor | list[Tensor]:
        """
        :param inputs: an image batch ``(B, C, H, W)`` (or a 1-tuple of one, as Captum allows)
        :param target: ``max_logit`` only: a class index, or one per sample (list or tensor),
            whose logit is differentiated instead of each sample's maximum; ``None``: GAIA's
        :return: one map per layer, ``(B, C_l, H_l, W_l)`` on the inputs' device: a tensor for
            one layer, a list in the order of ``layers`` for a list
        """
        if isinstance(inputs, tuple):
            if len(inputs) != 1:
                raise ModelError(f"GaiaMaps takes one input tensor, got a tuple of {len(inputs)}")
            (inputs,) = inputs
        if not isinstance(inputs, Tensor):
            raise ModelError(f"inputs must be a tensor (B, C, H, W), got {type(inputs).__name__}")
        grads = layer_gradients(self.model, inputs, self.layer_names, self.objective, target=target)
        maps = [grads[name].to(inputs.device) for name in self.layer_names]
        return maps[0] if self.single_layer else maps


__all__ = ["GaiaMaps"]
