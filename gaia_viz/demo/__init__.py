"""The zero-download demo: a small digit CNN, real digits as ID, real bundled images as OOD.

Retrain the shipped weights with ``python -m gaia_viz.demo.train --out assets/demo_cnn.safetensors``.
"""

from gaia_viz.demo.datasets import (
    DEMO_ID_NAME,
    DEMO_OOD_NAMES,
    DEMO_PRESET,
    demo_id_set,
    demo_ood_sets,
    mnist_split,
)
from gaia_viz.demo.model import DEMO_CHECKPOINT, DEMO_METADATA, DemoCNN, load_demo_model

__all__ = ["DEMO_ID_NAME", "DEMO_OOD_NAMES", "DEMO_PRESET", "demo_id_set", "demo_ood_sets",
           "mnist_split", "DEMO_CHECKPOINT", "DEMO_METADATA", "DemoCNN", "load_demo_model"]
