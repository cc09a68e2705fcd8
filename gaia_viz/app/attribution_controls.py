"""Inspect's attribution controls (no Streamlit here): the classes and Grad-CAM layers a
researcher can choose, each control's default for this image, the settings passed to
:func:`gaia_viz.attribution.attribute`, and every method's map of one image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from torch import Tensor, nn


def class_count(model: nn.Module, x: Tensor) -> int:
    """How many classes the model scores (the length of its output for ``x``)."""
    from gaia_viz.attribution import top_k_predictions

    return len(top_k_predictions(model, x, k=10 ** 9))


def predicted_class(model: nn.Module, x: Tensor) -> int:
    """The model's predicted class index for one image (C, H, W)."""
    from gaia_viz.attribution import predicted_classes

    return int(predicted_classes(model, x)[0])


def gradcam_layers(model: nn.Module, x: Tensor) -> tuple[list[str], str]:
    """The layers Grad-CAM can explain (channels-first feature maps, in forward order) and
    the default one: GAIA's head layer, the map the global pool reads."""
    from gaia_viz.gaia.layout import model_layout

    layout = model_layout(model, x.unsqueeze(0) if x.ndim == 3 else x)
    names = [info.name for info in sorted(layout.feature_layers, key=lambda info: info.order) if info.channel_dim == 1]
    return names, layout.default_head_layer()


def gradcam_note(model: nn.Module, x: Tensor, layer: str | None) -> str | None:
    """Why a Grad-CAM map is uniform, when it is for a reason of the layer: its output is 1 x 1,
    so the map has one value, stretched over the whole image. None otherwise."""
    from gaia_viz.gaia.layout import model_layout

    layout = model_layout(model, x.unsqueeze(0) if x.ndim == 3 else x)
    name = layer or layout.default_head_layer()
    info = next((i for i in layout.feature_layers if i.name == name), None)
    if info is None or info.height * info.width > 1:
        return None
    spatial = [i.name for i in sorted(layout.feature_layers, key=lambda i: i.order)
               if i.channel_dim == 1 and i.height * i.width > 1]
    hint = f" Choose a layer with a spatial map, e.g. `{spatial[-1]}`." if spatial else ""
    return (f"Grad-CAM at `{name}` is uniform because that layer's output is 1 x 1: one value per channel, "
            f"no position to tell apart, so the map is the same everywhere.{hint}")


def parameter_defaults(method: str, model: nn.Module, x: Tensor) -> dict:
    """What each researcher control of ``method`` (:data:`gaia_viz.attribution.CONTROLS`)
    is when left alone, with the image's own numbers (occlusion window, Grad-CAM layer)."""
    from gaia_viz.attribution import ATTRIBUTION_METHODS, CONTROLS, occlusion_window

    defaults = {c.param: ATTRIBUTION_METHODS[method].defaults.get(c.param) for c in CONTROLS.get(method, ())}
    if method == "occlusion":
        defaults["window"], defaults["stride"] = occlusion_window(x.shape[-2], x.shape[-1])
    if method == "grad_cam":
        defaults["layer"] = gradcam_layers(model, x)[1]
    return defaults


def attribution_settings(method: str, chosen_params: dict, preset) -> dict:
    """The keyword arguments of :func:`gaia_viz.attribution.attribute` for ``method``: the
    researcher's settings, plus the input's ``preset`` where a baseline needs it."""
    from gaia_viz.attribution import ATTRIBUTION_METHODS

    settings = dict(chosen_params)
    if "preset" in ATTRIBUTION_METHODS[method].defaults:
        settings["preset"] = preset
    return settings


@dataclass
class AttributionView:
    """One attribution of one image as drawn: the (H, W) map, whether it is signed, or why
    the method failed (``error``)."""

    label: str
    heat: np.ndarray | None
    signed: bool
    error: str | None = None


def all_attributions(model: nn.Module, x: Tensor, target: int | None, params: dict[str, dict], preset,
                     signed_view: bool = True, methods: Sequence[str] | None = None,
                     compute=None) -> dict[str, AttributionView]:
    """Every attribution method (or ``methods``) on one image with the same target class
    and each method's settings (``params[method]``): ``{method: AttributionView}``.

    Signed methods keep their sign when ``signed_view`` (else |value|); a method that fails
    for this model says why instead of taking the others down. ``compute(method, settings)``
    replaces the call to :func:`gaia_viz.attribution.attribute` (the app passes a cached one).
    """
    from gaia_viz.attribution import ATTRIBUTION_METHODS, attribute, to_heatmap
    from gaia_viz.errors import GaiaVizError

    views = {}
    for method in methods or list(ATTRIBUTION_METHODS):
        info = ATTRIBUTION_METHODS[method]
        settings = attribution_settings(method, params.get(method, {}), preset)
        signed = info.signed and signed_view
        try:
            raw = compute(method, settings) if compute else attribute(model, x, method, target=target, **settings)
            views[method] = AttributionView(info.label, to_heatmap(raw[0], signed=signed), signed)
        except (GaiaVizError, RuntimeError) as exc:
            views[method] = AttributionView(info.label, None, signed, (str(exc).splitlines() or [type(exc).__name__])[0])
    return views


__all__ = ["all_attributions", "attribution_settings", "AttributionView", "class_count", "gradcam_layers",
           "gradcam_note", "parameter_defaults", "predicted_class"]
