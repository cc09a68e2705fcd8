"""GAIA-Z and GAIA-A (Chen et al., NeurIPS 2023) as detectors."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from gaia_viz.detectors.base import Detector, register


def _names(layers: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if layers is None:
        return None
    if isinstance(layers, str):
        return (layers,)
    return tuple(layers)


@register
class GaiaZ(Detector):
    """GAIA-Z (Chen et al., "GAIA: delving into gradient-based attribution abnormality for
    out-of-distribution detection", NeurIPS 2023), zero-deflation abnormality.

    With ``g = d(max_k f(x)_k) / d output_l`` at each layer ``l`` of ``layers`` and
    ``r[l, c]`` the fraction of non-zero entries of channel ``c`` of ``g``::

        score(x) = mean over (l, c) of r[l, c]^2

    Delegates to :func:`gaia_viz.gaia.gaia_z` (``layers=None``: its default, every
    normalisation layer over feature maps), which leaves the model as found.
    """

    name = "gaia_z"
    label = "GAIA-Z"
    needs_grad = True

    def __init__(self, model, layers: Sequence[str] | str | None = None):
        super().__init__(model)
        self.layers = _names(layers)

    def score(self, x: Tensor) -> Tensor:
        from gaia_viz.gaia import gaia_z

        return gaia_z(self.model, self._input(x), layers=self.layers).float().cpu()


@register
class GaiaA(Detector):
    """GAIA-A (Chen et al., NeurIPS 2023), channel-wise average abnormality.

    ``o = sqrt(mean_c |mean_p dA/d output_head|)`` with ``A = sum_k log_softmax(f(x))_k``,
    ``m[l, c] = mean_p (dB / d output_l)[c, p]`` with ``B`` the sum of the pooled head
    input, for every layer ``l`` of ``inner_layers``::

        score(x) = mean over (l, c) of (|m[l, c]| / o)^2

    Delegates to :func:`gaia_viz.gaia.gaia_a` (``None``: its default layers).
    """

    name = "gaia_a"
    label = "GAIA-A"
    needs_grad = True

    def __init__(
        self,
        model,
        inner_layers: Sequence[str] | str | None = None,
        head_layer: str | None = None,
    ):
        super().__init__(model)
        self.inner_layers = _names(inner_layers)
        self.head_layer = head_layer

    def score(self, x: Tensor) -> Tensor:
        from gaia_viz.gaia import gaia_a

        return gaia_a(
            self.model, self._input(x), inner_layers=self.inner_layers, head_layer=self.head_layer
        ).float().cpu()
