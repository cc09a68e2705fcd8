"""Input attributions for one image batch, computed with Captum (for the Inspect page).

One verb, Captum style: ``attribute(model, x, method, target=None, **params)`` returns a
tensor shaped like ``x`` (B, C, H, W), except Layer Grad-CAM which returns (B, 1, H, W)
upsampled to the input size. ``target`` defaults to the predicted class. Methods
(``f_t`` is the target logit, ``x'`` the baseline image, see :func:`baseline_image`):

- ``saliency``:              |d f_t / d x|
- ``integrated_gradients``:  (x - x') * integral_0^1 d f_t / d x at x' + a (x - x') da, the
                             integral by Captum's Gauss-Legendre quadrature with ``n_steps``
                             points, so that sum(attribution) ~= f_t(x) - f_t(x') (completeness)
- ``input_x_gradient``:      x * d f_t / d x
- ``guided_backprop``:       d f_t / d x with every nn.ReLU's backward replaced by
                             relu(grad_out) (only positive signals flow back)
- ``grad_cam``:              relu(sum_c w_c A_c) at a layer, w_c = mean_p d f_t / d A_c[p];
                             default layer: GAIA's head layer (the map the global pool reads)
- ``occlusion``:             f_t(x) - f_t(x with a window replaced by the baseline x'), window ~
                             1/4 of the side
- ``smoothgrad``:            mean over n noisy copies x + N(0, sigma^2) of |d f_t / d x|

Baselines (Integrated Gradients and Occlusion, ``baseline=``): ``"black"`` (the default) is a
black image in pixel space, i.e. ``(0 - mean) / std`` after the input's normalisation (give
``preset``); a zero tensor would instead be the data set's mean colour (``"mean"``), so a
digit's black background would differ from the baseline and get attribution. ``"blur"``
is the image under a Gaussian blur and ``"noise"`` uniform pixel noise (seeded). Integrated
Gradients and Occlusion with a black baseline attribute nothing to black pixels.

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
from gaia_viz.model_output import model_logits
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
        "input minus the baseline times the gradient averaged along the straight path between them",
        defaults=dict(n_steps=32, internal_batch_size=16, baseline="black", preset=None, seed=0,
                      blur_sigma=None)),
    "input_x_gradient": AttributionMethod(
        "Input x Gradient", "input times its gradient"),
    "guided_backprop": AttributionMethod(
        "Guided Backprop", "gradient with only positive signals passed back through ReLUs"),
    "grad_cam": AttributionMethod(
        "Layer Grad-CAM", "gradient-weighted layer activations, upsampled to the input",
        defaults=dict(layer=None), signed=False),
    "occlusion": AttributionMethod(
        "Occlusion", "drop of the target logit when a window of the input is replaced by the baseline",
        defaults=dict(window=None, stride=None, baseline="black", preset=None, seed=0, blur_sigma=None)),
    "smoothgrad": AttributionMethod(
        "SmoothGrad", "saliency averaged over noisy copies of the input",
        defaults=dict(nt_samples=16, stdevs=None, noise_level=0.15), signed=False),
}

BASELINES = {
    "black": "a black image (0 in pixel space, normalised like the input)",
    "mean": "zero after normalisation: the data set's mean colour",
    "blur": "the image under a strong Gaussian blur",
    "noise": "uniform noise in pixel space (seeded)",
}




@dataclass(frozen=True)
class Control:
    """A parameter of an attribution method that a researcher may set (Inspect's controls,
    the link's ``attr_params``): ``kind`` is ``"int"``, ``"float"`` or ``"choice"`` (one of
    ``choices``) or ``"layer"`` (a module name); ``low``/``high`` bound numbers."""

    param: str
    label: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""

    def parse(self, text) -> int | float | str:
        """The value ``text`` names (AttributionError naming the allowed values otherwise)."""
        if self.kind in ("int", "float"):
            try:
                value = int(text) if self.kind == "int" else float(text)
            except (TypeError, ValueError):
                raise AttributionError(f"{self.param}={text!r} is not a{'n integer' if self.kind == 'int' else ' number'}") from None
            if not (self.low <= value <= self.high):
                raise AttributionError(f"{self.param}={value} is outside [{self.low:g}, {self.high:g}]")
            return value
        text = str(text).strip()
        if self.kind == "choice" and text not in self.choices:
            raise AttributionError(f"{self.param}={text!r} is not one of {', '.join(self.choices)}")
        if not text:
            raise AttributionError(f"{self.param} is empty")
        return text


CONTROLS: dict[str, tuple[Control, ...]] = {
    "integrated_gradients": (
        Control("n_steps", "IG steps", "int", 2, 512, help="Points of the path integral (Gauss-Legendre)"),
        Control("baseline", "IG baseline", "choice", choices=tuple(BASELINES))),
    "grad_cam": (Control("layer", "Grad-CAM layer", "layer", help="A layer with a spatial output"),),
    "occlusion": (
        Control("window", "Occlusion window (pixels)", "int", 1, 4096),
        Control("stride", "Occlusion stride (pixels)", "int", 1, 4096),
        Control("baseline", "Occlusion baseline", "choice", choices=tuple(BASELINES))),
    "smoothgrad": (
        Control("noise_level", "SmoothGrad noise level", "float", 0.0, 1.0,
                help="Noise std as a fraction of the input's value range (max - min)"),
        Control("nt_samples", "SmoothGrad samples", "int", 1, 256)),
}


def control(method: str, param: str) -> Control:
    """The :class:`Control` of ``method``'s ``param`` (AttributionError when it has none)."""
    for item in CONTROLS.get(method, ()):
        if item.param == param:
            return item
    known = [f"{m}.{c.param}" for m, items in CONTROLS.items() for c in items]
    raise AttributionError(f"{method}.{param} is not a settable attribution parameter; known: {', '.join(known)}")


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


class _Logits(nn.Module):
    """``model`` whose forward returns its logits (:func:`gaia_viz.model_output.model_logits`):
    Captum indexes the output by class, so a model returning a tuple, a dict or an output
    object is read the way every other forward pass of gaia_viz reads it. A module, not a
    function: Guided Backprop hooks the ReLU modules it finds in it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return model_logits(self.model(x))


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
        return model_logits(model(x)).argmax(dim=1)


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


def baseline_image(x: Tensor, kind: str = "black", preset=None, seed: int = 0,
                   blur_sigma: float | None = None) -> Tensor:
    """The baseline ``x'`` for a batch ``x`` (B, C, H, W) in the model's input units.

    ``kind``: a key of :data:`BASELINES`. ``preset`` (a :class:`gaia_viz.data.presets.Preset`
    or its name) is the normalisation ``x`` went through, so that "black" and "noise" are
    built in pixel space and normalised like the input; without it ``x`` is taken to be in
    pixel units already (black = 0, noise uniform in [0, 1]). "blur": a Gaussian blur of
    ``x`` with ``blur_sigma`` pixels (default: a sixth of the shorter side), which commutes
    with the per-channel normalisation. "noise" draws from a generator seeded with ``seed``.
    """
    if kind not in BASELINES:
        raise AttributionError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")
    if kind == "mean":
        return torch.zeros_like(x)
    if kind == "blur":
        from torchvision.transforms.functional import gaussian_blur

        side = min(x.shape[2], x.shape[3])
        sigma = float(blur_sigma) if blur_sigma else max(1.0, side / 6)
        if sigma <= 0:
            raise AttributionError(f"blur_sigma must be positive, got {blur_sigma}")
        kernel = min(2 * int(np.ceil(3 * sigma)) + 1, 2 * side - 1)
        return gaussian_blur(x.detach(), [kernel, kernel], [sigma, sigma])
    if kind == "black":
        pixels = torch.zeros_like(x)
    else:
        generator = torch.Generator().manual_seed(int(seed))
        pixels = torch.rand(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
    if preset is None:
        return pixels
    from gaia_viz.data.presets import get_preset

    preset = get_preset(preset)
    if len(preset.mean) != x.shape[1]:
        raise AttributionError(f"preset {preset.name} normalises {len(preset.mean)} channel(s) but the input has "
                               f"{x.shape[1]}; pass the preset the images were made with")
    mean = torch.tensor(preset.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(preset.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (pixels - mean) / std


def _integrated_gradients(model, x, target, n_steps=32, internal_batch_size=16, baseline="black",
                          preset=None, seed=0, blur_sigma=None):
    from captum.attr import IntegratedGradients
    reference = baseline_image(x, baseline, preset, seed, blur_sigma)
    return IntegratedGradients(model).attribute(
        x, baselines=reference, target=target, n_steps=int(n_steps),
        internal_batch_size=int(internal_batch_size) if internal_batch_size else None)


def _input_x_gradient(model, x, target):
    from captum.attr import InputXGradient
    return InputXGradient(model).attribute(x, target=target)


def _guided_backprop(model, x, target):
    from captum.attr import GuidedBackprop
    return GuidedBackprop(model).attribute(x, target=target)


def _grad_cam(model, x, target, layer=None):
    from captum.attr import LayerAttribution, LayerGradCam
    layer = layer or gaia.default_layers(model.model, x[:1])["head"]  # named as in the user's model
    cam = LayerGradCam(model, _module_named(model.model, layer)).attribute(
        x, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")


def _occlusion(model, x, target, window=None, stride=None, baseline="black", preset=None, seed=0,
               blur_sigma=None):
    from captum.attr import Occlusion
    window, stride = occlusion_window(x.shape[2], x.shape[3], window, stride)
    channels = x.shape[1]
    return Occlusion(model).attribute(
        x, sliding_window_shapes=(channels, window, window), strides=(channels, stride, stride),
        baselines=baseline_image(x, baseline, preset, seed, blur_sigma), target=target, perturbations_per_eval=16)


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
    ``n_steps`` and ``baseline`` for Integrated Gradients, ``layer`` for Grad-CAM,
    ``window``/``stride`` in pixels and ``baseline`` for Occlusion, ``nt_samples`` and
    ``noise_level`` (a fraction of the input's value range) or ``stdevs`` for SmoothGrad;
    ``preset``: the normalisation of ``x``, for the baselines).
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
        result = _IMPLEMENTATIONS[method](_Logits(model), x, target, **settings)
    return result.detach().float().cpu()


# --------------------------------------------------------------------------- display helpers


def to_heatmap(attr, percentile: float = 99.0, signed: bool = False) -> np.ndarray:
    """An (H, W) map for display: in [0, 1], or in [-1, 1] when ``signed``.

    ``attr``: (H, W), (C, H, W) or (1, C, H, W). Map = sum_c |attr[c]| (``signed``: sum_c
    attr[c], so evidence for the class is positive and against it negative), divided by the
    ``percentile``-th percentile of its absolute values and clipped, so a few extreme pixels
    do not wash out the rest. An all-zero attribution stays all zero.
    """
    values = attr.detach().cpu().numpy() if isinstance(attr, Tensor) else np.asarray(attr)
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if values.ndim == 4:
        if values.shape[0] != 1:
            raise AttributionError(f"to_heatmap takes one image, got a batch of {values.shape[0]}")
        values = values[0]
    if values.ndim == 3:
        values = values.sum(axis=0) if signed else np.abs(values).sum(axis=0)
    elif values.ndim == 2:
        values = values if signed else np.abs(values)
    else:
        raise AttributionError(f"to_heatmap takes (H, W), (C, H, W) or (1, C, H, W), got {values.shape}")
    magnitude = np.abs(values)
    scale = np.percentile(magnitude, percentile)
    if scale <= 0:
        scale = magnitude.max()
    if scale <= 0:
        return np.zeros_like(values)
    return np.clip(values / scale, -1.0 if signed else 0.0, 1.0)


def top_k_predictions(model: nn.Module, x: Tensor, k: int = 5,
                      class_names: Sequence[str] | None = None) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one image as (label, softmax probability), best first.

    ``x``: (C, H, W) or (1, C, H, W). Labels are ``class_names[i]`` when given, else ``str(i)``.
    """
    x = _as_batch(model, x)
    if x.shape[0] != 1:
        raise AttributionError(f"top_k_predictions takes one image, got a batch of {x.shape[0]}")
    with activation_gradients_only(model), torch.no_grad():
        probs = torch.softmax(model_logits(model(x)).float(), dim=1)[0].cpu()
    values, indices = probs.topk(max(1, min(int(k), probs.numel())))
    return [(_class_label(int(i), class_names), float(p)) for p, i in zip(values, indices)]


def _class_label(index: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and index < len(class_names):
        return str(class_names[index])
    return str(index)


__all__ = ["ATTRIBUTION_METHODS", "AttributionMethod", "BASELINES", "CONTROLS", "Control", "attribute",
           "baseline_image", "control", "occlusion_window",
           "predicted_classes", "to_heatmap", "top_k_predictions"]
