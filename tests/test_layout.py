"""The packages import in one direction: tui → daemon → presets → engine, and engine imports none of them.

Read from the source with ast (nothing is imported), so a cycle shows here even when the
import that closes it sits inside a function that no other test happens to call.
"""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Which of the project's packages each package may import (tuner.<name>).
MAY_IMPORT = {
    "tui": {"daemon", "presets", "engine"},
    "daemon": {"presets", "engine"},
    "presets": {"engine"},
    "engine": set(),
}


def packages() -> dict[str, Path]:
    """tuner.<name> → its folder, as pyproject.toml maps them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name.split(".", 1)[1]: ROOT / folder for name, folder in mapping.items()}


def module_name(package: str, folder: Path, file: Path) -> str:
    parts = ["tuner", package, *file.relative_to(folder).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(file: Path, module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, lazy) for every import in `file`; lazy: inside a function or `if TYPE_CHECKING`."""
    tree = ast.parse(file.read_text(), str(file))
    is_package = file.name == "__init__.py"
    found = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = True
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, lazy) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")
                    base = base[:len(base) - child.level + (1 if is_package else 0)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                found.append((target, child.lineno, lazy))
            visit(child, inner)

    visit(tree, False)
    return found


def edges() -> list[tuple[str, str, str, str, int, bool]]:
    """(from package, to package, module, imported, line, lazy) for imports between the project's packages."""
    out = []
    for package, folder in packages().items():
        for file in sorted(folder.rglob("*.py")):
            module = module_name(package, folder, file)
            for target, line, lazy in imports(file, module):
                parts = target.split(".")
                if len(parts) >= 2 and parts[0] == "tuner" and parts[1] in MAY_IMPORT and parts[1] != package:
                    out.append((package, parts[1], module, target, line, lazy))
    return out


def test_the_scan_sees_the_imports_it_judges():
    # A parser that found nothing would pass every check below.
    found = {(a, b) for a, b, *_ in edges()}
    assert {("tui", "daemon"), ("tui", "engine"), ("daemon", "engine"), ("presets", "engine")} <= found


def test_every_import_between_packages_points_down():
    wrong = [f"{module}:{line} imports {target}" + (" (inside a function)" if lazy else "")
             for source, dest, module, target, line, lazy in edges()
             if dest not in MAY_IMPORT[source]]
    assert wrong == [], "imports against tui → daemon → presets → engine:\n" + "\n".join(wrong)


def test_no_cycle_between_packages_at_import_time():
    graph: dict[str, set[str]] = {name: set() for name in MAY_IMPORT}
    for source, dest, _, _, _, lazy in edges():
        if not lazy:
            graph[source].add(dest)

    def reach(start: str, node: str, seen: set[str]) -> bool:
        for nxt in graph[node]:
            if nxt == start or (nxt not in seen and (seen.add(nxt) or reach(start, nxt, seen))):
                return True
        return False

    cyclic = [name for name in graph if reach(name, name, set())]
    assert cyclic == [], f"packages on an import cycle: {cyclic}; graph: {graph}"
