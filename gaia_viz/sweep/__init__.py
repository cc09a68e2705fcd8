"""One sweep: every chosen method over ID and OOD sets, one forward pass per batch.

Each detector states what it reads from the forward pass (:meth:`Detector.needs`); the
sweep merges those needs and runs :func:`gaia_viz.forward.shared_forward` once per batch
(without gradients when no method needs one), then lets every detector score from its
outputs. Fitted methods (ReAct, KNN, Mahalanobis, ViM, fDBD, NNGuide, DICE) learn from one
shared pass over the fit set, run only when some chunk they must score is not cached. A
chosen method that cannot run on this model or data, whatever its error (no classifier head,
no pooled features, GAIA on a token model: found on one image before anything is scored; a
fit that fails on the fit set, such as ViM with fewer fit images than its ``dim``), is left
out with one warning and its reason in ``RunConfig.left_out``; the others still run, and if
none can, the run stops with every reason. Only an error in the model's own forward pass
stops the run outright. Scores that are inf/NaN are kept and said (``RunConfig.notes``:
which method, how many, why); their metrics are NaN. Each cause gets one note.

Results are cached on disk (:mod:`gaia_viz.cache`) per dataset, per method and per chunk of
``chunk_size`` samples, keyed by what determines the numbers: the weights, the dataset's
files and preprocessing, the method and its parameters (layers included), the fit data.
Batch size, device, loader workers and how a path was typed are not part of the key. So a
second request is a cache hit, an interrupted run resumes where it stopped, and adding a
method to an evaluation scores only that method. A CUDA out-of-memory error halves the
batch and goes on.

The chunks to score are planned first (what the cache lacks), then one loader
(:mod:`gaia_viz.loader`) decodes their batches in worker processes while this process
scores. Under torchrun the plan is split across ranks (:mod:`gaia_viz.distributed`):
each rank writes its chunks to the cache and rank 0 merges them.

The package's files are its steps: :mod:`~gaia_viz.sweep.settings` (what is computed, the
detectors), :mod:`~gaia_viz.sweep.checks` (what the model can feed, GAIA's layers),
:mod:`~gaia_viz.sweep.identity` (fingerprints and cache keys), :mod:`~gaia_viz.sweep.job`
(one run's state), :mod:`~gaia_viz.sweep.plan`, :mod:`~gaia_viz.sweep.fit`,
:mod:`~gaia_viz.sweep.scoring` (one batch, one range, this rank's share),
:mod:`~gaia_viz.sweep.merge` (other ranks' chunks, the joined result), :mod:`~gaia_viz.sweep.notes`
(the run record's notes), :mod:`~gaia_viz.sweep.result` (:class:`Evaluation`) and
:mod:`~gaia_viz.sweep.run` (:func:`evaluate`, the step list).
"""

from gaia_viz.detectors import METHOD_LABELS
from gaia_viz.sweep.checks import ResolvedLayers, check_model_runs, resolve_layers, unusable_methods
from gaia_viz.sweep.identity import FEATURES, OUTPUTS, SCORES_FORMAT, dataset_fingerprint, model_fingerprint
from gaia_viz.sweep.job import EvaluationCancelled
from gaia_viz.sweep.notes import ACCURACY_NOTE
from gaia_viz.sweep.result import Evaluation, gaia_z_note, non_finite_methods
from gaia_viz.sweep.run import evaluate
from gaia_viz.sweep.scoring import score_batch, score_range
from gaia_viz.sweep.settings import (
    ALL_METHODS,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_METHODS,
    GAIA_METHODS,
    SweepSettings,
    build_detectors,
    chunk_ranges,
)

__all__ = [
    "ACCURACY_NOTE", "ALL_METHODS", "DEFAULT_CHUNK_SIZE", "DEFAULT_METHODS", "FEATURES", "GAIA_METHODS",
    "METHOD_LABELS", "OUTPUTS", "SCORES_FORMAT", "Evaluation", "EvaluationCancelled", "ResolvedLayers",
    "SweepSettings", "build_detectors", "check_model_runs", "chunk_ranges", "dataset_fingerprint", "evaluate",
    "gaia_z_note", "model_fingerprint", "non_finite_methods", "resolve_layers", "score_batch", "score_range",
    "unusable_methods",
]
