"""Completions for the Likert study: excerpts of held-out notes, continued by each model.

The excerpt rule (documented in the study manifest): the first ``sentences`` sentences of the
note, where a sentence ends at ``.``, ``!`` or ``?`` followed by whitespace, or at a line break
(clinical notes are often one finding per line); never more than ``max_fraction`` of the note,
so that something is left to complete. The rest of the note is the reference continuation.

The excerpts become a LLaMA-Factory prediction set (alpaca format, registered as
``clinical_br_likert_prompts``) and every model in the list runs
``llamafactory-cli train recipes/clinical_br_complete.yaml`` with its own model path and adapter.
``generated_predictions.jsonl`` has no item id, so the note id of every row is written beside the
prediction set, in order, and each completion is joined back to its note through it (with a check
that every prediction's prompt ends with its excerpt).
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from medfactory.base.atomic import atomic_write, write_json_atomic
from medfactory.base.jsonl import iter_jsonl, read_jsonl, write_jsonl
from medfactory.base.names import confined_path, safe_component
from medfactory.base.overrides import to_cli_arguments
from medfactory.base.registry import REGISTRY_NAME, register_datasets
from medfactory.eval.likert import COMPLETIONS_FILE
from medfactory.run.launch import environment_with_venv_path, llamafactory_cli

COMPLETE_RECIPE = Path("recipes/clinical_br_complete.yaml")
PROMPTS_DATASET = "clinical_br_likert_prompts"
PROMPTS_FILE = Path("data/likert/prompts.jsonl")
PROMPT_IDS_FILE = Path("data/likert/prompts_ids.json")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class ExcerptRule:
    sentences: int = 3
    max_fraction: float = 0.5

    def describe(self) -> str:
        return (
            f"first {self.sentences} sentences (ending at . ! ? + whitespace, or a line break), "
            f"at most {self.max_fraction:.0%} of the note's characters"
        )


def cut_excerpt(text: str, rule: ExcerptRule = ExcerptRule()) -> tuple[str, str]:
    """(excerpt, reference continuation) of a note by ``rule``; both non-empty for a usable note."""
    boundaries = [match.end() for match in _SENTENCE_END.finditer(text)]
    limit = int(len(text) * rule.max_fraction)
    eligible = [end for end in boundaries[: rule.sentences] if end <= limit]
    cut = eligible[-1] if eligible else (boundaries[0] if boundaries and boundaries[0] <= limit else limit)
    excerpt = text[:cut].rstrip()
    # The continuation keeps its leading whitespace: a line break after the excerpt is part of the style.
    return excerpt, text[len(excerpt):]


@dataclass
class ModelSpec:
    """One model of the study: a name for the report, the weights, an optional LoRA adapter.

    With ``endpoint`` the completions come from that served engine (vLLM, ``llamafactory-cli api``) instead
    of a predict run; ``served_model`` is the name it serves the model under (default: ``name``).
    """

    name: str
    model_name_or_path: str
    adapter_name_or_path: str | None = None
    template: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    endpoint: str | None = None
    served_model: str | None = None


MODEL_NAME_FIX = "Fix: a model name is shown in the report and names its run folder runs/<name>/: use letters, digits, ., - and _."


def _read_models_document(path: Path) -> Any:
    """The parsed YAML of a models file; ValueError naming the file (and line) when it cannot be read."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError as error:
        raise ValueError(f"{path}: no such models file.") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the models file ({type(error).__name__}).") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', None) or type(error).__name__}).") from error


def _model_spec(entry: Any, where: str) -> ModelSpec:
    """One entry of the models list, its name checked to be one folder name."""
    keys = "Keys: name, model_name_or_path, adapter_name_or_path, template, overrides, endpoint, served_model."
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping {{name, model_name_or_path, ...}}, got {type(entry).__name__}. {keys}")
    try:
        model = ModelSpec(**entry)
    except TypeError as error:
        raise ValueError(f"{where}: {error}. {keys}") from error
    for field_name in ("name", "model_name_or_path"):
        if not isinstance(getattr(model, field_name), str):
            raise ValueError(f"{where}: `{field_name}` must be text (quote it in YAML).")
    for field_name in ("adapter_name_or_path", "template", "endpoint", "served_model"):
        if getattr(model, field_name) is not None and not isinstance(getattr(model, field_name), str):
            raise ValueError(f"{where}: `{field_name}` must be text (quote it in YAML).")
    if not isinstance(model.overrides, dict):
        raise ValueError(f"{where}: `overrides` must be a mapping of llamafactory-cli keys to values.")
    if model.endpoint and model.overrides:
        raise ValueError(f"{where}: `overrides` are llamafactory-cli values and a served model (`endpoint`) runs none; set them on the server.")
    # The name is the user's own configuration, so the message may show it.
    safe_component(model.name, "model name", where=where, fix=MODEL_NAME_FIX)
    return model


def load_models(path: Path) -> list[ModelSpec]:
    """Models from a YAML file: ``models: [{name, model_name_or_path, adapter_name_or_path?, template?}]``."""
    document = _read_models_document(path)
    entries = document.get("models") if isinstance(document, dict) else None
    if not entries or not isinstance(entries, list):
        raise ValueError(f"{path}: expected `models:` with a list of {{name, model_name_or_path, adapter_name_or_path}}.")
    models = [_model_spec(entry, f"{path}: model {index}") for index, entry in enumerate(entries, start=1)]
    names = [model.name for model in models]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: model names must be unique, got {names}.")
    # Names equal up to case or Unicode form share a run folder on macOS / Windows file systems.
    folded: dict[str, str] = {}
    for name in names:
        other = folded.setdefault(unicodedata.normalize("NFKC", name).casefold(), name)
        if other != name:
            raise ValueError(f"{path}: model names {other!r} and {name!r} differ only in case or Unicode form; they would share runs/{other}/.")
    return models


def read_heldout(path: Path) -> list[dict[str, str]]:
    """Held-out notes as prepared by a corpus plugin (``likert_heldout.jsonl``: text and id)."""
    notes = []
    for number, record in iter_jsonl(path):
        if not isinstance(record.get("text"), str):
            raise ValueError(f"{path}, line {number}: not a prepared note; expected {{\"text\", \"id\"}}.")
        notes.append({"id": str(record.get("id") or f"{Path(path).name}:{number}"), "text": record["text"]})
    if not notes:
        raise ValueError(f"{path}: no notes. Prepare the corpus first (medfactory prepare ... --likert-notes 100).")
    return notes


def write_prediction_set(notes: list[dict[str, str]], root: Path, rule: ExcerptRule) -> list[dict[str, str]]:
    """Write the prompts and their row order; return the items (note_id, excerpt, reference)."""
    items = []
    for note in notes:
        excerpt, reference = cut_excerpt(note["text"], rule)
        if excerpt and reference.strip():
            items.append({"note_id": note["id"], "excerpt": excerpt, "reference": reference})
    write_jsonl(root / PROMPTS_FILE, ({"instruction": item["excerpt"], "input": "", "output": item["reference"]} for item in items))
    write_json_atomic(root / PROMPT_IDS_FILE, [item["note_id"] for item in items])
    register_datasets(
        root / REGISTRY_NAME,
        {PROMPTS_DATASET: {"file_name": PROMPTS_FILE.as_posix(), "columns": {"prompt": "instruction", "query": "input", "response": "output"}}},
        owner="likert",
    )
    return items


def run_model(model: ModelSpec, root: Path, run_dir: Path, extra_overrides: dict[str, Any]) -> Path:
    """One predict run of the completion recipe; returns its ``generated_predictions.jsonl``."""
    overrides: dict[str, Any] = {"model_name_or_path": model.model_name_or_path, "output_dir": str(run_dir)}
    if model.adapter_name_or_path:
        overrides["adapter_name_or_path"] = model.adapter_name_or_path
    if model.template:
        overrides["template"] = model.template
        # The recipe's `default_system: <s>` gives template `empty` its BOS; a chat template has its own.
        overrides["default_system"] = None
    overrides.update(extra_overrides)
    overrides.update(model.overrides)
    command = [llamafactory_cli(), "train", str(COMPLETE_RECIPE), *to_cli_arguments(overrides)]
    env = environment_with_venv_path()
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "llamafactory.log"
    with open(log_path, "w", encoding="utf-8") as log:
        result = subprocess.run(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    predictions = run_dir / "generated_predictions.jsonl"
    if result.returncode != 0 or not predictions.is_file():
        tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
        raise RuntimeError(f"model {model.name!r}: llamafactory-cli failed (exit {result.returncode}); see {log_path}:\n{tail}")
    return predictions


def serve_model(model: ModelSpec, root: Path, run_dir: Path, extra_overrides: dict[str, Any] | None = None, allow_remote: bool = False) -> Path:
    """The completions of a model that names an ``endpoint``: the same prompts, answered by the served engine.

    The server applies the template, so it must build the prompt the recipe builds (``empty`` with the BOS
    as system text, or the model's own ``template``): the first reply's prompt length is checked against the
    template's when ``model_name_or_path`` is a local folder with the tokenizer, before anything is cached.
    """
    from dataclasses import replace

    from medfactory.generate.client import ClientSettings
    from medfactory.generate.request_cache import request_cache_path
    from medfactory.generate.served_predict import PREDICTIONS_FILE, PromptCheck, serve_predict, settings_from_recipe

    # The study's --override decoding values (do_sample, temperature, max_new_tokens) apply to served models as to predict runs.
    settings = replace(settings_from_recipe(root / COMPLETE_RECIPE, PROMPTS_DATASET, run_dir, None, extra_overrides), dataset_dir=root)
    recipe = dict(settings.server_values)
    template, system = (model.template, None) if model.template else (str(recipe.get("template", "empty")), recipe.get("default_system"))
    check = PromptCheck(model.model_name_or_path, template, system) if Path(model.model_name_or_path).is_dir() else None
    client = ClientSettings(endpoint=str(model.endpoint), model=model.served_model or model.name, allow_remote=allow_remote)
    cache = request_cache_path(root, f"likert_{run_dir.parent.parent.name}_{model.name}")
    serve_predict(settings, client, cache, prompt_check=check)
    return run_dir / PREDICTIONS_FILE


def join_predictions(predictions: Path, items: list[dict[str, str]], model: str) -> list[dict[str, str]]:
    """Completions of one model, joined to their notes by the recorded row order."""
    rows = read_jsonl(predictions)
    if len(rows) != len(items):
        raise ValueError(
            f"{predictions}: {len(rows)} predictions for {len(items)} prompts; LLaMA-Factory dropped or added rows "
            "(see the run's llamafactory.log: prompts longer than cutoff_len are the usual cause)."
        )
    completions = []
    for position, (row, item) in enumerate(zip(rows, items), start=1):
        tail = item["excerpt"][-40:].strip()
        if tail and tail not in row["prompt"]:
            raise ValueError(f"{predictions}:{position}: the prompt does not end with the excerpt of note {item['note_id']}: the row order is broken.")
        completions.append({**item, "model": model, "completion": row["predict"]})
    return completions


def generate_completions(
    heldout: Path,
    models: list[ModelSpec],
    study_dir: Path,
    root: Path = Path("."),
    rule: ExcerptRule = ExcerptRule(),
    extra_overrides: dict[str, Any] | None = None,
    allow_remote: bool = False,
) -> Path:
    """Excerpts -> predictions of every model -> ``study_dir/completions.jsonl``; returns its path.

    A model with an ``endpoint`` is answered by that served engine (:func:`serve_model`), the others by a
    predict run (:func:`run_model`); both write ``runs/<name>/generated_predictions.jsonl`` in the prompts' order.

    A model whose predictions are already in ``study_dir/runs/<name>/`` for the same prompts is not
    run again, so an interrupted study resumes where it stopped.
    """
    root, study_dir = Path(root), Path(study_dir)
    # Every run folder is checked before anything is written or run.
    run_dirs = [confined_path(study_dir / "runs", model.name, what="model name", fix=MODEL_NAME_FIX) for model in models]
    items = write_prediction_set(read_heldout(heldout), root, rule)
    if not items:
        raise ValueError(f"{heldout}: no note is long enough to cut an excerpt and leave a continuation ({rule.describe()}).")
    prompts_digest = (root / PROMPTS_FILE).read_bytes()
    completions: list[dict[str, str]] = []
    for model, run_dir in zip(tqdm(models, desc="models", unit="model"), run_dirs):
        predictions = run_dir / "generated_predictions.jsonl"
        marker = run_dir / "prompts.jsonl"
        if not (predictions.is_file() and marker.is_file() and marker.read_bytes() == prompts_digest):
            if model.endpoint:
                predictions = serve_model(model, root, run_dir, extra_overrides, allow_remote)
            else:
                predictions = run_model(model, root, run_dir, extra_overrides or {})
            with atomic_write(marker, mode="wb") as handle:
                handle.write(prompts_digest)
        completions += join_predictions(predictions, items, model.name)
    out = study_dir / COMPLETIONS_FILE
    write_jsonl(out, completions)
    write_json_atomic(
        study_dir / "completions_manifest.json",
        {
            "heldout": str(heldout),
            "notes": len(items),
            "models": [vars(model) for model in models],
            "excerpt_rule": rule.describe(),
            "recipe": str(COMPLETE_RECIPE),
            "row_order": str(PROMPT_IDS_FILE),
        },
    )
    return out
