"""Evaluations that survive page switches: a process-wide score store and background jobs.

Why threads: a Streamlit script run ends when the user opens another page, and so would an
evaluation running inside it. A job runs :func:`gaia_viz.sweep.evaluate` in a worker thread
instead, reporting progress through the same ``progress(fraction, message)`` callback the
CLI's progress bar uses; every page shows it (:func:`render_status`), Cancel stops it after
the current chunk, and a finished run lands in the :class:`ScoreStore`, where every page reads
it. The model is shared safely: gaia_viz serialises its use of a model across threads
(:func:`gaia_viz.model_state.model_lock`).

Scores grow, never shrink: the store keeps one evaluation per set-up score identity
(:attr:`gaia_viz.app.setup.Setup.score_key`) holding every method scored so far; asking for
more methods runs a sweep over the union, whose cached methods come from the on-disk chunk
cache at once, so only the new ones are computed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

from gaia_viz.errors import GaiaVizError
from gaia_viz.paths import echo
from gaia_viz.progress import EtaEstimate, format_seconds_left

MAX_STORED = 8
LOG = logging.getLogger(__name__)


class ScoreStore:
    """Finished evaluations by set-up score identity, newest last (shared by all sessions)."""

    def __init__(self, capacity: int = MAX_STORED):
        self.capacity = capacity
        self._items: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def methods(self, key: str) -> list[str]:
        evaluation = self.get(key)
        return list(evaluation.methods) if evaluation is not None else []

    def put(self, key: str, evaluation) -> None:
        """Keep ``evaluation`` unless the stored one already holds more methods."""
        with self._lock:
            current = self._items.get(key)
            if current is None or set(evaluation.methods) >= set(current.methods):
                self._items[key] = evaluation
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass
class Job:
    """One background evaluation of a set-up: progress, outcome and who waits for it."""

    key: str
    methods: tuple[str, ...]
    label: str
    started: float = field(default_factory=time.monotonic)
    fraction: float = 0.0
    message: str = "starting"
    status: str = "running"  # running | done | cancelled | failed
    error: str | None = None
    sessions: set = field(default_factory=set)  # the sessions that asked for it (they see it)
    waiting: set = field(default_factory=set)  # those that still want it (it stops without any)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    joined: set = field(default_factory=set)  # sessions that joined it mid-run (another's run, or a reload)
    restarted: bool = False  # it replaced a running job of the same set-up (over more methods)
    eta: EtaEstimate = field(default_factory=EtaEstimate)  # the time left, from the rate so far

    @property
    def running(self) -> bool:
        return self.status == "running"

    def progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = min(1.0, max(0.0, float(fraction))), message
        self.eta.update(self.fraction)

    def status_text(self) -> str:
        """The message, with the time left while running: estimated now, from the rate so far, so
        it moves each time the status is drawn, not only when a chunk reports."""
        if not self.running:
            return self.message
        return f"{self.message} · {format_seconds_left(self.eta.seconds_left())}"

    def covers(self, methods: Sequence[str]) -> bool:
        return set(methods) <= set(self.methods)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (tests, scripts); True when it ended in time."""
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.running


class JobRegistry:
    """The running and recently ended jobs of this process, one per set-up at a time."""

    def __init__(self, store: ScoreStore):
        self.store = store
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def job(self, key: str) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def join(self, key: str, methods: Sequence[str], session: str, wait: bool = True) -> tuple[Job | None, bool]:
        """Join the running job of set-up ``key`` when it covers ``methods``.

        Returns the job (None when there is none to join) and whether ``session`` was new to
        it: a session that joins mid-run must rerun its page once, because the page's status
        (:func:`gaia_viz.app.page.render_status`) was drawn before it joined, and so draws no
        progress and polls nothing."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None or not job.running or not job.covers(methods):
                return None, False
            new = session not in job.sessions
            if new:
                job.joined.add(session)
            job.sessions.add(session)
            if wait:
                job.waiting.add(session)
            return job, new

    def submit(self, setup, methods: Sequence[str], session: str) -> Job:
        """Start (or join) the evaluation of ``methods`` for ``setup``.

        A running job of the same set-up that covers the methods is joined; one that does
        not is cancelled and replaced by a job over the union (its finished chunks are in the
        disk cache, so nothing is scored twice)."""
        key = setup.score_key
        with self._lock:
            current = self._jobs.get(key)
            if current is not None and current.running and current.covers(methods):
                current.sessions.add(session)
                current.waiting.add(session)
                return current
            wanted = list(dict.fromkeys([*self.store.methods(key), *methods]))
            sessions = {session}
            if current is not None and current.running:
                wanted = list(dict.fromkeys([*current.methods, *wanted]))
                sessions |= current.sessions
                current.cancel_event.set()
            job = Job(key=key, methods=tuple(wanted), label=_label(setup), sessions=sessions,
                      waiting=set(sessions), restarted=current is not None and current.running)
            job.thread = threading.Thread(target=self._run, args=(job, setup, current), daemon=True,
                                          name=f"gaia-viz evaluation {key[:8]}")
            self._jobs[key] = job
        job.thread.start()
        return job

    def cancel(self, job: Job, session: str) -> None:
        """This session stops waiting; the job stops when no session waits for it."""
        with self._lock:
            job.waiting.discard(session)
            if not job.waiting:
                job.cancel_event.set()

    def for_session(self, session: str) -> list[Job]:
        with self._lock:
            return [job for job in self._jobs.values() if session in job.sessions]

    def all_jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def forget(self, job: Job) -> None:
        with self._lock:
            if self._jobs.get(job.key) is job and not job.running:
                del self._jobs[job.key]

    def _run(self, job: Job, setup, replaced: Job | None) -> None:
        from gaia_viz.app.heap import freeze_long_lived
        from gaia_viz.settings import default_workers
        from gaia_viz.sweep import EvaluationCancelled, SweepSettings, evaluate

        if replaced is not None and replaced.thread is not None:
            replaced.thread.join()  # its cancel takes effect after the chunk it is scoring
        try:
            evaluation = evaluate(
                setup.model, setup.id_set, setup.ood_sets,
                SweepSettings(methods=list(job.methods), batch_size=setup.batch_size,
                              workers=default_workers(setup.device)),
                fit_set=setup.fit_set, device=setup.device, progress=job.progress,
                cancel=job.cancel_event.is_set, run=setup.run_config())
        except EvaluationCancelled as exc:
            job.status, job.error = "cancelled", str(exc)
        except GaiaVizError as exc:
            job.status, job.error = "failed", str(exc)
        except UnicodeError as exc:  # a ValueError, but not the model's: a name that is not text
            job.status = "failed"
            job.error = f"a file or folder name could not be handled as text ({echo(exc)})"
        except (RuntimeError, OSError, ValueError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            job.status = "failed"
            job.error = (f"the model could not score these images: {first}. Check that the preprocessing "
                         "preset matches the model (input channels and size)")
        except Exception as exc:  # a bug: the visitor gets one line, the server log the traceback
            LOG.exception("evaluation job failed")
            job.status, job.error = "failed", f"internal error ({type(exc).__name__}); see the server log"
        else:
            self.store.put(job.key, evaluation)
            job.progress(1.0, f"done: {len(evaluation.scores):,} images in {evaluation.seconds:.1f} s")
            job.status = "done"
            freeze_long_lived()  # the results stay: out of later collections' walk (gaia_viz.app.heap)


def _label(setup) -> str:
    return f"{setup.model_name} on {setup.id_set.name} vs {len(setup.ood_sets)} OOD set(s)"


STORE = ScoreStore()
JOBS = JobRegistry(STORE)


def wait_for_jobs(timeout: float = 600.0) -> None:
    """Block until every job of the process has ended (for tests and scripts)."""
    deadline = time.monotonic() + timeout
    for job in JOBS.all_jobs():
        job.wait(max(0.0, deadline - time.monotonic()))


__all__ = ["JOBS", "STORE", "Job", "JobRegistry", "ScoreStore", "wait_for_jobs"]
