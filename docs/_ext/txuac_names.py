"""The ``:src:`` role: a module, file or name of txuac's source, checked when the docs build.

``:src:`txuac/net/stack.py``` names a file or directory of the checkout;
``:src:`txuac.net.stack.SIPStack.send_request``` names a module and, after it, a class,
function, method or module-level value defined there; ``:src:`~txuac.net.stack.SIPStack```
shows only the part after the module (``SIPStack``); ``:src:`title <target>``` shows
``title``. Names are found in the source text (``ast``), nothing is imported. A name that
is not there is a Sphinx warning, so a build with ``-W`` fails when the manual names code
that was renamed or removed.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

from docutils import nodes
from sphinx.util import logging

logger = logging.getLogger(__name__)

_EXPLICIT = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)


@lru_cache(maxsize=None)
def _definitions(path: Path) -> dict[str, ast.AST]:
    """Names defined at the top of a module -> their node (imported names do not count:
    the manual names the module that defines a thing)."""
    return _names_in(ast.parse(path.read_text(encoding="utf-8"), str(path)).body)


def _names_in(body: list[ast.stmt]) -> dict[str, ast.AST]:
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
    return names


def resolve(root: Path, target: str) -> str | None:
    """None when ``target`` exists under ``root``, else why not."""
    if "/" in target:
        return None if (root / target).exists() else f"no file or directory {target}"
    parts = target.split(".")
    for split in range(len(parts), 0, -1):
        base = root.joinpath(*parts[:split])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return _resolve_in(candidate, parts[split:], ".".join(parts[:split]))
    return f"no module for {target}"


def _resolve_in(path: Path, names: list[str], module: str) -> str | None:
    top = _definitions(path)
    scope = top
    where = module
    for name in names:
        node = scope.get(name)
        if node is None:
            return f"{where} defines no {name}"
        where = f"{where}.{name}"
        scope = _class_scope(node, top) if isinstance(node, ast.ClassDef) else {}
    return None


def _class_scope(node: ast.ClassDef, top: dict[str, ast.AST]) -> dict[str, ast.AST]:
    """A class's names, with those it inherits from classes of the same module."""
    scope: dict[str, ast.AST] = {}
    for base in node.bases:
        parent = top.get(base.id) if isinstance(base, ast.Name) else None
        if isinstance(parent, ast.ClassDef) and parent is not node:
            scope.update(_class_scope(parent, top))
    scope.update(_names_in(node.body))
    return scope


def src_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    env = inliner.document.settings.env
    root = Path(env.config.txuac_source_root)
    match = _EXPLICIT.match(text)
    if match:
        title, target = match.group("title"), match.group("target")
    elif text.startswith("~"):
        target = text[1:]
        module_end = _module_length(root, target)
        title = target[module_end + 1:] if module_end < len(target) else target
    else:
        title = target = text
    problem = resolve(root, target)
    if problem is not None:
        logger.warning("src role: %s", problem, location=(env.docname, lineno), type="txuac", subtype="src")
    return [nodes.literal(rawtext, title, classes=["txuac-src"])], []


def _module_length(root: Path, target: str) -> int:
    """Length of the longest prefix of ``target`` that is a module of the checkout."""
    parts = target.split(".")
    for split in range(len(parts), 0, -1):
        base = root.joinpath(*parts[:split])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return len(".".join(parts[:split]))
    return len(target)


def setup(app):
    app.add_config_value("txuac_source_root", "", "env")
    app.add_role("src", src_role)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
