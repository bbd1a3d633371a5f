"""Mutation testing for the core modules: how many small breakages do the unit tests notice?

Usage (from the repository root)::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/mutate.py bridge/exposition.py [more files]
        [--tests tests/unit/test_exposition.py ...] [--max 150] [--timeout 20] [--budget 900]
        [--kinds compare,constant,...] [--lines 120-180]

For each file it builds mutants at the AST level — a comparison flipped (``<`` to ``>=``,
``==`` to ``!=``, ``in`` to ``not in``), an integer constant off by one, ``True``/``False``
swapped, ``and``/``or`` swapped, a ``not`` dropped, ``+``/``-`` or ``*``/``/`` swapped, a
statement dropped (replaced by ``pass``), an early ``return`` at the top of a function, an
``if``'s condition negated, a string's escapes swapped (``\\\\`` to ``\\``, ``\\n`` to a
newline and back) or a short string changed — and runs each against the unit tests that import
the file (``--tests`` to choose them), stopping at the first failure. A mutant is *killed* when
the tests fail or run past ``--timeout`` seconds (at least three times the unmutated run), and
*survives* when they pass; the score is killed / run. Survivors are listed with their line and mutation.

Bounded: at most ``--max`` mutants a file (spread evenly over the file when there are more, the
same ones every run, run in a shuffled order), and no new mutant starts after ``--budget``
seconds for that file.

How it runs: the parent process imports the tests once (so the third-party libraries are
loaded), forgets every module of this repository, and then forks a child per mutant. The
child installs an import hook that serves the mutated module under its real name and file
(so tracebacks point at the real lines), and runs pytest in-process. One mutant runs at a time.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.abc
import importlib.machinery
import importlib.util
import os
import random
import re
import select
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, ModuleType

ROOT = Path(__file__).resolve().parent.parent

KINDS = ("compare", "constant", "bool", "boolop", "not", "arith", "drop", "return", "if", "escape", "string")

_COMPARE_FLIP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.Gt: ast.LtE,
    ast.LtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_ARITH_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
}
_OP_TEXT = {
    ast.Lt: "<", ast.GtE: ">=", ast.Gt: ">", ast.LtE: "<=", ast.Eq: "==", ast.NotEq: "!=",
    ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not",
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
    ast.LShift: "<<", ast.RShift: ">>", ast.BitAnd: "&", ast.BitOr: "|",
}
# Escapes a renderer or parser handles; a mutant swaps one spelling for the other.
_ESCAPE_SWAPS = (("\\\\", "\\"), ("\\n", "\n"), ("\n", "\\n"), ('\\"', '"'))


@dataclass(frozen=True)
class Mutant:
    index: int  # position of the mutated node in ast.walk order
    line: int
    kind: str
    text: str
    choice: int = 0  # which of a node's mutations (a Compare with several operators, ...)


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed, timeout, survived
    seconds: float


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0]))
                ids.add(id(body[0].value))
    return ids


def _in_annotation(tree: ast.AST) -> set[int]:
    """Nodes inside annotations, ``__all__``, type-checking blocks: mutating them changes nothing at run time."""
    ids: set[int] = set()

    def mark(node: ast.AST | None) -> None:
        if node is not None:
            ids.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            mark(node.returns)
            for arg in (*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs,
                        node.args.vararg, node.args.kwarg):
                if arg is not None:
                    mark(arg.annotation)
        elif isinstance(node, ast.AnnAssign):
            mark(node.annotation)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            mark(node)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            mark(node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mark(node)
    return ids


def _short(node: ast.AST) -> str:
    text = ast.unparse(node).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _is_logging_call(stmt: ast.stmt) -> bool:
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return False
    func = stmt.value.func
    return isinstance(func, ast.Attribute) and func.attr in {"debug", "info", "warning", "error", "exception"} and (
        isinstance(func.value, ast.Name) and func.value.id in {"log", "logger", "LOG", "_log", "logging"}
    )


def candidates(tree: ast.Module, kinds: Sequence[str]) -> list[Mutant]:
    """Every mutation this tool knows for ``tree``, in source order."""
    skip = _docstring_nodes(tree) | _in_annotation(tree)
    out: list[Mutant] = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skip:
            continue
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Compare) and "compare" in kinds:
            for i, op in enumerate(node.ops):
                new = _COMPARE_FLIP.get(type(op))
                if new is not None:
                    out.append(Mutant(index, line, "compare",
                                      f"{_OP_TEXT[type(op)]} -> {_OP_TEXT[new]} in {_short(node)}", i))
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool):
                if "bool" in kinds:
                    out.append(Mutant(index, line, "bool", f"{value} -> {not value}"))
            elif isinstance(value, int) and "constant" in kinds:
                out.append(Mutant(index, line, "constant", f"{value} -> {value + 1}"))
                if value != 0:
                    out.append(Mutant(index, line, "constant", f"{value} -> {value - 1}", 1))
            elif isinstance(value, float) and "constant" in kinds and math_finite(value):
                out.append(Mutant(index, line, "constant", f"{value!r} -> {value + 1!r}"))
            elif isinstance(value, (str, bytes)):
                text = value if isinstance(value, str) else value.decode("latin-1")
                swaps = [i for i, (a, _) in enumerate(_ESCAPE_SWAPS) if a in text]
                if swaps and "escape" in kinds:
                    for i in swaps:
                        a, b = _ESCAPE_SWAPS[i]
                        out.append(Mutant(index, line, "escape", f"{a!r} -> {b!r} in {value!r}"[:90], i))
                elif "string" in kinds and 0 < len(text) <= 24:
                    out.append(Mutant(index, line, "string", f"{value!r} -> changed"))
        elif isinstance(node, ast.BoolOp) and "boolop" in kinds:
            other = "or" if isinstance(node.op, ast.And) else "and"
            out.append(Mutant(index, line, "boolop", f"-> {other} in {_short(node)}"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not) and "not" in kinds:
            out.append(Mutant(index, line, "not", f"drop not in {_short(node)}"))
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and "arith" in kinds:
            new_op = _ARITH_SWAP.get(type(node.op))
            if new_op is not None:
                out.append(Mutant(index, line, "arith",
                                  f"{_OP_TEXT[type(node.op)]} -> {_OP_TEXT[new_op]} in {_short(node)}"))
        elif isinstance(node, ast.If) and "if" in kinds:
            out.append(Mutant(index, line, "if", f"negate if {_short(node.test)}"))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "return" in kinds:
            out.append(Mutant(index, node.body[0].lineno, "return", f"early return in {node.name}()"))
        if "drop" in kinds and hasattr(node, "body") and isinstance(node.body, list):
            for field in ("body", "orelse", "finalbody"):
                for i, stmt in enumerate(getattr(node, field, None) or []):
                    if id(stmt) in skip or isinstance(stmt, (ast.Pass, ast.FunctionDef, ast.AsyncFunctionDef,
                                                             ast.ClassDef, ast.Import, ast.ImportFrom)):
                        continue
                    if _is_logging_call(stmt) or isinstance(stmt, ast.AnnAssign) and stmt.value is None:
                        continue
                    out.append(Mutant(index, stmt.lineno, "drop", f"drop `{_short(stmt)}`",
                                      _DROP_FIELDS[field] * 100_000 + i))
    out.sort(key=lambda m: (m.line, m.index, m.choice))
    return out


_DROP_FIELDS = {"body": 0, "orelse": 1, "finalbody": 2}
_FIELD_NAMES = {v: k for k, v in _DROP_FIELDS.items()}


def math_finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


def _changed_string(value: str | bytes) -> str | bytes:
    if isinstance(value, bytes):
        return value + b"X" if value.lower() == value else value.lower()
    return value + "X" if value.lower() == value else value.lower()


def apply(tree: ast.Module, mutant: Mutant) -> ast.Module:
    """A copy of ``tree`` with ``mutant`` applied."""
    tree = copy.deepcopy(tree)
    nodes = list(ast.walk(tree))
    node = nodes[mutant.index]
    kind = mutant.kind
    if kind == "compare":
        assert isinstance(node, ast.Compare)
        node.ops[mutant.choice] = _COMPARE_FLIP[type(node.ops[mutant.choice])]()
    elif kind == "bool":
        assert isinstance(node, ast.Constant)
        node.value = not node.value
    elif kind == "constant":
        assert isinstance(node, ast.Constant)
        node.value = node.value + (1 if mutant.choice == 0 else -1)
    elif kind == "escape":
        assert isinstance(node, ast.Constant)
        a, b = _ESCAPE_SWAPS[mutant.choice]
        if isinstance(node.value, bytes):
            node.value = node.value.replace(a.encode(), b.encode())
        else:
            node.value = node.value.replace(a, b)
    elif kind == "string":
        assert isinstance(node, ast.Constant)
        node.value = _changed_string(node.value)
    elif kind == "boolop":
        assert isinstance(node, ast.BoolOp)
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "not":
        assert isinstance(node, ast.UnaryOp)
        _replace(nodes, node, node.operand)
    elif kind == "arith":
        assert isinstance(node, (ast.BinOp, ast.AugAssign))
        node.op = _ARITH_SWAP[type(node.op)]()
    elif kind == "if":
        assert isinstance(node, ast.If)
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
    elif kind == "return":
        assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        body = node.body
        at = 1 if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else 0
        is_generator = any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in ast.walk(node))
        body.insert(at, ast.Return(value=None))
        if is_generator and at == len(body) - 1:
            body.append(ast.Expr(ast.Yield(None)))
    elif kind == "drop":
        field = _FIELD_NAMES[mutant.choice // 100_000]
        getattr(node, field)[mutant.choice % 100_000] = ast.Pass()
    else:  # pragma: no cover - KINDS and candidates() agree
        raise ValueError(kind)
    return ast.fix_missing_locations(tree)


def _replace(nodes: list[ast.AST], old: ast.AST, new: ast.AST) -> None:
    for parent in nodes:
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if item is old:
                        value[i] = new
                        return


class _MutantFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, name: str, path: Path, code: CodeType) -> None:
        self.name, self.path, self.code = name, path, code

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        spec = importlib.util.spec_from_file_location(fullname, self.path, loader=self)
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        exec(self.code, module.__dict__)


def module_name(path: Path) -> str:
    rel = path.resolve().relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def tests_importing(name: str) -> list[Path]:
    """Unit test modules that import ``name`` (``import x.y``, ``from x.y import``, ``from x import y``)."""
    package, _, leaf = name.rpartition(".")
    mod, pkg, leaf_re = re.escape(name), re.escape(package), re.escape(leaf)
    pattern = re.compile(rf"^\s*(import {mod}\b|from {mod} import|from {pkg} import .*\b{leaf_re}\b)", re.M)
    found = [p for p in sorted((ROOT / "tests" / "unit").glob("test_*.py")) if pattern.search(p.read_text())]
    own = [p for p in found if p.stem == f"test_{leaf}"]
    return own + [p for p in found if p not in own]


def _project_module(module: ModuleType) -> bool:
    file = getattr(module, "__file__", None)
    if not file:
        paths = getattr(module, "__path__", None)
        file = next(iter(paths), None) if paths else None
    if not file:
        return False
    try:
        Path(file).resolve().relative_to(ROOT)
    except ValueError:
        return False
    return ".venv" not in Path(file).parts


def warm(tests: Sequence[Path]) -> None:
    """Import the tests once so that the children start with the libraries loaded, then forget this repository's modules."""
    sys.path.insert(0, str(ROOT))
    for test in tests:
        rel = test.resolve().relative_to(ROOT).with_suffix("")
        try:
            importlib.import_module(".".join(rel.parts))
        except BaseException as exc:  # noqa: BLE001 - a test that fails to import fails in the child too
            print(f"  (warm-up import of {rel} failed: {exc!r})", file=sys.stderr)
    for name, module in list(sys.modules.items()):
        if module is not None and _project_module(module):
            del sys.modules[name]


def run_one(name: str, path: Path, code: CodeType, tests: Sequence[Path], timeout: float) -> tuple[str, float]:
    """Run ``tests`` in a forked child with ``code`` as module ``name``: killed, timeout or survived."""
    started = time.monotonic()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        os.setpgid(0, 0)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        status = 3
        try:
            import pytest

            sys.meta_path.insert(0, _MutantFinder(name, path, code))
            status = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                                      "-W", "ignore", *map(str, tests)]))
        finally:
            os.write(write_end, str(status).encode())
            os._exit(status)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], timeout)
    if not ready:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(read_end)
        return "timeout", time.monotonic() - started
    data = os.read(read_end, 16)
    os.close(read_end)
    os.waitpid(pid, 0)
    code_out = int(data) if data else 3  # no status written: the child died, which the mutant caused
    return ("survived" if code_out == 0 else "killed"), time.monotonic() - started


def _spread(items: list[Mutant], limit: int) -> list[Mutant]:
    """At most ``limit`` mutants spread evenly over the file, in a shuffled (seeded, so the same
    every run) order: a run the budget cuts short still samples the whole file."""
    if len(items) > limit:
        step = len(items) / limit
        items = [items[int(i * step)] for i in range(limit)]
    items = list(items)
    random.Random(19).shuffle(items)
    return items


def _line_filter(spec: str | None) -> tuple[int, int] | None:
    if not spec:
        return None
    low, _, high = spec.partition("-")
    return int(low), int(high or low)


def mutate_file(path: Path, args: argparse.Namespace) -> list[Outcome]:
    name = module_name(path)
    tests = [Path(t) for t in args.tests] if args.tests else tests_importing(name)
    if not tests:
        print(f"{path}: no unit test imports {name}")
        return []
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))
    kinds = args.kinds.split(",") if args.kinds else list(KINDS)
    found = candidates(tree, kinds)
    lines = _line_filter(args.lines)
    if lines:
        found = [m for m in found if lines[0] <= m.line <= lines[1]]
    chosen = _spread(found, args.max)
    print(f"{path} ({name}): {len(found)} mutants, running {len(chosen)} against "
          f"{', '.join(t.name for t in tests)}", flush=True)
    baseline, seconds = run_one(name, path, compile(tree, str(path), "exec"), tests, args.timeout * 3)
    if baseline != "survived":
        print(f"  the tests fail without any mutant ({baseline}, {seconds:.1f} s): not scored")
        return []
    # A mutant's run may take three times the unmutated one: on a loaded machine a fixed timeout
    # would count slow runs of surviving mutants as killed.
    timeout = max(args.timeout, 3 * seconds)
    print(f"  unmutated run: {seconds:.1f} s; a mutant's timeout: {timeout:.0f} s", flush=True)
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + args.budget
    for mutant in chosen:
        if time.monotonic() > deadline:
            print(f"  budget of {args.budget:.0f} s spent after {len(outcomes)} mutants")
            break
        try:
            code = compile(apply(tree, mutant), str(path), "exec")
        except (SyntaxError, ValueError, TypeError) as exc:
            print(f"  line {mutant.line}: {mutant.text}: does not compile ({exc}); skipped")
            continue
        status, took = run_one(name, path, code, tests, timeout)
        outcomes.append(Outcome(mutant, status, took))
        if args.verbose:
            print(f"  {status:8} {took:5.1f}s line {mutant.line}: {mutant.kind}: {mutant.text}", flush=True)
    return outcomes


def report(path: Path, outcomes: list[Outcome]) -> str:
    run = len(outcomes)
    killed = sum(o.status != "survived" for o in outcomes)
    score = 100.0 * killed / run if run else 0.0
    survivors = [o for o in outcomes if o.status == "survived"]
    lines = [f"{path}: {killed}/{run} killed, score {score:.0f} %"
             + (f" ({sum(o.status == 'timeout' for o in outcomes)} by timeout)" if killed else "")]
    lines += [f"  survived line {o.mutant.line}: {o.mutant.kind}: {o.mutant.text}" for o in survivors]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--tests", nargs="*", help="test files to run (default: unit tests importing the file)")
    parser.add_argument("--max", type=int, default=150, help="mutants a file at most (default 150)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds a mutant's test run may take, at least (3 times the unmutated run's)")
    parser.add_argument("--budget", type=float, default=900.0, help="seconds a file's mutants may take in all")
    parser.add_argument("--kinds", help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--lines", help="only mutants on these lines, e.g. 120-180")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every mutant's outcome as it runs")
    args = parser.parse_args(argv)
    for path in args.files:
        path = path.resolve()
        name = module_name(path)
        tests = [Path(t).resolve() for t in args.tests] if args.tests else tests_importing(name)
        pid = os.fork()  # one warm-up per file, in its own process: the files' tests differ
        if pid == 0:
            warm(tests)
            outcomes = mutate_file(path, args)
            print(report(path.relative_to(ROOT), outcomes), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
    return 0


def iter_mutants(path: Path, kinds: Sequence[str] = KINDS) -> Iterator[tuple[Mutant, ast.Module]]:
    """Every mutant of ``path`` with its tree (for tests of this tool)."""
    tree = ast.parse(path.read_text())
    for mutant in candidates(tree, kinds):
        yield mutant, apply(tree, mutant)


if __name__ == "__main__":
    sys.exit(main())
