"""A sweep's progress as ``progress(fraction, message)`` (:class:`SweepProgress`) and the
chunks it plans (:class:`ChunkTask`)."""

from __future__ import annotations

import time
from typing import NamedTuple

from gaia_viz.progress import ProgressFn


class ChunkTask(NamedTuple):
    """A chunk some cache entries lack: samples ``[start, end)`` of data set ``dataset``."""

    dataset: str
    start: int
    end: int
    missing: tuple[str, ...]  # entries to compute: OUTPUTS and/or method names


class SweepProgress:
    """Progress of a sweep as fraction + message: images done and the loading and scoring
    rates (so a user sees which one limits the run)."""

    def __init__(self, total: int, done: int, report: ProgressFn | None):
        self.total, self.done, self.report = max(1, total), done, report
        self.scored = 0
        self.scoring_since = time.perf_counter()

    def say(self, message: str) -> None:
        if self.report is not None:
            self.report(min(1.0, self.done / self.total), message)

    def start_scoring(self) -> None:
        self.scoring_since = time.perf_counter()

    def advance(self, count: int, name: str, load_rate: float | None, score_rate: float | None) -> None:
        self.done += count
        self.scored += count
        rates = "".join(f", {label} {rate:,.0f}/s" for label, rate in (("load", load_rate), ("score", score_rate))
                        if rate)
        # the time left is the listener's (gaia_viz.progress.EtaEstimate): it moves between reports
        self.say(f"scoring {name}: {self.done:,}/{self.total:,}{rates}")


def rate(images: int, seconds: float) -> float | None:
    """Images per second, None when nothing was timed."""
    return images / seconds if images and seconds > 0 else None


__all__ = ["ChunkTask", "SweepProgress", "rate"]
