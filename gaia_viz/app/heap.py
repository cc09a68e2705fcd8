"""Keep Python's full garbage collections out of the served app's interactions.

A full collection (generation 2) walks every container object the process holds. With torch,
torchvision, captum, streamlit, plotly and pandas imported that is about 510,000 objects and
190 ms on the project's 2-core machine, and the served app ran one every 0.5-2 s (seen with
``gc.callbacks``): one landed in about every third step of Tune threshold's slider and made
it 180 ms late. :func:`freeze_long_lived` moves what the process holds into the permanent
generation (``gc.freeze``), which no collection walks; collections then walk only what was
made since, a few milliseconds.

It runs when what the process holds has just grown for good: after the launcher's imports,
after the first page run (plain ``streamlit run`` imports there) and after each evaluation.
Each call unfreezes and collects first, so a cycle that became garbage while frozen (a closed
session's state, say) is freed then, not kept.
"""

from __future__ import annotations

import gc
import threading

_LOCK = threading.Lock()
_FIRST_RUN_DONE = threading.Event()


def freeze_long_lived() -> None:
    """Collect all garbage, then freeze every object left (see the module docstring)."""
    with _LOCK:
        gc.unfreeze()
        gc.collect()
        gc.freeze()


def freeze_after_first_run() -> None:
    """:func:`freeze_long_lived` the first time it is called in the process, then nothing."""
    if not _FIRST_RUN_DONE.is_set():
        _FIRST_RUN_DONE.set()
        freeze_long_lived()


__all__ = ["freeze_after_first_run", "freeze_long_lived"]
