"""`medfactory recipes check`: every recipe checked offline for what would stop or silently mislead its run.

What is checked, per recipe (each problem names the recipe, the key and the fix; docs/recipes_check.md
lists every rule with its source):

* the header comment: ``# recipe:`` (the file's name), ``# version:`` (x.y.z), ``# source:``;
* YAML syntax, loaded with OmegaConf exactly as ``llamafactory-cli`` loads it;
* keys unknown to LLaMA-Factory's argument dataclasses (with a did-you-mean);
* values of the wrong type (the YAML path does not convert: ``learning_rate: fast`` parses);
* values LLaMA-Factory accepts but silently ignores: its parser does not validate enum
  fields, so ``quantization_method: bitsandbytes`` parses and quantizes nothing;
* LLaMA-Factory's and transformers' own argument validation, deprecations included, and every
  launch-time check of ``get_train_args`` / ``_verify_model_args`` / the model loader
  (:mod:`medfactory.recipes.launch_checks`), plus the packages those keys need;
* combinations LLaMA-Factory or transformers silently do not act on (:mod:`medfactory.recipes.ignored`);
* ``model_name_or_path`` / ``ref_model``: a Hub id of the base-model table or a local path;
* every dataset named in ``dataset`` / ``eval_dataset`` registered in ``dataset_info.json``, and
  prepared (its file exists): an error with ``prepared=True``, otherwise a warning;
* the source paper's values (``medfactory/recipes/paper_values.yaml``);
* local logging only (``report_to: none``) and automatic resume (no ``overwrite_output_dir``);
* the version rule: the values of a version are locked in ``recipes/versions.lock.json`` and
  the version has a ``recipes/CHANGELOG.md`` entry, so any changed value forces a version bump.

Nothing is downloaded: only argument parsing runs, never model, tokenizer or dataset loading.
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

from medfactory.recipes.base_models import unknown_model_problem
from medfactory.recipes.dataset_checks import (
    load_recipe_registry,
    registration_problems,
    repository_root,
    split_list,
    tokenized_cache_problem,
    unprepared_problems,
)
from medfactory.recipes.ignored import ignored_problems
from medfactory.recipes.launch_checks import dependency_problems, field_types, launch_problems, parse_recipe, type_problems
from medfactory.recipes.lock import CHANGELOG_NAME, load_lock, lock_path
from medfactory.recipes.paper_values import PAPER_SOURCE, PAPER_VALUES, SIXTEEN_BIT_RECIPES
from medfactory.recipes.problems import RecipeProblem
from medfactory.recipes.recipe_file import HEADER_KEYS, VERSION_RE, load_recipe, read_header, values_hash

__all__ = ["RecipeProblem", "RecipeReport", "check_recipe", "check_recipes", "inspect_recipe"]

logger = logging.getLogger(__name__)
MODEL_KEYS = ("model_name_or_path", "ref_model")

# Values that parse but that LLaMA-Factory does not act on, with the value it does act on.
KNOWN_IGNORED_VALUES: dict[str, dict[str, str]] = {
    "quantization_method": {"bitsandbytes": "bnb", "bitsandbytes4bit": "bnb", "bnb4": "bnb"},
}


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
    fields = field_types()
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
        allowed = _allowed_values(fields[key][0])
        if allowed is not None and isinstance(value, str) and value not in allowed:  # other types: the type check
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


def _check_models(path: Path, values: dict[str, Any]) -> list[RecipeProblem]:
    problems = []
    for key in MODEL_KEYS:
        if isinstance(values.get(key), str):
            found = unknown_model_problem(values[key], repository_root(path))
            if found:
                problems.append(RecipeProblem(path, key, *found))
    return problems


def _check_arguments(path: Path, values: dict[str, Any]) -> list[RecipeProblem]:
    """What LLaMA-Factory and transformers refuse or ignore, from the keys to the launch-time rules."""
    problems = _check_keys_and_enums(path, values) + type_problems(path, values)
    if problems:  # the parser stops at the first unknown key and misreads wrong types; report those with hints instead
        return problems
    parsed, problems = parse_recipe(path, values)
    if parsed is not None:
        problems += launch_problems(path, parsed) + ignored_problems(path, parsed) + dependency_problems(path, parsed)
    return problems


def _check_datasets(path: Path, values: dict[str, Any], registry_path: Path | None) -> tuple[list[RecipeProblem], list[RecipeProblem]]:
    """Registration problems, and the datasets not prepared on this machine (problems or warnings: the caller decides)."""
    registry_file, registry, problems = load_recipe_registry(path, values, registry_path)
    if registry is None:
        return problems, []
    return registration_problems(path, values, registry_file, registry), unprepared_problems(path, values, registry)


def _same_value(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(float(actual), float(expected), rel_tol=1e-9)
    if isinstance(expected, str) and "," in expected:
        return split_list(actual) == split_list(expected)
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
    report_to = split_list(values.get("report_to", "none"))
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


@dataclasses.dataclass(frozen=True)
class RecipeReport:
    """A recipe's problems (it must not run as it is) and warnings (facts about this machine, e.g. unprepared data)."""

    problems: list[RecipeProblem]
    warnings: list[RecipeProblem]


def inspect_recipe(path: Path, registry_path: Path | None = None, *, prepared: bool = False) -> RecipeReport:
    """Every problem and warning of one recipe. ``prepared=True`` makes unprepared datasets problems."""
    path = Path(path)
    if not path.is_file():
        return RecipeReport([RecipeProblem(path, None, "no such recipe file.", "check the path (recipes live in recipes/*.yaml).")], [])
    header = read_header(path)
    problems = _check_header(path, header)
    try:
        values = load_recipe(path)
    except Exception as error:  # OmegaConf raises several YAML error types; all mean the same here
        return RecipeReport([*problems, RecipeProblem(path, None, f"not valid YAML: {error}", "correct the line it names.")], [])
    problems += _check_arguments(path, values)
    problems += _check_models(path, values)
    registration, unprepared = _check_datasets(path, values, registry_path)
    problems += registration + (unprepared if prepared else [])
    problems += _check_paper_values(path, path.stem, values)
    problems += _check_policies(path, values)
    problems += _check_version_rule(path, header, values)
    warnings = ([] if prepared else unprepared) + [found for found in [tokenized_cache_problem(path, values)] if found]
    return RecipeReport(problems, warnings)


def check_recipe(path: Path, registry_path: Path | None = None, *, prepared: bool = False) -> list[RecipeProblem]:
    """Every problem of one recipe; an empty list means it is ready to run. Warnings are logged."""
    report = inspect_recipe(path, registry_path, prepared=prepared)
    for warning in report.warnings:
        logger.warning("warning: %s", warning)
    return report.problems


def check_recipes(paths: Iterable[Path], registry_path: Path | None = None, *, prepared: bool = False) -> dict[Path, list[RecipeProblem]]:
    """Problems per recipe, for every recipe given (warnings are logged)."""
    return {Path(path): check_recipe(Path(path), registry_path, prepared=prepared) for path in paths}
