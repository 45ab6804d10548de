"""What a package's modules import when they run, read from their source (nothing imported).

An import under ``if TYPE_CHECKING:`` is left out: it is there for annotations only and
never runs. Relative imports are not used in txuac and are not resolved.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(path: Path) -> set[str]:
    """The modules ``path`` imports at run time, at any depth (inside functions too)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # ``from txuac.sip import via`` imports the module txuac.sip.via; the package
            # itself counts only for the names it defines.
            package = ROOT / node.module.replace(".", "/")
            for alias in node.names:
                if (package / f"{alias.name}.py").exists():
                    found.add(f"{node.module}.{alias.name}")
                else:
                    found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found


def package_imports(package: str) -> dict[str, set[str]]:
    """Module name -> its run-time imports, for every module of ``package`` (``txuac.sip``)."""
    directory = ROOT / package.replace(".", "/")
    modules: dict[str, set[str]] = {}
    for path in sorted(directory.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = runtime_imports(path)
    return modules


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    """Whether module ``name`` is one of ``prefixes`` or inside one of them."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def import_cycles(modules: dict[str, set[str]]) -> list[list[str]]:
    """Import circles among ``modules`` (each as the list of modules around it)."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(modules[name]):
            if target not in modules or target == name:
                continue
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                walk(target)
        path.pop()
        state[name] = 2

    for name in sorted(modules):
        if name not in state:
            walk(name)
    return cycles
