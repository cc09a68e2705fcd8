"""OOD detectors, one class per method, sharing the :class:`Detector` protocol.

``DETECTORS`` maps a registry name to its class, ``METHOD_LABELS`` to a human name, and
``make_detector(name, model, **params)`` builds one. Importing this package registers
every method (in the order below, GAIA first; then the 2017-2021 baselines, then the
post-hoc methods OpenOOD v1.5 ranks highest: ASH, SCALE, ViM, GEN, fDBD, NNGuide, DICE).
"""

from gaia_viz.detectors.base import (
    DETECTORS,
    Detector,
    OutputDetector,
    detector_parameters,
    energy_from_logits,
    make_detector,
)
from gaia_viz.detectors.gaia import GaiaA, GaiaZ
from gaia_viz.detectors.msp import MSP
from gaia_viz.detectors.maxlogit import MaxLogit
from gaia_viz.detectors.energy import Energy
from gaia_viz.detectors.odin import ODIN
from gaia_viz.detectors.gradnorm import GradNorm
from gaia_viz.detectors.react import ReAct
from gaia_viz.detectors.knn import KNN
from gaia_viz.detectors.mahalanobis import Mahalanobis
from gaia_viz.detectors.ash import ASH
from gaia_viz.detectors.scale import SCALE
from gaia_viz.detectors.vim import ViM
from gaia_viz.detectors.gen import GEN
from gaia_viz.detectors.fdbd import FDBD
from gaia_viz.detectors.nnguide import NNGuide
from gaia_viz.detectors.dice import DICE
from gaia_viz.forward import collect_outputs, features_and_logits

METHOD_LABELS: dict[str, str] = {name: cls.label for name, cls in DETECTORS.items()}

__all__ = [
    "DETECTORS",
    "METHOD_LABELS",
    "Detector",
    "OutputDetector",
    "GaiaZ",
    "GaiaA",
    "MSP",
    "MaxLogit",
    "Energy",
    "ODIN",
    "GradNorm",
    "ReAct",
    "KNN",
    "Mahalanobis",
    "ASH",
    "SCALE",
    "ViM",
    "GEN",
    "FDBD",
    "NNGuide",
    "DICE",
    "collect_outputs",
    "detector_parameters",
    "energy_from_logits",
    "features_and_logits",
    "make_detector",
]
