"""The package layout the README's table describes: one sub-package per role, the run config as the ground,
no import circle, only the entry points importing the strategies, and every command the README shows runs."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("mpsl_flower", "strategies", "tasks")
TOP_LEVEL_MODULES = {"__init__.py", "config.py", "wire.py", "logs.py"}
ROLES = {"app", "node", "split", "models", "runs", "measure", "tools"}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PROJECT_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


MODULES = _modules()


def _imports(module: str) -> set[str]:
    """The project modules `module` imports, at its top level or inside functions (`from pkg import sub`
    counts as importing `pkg.sub`)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in MODULES and name != module}


def test_mpsl_flower_keeps_three_modules_at_its_top_and_one_folder_per_role():
    top = REPO / "mpsl_flower"
    assert {p.name for p in top.glob("*.py")} == TOP_LEVEL_MODULES
    folders = {p.name for p in top.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == ROLES
    assert all((top / folder / "__init__.py").is_file() for folder in folders)


def test_the_run_config_imports_nothing_from_mpsl_flower():
    assert not {name for name in _imports("mpsl_flower.config") if name.startswith("mpsl_flower")}


def test_only_the_entry_points_import_the_strategies_and_tasks_import_no_framework_code():
    for module in MODULES:
        imported = _imports(module)
        if module.startswith("mpsl_flower.") and not module.startswith("mpsl_flower.app"):
            assert not {name for name in imported if name.startswith("strategies")}, module
        if module.startswith("tasks"):
            assert not {name for name in imported if name.startswith(("mpsl_flower", "strategies"))}, module


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle a depth-first walk of `graph` meets, as the path that closes it."""
    state: dict[str, str] = {}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                circles.append([*path[path.index(imported) :], imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return circles


def test_no_import_circle_among_the_project_modules():
    assert _circles({module: _imports(module) for module in MODULES}) == []


def test_the_circle_check_finds_a_circle_through_three_modules():
    """The check above can fail: config -> split.server_side -> split.optimizer -> config, as the layout had."""
    graph = {"config": {"server_side"}, "server_side": {"optimizer"}, "optimizer": {"config"}, "wire": {"config"}}
    assert _circles(graph) == [["config", "server_side", "optimizer", "config"]]


README_COMMANDS = sorted(
    set(re.findall(r"python -m ((?:mpsl_flower|tasks|strategies)[\w.]*\w)(?![\w.])", (REPO / "README.md").read_text()))
)


def test_the_readme_shows_module_commands():
    assert {"mpsl_flower.tools.overhead", "mpsl_flower.tools.deployment", "tasks.download"} <= set(README_COMMANDS)


@pytest.mark.parametrize("module", README_COMMANDS)
def test_every_python_m_command_of_the_readme_answers_help(module):
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
