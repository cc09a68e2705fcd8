"""The set-up a session works with (:class:`Setup`), its identity, and set-up errors.

The sidebar (:mod:`gaia_viz.app.sidebar`) builds the Setup on every run from its widgets;
pages read it from ``st.session_state["setup"]`` (:mod:`gaia_viz.app.state`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


__all__ = ["Setup", "SetupError", "SetupFix"]
