"""The quick subset (``pytest -m "not slow"``): tests/slow_tests.py names tests that exist, every
test file keeps a quick test where it can, and the README names the command."""

import ast

import pytest

from slow_tests import QUICK, SLOW, SLOW_FILES, SLOW_MARKERS, is_slow
from support import ROOT

TESTS = ROOT / "tests"


def defined_tests(path) -> set[str]:
    return {node.name for node in ast.parse(path.read_text()).body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")}


def test_every_listed_slow_test_exists_in_its_file():
    for name, slow in SLOW.items():
        path = TESTS / name
        assert path.is_file(), f"tests/slow_tests.py lists {name}, which is not in tests/"
        missing = set(slow) - defined_tests(path)
        assert not missing, f"tests/slow_tests.py lists tests {name} does not define: {sorted(missing)}"
    for name, cases in QUICK.items():
        assert {case.split("[")[0] for case in cases} <= set(SLOW[name]), f"QUICK names a case of a quick test in {name}"


def test_every_test_file_keeps_a_quick_test():
    files = [path for path in TESTS.glob("test_*.py")]
    assert len(files) > 30
    for path in files:
        if path.name in SLOW_FILES:
            continue
        quick = {name for name in defined_tests(path) if not is_slow(path.name, name, set())}
        quick |= set(QUICK.get(path.name, ()))
        assert quick, f"{path.name}: every test is marked slow; the quick subset would not cover it"
    assert set(SLOW_FILES) <= {path.name for path in files}


def test_the_slow_markers_are_registered_and_the_readme_names_the_quick_subset():
    import tomllib

    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert {"slow", *SLOW_MARKERS} <= {line.split(":", 1)[0] for line in markers}
    assert '.venv/bin/python -m pytest -m "not slow"' in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("marks, slow", [({"e2e"}, True), ({"real_data"}, True), (set(), False)])
def test_browser_and_real_data_tests_are_slow(marks, slow):
    assert is_slow("test_nothing_listed.py", "test_x", marks) is slow
