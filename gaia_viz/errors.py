"""Exception types raised by gaia_viz.

Every error a user can cause (bad image, bad checkpoint, bad layer name, degenerate
metric input) is a subclass of :class:`GaiaVizError`, so callers (the CLI, the app)
catch one type and show its message; anything else is a bug.
"""


class GaiaVizError(Exception):
    """Base class: a problem with the user's input, with a message that says what to do."""


class ImageLoadError(GaiaVizError, ValueError):
    """An image file could not be opened, is unsafe (too many pixels) or is corrupt."""


class CheckpointError(GaiaVizError, ValueError):
    """A checkpoint is unsafe, unreadable or does not fit the model."""


class ModelError(GaiaVizError, ValueError):
    """A model name is unknown, its weights cannot be had offline, or it is unusable."""


class DataError(GaiaVizError, ValueError):
    """A data source is missing, empty or malformed."""


class LayerError(GaiaVizError, ValueError):
    """A layer name does not exist or cannot be hooked for GAIA."""


class MetricInputError(GaiaVizError, ValueError):
    """Scores given to a metric are empty, non-finite or otherwise degenerate."""


class AttributionError(GaiaVizError, ValueError):
    """An attribution method cannot run with these arguments (input shape, target, window)."""


class GaiaVizWarning(UserWarning):
    """A warning about the numbers (a method left out, GAIA-Z without exact zeros, a
    non-finite score, a layer fallback). An evaluation records each cause once in its run
    record (``config.left_out`` / ``config.notes``), where the CLI and the app read it."""


class LeftOutWarning(GaiaVizWarning):
    """Chosen methods were left out of an evaluation, as they cannot run on this model or data."""


class NonFiniteScoreWarning(GaiaVizWarning):
    """Some scores are inf or NaN; the warning says which method, how many and why."""


class UnlabelledFitWarning(GaiaVizWarning):
    """Fit images without a label: a method fitted per class used the model's predicted class."""


class LayerFallbackWarning(GaiaVizWarning):
    """GAIA hooks fallback layers (convolution outputs: the model has no normalisation layers)."""
