"""The GAIA layers a model may declare as its own defaults (:class:`GaiaLayerDefaults`).

A leaf module: a model family (:mod:`gaia_viz.models.bit`) declares its layers without
importing GAIA itself, and :mod:`gaia_viz.gaia.layout` reads the declaration
(re-exported as ``gaia_viz.gaia.GaiaLayerDefaults``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GaiaLayerDefaults:
    """GAIA layers a model declares as its defaults, by module name (None = the generic rule).

    A model declares them with an attribute (or property) ``gaia_defaults`` holding one.
    """

    zero_layers: tuple[str, ...] | None = None
    inner_layers: tuple[str, ...] | None = None
    head_layer: str | None = None


NO_DECLARED_DEFAULTS = GaiaLayerDefaults()

__all__ = ["GaiaLayerDefaults", "NO_DECLARED_DEFAULTS"]
