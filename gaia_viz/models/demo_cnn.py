"""The demo CNN's catalogue entry: ``demo``, the small digit classifier of :mod:`gaia_viz.demo`
(its architecture and weights live there; they are imported only when it is loaded)."""

from __future__ import annotations

from ..errors import ModelError
from .catalogue import ModelInfo, register_family

DEMO = ModelInfo("demo", "demo", "demo CNN", "the embedded digit CNN (1 x 28 x 28 input; `gaia_viz.demo`)",
                 "demo-mnist28", 10, "bundled")


@register_family("demo", "Demo digit CNN (embedded)", [DEMO])
def _load_demo(info: ModelInfo, request):
    if request.checkpoint is not None or request.num_classes not in (None, info.num_classes):
        raise ModelError("the demo model has fixed weights; it takes no checkpoint or num_classes")
    from ..demo import load_demo_model

    return load_demo_model(), None


__all__ = ["DEMO"]
