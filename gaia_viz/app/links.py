"""The link, both ways, as plain functions of dicts (no Streamlit here): the Selection
(:func:`view_query` / :func:`selection_from_query`) and the sidebar's set-up
(:func:`setup_query` / :func:`seeded_widgets`) to query-string parameters and back. A bad
value in a link is never an error: it becomes a warning naming it (shortened,
:func:`shown`) and falls back to the default; every value read is bounded
(:data:`MAX_LINK_CHARS`, :data:`MAX_DIGITS`).

Selection parameters: ``methods`` (comma list of method ids), ``layers`` / ``inner_layers`` (GAIA-Z layers / GAIA-A
inner layers, names as in ``named_modules()``), ``method`` (the thresholded one), ``tpr``
(0-1) or ``threshold``, ``ood`` (the OOD set a page compares with), ``image`` (``set:index``),
``hist`` (``one``: one OOD set at a time) and ``hist_scale`` (``count`` or ``log``) of the score
histograms, Inspect's ``attribution`` (method id), ``target`` (class index), ``attr_view``
(``abs``: |value| of a signed method) and ``attr_params`` (``method.param:value``, comma
separated, see :data:`gaia_viz.attribution.CONTROLS`), the data map's ``map_color`` (``set``, a
method id or ``agree``) and ``map_compare`` (the method ``agree`` compares the thresholded one
with), Inspect's ``inspect_layer`` (the layer of "GAIA at one layer"). Set-up parameters:
:data:`SETUP_QUERY_KEYS`. :mod:`gaia_viz.app.state` reads and writes the address bar with them.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Mapping, Sequence

from gaia_viz.app import keys
from gaia_viz.app.catalogue import (BIT_NAMES, BOTH_POLICIES, CIFAR_DEPTHS, CIFAR_NAMES, GAIA_NAMES, DATA_KINDS, DEFAULT_MAX_SAMPLES,
                                    DEFAULT_POLICY, DENSENET_NAME)
from gaia_viz.app.selection import ATTRIBUTION_VIEWS, HISTOGRAM_SCALES, HISTOGRAM_SETS, MAP_AGREEMENT, TPR_RANGE, Selection
from gaia_viz.data.presets import OOD_POLICIES, PRESETS
from gaia_viz.errors import GaiaVizError
from gaia_viz.paths import check_text, echo

VIEW_KEYS = ("methods", "layers", "inner_layers", "method", "tpr", "threshold", "ood", "image", "hist", "hist_scale",
             "attribution", "target", "attr_view", "attr_params", "map_color", "map_compare", "inspect_layer")
ECHO_CHARS = 40  # a link value in a warning: at most this many characters, then '…'
MAX_LINK_CHARS = 4096  # the longest link value read at all (a list of paths included)
MAX_DIGITS = 9  # the longest image index, class index or sample count a link may hold
SETUP_QUERY_KEYS = ("model", "checkpoint", "data", "ood_sets", "id", "fit", "preset", "policy", "samples")
_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")  # a torchvision or timm model name (a timm tag included)


def _split(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()]


def shown(value) -> str:
    """A link value as a warning names it: quoted, control characters escaped, at most
    :data:`ECHO_CHARS` characters and then '…' (a 20,000-character value is not echoed)."""
    return f"'{echo(value, ECHO_CHARS + 1)}'"


def whole_number(text, digits: int = MAX_DIGITS) -> int | None:
    """``text`` as a non-negative integer of at most ``digits`` ASCII digits, else None. Python
    refuses to parse integers of more than 4,300 digits (and ``str.isdigit`` accepts '²')."""
    text = str(text).strip()
    return int(text) if re.fullmatch(rf"[0-9]{{1,{digits}}}", text) else None


def readable_params(params: Mapping[str, str], names: Sequence[str], warnings: list[str]) -> dict[str, str]:
    """The link parameters among ``names`` that may be read at all: a value longer than
    :data:`MAX_LINK_CHARS` or holding a control character is refused, named once in ``warnings``."""
    kept = {}
    for key in names:
        if key not in params:
            continue
        value = str(params[key])
        if len(value) > MAX_LINK_CHARS:
            warnings.append(f"{key} in the link is {len(value):,} characters long (at most {MAX_LINK_CHARS:,}): "
                            f"{shown(value)} was ignored")
            continue
        try:
            kept[key] = check_text(value, key)
        except GaiaVizError:
            warnings.append(f"{key}={shown(value)} in the link holds a control character: ignored")
    return kept


def shown_names(names: Sequence[str], limit: int = 8) -> str:
    """Names for a warning: each shortened, at most ``limit`` of them."""
    listed = ", ".join(shown(n) for n in names[:limit])
    return listed + (f" and {len(names) - limit} more" if len(names) > limit else "")


def selection_from_query(params: Mapping[str, str], known_methods: Sequence[str],
                         base: Selection | None = None) -> tuple[Selection, list[str]]:
    """The Selection a link asks for, and one warning for every value that was refused (its
    value shortened, :func:`shown`); a refused value falls back to ``base`` (the defaults).

    Layers are checked later, against the evaluated model (:func:`checked_layers`), and the
    OOD set and image against the set-up (:func:`check_link_against`)."""
    chosen = base or Selection()
    warnings: list[str] = []
    params = readable_params(params, VIEW_KEYS, warnings)
    changes: dict = {}
    if "methods" in params:
        names = list(dict.fromkeys(_split(params["methods"])))
        unknown = [m for m in names if m not in known_methods]
        good = [m for m in names if m in known_methods]
        if unknown:
            warnings.append(f"unknown method(s) in the link: {shown_names(unknown)} (known: {', '.join(known_methods)})")
        if good:
            changes["methods"] = tuple(good)
    if "method" in params:
        if params["method"] in known_methods:
            changes["method"] = params["method"]
        else:
            warnings.append(f"unknown method in the link: {shown(params['method'])}; thresholding {chosen.method}")
    for key, attr in (("layers", "zero_layers"), ("inner_layers", "inner_layers")):
        if key in params:
            names = _split(params[key])
            changes[attr] = tuple(dict.fromkeys(names)) if names else None
    if "tpr" in params:
        try:
            tpr = float(params["tpr"])
        except ValueError:
            tpr = math.nan
        if TPR_RANGE[0] <= tpr <= TPR_RANGE[1]:
            changes.update(tpr=tpr, threshold_mode="tpr")
        else:
            warnings.append(f"tpr={shown(params['tpr'])} in the link is not a fraction between "
                            f"{TPR_RANGE[0]} and {TPR_RANGE[1]}; using {chosen.tpr}")
    if "threshold" in params and "tpr" not in params:
        try:
            value = float(params["threshold"])
            if not math.isfinite(value):
                raise ValueError
            changes.update(threshold=value, threshold_mode="score")
        except ValueError:
            warnings.append(f"threshold={shown(params['threshold'])} in the link is not a number; using the TPR")
    if "ood" in params and params["ood"].strip():
        changes["ood_set"] = params["ood"].strip()
    if "image" in params:
        name, sep, index = params["image"].rpartition(":")
        if sep and name and whole_number(index) is not None:
            changes["image"] = (name, whole_number(index))
        else:
            warnings.append(f"image={shown(params['image'])} in the link is not <data set>:<index> "
                            f"(an index of at most {MAX_DIGITS} digits)")
    for key, attr, allowed in (("hist", "histogram_sets", HISTOGRAM_SETS), ("hist_scale", "histogram_scale", HISTOGRAM_SCALES),
                               ("attr_view", "attribution_view", ATTRIBUTION_VIEWS)):
        if key in params:
            if params[key] in allowed:
                changes[attr] = params[key]
            else:
                warnings.append(f"{key}={shown(params[key])} in the link is not one of {', '.join(allowed)}")
    changes.update(_attribution_from_query(params, warnings))
    if "map_color" in params:
        if params["map_color"] in ("set", MAP_AGREEMENT, *known_methods):
            changes["map_color"] = params["map_color"]
        else:
            warnings.append(f"map_color={shown(params['map_color'])} in the link is not 'set', 'agree' or a method")
    if "inspect_layer" in params and params["inspect_layer"].strip():
        changes["inspect_layer"] = params["inspect_layer"].strip()[:200]  # checked on Inspect, against the model
    if "map_compare" in params:
        if params["map_compare"] in known_methods:
            changes["map_compare"] = params["map_compare"]
        else:
            warnings.append(f"map_compare={shown(params['map_compare'])} in the link is not a method")
    return replace(chosen, **changes), warnings


def _attribution_from_query(params: Mapping[str, str], warnings: list[str]) -> dict:
    """Inspect's attribution choices in a link (see the module docstring)."""
    from gaia_viz.attribution import ATTRIBUTION_METHODS, control

    changes: dict = {}
    if "attribution" in params:
        if params["attribution"] in ATTRIBUTION_METHODS:
            changes["attribution"] = params["attribution"]
        else:
            warnings.append(f"attribution={shown(params['attribution'])} in the link is not one of "
                            f"{', '.join(ATTRIBUTION_METHODS)}")
    if "target" in params:
        if whole_number(params["target"]) is not None:
            changes["target"] = whole_number(params["target"])
        else:
            warnings.append(f"target={shown(params['target'])} in the link is not a class index")
    if "attr_params" in params:
        pairs = {}
        refused = []
        for item in _split(params["attr_params"]):
            key, sep, text = item.partition(":")
            method, dot, param = key.partition(".")
            try:
                if not (sep and dot) or len(text) > 2 * ECHO_CHARS:
                    raise GaiaVizError(f"{shown(item)} is not method.param:value")
                pairs[key] = control(method, param).parse(text)
            except GaiaVizError as exc:
                refused.append(echo(exc, 3 * ECHO_CHARS))
        for reason in refused[:3]:
            warnings.append(f"attr_params in the link: {reason}; left at its default")
        if len(refused) > 3:
            warnings.append(f"attr_params in the link: {len(refused) - 3} more values refused; left at their defaults")
        changes["attribution_params"] = tuple(sorted(pairs.items()))
    return changes


def view_query(chosen: Selection) -> dict[str, str]:
    """The query-string parameters of the Selection (defaults left out)."""
    default = Selection()
    query: dict[str, str] = {}
    if chosen.methods != default.methods:
        query["methods"] = ",".join(chosen.methods)
    if chosen.zero_layers is not None:
        query["layers"] = ",".join(chosen.zero_layers)
    if chosen.inner_layers is not None:
        query["inner_layers"] = ",".join(chosen.inner_layers)
    if chosen.method != default.method:
        query["method"] = chosen.method
    if chosen.threshold_mode == "score" and chosen.threshold is not None:
        query["threshold"] = f"{chosen.threshold:.6g}"
    elif chosen.tpr != default.tpr:
        query["tpr"] = f"{chosen.tpr:g}"
    if chosen.ood_set:
        query["ood"] = chosen.ood_set
    if chosen.image is not None:
        query["image"] = f"{chosen.image[0]}:{chosen.image[1]}"
    for key, attr in (("hist", "histogram_sets"), ("hist_scale", "histogram_scale"), ("attribution", "attribution"),
                      ("attr_view", "attribution_view"), ("map_color", "map_color"), ("map_compare", "map_compare")):
        if getattr(chosen, attr) != getattr(default, attr):
            query[key] = str(getattr(chosen, attr))
    if chosen.target is not None:
        query["target"] = str(chosen.target)
    if chosen.inspect_layer:
        query["inspect_layer"] = chosen.inspect_layer
    if chosen.attribution_params:
        query["attr_params"] = ",".join(f"{key}:{value!r}" if isinstance(value, float) else f"{key}:{value}"
                                        for key, value in chosen.attribution_params)
    return query



def unknown_keys(params: Mapping[str, str], setup_keys: Sequence[str]) -> list[str]:
    unknown = [key for key in params if key not in VIEW_KEYS and key not in setup_keys]
    return [f"unknown parameter(s) in the link: {shown_names(unknown)}; ignored"] if unknown else []



# --------------------------------------------------------------------------- the set-up <-> its widgets


def _model_query(widgets: Mapping[str, object]) -> str:
    kind = widgets.get(keys.SB_MODEL_KIND, "demo")
    return {
        "demo": lambda: "demo",
        "cifar": lambda: CIFAR_NAMES.get(widgets.get(keys.SB_CIFAR_DEPTH), CIFAR_NAMES[CIFAR_DEPTHS[0]]),
        "densenet": lambda: DENSENET_NAME,
        "gaia": lambda: GAIA_NAMES.get(widgets.get(keys.SB_GAIA_DEPTH), next(iter(GAIA_NAMES.values()))),
        "bit": lambda: widgets.get(keys.SB_BIT_NAME, BIT_NAMES[0]),
        "torchvision": lambda: "tv:" + str(widgets.get(keys.SB_TV_NAME, "resnet18")).strip(),
        "timm": lambda: "timm:" + str(widgets.get(keys.SB_TIMM_NAME, "resnet18")).strip(),
    }[kind]()


def setup_query(widgets: Mapping[str, object]) -> dict[str, str]:
    """The set-up's query-string parameters (defaults left out) from the sidebar's widget
    values ``widgets`` (``{key: value}``, the ``sb_*`` keys of :mod:`gaia_viz.app.keys`)."""
    query: dict[str, str] = {}
    model = _model_query(widgets)
    if model != "demo":
        query["model"] = model
    kind = widgets.get(keys.SB_MODEL_KIND, "demo")
    checkpoint = str(widgets.get(keys.checkpoint_path(kind), "") or "").strip()
    if checkpoint:
        query["checkpoint"] = checkpoint
    data = widgets.get(keys.SB_DATA_KIND, "demo")
    if data != "demo":
        query["data"] = data
    if data == "demo" and keys.SB_DEMO_OOD in widgets:
        from gaia_viz.demo import DEMO_OOD_NAMES

        if list(widgets[keys.SB_DEMO_OOD]) != list(DEMO_OOD_NAMES):
            query["ood_sets"] = ",".join(widgets[keys.SB_DEMO_OOD])
    elif data == "cifar10-real" and keys.SB_BENCH_OOD in widgets:
        query["ood_sets"] = ",".join(widgets[keys.SB_BENCH_OOD])
    if data == "custom":
        for param, key in (("id", keys.SB_CUSTOM_ID), ("fit", keys.SB_CUSTOM_FIT)):
            value = str(widgets.get(key, "") or "").strip()
            if value:
                query[param] = value
        lines = [line.strip() for line in str(widgets.get(keys.SB_CUSTOM_OOD, "")).splitlines() if line.strip()]
        if lines:
            query["ood_sets"] = ";".join(lines)
    preset, default_preset = widgets.get(keys.SB_PRESET_CURRENT, (None, None))
    if preset and preset != default_preset:
        query["preset"] = preset
    policy = widgets.get(keys.ood_policy(data))
    if policy and policy != DEFAULT_POLICY[data]:
        query["policy"] = policy
    samples = widgets.get(keys.SB_MAX_SAMPLES, DEFAULT_MAX_SAMPLES)
    if samples != DEFAULT_MAX_SAMPLES:
        query["samples"] = str(samples)
    return query


def _link_model(model: str, warn) -> tuple[str | None, dict]:
    """The model kind a link's ``model`` names and the widget values it sets; ``(None, {})``
    after a warning when it names no model (the sidebar keeps its default)."""
    if model == "demo":
        return "demo", {}
    if match := re.fullmatch(r"cifar_resnet([0-9]{1,4})", model):
        if int(match.group(1)) in CIFAR_DEPTHS:
            return "cifar", {keys.SB_CIFAR_DEPTH: int(match.group(1))}
        warn(f"CIFAR ResNet depth {shown(match.group(1))} in the link is not one of {CIFAR_DEPTHS}; "
             f"using {CIFAR_DEPTHS[0]}")
        return "cifar", {}
    if model == DENSENET_NAME:
        return "densenet", {}
    if model in GAIA_NAMES.values():
        return "gaia", {keys.SB_GAIA_DEPTH: next(d for d, name in GAIA_NAMES.items() if name == model)}
    if model in BIT_NAMES:
        return "bit", {keys.SB_BIT_NAME: model}
    kind, name = ("timm", model[5:]) if model.startswith("timm:") else ("torchvision", model.removeprefix("tv:"))
    reason = None
    if not _HUB_NAME.fullmatch(name):
        reason = "is not a model name"
    elif kind == "torchvision":
        from gaia_viz.models import torchvision_model_names

        if name not in torchvision_model_names():
            reason = "is not a torchvision classifier"
    else:
        from gaia_viz.models.timm_zoo import timm_name

        try:
            timm_name(model)
        except GaiaVizError:
            reason = "is not a timm model"
    if reason:
        warn(f"model={shown(model)} in the link {reason} (demo, cifar_resnet20-110, {DENSENET_NAME}, gaia_resnet18/34, a BiT name, "
             "tv:<torchvision name> or timm:<timm name>); using the demo model")
        return None, {}
    return kind, {keys.SB_TIMM_NAME if kind == "timm" else keys.SB_TV_NAME: name}


def seeded_widgets(params: Mapping[str, str], widgets: Mapping[str, object],
                   complete: bool = False) -> tuple[dict, list[str]]:
    """The sidebar's widget values after a link's set-up parameters ``params``: a new
    ``{key: value}`` (``widgets`` is not changed; a key left out is to be removed, so the
    widget's own default applies when it is drawn), and one warning for each value that could
    not be used (shortened, :func:`shown`), which then falls back to the default. With
    ``complete`` (a link followed inside a session, e.g. Back to another set-up), a parameter
    the link leaves out is its default, as :func:`setup_query` leaves defaults out."""
    state = dict(widgets)
    warnings: list[str] = []
    warn = warnings.append
    params = readable_params(params, SETUP_QUERY_KEYS, warnings)
    if complete:
        params = {"model": "demo", "data": "demo", "samples": str(DEFAULT_MAX_SAMPLES), **params}
        _reset_unnamed(params, state)
    model = params.get("model", "").strip()
    kind = None
    if model:
        kind, values = _link_model(model, warn)
        if kind is None and complete:
            kind = "demo"
        if kind is not None:
            state.update(values)
            state[keys.SB_MODEL_KIND] = kind
    if "checkpoint" in params and kind not in (None, "demo"):
        state[keys.checkpoint_path(kind)] = params["checkpoint"]
    data = params.get("data", "demo" if kind in (None, "demo") else None)
    if data is not None and data not in DATA_KINDS:
        warn(f"data={shown(data)} in the link is not one of {', '.join(DATA_KINDS)}; using "
             f"{'the demo sets' if kind in (None, 'demo') else 'what the model can read'}")
        data = "demo" if kind in (None, "demo") else None
    if data is not None:
        state[keys.SB_DATA_KIND] = data
    if "ood_sets" in params:
        if data == "custom":
            state[keys.SB_CUSTOM_OOD] = "\n".join(part for part in params["ood_sets"].split(";") if part.strip())
        elif data == "demo" or data is None:
            from gaia_viz.demo import DEMO_OOD_NAMES

            names = [n.strip() for n in params["ood_sets"].split(",") if n.strip()]
            unknown = [n for n in names if n not in DEMO_OOD_NAMES]
            if unknown:
                warn(f"unknown demo OOD set(s) in the link: {shown_names(unknown)} (known: {', '.join(DEMO_OOD_NAMES)})")
            state[keys.SB_DEMO_OOD] = [n for n in names if n in DEMO_OOD_NAMES] or list(DEMO_OOD_NAMES)
        else:
            state[keys.SB_BENCH_OOD_REQUESTED] = [n.strip() for n in params["ood_sets"].split(",") if n.strip()]
            state.pop(keys.SB_BENCH_OOD, None)  # the requested sets are applied when the widget is made
    if data == "custom":
        for param, key in (("id", keys.SB_CUSTOM_ID), ("fit", keys.SB_CUSTOM_FIT)):
            if param in params:
                state[key] = params[param]
    if "preset" in params:
        if params["preset"] in PRESETS:
            state[keys.SB_PRESET_REQUESTED] = params["preset"]
        else:
            warn(f"preset={shown(params['preset'])} in the link is not one of {', '.join(PRESETS)}; "
                 "using the model's default")
    if "policy" in params and data is not None:
        if params["policy"] in (*OOD_POLICIES, BOTH_POLICIES):
            state[keys.ood_policy(data)] = params["policy"]
        else:
            warn(f"policy={shown(params['policy'])} in the link is not one of "
                 f"{', '.join((*OOD_POLICIES, BOTH_POLICIES))}; using {DEFAULT_POLICY[data]}")
    if "samples" in params:
        if whole_number(params["samples"]) is not None:
            state[keys.SB_MAX_SAMPLES] = whole_number(params["samples"])
        else:
            warn(f"samples={shown(params['samples'])} in the link is not a whole number of at most "
                 f"{MAX_DIGITS} digits; using {state.get(keys.SB_MAX_SAMPLES, DEFAULT_MAX_SAMPLES)}")
    return state, warnings


def _reset_unnamed(params: Mapping[str, str], state: dict) -> None:
    """Reset the set-up widgets a complete link leaves at their defaults (see :func:`seeded_widgets`)."""
    from gaia_viz.demo import DEMO_OOD_NAMES

    for key in [k for k in state if str(k).startswith((keys.SB_CHECKPOINT_PATH, keys.SB_PRESET, keys.SB_OOD_POLICY))]:
        del state[key]  # the widgets' own defaults apply when they are drawn
    if params["data"] == "demo" and "ood_sets" not in params:
        state[keys.SB_DEMO_OOD] = list(DEMO_OOD_NAMES)
    if params["data"] == "custom":
        for param, key in (("id", keys.SB_CUSTOM_ID), ("fit", keys.SB_CUSTOM_FIT), ("ood_sets", keys.SB_CUSTOM_OOD)):
            if param not in params:
                state[key] = ""



__all__ = ["ECHO_CHARS", "MAX_DIGITS", "MAX_LINK_CHARS", "SETUP_QUERY_KEYS", "VIEW_KEYS", "readable_params",
           "seeded_widgets", "selection_from_query", "setup_query", "shown", "shown_names", "unknown_keys",
           "view_query", "whole_number"]
