"""A recipe's datasets: registered in ``dataset_info.json``, and prepared (the registered file exists).

Registration is checked always (the registry is tracked in git). Whether the files exist is a
fact about this machine, not about the recipe: a clean clone has no ``data/``. So an unprepared
dataset is an error only when asked (``prepared=True``, ``recipes check --prepared``, right before
a run) and otherwise a warning; the message names the ``medfactory prepare`` command to run.
"""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from medfactory.base.registry import REGISTRY_NAME, load_registry, owner_of
from medfactory.recipes.problems import RecipeProblem
from medfactory.recipes.recipe_file import RECIPES_DIR

PLUGIN_GROUP = "medfactory.plugins"  # the entry-point group of the corpus plugins (read as metadata, never imported)
# Registry owners (``medfactory_plugin``) that are generation steps, not corpus plugins (medfactory.generate).
GENERATION_OWNERS = {"translate": "medfactory generate translate", "generate_qa": "medfactory generate qa"}
# A header line that is a command (``# run:    medfactory prepare ...`` or its continuation lines), not prose that names one.
COMMAND_RE = re.compile(r"^#\s*(?:[a-z]+:)?\s*(medfactory (?:prepare|generate) \S+.*?)(?:\s{2,}|\s+\(|\s+#|$)")


def repository_root(path: Path) -> Path:
    """The folder a recipe is run from: the parent of ``recipes/``."""
    path = Path(path).resolve()
    return path.parent.parent if path.parent.name == RECIPES_DIR.name else path.parent


def split_list(value: Any) -> list[str]:
    """A LLaMA-Factory list argument (``a,b`` or a YAML list) as a list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(item).strip() for item in value]
    return [item.strip() for item in str(value).split(",") if item.strip()]


def recipe_datasets(values: dict[str, Any]) -> list[tuple[str, str]]:
    """``(key, dataset)`` for every dataset the recipe names."""
    return [(key, name) for key in ("dataset", "eval_dataset") for name in split_list(values.get(key))]


def load_recipe_registry(path: Path, values: dict[str, Any], registry_path: Path | None) -> tuple[Path, dict[str, Any] | None, list[RecipeProblem]]:
    """The registry the recipe's ``dataset_dir`` points at, or the problem reading it."""
    registry_file = Path(registry_path) if registry_path else repository_root(path) / values.get("dataset_dir", ".") / REGISTRY_NAME
    try:
        return registry_file, load_registry(registry_file), []
    except (FileNotFoundError, ValueError) as error:
        fix = f"point dataset_dir at the folder holding {REGISTRY_NAME}."
        return registry_file, None, [RecipeProblem(path, "dataset_dir", str(error), fix)]


def registration_problems(path: Path, values: dict[str, Any], registry_file: Path, registry: dict[str, Any]) -> list[RecipeProblem]:
    """Every dataset the recipe names that the registry lacks."""
    return [
        RecipeProblem(
            path,
            key,
            f"dataset `{name}` is not registered in {registry_file}.",
            f"{prepare_command(path, name, None)} (which registers it), or correct the name; registered: {', '.join(sorted(registry))}.",
        )
        for key, name in recipe_datasets(values)
        if name not in registry
    ]


def _header_commands(path: Path) -> list[str]:
    commands = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        commands += [match.group(1).rstrip(" \\") for match in COMMAND_RE.finditer(line)]  # at most one: the pattern is anchored; a shell continuation dropped
    return commands


def _normal(name: str) -> str:
    return name.replace("-", "_").lower()


def _owner_command(owner: str | None, commands: list[str]) -> str | None:
    """The command that writes datasets tagged ``owner`` (the registry's owner tag): the recipe header's own line for it
    (with its arguments) if there is one, else the corpus plugin or generation step of that name."""
    if owner in GENERATION_OWNERS:
        command = GENERATION_OWNERS[owner]
    elif owner and owner in {entry.name for entry in entry_points(group=PLUGIN_GROUP)}:
        command = f"medfactory prepare {owner}"
    else:
        return None
    in_header = [line for line in commands if line == command or line.startswith(command + " ")]
    return f"run `{in_header[0]}`" if in_header else f"run `{command}` with your source files (its options: `{command} --help`)"


def prepare_command(path: Path, name: str, file_name: str | None, owner: str | None = None) -> str:
    """The command that writes a dataset: from the recipe's ``# run:`` header, else its registry owner tag, else the plugin its folder is named after."""
    folder = _normal(Path(file_name).parts[1] if file_name and len(Path(file_name).parts) > 2 else name)
    commands = _header_commands(path)
    if by_owner := _owner_command(owner, commands):
        return by_owner
    matching = [command for command in commands if command.split()[1] == "prepare" and folder.startswith(_normal(command.split()[2]))]
    if matching:
        return "run `" + max(matching, key=lambda command: len(command.split()[2])) + "`"
    plugins = sorted((entry.name for entry in entry_points(group=PLUGIN_GROUP) if folder.startswith(_normal(entry.name))), key=len)
    if plugins:
        return f"run `medfactory prepare {plugins[-1]}` with your source files (its options: `medfactory prepare {plugins[-1]} --help`)"
    return (
        f"write {file_name or f'the `{name}` dataset'} (the recipe's header and comments say how; your own notes or preference pairs: "
        f"`medfactory prepare notes|preferences --source PATH --name {name}`; all corpus plugins: `medfactory prepare --help`)"
    )


def has_no_records(path: Path, probe_bytes: int = 1 << 16) -> bool:
    """Whether a prepared dataset file holds nothing: only whitespace, or an empty JSON array (read from its start only)."""
    with open(path, "rb") as handle:
        head = handle.read(probe_bytes).lstrip()
    return not head or (path.suffix == ".json" and head.startswith(b"[") and head[1:].lstrip().startswith(b"]"))


def unprepared_problems(path: Path, values: dict[str, Any], registry: dict[str, Any]) -> list[RecipeProblem]:
    """Every registered dataset of the recipe whose ``file_name`` is missing under ``dataset_dir``."""
    data_dir = repository_root(path) / values.get("dataset_dir", ".")
    problems = []
    for key, name in recipe_datasets(values):
        file_name = (registry.get(name) or {}).get("file_name")
        if file_name is not None and (data_dir / file_name).is_file() and has_no_records(data_dir / file_name):
            problems.append(
                RecipeProblem(
                    path, key, f"dataset `{name}` has no records: {Path(values.get('dataset_dir', '.')) / file_name} is empty, so LLaMA-Factory "
                    "would stop while building it (datasets' SchemaInferenceError).",
                    f"{prepare_command(path, name, file_name, owner_of(registry.get(name) or {}))} with more source data (or a larger held-out "
                    "fraction for a validation set), or drop it from the recipe.",
                )
            )  # fmt: skip
            continue
        if file_name is None or (data_dir / file_name).exists():
            continue  # unregistered (reported above) or a Hub / script dataset: nothing on disk to check
        problems.append(
            RecipeProblem(
                path,
                key,
                f"dataset `{name}` is registered but not prepared: {Path(values.get('dataset_dir', '.')) / file_name} is missing, "
                "so the run would stop at data loading.",
                f"{prepare_command(path, name, file_name, owner_of(registry.get(name) or {}))}.",
            )
        )
    return problems


def tokenized_cache_problem(path: Path, values: dict[str, Any]) -> RecipeProblem | None:
    """A ``tokenized_path`` that already holds tokens: LLaMA-Factory then ignores every data argument (a warning)."""
    tokenized = values.get("tokenized_path")
    if not tokenized or not (repository_root(path) / tokenized).is_dir() or not any((repository_root(path) / tokenized).iterdir()):
        return None
    return RecipeProblem(
        path,
        "tokenized_path",
        f"{tokenized} exists: LLaMA-Factory loads it and ignores dataset, cutoff_len, template and every other data argument "
        "(data/loader.py: 'Loading dataset from disk will ignore other data arguments').",
        f"delete {tokenized} after changing the datasets or the data arguments; keep it to reuse the same tokens.",
    )
