"""Plotly figure builders: pure functions from numpy/pandas to ``plotly.graph_objects.Figure``.

Imported only by the app and reports (the core never imports plotly). Submodules:
``scores`` (histograms, ROC, metrics, thresholds), ``channels`` (layer x channel heatmaps,
per-layer AUROC) and ``images`` (attribution heatmaps, overlays, GAIA spatial maps).
Every figure has axis titles with units and a legend where there is more than one trace.
"""
