"""Per-layer numbers the Channels page shows, recomputed from an evaluation's cached arrays."""

import numpy as np
import pandas as pd
import pytest

from gaia_viz.app import analysis
from gaia_viz.data.sources import limit
from gaia_viz.demo import demo_id_set, demo_ood_sets, load_demo_model
from gaia_viz.errors import LayerError
from gaia_viz.metrics import auroc, evaluate_scores
from gaia_viz.run_config import RunConfig
from gaia_viz.sweep import Evaluation, SweepSettings, evaluate

ZERO_CHANNELS = [2, 3]
INNER_CHANNELS = [3]


def synthetic_evaluation() -> Evaluation:
    """Two datasets with hand-made nonzero ratios r and channel means m."""
    ratios = {"id": np.array([[0.5, 0.5, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0, 1.0]]),
              "ood": np.array([[0.0, 0.0, 0.2, 0.2, 0.2], [0.1, 0.3, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0, 0.0]])}
    means = {"id": np.array([[1.0, -2.0, 2.0], [0.0, 0.0, 3.0]]),
             "ood": np.array([[-1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [0.0, 0.0, 0.5]])}
    output = {"id": np.array([1.0, 2.0]), "ood": np.array([1.0, 0.5, 1.0])}
    arrays, frames = {}, []
    for name in ("id", "ood"):
        r, m = ratios[name], means[name]
        zero_sums = np.stack([(r[:, :2] ** 2).sum(1), (r[:, 2:] ** 2).sum(1)], 1)
        avg_sums = (m ** 2).sum(1, keepdims=True)
        arrays[name] = dict(zero_partial_sums=zero_sums, nonzero_ratio=r, avg_partial_sums=avg_sums,
                            channel_mean_grad=m, output_component=output[name])
        frames.append(pd.DataFrame({
            "dataset": name, "index": np.arange(len(r)), "path": None, "label": -1, "prediction": 0,
            "gaia_z": zero_sums.sum(1) / 5, "gaia_a": avg_sums[:, 0] / (output[name] ** 2 * 3),
        }))
    return Evaluation(scores=pd.concat(frames, ignore_index=True), id_name="id", ood_names=["ood"],
                      methods=["gaia_z", "gaia_a"], zero_layers=["a", "b"], zero_channels=ZERO_CHANNELS,
                      inner_layers=["b"], inner_channels=INNER_CHANNELS, head_layer="b", arrays=arrays,
                      config=RunConfig())


def test_subset_and_single_layer_scores_follow_the_formulas():
    ev = synthetic_evaluation()
    r = ev.arrays["ood"]["nonzero_ratio"]
    np.testing.assert_allclose(analysis.subset_scores(ev, "ood", "gaia_z", ["a"]), (r[:, :2] ** 2).sum(1) / 2)
    np.testing.assert_allclose(analysis.subset_scores(ev, "ood", "gaia_z", ["b"]), (r[:, 2:] ** 2).sum(1) / 3)
    np.testing.assert_allclose(analysis.subset_scores(ev, "ood", "gaia_z"), ev.method_scores("gaia_z", "ood"))
    np.testing.assert_allclose(analysis.subset_scores(ev, "ood", "gaia_a"), ev.method_scores("gaia_a", "ood"))
    single = analysis.single_layer_scores(ev, "id", "gaia_z")
    assert single.shape == (2, 2)
    np.testing.assert_allclose(single[:, 1], analysis.subset_scores(ev, "id", "gaia_z", ["b"]))


def test_channel_means_average_over_images():
    ev = synthetic_evaluation()
    np.testing.assert_allclose(analysis.channel_means(ev, "id", "gaia_z"), [0.75, 0.25, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(analysis.channel_means(ev, "id", "gaia_a"), [0.5, 1.0, 2.5])


def test_single_layer_aurocs_and_subset_metrics():
    ev = synthetic_evaluation()
    layers, values = analysis.single_layer_aurocs(ev, "ood", "gaia_z")
    assert layers == ["a", "b"]
    single = [analysis.single_layer_scores(ev, d, "gaia_z") for d in ("id", "ood")]
    np.testing.assert_allclose(values, [auroc(single[0][:, k], single[1][:, k]) for k in range(2)])
    table = analysis.subset_metrics(ev, {"gaia_z": ["b"]})
    assert list(table["method"]) == ["gaia_z", "gaia_a"]  # one OOD set: no 'average' row
    expected = evaluate_scores(analysis.subset_scores(ev, "id", "gaia_z", ["b"]),
                               analysis.subset_scores(ev, "ood", "gaia_z", ["b"]))
    assert table.iloc[0]["auroc"] == pytest.approx(expected["auroc"])
    assert table.iloc[1]["auroc"] == pytest.approx(ev.metrics_table().query("method == 'gaia_a'")["auroc"].iloc[0])


def test_bad_layer_subsets_raise_layer_errors():
    ev = synthetic_evaluation()
    with pytest.raises(LayerError, match="not among"):
        analysis.subset_scores(ev, "id", "gaia_z", ["zzz"])
    with pytest.raises(LayerError, match="no layer selected"):
        analysis.subset_metrics(ev, {"gaia_z": []})


def test_all_layers_reproduce_a_real_sweep(tmp_path):
    ood = {k: limit(v, 30) for k, v in demo_ood_sets().items() if k in ("faces", "letters")}
    ev = evaluate(load_demo_model(), limit(demo_id_set(), 30), ood, SweepSettings(methods=["gaia_z", "gaia_a"]),
                  cache_dir=tmp_path)
    for dataset in analysis.dataset_names(ev):
        for method in ("gaia_z", "gaia_a"):
            np.testing.assert_allclose(analysis.subset_scores(ev, dataset, method),
                                       ev.method_scores(method, dataset), rtol=1e-6)
    full = ev.metrics_table()
    pd.testing.assert_frame_equal(analysis.subset_metrics(ev, {}), full, check_dtype=False)
    matrix_rows = analysis.channel_means(ev, "faces", "gaia_z")
    assert matrix_rows.size == sum(ev.zero_channels)
    assert analysis.has_family(ev, "gaia_z") and analysis.has_family(ev, "gaia_a")
