"""Loading what the sidebar names: models in ``st.cache_resource`` (keyed by name, weights
digest, device and options), image sets likewise (keyed by spec, preset, policy, sample cap,
pixel limit and path policy), the benchmark layouts of a data root in ``st.cache_data``;
:func:`load_model` and :func:`open_sets` turn what fails into set-up errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import streamlit as st

from gaia_viz.app import keys
from gaia_viz.app.catalogue import BOTH_POLICIES
from gaia_viz.app.setup import SetupError, SetupFix, setup_error
from gaia_viz.cache import stable_hash
from gaia_viz.data.presets import OOD_POLICIES, id_policy
from gaia_viz.errors import GaiaVizError
from gaia_viz.paths import check_allowed, check_text, echo, path_policy


def upload_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def file_digest(path: str) -> str:
    """Resolved path, size and mtime: a replaced checkpoint file is reloaded, an unchanged
    one is not, however its path was typed."""
    stat = os.stat(path)
    return stable_hash([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def cached_model(name: str, checkpoint_path: str | None, checkpoint_digest: str | None, device: str,
                 pretrained: bool = True, allow_download: bool = False, _checkpoint_bytes: bytes | None = None):
    from gaia_viz.models import load_model

    source = _checkpoint_bytes if _checkpoint_bytes is not None else checkpoint_path
    return load_model(name, checkpoint=source, device=device, pretrained=pretrained,
                      allow_download=allow_download)


@st.cache_resource(max_entries=64, show_spinner="Opening images…")
def cached_source(spec: str, preset: str, ood_policy: str, data_root: str | None, name: str,
                  max_samples: int | None, max_pixels: int, path_policy: str):
    """``path_policy`` (:meth:`gaia_viz.paths.PathPolicy.describe`) is only part of the key."""
    import gaia_viz.demo  # noqa: F401 (registers the demo: data scheme)
    from gaia_viz.data.sources import open_source

    return open_source(spec, preset, ood_policy=ood_policy, data_root=data_root, name=name,
                       max_samples=max_samples, max_pixels=max_pixels)


@st.cache_data(ttl=60, show_spinner=False)
def benchmark_sets(data_root: str) -> dict:
    from gaia_viz.data.sources import find_benchmark_sets

    return find_benchmark_sets(data_root)


# --------------------------------------------------------------------------- where the files are


def real_cifar_available(data_root: str | None = None) -> bool:
    """Whether ``data_root`` (default: the sidebar's) holds CIFAR-10 test and an OOD set."""
    root = data_root if data_root is not None else checked_data_root()[0]
    if not root:
        return False
    found = benchmark_sets(root)
    return "cifar10-test" in found and any(v["role"] == "ood" for v in found.values())


def default_data_root() -> str:
    """The server's data root as text ("" when there is none): :func:`gaia_viz.settings.data_root`."""
    from gaia_viz.settings import data_root

    root = data_root()
    return str(root) if root is not None else ""


def checked_data_root() -> tuple[str, SetupError | None]:
    """The data root of the sidebar and its error: ``("", error)`` when the visitor typed a
    root outside the allowed data roots (the server's own default is always accepted)."""
    root = str(st.session_state.get(keys.SB_DATA_ROOT, default_data_root())).strip()
    if not root or root == default_data_root():
        return root, None
    try:
        check_allowed(root, "data root")
    except GaiaVizError as exc:
        return "", setup_error(str(exc), keys.SB_DATA_ROOT)
    return root, None


def shared_weights(model_name: str, data_root) -> Path:
    """The shared pretrained weights under the data root (the model catalogue's
    ``checkpoint_file``); else a GaiaVizError saying which files a data root should hold."""
    from gaia_viz.models import checkpoint_files, model_info

    info = model_info(model_name)
    shared = Path(data_root) / info.checkpoint_file if data_root and info.checkpoint_file else None
    if shared is None or not shared.is_file():
        raise GaiaVizError(f"{model_name} has no pretrained weights under the data root: upload a "
                           f"checkpoint, or set a data root holding {' or '.join(checkpoint_files(info.kind))}")
    return shared


def checked_checkpoint(path: str) -> str:
    """A checkpoint path typed by the visitor, expanded, once it may be read
    (:func:`gaia_viz.paths.check_allowed`) and is a file; else a GaiaVizError saying what to do."""
    check_allowed(path, "checkpoint")
    expanded = str(Path(path).expanduser())
    if Path(expanded).is_dir():
        raise GaiaVizError(f"checkpoint {echo(path)} is a folder; give the path of the weights file "
                           "(.pt, .pth, .th or .safetensors) inside it")
    if not Path(expanded).is_file():
        raise GaiaVizError(f"checkpoint {echo(path)} does not exist on the server; check the path "
                           "or upload the file")
    return expanded


# --------------------------------------------------------------------------- what the sidebar names


def load_model(values: dict, device: str, kind: str) -> tuple[object | None, list[SetupError]]:
    """The model the sidebar's model widgets named (``values``: name, checkpoint, data,
    digest, pretrained, allow_download; ``kind``: the model kind), loaded through
    :func:`cached_model`; or None and the error, with its fix (random weights) where there is one."""
    try:
        model = cached_model(
            values["name"], None if values["data"] is not None else values["checkpoint"], values["digest"], device,
            pretrained=values["pretrained"], allow_download=values["allow_download"],
            _checkpoint_bytes=values["data"])
        return model, []
    except GaiaVizError as exc:
        message = str(exc)
        fix = None
        if "not cached" in message or "pretrained=False" in message:
            fix = SetupFix("Use random weights", ((keys.random_weights(kind), True),))
            message = message.replace("use pretrained=False", "tick 'Random weights'")
        return None, [setup_error(message, keys.SB_MODEL_KIND, fix)]
    except (RuntimeError, ValueError, TypeError, KeyError, OSError) as exc:
        # building a model from a user's weights can fail inside torch in many ways;
        # the visitor needs the reason, the page must go on
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        return None, [setup_error(f"cannot load the model {values['name']!r}: {reason}; check the model "
                                  "name, the checkpoint and its number of classes", keys.SB_MODEL_KIND)]


def model_default_preset(model_name: str, model) -> str:
    """The preprocessing preset ``model_name`` reads by default (:func:`gaia_viz.models.default_preset`,
    told the loaded ``model``'s number of classes when its head says it), ``imagenet224`` for a
    model the catalogue does not know."""
    from gaia_viz.models import default_preset
    from gaia_viz.models.heads import classifier_head

    num_classes = None
    if model is not None:
        try:
            num_classes = classifier_head(model).num_classes
        except GaiaVizError:
            pass
    try:
        return default_preset(model_name, num_classes)
    except GaiaVizError:
        return "imagenet224"


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


def _opened_sets(values: dict, preset: str, data_root: str, max_samples: int | None, max_pixels: int):
    """Open the ID, fit and OOD sets the data widgets named: (id_set, ood_sets, fit_set, sources).

    Every path a spec names is checked by :func:`gaia_viz.data.sources.open_source` against
    the allowed roots before it is read; the path policy is part of the cache key, so a set
    opened where every path may be read is never handed out where paths are restricted."""
    root = data_root or None
    for name, _spec in values["ood"]:
        check_text(name, "data set name")
    paths_key = path_policy().describe()
    id_name, id_spec = values["id"]
    id_set = cached_source(id_spec, preset, id_policy(preset), root, id_name, max_samples, max_pixels, paths_key)
    sources = {id_name: id_spec}
    fit_set = None
    if values["fit"] is not None:
        fit_name, fit_spec = values["fit"]
        fit_set = cached_source(fit_spec, preset, id_policy(preset), root, fit_name, max_samples, max_pixels,
                                paths_key)
        sources[fit_name] = fit_spec
    policies = _policies(values["policy"])
    ood_sets = {}
    for base, spec in values["ood"]:
        for policy in policies:
            name = f"{base} ({policy})" if len(policies) > 1 else base
            if name in ood_sets or name == id_name:
                raise GaiaVizError(f"two data sets are named {echo(name)!r}; give the OOD sets distinct names")
            ood_sets[name] = cached_source(spec, preset, policy, root, name, max_samples, max_pixels, paths_key)
            sources[name] = spec
    return id_set, ood_sets, fit_set, sources


def open_sets(values: dict, preset: str, data_root: str, max_samples: int | None,
              max_pixels: int) -> tuple[tuple | None, list[SetupError]]:
    """The sets the sidebar's data widgets named (``values``: id, fit, ood, policy), opened
    through :func:`cached_source`: ``((id_set, ood_sets, fit_set, sources), [])``, or None and
    the error (a set that cannot be read names the file and why)."""
    try:
        return _opened_sets(values, preset, data_root, max_samples, max_pixels), []
    except GaiaVizError as exc:
        return None, [setup_error(str(exc), keys.SB_DATA_KIND)]
    except (PermissionError, IsADirectoryError, FileNotFoundError) as exc:
        return None, [setup_error(f"cannot read {exc.filename or exc}: {exc.strerror or exc}", keys.SB_DATA_KIND)]


__all__ = ["benchmark_sets", "cached_model", "cached_source", "checked_checkpoint", "checked_data_root",
           "default_data_root", "file_digest", "load_model", "model_default_preset", "open_sets", "parse_ood_lines", "real_cifar_available",
           "shared_weights", "upload_digest"]
