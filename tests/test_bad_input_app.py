"""Bad input, app surface (streamlit.testing, no browser): bad uploads on the Inspect page,
bad folder and checkpoint paths in the sidebar, paths outside the allowed data roots and
user strings that look like HTML or Markdown. Each gives an ``st.error`` saying what to do,
never an exception, and the next run with good input works.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from gaia_viz import paths
from gaia_viz.app import jobs
from gaia_viz.app.markdown import escape_markdown
from gaia_viz.app.setup import Setup
from gaia_viz.demo import DEMO_CHECKPOINT, DemoCNN
from gaia_viz.errors import DataError

from support import ROOT
TIMEOUT = 120
XSS_NAME = "<img src=x onerror=alert(1)>.png"
MARKDOWN_NAME = "**bold** _it_ [link](javascript:alert(1)) `code` $x$ ~~s~~.png"

pytestmark = pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(), reason=f"demo weights {DEMO_CHECKPOINT} missing")


@pytest.fixture(autouse=True)
def private_run_cache(run_cache_at, monkeypatch):
    run_cache_at("bad-input-app-cache")
    monkeypatch.delenv(paths.ALLOWED_ROOTS_ENV, raising=False)
    monkeypatch.delenv(paths.ALLOWED_HIDDEN_ENV, raising=False)


# --------------------------------------------------------------------------- helpers


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def noise(size=(48, 40)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def literal(markdown: str) -> str:
    """What CommonMark shows for ``markdown`` made only of text and backslash escapes."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)


def unescaped(markdown: str, chars: str) -> list[str]:
    """Characters of ``chars`` in ``markdown`` not preceded by a backslash (would be syntax)."""
    return [m.group(1) for m in re.finditer(r"(?<!\\)([" + re.escape(chars) + "])", markdown)]


def texts(at: AppTest) -> list[str]:
    return [str(e.value) for kind in ("error", "warning", "markdown", "caption", "success", "info")
            for e in getattr(at, kind)]


def no_html_anywhere(at: AppTest) -> None:
    assert not at.get("html")
    for element in at.markdown:
        assert not element.proto.allow_html


def sidebar_script():
    import streamlit as st

    from gaia_viz.app.sidebar import sidebar

    setup = sidebar()
    st.text("set-up loaded" if setup is not None else "no set-up")


def sidebar_app(**state) -> AppTest:
    at = AppTest.from_function(sidebar_script, default_timeout=TIMEOUT)
    at.session_state["sb_max_samples"] = 20
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def loaded(at: AppTest) -> bool:
    assert not at.exception, at.exception
    return isinstance(at.session_state["setup"], Setup) and at.text[-1].value == "set-up loaded"


def errors(at: AppTest) -> list[str]:
    return [literal(e.value) for e in at.error]


def custom_data(at: AppTest, id_spec: str, ood_text: str = "noise = demo:noise") -> AppTest:
    if at.sidebar.selectbox(key="sb_data_kind").value != "custom":
        at.sidebar.selectbox(key="sb_data_kind").set_value("custom").run()
    at.sidebar.text_input(key="sb_custom_id").input(id_spec)
    at.sidebar.text_area(key="sb_custom_ood").input(ood_text)
    return at.run()


def write_pngs(folder: Path, count: int = 3):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("L", (28, 28), 30 * i).save(folder / f"{i}.png")
    return folder


# --------------------------------------------------------------------------- Inspect uploads

BAD_UPLOADS = {
    "empty.png": b"",
    "random.jpg": np.random.default_rng(3).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
    "cut.png": encode(noise(), "PNG")[:700],
    "cut.webp": encode(noise(), "WEBP")[:200],
    MARKDOWN_NAME: b"not an image at all",
}


def exif_rotated() -> bytes:
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", exif=exif.tobytes())


def palette_transparent() -> bytes:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    return encode(image, "PNG", transparency=0)


GOOD_ODD_UPLOADS = {
    "tiny 1x1.png": encode(Image.new("L", (1, 1), 255), "PNG"),
    "wide 10000x10.png": encode(Image.new("RGB", (10_000, 10), (9, 9, 9)), "PNG"),
    "deep 16-bit.png": encode(Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)), "PNG"),
    "print CMYK.jpg": encode(Image.new("CMYK", (30, 20), (0, 255, 255, 0)), "JPEG"),
    "palette transparent.png": palette_transparent(),
    "phone EXIF-rotated.jpg": exif_rotated(),
    "layers.tiff": encode(noise((20, 20)), "TIFF"),
    XSS_NAME: encode(Image.new("L", (28, 28), 128), "PNG"),
}


def inspect_with_uploads(files: dict[str, bytes]) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "1_Inspect.py"), default_timeout=TIMEOUT)
    at.session_state["sb_max_samples"] = 40
    at.run()
    jobs.wait_for_jobs(TIMEOUT)
    at.run()
    next(r for r in at.radio if r.key.startswith("w_inspect_source::")).set_value("upload").run()
    mime = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "tiff": "image/tiff"}
    at.file_uploader(key="inspect_upload").set_value(
        [(name, data, mime[name.rsplit(".", 1)[1]]) for name, data in files.items()])
    return at.run()


def test_inspect_bad_uploads_each_get_an_error_and_good_ones_still_load():
    at = inspect_with_uploads({**BAD_UPLOADS, "good.png": GOOD_ODD_UPLOADS["tiny 1x1.png"]})
    assert not at.exception, at.exception
    shown = errors(at)
    for name in BAD_UPLOADS:
        assert any(name in e and "Use a real image file" in e for e in shown), (name, shown)
    # the good upload next to them is inspected
    assert any("at threshold" in v.value for v in [*at.success, *at.error])
    assert at.get("plotly_chart")
    no_html_anywhere(at)


def test_inspect_good_odd_uploads_all_work():
    at = inspect_with_uploads(GOOD_ODD_UPLOADS)
    assert not at.exception, at.exception
    assert not [e for e in errors(at) if "at threshold" not in e], errors(at)  # OOD verdicts are st.error
    pick = at.selectbox(key="inspect_upload_pick")
    assert list(pick.options) == list(GOOD_ODD_UPLOADS)
    for name in GOOD_ODD_UPLOADS:
        pick = at.selectbox(key="inspect_upload_pick").set_value(name)
        at.run()
        assert not at.exception, (name, at.exception)
        captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
        assert any(literal(c) == f"{name}, as the model sees it" for c in captions), (name, captions)
        verdicts = [v.value for v in [*at.success, *at.error] if "at threshold" in v.value]
        assert len(verdicts) == 2, (name, errors(at))


def test_user_strings_are_shown_literally_not_as_html_or_markdown():
    at = inspect_with_uploads({XSS_NAME: GOOD_ODD_UPLOADS[XSS_NAME], MARKDOWN_NAME: b"junk"})
    assert not at.exception, at.exception
    no_html_anywhere(at)
    error = next(e.value for e in at.error if "javascript" in e.value)
    assert MARKDOWN_NAME in literal(error)
    assert not unescaped(error.split(". Use a real image file")[0], "*_[]`$~<>"), error
    caption = next(img.caption for element in at.get("image") for img in element.proto.imgs
                   if "onerror" in img.caption)
    assert literal(caption) == f"{XSS_NAME}, as the model sees it"
    assert not unescaped(caption, "<>"), caption


@pytest.mark.parametrize("text", [XSS_NAME, MARKDOWN_NAME, "# heading", "1. list", "- item", "a|b|c",
                                  "line one\nline two", r"C:\data\x_y"])
def test_escape_markdown_round_trips(text):
    escaped = escape_markdown(text)
    assert literal(escaped) == " ".join(text.splitlines())
    assert not unescaped(escaped, "*_[]`$~<>|#")
    assert "\n" not in escaped


# --------------------------------------------------------------------------- sidebar: data


def bad_folder_cases(tmp: Path) -> dict[str, tuple[str, str]]:
    (tmp / "empty").mkdir()
    (tmp / "classes" / "a").mkdir(parents=True)
    (tmp / "classes" / "b").mkdir()
    junk = tmp / "junk"
    junk.mkdir()
    (junk / "a.png").write_bytes(b"")
    (junk / "b.jpg").write_text("text renamed")
    (tmp / "file.png").write_bytes(encode(Image.new("L", (4, 4)), "PNG"))
    return {
        "missing folder": (f"folder:{tmp / 'nope'}", "does not exist"),
        "empty folder": (str(tmp / "empty"), "no images found"),
        "class folders without images": (str(tmp / "classes"), "no images found"),
        "only unreadable files": (str(junk), "2 unreadable image files skipped"),
        "a file given as folder:": (f"folder:{tmp / 'file.png'}", "does not exist"),
        "unknown spec": ("ftp://example/data", "cannot open"),
        "torchvision set absent": ("torchvision:SVHN:test", "SVHN"),
    }


CASE_NAMES = ["missing folder", "empty folder", "class folders without images", "only unreadable files",
              "a file given as folder:", "unknown spec", "torchvision set absent"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_data_paths_show_errors_then_good_data_works(tmp_path, case, monkeypatch):
    monkeypatch.setenv("GAIA_VIZ_DATA_ROOT", str(tmp_path))  # torchvision sets are looked for here
    spec, phrase = bad_folder_cases(tmp_path)[case]
    at = custom_data(sidebar_app(), spec)
    assert not loaded(at)
    assert any(phrase in e for e in errors(at)), errors(at)
    good = write_pngs(tmp_path / "good")
    at = custom_data(at, str(good))
    assert loaded(at), errors(at)
    assert len(at.session_state["setup"].id_set) == 3


def test_folder_with_some_unreadable_files_warns_and_works(tmp_path):
    folder = write_pngs(tmp_path / "mixed")
    (folder / "broken.png").write_text("no pixels")
    (folder / "notes.txt").write_text("ignored")
    at = custom_data(sidebar_app(), str(folder))
    assert loaded(at), errors(at)
    assert any("1 unreadable image files were skipped" in w.value for w in at.warning)


def test_bad_ood_line_then_fixed(tmp_path):
    at = custom_data(sidebar_app(), "demo:digits", f"x = {tmp_path / 'missing'}")
    assert not loaded(at) and any("missing" in e for e in errors(at))
    at = custom_data(at, "demo:digits", f"x = {write_pngs(tmp_path / 'ood')}")
    assert loaded(at), errors(at)


# --------------------------------------------------------------------------- sidebar: models


class CodeRunner:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def cifar20_state(classes=10):
    from gaia_viz.models import cifar_resnet

    return cifar_resnet(20, classes).state_dict()


MARKER = "pwned"
BAD_CHECKPOINTS = {
    "malicious pickle": (lambda tmp: saved({"w": torch.zeros(1), "x": CodeRunner(tmp / MARKER)}), "refused"),
    "malicious plain pickle": (lambda tmp: pickle.dumps({"x": CodeRunner(tmp / MARKER)}), "refused"),
    "other architecture": (lambda tmp: saved(DemoCNN().state_dict()), "does not fit"),
    "truncated": (lambda tmp: saved(cifar20_state())[:3000], "corrupt"),
    "empty": (lambda tmp: b"", "empty"),
}


def back_to_demo(at: AppTest) -> AppTest:
    at.sidebar.selectbox(key="sb_model_kind").set_value("demo").run()
    return at


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("name", list(BAD_CHECKPOINTS))
@pytest.mark.parametrize("how", ["path", "upload"])
def test_bad_checkpoints_show_errors_and_never_run_code(tmp_path, name, how):
    make, phrase = BAD_CHECKPOINTS[name]
    data = make(tmp_path)
    at = sidebar_app()
    at.sidebar.selectbox(key="sb_model_kind").set_value("gaia").run()
    if how == "path":
        path = tmp_path / "weights.pth"
        path.write_bytes(data)
        at.sidebar.text_input(key="sb_checkpoint_path::gaia").input(str(path)).run()
    else:
        at.sidebar.file_uploader(key="sb_checkpoint_upload::gaia").set_value(
            ("weights.pth", data, "application/octet-stream")).run()
    assert not at.exception, at.exception
    assert any(phrase in e for e in errors(at)), errors(at)
    assert not (tmp_path / MARKER).exists()
    assert loaded(back_to_demo(at)), errors(at)


def test_checkpoint_path_that_is_a_folder(tmp_path):
    at = sidebar_app()
    at.sidebar.selectbox(key="sb_model_kind").set_value("gaia").run()
    at.sidebar.text_input(key="sb_checkpoint_path::gaia").input(str(tmp_path)).run()
    assert any("is a folder" in e for e in errors(at)), errors(at)
    assert loaded(back_to_demo(at))


def test_model_that_cannot_be_built_shows_an_error(tmp_path):
    # a 7-class checkpoint for a torchvision model: loads as weights, fails as that architecture
    at = sidebar_app()
    at.sidebar.selectbox(key="sb_model_kind").set_value("torchvision").run()
    at.sidebar.text_input(key="sb_tv_name").input("resnet18").run()
    at.sidebar.file_uploader(key="sb_checkpoint_upload::torchvision").set_value(
        ("mine.pt", saved(cifar20_state(7)), "application/octet-stream")).run()
    assert not at.exception, at.exception
    assert any("checkpoint does not fit" in e for e in errors(at)), errors(at)
    assert loaded(back_to_demo(at))


# --------------------------------------------------------------------------- allowed roots


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """tmp/allowed (the only allowed root), tmp/secret (outside, holding images)."""
    allowed = write_pngs(tmp_path / "allowed" / "data")
    secret = write_pngs(tmp_path / "secret")
    (tmp_path / "secret" / "weights.pth").write_bytes(saved(DemoCNN().state_dict()))
    monkeypatch.setenv(paths.ALLOWED_ROOTS_ENV, str(tmp_path / "allowed"))
    return allowed, secret


def test_allowed_roots_setting_and_check(roots, tmp_path, monkeypatch):
    allowed, secret = roots
    monkeypatch.setenv("GAIA_VIZ_DATA_ROOT", str(tmp_path / "data-root"))
    assert paths.restriction_active()  # the setting turns the check on, also locally
    # the data root is always allowed; the setting adds its folders
    assert paths.allowed_roots() == [(tmp_path / "data-root").resolve(), (tmp_path / "allowed").resolve()]
    assert paths.check_allowed(allowed) == allowed.resolve()
    for outside in (secret, allowed / ".." / ".." / "secret", Path("/etc/passwd")):
        with pytest.raises(DataError, match="outside the allowed data roots.*GAIA_VIZ_ALLOWED_ROOTS"):
            paths.check_allowed(outside)
    monkeypatch.delenv(paths.ALLOWED_ROOTS_ENV)
    monkeypatch.setattr(paths, "app_server_address", lambda: "0.0.0.0")
    assert paths.restriction_active()  # served to others: the data root only by default
    assert paths.allowed_roots() == [(tmp_path / "data-root").resolve()]
    monkeypatch.setattr(paths, "app_server_address", lambda: "127.0.0.1")
    assert not paths.restriction_active() and paths.check_allowed(secret) == secret.resolve()


@pytest.mark.parametrize("address, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                               ("[::1]", True), ("0.0.0.0", False), ("192.168.1.5", False),
                                               ("", False), (None, False)])
def test_loopback_detection(address, loopback):
    assert paths.is_loopback(address) is loopback


def escape_cases(allowed: Path, secret: Path) -> dict[str, str]:
    root = allowed.parent  # the allowed root; ``allowed`` (the good data) stays clean
    (root / "link_out").symlink_to(secret, target_is_directory=True)
    inner = write_pngs(root / "inner", 1)
    (inner / "sneaky.png").symlink_to(secret / "0.png")
    return {
        "folder outside": str(secret),
        "folder: spec outside": f"folder:{secret}",
        "dot-dot escape": str(allowed / ".." / ".." / "secret"),
        "symlink escaping": str(root / "link_out"),
        "symlinked file inside an allowed folder": str(inner),
        "images: list outside": f"images:{secret / '0.png'}",
    }


@pytest.mark.parametrize("case", ["folder outside", "folder: spec outside", "dot-dot escape", "symlink escaping",
                                  "symlinked file inside an allowed folder", "images: list outside"])
def test_paths_outside_the_allowed_roots_are_refused(roots, case):
    allowed, secret = roots
    spec = escape_cases(allowed, secret)[case]
    at = custom_data(sidebar_app(), spec)
    assert not loaded(at)
    assert any("outside the allowed data roots" in e for e in errors(at)), errors(at)
    at = custom_data(at, str(allowed))
    assert loaded(at), errors(at)


def test_checkpoint_path_and_data_root_outside_are_refused(roots, tmp_path):
    allowed, secret = roots
    at = sidebar_app()
    at.sidebar.selectbox(key="sb_model_kind").set_value("gaia").run()
    at.sidebar.text_input(key="sb_checkpoint_path::gaia").input(str(secret / "weights.pth")).run()
    assert any("outside the allowed data roots" in e for e in errors(at)), errors(at)
    at = back_to_demo(at)
    at.sidebar.text_input(key="sb_data_root").input(str(secret)).run()
    assert any(e.startswith(f"data root {secret} is outside the allowed data roots") for e in errors(at)), errors(at)
    at.sidebar.text_input(key="sb_data_root").input(str(allowed)).run()
    assert loaded(at), errors(at)
