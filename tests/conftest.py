"""Shared test fixtures."""

import sys

import pytest


@pytest.fixture(autouse=True)
def no_background_run_outlives_its_test():
    """An app test may start background evaluations (gaia_viz.app.jobs); each ends before the
    next test, so no test sees another's half-finished run and none is left at exit."""
    yield
    jobs = sys.modules.get("gaia_viz.app.jobs")
    if jobs is not None:
        for job in jobs.JOBS.all_jobs():
            job.cancel_event.set()
        jobs.wait_for_jobs(timeout=300)
