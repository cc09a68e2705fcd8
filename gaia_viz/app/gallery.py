"""Thumbnail galleries of data-set images with their scores, each a way into Inspect."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import streamlit as st
from PIL import Image

from gaia_viz.app.markdown import escape_markdown
from gaia_viz.app.page import page_link

THUMBNAIL_SIZE = 96
INSPECT_PAGE = "pages/1_Inspect.py"


def thumbnail(image: Image.Image, size: int = THUMBNAIL_SIZE) -> Image.Image:
    """``image`` fitted into ``size`` x ``size``: small images (28x28 digits) are enlarged with
    nearest-neighbour so their pixels stay visible, large ones shrunk with antialiasing."""
    scale = size / max(image.size)
    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    return image.resize(new_size, resample)


def model_view(image_set, index: int, preset) -> Image.Image:
    """Image ``index`` of ``image_set`` as the model saw it: after the set's preprocessing
    (its size policy, e.g. the 32 x 32 centre crop, and normalisation undone for display)."""
    from gaia_viz.app.uploads import model_view_pixels

    return Image.fromarray(np.ascontiguousarray(model_view_pixels(image_set[int(index)][0], preset)))


def file_caption(image_set, index: int) -> str:
    """Where image ``index`` comes from: its file name (the full path on hover is in the
    button's help) or that it has no file."""
    path_of = getattr(image_set, "path", None)
    path = path_of(int(index)) if callable(path_of) else None
    return Path(path).name if path else "generated in memory, no file"


def inspect_link(set_name: str, index: int, target=None, label: str = "Inspect", **kwargs):
    """A link that opens image ``index`` of ``set_name`` on the Inspect page, with the whole
    view (set-up and selection) in it, as the address bar holds it (:func:`gaia_viz.app.page.page_link`)."""
    return page_link(INSPECT_PAGE, label, target, changes={"image": (set_name, int(index))}, **kwargs)


def show_cases(image_set, indices: Sequence[int], captions: Sequence[str], preset, key: str,
               per_row: int = 8) -> None:
    """One card per index: the model's view of the image (:func:`model_view`), the caption,
    the file name and an "Inspect" link that opens the image on the Inspect page (``key``:
    unused since the button became a link; kept for the callers)."""
    if len(indices) == 0:
        st.caption("No images.")
        return
    path_of = getattr(image_set, "path", None)
    paths = {int(i): path_of(int(i)) if callable(path_of) else None for i in indices}
    if not any(paths.values()):
        st.caption(f"{escape_markdown(image_set.name)} is generated in memory: its images have no files.")
    for start in range(0, len(indices), per_row):
        row = st.columns(per_row)
        for column, i, caption in zip(row, indices[start:start + per_row], captions[start:start + per_row]):
            i = int(i)
            column.image(thumbnail(model_view(image_set, i, preset)), caption=caption)
            if paths[i]:
                column.caption(escape_markdown(file_caption(image_set, i)))
            inspect_link(image_set.name, i, column, width="stretch", icon=":material/image_search:",
                         help=f"Open {paths[i] or f'{image_set.name} #{i}'} on the Inspect page")


__all__ = ["file_caption", "model_view", "inspect_link", "show_cases", "thumbnail"]
