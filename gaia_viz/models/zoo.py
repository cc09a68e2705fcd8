"""Build any catalogued model by name, with weights, in eval mode: :func:`load_model`.

Which names exist, what each is and where its weights come from is the catalogue's
(:mod:`gaia_viz.models.catalogue`: :func:`~gaia_viz.models.catalogue.list_models`,
:func:`~gaia_viz.models.catalogue.model_info`; the README's model table is printed from it).
This module holds what every family's loader shares: the request it is given
(:class:`LoadRequest`), the shared data folder's checkpoints (:func:`shared_weights`), and
the steps around the family's own (argument checks, fitting the weights, device, eval mode).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from ..paths import check_allowed
from ..settings import SHARED_DATA_ROOT, data_root
from .catalogue import ModelInfo, model_family, model_info
from .checkpoints import infer_num_classes, load_checkpoint_into, load_state_dict_file


def shared_data_root() -> Path:
    """The data root (:func:`gaia_viz.settings.data_root`), or where the shared data folder
    would be beside the repository when none exists (so messages can name the path)."""
    return data_root() or SHARED_DATA_ROOT


@dataclass(frozen=True)
class LoadRequest:
    """What :func:`load_model` was asked, as a family's loader gets it."""

    checkpoint: str | Path | bytes | None
    num_classes: int | None
    pretrained: bool
    allow_download: bool

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        """The user's checkpoint read safely (None without one)."""
        return load_state_dict_file(self.checkpoint) if self.checkpoint is not None else None

    def checkpoint_classes(self, state_dict: Mapping[str, torch.Tensor] | None,
                           infer: Callable[[Mapping[str, torch.Tensor]], int | None]) -> int | None:
        """The classes asked for, else those ``infer`` reads from the checkpoint's head, else None."""
        if self.num_classes is not None or state_dict is None:
            return self.num_classes
        return infer(state_dict)


def shared_weights(info: ModelInfo) -> dict[str, torch.Tensor]:
    """The state dict of ``info``'s shared checkpoint (``<data root>/<info.checkpoint_file>``),
    read after the path check; ModelError saying what to do when it has none or it is missing."""
    if info.checkpoint_file is None:
        depths = [other.depth for other in model_family(info.kind).models if other.checkpoint_file]
        raise ModelError(
            f"no pretrained weights are known for {info.name} (only depths {depths}); "
            "pass a checkpoint or pretrained=False."
        )
    path = shared_data_root() / info.checkpoint_file
    # a server path like any other: a models/ link out of the data root is refused unread
    if not check_allowed(path, "pretrained weights").is_file():
        raise ModelError(
            f"pretrained {info.name} weights not found: looked for {path}. "
            "Set GAIA_VIZ_DATA_ROOT, pass a checkpoint, or use pretrained=False."
        )
    return load_state_dict_file(path)


def with_shared_weights(info: ModelInfo, request: LoadRequest,
                        build: Callable[[int], nn.Module]) -> tuple[nn.Module, dict[str, torch.Tensor] | None]:
    """The loader of a family with shared checkpoints: ``build(classes)`` (the classes asked
    for, else the checkpoint's head, else ``info.num_classes``) and the weights to load, the
    user's checkpoint, else the shared one when ``request.pretrained``, else none (random)."""
    state_dict = request.state_dict()
    model = build(request.checkpoint_classes(state_dict, infer_num_classes) or info.num_classes)
    if state_dict is None and request.pretrained:
        state_dict = shared_weights(info)
    return model, state_dict


def load_model(
    name: str,
    checkpoint: str | Path | bytes | None = None,
    num_classes: int | None = None,
    pretrained: bool = True,
    device: str | torch.device = "cpu",
    allow_download: bool = False,
) -> nn.Module:
    """Build model ``name`` (a catalogue name: :func:`gaia_viz.models.list_models`), load
    weights, return it in eval mode.

    Weights come from ``checkpoint`` when given (``pretrained`` is then ignored; ``num_classes``
    defaults to the checkpoint's head size), else from the model's known pretrained weights
    when ``pretrained``, else random initialisation. Nothing is downloaded unless
    ``allow_download``. Raises :class:`ModelError` / :class:`CheckpointError`.
    """
    if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) != num_classes
                                    or num_classes < 1):
        raise ModelError(f"num_classes must be a whole number of at least 1, not {num_classes!r}")
    info = model_info(name)
    request = LoadRequest(checkpoint, num_classes, pretrained, allow_download)
    model, state_dict = model_family(info.kind).loader(info, request)
    if state_dict is not None:
        load_checkpoint_into(model, state_dict)
    return model.to(device).eval()


__all__ = ["LoadRequest", "load_model", "shared_data_root", "shared_weights", "with_shared_weights"]
