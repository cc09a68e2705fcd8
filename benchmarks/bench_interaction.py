"""Interaction benchmark: how long the explorer takes to answer a user, on the server and in a browser.

Rows (demo set-up unless ``--cifar``; seconds, median of ``--repeats``):

  server (streamlit.testing.AppTest, no browser: the script run alone)
    cold_open       a fresh process opens /Evaluate: the first run, the background evaluation
                    (fresh run cache) and the run that draws the figures
    page_switch     with the results in the score store, one run of each page after another
                    (Evaluate, Tune threshold, Channels and layers, Data map, Inspect, Home);
                    a page's first visit and its later visits are reported apart
    slider_page     Tune threshold's TPR slider moved, answered by a run of the whole page
                    (what every widget did before the fragments)
    slider_fragment the same move answered by a rerun of the slider's fragment only (what the
                    browser asks for now)
    data_map_first  the first Data map run after the evaluation (features: from the sweep's
                    chunk cache, or one forward pass over every image when they are not there)

  browser (``--browser``: ``streamlit run app.py`` driven by /usr/bin/chromium via Playwright,
  1400 x 1000, until the page's script run has finished and the figure is drawn)
    cold_open_first_figure  a fresh server's first request /Evaluate until the page's first Plotly
                            figure (a result: the sidebar's hidden chart that loads the chart
                            library does not count)
    slider_to_value         Tune threshold: ArrowLeft on the TPR slider until the "TPR: ID
                            accepted" value changed (timed in the page)
    slider_to_figures       ... until the page's last change (histogram, table, export redrawn)
    page_switch             a click in the sidebar until the page's run finished, per page

Targets (issue 22): slider -> updated figures <= 0.3 s, page switch <= 1.5 s with results
cached, cold open to the first figure <= 8 s on the demo.

Run:  python benchmarks/bench_interaction.py                 # server rows, about a minute on 2 cores
      python benchmarks/bench_interaction.py --browser       # and the browser rows
      python benchmarks/bench_interaction.py --json out.json --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from gaia_viz.app.shell import PAGES as APP_PAGES  # noqa: E402  (after the path above)
from tests.apptest_support import PAGES  # noqa: E402

NAV_NAMES = {name: title for name, page in PAGES.items() for path, title, _ in APP_PAGES if path == page}
TARGETS = {"slider": 0.3, "page_switch": 1.5, "cold_open": 8.0}
# the link; it names a view (methods), so the evaluation starts at once, as for the demo
CIFAR_QUERY = {"model": "cifar_resnet20", "data": "cifar10-real", "ood_sets": "textures",
               "methods": "gaia_z,gaia_a,msp,energy"}
TIMEOUT = 900


def note(name: str, value) -> None:
    """Print a measurement as it is taken, so a run cut short still leaves its numbers."""
    print(f"  {name}: {value:.3f} s" if isinstance(value, float) else f"  {name}: {value}", flush=True)


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def server_rows(args) -> dict:
    from tests.apptest_support import navigation_pages_kept

    with navigation_pages_kept():  # as in a browser session: a fragment rerun keeps the pages
        return _server_rows(args)


def _server_rows(args) -> dict:
    from streamlit.testing.v1 import AppTest

    from gaia_viz.app import jobs
    from tests.apptest_support import fragment_rerun

    def settle(at):
        jobs.wait_for_jobs(TIMEOUT)
        return at.run()

    rows: dict[str, object] = {}
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT)
    if args.max_samples:
        at.session_state["sb_max_samples"] = args.max_samples
    if args.cifar:
        at.query_params.update(CIFAR_QUERY)

    def cold():
        at.run()
        at.switch_page(PAGES["evaluate"])
        settle(at.run())

    rows["cold_open"] = timed(cold)
    note("server cold_open", rows["cold_open"])
    assert not at.exception, at.exception
    switches: dict[str, list[float]] = {}
    for round_ in range(args.repeats + 1):
        for page in ("tune", "channels", "map", "inspect", "home", "evaluate"):
            at.switch_page(PAGES[page])
            seconds = timed(lambda: settle(at.run()))
            assert not at.exception, (page, at.exception)
            if round_ == 0 and page == "map":
                rows["data_map_first"] = seconds
            switches.setdefault(page, []).append(seconds)
            note(f"server page_switch {page}", seconds)
    rows["page_switch_first"] = {page: values[0] for page, values in switches.items()}
    rows["page_switch"] = {page: statistics.median(values[1:]) for page, values in switches.items()}

    at.switch_page(PAGES["tune"])
    settle(at.run())
    page_runs, fragment_runs = [], []
    for k in range(args.repeats):
        tpr = 0.80 + 0.01 * k
        page_runs.append(timed(lambda: at.slider(key="w_tune_tpr").set_value(tpr).run()))
        undo = fragment_rerun(at, "tune_operating_point")
        try:
            fragment_runs.append(timed(lambda: at.slider(key="w_tune_tpr").set_value(tpr + 0.005).run()))
        finally:
            undo()
        assert not at.exception, at.exception
    rows["slider_page"] = statistics.median(page_runs)
    rows["slider_fragment"] = statistics.median(fragment_runs)
    return rows


# --------------------------------------------------------------------------- browser


TITLES = {"evaluate": "Evaluate", "tune": "Tune threshold", "channels": "Channels and layers", "map": "Data map",
          "inspect": "Inspect one image", "home": "gaia-viz: see why GAIA flags an image"}


# Timed in the page itself (Playwright's own waits poll every 100 ms or more): from the key press
# to the "TPR: ID accepted" value changing, and to the last change of the page (the histogram and
# the rest of the fragment redrawn), the page then quiet for 700 ms.
SLIDER_PROBE = """() => {
  const probe = {};
  const metric = [...document.querySelectorAll('[data-testid="stMetric"]')]
    .find(m => m.innerText.includes('TPR: ID accepted'));
  const shown = () => metric.querySelector('[data-testid="stMetricValue"]').innerText;
  const before = shown();
  document.addEventListener('keydown', () => { probe.key = performance.now(); }, {capture: true, once: true});
  const observer = new MutationObserver(() => {
    if (!probe.key) return;
    probe.last = performance.now();
    if (!probe.value && shown() !== before) probe.value = probe.last;
  });
  observer.observe(document.body, {attributes: true, childList: true, subtree: true, characterData: true});
  const quiet = () => {
    if (probe.value && performance.now() - probe.last > 700) { observer.disconnect(); probe.settled = true; }
    else setTimeout(quiet, 50);
  };
  setTimeout(quiet, 50);
  window.__gaia_probe = probe;
}"""


def browser_rows(args) -> dict:
    from playwright.sync_api import expect, sync_playwright

    from tests.e2e.served_app import IDLE, NAV, chromium, served_app

    rows: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, served_app(Path(tmp)) as (url, _, _), \
            sync_playwright() as playwright, \
            chromium(playwright, Path(tmp) / "profile", TIMEOUT * 1000, {"width": 1400, "height": 1000}) as context:
        page = context.new_page()
        params = {**(CIFAR_QUERY if args.cifar else {}), **({"samples": args.max_samples} if args.max_samples else {})}
        query = "&".join(f"{k}={v}" for k, v in params.items())
        start = time.perf_counter()
        page.goto(f"{url}Evaluate?{query}", wait_until="domcontentloaded")
        main_charts = page.get_by_test_id("stMain").locator(".js-plotly-plot")  # the sidebar's is hidden
        main_charts.first.wait_for(state="visible")
        rows["cold_open_first_figure"] = time.perf_counter() - start
        note("browser cold_open_first_figure", rows["cold_open_first_figure"])
        page.wait_for_selector(IDLE)

        def open_page(name: str) -> float:
            """A click on the sidebar's link until the new page's run finished and its figure is drawn."""
            start = time.perf_counter()
            page.locator(NAV).get_by_role("link", name=NAV_NAMES[name], exact=True).click()
            expect(page.get_by_role("heading", name=TITLES[name], exact=True)).to_be_visible()
            page.wait_for_selector(IDLE)
            if name != "home":
                main_charts.first.wait_for(state="visible")
            return time.perf_counter() - start

        switches: dict[str, list[float]] = {}
        for _ in range(args.repeats + 1):
            for name in ("tune", "channels", "inspect", "evaluate", "map", "home"):
                switches.setdefault(name, []).append(open_page(name))
                note(f"browser page_switch {name}", switches[name][-1])
        rows["page_switch_first"] = {k: v[0] for k, v in switches.items()}
        rows["page_switch"] = {k: statistics.median(v[1:]) for k, v in switches.items()}

        open_page("tune")
        thumb = page.get_by_role("slider").first
        to_value, to_settled = [], []
        for _ in range(args.repeats):
            page.wait_for_timeout(800)  # the previous step's page is quiet before the next is timed
            thumb.focus()
            page.evaluate(SLIDER_PROBE)
            page.keyboard.press("ArrowLeft")
            page.wait_for_function("() => window.__gaia_probe && window.__gaia_probe.settled")
            probe = page.evaluate("() => window.__gaia_probe")
            to_value.append((probe["value"] - probe["key"]) / 1000)
            to_settled.append((probe["last"] - probe["key"]) / 1000)
            note("browser slider_to_value", to_value[-1])
            note("browser slider_to_figures", to_settled[-1])
        rows["slider_to_value"] = statistics.median(to_value)
        rows["slider_to_figures"] = statistics.median(to_settled)
    return rows


def verdicts(rows: dict) -> list[str]:
    lines = []
    for name, target_key in (("slider_fragment", "slider"), ("slider_to_value", "slider"),
                             ("slider_to_figures", "slider"),
                             ("cold_open", "cold_open"), ("cold_open_first_figure", "cold_open")):
        for part, values in rows.items():
            if name in values:
                ok = values[name] <= TARGETS[target_key]
                lines.append(f"{part}/{name}: {values[name]:.3f} s (target <= {TARGETS[target_key]} s) "
                             f"{'PASS' if ok else 'MISS'}")
    for part, values in rows.items():
        switches = values.get("page_switch", {})
        if switches:
            worst = max(switches.values())
            lines.append(f"{part}/page_switch (worst page): {worst:.3f} s (target <= {TARGETS['page_switch']} s) "
                         f"{'PASS' if worst <= TARGETS['page_switch'] else 'MISS'}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-samples", type=int, default=0, help="the sidebar's per-set cap (0: the default)")
    parser.add_argument("--cifar", action="store_true", help="the CIFAR-10 set-up (needs the shared data)")
    parser.add_argument("--browser", action="store_true", help="also the browser rows (/usr/bin/chromium)")
    parser.add_argument("--no-server", action="store_true", help="only the browser rows")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still stops the server it started
    os.environ.setdefault("GAIA_VIZ_CACHE_DIR", tempfile.mkdtemp(prefix="gaia-viz-bench-"))
    rows: dict[str, dict] = {"machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}}
    if not args.no_server:
        rows["server"] = server_rows(args)
    if args.browser:
        rows["browser"] = browser_rows(args)
    rows["machine"]["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(rows, indent=2, default=lambda v: round(v, 3)))
    for line in verdicts({k: v for k, v in rows.items() if k != "machine"}):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
