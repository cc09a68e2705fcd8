"""GAIA inside other libraries' APIs: optional modules, each needing its own package.

- :mod:`gaia_viz.integrations.pytorch_ood`: :class:`~gaia_viz.integrations.pytorch_ood.GAIAZ`
  and :class:`~gaia_viz.integrations.pytorch_ood.GAIAA`, detectors of pytorch-ood 0.4.0's
  ``Detector`` API, usable with its ``OODMetrics``, benchmarks and loops
  (needs ``pip install pytorch-ood==0.4.0 --no-deps``).
- :mod:`gaia_viz.integrations.captum`: :class:`~gaia_viz.integrations.captum.GaiaMaps`, the
  per-layer gradient maps GAIA reads, as a Captum layer attribution
  (``GaiaMaps(model, layers).attribute(inputs, target=None)``; needs ``captum``).

OODeel is not integrated: oodeel 0.4.0 pins ``numpy<=1.26.4`` (this project runs on numpy 2)
and imports faiss and Hugging Face ``datasets`` without declaring them, so it cannot be
installed next to this stack without downgrading it.

This package imports nothing optional: ``import gaia_viz`` and its core never need these
libraries; importing one of the modules above without its package raises one ImportError
that names the package and the command that installs it. Both modules compute with
:mod:`gaia_viz.gaia` and leave the model as found (hooks removed, ``requires_grad`` flags and
train/eval modes restored).
"""

from __future__ import annotations


def missing_package_error(module: str, package: str, install: str, error: ImportError) -> ImportError:
    """The one ImportError an integration raises when its package is absent (or broken)."""
    top = package.replace("-", "_")
    if error.name is not None and error.name.split(".")[0] == top:
        return ImportError(f"{module} needs the package {package!r}, which is not installed; "
                           f"install it with `{install}` (gaia_viz itself does not need it)", name=top)
    return ImportError(f"{module} needs the package {package!r}, which is installed but fails to "
                       f"import ({error}); reinstall it with `{install}`", name=top)
