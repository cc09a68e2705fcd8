"""The teaching walk-through of How GAIA works and Home (no Streamlit here): every GAIA
intermediate of one image at one layer, the channels that illustrate a difference, per-layer
shares, numbers for st.latex, and the demo sets scored with GAIA."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor, nn

from gaia_viz import gaia
from gaia_viz.app.uploads import model_view_pixels
from gaia_viz.data.presets import Preset
from gaia_viz.gaia.families import GAIA_FAMILIES


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
    fam = GAIA_FAMILIES["gaia_z"]
    blocks = [fam.layer_values(evaluation, dataset, layer) for layer in fam.layers(evaluation)]
    return [float(block.mean()) for block in blocks], [float((block ** 2).mean()) for block in blocks]


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


__all__ = ["demo_gaia_evaluation", "glance_case", "illustrating_channels", "IllustratingChannels", "latex_number",
           "layer_shares", "set_layer_shares", "Walkthrough", "walkthrough"]
