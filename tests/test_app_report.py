"""The real-data report page (runs when the shared CIFAR-10 data root is present)."""


import pytest
from streamlit.testing.v1 import AppTest

from gaia_viz.detectors import DETECTORS

from support import DATA_ROOT, ROOT


def test_report_page_without_data_root_explains_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("GAIA_VIZ_DATA_ROOT", str(tmp_path / "missing"))
    at = AppTest.from_file(str(ROOT / "pages" / "6_Real_data_report.py"), default_timeout=120).run()
    assert not at.exception
    messages = " ".join(m.value for m in at.error)
    assert "data root" in messages and "does not exist" in messages


@pytest.mark.real_data
@pytest.mark.skipif(not (DATA_ROOT / "cifar10" / "test").is_dir(), reason=f"no CIFAR-10 data at {DATA_ROOT}")
def test_report_page_runs_and_shows_tables(monkeypatch, tmp_path):
    monkeypatch.setenv("GAIA_VIZ_DATA_ROOT", str(DATA_ROOT))
    monkeypatch.setenv("GAIA_VIZ_CACHE_DIR", str(tmp_path / "cache"))
    at = AppTest.from_file(str(ROOT / "pages" / "6_Real_data_report.py"), default_timeout=600).run()
    assert not at.exception
    at.number_input(key="report_max_id").set_value(200)
    at.number_input(key="report_max_ood").set_value(50)
    at.multiselect(key="report_models").set_value(["cifar_resnet20"])
    at.run()
    at.button(key="report_run").click().run()
    assert not at.exception and not at.error
    assert len(at.dataframe) == 2  # the field's sets, then the far-OOD extras
    field, extras = (frame.value for frame in at.dataframe)
    assert len(field) == len(extras) == len(DETECTORS)
    assert {"LSUN-Resize FPR95 ↓ (%)", "TinyImageNet-Resize FPR95 ↓ (%)", "textures (center-crop) FPR95 ↓ (%)",
            "textures (resize) FPR95 ↓ (%)", "average FPR95 ↓ (%)"} <= set(field.columns)
    assert "mnist digits FPR95 ↓ (%)" in extras.columns and "mnist digits FPR95 ↓ (%)" not in field.columns
    assert any("Reading" in m.value and "gaia_z" in m.value for m in at.markdown)
    assert any("4.81 %" in m.value for m in at.markdown)  # the published anchors, with sources
    assert any("rank by average FPR95" in m.value for m in at.markdown)  # the claim check
    assert len(at.get("plotly_chart")) == 3
    assert any("%" in m.value for m in at.metric)
