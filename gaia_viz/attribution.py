"""Input attributions for one image batch, computed with Captum (for the Inspect page).

One verb, Captum style: ``attribute(model, x, method, target=None, **params)`` returns a
tensor shaped like ``x`` (B, C, H, W), except Layer Grad-CAM which returns (B, 1, H, W)
upsampled to the input size. ``target`` defaults to the predicted class. Methods
(``f_t`` is the target logit, ``x'`` the zero baseline):

- ``saliency``:              |d f_t / d x|
- ``integrated_gradients``:  (x - x') * integral_0^1 d f_t / d x at x' + a (x - x') da, the
                             integral by Captum's Gauss-Legendre quadrature with ``n_steps``
                             points, so that sum(attribution) ~= f_t(x) - f_t(x') (completeness)
- ``input_x_gradient``:      x * d f_t / d x
- ``guided_backprop``:       d f_t / d x with every nn.ReLU's backward replaced by
                             relu(grad_out) (only positive signals flow back)
- ``grad_cam``:              relu(sum_c w_c A_c) at a layer, w_c = mean_p d f_t / d A_c[p];
                             default layer: GAIA's head layer (the map the global pool reads)
- ``occlusion``:             f_t(x) - f_t(x with a window set to 0), window ~ 1/4 of the side
- ``smoothgrad``:            mean over n noisy copies x + N(0, sigma^2) of |d f_t / d x|

The model is left exactly as found: eval mode and frozen parameters during the call (only
input gradients are computed), in-place ReLUs switched off during the call (Captum's ReLU
hooks and layer hooks need the un-modified outputs), every flag restored afterwards, also
on exceptions; Captum removes its own hooks.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from gaia_viz import gaia
from gaia_viz.errors import AttributionError, LayerError
from gaia_viz.model_state import activation_gradients_only, model_device


@dataclass(frozen=True)
class AttributionMethod:
    """A registered attribution method: display label, one-line description, defaults."""

    label: str
    description: str
    defaults: dict = field(default_factory=dict)
    signed: bool = True  # False: the raw attribution is already non-negative


ATTRIBUTION_METHODS: dict[str, AttributionMethod] = {
    "saliency": AttributionMethod(
        "Saliency", "absolute input gradient of the target logit", signed=False),
    "integrated_gradients": AttributionMethod(
        "Integrated Gradients",
        "input minus zero baseline times the gradient averaged along the straight path",
        defaults=dict(n_steps=32, internal_batch_size=16)),
    "input_x_gradient": AttributionMethod(
        "Input x Gradient", "input times its gradient"),
    "guided_backprop": AttributionMethod(
        "Guided Backprop", "gradient with only positive signals passed back through ReLUs"),
    "grad_cam": AttributionMethod(
        "Layer Grad-CAM", "gradient-weighted layer activations, upsampled to the input",
        defaults=dict(layer=None), signed=False),
    "occlusion": AttributionMethod(
        "Occlusion", "drop of the target logit when a window of the input is zeroed",
        defaults=dict(window=None, stride=None)),
    "smoothgrad": AttributionMethod(
        "SmoothGrad", "saliency averaged over noisy copies of the input",
        defaults=dict(nt_samples=16, stdevs=None, noise_level=0.15), signed=False),
}


# --------------------------------------------------------------------------- plumbing


@contextlib.contextmanager
def _relus_not_inplace(model: nn.Module) -> Iterator[None]:
    """Every nn.ReLU with ``inplace=True`` runs out of place for the duration."""
    switched = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
    try:
        for module in switched:
            module.inplace = False
        yield
    finally:
        for module in switched:
            module.inplace = True


@contextlib.contextmanager
def _attribution_context(model: nn.Module) -> Iterator[None]:
    # gaia's guard: eval mode + frozen parameters, restored on exit
    with activation_gradients_only(model), _relus_not_inplace(model), \
            torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
        # Captum announces its temporary ReLU hooks on every call
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        yield


def _as_batch(model: nn.Module, x: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise AttributionError(f"x must be a tensor, got {type(x).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise AttributionError(f"x must be an image (C, H, W) or a batch (B, C, H, W), got shape {tuple(x.shape)}")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return x.detach().to(device=model_device(model), dtype=dtype).clone()


def predicted_classes(model: nn.Module, x: Tensor) -> Tensor:
    """argmax_k f(x)_k per sample, shape (B,), computed in eval mode without gradients."""
    x = _as_batch(model, x)
    with activation_gradients_only(model), torch.no_grad():
        return model(x).argmax(dim=1)


def _target_tensor(model: nn.Module, x: Tensor, target) -> Tensor:
    if target is None:
        return predicted_classes(model, x)
    target = torch.as_tensor(target, dtype=torch.long, device=x.device).reshape(-1)
    if target.numel() == 1:
        target = target.expand(x.shape[0])
    if target.numel() != x.shape[0]:
        raise AttributionError(f"target has {target.numel()} entries for a batch of {x.shape[0]}")
    return target


def occlusion_window(height: int, width: int, window: int | None = None,
                     stride: int | None = None) -> tuple[int, int]:
    """(window, stride) in pixels: default window = round(min side / 4), stride = window / 2."""
    side = min(height, width)
    window = int(window) if window else max(1, round(side / 4))
    stride = int(stride) if stride else max(1, window // 2)
    if not 1 <= window <= side or stride < 1:
        raise AttributionError(f"occlusion window must be in [1, {side}] and stride >= 1, "
                         f"got window={window}, stride={stride}")
    return window, stride


def _module_named(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        raise LayerError(f"layer {name!r} not found; use a name from model.named_modules()")
    return modules[name]


# --------------------------------------------------------------------------- methods


def _saliency(model, x, target):
    from captum.attr import Saliency
    return Saliency(model).attribute(x, target=target, abs=True)


def _integrated_gradients(model, x, target, n_steps=32, internal_batch_size=16):
    from captum.attr import IntegratedGradients
    return IntegratedGradients(model).attribute(
        x, baselines=torch.zeros_like(x), target=target, n_steps=int(n_steps),
        internal_batch_size=int(internal_batch_size) if internal_batch_size else None)


def _input_x_gradient(model, x, target):
    from captum.attr import InputXGradient
    return InputXGradient(model).attribute(x, target=target)


def _guided_backprop(model, x, target):
    from captum.attr import GuidedBackprop
    return GuidedBackprop(model).attribute(x, target=target)


def _grad_cam(model, x, target, layer=None):
    from captum.attr import LayerAttribution, LayerGradCam
    layer = layer or gaia.default_layers(model, x[:1])["head"]
    cam = LayerGradCam(model, _module_named(model, layer)).attribute(
        x, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")


def _occlusion(model, x, target, window=None, stride=None):
    from captum.attr import Occlusion
    window, stride = occlusion_window(x.shape[2], x.shape[3], window, stride)
    channels = x.shape[1]
    return Occlusion(model).attribute(
        x, sliding_window_shapes=(channels, window, window), strides=(channels, stride, stride),
        baselines=0.0, target=target, perturbations_per_eval=16)


def _smoothgrad(model, x, target, nt_samples=16, stdevs=None, noise_level=0.15):
    from captum.attr import NoiseTunnel, Saliency
    if stdevs is None:
        stdevs = float(noise_level) * float(x.detach().max() - x.detach().min())
    return NoiseTunnel(Saliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=int(nt_samples), nt_samples_batch_size=8,
        stdevs=float(stdevs), target=target, abs=True)


_IMPLEMENTATIONS = {
    "saliency": _saliency,
    "integrated_gradients": _integrated_gradients,
    "input_x_gradient": _input_x_gradient,
    "guided_backprop": _guided_backprop,
    "grad_cam": _grad_cam,
    "occlusion": _occlusion,
    "smoothgrad": _smoothgrad,
}


def attribute(model: nn.Module, x: Tensor, method: str, target=None, **params) -> Tensor:
    """Attribution of ``method`` (a key of :data:`ATTRIBUTION_METHODS`) for batch ``x``.

    ``x``: (B, C, H, W) or one image (C, H, W); ``target``: class index, one per sample, or
    None for the predicted class. ``params`` override the method's defaults (e.g.
    ``n_steps`` for Integrated Gradients, ``layer`` for Grad-CAM, ``window``/``stride`` in
    pixels for Occlusion, ``nt_samples``/``stdevs`` for SmoothGrad).
    Returns a detached CPU float tensor: (B, C, H, W), or (B, 1, H, W) for Grad-CAM.
    """
    if method not in ATTRIBUTION_METHODS:
        raise AttributionError(f"unknown attribution method {method!r}; choose one of "
                         f"{', '.join(ATTRIBUTION_METHODS)}")
    unknown = set(params) - set(ATTRIBUTION_METHODS[method].defaults)
    if unknown:
        raise AttributionError(f"{method} takes no parameter(s) {sorted(unknown)}; it takes "
                         f"{sorted(ATTRIBUTION_METHODS[method].defaults) or 'none'}")
    x = _as_batch(model, x)
    target = _target_tensor(model, x, target)
    settings = {**ATTRIBUTION_METHODS[method].defaults, **params}
    with _attribution_context(model):
        x.requires_grad_()  # a fresh copy: Captum would otherwise set it, with a warning
        result = _IMPLEMENTATIONS[method](model, x, target, **settings)
    return result.detach().float().cpu()


# --------------------------------------------------------------------------- display helpers


def to_heatmap(attr, percentile: float = 99.0) -> np.ndarray:
    """An (H, W) map in [0, 1] for display.

    ``attr``: (H, W), (C, H, W) or (1, C, H, W). Map = sum_c |attr[c]|, divided by its
    ``percentile``-th percentile and clipped to 1, so a few extreme pixels do not wash out
    the rest. An all-zero attribution stays all zero.
    """
    values = attr.detach().cpu().numpy() if isinstance(attr, Tensor) else np.asarray(attr)
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if values.ndim == 4:
        if values.shape[0] != 1:
            raise AttributionError(f"to_heatmap takes one image, got a batch of {values.shape[0]}")
        values = values[0]
    if values.ndim == 3:
        values = np.abs(values).sum(axis=0)
    elif values.ndim == 2:
        values = np.abs(values)
    else:
        raise AttributionError(f"to_heatmap takes (H, W), (C, H, W) or (1, C, H, W), got {values.shape}")
    scale = np.percentile(values, percentile)
    if scale <= 0:
        scale = values.max()
    if scale <= 0:
        return np.zeros_like(values)
    return np.clip(values / scale, 0.0, 1.0)


def top_k_predictions(model: nn.Module, x: Tensor, k: int = 5,
                      class_names: Sequence[str] | None = None) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one image as (label, softmax probability), best first.

    ``x``: (C, H, W) or (1, C, H, W). Labels are ``class_names[i]`` when given, else ``str(i)``.
    """
    x = _as_batch(model, x)
    if x.shape[0] != 1:
        raise AttributionError(f"top_k_predictions takes one image, got a batch of {x.shape[0]}")
    with activation_gradients_only(model), torch.no_grad():
        probs = torch.softmax(model(x).float(), dim=1)[0].cpu()
    values, indices = probs.topk(max(1, min(int(k), probs.numel())))
    return [(_class_label(int(i), class_names), float(p)) for p, i in zip(values, indices)]


def _class_label(index: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and index < len(class_names):
        return str(class_names[index])
    return str(index)


__all__ = ["ATTRIBUTION_METHODS", "AttributionMethod", "attribute", "occlusion_window",
           "predicted_classes", "to_heatmap", "top_k_predictions"]
