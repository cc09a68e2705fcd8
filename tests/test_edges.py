"""The edges of issue 20: a method that cannot run never costs the others, and every
degenerate number says so, through the library, the CLI and the app.

Models are random-init (``pretrained=False``, no download) or tiny hand-built ones; images
are few, seeded and as small as the model allows.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gaia_viz import cli, gaia, sweep
from gaia_viz.errors import DataError, GaiaVizWarning, LayerError, ModelError
from gaia_viz.models import load_model

ROOT = Path(__file__).resolve().parents[1]


def images(n=2, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


class TensorSet(torch.utils.data.Dataset):
    def __init__(self, name, n, seed, size=64, labels=None):
        self.name = name
        self.x = images(n, size, seed)
        self.y = labels if labels is not None else [0] * n

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class SmallNet(nn.Module):
    """conv-BN-ReLU twice, global pooling, a Linear head (16-d features)."""

    def __init__(self, classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


def run(model, methods, size=64, n=2, fit=3, method_params=None, **kwargs):
    settings = sweep.SweepSettings(methods=methods, batch_size=4, method_params=method_params or {})
    return sweep.evaluate(model.eval(), TensorSet("id", n, 1, size), {"far": TensorSet("far", n, 2, size)},
                          settings, fit_set=TensorSet("fit", fit, 3, size) if fit else None, use_cache=False,
                          **kwargs)


def quiet_run(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GaiaVizWarning)
        return run(*args, **kwargs)


# --------------------------------------------------------------------------- 1. left out, the others scored


def test_gaia_on_a_token_model_is_left_out_and_msp_is_scored():
    torch.manual_seed(0)
    model = load_model("timm:deit_tiny_patch16_224", pretrained=False, num_classes=3)
    with pytest.warns(GaiaVizWarning, match="left out") as caught:
        evaluation = run(model, ["gaia_z", "gaia_a", "msp"], size=224, fit=0)
    assert len([w for w in caught if "left out" in str(w.message)]) == 1
    assert evaluation.methods == ["msp"]
    assert set(evaluation.config.left_out) == {"gaia_z", "gaia_a"}
    assert all("token models" in reason for reason in evaluation.config.left_out.values())
    assert evaluation.metrics_table()["auroc"].between(0, 1).all()


def test_gaia_a_on_squeezenet_is_left_out_with_its_layer_error():
    torch.manual_seed(0)
    model = load_model("tv:squeezenet1_0", pretrained=False, num_classes=3)
    evaluation = quiet_run(model, ["gaia_z", "gaia_a", "msp"], fit=0)
    assert evaluation.methods == ["gaia_z", "msp"] and list(evaluation.config.left_out) == ["gaia_a"]
    assert "GAIA-A needs the pooled feature vector" in evaluation.config.left_out["gaia_a"]
    assert np.isfinite(evaluation.scores[["gaia_z", "msp"]].to_numpy()).all()


def test_a_method_that_cannot_fit_on_a_small_fit_set_is_left_out():
    torch.manual_seed(0)
    with pytest.warns(GaiaVizWarning, match="cannot be fitted") as caught:
        evaluation = run(SmallNet(), ["vim", "knn", "msp"], fit=3)  # ViM's dim 8 of 16 needs more than 3
    assert len([w for w in caught if "left out" in str(w.message)]) == 1
    assert evaluation.methods == ["knn", "msp"] and list(evaluation.config.left_out) == ["vim"]
    reason = evaluation.config.left_out["vim"]
    assert "cannot be fitted on fit (3 images)" in reason and "dim" in reason
    assert "vim" not in evaluation.fitted_states and "knn" in evaluation.fitted_states
    assert evaluation.metrics_table()["method"].unique().tolist() == ["knn", "msp"]
    # with a dim the fit set supports, ViM runs
    assert "vim" in quiet_run(SmallNet(), ["vim"], fit=6, method_params={"vim": {"dim": 2}}).methods


def test_a_fit_failure_of_the_only_method_stops_the_run_with_its_reason():
    with pytest.raises(DataError, match="no chosen method can run.*vim: cannot be fitted"):
        quiet_run(SmallNet(), ["vim"], fit=3)


class BrokenNet(SmallNet):
    def forward(self, x):
        raise RuntimeError("shape mismatch in my own layer")


def test_an_error_in_the_models_own_forward_stops_the_run():
    with pytest.raises(ModelError, match="own forward pass failed.*RuntimeError: shape mismatch"):
        run(BrokenNet(), ["gaia_z", "msp"], fit=0)


def test_a_cached_run_keeps_the_left_out_reason(tmp_path):
    torch.manual_seed(0)
    model = SmallNet().eval()
    settings = sweep.SweepSettings(methods=["vim", "msp"], batch_size=4)
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GaiaVizWarning)
            evaluation = sweep.evaluate(model, TensorSet("id", 2, 1), {"far": TensorSet("far", 2, 2)}, settings,
                                        fit_set=TensorSet("fit", 3, 3), cache_dir=tmp_path)
        assert evaluation.methods == ["msp"] and list(evaluation.config.left_out) == ["vim"]


# --------------------------------------------------------------------------- CLI and app


def write_folder(folder: Path, count: int, colour: tuple[int, int, int], size: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (size, size), tuple((c + 37 * i) % 256 for c in colour)).save(folder / f"{i}.png")
    return folder


def cli_run(tmp_path, model_name, state_dict, methods, capsys, extra=()):
    checkpoint = tmp_path / "weights.pt"
    torch.save(state_dict, checkpoint)
    id_dir = write_folder(tmp_path / "id", 2, (40, 90, 10))
    ood_dir = write_folder(tmp_path / "ood", 2, (200, 30, 120))
    out = tmp_path / "out"
    code = cli.main(["evaluate", "--model", model_name, "--checkpoint", str(checkpoint), "--id", str(id_dir),
                     "--ood", f"far={ood_dir}", "--methods", methods, "--num-classes", "3", "--no-cache", "--quiet", "--workers", "0",
                     "--out", str(out), *extra])
    captured = capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else None
    return code, captured.out, captured.err, metrics


def test_cli_names_the_left_out_method_next_to_the_numbers(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = load_model("tv:squeezenet1_0", pretrained=False, num_classes=3)
    code, out, err, metrics = cli_run(tmp_path, "tv:squeezenet1_0", model.state_dict(), "gaia_a,msp", capsys)
    assert code == 0, err
    lines = [line for line in err.splitlines() if "left out" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: gaia_a left out: GAIA-A needs"), err
    assert "LeftOutWarning" not in err  # one line per cause, not a Python warning as well
    assert "left out" in out and "gaia_a" in out.split("left out", 1)[1]
    assert list(metrics["methods"]) == ["msp"] and list(metrics["config"]["left_out"]) == ["gaia_a"]


def test_cli_exits_2_when_no_method_can_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = load_model("tv:squeezenet1_0", pretrained=False, num_classes=3)
    code, _, err, _ = cli_run(tmp_path, "tv:squeezenet1_0", model.state_dict(), "gaia_a", capsys)
    assert code == 2 and err.strip().startswith("error: no chosen method can run on this model: gaia_a:")


def test_report_table_names_left_out_methods():
    from gaia_viz.report import metrics_markdown

    entry = {"methods": {"msp": {"far": {"fpr95": 0.5, "auroc": 0.75}}},
             "config": {"left_out": {"vim": "cannot be fitted on fit (3 images): ..."}}}
    text = metrics_markdown(entry)
    assert "| ViM | left out |" in text and "- ViM left out: cannot be fitted on fit (3 images)" in text


@pytest.fixture
def app_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GAIA_VIZ_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "edges-app-cache"))


def open_evaluate(**state):
    from streamlit.testing.v1 import AppTest

    from gaia_viz.app import jobs

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/2_Evaluate.py")
    at.run()
    if at.button and at.button[0].label.startswith("Run evaluation"):
        at.button[0].click().run()
    jobs.wait_for_jobs(300)
    return at.run()


def test_app_says_why_a_method_is_left_out_where_its_numbers_would_be(app_cache):
    at = open_evaluate(sb_max_samples=2, sb_model_kind="torchvision", sb_tv_name="squeezenet1_0",
                       **{"sb_random_weights::torchvision": True})
    assert not at.exception, at.exception
    warnings_shown = [w.value for w in at.warning if "left out" in w.value]
    assert len(warnings_shown) == 1 and warnings_shown[0].startswith("GAIA-A is left out for this model: GAIA-A needs")
    assert not [e.value for e in at.error]


# --------------------------------------------------------------------------- 2. non-finite scores


def zero_head_resnet(num_classes=10):
    torch.manual_seed(0)
    model = load_model("tv:resnet18", pretrained=False, num_classes=num_classes)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
    return model


def test_gaia_a_with_a_uniform_softmax_says_why_it_is_not_finite():
    model = zero_head_resnet()
    with pytest.warns(GaiaVizWarning, match=r"GAIA-A: 2 of 2 scores are not finite \(0 NaN, 2 inf.*o is 0"):
        assert torch.isinf(gaia.gaia_a(model, images())).all()
    with pytest.warns(GaiaVizWarning, match=r"GAIA-A: 2 of 2 scores are not finite \(2 NaN, 0 inf.*uniform"):
        assert torch.isnan(gaia.gaia_a(model, torch.zeros(2, 3, 64, 64))).all()
    result = gaia.gaia_analyze(model, images(), warn_without_zeros=False)
    assert "softmax is uniform" in result.non_finite_note
    fine = gaia.gaia_analyze(load_model("tv:resnet18", pretrained=False, num_classes=10), images(),
                             warn_without_zeros=False)
    assert fine.non_finite_note is None


def test_sweep_names_the_method_count_and_reason_and_its_metrics_are_na():
    evaluation = quiet_run(zero_head_resnet(), ["gaia_a", "msp"], fit=0)
    assert evaluation.methods == ["gaia_a", "msp"]
    notes = [n for n in evaluation.config.notes if "not finite" in n]
    assert len(notes) == 1 and notes[0].startswith("GAIA-A: 4 of 4 scores are not finite (0 NaN, 4 inf; "
                                                   "2 of 2 on id, 2 of 2 on far): the output component o is 0")
    table = evaluation.metrics_table().set_index("method")
    assert table.loc["gaia_a", ["fpr95", "auroc"]].isna().all() and table.loc["msp", ["auroc"]].notna().all()
    data = evaluation.metrics_json()
    assert data["methods"]["gaia_a"]["far"]["auroc"] is None and data["undefined"] == {"gaia_a": notes[0]}
    json.dumps(data, allow_nan=False)  # valid JSON: no NaN
    assert sweep.non_finite_methods(evaluation) == {"gaia_a": notes[0]}


class HugeFeatures(nn.Module):
    """Features are the flattened input, fed to a Linear head: ASH's exp(s1/s2) overflows on ones."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 64 * 64, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_any_detectors_non_finite_scores_are_noted_not_a_stopped_run():
    class Ones(TensorSet):
        def __init__(self, name):
            super().__init__(name, 2, 0)
            self.x = torch.ones(2, 3, 64, 64)

    torch.manual_seed(0)
    settings = sweep.SweepSettings(methods=["ash", "msp"], batch_size=2, method_params={"ash": {"percentile": 99.9}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GaiaVizWarning)
        evaluation = sweep.evaluate(HugeFeatures().eval(), Ones("id"), {"far": Ones("far")}, settings, use_cache=False)
    assert evaluation.methods == ["ash", "msp"]
    (note,) = [n for n in evaluation.config.notes if "not finite" in n]
    assert note.startswith("ASH: 4 of 4 scores are not finite") and "lower percentile" in note
    assert evaluation.metrics_table().set_index("method").loc["ash", "auroc"] != evaluation.metrics_table().set_index(
        "method").loc["ash", "auroc"]  # NaN


def test_cli_prints_the_non_finite_note_and_writes_null_metrics(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err, metrics = cli_run(tmp_path, "tv:resnet18", zero_head_resnet(3).state_dict(), "gaia_a,msp",
                                      capsys)
    assert code == 0, err
    lines = [line for line in err.splitlines() if "not finite" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: GAIA-A: 4 of 4 scores are not finite"), err
    assert "NonFiniteScoreWarning" not in err
    gaia_a_row = next(line for line in out.splitlines() if line.strip().startswith("gaia_a"))
    assert "n/a" in gaia_a_row and "n/a: scores that are not finite" in out
    assert metrics["methods"]["gaia_a"]["far"]["fpr95"] is None and "gaia_a" in metrics["undefined"]


def test_app_shows_why_gaia_a_is_na_where_its_numbers_would_be(app_cache, tmp_path):
    checkpoint = tmp_path / "zero_head.pt"
    torch.save(zero_head_resnet(10).state_dict(), checkpoint)
    at = open_evaluate(sb_max_samples=2, sb_model_kind="torchvision", sb_tv_name="resnet18",
                       **{"sb_checkpoint_path::torchvision": str(checkpoint)})
    assert not at.exception, at.exception
    notes = [w.value for w in at.warning if "not finite" in w.value]
    assert len(notes) == 1 and notes[0].startswith("GAIA-A: "), [w.value for w in at.warning]
    zero_notes = [w.value for w in at.warning if "exact" in w.value]  # 3.: the zero head cuts every gradient
    assert len(zero_notes) == 1 and zero_notes[0].startswith("GAIA-Z: every gradient is exactly zero"), zero_notes
    grids = [m.value for m in at.markdown if m.value.startswith("| ")]
    assert grids and all(any(line.startswith("| GAIA-A |") and "n/a" in line for line in grid.splitlines())
                         for grid in grids)


# --------------------------------------------------------------------------- 3. all-zero vs no exact zeros


@pytest.mark.parametrize("name", ["tv:resnet18", "BiT-S-R50x1"])
def test_all_zero_gradients_are_not_called_smooth_activations(name):
    from gaia_viz.gaia.zeros import NoExactZerosWarning, ZeroGradientWarning

    torch.manual_seed(0)
    model = load_model(name, pretrained=False, num_classes=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = gaia.gaia_analyze(model, torch.zeros(2, 3, 64, 64), average=False)
    assert torch.equal(result.gaia_z, torch.zeros(2, dtype=torch.float64))
    assert not [w for w in caught if issubclass(w.category, NoExactZerosWarning)]
    (warning,) = [w for w in caught if issubclass(w.category, ZeroGradientWarning)]
    text = str(warning.message)
    assert text.startswith("GAIA-Z: every gradient is exactly zero for 2 of 2 images (the model's output does not "
                           "depend on these layers for this input")
    assert result.zero_gradients_note == text and not result.lacks_exact_zeros and result.exact_zeros_note is None


def test_smooth_activations_say_so():
    torch.manual_seed(0)
    model = load_model("timm:test_efficientnet", pretrained=False, num_classes=3)
    result = gaia.gaia_analyze(model, images(2, 64), average=False, warn_without_zeros=False)
    assert result.exact_zeros_note.startswith("GAIA-Z: the hooked gradients hold almost no exact zeros "
                                              "(smooth activations)")
    assert result.zero_gradients_note is None


def test_sweep_records_the_all_zero_note_once():
    evaluation = quiet_run(zero_head_resnet(), ["gaia_z", "msp"], fit=0)
    notes = [n for n in evaluation.config.notes if "exact zero" in n]
    assert len(notes) == 1 and notes[0].startswith("GAIA-Z: every gradient is exactly zero for 4 of 4 images "
                                                   "(2 of 2 on id, 2 of 2 on far)")
    assert sweep.gaia_z_note(evaluation) is None  # not the "no exact zeros" note


def test_cli_prints_the_all_zero_note_as_one_warning_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err, metrics = cli_run(tmp_path, "tv:resnet18", zero_head_resnet(3).state_dict(), "gaia_z,msp", capsys)
    assert code == 0, err
    lines = [line for line in err.splitlines() if "exact" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: GAIA-Z: every gradient is exactly zero"), err
    assert metrics["config"]["notes"] == [lines[0][len("warning: "):]]


# --------------------------------------------------------------------------- 4. refusals name the real cause


def test_conv2d_subclasses_count_as_convolutions_in_the_fallback():
    torch.manual_seed(0)
    model = load_model("timm:nf_resnet26", pretrained=False, num_classes=3)
    x = images(2, 64)
    layout = gaia.model_layout(model, x)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert {type(m).__name__ for m in model.modules() if isinstance(m, nn.Conv2d)} == {"ScaledStdConv2d"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GaiaVizWarning)
        result = gaia.gaia_analyze(model, x)
    assert result.zero_layers == [layer.name for layer in layout.feature_layers if layer.name in convs]
    assert len(result.zero_layers) == 29 and all(layout.info(n).is_conv for n in result.zero_layers)
    assert torch.isfinite(result.gaia_z).all() and torch.isfinite(result.gaia_a).all()
    assert 0 < float(result.gaia_z.max()) < 1


def test_nothing_to_hook_names_convolutions_with_subclasses():
    class LinearOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 8 * 8, 3)

        def forward(self, x):
            return self.fc(x.flatten(1))

    with pytest.raises(LayerError, match=r"neither normalisation layers nor convolutions \(nn.Conv2d or a subclass\)"):
        gaia.gaia_z(LinearOnly(), images(1, 8))


def test_levits_refusal_lists_its_own_activations():
    model = load_model("timm:levit_128", pretrained=False, num_classes=3)
    with pytest.raises(LayerError) as info:
        gaia.gaia_z(model, images(1, 224))
    message = str(info.value)
    assert "token models" in message and "Activations found in this model: Hardswish (" in message
    assert "GELU" not in message and "attention between tokens" in message


def test_cli_and_app_give_levits_real_reason(tmp_path, capsys, monkeypatch, app_cache):
    monkeypatch.chdir(tmp_path)
    model = load_model("timm:levit_128", pretrained=False, num_classes=3)
    code, _, err, metrics = cli_run(tmp_path, "timm:levit_128", model.state_dict(), "gaia_z,msp", capsys)
    assert code == 0, err
    (line,) = [line for line in err.splitlines() if "left out" in line]
    assert line.startswith("warning: gaia_z left out:") and "Hardswish" in line and "GELU" not in line
    assert list(metrics["methods"]) == ["msp"]
    at = open_evaluate(sb_max_samples=2, sb_model_kind="timm", sb_timm_name="levit_128",
                       **{"sb_random_weights::timm": True})
    assert not at.exception, at.exception
    shown = [w.value for w in at.warning if "left out" in w.value]
    assert shown and all("Hardswish" in text and "GELU" not in text for text in shown), shown
    assert {text.split(" is left out")[0] for text in shown} == {"GAIA-Z", "GAIA-A"}
