"""The model catalogue: every model :func:`gaia_viz.models.load_model` builds, asked by name.

As timm's registry does: each family module registers itself (:func:`register_family`) with
its entries (:class:`ModelInfo`: the name, what it is, its default preset, its classes, where
its pretrained weights are, the GAIA layers the family declares) and its loader. The loader,
the CLI's help, the README's model table and the app's sidebar all read it
(:func:`list_models`, :func:`model_info`, :func:`model_families`) instead of re-deriving
names, depths and file names.

A family is closed (a fixed list of names: the demo CNN, the CIFAR ResNets, ...) or open:
torchvision's and timm's models are one entry each, named by a pattern (``tv:<name>``,
``timm:<name>``), and the family resolves a concrete name (``timm:resnet50.a1_in1k``).

Families register in the import order of :mod:`gaia_viz.models`, which is the catalogue's
order (and the sidebar's). This module needs no torch: it holds data and callables only.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from ..errors import ModelError

# where a model's pretrained weights come from (ModelInfo.weights), as the README's table says it
WEIGHTS = {
    "bundled": "shipped with gaia-viz",
    "shared": "the shared data folder",
    "hub": "the local hub cache (downloaded only when allowed)",
    "none": "none: pass a checkpoint, or pretrained=False",
}


@dataclass(frozen=True)
class ModelInfo:
    """One catalogue entry.

    ``name`` is what :func:`gaia_viz.models.load_model` takes (for an open family's entry its
    pattern, ``timm:<name>``; :func:`model_info` of a concrete name fills it in, ``arch`` then
    being the name the family's builder takes). ``kind`` names the family. ``num_classes`` is
    the head of the default weights (None: as the pretrained weights have it).
    ``checkpoint_file`` is the shared pretrained checkpoint relative to the data root (weights
    ``"shared"``). ``gaia_defaults`` are the GAIA layers the model declares
    (a :class:`gaia_viz.gaia.GaiaLayerDefaults`; None: the generic rules of
    :mod:`gaia_viz.gaia.layout`). ``presets_by_classes`` overrides ``default_preset`` for a
    head size (GAIA's ResNets on CIFAR-100).
    """

    name: str
    kind: str
    title: str
    description: str
    default_preset: str
    num_classes: int | None
    weights: str
    checkpoint_file: str | None = None
    depth: int | None = None
    gaia_defaults: object | None = None
    presets_by_classes: tuple[tuple[int, str], ...] = ()
    arch: str = ""

    def __post_init__(self):
        if self.weights not in WEIGHTS:
            raise ValueError(f"{self.name}: weights must be one of {', '.join(WEIGHTS)}, not {self.weights!r}")
        if (self.weights == "shared") != (self.checkpoint_file is not None):
            raise ValueError(f"{self.name}: shared weights need a checkpoint_file, and only they have one")
        if not self.arch:
            object.__setattr__(self, "arch", self.name)

    @property
    def has_pretrained(self) -> bool:
        """Whether it has weights without a checkpoint of the user's (bundled, shared or hub)."""
        return self.weights != "none"

    def preset(self, num_classes: int | None = None) -> str:
        """The preprocessing preset (a key of ``gaia_viz.data.presets.PRESETS``) for a head of
        ``num_classes`` (None: the default weights')."""
        return dict(self.presets_by_classes).get(num_classes, self.default_preset)


@dataclass(frozen=True)
class ModelFamily:
    """A registered family: its ``models`` (an open family: one entry, its pattern), the
    ``loader(info, request)`` that builds one (``(model, state_dict to load or None)``), and
    for an open family ``resolve(name)`` (the builder's name, None when the name is not the
    family's, ModelError when it carries the family's prefix but names no model) and
    ``expand()`` (every concrete name). ``suggest``: the expanded names are offered as close
    matches of an unknown name (torchvision's, which need no prefix)."""

    kind: str
    label: str
    loader: Callable
    models: tuple[ModelInfo, ...]
    resolve: Callable[[str], str | None] | None = None
    expand: Callable[[], Iterable[str]] | None = None
    suggest: bool = False

    @property
    def is_open(self) -> bool:
        return self.resolve is not None


_FAMILIES: dict[str, ModelFamily] = {}
_BY_NAME: dict[str, ModelInfo] = {}


def register_family(kind: str, label: str, models: Iterable[ModelInfo], *,
                    resolve: Callable[[str], str | None] | None = None,
                    expand: Callable[[], Iterable[str]] | None = None, suggest: bool = False):
    """Decorator of a family's loader ``loader(info, request) -> (model, state_dict | None)``
    (``request``: a :class:`gaia_viz.models.zoo.LoadRequest`): registers the family ``kind``
    (``label``: how the app names it) with its entries. An open family passes ``resolve`` and
    ``expand`` and one entry, its pattern."""
    models = tuple(models)

    def decorate(loader: Callable) -> Callable:
        if kind in _FAMILIES:
            raise ValueError(f"model family {kind!r} is registered twice")
        if any(info.kind != kind for info in models) or not models:
            raise ValueError(f"family {kind!r}: every entry must have kind {kind!r} (and there must be one)")
        if resolve is not None and len(models) != 1:
            raise ValueError(f"open family {kind!r} has one entry, its pattern")
        taken = [info.name for info in models if info.name in _BY_NAME]
        if taken:
            raise ValueError(f"family {kind!r}: {', '.join(taken)} already registered")
        _FAMILIES[kind] = ModelFamily(kind, label, loader, models, resolve, expand, suggest)
        if resolve is None:
            _BY_NAME.update((info.name, info) for info in models)
        return loader

    return decorate


def model_families() -> list[ModelFamily]:
    """Every family, in the catalogue's order."""
    return list(_FAMILIES.values())


def model_family(kind: str) -> ModelFamily:
    """The family ``kind``; ModelError naming the known kinds otherwise."""
    if kind not in _FAMILIES:
        raise ModelError(f"unknown model family {kind!r}; the families are {', '.join(_FAMILIES)}")
    return _FAMILIES[kind]


def list_models(kind: str | None = None, expand: bool = False) -> list[str]:
    """The catalogue's names (of family ``kind``, or all), in its order; an open family by its
    pattern (``tv:<name>``, ``timm:<name>``), or with ``expand`` by every concrete name
    (torchvision's without the optional ``tv:``, timm's as ``timm:NAME``; a pretrained tag
    may be added to those: ``timm:resnet50.a1_in1k``)."""
    families = [model_family(kind)] if kind is not None else model_families()
    names: list[str] = []
    for family in families:
        if family.is_open and expand:
            names += list(family.expand())
        else:
            names += [info.name for info in family.models]
    return names


def model_info(name: str) -> ModelInfo:
    """The entry of ``name`` (a concrete name of an open family resolved by it); ModelError
    naming close matches when no family knows it."""
    if not isinstance(name, str):
        raise ModelError(f"a model name is text, not {type(name).__name__}")
    name = name.strip()
    if name in _BY_NAME:
        return _BY_NAME[name]
    for family in model_families():
        if family.is_open and (arch := family.resolve(name)) is not None:
            return replace(family.models[0], name=name, arch=arch)
    candidates = list(_BY_NAME)
    for family in model_families():
        if family.suggest:
            candidates += list(family.expand())
    close = difflib.get_close_matches(name, candidates, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ModelError(f"unknown model {name!r}.{hint} See gaia_viz.models.list_models().")


def checkpoint_files(kind: str | None = None) -> list[str]:
    """The shared checkpoints (relative to the data root) of family ``kind``, or of all."""
    return [info.checkpoint_file for family in ([model_family(kind)] if kind else model_families())
            for info in family.models if info.checkpoint_file]


def default_preset(name: str, num_classes: int | None = None) -> str:
    """The preprocessing preset model ``name`` expects (a key of ``gaia_viz.data.presets.PRESETS``)
    for a head of ``num_classes``: :meth:`ModelInfo.preset` of its entry (the presets'
    reasons are in the family modules and the README's model table)."""
    return model_info(name).preset(num_classes)


# --------------------------------------------------------------------------- what others print


def catalogue_summary() -> str:
    """The names, family by family, for the CLI's ``--model`` help."""
    return "; ".join(", ".join(list_models(family.kind)) for family in model_families())


def _weights_cell(info: ModelInfo) -> str:
    if info.weights == "shared":
        return f"`<data root>/{info.checkpoint_file}`"
    return WEIGHTS[info.weights]


def _gaia_cell(info: ModelInfo) -> str:
    defaults = info.gaia_defaults
    if defaults is None:
        return "generic rules"
    return (f"declared: {len(defaults.zero_layers)} GAIA-Z, {len(defaults.inner_layers)} inner, "
            f"head `{defaults.head_layer}`")


def catalogue_markdown() -> str:
    """The README's model table (one row per :func:`list_models` entry), generated here so
    the two cannot disagree (tests/test_catalogue.py compares them)."""
    lines = ["| name | what it is | default preset | classes | pretrained weights | GAIA layers |",
             "|---|---|---|---|---|---|"]
    for info in (info for family in model_families() for info in family.models):
        presets = f"`{info.default_preset}`" + "".join(f", `{p}` for {n} classes" for n, p in info.presets_by_classes)
        classes = str(info.num_classes) if info.num_classes is not None else "of the weights"
        lines.append(f"| `{info.name}` | {info.description} | {presets} | {classes} | {_weights_cell(info)} "
                     f"| {_gaia_cell(info)} |")
    return "\n".join(lines)


__all__ = ["ModelFamily", "ModelInfo", "WEIGHTS", "catalogue_markdown", "catalogue_summary", "checkpoint_files",
           "default_preset",
           "list_models", "model_families", "model_family", "model_info", "register_family"]
