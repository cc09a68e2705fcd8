"""What every page does first: get the set-up (or show why there is none), get the scores it
needs (from the store, or a background job with visible progress), and show GAIA numbers
with the layer subset they use."""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import Mapping, Sequence

import streamlit as st

from gaia_viz.app import jobs
from gaia_viz.app.keys import AUTO_RUN, CANCELLED, DISMISSED_RUNS, SEEN_FINISHED_RUNS, SETUP, SETUP_ERRORS
from gaia_viz.app.links import view_query
from gaia_viz.app.markdown import escape_markdown
from gaia_viz.app.setup import Setup, SetupError, show_error
from gaia_viz.app.state import selection, session_token, setup_query
from gaia_viz.errors import GaiaVizError
from gaia_viz.gaia.families import GAIA_FAMILIES

# A strut taller than a fraction: Streamlit's formula box hides what overflows it, and at
# 1x device pixels it cut the top off every \frac numerator on How GAIA works.
LATEX_STRUT = r"\rule[-0.7em]{0pt}{2.1em}"


def link_query(**changes) -> dict[str, str]:
    """The whole view as query-string parameters: the sidebar's set-up
    (:func:`gaia_viz.app.links.setup_query`) and the Selection with ``changes``. The address
    bar holds it, and every in-app link carries it (:func:`page_link`), so a link opens the
    same view wherever it is followed."""
    return {**setup_query(), **view_query(replace(selection(), **changes))}


def page_link(page: str, label: str, target=None, changes: Mapping | None = None, **kwargs):
    """``st.page_link`` to ``page`` carrying the whole view (:func:`link_query`, with the
    Selection ``changes``, e.g. ``{"image": ("faces", 3)}``). A link, not a button calling
    ``st.switch_page``: Streamlit drops every widget's state (the sidebar's set-up included)
    when a script switches the page, while a followed link keeps it, as the sidebar's
    navigation does; the target page reads the link's selection
    (:func:`gaia_viz.app.state.followed_link`)."""
    from gaia_viz.settings import REPO_ROOT

    return (target or st).page_link(str(REPO_ROOT / page), label=label,
                                    query_params=link_query(**dict(changes or {})), **kwargs)


@contextlib.contextmanager
def user_errors(context: str = ""):
    """Show a :class:`GaiaVizError` raised in the block as ``st.error`` (prefixed by ``context``)
    and go on with the page: one broken chart does not take the others down."""
    try:
        yield
    except GaiaVizError as exc:
        st.error(escape_markdown(f"{context}{exc}"))


def formula(tex: str) -> None:
    """``st.latex(tex)`` with :data:`LATEX_STRUT`, so fractions are drawn whole."""
    st.latex(tex + LATEX_STRUT)


def require_setup() -> Setup:
    """The Setup of this run; otherwise the set-up errors, with the controls that fix them,
    in the page's main panel, and ``st.stop()``."""
    setup = st.session_state.get(SETUP)
    if setup is None:
        errors = st.session_state.get(SETUP_ERRORS) or [SetupError("the set-up in the sidebar is incomplete")]
        st.subheader("The set-up needs attention")
        for error in errors:
            show_error(error, place="main")
        st.caption("Fix it here or in the sidebar; the page updates at once.")
        st.stop()
    return setup


def _cancelled(setup: Setup) -> bool:
    return setup.score_key in st.session_state.get(CANCELLED, set())


def start_run(setup: Setup, methods: Sequence[str]) -> None:
    """Start (or join) the background evaluation of ``methods`` for ``setup`` and rerun the
    page, so its progress shows at the top (:func:`render_status`)."""
    st.session_state.setdefault(CANCELLED, set()).discard(setup.score_key)
    jobs.JOBS.submit(setup, methods, session_token())
    st.rerun()


def scores(setup: Setup, methods: Sequence[str], auto: bool | None = None):
    """The set-up's evaluation holding ``methods`` (possibly more), or what there is so far.

    When methods are missing: a run is started at once when ``auto`` (default: the demo, or
    a session opened with a link to a view) unless this session cancelled it; otherwise a
    Run button. Its progress shows at the top of every page (:func:`render_status`).
    Returns the stored evaluation (None when nothing is scored yet) and the missing methods.
    """
    evaluation = jobs.STORE.get(setup.score_key)
    left_out = evaluation.config.left_out if evaluation is not None else {}
    missing = [m for m in methods if (evaluation is None or m not in evaluation.methods) and m not in left_out]
    if not missing:
        return evaluation, []
    joined, new = jobs.JOBS.join(setup.score_key, missing, session_token(), wait=not _cancelled(setup))
    if joined is not None:
        if new:  # joined mid-run (another session's run, or this one before a reload): rerun so
            st.rerun()  # the status at the top shows its progress and polls until it ends
        return evaluation, missing
    job = jobs.JOBS.job(setup.score_key)
    if job is not None and job.status == "failed" and job.covers(missing):
        st.error(escape_markdown(f"The last run failed: {job.error}."))
    if auto is None:
        auto = setup.is_demo or bool(st.session_state.get(AUTO_RUN))
    if auto and not _cancelled(setup) and not (job is not None and job.status == "failed"):
        start_run(setup, missing)
    n_images = len(setup.id_set) + sum(len(s) for s in setup.ood_sets.values())
    if st.button(f"Run evaluation ({', '.join(missing)})", type="primary", key=f"run::{setup.score_key}"):
        start_run(setup, missing)
    st.info(f"Press **Run evaluation** to score {n_images:,} images with {', '.join(missing)} on {setup.device} "
            "(it keeps running when you open another page; finished chunks are cached on disk, so a "
            "cancelled run resumes).")
    return evaluation, missing


def require_scores(setup: Setup, methods: Sequence[str], auto: bool | None = None):
    """:func:`scores`, and ``st.stop()`` until every method in ``methods`` is scored."""
    evaluation, missing = scores(setup, methods, auto)
    if missing:
        st.caption(f"Waiting for {', '.join(missing)}: the progress is shown at the top of the page.")
        st.stop()
    return evaluation


def _cancel(job: jobs.Job) -> None:
    jobs.JOBS.cancel(job, session_token())
    st.session_state.setdefault(CANCELLED, set()).add(job.key)


def _dismiss(job: jobs.Job) -> None:
    st.session_state.setdefault(DISMISSED_RUNS, set()).add(id(job))


# How often a running job's status is redrawn: also how late, on average half of it, a page learns
# that the run ended (it was 1 s: on average 0.5 s of every cold open was this wait).
STATUS_POLL_S = 0.5


def render_status() -> None:
    """This session's runs at the top of the page: progress with ETA and Cancel while running,
    then the outcome. Refreshes itself every STATUS_POLL_S while a run is active and reruns the
    whole page when one finishes, so every page shows the new scores."""
    token = session_token()
    dismissed = st.session_state.setdefault(DISMISSED_RUNS, set())
    mine = [job for job in jobs.JOBS.for_session(token) if id(job) not in dismissed]
    if not mine:
        return
    running = any(job.running for job in mine)

    @st.fragment(run_every=STATUS_POLL_S if running else None)
    def status():
        seen = st.session_state.setdefault(SEEN_FINISHED_RUNS, set())
        session_jobs = jobs.JOBS.for_session(token)
        for job in session_jobs:
            if not job.running and id(job) not in seen:
                seen.add(id(job))
                if running:  # it ended while this fragment was refreshing: show it on the whole page
                    st.rerun(scope="app")
        for job in shown_jobs(session_jobs, st.session_state.get(SETUP), st.session_state.get(DISMISSED_RUNS, set())):
            if job.running:
                left, right = st.columns([6, 1])
                joined = (f" (joined the run in progress, started {time.monotonic() - job.started:.0f} s ago)"
                          if token in job.joined else "")
                restarted = " (restarted to add methods; finished chunks are reused)" if job.restarted else ""
                left.progress(job.fraction,
                              text=escape_markdown(f"{job.label}: {job.status_text()}{joined}{restarted}"))
                right.button("Cancel", key=f"cancel::{id(job)}", on_click=_cancel, args=(job,),
                             help="Stops after the current chunk; finished chunks are kept, so the next run resumes.")
                continue
            if job.status == "failed":
                st.error(escape_markdown(f"{job.label}: {job.error}."))
            elif job.status == "cancelled":
                st.warning(escape_markdown(f"{job.label}: cancelled ({job.error}). Run it again to resume."))
            else:
                st.success(escape_markdown(f"{job.label}: {job.message}"))
            st.button("Dismiss", key=f"dismiss::{id(job)}", on_click=_dismiss, args=(job,))

    status()


def shown_jobs(session_jobs: Sequence[jobs.Job], setup: Setup | None, dismissed=frozenset()) -> list[jobs.Job]:
    """The runs worth a banner: every running one (its progress and Cancel), and of the ended
    ones only the current set-up's outcome. The "done" of another set-up (the demo's, before a
    link's set-up was opened) is not news on this page, and banners stacked above the page
    pushed it down (issue 22)."""
    key = setup.score_key if setup is not None else None
    return [job for job in session_jobs if id(job) not in dismissed and (job.running or job.key == key)]


RANDOM_WEIGHTS_NOTE = ("{model} has random weights (no pretrained weights were loaded): its accuracy and every "
                       "score here describe an untrained network, not a detector, and a bold 'best' only ranks "
                       "untrained scores. Load pretrained weights or a checkpoint for meaningful numbers.")


def warn_about_numbers(evaluation, methods) -> None:
    """Next to the numbers of ``methods``: that the model's weights are random, when they are
    (:data:`RANDOM_WEIGHTS_NOTE`), and what the sweep noted about them (GAIA-Z on a model
    whose gradients hold almost no exact zeros, :func:`gaia_viz.sweep.gaia_z_note`; scores
    that are not finite; any other note naming the method, :func:`gaia_viz.notes.notes_about`;
    methods this model cannot feed, left out with the reason), each note once."""
    from gaia_viz.notes import notes_about
    from gaia_viz.sweep import METHOD_LABELS, gaia_z_note

    setup = st.session_state.get(SETUP)
    if setup is not None and setup.random_weights:
        st.warning(escape_markdown(RANDOM_WEIGHTS_NOTE.format(model=setup.model_name)))
    shown = set()
    if "gaia_z" in methods:
        note = gaia_z_note(evaluation)
        if note:
            st.warning(escape_markdown(note))
            shown.add(note)
    for method in methods:  # the other notes about these methods (non-finite scores, layer fallbacks), once each
        for note in notes_about(evaluation.config.notes, METHOD_LABELS.get(method, method)):
            if note not in shown:
                st.warning(escape_markdown(note))
                shown.add(note)
    for method in methods:
        reason = evaluation.config.left_out.get(method)
        if reason:
            st.warning(escape_markdown(f"{METHOD_LABELS.get(method, method)} is left out for this model: {reason}"))


def warn_about_accuracy(evaluation) -> None:
    """Next to the ID accuracy: the sweep's note when it is no better than chance (a label
    order that is not the model's, :data:`gaia_viz.sweep.ACCURACY_NOTE`)."""
    from gaia_viz.sweep import ACCURACY_NOTE

    for note in evaluation.config.notes:
        if note.startswith(ACCURACY_NOTE):
            st.warning(escape_markdown(note))


def layers_caption(evaluation, method: str) -> str:
    """"GAIA-Z on 2 of 3 layers: bn2, bn3" (or "... on all 3 layers") for the Selection."""
    fam = GAIA_FAMILIES[method]
    available = fam.layers(evaluation)
    chosen = effective_layers(evaluation, method)
    if chosen is None:
        return f"{fam.label} on all {len(available)} layers"
    return f"{fam.label} on {len(chosen)} of {len(available)} layers: {', '.join(chosen)}"


def effective_layers(evaluation, method: str) -> list[str] | None:
    """The Selection's layer subset for ``method`` that applies to ``evaluation`` (None = all)."""
    from gaia_viz.app.state import checked_layers

    if method not in GAIA_FAMILIES:
        return None
    fam = GAIA_FAMILIES[method]
    chosen = checked_layers(selection().layers_for(method), fam.layers(evaluation), fam.label)
    return list(chosen) if chosen is not None else None


__all__ = ["LATEX_STRUT", "effective_layers", "formula", "layers_caption", "link_query", "page_link", "render_status",
           "require_scores", "require_setup", "scores", "shown_jobs", "start_run", "user_errors", "warn_about_accuracy",
           "warn_about_numbers"]
