"""The README's environment-variable table and the code that reads the variables agree.

Read by the code: every variable ``config/settings.py`` reads (``os.environ``, ``os.getenv`` or
its helpers ``env_str``/``env_bool``/``env_int``/``env_list``), every ``STAGELINE_*`` variable
that other application code reads through ``os.environ``, and every ``STAGELINE_*`` variable
``scripts/start`` reads with a default (``${STAGELINE_PORT:-8000}``). Variables only the test
suites and CI read (``STAGELINE_TEST_*``, ``STAGELINE_CI_*``) are documented in
docs/testing.md instead.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ROOT / "config" / "settings.py"
APP_PACKAGES = ("config", "pipelines", "executions", "stageline")
START_SCRIPT = ROOT / "scripts" / "start"
SETTINGS_HELPERS = {"env_str", "env_bool", "env_int", "env_list"}


def _is_os_environ(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _first_string(call: ast.Call) -> str | None:
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def env_reads(path: Path) -> dict[str, int]:
    """The variables a Python file reads from the environment, with the line of the first read."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        name: str | None = None
        if not isinstance(node, ast.expr):
            continue
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in SETTINGS_HELPERS:
                name = _first_string(node)
            elif isinstance(func, ast.Attribute) and (
                (func.attr == "get" and _is_os_environ(func.value))
                or (
                    func.attr == "getenv"
                    and isinstance(func.value, ast.Name)
                    and func.value.id == "os"
                )
            ):
                name = _first_string(node)
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and _is_os_environ(node.value)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            name = node.slice.value
        if name is not None:
            found.setdefault(name, node.lineno)
    return found


def variables_read_by_the_code() -> dict[str, str]:
    """Each variable the code reads, with where (``path:line``)."""
    where: dict[str, str] = {}
    for name, line in env_reads(SETTINGS).items():
        where[name] = f"config/settings.py:{line}"
    for package in APP_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name, line in env_reads(path).items():
                if name.startswith("STAGELINE_"):
                    where.setdefault(name, f"{path.relative_to(ROOT)}:{line}")
    for number, text in enumerate(START_SCRIPT.read_text().splitlines(), start=1):
        for name in re.findall(r"\$\{(STAGELINE_[A-Z0-9_]+):?-", text):
            where.setdefault(name, f"scripts/start:{number}")
    return where


def variables_in_the_readme() -> set[str]:
    """The first column of the README table whose header is ``| variable | default | meaning |``."""
    lines = (ROOT / "README.md").read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if re.match(r"\|\s*variable\s*\|", line))
    names = set()
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        cell = line.split("|")[1].strip()
        names.add(cell.strip("`"))
    return names


def test_the_readme_documents_every_environment_variable_the_code_reads():
    read = variables_read_by_the_code()
    assert {"DATABASE_URL", "CELERY_BROKER_URL", "STAGELINE_VAR_DIR"} <= read.keys()
    missing = sorted(set(read) - variables_in_the_readme())
    assert not missing, "README's environment-variable table lacks: " + ", ".join(
        f"{name} (read at {read[name]})" for name in missing
    )


def test_the_readme_lists_no_environment_variable_that_nothing_reads():
    documented = variables_in_the_readme()
    assert "DATABASE_URL" in documented
    unread = sorted(documented - set(variables_read_by_the_code()))
    assert not unread, (
        "README's environment-variable table lists variables no code reads: " + ", ".join(unread)
    )


def test_the_failure_strategies_worked_example_is_the_example_files_text():
    """docs/pipelines.md's worked example is an excerpt of examples/pipelines/release.yaml: its
    lines, in order, but those that only say ``# …`` (what is left out)."""
    doc = (ROOT / "docs" / "pipelines.md").read_text()
    section = doc.split("### Worked example", 1)[1].split("\n## ", 1)[0]
    excerpt = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert excerpt, "docs/pipelines.md's worked example has no YAML block"
    shown = [line for line in excerpt.group(1).splitlines() if line.strip() != "# …"]
    assert len(shown) > 20
    lines = iter((ROOT / "examples" / "pipelines" / "release.yaml").read_text().splitlines())
    for line in shown:
        assert any(line == candidate for candidate in lines), (
            f"docs/pipelines.md's worked example has {line!r}, which examples/pipelines/"
            "release.yaml lacks there (or has before the line above it)"
        )
