"""benchmarks/mutate.py: the mutants it makes and how it scores them."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mutate():
    spec = importlib.util.spec_from_file_location("mutate_tool", ROOT / "benchmarks" / "mutate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutate_tool"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["mutate_tool"]


SOURCE = '''\
"""Docstring: never mutated."""
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import os

def f(x: int, s: str) -> str:
    """Doc."""
    if x < 3 and not s:
        x += 1
    return s.replace("\\\\", "\\\\\\\\") + "ab"
'''


def test_candidates_and_their_effect(mutate):
    tree = ast.parse(SOURCE)
    found = mutate.candidates(tree, mutate.KINDS)
    texts = {(m.kind, m.text) for m in found}
    assert ("compare", "< -> >= in x < 3") in texts
    assert ("constant", "3 -> 4") in texts and ("constant", "3 -> 2") in texts
    assert ("boolop", "-> or in x < 3 and (not s)") in texts
    assert ("not", "drop not in not s") in texts
    assert ("arith", "+ -> - in x += 1") in texts
    assert ("return", "early return in f()") in texts
    assert ("string", "'ab' -> changed") in texts
    assert any(k == "escape" for k, _ in texts) and any(k == "drop" for k, _ in texts)
    assert all("Doc" not in t and "os" not in t and "TYPE_CHECKING" not in t for _, t in texts)
    assert {m.line for m in found} <= set(range(7, 12))

    def run(mutant=None):
        t = mutate.apply(tree, mutant) if mutant else tree
        ns: dict = {}
        exec(compile(t, "<m>", "exec"), ns)
        return ns["f"](2, "a\\\\b")

    assert run() == "a\\\\\\\\bab"
    outcomes = {m.text: run(m) for m in found if m.kind in ("return", "string", "escape")}
    assert outcomes["early return in f()"] is None
    assert outcomes["'ab' -> changed"] == "a\\\\\\\\babX"
    assert all(out != run() for out in outcomes.values())


def test_spread_is_bounded_even_and_stable(mutate):
    items = [mutate.Mutant(i, i, "drop", str(i)) for i in range(100)]
    chosen = mutate._spread(items, 10)
    assert sorted(m.index for m in chosen) == list(range(0, 100, 10))
    assert mutate._spread(items, 10) == chosen
    assert len(mutate._spread(items[:5], 10)) == 5


def test_a_mutant_is_scored_by_the_tests(mutate, tmp_path, monkeypatch):
    """A forked pytest run with the mutant served under the module's name: killed when a test fails."""
    pkg = tmp_path / "mutpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("def double(x):\n    return x * 2\n")
    test = tmp_path / "test_mod.py"
    test.write_text("from mutpkg.mod import double\n\ndef test_double():\n    assert double(3) == 6\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    tree = ast.parse((pkg / "mod.py").read_text())
    (mutant,) = [m for m in mutate.candidates(tree, ["arith"])]
    path = pkg / "mod.py"
    assert mutate.run_one("mutpkg.mod", path, compile(tree, str(path), "exec"), [test], 60)[0] == "survived"
    assert mutate.run_one("mutpkg.mod", path, compile(mutate.apply(tree, mutant), str(path), "exec"),
                          [test], 60)[0] == "killed"
    hang = ast.parse("def double(x):\n    while True:\n        pass\n")
    assert mutate.run_one("mutpkg.mod", path, compile(hang, str(path), "exec"), [test], 2)[0] == "timeout"
