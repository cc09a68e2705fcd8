"""What the Tune threshold page shows beside its numbers (no Streamlit here): the hardest
cases of a set at the current scores, and how to use an exported threshold elsewhere (the
install command and the few lines of Python, :class:`gaia_viz.threshold.OODFlagger`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from gaia_viz.threshold import DEFAULT_CONFIG_NAME

SNIPPET_IMAGES = ("image_1.png", "image_2.png")


def hardest_cases(scores: np.ndarray, count: int, most_ood_like: bool) -> np.ndarray:
    """Indices of the ``count`` hardest samples: the highest scores (``most_ood_like``, for ID
    images) or the lowest (for OOD images, the ones most easily mistaken for ID)."""
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores if most_ood_like else scores, kind="stable")
    return order[:max(0, int(count))]


def install_command() -> str:
    """How to make ``import gaia_viz`` work in another environment: this checkout, editable."""
    from gaia_viz.settings import REPO_ROOT

    return f"pip install -r {REPO_ROOT / 'requirements.txt'} -e {REPO_ROOT}"


def threshold_snippet(config_path: str = DEFAULT_CONFIG_NAME, images: Sequence[str] = SNIPPET_IMAGES) -> str:
    """The few lines of Python that load an exported threshold and flag new images (each image
    is scored once; the flags come from those scores)."""
    return (
        f"# once, in the environment that runs this: {install_command()}\n"
        "from gaia_viz.threshold import OODFlagger\n"
        "\n"
        f"flagger = OODFlagger.from_file({str(config_path)!r})  # model, detector, layers and preprocessing\n"
        f"images = {list(images)!r}  # file paths or PIL images\n"
        "scores = flagger.score(images)  # OOD scores, higher = more OOD\n"
        "flags = flagger.decide(scores)  # True where score > threshold: flagged out-of-distribution\n"
        "for image, score, flagged in zip(images, scores, flags):\n"
        "    print(f\"{image}: score {score:.4g} -> {'OOD' if flagged else 'ID'}\")\n"
    )


__all__ = ["SNIPPET_IMAGES", "hardest_cases", "install_command", "threshold_snippet"]
