"""Every key the app stores in ``st.session_state``: its owner (the one module or page that
writes it) and what it holds. Modules and pages take the names from here, never a string.

Three kinds of keys: the session's state (the Setup, the Selection, the link's bookkeeping,
the runs), the sidebar's widgets (``sb_*``, the set-up's part of the state model) and the
pages' widgets (``w_*``, seeded from the Selection by
:func:`gaia_viz.app.state.bound_widget`). A widget whose options depend on the set-up
carries the set-up's identity in its key: those keys are functions of it. Keys that only
name an element (charts, buttons, download buttons, fragments, containers: nothing reads
their value back) stay with the element.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- session state

SETUP = "setup"  # sidebar: the Setup built in this run (None while the set-up has an error)
SETUP_ERRORS = "setup_errors"  # sidebar: the SetupError list of this run ([] when it is complete)
SELECTION = "selection"  # state: the Selection, what the user chose on any page
SESSION_TOKEN = "session_token"  # state: this browser session's id in the job registry
LINK_WARNINGS = "link_warnings"  # state: what was wrong in the link the session opened with, shown once
WRITTEN_QUERY = "link_written_query"  # state: the query string this session wrote last
WRITTEN_PAGE = "link_written_page"  # state: the page (script hash) of the run that wrote it
LINKS_DRAWN_WITH = "links_drawn_with"  # state: the view query the last full run drew its links with
DRAWN_WIDGETS = "widgets_drawn_last_run"  # state: the widget keys the last run drew
KEPT_SETUP = "setup_widgets_kept"  # state: the sidebar's plain widget values as the last run left them
LINK_PENDING = "link_pending_checks"  # state: the link's OOD set and image, checked once the set-up is built
AUTO_RUN = "link_auto_run"  # shell: the session was opened with a link to a view (auto-run what it needs)
CANCELLED = "cancelled_runs"  # page: set-up score keys whose run this session cancelled
DISMISSED_RUNS = "dismissed_runs"  # page: ids of the ended runs whose banner this session dismissed
SEEN_FINISHED_RUNS = "seen_finished_runs"  # page: ids of the ended runs the status already reran the page for
REPORT_RESULT = "report_result"  # pages/6_Real_data_report: the last report this session ran
CHART_LIBRARY_SENT = "chart_library_preloaded"  # shell: the hidden chart that loads Plotly's code was sent

# --------------------------------------------------------------------------- sidebar widgets (sb_*)

SIDEBAR_PREFIX = "sb_"
SB_MODEL_KIND = "sb_model_kind"  # sidebar: the model kind (catalogue.MODEL_KINDS)
SB_CIFAR_DEPTH = "sb_cifar_depth"  # sidebar: the CIFAR ResNet depth
SB_GAIA_DEPTH = "sb_gaia_depth"  # sidebar: the GAIA ResNet depth (18 or 34)
SB_BIT_NAME = "sb_bit_name"  # sidebar: the BiT model name
SB_TV_NAME = "sb_tv_name"  # sidebar: the torchvision model name
SB_TIMM_NAME = "sb_timm_name"  # sidebar: the timm model name (without "timm:")
SB_ALLOW_DOWNLOAD = "sb_allow_download"  # sidebar: fetch missing hub weights
SB_UPLOAD_DIGESTS = "sb_upload_digests"  # sidebar: {upload file id: digest} of checkpoint uploads
SB_DATA_KIND = "sb_data_kind"  # sidebar: the data kind (catalogue.DATA_KINDS)
SB_DEMO_OOD = "sb_demo_ood"  # sidebar: the demo OOD sets chosen
SB_BENCH_OOD = "sb_bench_ood"  # sidebar: the CIFAR-10 benchmark OOD sets chosen
SB_BENCH_OOD_REQUESTED = "sb_bench_ood_requested"  # links (via the sidebar): a link's benchmark OOD sets, applied when drawn
SB_CUSTOM_ID = "sb_custom_id"  # sidebar: the custom ID test set source
SB_CUSTOM_FIT = "sb_custom_fit"  # sidebar: the custom fit set source
SB_CUSTOM_OOD = "sb_custom_ood"  # sidebar: the custom OOD sets, one per line
SB_PRESET_REQUESTED = "sb_preset_requested"  # links (via the sidebar): a link's preset, applied when drawn
SB_PRESET_CURRENT = "sb_preset_current"  # sidebar: (the preset drawn, the model's default preset)
SB_MAX_SAMPLES = "sb_max_samples"  # sidebar: the sample cap per set (0 = all)
SB_MAX_MEGAPIXELS = "sb_max_megapixels"  # sidebar: the pixel limit per image, in megapixels (Inspect's uploads too)
SB_DEVICE = "sb_device"  # sidebar: the device choice (settings.DEVICE_CHOICES)
SB_BATCH_SIZE = "sb_batch_size"  # sidebar: the batch size
SB_DATA_ROOT = "sb_data_root"  # sidebar: the data root typed by the visitor
SB_CHECKPOINT_PATH = "sb_checkpoint_path::"  # sidebar: prefix of checkpoint_path(kind)
SB_PRESET = "sb_preset::"  # sidebar: prefix of preset(model)
SB_OOD_POLICY = "sb_ood_policy::"  # sidebar: prefix of ood_policy(data kind)


def checkpoint_path(kind: str) -> str:
    """sidebar: the checkpoint path on the server typed for model kind ``kind``."""
    return f"{SB_CHECKPOINT_PATH}{kind}"


def checkpoint_upload(kind: str) -> str:
    """sidebar: the checkpoint file uploaded for model kind ``kind``."""
    return f"sb_checkpoint_upload::{kind}"


def random_weights(kind: str) -> str:
    """sidebar: "Random weights" ticked for model kind ``kind``."""
    return f"sb_random_weights::{kind}"


def preset(model: str) -> str:
    """sidebar: the preprocessing preset chosen for ``model`` ("demo" for the demo CNN)."""
    return f"{SB_PRESET}{model}"


def ood_policy(data_kind: str) -> str:
    """sidebar: the OOD resize policy chosen for ``data_kind``."""
    return f"{SB_OOD_POLICY}{data_kind}"


# --------------------------------------------------------------------------- page widgets (w_*)

PAGE_PREFIX = "w_"
W_METHODS = "w_methods"  # pages/2_Evaluate: the methods shown (Selection.methods)
W_EVALUATE_BOOTSTRAP = "w_evaluate_bootstrap"  # pages/2_Evaluate: bootstrap intervals ticked
W_EVALUATE_HIST_SETS = "w_evaluate_hist_sets"  # pages/2_Evaluate: Selection.histogram_sets
W_EVALUATE_HIST_SCALE = "w_evaluate_hist_scale"  # pages/2_Evaluate: Selection.histogram_scale
W_TUNE_MODE = "w_tune_mode"  # pages/3_Tune_threshold: Selection.threshold_mode
W_TUNE_TPR = "w_tune_tpr"  # pages/3_Tune_threshold: Selection.tpr
W_INSPECT_ATTRIBUTION = "w_inspect_attribution"  # inspect_panels: Selection.attribution
W_INSPECT_ATTR_VIEW = "w_inspect_attr_view"  # inspect_panels: Selection.attribution_view
W_DATA_MAP = "w_data_map"  # pages/7_Data_map: the map chart's point selection (picks an image)


def ood_set(score_key: str) -> str:
    """pages 2, 3, 4: Selection.ood_set for the set-up ``score_key``."""
    return f"w_ood::{score_key}"


def tune_method(score_key: str) -> str:
    """pages/3_Tune_threshold: Selection.method."""
    return f"w_tune_method::{score_key}"


def tune_score(score_key: str, method: str, layers) -> str:
    """pages/3_Tune_threshold: Selection.threshold for ``method`` on ``layers``."""
    return f"w_tune_score::{score_key}::{method}::{layers}"


def tune_inspect(score_key: str) -> str:
    """pages/3_Tune_threshold: the hardest case picked to open on Inspect."""
    return f"w_tune_inspect::{score_key}"


def layer_subset(score_key: str, method: str) -> str:
    """pages/4_Channels_and_layers: Selection.zero_layers / inner_layers of ``method``."""
    return f"w_layers::{score_key}::{method}"


def inspect_source(score_key: str) -> str:
    """pages/1_Inspect: the data set (or the uploads) Selection.image is taken from."""
    return f"w_inspect_source::{score_key}"


def inspect_index(score_key: str, source: str) -> str:
    """pages/1_Inspect: the index of Selection.image in ``source``."""
    return f"w_inspect_index::{score_key}::{source}"


def inspect_target(score_key: str, predicted) -> str:
    """inspect_panels: Selection.target (the predicted class ``predicted`` by default)."""
    return f"w_inspect_target::{score_key}::{predicted}"


def inspect_param(score_key: str, method: str, param: str) -> str:
    """inspect_panels: one researcher setting in Selection.attribution_params."""
    return f"w_inspect_param::{score_key}::{method}::{param}"


def map_method(score_key: str) -> str:
    """pages/7_Data_map: Selection.method."""
    return f"w_map_method::{score_key}"


def map_color(score_key: str) -> str:
    """pages/7_Data_map: Selection.map_color."""
    return f"w_map_color::{score_key}"


def map_compare(score_key: str) -> str:
    """pages/7_Data_map: Selection.map_compare."""
    return f"w_map_compare::{score_key}"


# --------------------------------------------------------------------------- page-local widgets (read by their page alone)

INSPECT_UPLOAD = "inspect_upload"  # pages/1_Inspect: the uploaded image files
INSPECT_UPLOAD_POLICY = "inspect_upload_policy"  # pages/1_Inspect: the OOD policy uploads are resized by ("both")
INSPECT_UPLOAD_PICK = "inspect_upload_pick"  # pages/1_Inspect: which upload is inspected in detail
INSPECT_ALL_METHODS = "inspect_all_methods"  # pages/1_Inspect: every attribution method side by side
INSPECT_QUANTITY = "inspect_quantity"  # pages/1_Inspect: the per-channel quantity (GAIA-Z's r or GAIA-A's m)
INSPECT_OPACITY = "inspect_opacity"  # inspect_panels: the attribution overlay's opacity
HOW_ID_INDEX = "how_id_index"  # pages/5_How_GAIA_works: the ID digit followed
HOW_OOD_SET = "how_ood_set"  # pages/5_How_GAIA_works: the OOD set of the image followed
HOW_LAYER = "how_layer"  # pages/5_How_GAIA_works: the layer looked inside
REPORT_MAX_ID = "report_max_id"  # pages/6_Real_data_report: ID images per model
REPORT_MAX_OOD = "report_max_ood"  # pages/6_Real_data_report: images per OOD set
REPORT_MODELS = "report_models"  # pages/6_Real_data_report: the models reported


def how_ood_index(ood_set: str) -> str:
    """pages/5_How_GAIA_works: the index of the OOD image followed in ``ood_set``."""
    return f"how_ood_index_{ood_set}"

