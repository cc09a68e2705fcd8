"""The set-up a session works with (:class:`Setup`), its identity, and set-up errors with
their fixes (:class:`SetupError`, :func:`setup_error`, drawn by :func:`show_error`).

The sidebar (:mod:`gaia_viz.app.sidebar`) builds the Setup on every run from its widgets;
pages read it from ``st.session_state[keys.SETUP]`` (:mod:`gaia_viz.app.state`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import streamlit as st

from gaia_viz.app.markdown import escape_markdown
from gaia_viz.run_config import RunConfig


@dataclass
class Setup:
    """Everything the sidebar decided: a loaded model and opened image sets.

    ``checkpoint``: the server path of the weights, ``"upload:<file name>"`` for an upload, or
    None for built-in weights. ``ood_policy`` is ``"center-crop"``, ``"resize"`` or ``"both"``
    (one OOD set per policy); each OOD set's own policy is ``ood_sets[name].ood_policy``.
    ``sources`` maps every dataset name to the spec string it was opened from
    (:func:`gaia_viz.data.sources.open_source`).
    """

    model_name: str
    model: object
    preset: str
    ood_policy: str
    device: str
    batch_size: int
    id_set: object
    ood_sets: dict
    fit_set: object | None
    checkpoint: str | None
    data_root: str | None
    max_samples: int | None = None
    data_label: str = "demo"
    sources: dict = field(default_factory=dict)
    checkpoint_digest: str | None = None
    random_weights: bool = False  # an untrained model ("Random weights"): its numbers mean nothing as a detector

    @property
    def is_demo(self) -> bool:
        return self.model_name == "demo" and self.data_label == "demo"

    @property
    def image_sets(self) -> dict:
        """Every scored set, ID first: ``{name: ImageSet}``."""
        return {self.id_set.name: self.id_set, **self.ood_sets}

    def ood_policy_of(self, ood_name: str) -> str:
        return self.ood_sets[ood_name].ood_policy

    def run_config(self) -> RunConfig:
        """What a result records about how this set-up was made."""
        return RunConfig(
            model_name=self.model_name, checkpoint=self.checkpoint, checkpoint_digest=self.checkpoint_digest,
            preset=self.preset, sources=dict(self.sources), data_root=self.data_root,
            max_samples=self.max_samples, data=self.data_label,
            fit_source=self.sources.get(self.fit_set.name) if self.fit_set is not None else None,
        )

    @property
    def score_key(self) -> str:
        """The identity of the scores this set-up gives (:func:`gaia_viz.sweep.identity.setup_key`:
        weights, preprocessing and files; not the batch size, the device or the data root)."""
        from gaia_viz.sweep.identity import setup_key  # here: importing the sweep loads torch

        return setup_key(self.model_name, self.checkpoint_digest, self.preset, self.image_sets, self.fit_set,
                         self.sources, self.data_root)


def build_setup(model, model_values: dict, preset: str, data_values: dict, opened: tuple, device: str,
                batch_size: int, data_root: str, max_samples: int | None) -> Setup:
    """The Setup of what the sidebar named and loaded: ``model_values`` of its model widgets
    (name, checkpoint, digest, pretrained), ``data_values`` of its data widgets (label,
    policy) and the ``opened`` sets (:func:`gaia_viz.app.loaders.open_sets`)."""
    id_set, ood_sets, fit_set, sources = opened
    return Setup(
        model_name=model_values["name"], model=model, preset=preset, ood_policy=data_values["policy"],
        device=device, batch_size=batch_size, id_set=id_set, ood_sets=ood_sets, fit_set=fit_set,
        checkpoint=model_values["checkpoint"], data_root=data_root or None, max_samples=max_samples,
        data_label=data_values["label"], sources=sources, checkpoint_digest=model_values["digest"],
        random_weights=not model_values.get("pretrained", True) and model_values["checkpoint"] is None,
    )


@dataclass(frozen=True)
class SetupFix:
    """A control that fixes a set-up error: a button ``label`` that sets sidebar widget
    ``state`` (``{widget key: value}``)."""

    label: str
    state: tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class SetupError:
    """A set-up problem: its ``message``, the sidebar ``widget`` it belongs to (shown beside
    it), an optional ``fix`` control and ``links`` (URLs shown as real links)."""

    message: str
    widget: str | None = None
    fix: SetupFix | None = None
    links: tuple[str, ...] = ()


_URL = re.compile(r"https?://[^\s)]+")


def setup_error(message: str, widget: str | None = None, fix: SetupFix | None = None) -> SetupError:
    """A :class:`SetupError` whose ``links`` are the URLs its message names."""
    links = tuple(dict.fromkeys(url.rstrip(".,;") for url in _URL.findall(message)))
    return SetupError(message, widget, fix, links)


def show_error(error: SetupError, place: str = "sidebar") -> None:
    """The error as ``st.error`` (escaped), its links as real links, its fix as a button
    (``place`` names where it is drawn, to keep the button's key unique)."""
    st.error(escape_markdown(error.message))
    for url in error.links:
        st.markdown(f"Link: [{escape_markdown(url)}]({url})")
    if error.fix is not None:
        st.button(error.fix.label, key=f"fix::{place}::{error.widget}::{error.fix.label}",
                  on_click=apply_fix, args=(error.fix,))


def apply_fix(fix: SetupFix) -> None:
    """Set the sidebar widgets ``fix`` names (the button's callback, before the next run)."""
    for key, value in fix.state:
        st.session_state[key] = value


__all__ = ["Setup", "SetupError", "SetupFix", "apply_fix", "build_setup", "setup_error", "show_error"]
