"""`medfactory card saves/<run>`: the run's provenance and a Hugging Face model card.

Reads what LLaMA-Factory leaves in a run folder (``trainer_state.json``, ``all_results.json`` /
``train_results.json`` / ``eval_results.json``, ``trainer_log.jsonl``, ``adapter_config.json``,
the Trainer's own model card with the hyperparameters it parsed; never ``training_args.bin``, a
pickle that is unsafe to load), the recipe that produced it and the manifests of its datasets, and
writes into the run folder:

* ``provenance.json``: recipe (path, version, file sha256, values hash, values), the values the run
  folder shows the run used (``ran``) and those that differ from the recipe file (``overridden``:
  ``key=value`` given after the recipe on the command line), dataset manifests (path + sha256, or
  "not prepared"), package versions, git commit (the checkout's, else the image's build argument),
  training results, adapter config;
* ``README.md``: the model card (YAML front matter through ``huggingface_hub.ModelCardData``);
  LLaMA-Factory's own auto card is kept as ``README.llamafactory.md``.

Both are written atomically. Nothing is uploaded unless ``--push REPO_ID`` is given; the upload
then holds only the adapter, tokenizer, card and provenance files, never ``data/``.
Cards hold numbers only, never note text.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import functools
import hashlib
import json
import math
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from medfactory.base.atomic import atomic_write, sha256_file, write_json_atomic
from medfactory.base.jsonl import read_jsonl
from medfactory.base.tables import markdown_table
from medfactory.base.versions import package_versions
from medfactory.recipes.paper_values import PAPER_SOURCE
from medfactory.recipes.recipe_file import RECIPES_DIR, load_recipe, read_header, values_hash

PROVENANCE_NAME = "provenance.json"
CARD_NAME = "README.md"
LLAMAFACTORY_CARD_NAME = "README.llamafactory.md"
# The overrides a medfactory launcher (the demo, bench) passed after the recipe (write_launch_args).
LAUNCH_ARGS_NAME = "medfactory_launch.json"
CARD_MARKER = "<!-- medfactory card: written by `medfactory card`; LLaMA-Factory's card is README.llamafactory.md -->"
PACKAGES = (
    "medfactory",
    "llamafactory",
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "bitsandbytes",
)
RESULT_FILES = ("all_results.json", "train_results.json", "eval_results.json")

# What `--push` uploads from the run folder: the adapter, the tokenizer, the card and its records.
PUSH_ALLOW_PATTERNS = [
    "adapter_config.json",
    "adapter_model.safetensors",
    "README.md",
    PROVENANCE_NAME,
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "all_results.json",
    "train_results.json",
    "eval_results.json",
    "training_loss.png",
    "training_eval_loss.png",
]
PUSH_IGNORE_PATTERNS = [
    "data/**",
    "**/data/**",
    "checkpoint-*/**",
    "training_args.bin",
    "*.jsonl",
]


class CardError(ValueError):
    """A run folder, recipe or option the card cannot be built from; the message says what to do."""


# --------------------------------------------------------------------------- inputs


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CardError(f"{path}: not valid JSON ({error}).") from error


def find_recipe(run_dir: Path, recipes_dir: Path = RECIPES_DIR) -> Path:
    """The recipe whose ``output_dir`` is ``run_dir``; a CardError naming ``--recipe`` when none (or several) match."""
    run_dir = Path(run_dir)
    target = run_dir.resolve()
    if not recipes_dir.is_dir():
        raise CardError(
            f"{recipes_dir}: no recipes folder here. Run from the repository root or give --recipe recipes/<name>.yaml."
        )
    matches = []
    for path in sorted(recipes_dir.glob("*.yaml")):
        try:
            output_dir = load_recipe(path).get("output_dir")
        except Exception:
            continue
        if output_dir and Path(str(output_dir)).resolve() == target:
            matches.append(path)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CardError(
            f"{run_dir}: no recipe in {recipes_dir}/ has `output_dir: {run_dir}` (runs with an overridden output_dir "
            "cannot be matched). Give the recipe that produced it: --recipe recipes/<name>.yaml."
        )
    raise CardError(
        f"{run_dir}: several recipes write there ({', '.join(map(str, matches))}); choose one with --recipe."
    )


def read_source(path: Path) -> str:
    """The ``# source:`` line of the recipe header with its indented continuation lines, as one paragraph."""
    parts: list[str] = []
    collecting = False
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        match = re.match(r"^#\s*(\w+):\s*(.*)$", line)
        if match and not re.match(r"^#\s{2,}", line):
            collecting = match.group(1) == "source"
            if collecting:
                parts.append(match.group(2).strip())
            continue
        if collecting:
            parts.append(line.lstrip("#").strip())
    return " ".join(part for part in parts if part)


def dataset_manifests(values: dict[str, Any]) -> dict[str, Any]:
    """Per dataset of the recipe: its manifest's path, sha256, counts and output hashes, or "not prepared"."""
    names = [
        name.strip()
        for key in ("dataset", "eval_dataset")
        for name in str(values.get(key) or "").split(",")
        if name.strip()
    ]
    dataset_dir = Path(str(values.get("dataset_dir") or "."))
    registry_path = dataset_dir / "dataset_info.json"
    registry = _read_json(registry_path) if registry_path.is_file() else {}
    result: dict[str, Any] = {}
    for name in dict.fromkeys(names):
        entry = registry.get(name)
        if not isinstance(entry, dict) or not entry.get("file_name"):
            result[name] = {"status": "not registered", "registry": str(registry_path)}
            continue
        manifest_path = (dataset_dir / entry["file_name"]).parent / "manifest.json"
        if not manifest_path.is_file():
            result[name] = {"status": "not prepared", "manifest": str(manifest_path)}
            continue
        manifest = _read_json(manifest_path)
        counts = {
            key: manifest[key]
            for key in ("documents", "characters", "tokens", "estimated_tokens")
            if isinstance(manifest.get(key), int | float)
        }
        # The one manifest schema gives each registered dataset's own record count (an SFT or DPO
        # set has records but no notes to count).
        records = (manifest.get("datasets") or {}).get(name, {}).get("records")
        if isinstance(records, int):
            counts["records"] = records
        outputs = {
            file: info.get("sha256") if isinstance(info, dict) else info
            for file, info in (manifest.get("outputs") or {}).items()
        }
        result[name] = {
            "status": "prepared",
            "manifest": str(manifest_path),
            "sha256": sha256_file(manifest_path),
            "counts": counts,
            "outputs": outputs,
        }
    return result


def package_versions_record() -> dict[str, str | None]:
    return package_versions(PACKAGES, missing=None)


# The commit the Docker image was built from (docker/Dockerfile's GIT_COMMIT build argument): the
# build context has no .git, so a container without the checkout mounted knows its code only by this.
IMAGE_COMMIT_ENV = "MEDFACTORY_GIT_COMMIT"


def _checkout_state(where: Path) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=30, check=False
        )
        if commit.returncode != 0:
            return {"commit": "unknown", "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=where, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {
        "commit": commit.stdout.strip(),
        "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None,
        "source": "git checkout",
    }


def git_state(where: Path | None = None) -> dict[str, Any]:
    """``git rev-parse HEAD`` and whether the tree has uncommitted changes; outside a checkout, the
    commit the Docker image was built from (``$MEDFACTORY_GIT_COMMIT``, dirty unknown); else "unknown"."""
    state = _checkout_state(Path(where or Path.cwd()))
    image_commit = os.environ.get(IMAGE_COMMIT_ENV, "").strip()
    if image_commit and image_commit != "unknown":
        state["image_commit"] = image_commit
        if state["commit"] == "unknown":
            state.update(commit=image_commit, dirty=None, source=f"image build argument (${IMAGE_COMMIT_ENV})")
    return state


def training_results(run_dir: Path) -> dict[str, Any]:
    """Final train loss, eval loss, steps, epochs and runtime from the trainer's own files."""
    merged: dict[str, Any] = {}
    for name in RESULT_FILES:
        path = run_dir / name
        if path.is_file():
            merged.update(_read_json(path))
    state = (
        _read_json(run_dir / "trainer_state.json")
        if (run_dir / "trainer_state.json").is_file()
        else {}
    )
    history = state.get("log_history") or []
    logged_losses = [entry["loss"] for entry in history if "loss" in entry]
    eval_losses = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
    summary = next((entry for entry in reversed(history) if "train_loss" in entry), {})
    if not logged_losses and (run_dir / "trainer_log.jsonl").is_file():
        logged_losses = [record["loss"] for record in read_jsonl(run_dir / "trainer_log.jsonl") if record.get("loss") is not None]
    results = {
        "train_loss": merged.get("train_loss", summary.get("train_loss")),
        "final_logged_train_loss": logged_losses[-1] if logged_losses else None,
        "eval_loss": merged.get("eval_loss", eval_losses[-1] if eval_losses else None),
        "global_step": state.get("global_step", summary.get("step")),
        "max_steps": state.get("max_steps"),
        "epoch": merged.get("epoch", state.get("epoch")),
        "train_runtime_s": merged.get("train_runtime", summary.get("train_runtime")),
        "eval_perplexity": merged.get("perplexity"),
    }
    return {key: value for key, value in results.items() if value is not None}


def adapter_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "adapter_config.json"
    if not path.is_file():
        return None
    config = _read_json(path)
    keys = (
        "base_model_name_or_path",
        "peft_type",
        "task_type",
        "r",
        "lora_alpha",
        "lora_dropout",
        "target_modules",
        "bias",
        "modules_to_save",
    )
    picked = {key: config.get(key) for key in keys if key in config}
    if isinstance(picked.get("target_modules"), list):
        picked["target_modules"] = sorted(picked["target_modules"])
    return picked


def read_reports(report_dirs: list[Path]) -> list[dict[str, Any]]:
    """Evaluation results under the given folders: MCQA ``metrics.json``, BERTScore ``summary.csv``,
    Likert ``table1_summary.csv`` (means only)."""
    found: list[dict[str, Any]] = []
    for report_dir in report_dirs:
        report_dir = Path(report_dir)
        if not report_dir.is_dir():
            raise CardError(f"--reports {report_dir}: no such folder.")
        for path in sorted(report_dir.rglob("metrics.json")):
            metrics = _read_json(path)
            if "accuracy" in metrics:
                row = {"kind": "mcqa", "source": str(path)}
                row.update(
                    {
                        key: metrics[key]
                        for key in ("n", "accuracy", "macro_f1")
                        if key in metrics
                    }
                )
                found.append(row)
        for file_name, kind, columns in _CSV_REPORTS:
            for path in sorted(report_dir.rglob(file_name)):
                rows = _read_csv(path)
                if rows and set(columns) <= set(rows[0]):
                    table = [(*(r[column] for column in columns), r.get("n", "")) for r in rows]
                    found.append({"kind": kind, "source": str(path), "rows": table})
    return found


# Report tables a card quotes: file name, kind, the columns each row shows (then n).
_CSV_REPORTS = (
    ("summary.csv", "bertscore", ("scenario", "metric", "mean")),
    ("table1_summary.csv", "likert", ("model", "criterion", "mean")),
)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- what ran
#
# `llamafactory-cli train recipe.yaml key=value ...` merges the overrides into the recipe before
# parsing (llamafactory/hparams/parser.py `read_args`), so the recipe file alone does not say what
# ran. The run folder does, in part: the Trainer's model card lists the TrainingArguments it ran
# with (transformers/modelcard.py `extract_hyperparameters_from_trainer`), adapter_config.json the
# LoRA values, trainer_state.json the batch size, the step intervals and the epochs trained.

TRAINER_CARD = "the Trainer's model card"
# transformers' "Training hyperparameters" names -> the argument each one is.
_TRAINER_CARD_KEYS = {
    "learning_rate": "learning_rate",
    "train_batch_size": "per_device_train_batch_size",
    "eval_batch_size": "per_device_eval_batch_size",
    "seed": "seed",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "lr_scheduler_type": "lr_scheduler_type",
    "lr_scheduler_warmup_steps": "warmup_steps",
    "training_steps": "max_steps",
    "num_epochs": "num_train_epochs",
    "label_smoothing_factor": "label_smoothing_factor",
}
# The card leaves these out when they have this value (max_steps: an epoch-based run).
_TRAINER_CARD_OMITTED = {"gradient_accumulation_steps": 1, "warmup_steps": 0, "label_smoothing_factor": 0.0, "max_steps": -1}
_ADAPTER_KEYS = {
    "base_model_name_or_path": "model_name_or_path",
    "r": "lora_rank",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "target_modules": "lora_target",
}
# A recipe may give a value under its older name (transformers 5 reads warmup_ratio as warmup_steps).
_ALIASES = {"warmup_steps": "warmup_ratio"}
_OPTIMIZER = re.compile(r"^Use (?:OptimizerNames\.)?(\S+?)(?: with betas=\(([^,]+),([^)]+)\) and epsilon=(\S+))?(?: and|$)")
_DATASETS = re.compile(r"^This model is a fine-tuned version of \[(.+?)\]\(.*?\) on (the .+?) datasets?\.$", re.MULTILINE)


def _scalar(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def trainer_card_hyperparameters(run_dir: Path) -> dict[str, Any]:
    """The "Training hyperparameters" list of the Trainer's model card (README.md before `card`
    runs, README.llamafactory.md after), plus its base model and datasets; {} when there is none."""
    text = ""
    for name in (LLAMAFACTORY_CARD_NAME, CARD_NAME):
        path = Path(run_dir) / name
        if path.is_file() and CARD_MARKER not in (candidate := path.read_text(encoding="utf-8")):
            text = candidate
            break
    section = re.search(r"^### Training hyperparameters\n(.*?)(?=^#|\Z)", text, re.MULTILINE | re.DOTALL)
    if section is None:
        return {}
    found = dict(re.findall(r"^- ([\w ]+?): (.*)$", section.group(1), re.MULTILINE))
    described = _DATASETS.search(text)
    if described:
        found["finetuned_from"] = described.group(1)
        found["datasets"] = re.split(r", the | and the ", described.group(2).removeprefix("the "))
    return found


def _from_trainer_card(found: dict[str, Any]) -> dict[str, Any]:
    ran: dict[str, Any] = {key: _scalar(found[name]) for name, key in _TRAINER_CARD_KEYS.items() if name in found}
    for key, value in _TRAINER_CARD_OMITTED.items():
        ran.setdefault(key, value)
    if ran["max_steps"] != -1:
        ran.pop("num_train_epochs", None)  # max_steps decides; the card leaves num_train_epochs out
    ran["fp16"] = found.get("mixed_precision_training") == "Native AMP"
    optimizer = _OPTIMIZER.match(found.get("optimizer", ""))
    if optimizer:
        ran["optim"] = optimizer.group(1).lower()
        if optimizer.group(2):
            ran.update(adam_beta1=_scalar(optimizer.group(2)), adam_beta2=_scalar(optimizer.group(3)), adam_epsilon=_scalar(optimizer.group(4)))
    if "finetuned_from" in found:
        ran["model_name_or_path"] = found["finetuned_from"]
        ran["dataset"] = ",".join(found["datasets"])
    return ran


def _epochs_trained(state: dict[str, Any], values: dict[str, Any]) -> float | None:
    """The epochs a finished epoch-based run trained; the recipe's value when within one step of it."""
    step, last, epoch = state.get("global_step"), state.get("max_steps"), state.get("epoch")
    if not all(isinstance(x, int | float) for x in (step, last, epoch)) or not 0 < last <= step or epoch <= 0:
        return None
    if (values.get("max_steps") or -1) > 0:
        return None
    planned = values["num_train_epochs"] if "num_train_epochs" in values else library_default("num_train_epochs")
    if isinstance(planned, int | float) and abs(epoch - planned) <= epoch / step + 1e-9:
        return planned
    return round(epoch, 4)


def _from_trainer_state(state: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    ran: dict[str, Any] = {}
    if isinstance(state.get("train_batch_size"), int):
        ran["per_device_train_batch_size"] = state["train_batch_size"]
    # The state holds these as steps (a ratio below 1 becomes a step count), so only a recipe's
    # step count can be compared with them.
    for key in ("logging_steps", "eval_steps", "save_steps"):
        if isinstance(values.get(key), int | float) and values[key] >= 1 and isinstance(state.get(key), int):
            ran[key] = state[key]
    epochs = _epochs_trained(state, values)
    if epochs is not None:
        ran["num_train_epochs"] = epochs
    return ran


def write_launch_args(output_dir: Path, recipe: Path, overrides: dict[str, Any]) -> Path:
    """Record in ``output_dir`` the ``key=value`` overrides a medfactory launcher passes after the
    recipe (LLaMA-Factory itself saves its arguments only as a pickle), for `medfactory card`."""
    path = Path(output_dir) / LAUNCH_ARGS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"recipe": str(recipe), "overrides": {key: _plain(value) for key, value in overrides.items()}})
    return path


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None) | list | dict) else str(value)


def _launch_overrides(run_dir: Path) -> dict[str, Any]:
    path = run_dir / LAUNCH_ARGS_NAME
    if not path.is_file():
        return {}
    overrides = _read_json(path).get("overrides")
    if not isinstance(overrides, dict):
        raise CardError(f"{path}: no `overrides` mapping; delete the file or write it with write_launch_args.")
    return overrides


def run_values(run_dir: Path, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{argument: {"value", "from"}} for what the run folder shows the run used; later sources win:
    medfactory's launch record, trainer_state.json, the Trainer's model card, adapter_config.json."""
    run_dir = Path(run_dir)
    state_path, adapter_path = run_dir / "trainer_state.json", run_dir / "adapter_config.json"
    sources = [
        (LAUNCH_ARGS_NAME, _launch_overrides(run_dir)),
        ("trainer_state.json", _from_trainer_state(_read_json(state_path), values) if state_path.is_file() else {}),
        (f"{TRAINER_CARD} ({LLAMAFACTORY_CARD_NAME})", _from_trainer_card(found) if (found := trainer_card_hyperparameters(run_dir)) else {}),
    ]
    if adapter_path.is_file():
        adapter = _read_json(adapter_path)
        sources.append(("adapter_config.json", {key: adapter[name] for name, key in _ADAPTER_KEYS.items() if adapter.get(name) is not None}))
    ran = {key: {"value": value, "from": where} for where, found_values in sources for key, value in found_values.items()}
    if (ran.get("max_steps", {}).get("value") or -1) > 0 and ran.get("num_train_epochs", {}).get("from") == "trainer_state.json":
        del ran["num_train_epochs"]  # max_steps stopped the run: its epochs trained are not the argument
    return ran


@functools.cache
def _library_defaults() -> dict[str, Any]:
    """LLaMA-Factory's and transformers' defaults of the training arguments (what an unset key means)."""
    import dataclasses

    from llamafactory.hparams import DataArguments, FinetuningArguments, ModelArguments, TrainingArguments

    defaults = {}
    for cls in (ModelArguments, DataArguments, TrainingArguments, FinetuningArguments):
        for field in dataclasses.fields(cls):
            if field.default is not dataclasses.MISSING and field.default is not None:
                defaults[field.name] = field.default.value if isinstance(field.default, enum.Enum) else field.default
    return defaults


def library_default(key: str) -> Any:
    """The default a recipe gets for ``key`` when it does not set it; None when there is no fixed one."""
    return _library_defaults().get(key)


def _names(value: Any) -> list[str]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def same_value(key: str, expected: Any, ran: Any) -> bool:
    """Whether a run's value is the recipe's (numbers within rounding, names in any order for LoRA targets)."""
    if key == "lora_target":
        # "all" is expanded to the model's modules, a regex is not a list: neither can be compared.
        return "all" in _names(expected) or not isinstance(ran, list) or set(_names(expected)) == set(_names(ran))
    if key == "dataset":
        return _names(expected) == _names(ran)
    if isinstance(expected, bool) or isinstance(ran, bool):
        return bool(expected) == bool(ran)
    if isinstance(expected, int | float) and isinstance(ran, int | float):
        return math.isclose(expected, ran, rel_tol=1e-6, abs_tol=1e-12)
    return str(expected) == str(ran)


def overridden_values(values: dict[str, Any], ran: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{argument: {"recipe", "ran", "from"}} where the run used another value than the recipe file
    gives (its own value, else LLaMA-Factory's / transformers' default, recorded as "default")."""
    overridden: dict[str, dict[str, Any]] = {}
    for key, entry in ran.items():
        given = next((name for name in (key, _ALIASES.get(key)) if name in values), None)
        expected = values[given] if given else library_default(key)
        if expected is None or same_value(key, expected, entry["value"]):
            continue
        overridden[key] = {"recipe": values[given] if given else None, "ran": entry["value"], "from": entry["from"]}
        if not given:
            overridden[key]["default"] = expected
    return overridden


def value_tags(recipe: Path) -> dict[str, list[str]]:
    """{key: [tag, ...]}: the ``[paper]``, ``[report]``, ``[qlora]``, ``[ours]`` ... tags of each
    top-level key's line comment in the recipe file, in the order written."""
    tags: dict[str, list[str]] = {}
    for line in Path(recipe).read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z_]\w*)\s*:.*?\s#(.*)$", line)
        if match:
            tags[match.group(1)] = re.findall(r"\[([a-z][a-z0-9_-]*)\]", match.group(2))
    return tags


def used_values(provenance: dict[str, Any]) -> dict[str, Any]:
    """The recipe's values with the run's overrides in place: what the card shows."""
    values = dict(provenance["recipe"]["values"])
    values.update({key: entry["ran"] for key, entry in provenance.get("overridden", {}).items()})
    return values


# --------------------------------------------------------------------------- provenance


def build_provenance(run_dir: Path, recipe: Path) -> dict[str, Any]:
    header = read_header(recipe)
    values = load_recipe(recipe)
    ran = run_values(run_dir, values)
    overridden = overridden_values(values, ran)
    provenance = {
        "run_dir": str(run_dir),
        "recipe": {
            "path": str(recipe),
            "name": recipe.stem,
            "version": header.get("version", "unknown"),
            "source": read_source(recipe),
            "sha256": hashlib.sha256(recipe.read_bytes()).hexdigest(),
            "values_hash": values_hash(values),
            "values": values,
            "tags": value_tags(recipe),
        },
        "ran": ran,
        "overridden": overridden,
    }
    provenance.update(
        datasets=dataset_manifests(used_values(provenance)),
        packages=package_versions_record(),
        git=git_state(),
        training=training_results(run_dir),
        adapter_config=adapter_config(run_dir),
        created_utc=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    )
    return provenance


# --------------------------------------------------------------------------- the card


def languages_for(recipe_name: str) -> list[str]:
    if recipe_name.startswith("spanish_medical_"):
        return ["es"]
    if recipe_name.startswith("mimic_cxr_translate"):
        return ["pt", "en"]
    if recipe_name.startswith(("clinical_br_", "medgemma_cxr_ptbr_", "mimic_")):
        return ["pt"]
    raise CardError(
        f"{recipe_name}: unknown recipe family; cannot tell the card's language (clinical_br_*, medgemma_cxr_ptbr_*, mimic_*, spanish_medical_*)."
    )


def base_licence_note(base_model: str) -> str:
    lowered = base_model.lower()
    if "llama-2" in lowered:
        return "the LLaMA 2 Community License of the base model applies"
    if "medgemma" in lowered or "gemma" in lowered:
        return "the base model's terms apply (Gemma terms of use / Health AI Developer Foundations terms for MedGemma)"
    if "mistral" in lowered:
        return "the base model is Apache-2.0; its licence applies to the base weights"
    return "the base model's licence applies"


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "—" if value is None else str(value)


def _precision(values: dict[str, Any]) -> str:
    parts = [key for key in ("pure_bf16", "bf16", "fp16") if values.get(key)]
    text = parts[0] if parts else "fp32"
    if values.get("quantization_bit"):
        text += f", {values['quantization_bit']}-bit base ({values.get('quantization_method', 'bnb')} {values.get('quantization_type', 'nf4')})"
    return text


# (label, the arguments the row shows); the first one's value is the row's setting.
_VALUE_ROWS = (
    ("base model", ("model_name_or_path",)),
    ("stage", ("stage",)),
    ("fine-tuning", ("finetuning_type",)),
    ("LoRA r", ("lora_rank",)),
    ("LoRA alpha", ("lora_alpha",)),
    ("LoRA dropout", ("lora_dropout",)),
    ("LoRA targets", ("lora_target",)),
    ("learning rate", ("learning_rate",)),
    ("epochs", ("num_train_epochs",)),
    ("max steps", ("max_steps",)),
    ("context (cutoff_len)", ("cutoff_len",)),
    ("optimizer", ("optim",)),
    ("scheduler", ("lr_scheduler_type",)),
    ("warm-up", ("warmup_steps",)),
)
_PRECISION_KEYS = ("pure_bf16", "bf16", "fp16", "quantization_bit", "quantization_method", "quantization_type")


def value_origin(keys: tuple[str, ...], tags: dict[str, list[str]], overridden: dict[str, Any]) -> str:
    """"override" when the run differed from the recipe in any of ``keys``; else the recipe's tags of
    those keys ("paper", "qlora", "paper + ours", ...), or "recipe" for a value without a tag."""
    if any(key in overridden for key in keys):
        return "override"
    found = [tag for key in keys for tag in tags.get(key, [])]
    return " + ".join(dict.fromkeys(found)) or "recipe"


def training_value_rows(
    values: dict[str, Any], tags: dict[str, list[str]], overridden: dict[str, Any] | None = None
) -> list[tuple[str, str, str]]:
    """(label, value, from) rows of the values the run used (``used_values``), each tagged by its source."""
    overridden = overridden or {}
    rows = []
    for label, keys in _VALUE_ROWS:
        if keys[0] not in values or (keys[0] == "max_steps" and (values["max_steps"] or -1) <= 0):
            continue
        rows.append((label, _fmt(values[keys[0]]), value_origin(keys, tags, overridden)))
    if (values.get("max_steps") or -1) > 0 and "num_train_epochs" in values:
        rows = [
            (label, f"{value} (max_steps decides)", origin) if label == "epochs" else (label, value, origin)
            for label, value, origin in rows
        ]
    precision = tuple(key for key in _PRECISION_KEYS if values.get(key) or key in overridden)
    rows.append(("precision", _precision(values), value_origin(precision, tags, overridden)))
    if "per_device_train_batch_size" in values:
        batch = f"{values['per_device_train_batch_size']} × {values.get('gradient_accumulation_steps', 1)}"
        keys = ("per_device_train_batch_size", "gradient_accumulation_steps")
        rows.append(("batch × accumulation", batch, value_origin(keys, tags, overridden)))
    return rows


def _limitations(name: str) -> list[str]:
    if name.startswith("clinical_br_"):
        return [
            (
                "Trained on de-identified clinical notes from Brazilian hospitals (SemClinBr, BRATECA, Lopes et al. 2019); "
                "notes from other regions, specialties or record systems may differ."
            ),
            "The paper evaluated generation with a small Likert study of 100 held-out notes; this is not a broad clinical validation.",
            (
                "Repetition loops seen in the paper's error analysis were mitigated by decoding (temperature 0.1, "
                "repetition penalty 1.2), not removed from the model."
            ),
            "It may produce plausible but false clinical content.",
        ]
    if name.startswith(("medgemma_cxr_ptbr_", "mimic_")):
        return [
            "The pt-BR reference reports are machine-translated (MedGemma) from MIMIC-CXR, not written by Brazilian radiologists.",
            (
                "The MIMIC data use agreement forbids sharing derived data that could re-identify patients: do not publish "
                "generations on MIMIC images or anything derived from the restricted data with this model."
            ),
            "It may produce plausible but false findings.",
        ]
    if name.startswith("spanish_medical_"):
        return [
            "Performance on HEAD-QA exam questions is not clinical competence.",
            "It may produce plausible but false medical content.",
        ]
    return ["It may produce plausible but false medical content."]


def _table(header: list[str], rows: list[tuple[Any, ...]]) -> str:
    return markdown_table(header, [[_fmt(cell) for cell in row] for row in rows])


def _description_section(provenance: dict[str, Any], base: str, langs: str) -> list[str]:
    recipe = provenance["recipe"]
    name = recipe["name"]
    kind = "A LoRA adapter" if provenance.get("adapter_config") else "A model"
    out = ["## Model description", ""]
    out.append(
        f"{kind} for `{base}` ({langs}), trained with LLaMA-Factory from the medfactory recipe "
        f"`{name}` version {recipe['version']}."
    )
    if recipe.get("source"):
        out += ["", f"Source: {recipe['source']}"]
    paper = f" (*paper*: {PAPER_SOURCE[name]})" if name in PAPER_SOURCE else ""
    out += [
        "",
        (
            f"In *from*, each value carries the tag its line in the recipe gives it{paper}, *recipe* where the line has "
            "none, and *override* where the run used another value than the recipe file (a `key=value` after the "
            f"recipe on the command line; both values are under `overridden` in `{PROVENANCE_NAME}`)."
        ),
    ]
    return out


def _overrides_note(provenance: dict[str, Any]) -> list[str]:
    overridden = provenance.get("overridden", {})
    if not overridden:
        return []
    said = [
        f"`{key}` {_fmt(entry['recipe']) if entry['recipe'] is not None else 'unset (default ' + _fmt(entry.get('default')) + ')'} "
        f"in the recipe, {_fmt(entry['ran'])} in the run ({entry['from']})"
        for key, entry in overridden.items()
    ]
    return ["", "Overridden: " + "; ".join(said) + "."]


def _row_keys(values: dict[str, Any], overridden: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """{row label: the arguments it shows} for the rows ``training_value_rows`` writes."""
    keys = {label: row_keys for label, row_keys in _VALUE_ROWS}
    keys["precision"] = tuple(key for key in _PRECISION_KEYS if values.get(key) or key in overridden)
    keys["batch × accumulation"] = ("per_device_train_batch_size", "gradient_accumulation_steps")
    return keys


def _unrecorded_note(provenance: dict[str, Any], rows: list[tuple[str, str, str]]) -> list[str]:
    """Which rows the run folder could not confirm: those are the recipe's values, as written."""
    ran = provenance.get("ran", {})
    keys = _row_keys(used_values(provenance), provenance.get("overridden", {}))
    unrecorded = [label for label, _, _ in rows if any(key not in ran for key in keys.get(label, ()))]
    sources = sorted({entry["from"] for entry in ran.values()})
    checked = f"checked against {', '.join(sources)}" if sources else "no file of the run folder records its arguments"
    if not unrecorded:
        return ["", f"Every value above is the run's ({checked})."]
    return [
        "",
        (
            f"The run folder does not record {', '.join(unrecorded)}: those are the recipe's values, and a `key=value` "
            f"given for them on the command line is not seen here. The others are {checked}."
        ),
    ]


def _training_values_section(provenance: dict[str, Any], adapter: dict[str, Any] | None) -> list[str]:
    rows = training_value_rows(used_values(provenance), provenance["recipe"].get("tags", {}), provenance.get("overridden"))
    out = ["## Training values", "", _table(["value", "setting", "from"], rows)]
    out += _overrides_note(provenance) + _unrecorded_note(provenance, rows)
    if adapter:
        out += [
            "",
            (
                f"Adapter as saved: r {adapter.get('r')}, alpha {adapter.get('lora_alpha')}, dropout {adapter.get('lora_dropout')}, "
                f"targets {_fmt(adapter.get('target_modules'))}."
            ),
        ]
    return out


def _training_data_section(datasets: dict[str, Any]) -> list[str]:
    rows = []
    for dataset, info in datasets.items():
        counts = info.get("counts", {})
        tokens = counts.get("tokens", counts.get("estimated_tokens"))
        rows.append((dataset, info["status"], counts.get("records"), counts.get("documents"), counts.get("characters"), tokens))
    out = ["## Training data", ""]
    out.append(_table(["dataset", "status", "records", "documents", "characters", "tokens"], rows) if rows else "No dataset named in the recipe.")
    if any(
        info.get("counts", {}).get("estimated_tokens") is not None and "tokens" not in info.get("counts", {})
        for info in datasets.values()
    ):
        out += ["", "Token counts are estimates (characters / 4) from the corpus manifests."]
    return out


def _report_table(report: dict[str, Any]) -> str:
    if report["kind"] == "mcqa":
        return _table(["n", "accuracy", "macro-F1"], [(report.get("n"), report.get("accuracy"), report.get("macro_f1"))])
    if report["kind"] == "bertscore":
        return _table(["scenario", "metric", "mean", "n"], report["rows"])
    return _table(["model", "criterion", "mean (Likert)", "n"], report["rows"])


def _evaluation_section(training: dict[str, Any], reports: list[dict[str, Any]]) -> list[str]:
    keys = ("train_loss", "final_logged_train_loss", "eval_loss", "global_step", "epoch", "train_runtime_s")
    run_rows = [(key, training[key]) for key in keys if key in training]
    out = ["## Evaluation", ""]
    out.append(_table(["run", "value"], run_rows) if run_rows else "No trainer results in the run folder.")
    for report in reports:
        out += ["", f"From `{report['source']}` ({report['kind']}):", "", _report_table(report)]
    return out


def _use_and_limitations_sections(name: str, langs: str) -> list[str]:
    out = [
        "## Intended use",
        "",
        (
            f"Research on clinical natural-language processing in {langs}. Not for clinical decisions, diagnosis or "
            "treatment, and not for use on patients without independent validation and human review."
        ),
    ]
    return out + ["", "## Limitations", ""] + [f"- {item}" for item in _limitations(name)]


def _commit_source(git: dict[str, Any]) -> str:
    if git.get("source", "").startswith("image"):
        return " (the Docker image's build argument; the container has no git checkout)"
    if git.get("image_commit") and git["image_commit"] != git["commit"]:
        return f" (the image was built from `{git['image_commit']}`)"
    return ""


def _provenance_section(provenance: dict[str, Any]) -> list[str]:
    recipe, git = provenance["recipe"], provenance["git"]
    dirty = {True: " (uncommitted changes)", False: "", None: ""}[git.get("dirty")]
    out = [
        "## Provenance",
        "",
        f"- recipe: `{recipe['path']}` version {recipe['version']}, sha256 `{recipe['sha256']}`, values hash `{recipe['values_hash']}`",
        f"- medfactory git commit: `{git['commit']}`{dirty}{_commit_source(git)}",
    ]
    for dataset, info in provenance["datasets"].items():
        detail = f"manifest sha256 `{info['sha256']}`" if info["status"] == "prepared" else info["status"]
        out.append(f"- {dataset}: {detail}")
    out.append(f"- full record: `{PROVENANCE_NAME}` in this folder")
    return out


def build_card_body(provenance: dict[str, Any], reports: list[dict[str, Any]], license_note: str) -> str:
    """The model card's markdown below its YAML front matter: one section after the other."""
    name, values = provenance["recipe"]["name"], used_values(provenance)
    adapter = provenance.get("adapter_config")
    base = (adapter or {}).get("base_model_name_or_path") or values.get("model_name_or_path", "unknown")
    language = {"pt": "Brazilian Portuguese", "es": "Spanish", "en": "English"}
    langs = " / ".join(language.get(code, code) for code in languages_for(name))
    sections = [
        _description_section(provenance, base, langs),
        _training_values_section(provenance, adapter),
        _training_data_section(provenance["datasets"]),
        _evaluation_section(provenance["training"], reports),
        _use_and_limitations_sections(name, langs),
        _provenance_section(provenance),
        ["## License", "", license_note],
    ]
    out = [CARD_MARKER, "", f"# {Path(provenance['run_dir']).name}"]
    for section in sections:
        out += ["", *section]
    return "\n".join([*out, ""])


def build_model_card(
    provenance: dict[str, Any], reports: list[dict[str, Any]], license: str = "other"
):
    from huggingface_hub import ModelCard, ModelCardData

    name, values = provenance["recipe"]["name"], used_values(provenance)
    adapter = provenance.get("adapter_config")
    base = (adapter or {}).get("base_model_name_or_path") or values.get("model_name_or_path")
    languages = languages_for(name)
    datasets = list(
        dict.fromkeys(
            n.strip() for n in str(values.get("dataset") or "").split(",") if n.strip()
        )
    )
    tags = ["medfactory", "llama-factory"]
    if adapter or values.get("finetuning_type") == "lora":
        tags.append("lora")
    tags += ["medical", "clinical", *languages]
    base_note = base_licence_note(str(base or ""))
    extra: dict[str, Any] = {}
    if license == "other":
        extra = {"license_name": "base-model-license"}
        license_note = (
            f"`other`: {base_note}; the adapter weights follow the same terms."
        )
    else:
        license_note = f"`{license}` for this repository's files; {base_note}."
    data = ModelCardData(
        base_model=base,
        language=languages,
        license=license,
        library_name="peft" if adapter else "transformers",
        tags=tags,
        datasets=datasets or None,
        **extra,
    )
    body = build_card_body(provenance, reports, license_note)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


# --------------------------------------------------------------------------- the command's work


def write_card(
    run_dir: Path,
    recipe: Path | None = None,
    reports: list[Path] | None = None,
    license: str = "other",
) -> list[Path]:
    """Write ``provenance.json`` and ``README.md`` (keeping LLaMA-Factory's card); return the paths written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CardError(
            f"{run_dir}: no such run folder (LLaMA-Factory writes runs under saves/<run>/)."
        )
    if not any(
        (run_dir / name).is_file()
        for name in ("trainer_state.json", "adapter_config.json", *RESULT_FILES)
    ):
        raise CardError(
            f"{run_dir}: no trainer_state.json, results or adapter_config.json; is this a finished LLaMA-Factory run?"
        )
    recipe = Path(recipe) if recipe is not None else find_recipe(run_dir)
    if not recipe.is_file():
        raise CardError(f"--recipe {recipe}: no such recipe file.")
    provenance = build_provenance(run_dir, recipe)
    found_reports = read_reports(list(reports or []))
    card = build_model_card(provenance, found_reports, license)

    written: list[Path] = []
    own_card = run_dir / CARD_NAME
    if own_card.is_file() and CARD_MARKER not in own_card.read_text(encoding="utf-8"):
        kept = run_dir / LLAMAFACTORY_CARD_NAME
        with atomic_write(kept) as handle:
            handle.write(own_card.read_text(encoding="utf-8"))
        written.append(kept)
    provenance["llamafactory_card"] = (
        LLAMAFACTORY_CARD_NAME if (run_dir / LLAMAFACTORY_CARD_NAME).is_file() else None
    )
    write_json_atomic(run_dir / PROVENANCE_NAME, provenance)
    written.append(run_dir / PROVENANCE_NAME)
    with atomic_write(own_card) as handle:
        handle.write(card.content)
    written.append(own_card)
    return written


def push_card(
    run_dir: Path, repo_id: str, token: str | None = None, private: bool = True
) -> Any:
    """Upload the adapter, tokenizer, card and provenance of ``run_dir`` to ``repo_id`` (never ``data/``)."""
    from huggingface_hub import HfApi

    run_dir = Path(run_dir)
    if not (run_dir / CARD_NAME).is_file() or not (run_dir / PROVENANCE_NAME).is_file():
        raise CardError(
            f"{run_dir}: write the card first (`medfactory card {run_dir}`)."
        )
    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=run_dir,
        repo_type="model",
        allow_patterns=PUSH_ALLOW_PATTERNS,
        ignore_patterns=PUSH_IGNORE_PATTERNS,
        commit_message=f"medfactory card: {run_dir.name}",
    )
