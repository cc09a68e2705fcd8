"""What the Inspect and How-GAIA pages compute about one image (no Streamlit here).

Pages call these and draw the results; everything is a plain function of a model, an image
tensor and a finished :class:`gaia_viz.sweep.Evaluation`, so it is tested without a browser.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from gaia_viz import gaia
from gaia_viz.data.images import DEFAULT_MAX_PIXELS, load_image
from gaia_viz.data.presets import OOD_POLICIES, Preset, denormalize, make_transform
from gaia_viz.errors import ImageLoadError, LayerError
from gaia_viz.gaia.families import GAIA_FAMILIES, family
from gaia_viz.metrics import threshold_at_tpr

UPLOAD_TYPES = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif")


# --------------------------------------------------------------------------- images


def image_from_upload(data: bytes, name: str, preset: Preset | str,
                      ood_policy: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, Tensor]:
    """Decode an uploaded file and apply the preset: (RGB PIL image, Tensor[C, H, W]).

    Raises ImageLoadError naming the file and saying what to do.
    """
    try:
        image = load_image(data, max_pixels=max_pixels)
    except ImageLoadError as exc:
        reason = str(exc).replace(f"<{len(data)} bytes>", name)
        raise ImageLoadError(f"{name}: {reason}" if name not in reason else reason) from None
    return image, make_transform(preset, ood_policy)(image)


def upload_notes(data: bytes, name: str, background: str = "white") -> list[str]:
    """What the RGB conversion of an upload did that its picture does not show: transparent
    pixels composited on ``background`` (:func:`gaia_viz.data.images.to_rgb`), and an image with
    no visible pixel at all (every alpha 0: the model sees a blank white image). [] otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                img.mode in ("P", "L", "RGB") and "transparency" in img.info)
            if not has_alpha:
                return []
            alpha = np.asarray(img.convert("RGBA").getchannel("A"))
    except Exception:  # noqa: BLE001 - the decode already succeeded once; a note is not worth an error
        return []
    if alpha.size and int(alpha.max()) == 0:
        return [f"{name} is fully transparent: composited on {background}, the model sees a blank {background} "
                "image, so its scores describe an empty picture."]
    if alpha.size and int(alpha.min()) < 255:
        share = float((alpha < 255).mean())
        return [f"{name} has transparency ({100 * share:.0f} % of its pixels): they were composited on "
                f"{background} before the model saw it."]
    return []


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


def default_inspect_layer(evaluation, method: str) -> tuple[str, str]:
    """The layer "GAIA at one layer" opens on, and the rule that chose it: the layer whose
    single-layer score separates the ID set from the evaluation's OOD sets best (highest
    AUROC of the method on that layer alone, averaged over the OOD sets; the deeper layer on a
    tie), so the view opens where GAIA's signal for this model is. Without a finite AUROC, the
    deepest layer, as How GAIA works."""
    from gaia_viz.app.analysis import single_layer_aurocs

    fam = family(method)
    layers = fam.layers(evaluation)
    per_set = np.array([single_layer_aurocs(evaluation, ood, method)[1] for ood in evaluation.ood_names])
    mean = np.array([np.nan if np.isnan(column).all() else np.nanmean(column) for column in per_set.T])
    if not np.isfinite(mean).any():
        return layers[-1], "the deepest layer (no layer's AUROC is defined)"
    best = max(i for i in range(len(layers)) if mean[i] == np.nanmax(mean))
    return layers[best], (f"the layer where {fam.label} on that layer alone separates {evaluation.id_name} from the "
                          f"OOD sets best (AUROC {100 * mean[best]:.1f} %, mean over "
                          f"{len(evaluation.ood_names)} set(s))")


def upload_policy(setup_policy: str, chosen: str | None = None) -> str:
    """The OOD policy for uploaded images: the set-up's, or ``chosen`` when the set-up scores
    both policies ("both")."""
    if setup_policy in OOD_POLICIES:
        return setup_policy
    return chosen if chosen in OOD_POLICIES else OOD_POLICIES[0]


def model_view_pixels(x: Tensor, preset: Preset | str) -> np.ndarray:
    """The model's input (C, H, W), normalised, back as uint8 (H, W, 3) pixels, so maps
    drawn over it line up with what the model saw."""
    pixels = denormalize(x.detach().cpu().float(), preset).clamp(0, 1)
    pixels = (pixels * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


# --------------------------------------------------------------------------- per-layer arrays


def layer_columns(layers: Sequence[str], channels: Sequence[int], layer: str) -> slice:
    """The columns of ``layer`` in an array whose columns are all channels of ``layers``
    concatenated in order (the sweep's ``nonzero_ratio`` / ``channel_mean_grad``)."""
    if layer not in layers:
        raise LayerError(f"layer {layer!r} was not part of this evaluation; choose one of {list(layers)}")
    i = list(layers).index(layer)
    start = int(np.sum(channels[:i]))
    return slice(start, start + int(channels[i]))


def _layer_values(evaluation, dataset: str, method: str, layer: str) -> np.ndarray:
    fam = family(method)
    columns = layer_columns(fam.layers(evaluation), fam.channels(evaluation), layer)
    return np.asarray(evaluation.arrays[dataset][fam.channel_array], dtype=np.float64)[:, columns]


def channel_stats(evaluation, dataset: str, method: str, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over the images of ``dataset`` at ``layer`` of
    GAIA-Z's r[l, c] (``method="gaia_z"``) or GAIA-A's m[l, c] (``"gaia_a"``)."""
    values = _layer_values(evaluation, dataset, method, layer)
    return values.mean(axis=0), values.std(axis=0)


def ood_channel_mean(evaluation, method: str, layer: str) -> np.ndarray:
    """Per-channel mean over all OOD images of the evaluation (every OOD set pooled)."""
    pooled = np.concatenate([_layer_values(evaluation, name, method, layer) for name in evaluation.ood_names])
    return pooled.mean(axis=0)


def tensor_key(x: Tensor) -> str:
    """A digest of a tensor's shape, dtype and values: the cache key of "this image" (two uploads
    with one file name but other pixels get other keys)."""
    import hashlib

    data = x.detach().cpu().contiguous()
    digest = hashlib.sha1(f"{tuple(data.shape)}{data.dtype}".encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def analyze_like_evaluation(model: nn.Module, x: Tensor, evaluation) -> gaia.GaiaResult:
    """GAIA pieces of one image (C, H, W) with the evaluation's layers, so its scores are
    comparable with the evaluation's score table."""
    want_z, want_a = "gaia_z" in evaluation.methods, "gaia_a" in evaluation.methods
    return gaia.gaia_analyze(
        model, x.unsqueeze(0) if x.ndim == 3 else x,
        layers=evaluation.zero_layers or None, inner_layers=evaluation.inner_layers or None,
        head_layer=evaluation.head_layer, zero=want_z, average=want_a,
        warn_without_zeros=False)  # the evaluation judged its sets; the page shows that note


def image_channel_values(result: gaia.GaiaResult, method: str, layer: str) -> np.ndarray:
    """This image's per-channel r[l, c] (``gaia_z``) or m[l, c] (``gaia_a``) at ``layer``
    (first sample of ``result``)."""
    per_layer = result.nonzero_ratio if family(method).method == "gaia_z" else result.channel_mean_grad
    return per_layer[layer][0].double().numpy()


def image_score(result: gaia.GaiaResult, method: str, layers: Sequence[str] | None = None) -> float:
    """The image's (first sample's) GAIA score over the ``layers`` subset (None = all)."""
    if method == "gaia_z":
        partials, counts, all_layers = result.zero_partial_sums.numpy(), result.zero_channel_counts, result.zero_layers
        arrays = {"zero_partial_sums": partials}
    else:
        partials, counts, all_layers = result.avg_partial_sums.numpy(), result.avg_channel_counts, result.inner_layers
        arrays = {"avg_partial_sums": partials, "output_component": result.output_component.numpy()}
    mask = None if layers is None else np.array([name in layers for name in all_layers])
    return float(GAIA_FAMILIES[method].scores_from_arrays(arrays, counts, mask)[0])


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Decision:
    """An OOD decision for one score: score > threshold means OOD."""

    score: float
    threshold: float
    threshold_source: str
    method_label: str

    @property
    def is_ood(self) -> bool:
        return bool(self.score > self.threshold)

    @property
    def text(self) -> str:
        verdict = "OOD" if self.is_ood else "ID"
        return (f"{verdict} at threshold {self.threshold:.4g} "
                f"({self.method_label}, higher = more OOD; score {self.score:.4g})")


def current_threshold(chosen, method: str, id_scores, tpr: float = 0.95) -> tuple[float, str]:
    """The threshold to judge ``method`` by, and where it came from.

    ``chosen``: the session's :class:`gaia_viz.app.state.Selection`; when its thresholded
    method is ``method``, its operating point (a TPR on ``id_scores`` or a score) is used, as
    set on the Tune threshold page or in the link, or that page's default (95 % TPR) until
    either changes it: the source says "as on the Tune threshold page" either way. Otherwise
    the ``tpr`` quantile of the ID scores (``tpr`` of ID images accepted).
    """
    if chosen is not None and getattr(chosen, "method", None) == method:
        if chosen.threshold_mode == "score" and chosen.threshold is not None and np.isfinite(chosen.threshold):
            return float(chosen.threshold), "as on the Tune threshold page"
        if chosen.threshold_mode == "tpr":
            source = f"{chosen.tpr:.1%} of ID accepted, as on the Tune threshold page"
            return threshold_at_tpr(id_scores, chosen.tpr), source
    return threshold_at_tpr(id_scores, tpr), f"{tpr:.0%} of ID images accepted"


def decide(score: float, method: str, id_scores, chosen=None, tpr: float = 0.95) -> Decision:
    """The verdict for one image's ``method`` score against the current threshold."""
    threshold, source = current_threshold(chosen, method, id_scores, tpr)
    label = GAIA_FAMILIES[method].label if method in GAIA_FAMILIES else method
    return Decision(float(score), threshold, source, label)


# --------------------------------------------------------------------------- teaching walk-through


@dataclass
class Walkthrough:
    """GAIA at one layer for one image, with every intermediate the formulas use.

    ``gradient``: (C, H, W) d(max logit)/d(layer output); ``nonzero``: its != 0 mask;
    ``ratio``: r[c] = mean_p nonzero[c, p]; ``channel_mean``: mean_p of the GAIA-A inner
    gradient (d sum(pooled features) / d layer output), i.e. m[l, c];
    ``head_channel_mean``: a[c] = mean_p d(sum_k log_softmax_k) / d(head output)[c, p];
    ``result``: the full GAIA result (all default layers) giving the two scores.
    """

    layer: str
    gradient: np.ndarray
    nonzero: np.ndarray
    ratio: np.ndarray
    channel_mean: np.ndarray
    head_channel_mean: np.ndarray
    result: gaia.GaiaResult

    @property
    def gaia_z(self) -> float:
        return float(self.result.gaia_z[0])

    @property
    def gaia_a(self) -> float:
        return float(self.result.gaia_a[0])

    @property
    def output_component(self) -> float:
        return float(self.result.output_component[0])

    @property
    def total_zero_channels(self) -> int:
        return int(self.result.zero_channel_counts.sum())

    @property
    def total_inner_channels(self) -> int:
        return int(self.result.avg_channel_counts.sum())

    @property
    def mean_squared_ratio_here(self) -> float:
        return float(np.mean(self.ratio ** 2))


def walkthrough(model: nn.Module, x: Tensor, layer: str | None = None) -> Walkthrough:
    """Every GAIA intermediate of one image (C, H, W) at ``layer`` (default: the last
    GAIA-A inner layer, which is also a GAIA-Z layer), plus both scores with default layers."""
    batch = x.unsqueeze(0) if x.ndim == 3 else x
    result = gaia.gaia_analyze(model, batch)
    layer = layer or result.inner_layers[-1]
    gradient = gaia.layer_gradients(model, batch, [layer], "max_logit")[layer][0].double().numpy()
    inner_gradient = gaia.layer_gradients(model, batch, [layer], "before_head_sum")[layer][0]
    head = result.head_layer
    head_gradient = gaia.layer_gradients(model, batch, [head], "log_softmax_sum")[head][0]
    nonzero = gradient != 0
    return Walkthrough(layer=layer, gradient=gradient, nonzero=nonzero,
                       ratio=nonzero.reshape(nonzero.shape[0], -1).mean(axis=1),
                       channel_mean=inner_gradient.double().mean(dim=(1, 2)).numpy(),
                       head_channel_mean=head_gradient.double().mean(dim=(1, 2)).numpy(),
                       result=result)


def latex_number(value: float, digits: int = 3) -> str:
    """``value`` for st.latex: fixed point when readable, else ``m \\times 10^{e}``."""
    value = float(value)
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        return f"{value:.{digits}f}"
    mantissa, exponent = f"{value:.{max(0, digits - 1)}e}".split("e")
    return rf"{mantissa} \times 10^{{{int(exponent)}}}"


@dataclass(frozen=True)
class IllustratingChannels:
    """The channels that illustrate a layer's aggregate difference between two images, and
    how they were chosen. The aggregate is what GAIA-Z averages at the layer, the mean of
    r[l, c]^2 (``first_mean``, ``second_mean``); ``direction`` is +1 when it is higher for the
    second image, -1 when lower, 0 when equal."""

    channels: list[int]
    direction: int
    first_mean: float
    second_mean: float

    def describe(self, first: str = "the first image", second: str = "the second image") -> str:
        """How the channels were chosen, in words."""
        if self.direction == 0:
            return (f"{first} and {second} have the same mean r² at this layer; the channels shown are those "
                    "where their non-zero ratios differ most")
        higher, lower = (second, first) if self.direction > 0 else (first, second)
        high, low = max(self.first_mean, self.second_mean), min(self.first_mean, self.second_mean)
        return (f"at this layer {higher} has the higher mean r² (what GAIA-Z averages: {high:.3f} vs. {low:.3f}); "
                f"the channels shown are those where {higher} has the most more non-zero entries than {lower}, "
                "so they agree with that average")


def illustrating_channels(first_ratio: np.ndarray, second_ratio: np.ndarray, count: int = 8) -> IllustratingChannels:
    """The ``count`` channels whose non-zero ratios differ most *in the direction of the
    layer's aggregate* (the mean of r^2, what GAIA-Z averages; second - first), sorted by index.

    A channel that goes against the aggregate (the second image has fewer non-zeros there
    although its mean r^2 is higher) is never picked while an agreeing one is left; when
    fewer than ``count`` channels agree, only those are returned."""
    first, second = np.asarray(first_ratio, dtype=float), np.asarray(second_ratio, dtype=float)
    difference = second - first
    first_mean, second_mean = float(np.mean(first ** 2)), float(np.mean(second ** 2))
    direction = int(np.sign(round(second_mean - first_mean, 12)))
    if direction == 0:
        order = np.argsort(-np.abs(difference), kind="stable")[:count]
    else:
        aligned = direction * difference
        order = [c for c in np.argsort(-aligned, kind="stable") if aligned[c] > 0][:count]
    return IllustratingChannels(sorted(int(c) for c in order), direction, first_mean, second_mean)


def layer_shares(result: gaia.GaiaResult) -> tuple[list[float], list[float]]:
    """Per GAIA-Z layer of ``result`` (first sample): the share of non-zero gradient entries
    (mean over channels of r[l, c]) and the mean of r[l, c]^2 (what GAIA-Z averages)."""
    ratios = [result.nonzero_ratio[name][0].double() for name in result.zero_layers]
    return [float(r.mean()) for r in ratios], [float((r ** 2).mean()) for r in ratios]


def set_layer_shares(evaluation, dataset: str) -> tuple[list[float], list[float]]:
    """:func:`layer_shares` averaged over the images of ``dataset`` (from the evaluation's
    cached r[l, c], no model run)."""
    values = np.asarray(evaluation.arrays[dataset]["nonzero_ratio"], dtype=float)
    shares, squares, start = [], [], 0
    for count in evaluation.zero_channels:
        block = values[:, start:start + int(count)]
        shares.append(float(block.mean()))
        squares.append(float((block ** 2).mean()))
        start += int(count)
    return shares, squares


def demo_gaia_evaluation(progress=None):
    """The demo model, its ID digits and OOD sets scored with GAIA-Z and GAIA-A.

    Returns (model, id_set, ood_sets, evaluation); scores come from the on-disk sweep cache
    after the first call.
    """
    from gaia_viz.demo import demo_id_set, demo_ood_sets, load_demo_model
    from gaia_viz.sweep import GAIA_METHODS, SweepSettings, evaluate

    model, id_set, ood_sets = load_demo_model(), demo_id_set(), demo_ood_sets()
    evaluation = evaluate(model, id_set, ood_sets, SweepSettings(methods=GAIA_METHODS, batch_size=128),
                          progress=progress)
    return model, id_set, ood_sets, evaluation


__all__ = ["AttributionView", "Decision", "UPLOAD_TYPES", "all_attributions", "attribution_settings", "class_count", "default_inspect_layer", "gradcam_note", "tensor_key", "upload_notes",
           "gradcam_layers", "predicted_class",
           "image_verdicts", "parameter_defaults", "Walkthrough", "analyze_like_evaluation", "channel_stats",
           "current_threshold", "decide", "demo_gaia_evaluation", "image_channel_values", "image_from_upload",
           "IllustratingChannels", "illustrating_channels", "image_score", "latex_number", "layer_columns", "layer_shares",
           "model_view_pixels", "set_layer_shares",
           "ood_channel_mean", "upload_policy", "walkthrough"]


def glance_case(model: nn.Module, x: Tensor, preset: Preset | str, label: str, layer: str | None = None) -> dict:
    """One image for :func:`gaia_viz.figures.images.gaia_at_a_glance`: its pixels as the model
    sees them, where its GAIA-Z gradient is non-zero at ``layer`` (default: the last GAIA-A
    inner layer) and its GAIA-Z / GAIA-A scores (default layers)."""
    batch = x.unsqueeze(0) if x.ndim == 3 else x
    result = gaia.gaia_analyze(model, batch)
    layer = layer or result.inner_layers[-1]
    maps = gaia.spatial_maps(model, batch, layer)
    return dict(label=label, layer=layer, pixels=model_view_pixels(batch[0], preset),
                nonzero=maps["nonzero_fraction"][0].numpy(), gaia_z=float(result.gaia_z[0]),
                gaia_a=float(result.gaia_a[0]), mean_nonzero=float(maps["nonzero_fraction"][0].mean()))


# --------------------------------------------------------------------------- researcher controls


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


def image_verdicts(model: nn.Module, images: dict[str, Tensor], evaluation, chosen, layers: dict,
                   id_scores: dict) -> dict[str, dict[str, Decision]]:
    """The GAIA verdict of each image (``{name: (C, H, W)}``) for each GAIA method of the
    evaluation, on the Selection's layers and thresholds: ``{name: {method: Decision}}``."""
    verdicts = {}
    for name, x in images.items():
        result = analyze_like_evaluation(model, x, evaluation)
        verdicts[name] = {method: decide(image_score(result, method, layers[method]), method, id_scores[method], chosen)
                          for method in id_scores}
    return verdicts
