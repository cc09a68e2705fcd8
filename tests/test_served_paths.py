"""Served safely (issue 16): symlink loops end, outside files are never touched or named,
hostile path text is refused up front, served defaults are narrow, echoes are short, and
``--demo`` refuses the user's sets, through the library, the CLI and the app.

Served mode is simulated by replacing :func:`gaia_viz.paths.app_server_address` (the app runs
in this process under streamlit.testing); every test is bounded in time, so a walk that does
not end fails instead of hanging the suite.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from gaia_viz import paths
from gaia_viz.app import jobs
from gaia_viz.app.markdown import hide_error_details_when_served
from gaia_viz.cli import main as cli_main
from gaia_viz.data import sources
from gaia_viz.demo import DEMO_CHECKPOINT
from gaia_viz.errors import DataError
from gaia_viz.settings import ALLOWED_HIDDEN_ENV, ALLOWED_ROOTS_ENV, CACHE_ENV, DATA_ROOT_ENV

from support import ROOT
APP_TIMEOUT = 120
CANARY = "secret-name-canary"
NAME_MAX, PATH_MAX = os.pathconf("/", "PC_NAME_MAX"), os.pathconf("/", "PC_PATH_MAX")
HOSTILE_TEXT = {
    "NUL": "bad\x00name",
    "newline": "bad\nname",
    "escape": "bad\x1b[31mname",
    "DEL": "bad\x7fname",
    "line separator": "bad\u2028name",
}

needs_demo = pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(), reason=f"demo weights {DEMO_CHECKPOINT} missing")


@pytest.fixture(autouse=True)
def clean_environment(tmp_path_factory, monkeypatch):
    for name in (ALLOWED_ROOTS_ENV, ALLOWED_HIDDEN_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path_factory.getbasetemp() / "served-paths-cache"))


def serve(monkeypatch, data_root: Path) -> None:
    """As ``streamlit run app.py --server.address 0.0.0.0`` with ``data_root`` as the data root."""
    monkeypatch.setattr(paths, "app_server_address", lambda: "0.0.0.0")
    monkeypatch.setenv(DATA_ROOT_ENV, str(data_root))


def pngs(folder: Path, count: int = 3, prefix: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("L", (28, 28), 40 * i).save(folder / f"{prefix}{i}.png")
    return folder


def loop_folder(folder: Path) -> Path:
    """Three PNGs, ``a -> .``, ``b -> .``, ``deep/up -> ..`` and two folders linking each other."""
    pngs(folder)
    (folder / "a").symlink_to(".", target_is_directory=True)
    (folder / "b").symlink_to(".", target_is_directory=True)
    (folder / "deep").mkdir()
    (folder / "deep" / "up").symlink_to("..", target_is_directory=True)
    (folder / "x").mkdir()
    (folder / "y").mkdir()
    (folder / "x" / "to_y").symlink_to("../y", target_is_directory=True)
    (folder / "y" / "to_x").symlink_to("../x", target_is_directory=True)
    return folder


def outside_world(tmp_path: Path) -> tuple[Path, Path]:
    """``tmp/data`` (the data root, holding ``pics``) and ``tmp/ext-canary-dir`` outside it,
    holding an image named after the canary; ``pics/link_out`` leads there."""
    data = tmp_path / "data"
    pics = pngs(data / "pics", 2)
    ext = pngs(tmp_path / f"ext-{CANARY}-dir", 1, prefix=CANARY)
    (pics / "link_out").symlink_to(ext, target_is_directory=True)
    return data, ext


class TouchSpy:
    """Records every path scanned with os.scandir or opened with open()/PIL while active."""

    def __init__(self, monkeypatch):
        self.touched: list[str] = []
        real_scandir, real_open, real_pil_open = os.scandir, builtins.open, Image.open

        def scandir(path="."):
            self.touched.append(os.fspath(path))
            return real_scandir(path)

        def opener(file, *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)):
                self.touched.append(os.fsdecode(os.fspath(file)))
            return real_open(file, *args, **kwargs)

        def pil_open(fp, *args, **kwargs):
            if isinstance(fp, (str, os.PathLike)):
                self.touched.append(os.fspath(fp))
            return real_pil_open(fp, *args, **kwargs)

        monkeypatch.setattr(os, "scandir", scandir)
        monkeypatch.setattr(builtins, "open", opener)
        monkeypatch.setattr(Image, "open", pil_open)

    def inside(self, folder: Path) -> list[str]:
        folder = folder.resolve()
        return [p for p in self.touched if Path(os.path.realpath(p)) == folder
                or folder in Path(os.path.realpath(p)).parents]


# --------------------------------------------------------------------------- 1. walking: library


@pytest.mark.timeout(30)
def test_symlink_loops_end_and_each_folder_is_walked_once(tmp_path):
    folder = loop_folder(tmp_path / "loops")
    assert sources.list_image_files(folder) == [folder / f"{i}.png" for i in range(3)]
    images = sources.open_source(f"folder:{folder}", "demo-mnist28")
    assert len(images) == 3 and images.skipped == []
    assert sources.find_benchmark_sets(tmp_path) == {}  # discovery walks too, and ends


@pytest.mark.timeout(30)
def test_twenty_folders_all_linking_each_other_are_walked_once_each(tmp_path):
    # os.walk(followlinks=True) had listed 36,000 files of these 20 after 10 s, still going
    for i in range(20):
        pngs(tmp_path / "web" / f"d{i:02d}", 1)
    for i in range(20):
        for j in range(20):
            if i != j:
                (tmp_path / "web" / f"d{i:02d}" / f"link{j:02d}").symlink_to(f"../d{j:02d}", target_is_directory=True)
    found = sources.list_image_files(tmp_path / "web")
    assert [p.parent.name for p in found] == [f"d{i:02d}" for i in range(20)]


@pytest.mark.timeout(30)
def test_walk_order_is_by_path_below_the_root_as_given(tmp_path, monkeypatch):
    pngs(tmp_path / "a", 1)
    Image.new("L", (4, 4)).save(tmp_path / "a.png")
    Image.new("L", (4, 4)).save(tmp_path / "a-b.png")
    expected = ["a-b.png", "a.png", "a/0.png"]  # as sorted strings: '-' < '.' < '/'
    assert [p.relative_to(tmp_path).as_posix() for p in sources.list_image_files(tmp_path)] == expected
    monkeypatch.chdir(tmp_path)
    assert [p.as_posix() for p in sources.list_image_files(".")] == expected
    assert [p.as_posix() for p in sources.list_image_files("a")] == ["a/0.png"]


@pytest.mark.timeout(30)
def test_a_second_way_into_a_folder_is_skipped_the_first_kept(tmp_path):
    pngs(tmp_path / "set" / "train", 2)
    (tmp_path / "set" / "zz_all").symlink_to("train", target_is_directory=True)
    assert sources.list_image_files(tmp_path / "set") == [tmp_path / "set" / "train" / f"{i}.png" for i in range(2)]


@pytest.mark.timeout(30)
def test_walk_caps_files_and_folders_with_a_clear_error(tmp_path):
    for i in range(5):
        pngs(tmp_path / "tree" / f"d{i}", 2)
    tree = tmp_path / "tree"
    assert len(sources.list_image_files(tree)) == 10
    with pytest.raises(DataError, match=r"holds more than 3 folders.*max_dirs=3.*choose a smaller folder"):
        sources.list_image_files(tree, max_dirs=3)
    with pytest.raises(DataError, match=r"holds more than 7 files.*max_files=7"):
        sources.list_image_files(tree, max_files=7)
    flat = pngs(tmp_path / "flat", 12)
    with pytest.raises(DataError, match=r"more than 5 files"):
        sources.open_folder(flat, "demo-mnist28", max_files=5, max_dirs=2)
    assert paths.DEFAULT_MAX_FILES >= 1_281_167 and paths.DEFAULT_MAX_DIRS == 100_000  # ImageNet train fits


@pytest.mark.timeout(30)
def test_restricted_walk_never_lists_or_reads_outside_and_never_names_it(tmp_path, monkeypatch):
    data, ext = outside_world(tmp_path)
    serve(monkeypatch, data)
    spy = TouchSpy(monkeypatch)
    with pytest.raises(DataError) as refused:
        sources.open_source(f"folder:{data / 'pics'}", "demo-mnist28")
    message = str(refused.value)
    assert "link (link_out)" in message and "outside the allowed data roots" in message
    assert CANARY not in message and str(ext) not in message
    assert spy.inside(ext) == [], spy.inside(ext)  # not listed, no header read
    assert spy.inside(data / "pics")  # while the allowed folder was (the spy sees the walk)
    # a symlinked file: refused before its header is read
    (data / "one").mkdir()
    (data / "one" / "pic.png").symlink_to(ext / f"{CANARY}0.png")
    with pytest.raises(DataError, match=r"holds a link \(pic\.png\)") as refused:
        sources.open_source(str(data / "one"), "demo-mnist28")
    assert CANARY not in str(refused.value) and spy.inside(ext) == []
    # locally the same folder is read through the link (the user's own machine)
    monkeypatch.setattr(paths, "app_server_address", lambda: "127.0.0.1")
    assert [p.name for p in sources.list_image_files(data / "pics")] == ["0.png", "1.png", f"{CANARY}0.png"]


# --------------------------------------------------------------------------- 2. check before touching, typed names only


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["folder link", "file link", "dot-dot", "images list"])
def test_refusals_name_what_was_typed_not_where_it_leads(tmp_path, monkeypatch, how):
    data, ext = outside_world(tmp_path)
    serve(monkeypatch, data)
    (data / "file_link.png").symlink_to(ext / f"{CANARY}0.png")
    refused_path = {"folder link": data / "pics" / "link_out", "file link": data / "file_link.png",
                    "dot-dot": data / ".." / ext.name, "images list": data / "file_link.png"}[how]
    spec = {"folder link": f"folder:{refused_path}", "images list": f"images:{data / 'pics' / '0.png'},{refused_path}"}
    spy = TouchSpy(monkeypatch)
    with pytest.raises(DataError, match="outside the allowed data roots") as refused:
        sources.open_source(spec.get(how, str(refused_path)), "demo-mnist28")
    message = str(refused.value)
    assert paths.echo(refused_path) in message  # what was typed, cut to a readable length
    assert str(ext) not in message and f"{CANARY}0.png" not in message  # never where it leads
    assert spy.inside(ext) == []


def test_check_allowed_resolves_and_returns_the_path(tmp_path, monkeypatch):
    data, _ext = outside_world(tmp_path)
    serve(monkeypatch, data)
    assert paths.check_allowed(data / "pics" / ".." / "pics") == (data / "pics").resolve()
    (data / "alias").symlink_to(data / "pics", target_is_directory=True)
    assert paths.check_allowed(data / "alias") == (data / "pics").resolve()
    loop = data / "self"
    loop.symlink_to(loop)  # a link to itself: resolved without hanging, then not a folder
    with pytest.raises(DataError):
        sources.open_source(f"folder:{loop}", "demo-mnist28")


# --------------------------------------------------------------------------- 3. hostile text: library and CLI


@pytest.mark.parametrize("name", list(HOSTILE_TEXT))
def test_control_characters_are_refused_up_front(tmp_path, name):
    bad = str(tmp_path / HOSTILE_TEXT[name])
    for call in (lambda: paths.check_allowed(bad), lambda: sources.open_source(f"folder:{bad}", "demo-mnist28"),
                 lambda: sources.open_source(bad, "demo-mnist28"),
                 lambda: sources.open_source(f"images:{tmp_path / 'a.png'},{bad}", "demo-mnist28"),
                 lambda: sources.open_source(f"torchvision:CIFAR{HOSTILE_TEXT[name]}", "demo-mnist28")):
        with pytest.raises(DataError, match="contains a control character") as refused:
            call()
        assert "\n" not in str(refused.value) and "\x00" not in str(refused.value)


def test_over_long_paths_are_refused_with_a_short_message(tmp_path):
    long_name = tmp_path / ("n" * (NAME_MAX + 1))
    with pytest.raises(DataError, match=f"name of {NAME_MAX + 1:,} bytes, more than this system allows"):
        paths.check_allowed(long_name)
    long_path = "/".join([str(tmp_path)] + ["d" * 200] * (PATH_MAX // 200 + 1))
    with pytest.raises(DataError, match="bytes long, more than this system allows") as refused:
        sources.open_source(f"folder:{long_path}", "demo-mnist28")
    ten_thousand = str(tmp_path) + "/" + "x" * 10_000
    with pytest.raises(DataError) as refused:
        sources.open_source(ten_thousand, "demo-mnist28")
    message = str(refused.value)
    assert len(message) < 400 and message.count(str(tmp_path)) == 1 and "…" in message


def test_echo_is_short_single_line_and_shows_control_characters():
    assert paths.echo("a\x00b\nc") == "a\\x00b\\nc"
    cut = paths.echo("p" * 10_000)
    assert len(cut) == paths.ECHO_LIMIT and cut.endswith("…")
    assert paths.echo("short") == "short"


def cli(*args, env_extra=None, timeout=300):
    env = dict(os.environ)
    env.pop(ALLOWED_ROOTS_ENV, None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "gaia_viz", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


@needs_demo
@pytest.mark.timeout(180)
def test_cli_scores_a_folder_of_symlink_loops(tmp_path):
    folder = loop_folder(tmp_path / "loops")
    out = tmp_path / "out"
    proc = cli("evaluate", "--model", "demo", "--id", f"folder:{folder}", "--ood", "noise=demo:noise",
               "--methods", "msp,energy", "--max-samples", "12", "--quiet", "--out", out, timeout=170)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["sources"]["id"] == f"folder:{folder}"
    counts = pd.read_csv(out / "scores.csv")["dataset"].value_counts().to_dict()
    assert counts == {"id": 3, "noise": 12}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("flag", ["--id", "--checkpoint", "--data-root", "--out"])
def test_cli_refuses_control_characters_and_long_paths_in_one_line(tmp_path, flag):
    base = ["evaluate", "--model", "demo", "--id", "demo:digits", "--ood", "n=demo:noise", "--out", tmp_path / "o"]
    for bad in (f"{tmp_path}/a\x1b[2Jb", str(tmp_path) + "/" + "y" * 10_000):
        value = f"folder:{bad}" if flag == "--id" else bad
        args = base + [flag, value] if flag != "--id" else base[:3] + [flag, value] + base[5:]
        line = one_line_error(cli(*args))
        assert "control character" in line or "more than this system allows" in line, line
        assert len(line) < 500 and line.count(str(tmp_path)) == 1
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_nul_byte(tmp_path, capsys):
    # a NUL cannot pass through argv; main() takes it from a caller in the same process
    code = cli_main(["evaluate", "--model", "demo", "--id", f"folder:{tmp_path}/a\x00b", "--ood", "n=demo:noise",
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "control character (\\x00)" in err, err


@pytest.mark.timeout(120)
def test_cli_honours_the_allowed_roots_setting(tmp_path):
    data, ext = outside_world(tmp_path)
    line = one_line_error(cli("evaluate", "--model", "demo", "--id", f"folder:{data / 'pics'}", "--ood",
                              "n=demo:noise", "--out", tmp_path / "o",
                              env_extra={ALLOWED_ROOTS_ENV: str(data), DATA_ROOT_ENV: str(data)}))
    assert "outside the allowed data roots" in line and CANARY not in line


# --------------------------------------------------------------------------- 4. served defaults


def test_served_defaults_allow_the_data_root_only(tmp_path, monkeypatch):
    data = pngs(tmp_path / "data" / "pics").parent
    serve(monkeypatch, data)
    assert paths.restriction_active() and paths.allowed_roots() == [data.resolve()]
    assert Path.home().resolve() not in paths.allowed_roots()
    home_file = Path.home() / ".bashrc"
    for refused in (Path.home(), home_file, Path.home() / ".ssh", "/etc/passwd"):
        with pytest.raises(DataError, match="outside the allowed data roots"):
            paths.check_allowed(refused)
    with pytest.raises(DataError, match="outside the allowed data roots"):
        sources.open_source(f"images:{home_file}", "demo-mnist28")
    assert paths.check_allowed(data / "pics") == (data / "pics").resolve()
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, "~")  # home only when configured
    assert paths.allowed_roots() == [data.resolve(), Path.home().resolve()]
    assert paths.check_allowed(Path.home()) == Path.home().resolve()
    with pytest.raises(DataError, match="hidden"):  # home allowed, its dot-folders still not
        paths.check_allowed(Path.home() / ".ssh")


def test_hidden_paths_are_refused_when_served_unless_configured(tmp_path, monkeypatch):
    data = tmp_path / "data"
    pngs(data / ".git" / "objects", 1)
    pngs(data / "pics", 1)
    (data / ".env").write_text("TOKEN=1")
    (data / "pics" / "innocent").symlink_to(data / ".git", target_is_directory=True)
    serve(monkeypatch, data)
    for hidden in (data / ".git", data / ".git" / "objects" / "0.png", data / ".env", data / "pics" / "innocent"):
        with pytest.raises(DataError, match=f"hidden.*{ALLOWED_HIDDEN_ENV}=1"):
            paths.check_allowed(hidden)
    with pytest.raises(DataError, match=r"holds a link \(innocent\)"):
        sources.list_image_files(data / "pics")
    monkeypatch.setenv(ALLOWED_HIDDEN_ENV, "1")
    assert paths.check_allowed(data / ".env") == (data / ".env").resolve()
    assert [p.name for p in sources.list_image_files(data / "pics")] == ["0.png", "0.png"]
    monkeypatch.delenv(ALLOWED_HIDDEN_ENV)
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, str(data / ".git"))  # a hidden root named explicitly
    assert paths.check_allowed(data / ".git" / "objects") == (data / ".git" / "objects").resolve()


@pytest.mark.parametrize("address, served", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                             ("0.0.0.0", True), ("192.168.1.5", True), (None, True), ("", True)])
def test_served_means_a_non_loopback_address_unset_included(monkeypatch, address, served):
    monkeypatch.setattr(paths, "app_server_address", lambda: address)
    assert paths.served() is served and paths.restriction_active() is served


def test_outside_a_streamlit_server_nothing_counts_as_served():
    code = ("from gaia_viz import paths, cli\nimport sys\n"
            "assert paths.app_server_address() == paths.LOCAL_ADDRESS and not paths.served()\n"
            "assert 'streamlit' not in sys.modules\n"
            "import streamlit\nassert not paths.served()\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={k: v for k, v in os.environ.items()
                          if k != ALLOWED_ROOTS_ENV}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# --------------------------------------------------------------------------- 6. --demo with the user's sets


@pytest.mark.timeout(120)
@pytest.mark.parametrize("extra", [["--ood", "loop=folder:PATH"], ["--id", "folder:PATH"],
                                   ["--model", "cifar_resnet20"], ["--checkpoint", "w.pth"]])
def test_cli_demo_refuses_the_users_sets_in_one_line(tmp_path, extra):
    folder = loop_folder(tmp_path / "loops")
    extra = [e.replace("PATH", str(folder)) for e in extra]
    line = one_line_error(cli("evaluate", "--demo", *extra, "--quiet", "--out", tmp_path / "out"))
    assert "--demo" in line and "cannot be combined" in line and "drop --demo" in line
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the app


def evaluate_page(**state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "2_Evaluate.py"), default_timeout=APP_TIMEOUT)
    at.session_state["sb_max_samples"] = 12
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def custom_data(at: AppTest, id_spec: str, ood_text: str = "noise = demo:noise", fit_spec: str = "") -> AppTest:
    if at.sidebar.selectbox(key="sb_data_kind").value != "custom":
        at.sidebar.selectbox(key="sb_data_kind").set_value("custom").run()
    at.sidebar.text_input(key="sb_custom_id").input(id_spec)
    at.sidebar.text_input(key="sb_custom_fit").input(fit_spec)
    at.sidebar.text_area(key="sb_custom_ood").input(ood_text)
    return at.run()


def literal(markdown: str) -> str:
    """What Markdown made of text and backslash escapes shows."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)


def shown_text(at: AppTest) -> str:
    return "\n".join(literal(str(e.value)) for kind in ("error", "warning", "markdown", "caption", "success", "info",
                                               "text") for e in getattr(at, kind))


def sidebar_intact(at: AppTest) -> bool:
    return at.sidebar.selectbox(key="sb_data_kind") is not None and at.sidebar.text_input(key="sb_data_root")


@needs_demo
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["local", "served"])
def test_app_scores_a_folder_of_symlink_loops(tmp_path, monkeypatch, mode):
    folder = loop_folder(tmp_path / "data" / "loops")
    if mode == "served":
        serve(monkeypatch, tmp_path / "data")
    at = custom_data(evaluate_page(), str(folder))
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.session_state["setup"].id_set) == 3
    at.button(key=f"run::{at.session_state['setup'].score_key}").click().run()
    jobs.wait_for_jobs(240)
    at.run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Images scored"] == f"{3 + 12:,}"


@needs_demo
@pytest.mark.timeout(300)
def test_app_served_refuses_an_outside_link_without_naming_it(tmp_path, monkeypatch):
    data, ext = outside_world(tmp_path)
    serve(monkeypatch, data)
    spy = TouchSpy(monkeypatch)
    at = custom_data(evaluate_page(), f"folder:{data / 'pics'}")
    assert not at.exception, at.exception
    assert any("link (link_out)" in literal(e.value) and "outside the allowed data roots" in e.value
               for e in at.error), [e.value for e in at.error]
    assert CANARY not in shown_text(at) and spy.inside(ext) == []
    at = custom_data(at, str(data), "home = ~/.bashrc")
    assert any("outside the allowed data roots" in e.value for e in at.error), [e.value for e in at.error]


def hostile_inputs(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """widget case -> (text typed, phrase of the expected error)."""
    long_path = str(tmp_path) + "/" + "z" * 10_000
    return {
        "data root NUL": (f"{tmp_path}/root\x00x", "control character"),
        "ID NUL": (f"folder:{tmp_path}/id\x00x", "control character"),
        "ID escape": (f"{tmp_path}/id\x1bx", "control character"),
        "ID 10,000 characters": (long_path, "more than this system allows"),
        "OOD NUL": (f"x = {tmp_path}/ood\x00x", "control character"),
        "OOD name escape": ("na\x1bme = demo:noise", "control character"),
        "fit NUL": (f"{tmp_path}/fit\x00x", "control character"),
        "image list NUL": (f"images:{tmp_path}/a.png,{tmp_path}/b\x00.png", "control character"),
        "checkpoint NUL": (f"{tmp_path}/w\x00.pth", "control character"),
        "checkpoint 10,000 characters": (long_path, "more than this system allows"),
    }


@needs_demo
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["local", "served"])
@pytest.mark.parametrize("case", ["data root NUL", "ID NUL", "ID escape", "ID 10,000 characters", "OOD NUL",
                                  "OOD name escape", "fit NUL", "image list NUL", "checkpoint NUL",
                                  "checkpoint 10,000 characters"])
def test_app_refuses_hostile_path_text_with_one_short_error(tmp_path, monkeypatch, mode, case):
    good = pngs(tmp_path / "good")
    if mode == "served":
        serve(monkeypatch, tmp_path)
    typed, phrase = hostile_inputs(tmp_path)[case]
    at = evaluate_page()
    if case.startswith("data root"):
        at.sidebar.text_input(key="sb_data_root").input(typed).run()
    elif case.startswith("checkpoint"):
        at.sidebar.selectbox(key="sb_model_kind").set_value("gaia").run()
        at.sidebar.text_input(key="sb_checkpoint_path::gaia").input(typed).run()
    elif case.startswith("OOD"):
        at = custom_data(at, str(good), typed)
    elif case.startswith("fit"):
        at = custom_data(at, str(good), fit_spec=typed)
    else:
        at = custom_data(at, typed)
    assert not at.exception, at.exception
    assert sidebar_intact(at)
    matching = [literal(e.value) for e in at.sidebar.error if phrase in e.value]  # the page repeats it
    assert len(matching) == 1, [e.value for e in at.sidebar.error]
    assert len(matching[0]) < 600 and matching[0].count(tmp_path.name) <= 1  # echoed once, cut
    assert "Traceback" not in shown_text(at)
    # the next good input works
    if case.startswith("data root"):
        at.sidebar.text_input(key="sb_data_root").input(str(tmp_path)).run()
    elif case.startswith("checkpoint"):
        at.sidebar.selectbox(key="sb_model_kind").set_value("demo").run()
    else:
        at = custom_data(at, str(good), "noise = demo:noise", "")
    assert not at.exception and not at.error, [e.value for e in at.error]


@pytest.fixture
def error_details_restored():
    before = st.get_option("client.showErrorDetails")
    yield
    st.set_option("client.showErrorDetails", before)


def crashing_script():
    import streamlit as st

    from gaia_viz.app.markdown import hide_error_details_when_served

    st.text(f"hidden: {hide_error_details_when_served()}")
    raise RuntimeError("/srv/secret/server/path.pth")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("address", ["0.0.0.0", "127.0.0.1"])
def test_served_app_shows_no_traceback(monkeypatch, error_details_restored, address):
    monkeypatch.setattr(paths, "app_server_address", lambda: address)
    at = AppTest.from_function(crashing_script, default_timeout=30).run()
    shown = at.exception[0]
    if address == "0.0.0.0":
        assert at.text[0].value == "hidden: True"
        assert "/srv/secret" not in shown.message and not shown.stack_trace and "redacted" in shown.message
    else:
        assert at.text[0].value == "hidden: False"
        assert "/srv/secret" in shown.message and shown.stack_trace


@needs_demo
@pytest.mark.timeout(300)
def test_app_entry_point_turns_error_details_off_when_served(tmp_path, monkeypatch, error_details_restored):
    serve(monkeypatch, tmp_path)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=APP_TIMEOUT)
    at.session_state["sb_max_samples"] = 12
    at.run()
    assert not at.exception, at.exception
    assert st.get_option("client.showErrorDetails") == "none"
    assert at.session_state["setup"].is_demo  # the demo needs no server path: it works when served
    assert hide_error_details_when_served() is True
