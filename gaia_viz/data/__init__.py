"""Data: input presets, safe image loading and image sources (see the submodules' docstrings)."""

from gaia_viz.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, load_image, probe_image
from gaia_viz.data.presets import (
    OOD_POLICIES,
    PRESETS,
    Preset,
    denormalize,
    get_preset,
    make_transform,
)
from gaia_viz.data.sources import (
    ArrayImageSet,
    FileImageSet,
    ImageSet,
    find_benchmark_sets,
    limit,
    open_folder,
    open_source,
    subset,
    with_preset,
)

__all__ = [
    "DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "load_image", "probe_image",
    "OOD_POLICIES", "PRESETS", "Preset", "denormalize", "get_preset", "make_transform",
    "ArrayImageSet", "FileImageSet", "ImageSet", "find_benchmark_sets", "limit", "open_folder",
    "open_source", "subset", "with_preset",
]
