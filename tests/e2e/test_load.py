"""Load test in a real browser: 1, 3 and 6 sessions open the same page during a cold evaluation.

One ``streamlit run app.py`` (as in test_browser.py), one Chromium with a tab per session (each
tab is its own Streamlit session). For each load the first tab opens a link to Evaluate on a
demo set-up nothing has scored yet (its own sample count, so the evaluation is cold); as soon
as its progress bar shows, the other tabs open the same link. Every tab must reach the metrics
table, and the same table. Before the fix a tab that joined the running evaluation showed no
progress, no table and no message, forever.

The time to the table of every session (from its ``goto``) and the server's peak resident
memory are printed (``pytest -s``) and written to ``$GAIA_VIZ_LOAD_FIGURES`` when set.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from served_app import BROWSER_MARKS, ServerFailed, browser_api, chromium, log_tail, served_app

pytestmark = BROWSER_MARKS
sync_api = browser_api()

LOADS = tuple(int(n) for n in os.environ.get("GAIA_VIZ_LOADS", "1,3,6").split(","))
SAMPLES = 6  # per demo set: 6 sets, 36 images a cold run
METHODS = "gaia_z,msp"
RELOAD_SAMPLES = 400  # per set (the demo's OOD sets hold 200): 400 + 5 x 200 images
TABLE_S = 120.0  # bound per load; on a loaded 2-core machine a cold run takes 10-60 s


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of ``pid`` and its children (loader workers), in KiB."""
    total = 0
    pids = [pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                   text=True).stdout.split()]
    for one in pids:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class PeakMemory:
    """The highest resident memory of the server seen while it runs (sampled every 0.1 s)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_kib(self.pid))
            self._stop.wait(0.1)

    def __enter__(self):
        self.peak = _rss_kib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A fresh ``streamlit run app.py`` (its own cold run cache): ``(url, pid, log)``."""
    try:
        # plain streamlit run: its first page run imports torch, so the cold evaluations last long
        # enough for the other tabs to join them (the README's launcher imports it at start-up)
        with served_app(tmp_path_factory.mktemp("load_server"), launcher=False) as (url, process, log_path):
            yield url, process.pid, log_path
    except ServerFailed as failed:
        pytest.fail(str(failed))


def _grid(page):
    """The Evaluate page's FPR95 grid (a Markdown table with an Average column)."""
    return page.get_by_test_id("stMarkdown").filter(has=page.locator("th", has_text="Average")).locator("table").first


def _run_load(context, url: str, sessions: int, samples: int) -> dict:
    link = f"{url}Evaluate?samples={samples}&methods={METHODS}"
    first = context.new_page()
    opened = {0: time.monotonic()}
    first.goto(link, wait_until="domcontentloaded")
    # its run in progress (or, on a fast machine, already its table)
    first.get_by_test_id("stProgress").or_(_grid(first)).first.wait_for(state="visible", timeout=TABLE_S * 1000)
    pages, joined_running = [first], []
    for index in range(1, sessions):
        page = context.new_page()
        opened[index] = time.monotonic()
        page.goto(link, wait_until="domcontentloaded")
        pages.append(page)
    reached: dict[int, float] = {}
    deadline = time.monotonic() + TABLE_S
    while len(reached) < sessions and time.monotonic() < deadline:
        for index, page in enumerate(pages):
            if index in reached:
                continue
            if index and index not in joined_running and page.get_by_text("joined the run in progress").count():
                joined_running.append(index)
            if _grid(page).count() and _grid(page).is_visible():
                reached[index] = time.monotonic() - opened[index]
        time.sleep(0.1)
    stuck = sorted(set(range(sessions)) - set(reached))
    if stuck and os.environ.get("GAIA_VIZ_LOAD_DEBUG"):
        for index in stuck:
            pages[index].screenshot(path=f"{os.environ['GAIA_VIZ_LOAD_DEBUG']}/stuck-{sessions}-{index}.png")
            print(index, pages[index].evaluate("document.visibilityState"),
                  pages[index].get_by_test_id("stMain").inner_text()[:800])
    assert not stuck, f"{len(stuck)} of {sessions} sessions never reached the table (tabs {stuck})"
    tables = [_grid(page).inner_text() for page in pages]
    assert all(table == tables[0] for table in tables), "the sessions show different tables"
    for page in pages:
        page.close()
    return {"sessions": sessions, "seconds_to_table": [round(reached[i], 2) for i in range(sessions)],
            "joined_while_running": len(joined_running)}


def test_sessions_opening_the_same_page_during_a_cold_evaluation_all_reach_the_table(server, tmp_path):
    url, pid, log_path = server
    figures = []
    with sync_api.sync_playwright() as playwright, \
            chromium(playwright, tmp_path / "chromium-profile", TABLE_S * 1000) as context:
        for offset, sessions in enumerate(LOADS):
            with PeakMemory(pid) as memory:
                result = _run_load(context, url, sessions, SAMPLES + offset)  # cold: a new set-up
            result["server_peak_rss_mib"] = round(memory.peak / 1024)
            figures.append(result)
    report = json.dumps(figures, indent=1)
    print(f"\nload figures (time to table per session from its goto, server peak RSS):\n{report}")
    if os.environ.get("GAIA_VIZ_LOAD_FIGURES"):
        Path(os.environ["GAIA_VIZ_LOAD_FIGURES"]).write_text(report)
    assert "Traceback" not in log_tail(log_path, 100_000)


def test_a_reload_mid_run_reattaches_to_the_running_evaluation(server, tmp_path):
    """Issue 22: a reload mid-run must reattach to the running job (or say it restarted)."""
    url, _, _ = server
    with sync_api.sync_playwright() as playwright, \
            chromium(playwright, tmp_path / "chromium-profile", TABLE_S * 1000) as context:
        page = context.new_page()
        # a run of its own (1,400 images: long enough to reload in, about 1-3 s on 2 cores)
        page.goto(f"{url}Evaluate?samples={RELOAD_SAMPLES}&methods={METHODS}", wait_until="domcontentloaded")
        page.get_by_test_id("stProgress").or_(_grid(page)).first.wait_for(state="visible")
        page.reload(wait_until="domcontentloaded")
        progress = page.get_by_test_id("stProgress").filter(has_text="joined the run in progress")
        table = _grid(page)
        progress.or_(table).first.wait_for(state="visible")  # reattached (or already done)
        reattached = progress.count() > 0
        table.wait_for(state="visible")
        print(f"\nreload mid-run: {'reattached to the running job' if reattached else 'the run had ended'}")
        assert "samples=" in page.url and "methods=" in page.url  # the same set-up, not the demo default
