"""The size limits the code keeps, so that a reader can hold a function, and a module, in
their head: a function fits in 60 lines, a module in 400 (docs/conventions.md). Database
migrations (frozen history) and tests are not held to them."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).parents[1]
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400

#: the packages the limits apply to: every shipped package's source
SOURCES = [ROOT / "contracts" / "src", ROOT / "riverbed" / "src", *ROOT.glob("services/*/src")]


def _modules() -> Iterator[Path]:
    for source in SOURCES:
        for path in sorted(source.rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_the_limits_see_every_package() -> None:
    found = {path.relative_to(ROOT).parts[0] for path in _modules()}
    assert found == {"contracts", "riverbed", "services"}
    assert sum(1 for _ in _modules()) > 100


def test_no_module_is_over_400_lines() -> None:
    long_modules = [
        f"{path.relative_to(ROOT)}: {lines} lines"
        for path in _modules()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert not long_modules, "split these by concern:\n" + "\n".join(long_modules)


def test_no_function_is_over_60_lines() -> None:
    long_functions = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in _functions(tree):
            assert function.end_lineno is not None
            # from the def (decorators excluded) to the last line of the body
            lines = function.end_lineno - function.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                long_functions.append(
                    f"{path.relative_to(ROOT)}:{function.lineno} {function.name}: {lines} lines"
                )
    assert not long_functions, "split these:\n" + "\n".join(long_functions)


def test_no_package_has_an_import_cycle() -> None:
    """A cycle makes import order matter and the layers meaningless; imports made only
    for type checking do not run, so they are left out."""
    import grimp  # import-linter's graph builder (a dev dependency)

    packages = ["riverbed_contracts", "riverbed", "riverbed_gateway", "riverbed_email"]
    packages += ["riverbed_webhooks", "riverbed_payments"]
    cycles = []
    for package in packages:
        graph = grimp.build_graph(package, exclude_type_checking_imports=True)
        for module in sorted(graph.modules):
            for imported in sorted(graph.find_modules_directly_imported_by(module)):
                if imported.startswith(package) and graph.chain_exists(
                    importer=imported, imported=module
                ):
                    cycles.append(f"{module} <-> {imported}")
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
