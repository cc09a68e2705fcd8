"""Progress on a terminal: the ``progress(fraction, message)`` callback every long function
takes, drawn with tqdm on stderr (the app draws the same callback with ``st.progress``), and
the time left estimated from the rate so far (:class:`EtaEstimate`)."""

from __future__ import annotations

import sys
import time
from typing import Callable

ProgressFn = Callable[[float, str], None]


class EtaEstimate:
    """Seconds left of a run from the rate so far, and still moving between progress reports.

    :meth:`update` records each reported fraction; :meth:`seconds_left` may be asked at any time.
    The rate is the progress since the first report over the time since then (so cached work that
    made the first fraction jump does not count as speed). Between reports the estimate counts
    down as if the current step went on at that rate, crediting it at most one typical step (the
    mean increment so far, and never the whole rest); once that credit is used up the step is
    late, the elapsed time keeps growing while the progress does not, and the estimate grows with
    it instead of sitting at "4 s left" for 30 s. None before a rate is known.

    >>> clock = iter([0.0, 10.0, 15.0, 40.0]).__next__
    >>> eta = EtaEstimate(clock=clock)
    >>> eta.update(0.0); eta.update(0.1)          # a tenth in 10 s: 90 s left
    >>> round(eta.seconds_left(), 1)              # 5 s later: counting down
    85.0
    >>> round(eta.seconds_left(), 1)              # 30 s after the report: late, the estimate grew
    160.0
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.first: tuple[float, float] | None = None  # (time, fraction) of the first report
        self.last: tuple[float, float] | None = None
        self.steps = 0

    def update(self, fraction: float) -> None:
        now, fraction = self.clock(), min(1.0, max(0.0, float(fraction)))
        if self.last is not None and fraction < self.last[1]:  # a new run on the same bar (the report's next model)
            self.first, self.steps = None, 0
        if self.first is None:
            self.first = self.last = (now, fraction)
            return
        if fraction > self.last[1]:
            self.steps += 1
        self.last = (now, max(fraction, self.last[1]))

    def seconds_left(self, now: float | None = None) -> float | None:
        if self.first is None or self.steps == 0:
            return None
        now = self.clock() if now is None else now
        (t0, f0), (t1, f1) = self.first, self.last
        if f1 >= 1.0:
            return 0.0
        if t1 <= t0 or f1 <= f0:
            return None
        rate = (f1 - f0) / (t1 - t0)
        credit = min(rate * max(0.0, now - t1), (f1 - f0) / self.steps, 0.9 * (1.0 - f1))
        estimated = f1 + credit
        return (1.0 - estimated) * (max(now, t1) - t0) / (estimated - f0)


def format_seconds_left(seconds: float | None) -> str:
    """"about 2 min 05 s left", "about 12 s left", "estimating the time left" (None)."""
    if seconds is None:
        return "estimating the time left"
    seconds = max(1, round(seconds))
    minutes, rest = divmod(seconds, 60)
    return f"about {minutes} min {rest:02d} s left" if minutes else f"about {rest} s left"


def terminal_progress(quiet: bool = False) -> tuple[ProgressFn | None, Callable[[], None]]:
    """``(update, close)``: a tqdm bar in percent on stderr, or ``(None, no-op)`` when quiet."""
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", file=sys.stderr, bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}]")
    eta = EtaEstimate()

    def update(fraction: float, message: str):
        eta.update(fraction)
        left = eta.seconds_left()
        bar.n = round(100 * min(1.0, max(0.0, fraction)), 1)
        text = message + (f", {format_seconds_left(left)}" if left else "")
        bar.set_description(text[:150], refresh=False)  # one draw, with the new fraction
        bar.refresh()

    return update, bar.close


__all__ = ["EtaEstimate", "ProgressFn", "format_seconds_left", "terminal_progress"]
