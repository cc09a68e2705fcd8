"""The sidebar: model, data, preprocessing and run widgets, and the Setup they build.

:func:`sidebar` is drawn once per run by the app shell (so its widgets keep their values on
every page), loads what the widgets name through the cached loaders and stores the result
in ``st.session_state["setup"]`` / ``["setup_errors"]`` (:mod:`gaia_viz.app.state`). Every
widget is drawn even when an earlier section fails, so no choice is lost; an error is shown
beside the widget that caused it, and pages repeat it in their main panel
(:func:`gaia_viz.app.page.require_setup`).

Widget keys (``sb_*``) are the set-up's part of the state model; the link carries them as
:data:`SETUP_QUERY_KEYS` (:func:`setup_query`, :func:`seed_from_query`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from gaia_viz.app import loaders
from gaia_viz.app.paths import escape_markdown
from gaia_viz.app.setup import Setup, SetupError, SetupFix
from gaia_viz.app.state import (MAX_DIGITS, SETUP, SETUP_ERRORS, readable_params, shown, shown_names, warn_link,
                                whole_number)
from gaia_viz.data.images import DEFAULT_MAX_PIXELS
from gaia_viz.data.presets import OOD_POLICIES, PRESETS, id_policy
from gaia_viz.errors import GaiaVizError
from gaia_viz.models import checkpoint_files, list_models, model_families, model_info
from gaia_viz.paths import check_allowed, check_text, echo, path_policy, restriction_active
from gaia_viz.settings import DEVICE_CHOICES, resolve_device

DEFAULT_MAX_SAMPLES = 1000
DEFAULT_BATCH_SIZE = 64
CHECKPOINT_TYPES = ["pt", "pth", "th", "tar", "safetensors", "npz"]
BOTH_POLICIES = "both"
BIT_NAMES = tuple(list_models("bit"))

MODEL_KINDS = {family.kind: family.label for family in model_families()}  # the catalogue's families
HUB_KINDS = ("bit", "torchvision", "timm")  # weights from a local hub cache, or random
DATA_KINDS = {
    "demo": "Demo sets (digits vs. 5 OOD sets)",
    "cifar10-real": "CIFAR-10 (real)",
    "custom": "Image folders / torchvision datasets",
}
CIFAR_NAMES, GAIA_NAMES = ({model_info(name).depth: name for name in list_models(kind)} for kind in ("cifar", "gaia"))
CIFAR_DEPTHS = tuple(CIFAR_NAMES)
DENSENET_NAME = list_models("densenet")[0]
DEFAULT_POLICY = {"demo": "resize", "cifar10-real": BOTH_POLICIES, "custom": "center-crop"}
SETUP_QUERY_KEYS = ("model", "checkpoint", "data", "ood_sets", "id", "fit", "preset", "policy", "samples")
_URL = re.compile(r"https?://[^\s)]+")
_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")  # a torchvision or timm model name (a timm tag included)


# --------------------------------------------------------------------------- errors


def _error(message: str, widget: str | None = None, fix: SetupFix | None = None) -> SetupError:
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
    for key, value in fix.state:
        st.session_state[key] = value


# --------------------------------------------------------------------------- link <-> widgets


def _model_query() -> str:
    kind = st.session_state.get("sb_model_kind", "demo")
    return {
        "demo": lambda: "demo",
        "cifar": lambda: CIFAR_NAMES.get(st.session_state.get("sb_cifar_depth"), list_models("cifar")[0]),
        "densenet": lambda: DENSENET_NAME,
        "gaia": lambda: GAIA_NAMES.get(st.session_state.get("sb_gaia_depth"), list_models("gaia")[0]),
        "bit": lambda: st.session_state.get("sb_bit_name", BIT_NAMES[0]),
        "torchvision": lambda: "tv:" + str(st.session_state.get("sb_tv_name", "resnet18")).strip(),
        "timm": lambda: "timm:" + str(st.session_state.get("sb_timm_name", "resnet18")).strip(),
    }[kind]()


def setup_query() -> dict[str, str]:
    """The set-up's query-string parameters (defaults left out)."""
    query: dict[str, str] = {}
    model = _model_query()
    if model != "demo":
        query["model"] = model
    kind = st.session_state.get("sb_model_kind", "demo")
    checkpoint = str(st.session_state.get(f"sb_checkpoint_path::{kind}", "") or "").strip()
    if checkpoint:
        query["checkpoint"] = checkpoint
    data = st.session_state.get("sb_data_kind", "demo")
    if data != "demo":
        query["data"] = data
    if data == "demo" and "sb_demo_ood" in st.session_state:
        from gaia_viz.demo import DEMO_OOD_NAMES

        if list(st.session_state["sb_demo_ood"]) != list(DEMO_OOD_NAMES):
            query["ood_sets"] = ",".join(st.session_state["sb_demo_ood"])
    elif data == "cifar10-real" and "sb_bench_ood" in st.session_state:
        query["ood_sets"] = ",".join(st.session_state["sb_bench_ood"])
    if data == "custom":
        for param, key in (("id", "sb_custom_id"), ("fit", "sb_custom_fit")):
            value = str(st.session_state.get(key, "") or "").strip()
            if value:
                query[param] = value
        lines = [line.strip() for line in str(st.session_state.get("sb_custom_ood", "")).splitlines() if line.strip()]
        if lines:
            query["ood_sets"] = ";".join(lines)
    preset, default_preset = st.session_state.get("sb_preset_current", (None, None))
    if preset and preset != default_preset:
        query["preset"] = preset
    policy = st.session_state.get(f"sb_ood_policy::{data}")
    if policy and policy != DEFAULT_POLICY[data]:
        query["policy"] = policy
    samples = st.session_state.get("sb_max_samples", DEFAULT_MAX_SAMPLES)
    if samples != DEFAULT_MAX_SAMPLES:
        query["samples"] = str(samples)
    return query


def _shared_weights(values: dict, data_root, caption: str) -> None:
    """Without a checkpoint of the user's, the shared one under the data root (the catalogue's
    ``checkpoint_file``); else a GaiaVizError saying what to give."""
    if values["checkpoint"] is not None:
        return
    info = model_info(values["name"])
    shared = Path(data_root) / info.checkpoint_file if data_root and info.checkpoint_file else None
    if shared is None or not shared.is_file():
        raise GaiaVizError(f"{values['name']} has no pretrained weights under the data root: upload a "
                           f"checkpoint, or set a data root holding {' or '.join(checkpoint_files(info.kind))}")
    values.update(checkpoint=str(shared), digest=loaders.file_digest(str(shared)))
    st.caption(f"{caption}: {escape_markdown(shared)}.")


def _link_model(model: str, warn) -> tuple[str | None, dict]:
    """The model kind a link's ``model`` names and the widget values it sets; ``(None, {})``
    after a warning when it names no model (the sidebar keeps its default)."""
    if model == "demo":
        return "demo", {}
    if match := re.fullmatch(r"cifar_resnet([0-9]{1,4})", model):
        if int(match.group(1)) in CIFAR_DEPTHS:
            return "cifar", {"sb_cifar_depth": int(match.group(1))}
        warn(f"CIFAR ResNet depth {shown(match.group(1))} in the link is not one of {CIFAR_DEPTHS}; "
             f"using {CIFAR_DEPTHS[0]}")
        return "cifar", {}
    if model == DENSENET_NAME:
        return "densenet", {}
    if model in GAIA_NAMES.values():
        return "gaia", {"sb_gaia_depth": model_info(model).depth}
    if model in BIT_NAMES:
        return "bit", {"sb_bit_name": model}
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
    return kind, {"sb_timm_name" if kind == "timm" else "sb_tv_name": name}


def seed_from_query(params: dict[str, str], warn, complete: bool = False) -> None:
    """Set the sidebar's widgets from a link's set-up parameters (before they are drawn).
    ``warn(message)`` gets each value that could not be used (shortened), which then falls
    back to the default. With ``complete`` (a link followed inside a session, e.g. Back to
    another set-up), a parameter the link leaves out is its default, as :func:`setup_query`
    leaves defaults out."""
    state = st.session_state
    refused: list[str] = []
    params = readable_params(params, SETUP_QUERY_KEYS, refused)
    for message in refused:
        warn(message)
    if complete:
        params = {"model": "demo", "data": "demo", "samples": str(DEFAULT_MAX_SAMPLES), **params}
        _reset_unnamed(params)
    model = params.get("model", "").strip()
    kind = None
    if model:
        kind, values = _link_model(model, warn)
        if kind is None and complete:
            kind = "demo"
        if kind is not None:
            state.update(values)
            state["sb_model_kind"] = kind
    if "checkpoint" in params and kind not in (None, "demo"):
        state[f"sb_checkpoint_path::{kind}"] = params["checkpoint"]
    data = params.get("data", "demo" if kind in (None, "demo") else None)
    if data is not None and data not in DATA_KINDS:
        warn(f"data={shown(data)} in the link is not one of {', '.join(DATA_KINDS)}; using "
             f"{'the demo sets' if kind in (None, 'demo') else 'what the model can read'}")
        data = "demo" if kind in (None, "demo") else None
    if data is not None:
        state["sb_data_kind"] = data
    if "ood_sets" in params:
        if data == "custom":
            state["sb_custom_ood"] = "\n".join(part for part in params["ood_sets"].split(";") if part.strip())
        elif data == "demo" or data is None:
            from gaia_viz.demo import DEMO_OOD_NAMES

            names = [n.strip() for n in params["ood_sets"].split(",") if n.strip()]
            unknown = [n for n in names if n not in DEMO_OOD_NAMES]
            if unknown:
                warn(f"unknown demo OOD set(s) in the link: {shown_names(unknown)} (known: {', '.join(DEMO_OOD_NAMES)})")
            state["sb_demo_ood"] = [n for n in names if n in DEMO_OOD_NAMES] or list(DEMO_OOD_NAMES)
        else:
            state["sb_bench_ood_requested"] = [n.strip() for n in params["ood_sets"].split(",") if n.strip()]
            state.pop("sb_bench_ood", None)  # the requested sets are applied when the widget is made
    if data == "custom":
        for param, key in (("id", "sb_custom_id"), ("fit", "sb_custom_fit")):
            if param in params:
                state[key] = params[param]
    if "preset" in params:
        if params["preset"] in PRESETS:
            state["sb_preset_requested"] = params["preset"]
        else:
            warn(f"preset={shown(params['preset'])} in the link is not one of {', '.join(PRESETS)}; "
                 "using the model's default")
    if "policy" in params and data is not None:
        if params["policy"] in (*OOD_POLICIES, BOTH_POLICIES):
            state[f"sb_ood_policy::{data}"] = params["policy"]
        else:
            warn(f"policy={shown(params['policy'])} in the link is not one of "
                 f"{', '.join((*OOD_POLICIES, BOTH_POLICIES))}; using {DEFAULT_POLICY[data]}")
    if "samples" in params:
        if whole_number(params["samples"]) is not None:
            state["sb_max_samples"] = whole_number(params["samples"])
        else:
            warn(f"samples={shown(params['samples'])} in the link is not a whole number of at most "
                 f"{MAX_DIGITS} digits; using {state.get('sb_max_samples', DEFAULT_MAX_SAMPLES)}")


def _reset_unnamed(params: dict[str, str]) -> None:
    """Reset the set-up widgets a complete link leaves at their defaults (see :func:`seed_from_query`)."""
    from gaia_viz.demo import DEMO_OOD_NAMES

    state = st.session_state
    for key in [k for k in state if str(k).startswith(("sb_checkpoint_path::", "sb_preset::", "sb_ood_policy::"))]:
        del state[key]  # the widgets' own defaults apply when they are drawn
    if params["data"] == "demo" and "ood_sets" not in params:
        state["sb_demo_ood"] = list(DEMO_OOD_NAMES)
    if params["data"] == "custom":
        for param, key in (("id", "sb_custom_id"), ("fit", "sb_custom_fit"), ("ood_sets", "sb_custom_ood")):
            if param not in params:
                state[key] = ""


# --------------------------------------------------------------------------- sections


def _real_cifar_available(data_root: str | None = None) -> bool:
    root = data_root if data_root is not None else checked_data_root()[0]
    if not root:
        return False
    found = loaders.benchmark_sets(root)
    return "cifar10-test" in found and any(v["role"] == "ood" for v in found.values())


def default_data_root() -> str:
    """The server's data root as text ("" when there is none): :func:`gaia_viz.settings.data_root`."""
    from gaia_viz.settings import data_root

    root = data_root()
    return str(root) if root is not None else ""


def checked_data_root() -> tuple[str, SetupError | None]:
    """The data root of the sidebar and its error: ``("", error)`` when the visitor typed a
    root outside the allowed data roots (the server's own default is always accepted)."""
    root = str(st.session_state.get("sb_data_root", default_data_root())).strip()
    if not root or root == default_data_root():
        return root, None
    try:
        check_allowed(root, "data root")
    except GaiaVizError as exc:
        return "", _error(str(exc), "sb_data_root")
    return root, None


@dataclass
class _Choice:
    """What a sidebar section asked for (drawn even when loading it later fails)."""

    values: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)


def _checkpoint_widgets(kind: str) -> dict:
    """``{"checkpoint": path or "upload:<name>", "data": uploaded bytes, "digest"}``."""
    upload = st.file_uploader("Checkpoint upload (.pt, .pth, .th, .tar, .safetensors, .npz)",
                              type=CHECKPOINT_TYPES, key=f"sb_checkpoint_upload::{kind}")
    path = st.text_input(
        "…or checkpoint path on the server", key=f"sb_checkpoint_path::{kind}",
        placeholder="/path/to/weights.pth",
        help="A state_dict saved with torch.save, or a .safetensors file; read with weights_only=True.",
    ).strip()
    if upload is not None:
        data = upload.getvalue()
        # hashing a 200 MB upload on every rerun would cost a noticeable fraction of a second
        digests = st.session_state.setdefault("sb_upload_digests", {})
        if upload.file_id not in digests:
            digests[upload.file_id] = loaders.upload_digest(data)
        return dict(checkpoint=f"upload:{upload.name}", data=data, digest=digests[upload.file_id])
    if path:
        check_allowed(path, "checkpoint")
        expanded = str(Path(path).expanduser())
        if Path(expanded).is_dir():
            raise GaiaVizError(f"checkpoint {echo(path)} is a folder; give the path of the weights file "
                               "(.pt, .pth, .th or .safetensors) inside it")
        if not Path(expanded).is_file():
            raise GaiaVizError(f"checkpoint {echo(path)} does not exist on the server; check the path "
                               "or upload the file")
        return dict(checkpoint=expanded, data=None, digest=loaders.file_digest(expanded))
    return dict(checkpoint=None, data=None, digest=None)


def _model_widgets(data_root: str) -> _Choice:
    """The model widgets: ``values`` = name, checkpoint, data, digest, pretrained, allow_download."""
    choice = _Choice()
    # No callback changes the data with the model (or back): every model reads every data kind
    # through its own preset, so no choice of the user is ever undone by another.
    kind = st.selectbox("Model", list(MODEL_KINDS), format_func=MODEL_KINDS.get, key="sb_model_kind",
                        label_visibility="collapsed")
    values = dict(pretrained=True, allow_download=False)
    random_key = f"sb_random_weights::{kind}"
    try:
        if kind == "demo":
            values.update(name="demo", checkpoint=None, data=None, digest=None)
            st.caption("A small CNN trained on handwritten digits; its weights ship with gaia-viz.")
        elif kind == "cifar":
            depth = st.selectbox("Depth", CIFAR_DEPTHS, key="sb_cifar_depth")
            values.update(name=CIFAR_NAMES[depth], **_checkpoint_widgets(kind))
            _shared_weights(values, data_root, "Pretrained CIFAR-10 weights")
        elif kind == "densenet":
            values.update(name=DENSENET_NAME, **_checkpoint_widgets(kind))
            _shared_weights(values, data_root, "ODIN's pretrained CIFAR-10 weights")
        else:
            if kind == "gaia":
                depth = st.selectbox("Depth", tuple(GAIA_NAMES), key="sb_gaia_depth")
                values["name"] = GAIA_NAMES[depth]
            elif kind == "bit":
                values["name"] = st.selectbox("BiT model", BIT_NAMES, key="sb_bit_name", help=(
                    "Big Transfer ResNetV2 (Kolesnikov et al. 2020); the GAIA paper's ImageNet results use "
                    "BiT-S-R101x1. Give its checkpoint (.pth.tar of GradNorm/GAIA or the original .npz)."))
            elif kind == "torchvision":
                values["name"] = st.text_input(
                    "torchvision model name", value="resnet18", key="sb_tv_name",
                    help="Any torchvision classification model, e.g. resnet50, convnext_tiny, vit_b_16. "
                         "Its ImageNet weights must be in the torch hub cache (nothing is downloaded unless "
                         "allowed), or give a checkpoint.").strip()
            else:
                values["name"] = "timm:" + st.text_input(
                    "timm model name", value="resnet18", key="sb_timm_name",
                    help="Any timm model, e.g. resnet50, resnetv2_50x1_bit.goog_in21k, convnext_atto. "
                         "Weights come from the local Hugging Face cache (nothing is downloaded unless "
                         "allowed), or give a checkpoint.").strip()
            values.update(_checkpoint_widgets(kind))
            random = st.checkbox("Random weights (no pretrained weights)", key=random_key,
                                 disabled=values["checkpoint"] is not None,
                                 help="Scores of an untrained model: useful to see what GAIA hooks, "
                                      "meaningless as a detector.")
            values["pretrained"] = not random
            if kind in HUB_KINDS:
                values["allow_download"] = st.toggle(
                    "Allow downloads", key="sb_allow_download", disabled=restriction_active(),
                    help="Fetch missing pretrained weights from the internet into the local cache "
                         "(off when the app is served to others).")
            if values["checkpoint"] is None and not random and kind in ("gaia", "bit"):
                raise GaiaVizError(f"{values['name']} has no built-in weights: upload a checkpoint, give "
                                   "its path, or tick 'Random weights'")
    except GaiaVizError as exc:
        fix = SetupFix("Use random weights", ((random_key, True),)) if "built-in weights" in str(exc) else None
        choice.errors.append(_error(str(exc), f"sb_checkpoint_path::{kind}", fix))
    choice.values = values
    return choice


def _load_model(values: dict, device: str) -> tuple[object | None, list[SetupError]]:
    kind = st.session_state.get("sb_model_kind", "demo")
    try:
        model = loaders.cached_model(
            values["name"], None if values["data"] is not None else values["checkpoint"], values["digest"], device,
            pretrained=values["pretrained"], allow_download=values["allow_download"],
            _checkpoint_bytes=values["data"])
        return model, []
    except GaiaVizError as exc:
        message = str(exc)
        fix = None
        if "not cached" in message or "pretrained=False" in message:
            fix = SetupFix("Use random weights", ((f"sb_random_weights::{kind}", True),))
            message = message.replace("use pretrained=False", "tick 'Random weights'")
        return None, [_error(message, "sb_model_kind", fix)]
    except (RuntimeError, ValueError, TypeError, KeyError, OSError) as exc:
        # building a model from a user's weights can fail inside torch in many ways;
        # the visitor needs the reason, the page must go on
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        return None, [_error(f"cannot load the model {values['name']!r}: {reason}; check the model "
                             "name, the checkpoint and its number of classes", "sb_model_kind")]


def _policy_widget(data_kind: str) -> str:
    options = [*OOD_POLICIES, BOTH_POLICIES]
    key = f"sb_ood_policy::{data_kind}"
    if st.session_state.get(key) not in options:
        st.session_state[key] = DEFAULT_POLICY[data_kind]
    return st.selectbox(
        "OOD resize policy", options, key=key,
        help="How OOD images of another size reach the model's input size. center-crop keeps the "
             "pixel scale (the GAIA paper's CIFAR protocol); resize squashes the whole image "
             "(OpenOOD). They give different numbers; 'both' scores one OOD set per policy. "
             "The choice is recorded with every result.",
    )


def _policies(choice: str) -> list[str]:
    return list(OOD_POLICIES) if choice == BOTH_POLICIES else [choice]


def parse_ood_lines(text: str) -> list[tuple[str, str]]:
    """``name = source`` or a bare source per line -> [(name, source)]; a bare source is named
    after its last path component (``/data/dtd/images`` -> ``images``)."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, spec = line.partition("=")
        if sep and name.strip() and ":" not in name and "/" not in name:
            entries.append((name.strip(), spec.strip()))
        else:
            stem = Path(line.split(":", 1)[-1].rstrip("/")).name or line
            entries.append((stem, line))
    return entries


def _data_widgets(data_root: str) -> _Choice:
    """``values`` = label, id (name, spec), fit (name, spec)|None, ood [(name, spec)], policy."""
    from gaia_viz.demo import DEMO_ID_NAME, DEMO_OOD_NAMES

    choice = _Choice()
    kinds = [k for k in DATA_KINDS if k != "cifar10-real" or _real_cifar_available(data_root)]
    wanted = st.session_state.get("sb_data_kind")
    if wanted not in kinds:
        model_is_demo = st.session_state.get("sb_model_kind", "demo") == "demo"
        st.session_state["sb_data_kind"] = "demo" if model_is_demo else kinds[-1]
        if wanted is not None:  # the only change the sidebar makes on its own: say which and why
            warn_link(f"{DATA_KINDS.get(wanted, wanted)} is not available: the data root "
                      f"{echo(data_root) if data_root else '(none set)'} holds no cifar10/test with an OOD set, "
                      f"so the data is {DATA_KINDS[st.session_state['sb_data_kind']]}. Set the data root in the "
                      "sidebar.")
    kind = st.selectbox("Data", kinds, format_func=DATA_KINDS.get, key="sb_data_kind",
                        label_visibility="collapsed")
    model_kind = st.session_state.get("sb_model_kind", "demo")
    if (kind == "demo") != (model_kind == "demo"):
        st.caption("The demo sets are handwritten digits (ID) and five OOD sets; the demo CNN was trained on "
                   "those digits. " + ("This model was not: for it the digits are unfamiliar too, so GAIA compares "
                                       "two kinds of OOD images." if kind == "demo" else
                                       "Other images reach it as 28 x 28 grey digits; its numbers say how unlike "
                                       "digits they are."))
    if kind == "demo":
        st.session_state.setdefault("sb_demo_ood", list(DEMO_OOD_NAMES))
        chosen = st.multiselect("OOD sets", DEMO_OOD_NAMES, key="sb_demo_ood",
                                help="Real images bundled with installed packages: LFW faces, "
                                     "skimage textures and photos, font letters, uniform noise.")
        values = dict(label="demo", id=(DEMO_ID_NAME, f"demo:{DEMO_ID_NAME}"),
                      fit=(f"{DEMO_ID_NAME}-train", f"demo:{DEMO_ID_NAME}:train"),
                      ood=[(n, f"demo:{n}") for n in chosen])
    elif kind == "cifar10-real":
        found = loaders.benchmark_sets(data_root)
        ood_keys = [k for k, v in found.items() if v["role"] == "ood" and "data_root" not in v]
        if "sb_bench_ood" not in st.session_state:
            requested = st.session_state.pop("sb_bench_ood_requested", None)
            st.session_state["sb_bench_ood"] = ([k for k in requested if k in ood_keys] if requested else
                                                [k for k in ood_keys if k == "textures"] or ood_keys)
        chosen = st.multiselect("OOD sets", ood_keys, key="sb_bench_ood",
                                format_func=lambda k: f"{k}: {found[k]['description']}")
        fit = ("cifar10-train-5k", found["cifar10-train-5k"]["spec"]) if "cifar10-train-5k" in found else None
        values = dict(label=DATA_KINDS[kind], id=("cifar10-test", found["cifar10-test"]["spec"]), fit=fit,
                      ood=[(k, found[k]["spec"]) for k in chosen])
        st.caption("ID: CIFAR-10 test; fit set (ReAct, KNN, Mahalanobis, ...): CIFAR-10 train-5k.")
    else:
        st.caption("Sources: a folder path (class sub-folders give labels), `torchvision:CIFAR10:test` "
                   "(under the data root), `demo:faces`, or `images:a.png,b.png`.")
        id_spec = st.text_input("ID test set", key="sb_custom_id", placeholder="/data/cifar10/test").strip()
        fit_spec = st.text_input("Fit set (ID training data; only for the methods that fit)",
                                 key="sb_custom_fit", placeholder="optional").strip()
        ood_text = st.text_area("OOD sets, one per line (`name = source` or just the source)",
                                key="sb_custom_ood",
                                placeholder="textures = /data/dtd/images\nsvhn = torchvision:SVHN:test")
        values = dict(label=DATA_KINDS[kind], id=("id", id_spec), fit=("fit", fit_spec) if fit_spec else None,
                      ood=parse_ood_lines(ood_text))
        if not id_spec:
            choice.errors.append(_error("enter the ID test set (a folder path or a torchvision: source) "
                                        "in the sidebar", "sb_custom_id"))
    values["policy"] = _policy_widget(kind)
    if not values["ood"] and not choice.errors:
        choice.errors.append(_error("choose at least one OOD set in the sidebar",
                                    {"demo": "sb_demo_ood", "cifar10-real": "sb_bench_ood"}.get(kind, "sb_custom_ood")))
    choice.values = values
    return choice


def _open_sets(values: dict, preset: str, data_root: str, max_samples: int | None, max_pixels: int):
    """Open the ID, fit and OOD sets the data widgets named: (id_set, ood_sets, fit_set, sources).

    Every path a spec names is checked by :func:`gaia_viz.data.sources.open_source` against
    the allowed roots before it is read; the path policy is part of the cache key, so a set
    opened where every path may be read is never handed out where paths are restricted."""
    root = data_root or None
    for name, _spec in values["ood"]:
        check_text(name, "data set name")
    paths_key = path_policy().describe()
    id_name, id_spec = values["id"]
    id_set = loaders.cached_source(id_spec, preset, id_policy(preset), root, id_name, max_samples, max_pixels,
                                   paths_key)
    sources = {id_name: id_spec}
    fit_set = None
    if values["fit"] is not None:
        fit_name, fit_spec = values["fit"]
        fit_set = loaders.cached_source(fit_spec, preset, id_policy(preset), root, fit_name, max_samples,
                                        max_pixels, paths_key)
        sources[fit_name] = fit_spec
    policies = _policies(values["policy"])
    ood_sets = {}
    for base, spec in values["ood"]:
        for policy in policies:
            name = f"{base} ({policy})" if len(policies) > 1 else base
            if name in ood_sets or name == id_name:
                raise GaiaVizError(f"two data sets are named {echo(name)!r}; give the OOD sets distinct names")
            ood_sets[name] = loaders.cached_source(spec, preset, policy, root, name, max_samples, max_pixels,
                                                   paths_key)
            sources[name] = spec
    return id_set, ood_sets, fit_set, sources


def _preset_widget(model_name: str, model, kind: str) -> str:
    from gaia_viz.models import default_preset
    from gaia_viz.models.heads import classifier_head

    num_classes = None
    if model is not None:
        try:
            num_classes = classifier_head(model).num_classes
        except GaiaVizError:
            pass
    try:
        default = default_preset(model_name, num_classes)
    except GaiaVizError:
        default = "imagenet224"
    options = list(PRESETS)
    key = f"sb_preset::{model_name if kind != 'demo' else 'demo'}"
    requested = st.session_state.pop("sb_preset_requested", None)
    if requested in options:
        st.session_state[key] = requested
    if st.session_state.get(key) not in options:
        st.session_state[key] = default
    preset = st.selectbox(
        "Preprocessing preset", options, key=key,
        format_func=lambda p: f"{p} (model default)" if p == default else p,
        help="\n\n".join(f"**{p.name}**: {p.description}" for p in PRESETS.values()),
    )
    st.session_state["sb_preset_current"] = (preset, default)
    return preset


def _run_widgets() -> tuple[str, int, int | None, int]:
    st.selectbox("Device", list(DEVICE_CHOICES), key="sb_device",
                 help="auto: the GPU when there is one, else the CPU. Scores do not depend on it "
                      "beyond the last digits, so results are kept when it changes.")
    batch_size = int(st.number_input("Batch size", 1, 4096, DEFAULT_BATCH_SIZE, key="sb_batch_size",
                                     help="Speed only: GAIA's scores are batch-independent, so results "
                                          "are kept when it changes."))
    st.session_state.setdefault("sb_max_samples", DEFAULT_MAX_SAMPLES)
    max_samples = int(st.number_input(
        "Max samples per set (0 = all)", min_value=0, step=100, key="sb_max_samples",
        help="A deterministic random subset of every set keeps CPU runs short (the default "
             f"{DEFAULT_MAX_SAMPLES} scores the demo in about half a minute on two CPU cores). "
             "Use 0 for full benchmark numbers.",
    ))
    st.caption(f"At most {max_samples or 'all'} images per set"
               + (" — keeps CPU runs short; 0 uses every image." if max_samples else "."))
    st.session_state.setdefault("sb_max_megapixels", DEFAULT_MAX_PIXELS / 1e6)
    megapixels = float(st.number_input(
        "Pixel limit per image (megapixels)", min_value=0.01, max_value=1000.0, step=10.0, key="sb_max_megapixels",
        help="Images with more pixels are refused before decoding (a guard against decompression bombs); "
             "raise it for very large photos."))
    return st.session_state["sb_device"], batch_size, (max_samples or None), int(megapixels * 1e6)


def sidebar() -> Setup | None:
    """Draw the sidebar, load what it names; the Setup, or None (errors in ``"setup_errors"``)."""
    errors: list[SetupError] = []
    st.session_state.setdefault("sb_data_root", default_data_root())
    data_root, root_error = checked_data_root()
    model = device = opened = None
    with st.sidebar:
        model_box, data_box, run_box = st.container(), st.container(), st.container()
        with run_box:
            st.subheader("Run")
            device_choice, batch_size, max_samples, max_pixels = _run_widgets()
            st.text_input("Data root", key="sb_data_root",
                          help="Folder with standard layouts (cifar10/test, textures/images, LSUN, iSUN, "
                               "..., models/) and torchvision datasets. Default: $GAIA_VIZ_DATA_ROOT.")
            run_errors = [root_error] if root_error else []
            try:
                device = resolve_device(device_choice)
                st.caption(f"Device: **{device}**.")
            except GaiaVizError as exc:
                run_errors.append(_error(str(exc), "sb_device", SetupFix("Use the CPU", (("sb_device", "cpu"),))))
            for error in run_errors:
                show_error(error)
            errors += run_errors
        with model_box:
            st.subheader("Model")
            model_choice = _model_widgets(data_root)
            model_errors = list(model_choice.errors)
            if not model_errors and device is not None:
                model, load_errors = _load_model(model_choice.values, device)
                model_errors += load_errors
            for error in model_errors:
                show_error(error)
            errors += model_errors
            model_name = model_choice.values.get("name", "")
            preset = _preset_widget(model_name, model, st.session_state.get("sb_model_kind", "demo"))
        with data_box:
            st.subheader("Data")
            data_choice = _data_widgets(data_root)
            data_errors = list(data_choice.errors)
            if not data_errors:
                try:
                    opened = _open_sets(data_choice.values, preset, data_root, max_samples, max_pixels)
                except GaiaVizError as exc:
                    data_errors.append(_error(str(exc), "sb_data_kind"))
                except (PermissionError, IsADirectoryError, FileNotFoundError) as exc:
                    data_errors.append(_error(f"cannot read {exc.filename or exc}: {exc.strerror or exc}",
                                              "sb_data_kind"))
            for error in data_errors:
                show_error(error)
            errors += data_errors
            if opened is not None:
                skipped = sum(len(getattr(s, "skipped", [])) for s in [opened[0], *opened[1].values()])
                if skipped:
                    st.warning(f"{skipped} unreadable image files were skipped.")
    st.session_state[SETUP_ERRORS] = errors
    setup = None
    if not errors and model is not None and opened is not None:
        id_set, ood_sets, fit_set, sources = opened
        v = model_choice.values
        setup = Setup(
            model_name=model_name, model=model, preset=preset, ood_policy=data_choice.values["policy"],
            device=device, batch_size=batch_size, id_set=id_set, ood_sets=ood_sets, fit_set=fit_set,
            checkpoint=v["checkpoint"], data_root=data_root or None, max_samples=max_samples,
            data_label=data_choice.values["label"], sources=sources, checkpoint_digest=v["digest"],
            random_weights=not v.get("pretrained", True) and v["checkpoint"] is None,
        )
    st.session_state[SETUP] = setup
    return setup


__all__ = ["BIT_NAMES", "DATA_KINDS", "MODEL_KINDS", "SETUP_QUERY_KEYS", "checked_data_root", "default_data_root",
           "parse_ood_lines", "seed_from_query", "setup_query", "show_error", "sidebar"]
