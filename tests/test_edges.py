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

from support import ROOT


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
    undefined = {"methods": {"gaia_a": {"far": {"fpr95": None, "auroc": None}},
                             "msp": {"far": {"fpr95": 0.5, "auroc": 0.75}}},
                 "config": {}, "undefined": {"gaia_a": "GAIA-A: 4 of 4 scores are not finite (...)"}}
    text = metrics_markdown(undefined)
    assert "| GAIA-A | n/a |" in text and "- n/a: GAIA-A: 4 of 4 scores are not finite" in text
    from gaia_viz.report import reading

    assert reading(undefined).startswith("Best FPR95 on far: **msp**")


@pytest.fixture
def app_cache(run_cache_at):
    run_cache_at("edges-app-cache")


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
    fallback = [w.value for w in at.warning if "no normalisation layers" in w.value]  # 5.: once, next to GAIA-Z
    assert len(fallback) == 1 and fallback[0].startswith("GAIA-Z: this model has no normalisation layers")
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


def test_gaia_a_with_a_cut_head_layer_names_that_cause_not_a_uniform_softmax():
    # NF-ResNet-26 at 32 px: the head layer (the last map with spatial extent, inside the last
    # block) reaches the logits only through inactive ReLUs, while the shortcut carries them
    torch.manual_seed(0)
    model = load_model("timm:nf_resnet26", pretrained=False, num_classes=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GaiaVizWarning)
        result = gaia.gaia_analyze(model, images(2, 32))
    assert (result.output_component == 0).all() and result.logits.std(1).min() > 0
    assert "does not depend on the head layer" in result.non_finite_note
    assert "softmax is uniform" not in result.non_finite_note


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
    assert len({w.value for w in at.warning}) == len(at.warning)  # 6.: one note per cause
    # 3.: the zero head cuts every gradient: the all-zero note, not the "no exact zeros" one
    zero_notes = [w.value for w in at.warning if "exact zero" in w.value or w.value.startswith("GAIA-Z")]
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


# --------------------------------------------------------------------------- 5. quieter defects


def test_conv_fallback_warns_once_per_call_and_once_per_evaluation():
    from gaia_viz.errors import LayerFallbackWarning

    torch.manual_seed(0)
    model = load_model("tv:alexnet", pretrained=False, num_classes=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = gaia.gaia_analyze(model, images(2, 64))
    assert [w.category for w in caught] == [LayerFallbackWarning]
    assert result.layers_note.startswith("GAIA-Z and GAIA-A: this model has no normalisation layers")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluation = run(model, ["gaia_z", "gaia_a", "msp"], n=3, fit=0)  # batches of 4: 2 batches
    fallback = [w for w in caught if issubclass(w.category, LayerFallbackWarning)]
    assert len(fallback) == 1 and len(caught) == 1
    assert [n for n in evaluation.config.notes if "no normalisation layers" in n] == [str(fallback[0].message)]


def test_the_fallback_does_not_hook_squeezenets_class_score_conv():
    torch.manual_seed(0)
    model = load_model("tv:squeezenet1_0", pretrained=False, num_classes=10)
    x = images(2, 64)
    layout = gaia.model_layout(model, x)
    assert [layer.name for layer in layout.feature_layers if layer.is_logits_map] == ["classifier.1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GaiaVizWarning)
        result = gaia.gaia_analyze(model, x, average=False)
        with_head = gaia.gaia_z(model, x, layers=[*result.zero_layers, "classifier.1"])
    assert "classifier.1" not in result.zero_layers and len(result.zero_layers) == 25
    assert "classifier.1 is not hooked" in result.layers_note
    assert (with_head < result.gaia_z).all()  # its ratios are about 0 and dragged the mean down
    with pytest.raises(LayerError, match="class scores come from the convolution classifier.1"):
        gaia.gaia_a(model, x)


class Wrapped(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.net, self.kind = SmallNet(), kind

    def forward(self, x):
        from torchvision.models.inception import InceptionOutputs

        logits = self.net(x)
        return {"tuple": lambda: (logits, logits.detach()), "list": lambda: [logits],
                "dict": lambda: {"logits": logits, "hidden": x},
                "object": lambda: type("Out", (), {"logits": logits})(),
                "inception": lambda: InceptionOutputs(logits, None),
                "no logits": lambda: {"scores": logits}, "3-d": lambda: logits[:, :, None],
                "string": lambda: "oops"}[self.kind]()


@pytest.mark.parametrize("kind", ["tuple", "list", "dict", "object", "inception"])
def test_model_outputs_with_unambiguous_logits_are_accepted(kind):
    torch.manual_seed(0)
    wrapped = Wrapped(kind).eval()
    x = images(2, 16)
    plain = wrapped.net
    torch.testing.assert_close(gaia.gaia_z(wrapped, x), gaia.gaia_z(plain, x))
    torch.testing.assert_close(gaia.gaia_a(wrapped, x), gaia.gaia_a(plain, x))
    evaluation = run(wrapped, ["gaia_z", "msp", "odin"], size=16, fit=0)
    assert evaluation.methods == ["gaia_z", "msp", "odin"] and evaluation.config.left_out == {}


@pytest.mark.parametrize("kind, said", [("no logits", "a dict with keys 'scores'"),
                                        ("3-d", "a tensor of shape (1, 3, 1)"),
                                        ("string", "a builtins.str")])
def test_other_model_outputs_are_refused_saying_what_was_returned(kind, said):
    with pytest.raises(ModelError) as info:
        run(Wrapped(kind), ["gaia_z", "msp"], size=16, fit=0)
    message = str(info.value)
    assert f"it returned {said}" in message and "wrap the model" in message


class Labelled(TensorSet):
    def __init__(self, name, model, wrong: bool, n=30):
        super().__init__(name, n, 5, size=8)
        with torch.no_grad():
            predicted = model(self.x).argmax(1)
        self.y = ((predicted + 1) % 3 if wrong else predicted).tolist()


def test_an_id_accuracy_at_chance_is_noted():
    torch.manual_seed(0)
    model = SmallNet().eval()
    for wrong in (True, False):
        settings = sweep.SweepSettings(methods=["msp"], batch_size=16)
        evaluation = sweep.evaluate(model, Labelled("id", model, wrong), {"far": TensorSet("far", 4, 2, 8)},
                                    settings, use_cache=False)
        notes = [n for n in evaluation.config.notes if n.startswith(sweep.ACCURACY_NOTE)]
        if wrong:
            assert len(notes) == 1 and notes[0].startswith("ID accuracy is 0.00 % on the 30 labelled images of id, "
                                                           "no better than chance for 3 classes (33.33 %)")
            assert "class order" in notes[0]
        else:
            assert notes == [] and evaluation.id_accuracy() == 1.0
    few = sweep.evaluate(model, Labelled("id", model, True, n=10), {"far": TensorSet("far", 4, 2, 8)}, settings,
                         use_cache=False)
    assert not [n for n in few.config.notes if n.startswith(sweep.ACCURACY_NOTE)]  # too few to tell


def test_cli_prints_the_fallback_and_chance_notes_once(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = load_model("tv:squeezenet1_0", pretrained=False, num_classes=3)
    checkpoint = tmp_path / "weights.pt"
    torch.save(model.state_dict(), checkpoint)
    for k, name in enumerate(("a", "b", "c")):  # 30 labelled images; a random model is at chance
        write_folder(tmp_path / "id" / name, 10, (60 * k, 90, 10), size=24)
    ood_dir = write_folder(tmp_path / "ood", 2, (200, 30, 120), size=24)
    out = tmp_path / "out"
    code = cli.main(["evaluate", "--model", "tv:squeezenet1_0", "--checkpoint", str(checkpoint), "--num-classes", "3",
                     "--id", str(tmp_path / "id"), "--ood", f"far={ood_dir}", "--methods", "gaia_z,msp",
                     "--no-cache", "--quiet", "--workers", "0", "--batch-size", "32", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    warning_lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("warning: ") for line in warning_lines), err  # no Python warning text
    fallback = [line for line in warning_lines if "no normalisation layers" in line]
    chance = [line for line in warning_lines if "ID accuracy" in line]
    assert len(fallback) == 1 and "classifier.1 is not hooked" in fallback[0]
    accuracy = json.loads((out / "metrics.json").read_text())
    assert len(chance) == 1 and "chance for 3 classes" in chance[0]
    assert accuracy["config"]["notes"] == [line[len("warning: "):] for line in warning_lines]


def test_app_shows_the_chance_note_next_to_the_accuracy(tmp_path):
    import pickle

    from streamlit.testing.v1 import AppTest

    torch.manual_seed(0)
    model = SmallNet().eval()
    evaluation = sweep.evaluate(model, Labelled("id", model, True), {"far": TensorSet("far", 4, 2, 8)},
                                sweep.SweepSettings(methods=["msp"], batch_size=16), use_cache=False)
    path = tmp_path / "evaluation.pkl"
    path.write_bytes(pickle.dumps(evaluation))

    def page(path):
        import pickle
        from pathlib import Path

        import streamlit as st

        from gaia_viz.app.page import warn_about_accuracy

        evaluation = pickle.loads(Path(path).read_bytes())
        st.metric("ID top-1 accuracy", f"{100 * evaluation.id_accuracy():.2f} %")
        warn_about_accuracy(evaluation)

    at = AppTest.from_function(page, args=(str(path),)).run()
    assert not at.exception
    shown = [w.value for w in at.warning if "no better than chance" in w.value]
    assert len(shown) == 1 and shown[0].startswith("ID accuracy is 0.00 % on the 30 labelled images")
    assert at.metric[0].value == "0.00 %"


# --------------------------------------------------------------------------- 6./7. every method that can run, one note per cause


FAMILIES = {  # model, input size, methods left out (with a word of their reason), methods with n/a metrics
    "deit": ("timm:deit_tiny_patch16_224", 224, {"gaia_z": "token models", "gaia_a": "token models",
                                                 "vim": "cannot be fitted"}, set()),
    "squeezenet": ("tv:squeezenet1_0", 64, {"gaia_a": "class scores come from the convolution classifier.1",
                                            **{m: "no nn.Linear classifier head" for m in (
                                                "gradnorm", "react", "knn", "mahalanobis", "ash", "scale", "vim",
                                                "fdbd", "nnguide", "dice")}}, set()),
    "nf_resnet": ("timm:nf_resnet26", 64, {"vim": "cannot be fitted"}, set()),
    "zero_head": ("zero-head tv:resnet18", 64, {"vim": "cannot be fitted", "fdbd": "identical head weights"},
                  {"gaia_a"}),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_all_methods_finish_and_every_method_that_can_run_is_scored(family):
    name, size, left_out, undefined = FAMILIES[family]
    torch.manual_seed(0)
    model = zero_head_resnet(3) if family == "zero_head" else load_model(name, pretrained=False, num_classes=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluation = run(model, list(sweep.ALL_METHODS), size=size, fit=4)
    assert set(evaluation.config.left_out) == set(left_out)
    for method, word in left_out.items():
        assert word in evaluation.config.left_out[method], (method, evaluation.config.left_out[method])
    assert evaluation.methods == [m for m in sweep.ALL_METHODS if m not in left_out]
    assert set(sweep.non_finite_methods(evaluation)) == undefined
    table = evaluation.metrics_table().set_index("method")
    for method in evaluation.methods:
        assert table.loc[[method], "auroc"].isna().all() == (method in undefined), method
    # 6.: one note per cause, one warning per cause
    notes = evaluation.config.notes
    assert len(notes) == len(set(notes))
    messages = [str(w.message) for w in caught if issubclass(w.category, GaiaVizWarning)]
    assert len(messages) == len(set(messages)) and all(
        sum(note == m for m in messages) <= 1 for note in notes)


def test_cli_says_each_cause_once_on_a_run_of_all_methods(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit_dir = write_folder(tmp_path / "fit", 4, (90, 90, 90))
    code, out, err, metrics = cli_run(tmp_path, "tv:resnet18", zero_head_resnet(3).state_dict(), "all", capsys,
                                      extra=["--fit", str(fit_dir)])
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("warning: ") for line in lines) and len(lines) == len(set(lines)), err
    assert sorted(line.split(":")[1].strip().split(" ")[0] for line in lines) == sorted(
        ["GAIA-A", "GAIA-Z", "Mahalanobis", "fdbd", "vim"]), err  # Mahalanobis: the fit folder has no labels
    assert set(metrics["config"]["left_out"]) == {"vim", "fdbd"} and set(metrics["undefined"]) == {"gaia_a"}
