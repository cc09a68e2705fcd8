"""The time left of a run moves: estimated from the rate so far and updated as time passes,
also between progress reports (issue 22: the ETA sat at "4 s left" for 30 s)."""

import pytest

from gaia_viz.app.jobs import Job
from gaia_viz.progress import EtaEstimate, format_seconds_left


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def reported(clock, *steps):
    """An estimate fed ``(seconds later, fraction)`` reports."""
    eta = EtaEstimate(clock=clock)
    for dt, fraction in steps:
        clock.now += dt
        eta.update(fraction)
    return eta


def test_the_estimate_is_the_rate_so_far_and_counts_down_between_reports():
    clock = Clock()
    eta = reported(clock, (0, 0.0), (10, 0.1), (10, 0.2))  # 1 % a second
    assert eta.seconds_left() == pytest.approx(80.0)
    left = []
    for _ in range(5):  # no report for 5 s: it still moves, one second a second
        clock.now += 1
        left.append(eta.seconds_left())
    assert left == pytest.approx([79, 78, 77, 76, 75])


def test_a_late_step_makes_the_estimate_grow_instead_of_sitting_still():
    clock = Clock()
    eta = reported(clock, (0, 0.0), (2, 0.1), (2, 0.2))  # 4 s for a fifth: 16 s left
    assert eta.seconds_left() == pytest.approx(16.0)
    seen = []
    for _ in range(30):  # then 30 s without a report
        clock.now += 1
        seen.append(eta.seconds_left())
    assert all(s > 0 for s in seen)  # never "0 s left" while it is not done
    assert seen[-1] > 16.0  # it grew with the wait
    assert len({round(s, 3) for s in seen}) == len(seen)  # never stuck on one value
    clock.now += 1
    eta.update(0.5)  # the late step lands: back to the rate so far
    assert eta.seconds_left() == pytest.approx(0.5 * 35 / 0.5)


def test_cached_work_in_the_first_report_is_not_speed():
    clock = Clock()
    eta = reported(clock, (0, 0.6), (10, 0.7))  # 60 % came from the cache at once
    assert eta.seconds_left() == pytest.approx(30.0)


def test_no_rate_yet_and_done():
    clock = Clock()
    eta = EtaEstimate(clock=clock)
    assert eta.seconds_left() is None
    eta.update(0.0)
    clock.now += 5
    assert eta.seconds_left() is None
    eta.update(1.0)
    assert eta.seconds_left() == 0.0


def test_formatting():
    assert format_seconds_left(None) == "estimating the time left"
    assert format_seconds_left(4.2) == "about 4 s left"
    assert format_seconds_left(125) == "about 2 min 05 s left"
    assert format_seconds_left(0.1) == "about 1 s left"


def test_a_running_job_shows_the_time_left_as_it_moves():
    clock = Clock()
    job = Job(key="k", methods=("msp",), label="demo", eta=EtaEstimate(clock=clock))
    job.progress(0.0, "starting")
    clock.now += 10
    job.progress(0.5, "scoring digits: 1,000/2,000")
    assert job.status_text() == "scoring digits: 1,000/2,000 · about 10 s left"
    clock.now += 4
    assert job.status_text().endswith("about 6 s left")  # no report, and still it moved
    job.status = "done"
    assert job.status_text() == "scoring digits: 1,000/2,000"


def test_the_sweep_starts_the_clock_before_its_first_chunk():
    """The sweep reports once before scoring, so the first chunk already gives a rate (was:
    "estimating" until the second chunk, 20 s on CIFAR-10)."""
    from gaia_viz.data.image_sets import subset
    from gaia_viz.demo import load_demo_model
    from gaia_viz.demo.datasets import demo_id_set, demo_ood_sets
    from gaia_viz.sweep import SweepSettings, evaluate

    reports = []
    evaluate(load_demo_model(), subset(demo_id_set(), range(20)), {"faces": subset(demo_ood_sets()["faces"], range(10))},
             SweepSettings(methods=["msp"], chunk_size=16), use_cache=False,
             progress=lambda fraction, message: reports.append((fraction, message)))
    assert reports[0] == (0.0, "starting: 0 of 30 images from the run cache")
    clock = Clock()
    eta = EtaEstimate(clock=clock)
    for fraction, _ in reports[:2]:  # the start and the first chunk
        clock.now += 1
        eta.update(fraction)
    assert eta.seconds_left() is not None


def test_a_bar_that_restarts_gets_a_fresh_estimate():
    """The report's bar restarts for each model: after one model's 100 %, the next model's
    progress must give an estimate again (it was stuck at 0 s, so no ETA was shown)."""
    clock = iter([0.0, 10.0, 20.0, 30.0, 40.0, 40.0]).__next__
    eta = EtaEstimate(clock=clock)
    eta.update(0.0)
    eta.update(1.0)  # the first model is done
    eta.update(0.0)  # the next one starts
    eta.update(0.1)
    eta.update(0.2)  # a tenth every 10 s: 80 s left
    assert eta.seconds_left() == pytest.approx(80.0)
