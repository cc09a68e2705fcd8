"""The sidebar: model, data, preprocessing and run widgets, and the Setup they build.

:func:`sidebar` is drawn once per run by the app shell (so its widgets keep their values on
every page), loads what the widgets name (:func:`gaia_viz.app.loaders.load_model`,
:func:`gaia_viz.app.loaders.open_sets`) and stores the result in ``st.session_state`` under
``keys.SETUP`` / ``keys.SETUP_ERRORS`` (:mod:`gaia_viz.app.state`). Every widget is drawn
even when an earlier section fails, so no choice is lost; an error is shown beside the
widget that caused it (:func:`gaia_viz.app.setup.show_error`), and pages repeat it in their
main panel (:func:`gaia_viz.app.page.require_setup`).

Widget keys (``sb_*``, :mod:`gaia_viz.app.keys`) are the set-up's part of the state model;
the link carries them (:func:`gaia_viz.app.links.setup_query`,
:func:`gaia_viz.app.links.seeded_widgets`). What the widgets offer is the catalogue
(:mod:`gaia_viz.app.catalogue`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from gaia_viz.app import keys, loaders
from gaia_viz.app.catalogue import (BIT_NAMES, BOTH_POLICIES, CHECKPOINT_TYPES, CIFAR_DEPTHS, CIFAR_NAMES, DATA_KINDS,
                                    DEFAULT_BATCH_SIZE, DEFAULT_MAX_SAMPLES, DEFAULT_POLICY, DENSENET_NAME,
                                    GAIA_NAMES, HUB_KINDS, MODEL_KINDS)
from gaia_viz.app.markdown import escape_markdown
from gaia_viz.app.setup import Setup, SetupError, SetupFix, build_setup, setup_error, show_error
from gaia_viz.app.state import warn_link
from gaia_viz.data.images import DEFAULT_MAX_PIXELS
from gaia_viz.data.presets import OOD_POLICIES, PRESETS
from gaia_viz.errors import GaiaVizError
from gaia_viz.paths import echo, restriction_active
from gaia_viz.settings import DEVICE_CHOICES, resolve_device


def _shared_weights(values: dict, data_root, caption: str) -> None:
    """Without a checkpoint of the user's, the shared one (:func:`gaia_viz.app.loaders.shared_weights`)."""
    if values["checkpoint"] is None:
        shared = loaders.shared_weights(values["name"], data_root)
        values.update(checkpoint=str(shared), digest=loaders.file_digest(str(shared)))
        st.caption(f"{caption}: {escape_markdown(shared)}.")


def _kept(key: str, fallback):
    """The value a sidebar widget is drawn with as its default: its value in the session (else
    ``fallback``). The browser shows a widget's default whenever it has dropped the widget's
    state (a fragment's run finishing while a page change redraws the sidebar drops every widget
    not yet redrawn), and its next request sends that default as the user's choice: the set-up
    fell back to no OOD sets, center-crop and 0 samples a set. With the session's value as the
    default, what the browser falls back to is what the session holds."""
    return st.session_state.get(key, fallback)


def _kept_choices(options, key: str) -> list:
    """:func:`_kept` for a multiselect: the session's choices that are among ``options``."""
    return [value for value in st.session_state.get(key) or () if value in options]


def _kept_index(options, key: str, fallback: int = 0) -> int:
    """:func:`_kept` for a selectbox: the index of the session's value in ``options``."""
    options = list(options)
    value = st.session_state.get(key)
    return options.index(value) if value in options else fallback


@dataclass
class _Choice:
    """What a sidebar section asked for (drawn even when loading it later fails)."""

    values: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)


def _checkpoint_widgets(kind: str) -> dict:
    """``{"checkpoint": path or "upload:<name>", "data": uploaded bytes, "digest"}``."""
    upload = st.file_uploader("Checkpoint upload (.pt, .pth, .th, .tar, .safetensors, .npz)",
                              type=CHECKPOINT_TYPES, key=keys.checkpoint_upload(kind))
    path = st.text_input(
        "…or checkpoint path on the server", _kept(keys.checkpoint_path(kind), ""), key=keys.checkpoint_path(kind),
        placeholder="/path/to/weights.pth",
        help="A state_dict saved with torch.save, or a .safetensors file; read with weights_only=True.",
    ).strip()
    if upload is not None:
        data = upload.getvalue()
        # hashing a 200 MB upload on every rerun would cost a noticeable fraction of a second
        digests = st.session_state.setdefault(keys.SB_UPLOAD_DIGESTS, {})
        if upload.file_id not in digests:
            digests[upload.file_id] = loaders.upload_digest(data)
        return dict(checkpoint=f"upload:{upload.name}", data=data, digest=digests[upload.file_id])
    if path:
        expanded = loaders.checked_checkpoint(path)
        return dict(checkpoint=expanded, data=None, digest=loaders.file_digest(expanded))
    return dict(checkpoint=None, data=None, digest=None)


def _model_widgets(data_root: str) -> _Choice:
    """The model widgets: ``values`` = name, checkpoint, data, digest, pretrained, allow_download."""
    choice = _Choice()
    # No callback changes the data with the model (or back): every model reads every data kind
    # through its own preset, so no choice of the user is ever undone by another.
    kind = st.selectbox("Model", list(MODEL_KINDS), _kept_index(MODEL_KINDS, keys.SB_MODEL_KIND),
                        format_func=MODEL_KINDS.get, key=keys.SB_MODEL_KIND,
                        label_visibility="collapsed")
    values = dict(pretrained=True, allow_download=False)
    random_key = keys.random_weights(kind)
    try:
        if kind == "demo":
            values.update(name="demo", checkpoint=None, data=None, digest=None)
            st.caption("A small CNN trained on handwritten digits; its weights ship with gaia-viz.")
        elif kind == "cifar":
            depth = st.selectbox("Depth", CIFAR_DEPTHS, _kept_index(CIFAR_DEPTHS, keys.SB_CIFAR_DEPTH),
                                 key=keys.SB_CIFAR_DEPTH)
            values.update(name=CIFAR_NAMES[depth], **_checkpoint_widgets(kind))
            _shared_weights(values, data_root, "Pretrained CIFAR-10 weights")
        elif kind == "densenet":
            values.update(name=DENSENET_NAME, **_checkpoint_widgets(kind))
            _shared_weights(values, data_root, "ODIN's pretrained CIFAR-10 weights")
        else:
            if kind == "gaia":
                depth = st.selectbox("Depth", tuple(GAIA_NAMES), _kept_index(GAIA_NAMES, keys.SB_GAIA_DEPTH),
                                     key=keys.SB_GAIA_DEPTH)
                values["name"] = GAIA_NAMES[depth]
            elif kind == "bit":
                values["name"] = st.selectbox("BiT model", BIT_NAMES, _kept_index(BIT_NAMES, keys.SB_BIT_NAME),
                                              key=keys.SB_BIT_NAME, help=(
                    "Big Transfer ResNetV2 (Kolesnikov et al. 2020); the GAIA paper's ImageNet results use "
                    "BiT-S-R101x1. Give its checkpoint (.pth.tar of GradNorm/GAIA or the original .npz)."))
            elif kind == "torchvision":
                values["name"] = st.text_input(
                    "torchvision model name", value=_kept(keys.SB_TV_NAME, "resnet18"), key=keys.SB_TV_NAME,
                    help="Any torchvision classification model, e.g. resnet50, convnext_tiny, vit_b_16. "
                         "Its ImageNet weights must be in the torch hub cache (nothing is downloaded unless "
                         "allowed), or give a checkpoint.").strip()
            else:
                values["name"] = "timm:" + st.text_input(
                    "timm model name", value=_kept(keys.SB_TIMM_NAME, "resnet18"), key=keys.SB_TIMM_NAME,
                    help="Any timm model, e.g. resnet50, resnetv2_50x1_bit.goog_in21k, convnext_atto. "
                         "Weights come from the local Hugging Face cache (nothing is downloaded unless "
                         "allowed), or give a checkpoint.").strip()
            values.update(_checkpoint_widgets(kind))
            random = st.checkbox("Random weights (no pretrained weights)", bool(_kept(random_key, False)),
                                 key=random_key,
                                 disabled=values["checkpoint"] is not None,
                                 help="Scores of an untrained model: useful to see what GAIA hooks, "
                                      "meaningless as a detector.")
            values["pretrained"] = not random
            if kind in HUB_KINDS:
                values["allow_download"] = st.toggle(
                    "Allow downloads", bool(_kept(keys.SB_ALLOW_DOWNLOAD, False)), key=keys.SB_ALLOW_DOWNLOAD,
                    disabled=restriction_active(),
                    help="Fetch missing pretrained weights from the internet into the local cache "
                         "(off when the app is served to others).")
            if values["checkpoint"] is None and not random and kind in ("gaia", "bit"):
                raise GaiaVizError(f"{values['name']} has no built-in weights: upload a checkpoint, give "
                                   "its path, or tick 'Random weights'")
    except GaiaVizError as exc:
        fix = SetupFix("Use random weights", ((random_key, True),)) if "built-in weights" in str(exc) else None
        choice.errors.append(setup_error(str(exc), keys.checkpoint_path(kind), fix))
    choice.values = values
    return choice


def _policy_widget(data_kind: str) -> str:
    options = [*OOD_POLICIES, BOTH_POLICIES]
    key = keys.ood_policy(data_kind)
    if st.session_state.get(key) not in options:
        st.session_state[key] = DEFAULT_POLICY[data_kind]
    return st.selectbox(
        "OOD resize policy", options, _kept_index(options, key), key=key,
        help="How OOD images of another size reach the model's input size. center-crop keeps the "
             "pixel scale (the GAIA paper's CIFAR protocol); resize squashes the whole image "
             "(OpenOOD). They give different numbers; 'both' scores one OOD set per policy. "
             "The choice is recorded with every result.",
    )


def _data_kind_widget(data_root: str) -> str:
    """The data kind: CIFAR-10 (real) only where the data root holds it (a link asking for it
    elsewhere gets the kind the model reads, and a warning saying why)."""
    kinds = [k for k in DATA_KINDS if k != "cifar10-real" or loaders.real_cifar_available(data_root)]
    wanted = st.session_state.get(keys.SB_DATA_KIND)
    if wanted not in kinds:
        model_is_demo = st.session_state.get(keys.SB_MODEL_KIND, "demo") == "demo"
        st.session_state[keys.SB_DATA_KIND] = "demo" if model_is_demo else kinds[-1]
        if wanted is not None:  # the only change the sidebar makes on its own: say which and why
            warn_link(f"{DATA_KINDS.get(wanted, wanted)} is not available: the data root "
                      f"{echo(data_root) if data_root else '(none set)'} holds no cifar10/test with an OOD set, "
                      f"so the data is {DATA_KINDS[st.session_state[keys.SB_DATA_KIND]]}. Set the data root in the "
                      "sidebar.")
    kind = st.selectbox("Data", kinds, _kept_index(kinds, keys.SB_DATA_KIND), format_func=DATA_KINDS.get,
                        key=keys.SB_DATA_KIND,
                        label_visibility="collapsed")
    model_kind = st.session_state.get(keys.SB_MODEL_KIND, "demo")
    if (kind == "demo") != (model_kind == "demo"):
        st.caption("The demo sets are handwritten digits (ID) and five OOD sets; the demo CNN was trained on "
                   "those digits. " + ("This model was not: for it the digits are unfamiliar too, so GAIA compares "
                                       "two kinds of OOD images." if kind == "demo" else
                                       "Other images reach it as 28 x 28 grey digits; its numbers say how unlike "
                                       "digits they are."))
    return kind


def _demo_sets() -> dict:
    from gaia_viz.demo import DEMO_ID_NAME, DEMO_OOD_NAMES

    st.session_state.setdefault(keys.SB_DEMO_OOD, list(DEMO_OOD_NAMES))
    chosen = st.multiselect("OOD sets", DEMO_OOD_NAMES, _kept_choices(DEMO_OOD_NAMES, keys.SB_DEMO_OOD),
                            key=keys.SB_DEMO_OOD,
                            help="Real images bundled with installed packages: LFW faces, "
                                 "skimage textures and photos, font letters, uniform noise.")
    return dict(label="demo", id=(DEMO_ID_NAME, f"demo:{DEMO_ID_NAME}"),
                fit=(f"{DEMO_ID_NAME}-train", f"demo:{DEMO_ID_NAME}:train"), ood=[(n, f"demo:{n}") for n in chosen])


def _benchmark_sets(data_root: str) -> dict:
    found = loaders.benchmark_sets(data_root)
    ood_keys = [k for k, v in found.items() if v["role"] == "ood" and "data_root" not in v]
    if keys.SB_BENCH_OOD not in st.session_state:
        requested = st.session_state.pop(keys.SB_BENCH_OOD_REQUESTED, None)
        st.session_state[keys.SB_BENCH_OOD] = ([k for k in requested if k in ood_keys] if requested else
                                               [k for k in ood_keys if k == "textures"] or ood_keys)
    chosen = st.multiselect("OOD sets", ood_keys, _kept_choices(ood_keys, keys.SB_BENCH_OOD), key=keys.SB_BENCH_OOD,
                            format_func=lambda k: f"{k}: {found[k]['description']}")
    fit = ("cifar10-train-5k", found["cifar10-train-5k"]["spec"]) if "cifar10-train-5k" in found else None
    st.caption("ID: CIFAR-10 test; fit set (ReAct, KNN, Mahalanobis, ...): CIFAR-10 train-5k.")
    return dict(label=DATA_KINDS["cifar10-real"], id=("cifar10-test", found["cifar10-test"]["spec"]), fit=fit,
                ood=[(k, found[k]["spec"]) for k in chosen])


def _custom_sets(choice: _Choice) -> dict:
    st.caption("Sources: a folder path (class sub-folders give labels), `torchvision:CIFAR10:test` "
               "(under the data root), `demo:faces`, or `images:a.png,b.png`.")
    id_spec = st.text_input("ID test set", _kept(keys.SB_CUSTOM_ID, ""), key=keys.SB_CUSTOM_ID,
                            placeholder="/data/cifar10/test").strip()
    fit_spec = st.text_input("Fit set (ID training data; only for the methods that fit)",
                             _kept(keys.SB_CUSTOM_FIT, ""),
                             key=keys.SB_CUSTOM_FIT, placeholder="optional").strip()
    ood_text = st.text_area("OOD sets, one per line (`name = source` or just the source)",
                            _kept(keys.SB_CUSTOM_OOD, ""),
                            key=keys.SB_CUSTOM_OOD,
                            placeholder="textures = /data/dtd/images\nsvhn = torchvision:SVHN:test")
    if not id_spec:
        choice.errors.append(setup_error("enter the ID test set (a folder path or a torchvision: source) "
                                         "in the sidebar", keys.SB_CUSTOM_ID))
    return dict(label=DATA_KINDS["custom"], id=("id", id_spec), fit=("fit", fit_spec) if fit_spec else None,
                ood=loaders.parse_ood_lines(ood_text))


def _data_widgets(data_root: str) -> _Choice:
    """``values`` = label, id (name, spec), fit (name, spec)|None, ood [(name, spec)], policy."""
    choice = _Choice()
    kind = _data_kind_widget(data_root)
    values = (_demo_sets() if kind == "demo" else _benchmark_sets(data_root) if kind == "cifar10-real"
              else _custom_sets(choice))
    values["policy"] = _policy_widget(kind)
    if not values["ood"] and not choice.errors:
        widget = {"demo": keys.SB_DEMO_OOD, "cifar10-real": keys.SB_BENCH_OOD}.get(kind, keys.SB_CUSTOM_OOD)
        choice.errors.append(setup_error("choose at least one OOD set in the sidebar", widget))
    choice.values = values
    return choice


def _preset_widget(model_name: str, model, kind: str) -> str:
    default = loaders.model_default_preset(model_name, model)
    options = list(PRESETS)
    key = keys.preset(model_name if kind != "demo" else "demo")
    requested = st.session_state.pop(keys.SB_PRESET_REQUESTED, None)
    if requested in options:
        st.session_state[key] = requested
    if st.session_state.get(key) not in options:
        st.session_state[key] = default
    preset = st.selectbox(
        "Preprocessing preset", options, _kept_index(options, key), key=key,
        format_func=lambda p: f"{p} (model default)" if p == default else p,
        help="\n\n".join(f"**{p.name}**: {p.description}" for p in PRESETS.values()),
    )
    st.session_state[keys.SB_PRESET_CURRENT] = (preset, default)
    return preset


def _run_widgets() -> tuple[str, int, int | None, int]:
    st.selectbox("Device", list(DEVICE_CHOICES), _kept_index(DEVICE_CHOICES, keys.SB_DEVICE), key=keys.SB_DEVICE,
                 help="auto: the GPU when there is one, else the CPU. Scores do not depend on it "
                      "beyond the last digits, so results are kept when it changes.")
    batch_size = int(st.number_input("Batch size", 1, 4096, _kept(keys.SB_BATCH_SIZE, DEFAULT_BATCH_SIZE),
                                     key=keys.SB_BATCH_SIZE,
                                     help="Speed only: GAIA's scores are batch-independent, so results "
                                          "are kept when it changes."))
    st.session_state.setdefault(keys.SB_MAX_SAMPLES, DEFAULT_MAX_SAMPLES)
    max_samples = int(st.number_input(
        "Max samples per set (0 = all)", min_value=0, value=_kept(keys.SB_MAX_SAMPLES, DEFAULT_MAX_SAMPLES), step=100,
        key=keys.SB_MAX_SAMPLES,
        help="A deterministic random subset of every set keeps CPU runs short (the default "
             f"{DEFAULT_MAX_SAMPLES} scores the demo in about half a minute on two CPU cores). "
             "Use 0 for full benchmark numbers.",
    ))
    st.caption(f"At most {max_samples or 'all'} images per set"
               + (" — keeps CPU runs short; 0 uses every image." if max_samples else "."))
    st.session_state.setdefault(keys.SB_MAX_MEGAPIXELS, DEFAULT_MAX_PIXELS / 1e6)
    megapixels = float(st.number_input(
        "Pixel limit per image (megapixels)", min_value=0.01, max_value=1000.0,
        value=float(_kept(keys.SB_MAX_MEGAPIXELS, DEFAULT_MAX_PIXELS / 1e6)), step=10.0, key=keys.SB_MAX_MEGAPIXELS,
        help="Images with more pixels are refused before decoding (a guard against decompression bombs); "
             "raise it for very large photos."))
    return st.session_state[keys.SB_DEVICE], batch_size, (max_samples or None), int(megapixels * 1e6)


def _run_section() -> tuple[str | None, int, int | None, int, list[SetupError]]:
    """The run widgets and the data root: (device, batch size, sample cap, pixel limit, errors)."""
    st.subheader("Run")
    device_choice, batch_size, max_samples, max_pixels = _run_widgets()
    st.text_input("Data root", _kept(keys.SB_DATA_ROOT, ""), key=keys.SB_DATA_ROOT,
                  help="Folder with standard layouts (cifar10/test, textures/images, LSUN, iSUN, "
                       "..., models/) and torchvision datasets. Default: $GAIA_VIZ_DATA_ROOT.")
    root_error = loaders.checked_data_root()[1]
    errors = [root_error] if root_error else []
    device = None
    try:
        device = resolve_device(device_choice)
        st.caption(f"Device: **{device}**.")
    except GaiaVizError as exc:
        errors.append(setup_error(str(exc), keys.SB_DEVICE, SetupFix("Use the CPU", ((keys.SB_DEVICE, "cpu"),))))
    for error in errors:
        show_error(error)
    return device, batch_size, max_samples, max_pixels, errors


def _model_section(data_root: str, device: str | None):
    """The model widgets, the model they name and its preset: (values, model, preset, errors)."""
    st.subheader("Model")
    choice = _model_widgets(data_root)
    kind = st.session_state.get(keys.SB_MODEL_KIND, "demo")
    model, errors = None, list(choice.errors)
    if not errors and device is not None:
        model, errors = loaders.load_model(choice.values, device, kind)
    for error in errors:
        show_error(error)
    preset = _preset_widget(choice.values.get("name", ""), model, kind)
    return choice.values, model, preset, errors


def _data_section(data_root: str, preset: str, max_samples: int | None, max_pixels: int):
    """The data widgets and the sets they name: (values, opened sets or None, errors)."""
    st.subheader("Data")
    choice = _data_widgets(data_root)
    opened, errors = None, list(choice.errors)
    if not errors:
        opened, errors = loaders.open_sets(choice.values, preset, data_root, max_samples, max_pixels)
    for error in errors:
        show_error(error)
    if opened is not None:
        skipped = sum(len(getattr(s, "skipped", [])) for s in [opened[0], *opened[1].values()])
        if skipped:
            st.warning(f"{skipped} unreadable image files were skipped.")
    return choice.values, opened, errors


def sidebar() -> Setup | None:
    """Draw the sidebar, load what it names; the Setup, or None (errors under ``keys.SETUP_ERRORS``)."""
    st.session_state.setdefault(keys.SB_DATA_ROOT, loaders.default_data_root())
    data_root = loaders.checked_data_root()[0]
    with st.sidebar:
        model_box, data_box, run_box = st.container(), st.container(), st.container()
        with run_box:
            device, batch_size, max_samples, max_pixels, run_errors = _run_section()
        with model_box:
            model_values, model, preset, model_errors = _model_section(data_root, device)
        with data_box:
            data_values, opened, data_errors = _data_section(data_root, preset, max_samples, max_pixels)
    errors = run_errors + model_errors + data_errors
    st.session_state[keys.SETUP_ERRORS] = errors
    setup = None
    if not errors and model is not None and opened is not None:
        setup = build_setup(model, model_values, preset, data_values, opened, device=device, batch_size=batch_size,
                            data_root=data_root, max_samples=max_samples)
    st.session_state[keys.SETUP] = setup
    return setup


__all__ = ["sidebar"]
