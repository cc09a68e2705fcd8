"""Shared test fixtures (constants and helpers shared by import are in support.py, the AppTest
ones in apptest_support.py)."""

import sys
from pathlib import Path

import pytest

from slow_tests import is_slow


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


@pytest.fixture
def run_cache_at(tmp_path_factory, monkeypatch):
    """Point GAIA_VIZ_CACHE_DIR at the run cache ``name`` under this session's temporary folder
    (one a name, kept for the whole session: files that use one name share finished runs);
    returns the folder."""

    def point(name: str) -> Path:
        folder = tmp_path_factory.getbasetemp() / name
        monkeypatch.setenv("GAIA_VIZ_CACHE_DIR", str(folder))
        return folder

    return point


@pytest.fixture
def app_run_cache(run_cache_at) -> Path:
    """The app tests' run cache, shared by all their files: only the first test pays for scoring
    the demo."""
    return run_cache_at("app-run-cache")



@pytest.hookimpl(tryfirst=True)  # before -m reads the marks
def pytest_collection_modifyitems(items):
    """Mark ``slow`` what tests/slow_tests.py lists, so ``pytest -m "not slow"`` is the quick subset."""
    for item in items:
        name = getattr(item, "originalname", None) or item.name.split("[")[0]
        if is_slow(item.path.name, name, {mark.name for mark in item.iter_markers()}, item.name):
            item.add_marker(pytest.mark.slow)
