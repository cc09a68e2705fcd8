"""Reading user checkpoints safely and fitting them into a model.

Accepted: a bare ``state_dict``; a dict wrapping it under ``state_dict``, ``model_state_dict``,
``model`` or ``net`` (other entries such as ``epoch`` or ``best_prec1`` are ignored); keys prefixed
``module.`` (DataParallel) or ``model.``; and ``.safetensors`` files. PyTorch files are always read
with ``torch.load(..., weights_only=True, map_location="cpu")``, so a pickle that would run code is
refused instead of executed.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..paths import echo, megabytes, read_capped
from ..settings import MAX_CHECKPOINT_ENV, max_checkpoint_bytes

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
STRIPPABLE_PREFIXES = ("module.", "model.")
REFUSED_PICKLE_MESSAGE = (
    "refused: this checkpoint needs to run code to load (pickle with custom objects); "
    "re-save it as a plain state_dict or .safetensors"
)
MAX_LISTED_KEYS = 10
# Classifier heads as named by common architectures: linear (CIFAR ResNets), fc (torchvision
# ResNets), classifier.* (VGG, DenseNet, MobileNet, EfficientNet), head* (Swin, ViT's heads.head).
HEAD_WEIGHT_PATTERN = re.compile(r"(^|\.)(linear|fc|classifier[\w.]*|head[\w.]*)\.weight$")


def _looks_like_safetensors(head: bytes) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length, then a JSON ``{``."""
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 30


def _read_safetensors(data: bytes, origin: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load as load_safetensors_bytes

    try:
        return load_safetensors_bytes(data)
    except Exception as exc:  # safetensors raises its own SafetensorError and others
        raise CheckpointError(f"{origin} is not a readable .safetensors file ({exc})") from exc


def _looks_like_npz(data: bytes) -> bool:
    """A zip archive whose members are all ``.npy`` arrays (a PyTorch zip holds ``data.pkl``)."""
    if data[:4] != b"PK\x03\x04":
        return False
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return bool(names) and all(name.endswith(".npy") for name in names)


def _too_big(origin: str, size: str, budget: int) -> CheckpointError:
    return CheckpointError(
        f"{origin} {size}, more than the limit of {megabytes(budget)} for a checkpoint; refusing to "
        f"unpack it (a zip bomb?). Set {MAX_CHECKPOINT_ENV} (megabytes) on the server to allow larger ones")


def check_archive_budget(data: bytes, origin: str, budget: int | None = None) -> None:
    """CheckpointError when the zip archive ``data`` declares members that unpack to more than
    ``budget`` bytes (default :func:`gaia_viz.settings.max_checkpoint_bytes`), read from its
    central directory before anything is decompressed. Not a zip: nothing to check."""
    budget = max_checkpoint_bytes() if budget is None else budget
    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # the reader that follows says it is corrupt
    unpacked = sum(member.file_size for member in members)
    if unpacked > budget:
        raise _too_big(origin, f"would unpack to {megabytes(unpacked)}", budget)


def _read_member(member, left: int, origin: str, budget: int) -> bytes:
    """The member's bytes, read in pieces and refused as soon as they pass ``left`` bytes: its
    declared size is checked before, this holds whatever the archive's headers claim."""
    pieces, total = [], 0
    while True:
        piece = member.read(1 << 20)
        if not piece:
            return b"".join(pieces)
        total += len(piece)
        if total > left:
            raise _too_big(origin, "unpacks to more than it declares", budget)
        pieces.append(piece)


def _npy_array(raw: bytes, name: str, origin: str) -> np.ndarray:
    """One ``.npy`` member as an array; its header's shape must fit the bytes that follow (so
    no array is allocated for data that is not there)."""
    stream = io.BytesIO(raw)
    version = np.lib.format.read_magic(stream)
    header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)
    shape, _fortran, dtype = header(stream)
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if not dtype.hasobject and needed > len(raw) - stream.tell():
        raise CheckpointError(f"{origin}: member {echo(name)} claims {needed:,} bytes of data but holds "
                              f"{len(raw) - stream.tell():,}; the file is corrupt or truncated")
    stream.seek(0)
    return np.lib.format.read_array(stream, allow_pickle=False)


def _read_npz(data: bytes, origin: str) -> dict[str, torch.Tensor]:
    budget = max_checkpoint_bytes()
    check_archive_budget(data, origin, budget)
    arrays, left = {}, budget
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    raw = _read_member(member, left, origin, budget)
                left -= len(raw)
                arrays[info.filename[: -len(".npy")]] = _npy_array(raw, info.filename, origin)
    except CheckpointError:
        raise
    except ValueError as exc:  # "Object arrays cannot be loaded when allow_pickle=False"
        if "allow_pickle" in str(exc):
            raise CheckpointError(f"{origin}: {REFUSED_PICKLE_MESSAGE}") from exc
        raise CheckpointError(f"{origin} is not a readable .npz archive ({exc})") from exc
    except Exception as exc:  # zipfile.BadZipFile, EOFError, OSError on truncated members
        raise CheckpointError(f"{origin} is corrupt or truncated ({type(exc).__name__}: {exc})") from exc
    not_numeric = [k for k, a in arrays.items() if a.dtype.kind not in "fiub"]
    if not_numeric:
        raise CheckpointError(f"{origin} holds arrays that are not numbers: {_capped(not_numeric)}")
    return {key: torch.from_numpy(np.ascontiguousarray(array)) for key, array in arrays.items()}


# Opcodes by which a pickle imports a callable and calls it: what "runs code" means here.
_CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"})


def _pickle_imports_code(data: bytes) -> bool:
    """True when the plain pickle ``data`` contains an import-and-call opcode.

    ``pickletools.genops`` only parses, it never executes. Used to tell a malicious pickle
    (refused) from bytes that are no pickle at all (corrupt) when torch's weights-only
    unpickler stops at an opcode it does not support before reaching the import.
    """
    import pickletools

    try:
        for opcode, _arg, _pos in pickletools.genops(io.BytesIO(data)):
            if opcode.name in _CODE_OPCODES:
                return True
    except Exception:  # not a (complete) pickle: whatever came before decided it
        return False
    return False


def _read_torch(data: bytes, origin: str) -> object:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's weights-only unpickler says "Unsupported global" for a pickle that would import
        # (and so could run) code; "Unsupported operand" and the like mean bytes that are no pickle
        if "Weights only load failed" in str(exc) and (
            "global" in str(exc).lower() or _pickle_imports_code(data)
        ):
            raise CheckpointError(f"{origin}: {REFUSED_PICKLE_MESSAGE}") from exc
        raise CheckpointError(
            f"{origin} is corrupt, truncated or not a PyTorch checkpoint; save model.state_dict() "
            "with torch.save or use .safetensors"
        ) from exc
    except Exception as exc:  # EOFError, RuntimeError (zip reader), struct.error, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{origin} is corrupt, truncated or not a PyTorch checkpoint ({reason})"
        ) from exc


def _unwrap(obj: object, origin: str) -> dict[str, torch.Tensor]:
    """Descend through wrapper dicts to the tensor mapping; refuse anything that is not one."""
    while isinstance(obj, Mapping):
        wrapped = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if wrapped is None:
            break
        obj = wrapped
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{origin} holds no state_dict (found {type(obj).__name__}); save model.state_dict()"
        )
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{origin} is not a state_dict: entries that are not tensors: {_capped(not_tensors)}"
        )
    return dict(obj)


def load_state_dict_file(source: str | Path | bytes) -> dict[str, torch.Tensor]:
    """Read a checkpoint (path or raw bytes) into a ``{name: tensor}`` dict on the CPU.

    The format is recognised by content (safetensors header, a zip of ``.npy`` arrays, or a
    PyTorch zip/pickle), so uploaded bytes need no file name. Raises :class:`CheckpointError` for missing, corrupt, truncated or
    code-running files.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, origin = bytes(source), "the uploaded checkpoint"
    else:
        path = Path(source).expanduser()
        origin = f"checkpoint {echo(source)}"  # as typed (``~`` kept)
        try:  # at most GAIA_VIZ_MAX_CHECKPOINT_MB, refused before reading
            data = read_capped(path, max_checkpoint_bytes(), what=origin, kind="a checkpoint",
                               setting=MAX_CHECKPOINT_ENV, error=CheckpointError)
        except CheckpointError:
            raise
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            raise CheckpointError(f"cannot read {origin}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not data:
        raise CheckpointError(f"{origin} is empty")
    if _looks_like_safetensors(data[:9]):
        return _unwrap(_read_safetensors(data, origin), origin)
    if _looks_like_npz(data):
        return _unwrap(_read_npz(data, origin), origin)
    if data[:4] == b"PK\x03\x04":  # PyTorch's zip format: its members may be deflated too
        check_archive_budget(data, origin)
    return _unwrap(_read_torch(data, origin), origin)


def strip_prefixes(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Drop ``module.`` / ``model.`` prefixes shared by every key, unless the model uses them."""
    model_keys = model.state_dict().keys()
    stripped = dict(state_dict)
    changed = True
    while changed:
        changed = False
        for prefix in STRIPPABLE_PREFIXES:
            if all(k.startswith(prefix) for k in stripped) and not any(
                k.startswith(prefix) for k in model_keys
            ):
                stripped = {k[len(prefix):]: v for k, v in stripped.items()}
                changed = True
    return stripped


def _capped(items: list[str], limit: int = MAX_LISTED_KEYS) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


def load_checkpoint_into(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True
) -> nn.Module:
    """Copy ``state_dict`` into ``model`` after checking that it fits; returns ``model``.

    Missing ``num_batches_tracked`` buffers are tolerated (older checkpoints lack them). With
    ``strict`` any other missing or unexpected key is an error; shape mismatches and integer
    tensors where the model holds floats are always errors. The :class:`CheckpointError` lists
    the offending keys (capped at ``MAX_LISTED_KEYS`` each).
    """
    state_dict = strip_prefixes(state_dict, model)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    common = [k for k in state_dict if k in expected]
    shape_mismatches = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in common
        if state_dict[k].shape != expected[k].shape
    ]
    dtype_mismatches = [
        f"{k}: checkpoint {state_dict[k].dtype} where the model needs a float tensor"
        for k in common
        if expected[k].is_floating_point() and not state_dict[k].is_floating_point()
    ]
    problems = []
    if strict and missing:
        problems.append(f"missing keys ({len(missing)}): {_capped(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_capped(unexpected)}")
    if shape_mismatches:
        problems.append(f"shape mismatches ({len(shape_mismatches)}): {_capped(shape_mismatches)}")
    if dtype_mismatches:
        problems.append(f"wrong dtypes ({len(dtype_mismatches)}): {_capped(dtype_mismatches)}")
    if problems:
        raise CheckpointError(
            f"checkpoint does not fit {type(model).__name__}: " + "; ".join(problems)
            + ". Check the model name and num_classes."
        )
    model.load_state_dict({k: state_dict[k] for k in common}, strict=False)
    return model


def infer_num_classes(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """Rows of the classifier head: the last 2-D weight named like ``linear``/``fc``/``classifier*``
    /``head*`` (after any ``module.`` prefix); ``None`` when no such weight exists."""
    heads = [
        v for k, v in state_dict.items() if HEAD_WEIGHT_PATTERN.search(k) and v.ndim == 2
    ]
    return int(heads[-1].shape[0]) if heads else None
