"""Every session key the app stores is named once, in gaia_viz/app/keys.py, with its owner
and what it holds: no module or page spells a key as a string (read from the source, ``ast``)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ROOT / "gaia_viz" / "app" / "keys.py"
SOURCES = sorted([*(ROOT / "gaia_viz" / "app").glob("*.py"), *(ROOT / "pages").glob("*.py")])
INPUT_WIDGETS = {"selectbox", "multiselect", "radio", "slider", "select_slider", "number_input", "text_input",
                 "text_area", "checkbox", "toggle", "file_uploader", "color_picker", "date_input", "pills",
                 "segmented_control"}
STATE_METHODS = {"get", "setdefault", "pop"}


def is_literal(node) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def is_session_state(node) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "session_state"


def spelled_keys(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line`` of every session key written as a string: ``session_state["x"]``,
    ``session_state.get("x")`` (and setdefault, pop), ``key="x"`` of an input widget."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Subscript) and is_session_state(node.value) and is_literal(node.slice):
            found.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if (node.func.attr in STATE_METHODS and is_session_state(node.func.value) and node.args
                    and is_literal(node.args[0])):
                found.append(node.lineno)
            if node.func.attr in INPUT_WIDGETS and any(k.arg == "key" and is_literal(k.value) for k in node.keywords):
                found.append(node.lineno)
    return [f"{path.relative_to(root)}:{line}" for line in found]


def test_no_module_or_page_spells_a_session_key():
    offenders = [where for path in SOURCES if path != KEYS for where in spelled_keys(path)]
    assert not offenders, "\n".join(offenders)


def test_the_checker_finds_a_spelled_key(tmp_path):
    page = tmp_path / "page.py"
    page.write_text('import streamlit as st\nst.session_state["a"] = 1\nst.session_state.get(f"b{1}")\n'
                    'st.selectbox("x", [1], key="c")\nst.plotly_chart(None, key="chart")\n')
    found = [where.rpartition(":")[2] for where in spelled_keys(page, tmp_path)]
    assert found == ["2", "3", "4"]


def test_every_key_says_its_owner_and_what_it_holds():
    tree = ast.parse(KEYS.read_text())
    lines = KEYS.read_text().splitlines()
    names = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and is_literal(node.value) and not node.targets[0].id.endswith("PREFIX"):
            names.append(node.targets[0].id)
            comment = lines[node.lineno - 1].partition("#")[2].strip()
            owner, colon, what = comment.partition(":")
            assert colon and owner and what.strip(), f"keys.{node.targets[0].id} needs '# owner: what it holds'"
        elif isinstance(node, ast.FunctionDef):
            doc = ast.get_docstring(node) or ""
            assert ":" in doc.split("\n")[0], f"keys.{node.name}() needs 'owner: what it holds'"
    values = [node.value.value for node in tree.body if isinstance(node, ast.Assign) and is_literal(node.value)]
    assert len(values) == len(set(values)), "two names for one key"
    assert len(names) > 40
