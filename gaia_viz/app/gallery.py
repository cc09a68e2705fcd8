"""Thumbnail galleries of data-set images with their scores."""

from __future__ import annotations

from typing import Sequence

import streamlit as st
from PIL import Image

THUMBNAIL_SIZE = 96


def thumbnail(image: Image.Image, size: int = THUMBNAIL_SIZE) -> Image.Image:
    """``image`` fitted into ``size`` x ``size``: small images (28x28 digits) are enlarged with
    nearest-neighbour so their pixels stay visible, large ones shrunk with antialiasing."""
    scale = size / max(image.size)
    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    return image.resize(new_size, resample)


def show_gallery(image_set, indices: Sequence[int], captions: Sequence[str], per_row: int = 8) -> None:
    """``image_set.raw_image(i)`` for each index as a row of thumbnails with captions."""
    if len(indices) == 0:
        st.caption("No images.")
        return
    for start in range(0, len(indices), per_row):
        row = st.columns(per_row)
        for column, i, caption in zip(row, indices[start:start + per_row], captions[start:start + per_row]):
            column.image(thumbnail(image_set.raw_image(int(i))), caption=caption)
