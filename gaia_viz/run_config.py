"""The record of how an evaluation was made (:class:`RunConfig`), one name per fact.

It travels with every result: ``metrics.json``'s ``"config"``, the app's downloads, the
exported threshold. The caller describes what only it knows (how the model and the data
were named: ``model_name``, ``checkpoint``, ``sources``, ...); :func:`gaia_viz.sweep.evaluate`
fills in what it determined (fingerprints, methods and their parameters, layers, OOD
policies, ...). :meth:`RunConfig.to_dict` is the JSON form, :meth:`RunConfig.from_dict` reads
it back (unknown keys are kept in ``extra``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class RunConfig:
    """How an evaluation was made.

    Described by the caller:
      ``model_name`` (as passed to :func:`gaia_viz.models.load_model`), ``checkpoint`` (a
      path, ``"upload:<name>"`` or None for built-in weights), ``checkpoint_digest``,
      ``preset`` (input preprocessing), ``sources`` (dataset name -> spec string of
      :func:`gaia_viz.data.sources.open_source`), ``fit_source``, ``data_root``,
      ``max_samples`` (the per-set cap, None = all), ``data`` (a label of the data choice).
    Determined by the sweep:
      ``model`` (fingerprint of architecture and weights), ``methods`` (those scored),
      ``left_out`` (method -> reason, for chosen methods that cannot run on this model or
      data: no classifier head, no pooled features, GAIA on a token model, a fit that fails
      on the fit set, ...; the others still run), ``method_params``
      (each method's parameters, ODIN's ``input_std`` included), ``layers``
      (``{"zero", "inner", "head"}``: GAIA-Z layers, GAIA-A inner layers and head layer),
      ``fit_set`` (fingerprint of the fit data, when a method fits), ``datasets``
      (fingerprints), ``id_set``, ``ood_sets``, ``ood_policies`` (dataset name -> resize
      policy, ``"center-crop"`` or ``"resize"``), ``batch_size``, ``chunk_size``, ``device``,
      ``world_size`` (processes that scored, 1 without torchrun), ``workers`` (loader
      processes), ``skipped`` (dataset name -> ``[[path, reason], ...]`` of unreadable files
      left out), ``notes`` (warnings about the numbers, one per cause: GAIA-Z without exact
      zeros or with all-zero gradients, non-finite scores, the convolution fallback, an ID
      accuracy at chance),
      ``timing`` (seconds and images/s of loading and of scoring).
    """

    model_name: str | None = None
    checkpoint: str | None = None
    checkpoint_digest: str | None = None
    preset: str | None = None
    sources: dict = field(default_factory=dict)
    fit_source: str | None = None
    data_root: str | None = None
    max_samples: int | None = None
    data: str | None = None
    model: str | None = None
    methods: list = field(default_factory=list)
    left_out: dict = field(default_factory=dict)
    method_params: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)
    fit_set: dict | None = None
    datasets: dict = field(default_factory=dict)
    id_set: str | None = None
    ood_sets: list = field(default_factory=list)
    ood_policies: dict = field(default_factory=dict)
    batch_size: int | None = None
    chunk_size: int | None = None
    device: str | None = None
    world_size: int = 1
    workers: int = 0
    skipped: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    timing: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def ood_policy_of(self, dataset: str) -> str | None:
        """The resize policy ``dataset`` was scored with (None when unknown)."""
        return self.ood_policies.get(dataset)

    def to_dict(self) -> dict:
        data = asdict(self)
        extra = data.pop("extra")
        return {**data, **extra}

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})


__all__ = ["RunConfig"]
