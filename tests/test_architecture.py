"""The house rules of bot/ and adapters/, computed from the source with ``ast`` (no server).

Each rule is one a newcomer can rely on when reading the code: imports point one way with no
circle, capabilities are declared instead of probed, modules stay small, SQL lives in one place.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "adapters")
MAX_LINES = 300
# A statement as SQLite and PostgreSQL start them; a sentence for users never starts so.
SQL = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|PRAGMA|ALTER|DROP|BEGIN|WITH)\s")
ADAPTER_MAY_IMPORT = ("bot.chat", "bot.config", "bot.errors")
STORE_MAY_IMPORT = ("bot.errors", "bot.config")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _sources() -> dict[str, tuple[Path, ast.Module]]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module(path)] = (path, ast.parse(path.read_text(), str(path)))
    return found


def _is_package(name: str) -> bool:
    return _sources()[name][0].name == "__init__.py"


def _imports(name: str, *, type_checking: bool = True) -> set[str]:
    """Return the modules of bot/ and adapters/ that ``name`` imports (anywhere in it)."""
    tree = _sources()[name][1]
    skip: set[int] = set()
    if not type_checking:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip |= {id(n) for child in node.body for n in ast.walk(child)}
    known = _sources()
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name if _is_package(name) else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    here = here.rpartition(".")[0]
                base = f"{here}.{base}".strip(".")
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import circle of ``graph`` (depth-first, three colours), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def _cycle() -> list[str] | None:
    # Imports under TYPE_CHECKING count: a circle hidden from the interpreter is still one.
    return _find_cycle({name: _imports(name) for name in _sources()})


def test_the_rules_see_the_code() -> None:
    """Guard the guards: the walker finds the modules and their imports."""
    assert "bot.core" in _sources()
    assert "bot.store.db" in _imports("bot.app")
    assert _find_cycle({"a": {"b"}, "b": {"a"}, "c": set()}) == ["a", "b", "a"]
    assert SQL.match("SELECT 1")
    assert not SQL.match("Select an account")


def test_no_import_circle() -> None:
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_no_type_checking_import_of_the_core() -> None:
    offenders = [
        name
        for name in _sources()
        if "bot.core" in _imports(name) - _imports(name, type_checking=False)
    ]
    assert offenders == []


def test_adapters_import_only_the_chat_interface() -> None:
    wrong = {
        name: sorted(
            t for t in _imports(name) if t.startswith("bot") and t not in ADAPTER_MAY_IMPORT
        )
        for name in _sources()
        if name.startswith("adapters")
    }
    assert {k: v for k, v in wrong.items() if v} == {}


def test_the_store_imports_nothing_of_the_bot_but_errors() -> None:
    wrong = {
        name: sorted(
            t
            for t in _imports(name)
            if not t.startswith("bot.store") and t not in STORE_MAY_IMPORT
        )
        for name in _sources()
        if name.startswith("bot.store")
    }
    assert {k: v for k, v in wrong.items() if v} == {}


def test_commands_never_import_the_core() -> None:
    handlers = [name for name in _sources() if name.startswith("bot.commands.")]
    assert handlers, "bot/commands/ holds the handlers"
    assert [name for name in handlers if "bot.core" in _imports(name)] == []


@pytest.mark.parametrize("package", ["bot", "adapters"])
def test_no_getattr_capability_probe(package: str) -> None:
    probes = []
    for name, (path, tree) in _sources().items():
        if name.partition(".")[0] != package:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) == 3
                and isinstance(node.args[2], ast.Constant)
                and node.args[2].value is None
            ):
                probes.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert probes == []


@pytest.mark.parametrize("package", ["bot", "adapters"])
def test_no_module_over_300_lines(package: str) -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for name, (path, _) in _sources().items()
        if name.partition(".")[0] == package
        and (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_all_sql_lives_in_the_store() -> None:
    outside = []
    for name, (path, tree) in _sources().items():
        if name.startswith("bot.store"):
            continue
        for node in ast.walk(tree):
            text = None
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            elif isinstance(node, ast.JoinedStr) and node.values:
                first = node.values[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    text = first.value
            if text is not None and SQL.match(text):
                outside.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text[:40]!r}")
    assert outside == []
