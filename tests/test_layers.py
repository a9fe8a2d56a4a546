"""The package's layering rules, read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

import aio_client

PACKAGE = Path(aio_client.__file__).parent
FORBIDDEN_IN_METRICS = ("aio_client.server", "aio_client.policies")
# The client's core hands observers events (aio_client._events); it never
# imports a sink.
CORE = ("_client.py", "_call.py", "_events.py", "strategies")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(absolute name, type-only)`` of every module and name ``path`` imports."""
    relative = path.parent.relative_to(PACKAGE).as_posix()
    package = "aio_client" if relative == "." else "aio_client." + relative.replace("/", ".")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and _is_type_checking(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        found.extend((name, id(node) in type_only) for name in names)
    return found


def _forbidden(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == bad or name.startswith(bad + ".") for bad in packages)


def test_metrics_imports_neither_server_nor_policies() -> None:
    """No module of aio_client.metrics imports aio_client.server or aio_client.policies,
    not even for type checkers only."""
    files = sorted((PACKAGE / "metrics").glob("*.py"))
    assert files
    offending = {
        (path.name, name)
        for path in files
        for name, _ in _imports(path)
        if _forbidden(name, FORBIDDEN_IN_METRICS)
    }
    assert offending == set()


def test_the_client_core_imports_no_sink() -> None:
    """The client, the call, the events and the strategies import nothing of aio_client.metrics."""
    files = [
        path
        for entry in CORE
        for path in sorted(
            (PACKAGE / entry).glob("*.py") if entry == "strategies" else [PACKAGE / entry]
        )
    ]
    offending = {
        (path.name, name)
        for path in files
        for name, _ in _imports(path)
        if _forbidden(name, ("aio_client.metrics",))
    }
    assert offending == set()


def test_import_reader_resolves_relative_and_type_only_imports() -> None:
    """The reader resolves relative imports in metrics/ and flags TYPE_CHECKING ones."""
    imports = dict(_imports(PACKAGE / "metrics" / "_prometheus.py"))
    assert imports["aio_client._events.CallWatcher"] is False
    assert imports["aio_client._events.CallFinished"] is True
    assert imports["typing"] is False


def test_validation_imports_only_the_error_tree_and_the_standard_library() -> None:
    """aio_client._validation, used by every layer, imports nothing of ours but _errors."""
    ours = {
        name
        for name, _ in _imports(PACKAGE / "_validation.py")
        if name.startswith("aio_client") and not name.startswith("aio_client._errors")
    }
    assert ours == set()
