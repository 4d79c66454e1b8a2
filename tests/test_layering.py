"""The direction of imports (docs: README "Architecture map", ARCHITECTURE.md):

    config  ->  api  ->  executions  ->  pipelines  ->  stageline (plain Python)

read from the source (AST), so that an import running the wrong way, or one hidden inside a
function to dodge a circle, fails here with the file and line:

- a ``pipelines`` module never imports ``executions`` (executions build on pipelines);
- ``stageline`` imports neither app, nor ``config``, nor any ``*.models`` module;
- no import statement sits inside a function or method body (``if TYPE_CHECKING:`` blocks
  at module level are where type-only imports go).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "api", "pipelines", "executions", "stageline", "benchmarks")
APPS = ("pipelines", "executions")


@dataclass(frozen=True)
class Import:
    path: str  # relative to the repository
    line: int
    module: str  # the imported module, absolute
    in_function: bool


def modules() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    )


def _absolute(path: Path, root: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = path.relative_to(root).with_suffix("").parts[: -node.level]
    return ".".join([*package, *([node.module] if node.module else [])])


class _Collector(ast.NodeVisitor):
    def __init__(self, path: Path, root: Path) -> None:
        self.path = path
        self.root = root
        self.depth = 0
        self.found: list[Import] = []

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _add(self, node: ast.stmt, names: list[str]) -> None:
        relative = self.path.relative_to(self.root).as_posix()
        for name in names:
            self.found.append(Import(relative, node.lineno, name, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        self._add(node, [alias.name for alias in node.names])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = _absolute(self.path, self.root, node)
        # ``from pipelines import permissions`` imports the module pipelines.permissions.
        names = [f"{module}.{alias.name}" if module else alias.name for alias in node.names]
        self._add(node, [module, *names] if module else names)


def imports(path: Path, root: Path = ROOT) -> list[Import]:
    collector = _Collector(path, root)
    collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return collector.found


ALL = [found for path in modules() for found in imports(path)]


def _is(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def pipelines_imports_executions(found: Import) -> bool:
    return found.path.startswith("pipelines/") and _is(found.module, "executions")


def a_lower_layer_imports_api(found: Import) -> bool:
    return found.path.split("/")[0] in (*APPS, "stageline") and _is(found.module, "api")


def stageline_imports_an_app(found: Import) -> bool:
    return found.path.startswith("stageline/") and (
        any(_is(found.module, package) for package in (*APPS, "config", "benchmarks"))
        or "models" in found.module.split(".")
    )


def test_the_modules_are_found():
    paths = {found.path for found in ALL}
    assert "pipelines/permissions.py" in paths and "executions/engine.py" in paths
    assert "stageline/errors.py" in paths


def test_pipelines_never_imports_executions():
    wrong = [
        f"{i.path}:{i.line} imports {i.module}" for i in ALL if pipelines_imports_executions(i)
    ]
    assert not wrong, "pipelines must not import executions:\n" + "\n".join(wrong)


def test_only_config_imports_the_api():
    wrong = [f"{i.path}:{i.line} imports {i.module}" for i in ALL if a_lower_layer_imports_api(i)]
    assert not wrong, "the api builds on executions and pipelines, never the other way:\n" + (
        "\n".join(wrong)
    )


def test_stageline_imports_neither_app_nor_config_nor_models():
    wrong = [f"{i.path}:{i.line} imports {i.module}" for i in ALL if stageline_imports_an_app(i)]
    assert not wrong, "stageline is plain Python shared by both apps:\n" + "\n".join(wrong)


def test_no_import_is_hidden_inside_a_function():
    hidden = sorted({f"{i.path}:{i.line} imports {i.module}" for i in ALL if i.in_function})
    assert not hidden, "import at module level (or under `if TYPE_CHECKING:`):\n" + "\n".join(
        hidden
    )


@pytest.mark.parametrize(
    "source, path, rule",
    [
        ("from executions.models import Execution\n", "pipelines/x.py", "pipelines"),
        ("import executions.states\n", "pipelines/spec/x.py", "pipelines"),
        ("from ..executions import models\n", "pipelines/x.py", "pipelines"),
        ("from api.tokens import authenticate\n", "executions/x.py", "api"),
        ("from pipelines.models import Project\n", "stageline/x.py", "stageline"),
        ("from django.contrib.auth.models import User\n", "stageline/x.py", "stageline"),
        ("from guardian import models\n", "stageline/x.py", "stageline"),
        ("def f():\n    from pipelines import roles\n", "executions/x.py", "function"),
        ("class C:\n    def m(self):\n        import os\n", "config/x.py", "function"),
    ],
)
def test_each_rule_catches_what_it_forbids(tmp_path, source, path, rule):
    """The checks above fail on each of these: they cannot pass by finding nothing."""
    target = tmp_path / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(source)
    found = imports(target, tmp_path)
    check = {
        "pipelines": pipelines_imports_executions,
        "stageline": stageline_imports_an_app,
        "api": a_lower_layer_imports_api,
        "function": lambda i: i.in_function,
    }[rule]
    assert any(check(i) for i in found)


def test_type_only_imports_at_module_level_are_allowed(tmp_path):
    target = tmp_path / "executions" / "x.py"
    target.parent.mkdir(parents=True)
    target.write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from pipelines.models import Pipeline\n"
    )
    assert not any(i.in_function for i in imports(target, tmp_path))
