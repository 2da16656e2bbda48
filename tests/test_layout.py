"""The installed distribution and the source layout (docs/architecture.md): one `medfactory` namespace,
no bare `eval` or `plugins` packages, no test-only code in the wheel, imports flowing one way, short
functions, and a tree that passes the project's own ruff configuration."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

# Which layer may import which (docs/architecture.md): a layer imports only itself and those listed.
ALLOWED_IMPORTS = {
    "base": set(),
    "corpus": {"base"},
    "recipes": {"base"},
    "run": {"base", "corpus", "recipes"},
    "bench": {"base", "corpus", "recipes", "run"},
    "generate": {"base", "corpus"},
}
TEST_ONLY_NAMES = ("tiny_models", "synthetic_mimic", "testing_utils", "docker_pins", "build_constant_answer_model", "build_tiny_bert")
MAX_FUNCTION_LINES = 80


def test_wheel_installs_only_the_medfactory_package(repo_root: Path, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(repo_root)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("medfactory-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"medfactory"}
    assert "medfactory/plugins/__init__.py" in names and "medfactory/eval/__init__.py" in names
    assert "medfactory/cli/__init__.py" in names and "medfactory/recipes/paper_values.yaml" in names
    # every module of the source tree is in the wheel (the package list in pyproject.toml is explicit)
    sources = {f"medfactory/{path.relative_to(repo_root / 'medfactory').as_posix()}" for path in (repo_root / "medfactory").rglob("*.py")}
    assert sources <= set(names), sorted(sources - set(names))
    # and nothing only the tests use
    python_names = [name for name in names if name.endswith(".py")]
    assert not [name for name in python_names if any(word in name for word in TEST_ONLY_NAMES)]
    for name in python_names:
        text = zipfile.ZipFile(wheel).read(name).decode()
        assert "testing_utils" not in text and "def build_tiny_bert" not in text, name
    # the base-model configurations `medfactory bench` builds from travel with the package
    assert {f"medfactory/model_configs/{n}.json" for n in ("llama2_7b", "mistral_7b_v02", "biomistral_7b", "medgemma_4b")} <= set(names)
    entry_points = next(zipfile.ZipFile(wheel).read(n) for n in names if n.endswith("entry_points.txt")).decode()
    assert "medfactory = medfactory.cli:main" in entry_points
    assert "[medfactory.plugins]" in entry_points
    for plugin in ("lopes2019", "semclinbr", "brateca", "notes"):
        assert f"{plugin} = medfactory.plugins.{plugin}:PLUGIN" in entry_points


def test_bare_plugins_and_eval_are_not_importable_outside_the_repository(tmp_path: Path) -> None:
    code = (
        "import importlib.util, medfactory.plugins, medfactory.eval;"
        "print(importlib.util.find_spec('plugins'), importlib.util.find_spec('eval'));"
        "print(medfactory.plugins.__file__)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    first, second = result.stdout.splitlines()
    assert first == "None None"
    assert second.endswith("plugins/__init__.py")


def test_console_command_lists_the_subcommands() -> None:
    result = subprocess.run([sys.executable, "-m", "medfactory.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("recipes", "prepare", "demo", "contamination", "bench"):
        assert command in result.stdout


def _first_party_imports(path: Path) -> set[str]:
    """The ``medfactory.<layer>`` (or ``plugins``/``eval``) names a module imports, at any depth."""
    layers = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for module in modules:
            parts = module.split(".")
            if parts[0] == "medfactory" and len(parts) > 1:
                layers.add(parts[1])
    return layers


def test_imports_flow_one_way(repo_root: Path) -> None:
    core = repo_root / "medfactory"
    wrong = []
    for layer, allowed in ALLOWED_IMPORTS.items():
        for path in (core / layer).rglob("*.py"):
            imported = _first_party_imports(path) - {layer, "__version__"}
            if imported - allowed:
                wrong.append(f"{path.relative_to(repo_root)} imports medfactory.{', medfactory.'.join(sorted(imported - allowed))}")
    assert not wrong, "\n".join(wrong)
    # the core never imports the plugins or the evaluations (only the CLI, on top, does)
    for path in core.rglob("*.py"):
        if "cli" not in path.relative_to(core).parts:
            assert not _first_party_imports(path) & {"plugins", "eval"}, path


def test_few_modules_sit_loose_in_the_package(repo_root: Path) -> None:
    loose = sorted(path.name for path in (repo_root / "medfactory").glob("*.py"))
    assert len(loose) <= 8, loose


def test_no_module_imports_another_modules_private_names(repo_root: Path) -> None:
    offenders = []
    for folder in ("medfactory", "plugins", "eval", "benchmarks", "tests"):
        for path in (repo_root / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            modules = _first_party_module_names(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("medfactory", "testing_utils"):
                    offenders += [f"{path.relative_to(repo_root)}: {node.module}.{alias.name}" for alias in node.names if alias.name.startswith("_")]
                # `from medfactory.eval import mcqa` then `mcqa._table(...)` reaches into a private name just the same
                private = isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                if private and isinstance(node.value, ast.Name) and node.value.id in modules:
                    offenders.append(f"{path.relative_to(repo_root)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not offenders, "\n".join(offenders)


def _first_party_module_names(tree: ast.AST) -> set[str]:
    """Local names bound to first-party modules: ``import medfactory.x as m`` and ``from medfactory.eval import mcqa``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.asname or alias.name for alias in node.names if alias.name.split(".")[0] in ("medfactory", "testing_utils")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("medfactory", "testing_utils"):
            names |= {alias.asname or alias.name for alias in node.names if _is_module(f"{node.module}.{alias.name}")}
    return names


def _is_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except (ImportError, AttributeError, ValueError):  # the parent is a module, not a package: the name is an attribute
        return False


def test_no_function_is_longer_than_80_lines(repo_root: Path) -> None:
    long_functions = []
    for folder in ("medfactory", "plugins", "eval", "benchmarks", "tests"):
        for path in (repo_root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(repo_root)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long_functions, "\n".join(long_functions)


def test_ruff_passes_under_the_projects_configuration(repo_root: Path) -> None:
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: it is part of the test extra (pip install -e '.[test]')")
    result = subprocess.run([str(ruff), "check", "--no-cache", "."], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
