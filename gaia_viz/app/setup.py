"""The shared sidebar (model, data, preprocessing, device) and the cached loaders behind it.

Every page gets its :class:`Setup` from :func:`current_setup` (or :func:`require_setup`):
``app.py`` draws the sidebar once per run (:func:`sidebar`) before the page runs, so its
widgets keep their values across pages; a page run on its own (``streamlit run
pages/2_Evaluate.py``, or a test) finds no sidebar drawn in this run and draws it itself.

Caching: models live in ``st.cache_resource`` (keyed by name, checkpoint digest, device),
image sources in ``st.cache_resource`` (keyed by spec, preset, policy, sample cap), finished
evaluations in a process-wide store keyed by ``(setup.key(), methods)`` so a second visit is
instant, and every scored chunk in the on-disk run cache of :func:`gaia_viz.sweep.evaluate`
(``$GAIA_VIZ_CACHE_DIR`` or ``~/.cache/gaia-viz``) so an interrupted run resumes.

``st.session_state`` keys shared by the pages (widget keys are private: ``sb_*`` in the sidebar,
``<page>_*`` on the pages):

* ``"setup"``: the :class:`Setup` (or None after an error) drawn in this run.
* ``"setup_errors"``: the sidebar's error messages of this run (empty when the set-up loaded).
* ``"evaluation"``: the latest :class:`gaia_viz.sweep.Evaluation` of this session;
  ``"evaluation_setup_key"``: the ``Setup.key()`` it was made with.
* ``"cancel_requested"``: set by the Cancel button, polled by the running sweep between chunks;
  while True the pages do not start a run on their own.
* ``"threshold"``: the threshold last chosen on the Tune threshold page:
  ``{"method", "ood_set", "threshold", "tpr_at_id"}``.
* ``"layer_subset"``: the layers chosen on the Channels and layers page:
  ``{"zero": [GAIA-Z layers], "inner": [GAIA-A inner layers]}``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import streamlit as st

from gaia_viz.app.paths import escape_markdown
from gaia_viz.cache import stable_hash
from gaia_viz.data.presets import OOD_POLICIES, PRESETS, id_policy
from gaia_viz.errors import GaiaVizError
from gaia_viz.paths import check_allowed, check_text, echo, path_policy
from gaia_viz.settings import resolve_device

DEFAULT_MAX_SAMPLES = 1000
DEFAULT_BATCH_SIZE = 64
CHECKPOINT_TYPES = ["pt", "pth", "th", "safetensors"]
BOTH_POLICIES = "both"

MODEL_KINDS = {
    "demo": "Demo digit CNN (embedded)",
    "cifar": "CIFAR ResNet (20-110)",
    "gaia": "GAIA ResNet-18/34",
    "torchvision": "torchvision classifier",
}
DATA_KINDS = {
    "demo": "Demo sets (digits vs. 5 OOD sets)",
    "cifar10-real": "CIFAR-10 (real)",
    "custom": "Image folders / torchvision datasets",
}
CIFAR_DEPTHS = (20, 32, 44, 56, 110)
DEFAULT_POLICY = {"demo": "resize", "cifar10-real": BOTH_POLICIES, "custom": "center-crop"}
MAX_STORED_EVALUATIONS = 8


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

    @property
    def is_demo(self) -> bool:
        return self.model_name == "demo" and self.data_label == "demo"

    def ood_policy_of(self, ood_name: str) -> str:
        return self.ood_sets[ood_name].ood_policy

    def describe(self) -> dict:
        """What a result must record about how it was made (JSON-serialisable)."""
        return dict(
            model_name=self.model_name, checkpoint=self.checkpoint,
            checkpoint_digest=self.checkpoint_digest, preset=self.preset,
            ood_policy=self.ood_policy,
            ood_policies={n: s.ood_policy for n, s in self.ood_sets.items()},
            data=self.data_label, sources=self.sources, data_root=self.data_root,
            max_samples=self.max_samples,
            fit_source=self.sources.get(self.fit_set.name) if self.fit_set is not None else None,
        )

    def run_config(self):
        """The :class:`gaia_viz.run_config.RunConfig` facts this set-up records."""
        from gaia_viz.run_config import RunConfig

        facts = self.describe()
        return RunConfig(model_name=facts["model_name"], checkpoint=facts["checkpoint"],
                         checkpoint_digest=facts["checkpoint_digest"], preset=facts["preset"],
                         sources=facts["sources"], fit_source=facts["fit_source"], data_root=facts["data_root"],
                         max_samples=facts["max_samples"], data=facts["data"])

    def key(self) -> str:
        """Stable hash of everything that changes the scores (device and batch size included,
        since GPU and CPU numbers differ in the last digits)."""
        return stable_hash(dict(self.describe(), device=self.device, batch_size=self.batch_size))


# --------------------------------------------------------------------------- cached loaders


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def _file_digest(path: str) -> str:
    """Path, size and mtime: a replaced checkpoint file is reloaded, an unchanged one is not."""
    stat = os.stat(path)
    return stable_hash([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def _cached_model(name: str, checkpoint_path: str | None, checkpoint_digest: str | None,
                  device: str, _checkpoint_bytes: bytes | None = None):
    from gaia_viz.models import load_model

    source = _checkpoint_bytes if _checkpoint_bytes is not None else checkpoint_path
    return load_model(name, checkpoint=source, device=device)


@st.cache_resource(max_entries=64, show_spinner="Opening images…")
def _cached_source(spec: str, preset: str, ood_policy: str, data_root: str | None,
                   name: str, max_samples: int | None, path_policy: str):
    """``path_policy`` (:meth:`gaia_viz.paths.PathPolicy.describe`) is in the key: a set opened
    where every path may be read is not handed out where paths are restricted."""
    from gaia_viz.data.sources import open_source

    return open_source(spec, preset, ood_policy=ood_policy, data_root=data_root, name=name,
                       max_samples=max_samples)


@st.cache_data(ttl=60, show_spinner=False)
def _benchmark_sets(data_root: str) -> dict:
    from gaia_viz.data.sources import find_benchmark_sets

    return find_benchmark_sets(data_root)


@st.cache_resource
def _evaluation_store() -> OrderedDict:
    """Finished evaluations of this process, newest last (shared by all sessions)."""
    return OrderedDict()


def default_data_root() -> str:
    """The data root as text ("" when there is none): :func:`gaia_viz.settings.data_root`."""
    from gaia_viz.settings import data_root

    root = data_root()
    return str(root) if root is not None else ""


# --------------------------------------------------------------------------- sidebar sections


def _on_model_kind_change():
    # The demo model only understands the demo digits and vice versa: keep the pair consistent.
    kind = st.session_state["sb_model_kind"]
    if kind == "demo":
        st.session_state["sb_data_kind"] = "demo"
    elif st.session_state.get("sb_data_kind") == "demo":
        st.session_state["sb_data_kind"] = "cifar10-real" if _real_cifar_available() else "custom"


def _on_data_kind_change():
    kind = st.session_state["sb_data_kind"]
    if kind == "demo":
        st.session_state["sb_model_kind"] = "demo"
    elif kind == "cifar10-real" and st.session_state.get("sb_model_kind") == "demo":
        st.session_state["sb_model_kind"] = "cifar"


def _real_cifar_available(data_root: str | None = None) -> bool:
    root = data_root if data_root is not None else checked_data_root()[0]
    if not root:
        return False
    found = _benchmark_sets(root)
    return "cifar10-test" in found and any(v["role"] == "ood" for v in found.values())


@dataclass
class _Choice:
    """What a sidebar section asked for (drawn even when loading it later fails)."""

    values: dict = field(default_factory=dict)
    error: str | None = None


def _checkpoint_widgets(kind: str, required: bool) -> dict:
    """``{"checkpoint": path or "upload:<name>", "data": uploaded bytes, "digest"}``."""
    upload = st.file_uploader("Checkpoint upload (.pt, .pth, .th, .safetensors)", type=CHECKPOINT_TYPES,
                              key=f"sb_checkpoint_upload::{kind}")
    path = st.text_input(
        "…or checkpoint path on the server", key=f"sb_checkpoint_path::{kind}",
        placeholder="/path/to/weights.pth",
        help="A state_dict saved with torch.save, or a .safetensors file; read with weights_only=True.",
    ).strip()
    if upload is not None:
        data = upload.getvalue()
        # hashing a 200 MB upload on every rerun would cost a noticeable fraction of a second
        digests = st.session_state.setdefault("_upload_digests", {})
        if upload.file_id not in digests:
            digests[upload.file_id] = _digest(data)
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
        return dict(checkpoint=expanded, data=None, digest=_file_digest(expanded))
    if required:
        raise GaiaVizError("this model has no built-in weights: upload a checkpoint or give its path")
    return dict(checkpoint=None, data=None, digest=None)


def _model_widgets(data_root: str) -> _Choice:
    """The model widgets: ``values`` = name, checkpoint, data, digest."""
    choice = _Choice()
    kind = st.selectbox("Model", list(MODEL_KINDS), format_func=MODEL_KINDS.get, key="sb_model_kind",
                        on_change=_on_model_kind_change, label_visibility="collapsed")
    try:
        if kind == "demo":
            choice.values = dict(name="demo", checkpoint=None, data=None, digest=None)
            st.caption("A small CNN trained on handwritten digits; its weights ship with gaia-viz.")
        elif kind == "cifar":
            depth = st.selectbox("Depth", CIFAR_DEPTHS, key="sb_cifar_depth")
            choice.values = dict(name=f"cifar_resnet{depth}")
            choice.values.update(_checkpoint_widgets(kind, required=False))
            if choice.values["checkpoint"] is None:
                shared = Path(data_root) / "models" / f"cifar10_resnet{depth}.th" if data_root else None
                if shared is not None and shared.is_file():
                    choice.values.update(checkpoint=str(shared), digest=_file_digest(str(shared)))
                    st.caption(f"Pretrained CIFAR-10 weights: {escape_markdown(shared)}.")
                else:
                    raise GaiaVizError(
                        f"cifar_resnet{depth} has no pretrained weights under the data root: upload a "
                        f"checkpoint, or set a data root holding models/cifar10_resnet{{20,56}}.th")
        elif kind == "gaia":
            depth = st.selectbox("Depth", (18, 34), key="sb_gaia_depth")
            choice.values = dict(name=f"gaia_resnet{depth}")
            choice.values.update(_checkpoint_widgets(kind, required=True))
        else:
            name = st.text_input(
                "torchvision model name", value="resnet18", key="sb_tv_name",
                help="Any torchvision classification model, e.g. resnet50, convnext_tiny, vit_b_16. "
                     "Its ImageNet weights must be in the torch hub cache (nothing is downloaded), "
                     "or give a checkpoint.").strip()
            choice.values = dict(name=name)
            choice.values.update(_checkpoint_widgets(kind, required=False))
    except GaiaVizError as exc:
        choice.error = str(exc)
    return choice


def _policy_widget(data_kind: str) -> str:
    options = [*OOD_POLICIES, BOTH_POLICIES]
    return st.selectbox(
        "OOD resize policy", options, index=options.index(DEFAULT_POLICY[data_kind]),
        key=f"sb_ood_policy::{data_kind}",
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
    """The data widgets: ``values`` = label, id (name, spec), fit (name, spec)|None, ood [(name, spec)], policy."""
    from gaia_viz.demo import DEMO_ID_NAME, DEMO_OOD_NAMES

    choice = _Choice()
    kinds = [k for k in DATA_KINDS if k != "cifar10-real" or _real_cifar_available(data_root)]
    if st.session_state.get("sb_data_kind") not in kinds:
        model_is_demo = st.session_state.get("sb_model_kind", "demo") == "demo"
        st.session_state["sb_data_kind"] = "demo" if model_is_demo else kinds[-1]
    kind = st.selectbox("Data", kinds, format_func=DATA_KINDS.get, key="sb_data_kind",
                        on_change=_on_data_kind_change, label_visibility="collapsed")
    if kind == "demo":
        chosen = st.multiselect("OOD sets", DEMO_OOD_NAMES, default=list(DEMO_OOD_NAMES), key="sb_demo_ood",
                                help="Real images bundled with installed packages: LFW faces, "
                                     "skimage textures and photos, font letters, uniform noise.")
        values = dict(label="demo", id=(DEMO_ID_NAME, f"demo:{DEMO_ID_NAME}"),
                      fit=(f"{DEMO_ID_NAME}-train", f"demo:{DEMO_ID_NAME}:train"),
                      ood=[(n, f"demo:{n}") for n in chosen])
    elif kind == "cifar10-real":
        found = _benchmark_sets(data_root)
        ood_keys = [k for k, v in found.items() if v["role"] == "ood" and "data_root" not in v]
        chosen = st.multiselect("OOD sets", ood_keys, default=[k for k in ood_keys if k == "textures"] or ood_keys,
                                key="sb_bench_ood", format_func=lambda k: f"{k}: {found[k]['description']}")
        fit = ("cifar10-train-5k", found["cifar10-train-5k"]["spec"]) if "cifar10-train-5k" in found else None
        values = dict(label=DATA_KINDS[kind], id=("cifar10-test", found["cifar10-test"]["spec"]), fit=fit,
                      ood=[(k, found[k]["spec"]) for k in chosen])
        st.caption("ID: CIFAR-10 test; fit set (ReAct, KNN, Mahalanobis): CIFAR-10 train-5k.")
    else:
        st.caption("Sources: a folder path (class sub-folders give labels), `torchvision:CIFAR10:test` "
                   "(under the data root), `demo:faces`, or `images:a.png,b.png`.")
        id_spec = st.text_input("ID test set", key="sb_custom_id", placeholder="/data/cifar10/test").strip()
        fit_spec = st.text_input("Fit set (ID training data; only for ReAct, KNN, Mahalanobis)",
                                 key="sb_custom_fit", placeholder="optional").strip()
        ood_text = st.text_area("OOD sets, one per line (`name = source` or just the source)",
                                key="sb_custom_ood",
                                placeholder="textures = /data/dtd/images\nsvhn = torchvision:SVHN:test")
        values = dict(label=DATA_KINDS[kind], id=("id", id_spec), fit=("fit", fit_spec) if fit_spec else None,
                      ood=parse_ood_lines(ood_text))
        if not id_spec:
            choice.error = "enter the ID test set (a folder path or a torchvision: source) in the sidebar"
    values["policy"] = _policy_widget(kind)
    if not values["ood"] and choice.error is None:
        choice.error = "choose at least one OOD set in the sidebar"
    choice.values = values
    return choice


def _open_sets(values: dict, preset: str, data_root: str, max_samples: int | None):
    """Open the ID, fit and OOD sets the data widgets named: (id_set, ood_sets, fit_set, sources)."""
    root = data_root or None
    for name, _spec in values["ood"]:
        check_text(name, "data set name")
    paths_key = path_policy().describe()  # the paths themselves are checked by open_source
    id_name, id_spec = values["id"]
    id_set = _cached_source(id_spec, preset, id_policy(preset), root, id_name, max_samples, paths_key)
    sources = {id_name: id_spec}
    fit_set = None
    if values["fit"] is not None:
        fit_name, fit_spec = values["fit"]
        fit_set = _cached_source(fit_spec, preset, id_policy(preset), root, fit_name, max_samples, paths_key)
        sources[fit_name] = fit_spec
    policies = _policies(values["policy"])
    ood_sets = {}
    for base, spec in values["ood"]:
        for policy in policies:
            name = f"{base} ({policy})" if len(policies) > 1 else base
            if name in ood_sets or name == id_name:
                raise GaiaVizError(f"two data sets are named {name!r}; give the OOD sets distinct names")
            ood_sets[name] = _cached_source(spec, preset, policy, root, name, max_samples, paths_key)
            sources[name] = spec
    return id_set, ood_sets, fit_set, sources


def checked_data_root() -> tuple[str, str | None]:
    """The data root of the sidebar and an error message: ``("", why)`` when the visitor typed a
    root outside the allowed data roots (the server's own default is always accepted)."""
    root = str(st.session_state.get("sb_data_root", default_data_root())).strip()
    if not root or root == default_data_root():
        return root, None
    try:
        check_allowed(root, "data root")
    except GaiaVizError as exc:
        return "", str(exc)
    return root, None


def _preset_widget(model_name: str, model) -> str:
    from gaia_viz.models import default_preset, head_module

    num_classes = None
    if model is not None:
        try:
            num_classes = head_module(model)[1].out_features
        except GaiaVizError:
            pass
    try:
        default = default_preset(model_name, num_classes)
    except GaiaVizError:
        default = "imagenet224"
    options = list(PRESETS)
    return st.selectbox(
        "Preprocessing preset", options, index=options.index(default), key=f"sb_preset::{model_name}",
        format_func=lambda p: f"{p} (model default)" if p == default else p,
        help="\n\n".join(f"**{p.name}**: {p.description}" for p in PRESETS.values()),
    )


def _run_widgets() -> tuple[str, int, int | None]:
    device_choice = st.selectbox("Device", ["auto", "cpu", "cuda"], key="sb_device",
                                 help="auto: the GPU when there is one, else the CPU")
    batch_size = int(st.number_input("Batch size", 1, 4096, DEFAULT_BATCH_SIZE, key="sb_batch_size"))
    st.session_state.setdefault("sb_max_samples", DEFAULT_MAX_SAMPLES)
    max_samples = int(st.number_input(
        "Max samples per set (0 = all)", min_value=0, step=100, key="sb_max_samples",
        help="A deterministic random subset of every set keeps CPU runs short (the default "
             f"{DEFAULT_MAX_SAMPLES} scores the demo in about half a minute on two CPU cores). "
             "Use 0 for full benchmark numbers.",
    ))
    st.caption(f"At most {max_samples or 'all'} images per set"
               + (" — keeps CPU runs short; 0 uses every image." if max_samples else "."))
    return device_choice, batch_size, (max_samples or None)


def sidebar() -> Setup | None:
    """Draw the sidebar, load what it names; the Setup, or None after an ``st.error``.

    Every widget is drawn even when an earlier section fails, so no choice is lost.
    """
    errors: list[str] = []
    st.session_state.setdefault("sb_data_root", default_data_root())
    data_root, root_error = checked_data_root()
    if root_error:
        errors.append(root_error)
    model = device = None
    with st.sidebar:
        model_box, data_box, run_box = st.container(), st.container(), st.container()
        with run_box:
            st.subheader("Run")
            device_choice, batch_size, max_samples = _run_widgets()
            st.text_input("Data root", key="sb_data_root",
                          help="Folder with standard layouts (cifar10/test, textures/images, LSUN, iSUN, "
                               "..., models/) and torchvision datasets. Default: $GAIA_VIZ_DATA_ROOT.")
            try:
                device = resolve_device(device_choice)
                st.caption(f"Device: **{device}**.")
            except GaiaVizError as exc:
                errors.append(str(exc))
        with model_box:
            st.subheader("Model")
            model_choice = _model_widgets(data_root)
            if model_choice.error:
                errors.append(model_choice.error)
            elif device is not None:
                try:
                    v = model_choice.values
                    model = _cached_model(v["name"], None if v["data"] is not None else v["checkpoint"],
                                          v["digest"], device, _checkpoint_bytes=v["data"])
                except GaiaVizError as exc:
                    errors.append(str(exc))
                except (RuntimeError, ValueError, TypeError, KeyError, OSError) as exc:
                    # building a model from a user's weights can fail inside torch in many ways;
                    # the visitor needs the reason, the page must go on
                    reason = (str(exc).splitlines() or [type(exc).__name__])[0]
                    errors.append(f"cannot load the model {v['name']!r}: {reason}; check the model "
                                  "name, the checkpoint and its number of classes")
            model_name = model_choice.values.get("name", "")
            preset = _preset_widget(model_name, model)
        with data_box:
            st.subheader("Data")
            data_choice = _data_widgets(data_root)
            opened = None
            if data_choice.error:
                errors.append(data_choice.error)
            else:
                try:
                    opened = _open_sets(data_choice.values, preset, data_root, max_samples)
                except GaiaVizError as exc:
                    errors.append(str(exc))
                except (PermissionError, IsADirectoryError, FileNotFoundError) as exc:
                    errors.append(f"cannot read {exc.filename or exc}: {exc.strerror or exc}")
            if opened is not None:
                skipped = sum(len(getattr(s, "skipped", [])) for s in [opened[0], *opened[1].values()])
                if skipped:
                    st.warning(f"{skipped} unreadable image files were skipped.")
        for message in errors:
            st.error(escape_markdown(message))
    st.session_state["setup_errors"] = errors
    setup = None
    if not errors and model is not None and opened is not None:
        id_set, ood_sets, fit_set, sources = opened
        v = model_choice.values
        setup = Setup(
            model_name=model_name, model=model, preset=preset, ood_policy=data_choice.values["policy"],
            device=device, batch_size=batch_size, id_set=id_set, ood_sets=ood_sets, fit_set=fit_set,
            checkpoint=v["checkpoint"], data_root=data_root or None, max_samples=max_samples,
            data_label=data_choice.values["label"], sources=sources, checkpoint_digest=v["digest"],
        )
    st.session_state["setup"] = setup
    st.session_state["_sidebar_run"] = _run_token()
    return setup


def _run_token():
    """An object unique to the current script run (Streamlit makes a new cursor map per run;
    keeping a reference to it in the session state keeps its identity from being reused)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return None if ctx is None else ctx.cursors


def current_setup() -> Setup | None:
    """The Setup of this run: drawn by ``app.py`` already, or drawn now for a page run alone."""
    token = _run_token()
    if token is not None and st.session_state.get("_sidebar_run") is token:
        return st.session_state.get("setup")
    return sidebar()


sidebar_setup = current_setup  # the name the Inspect page imports


@contextlib.contextmanager
def user_errors(context: str = ""):
    """Show a :class:`GaiaVizError` raised in the block as ``st.error`` (prefixed by ``context``)
    and go on with the page: one broken chart does not take the others down."""
    try:
        yield
    except GaiaVizError as exc:
        st.error(escape_markdown(f"{context}{exc}"))


def require_setup() -> Setup:
    """The Setup of this run; otherwise the sidebar's errors in the page and ``st.stop()``."""
    setup = current_setup()
    if setup is None:
        for message in st.session_state.get("setup_errors") or ["the set-up in the sidebar is incomplete"]:
            st.error(escape_markdown(message))
        st.caption("Fix the set-up in the sidebar; the page updates at once.")
        st.stop()
    return setup


# --------------------------------------------------------------------------- evaluations


def evaluation_key(setup: Setup, methods: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    return setup.key(), tuple(methods)


def _remember(setup: Setup, evaluation, make_current: bool) -> None:
    """Make ``evaluation`` the session's current one when asked, when the current one belongs
    to another set-up, or when it holds at least the current one's methods (so a page that
    needs only GAIA does not hide the baselines the user ran on the Evaluate page)."""
    current = st.session_state.get("evaluation")
    if (make_current or current is None or st.session_state.get("evaluation_setup_key") != setup.key()
            or set(current.methods) <= set(evaluation.methods)):
        st.session_state["evaluation"] = evaluation
        st.session_state["evaluation_setup_key"] = setup.key()


def cached_evaluation(setup: Setup, methods: Sequence[str], make_current: bool = False):
    """The finished evaluation of ``setup`` with exactly ``methods``, or None (runs nothing)."""
    store = _evaluation_store()
    key = evaluation_key(setup, methods)
    if key in store:
        store.move_to_end(key)
        _remember(setup, store[key], make_current)
        return store[key]
    return None


def session_evaluation(setup: Setup, need: Sequence[str] = ()):
    """This session's latest evaluation if it was made with ``setup`` and has ``need`` methods."""
    evaluation = st.session_state.get("evaluation")
    if evaluation is None or st.session_state.get("evaluation_setup_key") != setup.key():
        return None
    return evaluation if all(m in evaluation.methods for m in need) else None


def _request_cancel():
    st.session_state["cancel_requested"] = True


def get_evaluation(setup: Setup, methods: Sequence[str], make_current: bool = False):
    """Run :func:`gaia_viz.sweep.evaluate` for ``setup`` with a progress bar and a Cancel button.

    Returns the Evaluation (from the store, instantly, when this set-up and these methods were
    scored before). After an error or a cancel it shows why and stops the page
    (``st.stop()``), so callers never get None; finished chunks stay in the run cache and the
    next run resumes from them. ``make_current``: always make it ``st.session_state["evaluation"]``
    (the Evaluate page does; otherwise see :func:`_remember`).
    """
    from gaia_viz.sweep import EvaluationCancelled, SweepSettings, evaluate

    found = cached_evaluation(setup, methods, make_current)
    if found is not None:
        return found
    st.session_state["cancel_requested"] = False
    bar = st.progress(0.0, text="Starting…")
    cancel_slot = st.empty()
    cancel_slot.button("Cancel", on_click=_request_cancel, key="cancel_evaluation",
                       help="Stops after the current chunk; finished chunks are kept, so the next run resumes.")

    def progress(fraction: float, message: str):
        bar.progress(min(1.0, max(0.0, float(fraction))), text=message)

    try:
        evaluation = evaluate(
            setup.model, setup.id_set, setup.ood_sets,
            SweepSettings(methods=list(methods), batch_size=setup.batch_size),
            fit_set=setup.fit_set, device=setup.device, progress=progress,
            cancel=lambda: bool(st.session_state.get("cancel_requested")),
            run=setup.run_config(),
        )
    except EvaluationCancelled as exc:
        bar.empty()
        cancel_slot.empty()
        st.warning(escape_markdown(f"Evaluation cancelled ({exc}). Run it again to resume."))
        st.stop()
    except GaiaVizError as exc:
        bar.empty()
        cancel_slot.empty()
        st.error(escape_markdown(exc))
        st.stop()
    except (RuntimeError, OSError) as exc:
        bar.empty()
        cancel_slot.empty()
        st.error(f"The model could not score these images: {escape_markdown(str(exc).splitlines()[0])}. "
                 "Check that the preprocessing preset matches the model (input channels and size).")
        st.stop()
    cancel_slot.empty()
    bar.progress(1.0, text=f"Done: {len(evaluation.scores):,} images in {evaluation.seconds:.1f} s"
                           f" ({evaluation.cache_hits} data sets from the run cache)")
    store = _evaluation_store()
    store[evaluation_key(setup, methods)] = evaluation
    while len(store) > MAX_STORED_EVALUATIONS:
        store.popitem(last=False)
    _remember(setup, evaluation, make_current)
    return evaluation


def require_evaluation(setup: Setup, need: Sequence[str] = ()):
    """An evaluation of ``setup`` holding the ``need`` methods, for pages that only read one.

    Uses this session's latest one, else a stored one with the default methods, else runs the
    default methods: at once for the demo (unless the user cancelled), after a button otherwise.
    Until there is one it draws the button and stops the page.
    """
    from gaia_viz.sweep import DEFAULT_METHODS

    evaluation = session_evaluation(setup, need)
    if evaluation is not None:
        return evaluation
    methods = list(dict.fromkeys([*DEFAULT_METHODS, *need]))
    evaluation = cached_evaluation(setup, methods)
    if evaluation is not None:
        return evaluation
    clicked = st.button(f"Run the evaluation ({', '.join(methods)})", type="primary", key="require_run")
    if clicked:
        st.session_state["cancel_requested"] = False
    if clicked or (setup.is_demo and not st.session_state.get("cancel_requested")):
        return get_evaluation(setup, methods)
    st.info("This page reads an evaluation of the current set-up: run one here or on the Evaluate page.")
    st.stop()
