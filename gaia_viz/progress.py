"""Progress on a terminal: the ``progress(fraction, message)`` callback every long function
takes, drawn with tqdm on stderr (the app draws the same callback with ``st.progress``)."""

from __future__ import annotations

import sys
from typing import Callable

ProgressFn = Callable[[float, str], None]


def terminal_progress(quiet: bool = False) -> tuple[ProgressFn | None, Callable[[], None]]:
    """``(update, close)``: a tqdm bar in percent on stderr, or ``(None, no-op)`` when quiet."""
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", file=sys.stderr, bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}]")

    def update(fraction: float, message: str):
        bar.n = round(100 * min(1.0, max(0.0, fraction)), 1)
        bar.set_description(message[:150], refresh=False)  # one draw, with the new fraction
        bar.refresh()

    return update, bar.close


__all__ = ["ProgressFn", "terminal_progress"]
