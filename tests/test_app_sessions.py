"""Several sessions on one evaluation (AppTest, the embedded demo): a session that opens a page
while another session's run is going, or the same session after a reload, joins that run,
shows its progress (and so polls it) and reaches the same table."""

import threading

import pytest
from streamlit.testing.v1 import AppTest

from gaia_viz.app import jobs

from support import ROOT
TIMEOUT = 120
EVALUATE = "pages/2_Evaluate.py"


@pytest.fixture(autouse=True)
def run_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GAIA_VIZ_CACHE_DIR", str(tmp_path / "run-cache"))  # cold: nothing cached
    jobs.wait_for_jobs(TIMEOUT)
    jobs.STORE.clear()  # nor in memory, whichever test file scored these set-ups before in this process


@pytest.fixture
def gate(monkeypatch):
    """Chunks are scored only once the gate opens: the run stays in progress while sessions join."""
    from gaia_viz.sweep import scoring

    real, opened = scoring.score_range, threading.Event()

    def gated(*args, **kwargs):
        opened.wait(TIMEOUT)
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_range", gated)
    yield opened
    opened.set()


def open_evaluate(samples: int, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["sb_max_samples"] = samples
    if query:
        at.query_params.update(query)
    at.run()
    at.switch_page(EVALUATE)
    return at.run()


def progress_texts(at: AppTest) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def table(at: AppTest):
    assert not at.exception, at.exception
    assert at.dataframe, "the session reached the metrics table"
    return at.dataframe[0].value


def test_sessions_joining_a_running_evaluation_see_its_progress_and_its_table(gate):
    """Was: a second tab opened during the first tab's run showed no progress, no table and no
    message, forever (it joined the job after the page's status had found nothing to poll)."""
    first = open_evaluate(samples=29)
    job = jobs.JOBS.job(first.session_state["setup"].score_key)
    assert job is not None and job.running and progress_texts(first)
    second = open_evaluate(samples=29)
    assert not second.exception, second.exception
    assert jobs.JOBS.job(second.session_state["setup"].score_key) is job  # joined, not a second run
    texts = progress_texts(second)
    assert texts and "joined the run in progress" in texts[0], texts
    # a reload mid-run is a new session on the same link: it reattaches the same way
    reloaded = open_evaluate(samples=29, query=dict(first.query_params))
    assert jobs.JOBS.job(reloaded.session_state["setup"].score_key) is job
    assert any("joined the run in progress" in t for t in progress_texts(reloaded))
    gate.set()
    assert job.wait(TIMEOUT) and job.status == "done"
    tables = [table(at.run()) for at in (first, second, reloaded)]
    for other in tables[1:]:
        assert other.equals(tables[0])
    assert not any(progress_texts(at) for at in (first, second, reloaded))


def test_a_run_replaced_by_one_over_more_methods_says_it_restarted(gate):
    first = open_evaluate(samples=31)
    job = jobs.JOBS.job(first.session_state["setup"].score_key)
    first.multiselect(key="w_methods").set_value(["msp", "energy", "maxlogit"]).run()
    replacement = jobs.JOBS.job(first.session_state["setup"].score_key)
    assert replacement is not job and replacement.restarted
    assert any("restarted" in t for t in progress_texts(first)), progress_texts(first)
    gate.set()
    assert replacement.wait(TIMEOUT) and replacement.status == "done"
    assert set(table(first.run())["Method"]) >= {"MSP", "Energy"}


def test_a_file_name_that_is_not_utf8_is_scored_and_shown_escaped(tmp_path):
    """Was: a file named with byte \\xff in an OOD folder failed the whole evaluation with a
    misleading "check the preprocessing preset" (a UnicodeEncodeError in the fingerprint)."""
    import os

    from PIL import Image

    folder = tmp_path / "odd"
    folder.mkdir()
    for name in (b"\xffodd.png", b"plain.png"):
        Image.new("L", (28, 28), 90).save(os.path.join(os.fsencode(folder), name), format="PNG")
    at = open_evaluate(samples=12)
    at.sidebar.selectbox(key="sb_data_kind").set_value("custom").run()
    at.sidebar.text_input(key="sb_custom_id").input("demo:digits").run()
    at.sidebar.text_area(key="sb_custom_ood").input(f"odd = {folder}").run()
    next(b for b in at.button if b.key and b.key.startswith("run::")).click().run()
    jobs.wait_for_jobs(TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert table(at) is not None
    evaluation = jobs.STORE.get(at.session_state["setup"].score_key)
    shown = [p for p in evaluation.scores["path"] if p and "odd.png" in p]
    assert shown == [os.path.join(str(folder), "\\xffodd.png")]
