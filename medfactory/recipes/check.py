"""`medfactory recipes check`: every recipe parsed the way LLaMA-Factory parses it.

What is checked, per recipe (each problem names the recipe, the key and the fix):

* the header comment: ``# recipe:`` (the file's name), ``# version:`` (x.y.z), ``# source:``;
* YAML syntax, loaded with OmegaConf exactly as ``llamafactory-cli`` loads it;
* keys unknown to LLaMA-Factory's argument dataclasses (with a did-you-mean);
* values LLaMA-Factory accepts but silently ignores: its parser does not validate enum
  fields, so ``quantization_method: bitsandbytes`` parses and quantizes nothing;
* LLaMA-Factory's and transformers' own argument validation, deprecations included;
* every dataset named in ``dataset`` / ``eval_dataset`` registered in ``dataset_info.json``;
* the source paper's values (``medfactory/recipes/paper_values.yaml``);
* local logging only (``report_to: none``) and automatic resume (no ``overwrite_output_dir``);
* the version rule: the values of a version are locked in ``recipes/versions.lock.json`` and
  the version has a ``recipes/CHANGELOG.md`` entry, so any changed value forces a version bump.

Nothing is downloaded: only argument parsing runs, never model or tokenizer loading.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import logging
import math
import re
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medfactory.base.registry import REGISTRY_NAME, load_registry
from medfactory.recipes.lock import CHANGELOG_NAME, load_lock, lock_path
from medfactory.recipes.paper_values import PAPER_SOURCE, PAPER_VALUES, SIXTEEN_BIT_RECIPES
from medfactory.recipes.recipe_file import HEADER_KEYS, RECIPES_DIR, VERSION_RE, load_recipe, read_header, values_hash

# Values that parse but that LLaMA-Factory does not act on, with the value it does act on.
KNOWN_IGNORED_VALUES: dict[str, dict[str, str]] = {
    "quantization_method": {"bitsandbytes": "bnb", "bitsandbytes4bit": "bnb", "bnb4": "bnb"},
}


@dataclasses.dataclass(frozen=True)
class RecipeProblem:
    """One thing wrong with one recipe."""

    recipe: Path
    key: str | None
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.recipe}" + (f": `{self.key}`" if self.key else "")
        return f"{where}: {self.message} Fix: {self.fix}"


def _llamafactory_fields() -> dict[str, dataclasses.Field]:
    from llamafactory.hparams.parser import _TRAIN_ARGS

    return {field.name: field for cls in _TRAIN_ARGS for field in dataclasses.fields(cls)}


def _allowed_values(annotation: Any) -> list[str] | None:
    """The closed set of values of an enum or Literal field, if it has one."""
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return [str(member.value) for member in candidate]
        if typing.get_origin(candidate) is typing.Literal:
            return [str(value) for value in typing.get_args(candidate)]
    return None


def _check_keys_and_enums(path: Path, values: dict[str, Any]) -> list[RecipeProblem]:
    fields = _llamafactory_fields()
    problems = []
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean `{close[0]}`?" if close else "remove it or check the LLaMA-Factory docs."
            problems.append(RecipeProblem(path, key, "unknown key: LLaMA-Factory 0.9.5 rejects it.", hint))
            continue
        known = KNOWN_IGNORED_VALUES.get(key, {})
        if isinstance(value, str) and value in known:
            problems.append(
                RecipeProblem(
                    path,
                    key,
                    f"`{value}` is accepted but silently ignored by LLaMA-Factory (nothing happens).",
                    f"use `{key}: {known[value]}`.",
                )
            )
            continue
        allowed = _allowed_values(fields[key].type)
        if allowed is not None and value is not None and str(value) not in allowed:
            problems.append(
                RecipeProblem(
                    path,
                    key,
                    f"`{value}` is not one of LLaMA-Factory's values; its parser does not check this field, "
                    "so the value would be silently ignored.",
                    f"use one of: {', '.join(allowed)}.",
                )
            )
    return problems


class _WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _check_with_llamafactory_parser(path: Path, values: dict[str, Any]) -> list[RecipeProblem]:
    """Run LLaMA-Factory's own parser (dataclass validation included); report errors and deprecations."""
    import torch
    from llamafactory.hparams.parser import _parse_train_args

    parse_values = dict(values)
    if not torch.cuda.is_available():
        # Only for parsing here: transformers refuses bf16 without a GPU unless use_cpu is set.
        parse_values["use_cpu"] = True
    collector = _WarningCollector()
    watched = [logging.getLogger("transformers"), logging.getLogger("llamafactory")]
    for logger in watched:
        logger.addHandler(collector)
    try:
        _parse_train_args(parse_values)
    except (ValueError, TypeError) as error:
        return [RecipeProblem(path, None, f"LLaMA-Factory's parser rejects the recipe: {error}", "correct the value it names.")]
    finally:
        for logger in watched:
            logger.removeHandler(collector)
    return [
        RecipeProblem(path, None, f"deprecated: {message}", "use the replacement the message names.")
        for message in collector.messages
        if "deprecated" in message.lower()
    ]


def _repository_root(path: Path) -> Path:
    path = Path(path).resolve()
    return path.parent.parent if path.parent.name == RECIPES_DIR.name else path.parent


def _check_datasets(path: Path, values: dict[str, Any], registry_path: Path | None) -> list[RecipeProblem]:
    root = _repository_root(path)
    registry_file = registry_path or root / values.get("dataset_dir", ".") / REGISTRY_NAME
    try:
        registry = load_registry(registry_file)
    except (FileNotFoundError, ValueError) as error:
        return [RecipeProblem(path, "dataset_dir", str(error), f"point dataset_dir at the folder holding {REGISTRY_NAME}.")]
    problems = []
    for key in ("dataset", "eval_dataset"):
        for name in _split_list(values.get(key)):
            if name not in registry:
                problems.append(
                    RecipeProblem(
                        path,
                        key,
                        f"dataset `{name}` is not registered in {registry_file}.",
                        f"prepare it with `medfactory prepare {name}` (which registers it) or correct the name; "
                        f"registered: {', '.join(sorted(registry))}.",
                    )
                )
    return problems


def _split_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(item).strip() for item in value]
    return [item.strip() for item in str(value).split(",") if item.strip()]


def _same_value(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(float(actual), float(expected), rel_tol=1e-9)
    if isinstance(expected, str) and "," in expected:
        return _split_list(actual) == _split_list(expected)
    return actual == expected


def _check_paper_values(path: Path, name: str, values: dict[str, Any]) -> list[RecipeProblem]:
    expected = PAPER_VALUES.get(name, {})
    source = PAPER_SOURCE.get(name, "its source paper")
    problems = []
    for key, paper_value in expected.items():
        if key not in values:
            problems.append(RecipeProblem(path, key, f"missing; {source} uses {paper_value!r}.", f"add `{key}: {paper_value}`."))
        elif not _same_value(values[key], paper_value):
            problems.append(
                RecipeProblem(
                    path,
                    key,
                    f"is {values[key]!r} but {source} uses {paper_value!r}.",
                    f"set `{key}: {paper_value}`, or change medfactory/recipes/paper_values.yaml if the paper says otherwise.",
                )
            )
    if name in SIXTEEN_BIT_RECIPES and not (values.get("bf16") or values.get("fp16") or values.get("pure_bf16")):
        problems.append(
            RecipeProblem(path, "bf16", f"{source} trained in 16-bit precision.", "set `bf16: true` (A100/H100) or `fp16: true`.")
        )
    return problems


def _check_policies(path: Path, values: dict[str, Any]) -> list[RecipeProblem]:
    problems = []
    report_to = _split_list(values.get("report_to", "none"))
    if values.get("do_train") and report_to != ["none"]:
        problems.append(
            RecipeProblem(
                path,
                "report_to",
                f"is {values.get('report_to')!r}: recipes train on clinical text and log locally only.",
                "set `report_to: none`; opt in to a tracker on the command line (`report_to=wandb`) for your own runs.",
            )
        )
    if values.get("overwrite_output_dir"):
        problems.append(
            RecipeProblem(
                path,
                "overwrite_output_dir",
                "deletes the checkpoints a preempted run resumes from.",
                "remove it: rerunning the same command resumes from the last checkpoint in output_dir.",
            )
        )
    return problems


def _check_header(path: Path, header: dict[str, str]) -> list[RecipeProblem]:
    problems = []
    for key in HEADER_KEYS:
        if not header.get(key):
            problems.append(
                RecipeProblem(path, f"# {key}:", "missing from the header comment.", f"start the file with `# {key}: ...`.")
            )
    if header.get("recipe") and header["recipe"] != path.stem:
        problems.append(
            RecipeProblem(path, "# recipe:", f"says {header['recipe']!r} but the file is {path.name}.", f"write `# recipe: {path.stem}`.")
        )
    if header.get("version") and not VERSION_RE.match(header["version"]):
        problems.append(RecipeProblem(path, "# version:", f"{header['version']!r} is not x.y.z.", "write e.g. `# version: 1.0.0`."))
    return problems


def _check_version_rule(path: Path, header: dict[str, str], values: dict[str, Any]) -> list[RecipeProblem]:
    version = header.get("version")
    if not version:
        return []
    name = path.stem
    locked = load_lock(lock_path(path)).get(name, {})
    digest = values_hash(values)
    problems = []
    if version not in locked:
        problems.append(
            RecipeProblem(
                path,
                "# version:",
                f"version {version} is not locked in {lock_path(path)}.",
                f"add a `{name} {version}` entry to {path.parent / CHANGELOG_NAME}, then run `medfactory recipes lock`.",
            )
        )
    elif locked[version] != digest:
        problems.append(
            RecipeProblem(
                path,
                "# version:",
                f"values changed but the version is still {version} (the rule: any changed value bumps the version).",
                f"bump `# version:`, describe the change in {path.parent / CHANGELOG_NAME}, then run `medfactory recipes lock`.",
            )
        )
    changelog = path.parent / CHANGELOG_NAME
    if not changelog.is_file() or not re.search(rf"\b{re.escape(name)}\s+{re.escape(version)}\b", changelog.read_text("utf-8")):
        problems.append(
            RecipeProblem(path, "# version:", f"{changelog} has no entry for `{name} {version}`.", f"add a `## {name} {version}` section.")
        )
    return problems


def check_recipe(path: Path, registry_path: Path | None = None) -> list[RecipeProblem]:
    """Every problem of one recipe; an empty list means it is ready to run."""
    path = Path(path)
    if not path.is_file():
        return [RecipeProblem(path, None, "no such recipe file.", "check the path (recipes live in recipes/*.yaml).")]
    header = read_header(path)
    problems = _check_header(path, header)
    try:
        values = load_recipe(path)
    except Exception as error:  # OmegaConf raises several YAML error types; all mean the same here
        return [*problems, RecipeProblem(path, None, f"not valid YAML: {error}", "correct the line it names.")]
    key_problems = _check_keys_and_enums(path, values)
    problems += key_problems
    if not key_problems:  # the parser stops at the first unknown key; report those with hints instead
        problems += _check_with_llamafactory_parser(path, values)
    problems += _check_datasets(path, values, registry_path)
    problems += _check_paper_values(path, path.stem, values)
    problems += _check_policies(path, values)
    problems += _check_version_rule(path, header, values)
    return problems


def check_recipes(paths: Iterable[Path], registry_path: Path | None = None) -> dict[Path, list[RecipeProblem]]:
    """Problems per recipe, for every recipe given."""
    return {Path(path): check_recipe(Path(path), registry_path) for path in paths}
