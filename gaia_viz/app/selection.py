"""The Selection: what the user chose, on any page (a plain value, no Streamlit), and the
values its fields may take. :mod:`gaia_viz.app.state` keeps it in the session,
:mod:`gaia_viz.app.links` turns it into a link and back."""

from __future__ import annotations

from dataclasses import dataclass, replace

from gaia_viz.settings import DEFAULT_METHODS

UPLOAD_IMAGE = "upload"  # Inspect's image set name for the user's uploads
TPR_RANGE = (0.5, 1.0)
HISTOGRAM_SETS = ("all", "one")
HISTOGRAM_SCALES = ("fraction", "count", "log")
ATTRIBUTION_VIEWS = ("signed", "abs")
MAP_AGREEMENT = "agree"


@dataclass(frozen=True)
class Selection:
    """What the user chose, on any page.

    ``methods``: the methods shown (and scored) on Evaluate; ``zero_layers`` /
    ``inner_layers``: the GAIA-Z / GAIA-A inner layer subsets (None = all layers), used by every
    GAIA number; ``method``: the method Tune threshold thresholds; ``tpr`` (fraction of ID
    accepted) or ``threshold`` (a score) sets its operating point, by ``threshold_mode``
    (``"tpr"`` or ``"score"``); ``ood_set``: the OOD set a page compares the ID set with (None =
    the first); ``image``: ``(data set, index)`` on Inspect (also chosen on Tune threshold's
    hardest cases and the data map); ``attribution``: Inspect's attribution method,
    ``target`` the class it explains (None = the predicted class), ``attribution_view``
    ``"signed"`` or ``"abs"`` (|value|) for signed methods, ``attribution_params`` the
    researcher's settings as sorted ``("method.param", value)`` pairs;
    ``histogram_sets`` (``"all"`` OOD sets or ``"one"``: ``ood_set`` alone) and
    ``histogram_scale`` (``"fraction"``, ``"count"``, ``"log"`` count) of the score
    histograms; ``map_color``: what colours the data map (``"set"``, a method id, or
    ``"agree"``: where ``method`` and ``map_compare`` decide differently).
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    zero_layers: tuple[str, ...] | None = None
    inner_layers: tuple[str, ...] | None = None
    method: str = "gaia_z"
    threshold_mode: str = "tpr"
    tpr: float = 0.95
    threshold: float | None = None
    ood_set: str | None = None
    image: tuple[str, int] | None = None
    attribution: str = "saliency"
    target: int | None = None
    attribution_view: str = "signed"
    attribution_params: tuple[tuple[str, object], ...] = ()
    histogram_sets: str = "all"
    histogram_scale: str = "fraction"
    map_color: str = "set"
    map_compare: str = "msp"
    inspect_layer: str | None = None  # Inspect's "GAIA at one layer" (None: its rule's default)

    def layers_for(self, method: str) -> tuple[str, ...] | None:
        """The layer subset of a GAIA method (None: all layers, or not a GAIA method)."""
        return {"gaia_z": self.zero_layers, "gaia_a": self.inner_layers}.get(method)

    def params_for(self, attribution: str) -> dict:
        """The researcher's settings of one attribution method: ``{param: value}``."""
        prefix = f"{attribution}."
        return {key[len(prefix):]: value for key, value in self.attribution_params if key.startswith(prefix)}

    def with_param(self, attribution: str, param: str, value) -> "Selection":
        """This Selection with ``attribution``'s ``param`` set (None: back to its default)."""
        kept = {key: v for key, v in self.attribution_params if key != f"{attribution}.{param}"}
        if value is not None:
            kept[f"{attribution}.{param}"] = value
        return replace(self, attribution_params=tuple(sorted(kept.items())))


__all__ = ["ATTRIBUTION_VIEWS", "HISTOGRAM_SCALES", "HISTOGRAM_SETS", "MAP_AGREEMENT", "Selection", "TPR_RANGE",
           "UPLOAD_IMAGE"]
