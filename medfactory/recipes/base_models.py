"""The base models the repository names, read from ``base_models.yaml`` beside this file.

One table for ``recipes check`` (an unknown Hub id is an error, with a did-you-mean), for
``medfactory bench`` (which shipped configuration has a model's shapes) and for merges (two
models merge only when their ``derived_from`` chains reach the same root).
"""

from __future__ import annotations

import dataclasses
import difflib
from importlib import resources
from pathlib import Path

import yaml

TABLE_FILE = "base_models.yaml"
TABLE_PATH = f"medfactory/recipes/{TABLE_FILE}"
KINDS = ("causal_lm", "encoder")
REQUIRED = ("kind", "family", "config", "config_note", "derived_from", "gated", "card")
OPTIONAL = ("mistaken_for", "note")
LOCAL_PREFIXES = ("/", "./", "../", "~")


@dataclasses.dataclass(frozen=True)
class BaseModel:
    """One Hub model: its architecture, shipped configuration, parent, gating and model card."""

    model_id: str
    kind: str
    family: str
    config: str | None
    config_note: str
    derived_from: str | None
    gated: bool
    card: str
    mistaken_for: tuple[str, ...] = ()
    note: str = ""


def config_file(config: str) -> Path:
    """The shipped configuration file ``medfactory/model_configs/<config>.json``."""
    return Path(str(resources.files("medfactory") / "model_configs" / f"{config}.json"))


def _entry(model_id: str, entry: object) -> BaseModel:
    if not isinstance(entry, dict) or any(key not in entry for key in REQUIRED):
        raise ValueError(f"{TABLE_PATH}: {model_id!r} needs {', '.join(REQUIRED)}")
    unknown = sorted(set(entry) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ValueError(f"{TABLE_PATH}: {model_id!r} has unknown fields {', '.join(unknown)}; the fields are {', '.join(REQUIRED + OPTIONAL)}")
    if entry["kind"] not in KINDS:
        raise ValueError(f"{TABLE_PATH}: {model_id!r} has kind {entry['kind']!r}; use one of {', '.join(KINDS)}")
    if not str(entry["card"]).startswith("https://"):
        raise ValueError(f"{TABLE_PATH}: {model_id!r} needs `card:` with the URL of its model card")
    if entry["config"] is not None and not config_file(entry["config"]).is_file():
        raise ValueError(f"{TABLE_PATH}: {model_id!r} names config {entry['config']!r}, not in medfactory/model_configs/")
    return BaseModel(model_id=model_id, mistaken_for=tuple(entry.get("mistaken_for") or ()), **{k: v for k, v in entry.items() if k != "mistaken_for"})


def load_base_models(text: str | None = None) -> dict[str, BaseModel]:
    """The table (``text``, or the shipped file), checked: every field present, parents in the table, configurations shipped."""
    table = yaml.safe_load(text if text is not None else resources.files("medfactory.recipes").joinpath(TABLE_FILE).read_text(encoding="utf-8"))
    if not isinstance(table, dict):
        raise ValueError(f"{TABLE_PATH}: a mapping of Hub id -> entry, got {type(table).__name__}")
    models = {model_id: _entry(model_id, entry) for model_id, entry in table.items()}
    for model in models.values():
        if model.derived_from is not None and model.derived_from not in models:
            raise ValueError(f"{TABLE_PATH}: {model.model_id!r} derives from {model.derived_from!r}, which has no entry")
    return models


BASE_MODELS: dict[str, BaseModel] = load_base_models()


def root_model(model_id: str) -> str:
    """The first model of ``model_id``'s ``derived_from`` chain (itself for a pretrained base)."""
    seen = [model_id]
    while model_id in BASE_MODELS and BASE_MODELS[model_id].derived_from:
        model_id = BASE_MODELS[model_id].derived_from
        if model_id in seen:
            raise ValueError(f"{TABLE_PATH}: derived_from loops: {' -> '.join([*seen, model_id])}")
        seen.append(model_id)
    return model_id


def share_root(first: str, second: str) -> bool:
    """Whether two table models descend from the same pretrained model (what a merge needs)."""
    return root_model(first) == root_model(second)


def is_local_path(value: str, root: Path) -> bool:
    """A folder on disk (relative to the repository root) or a value written as a path (``./x``, ``/x``, ``~/x``).

    A path-shaped value is accepted even before it exists: an earlier step (a merge, an export) writes it.
    """
    return value.startswith(LOCAL_PREFIXES) or (Path(root) / value).exists() or value.count("/") > 1


def suggest_model_id(model_id: str) -> str | None:
    """The table id meant by an unknown id: a known mistake, the same name under another owner, or the closest id."""
    for known in BASE_MODELS.values():
        if model_id in known.mistaken_for:
            return known.model_id
    candidates = [known for known, model in BASE_MODELS.items() if model.kind == "causal_lm"]
    name = model_id.rsplit("/", 1)[-1].lower()
    same_name = [known for known in candidates if known.rsplit("/", 1)[-1].lower() == name]
    if same_name:
        return same_name[0]
    close = difflib.get_close_matches(model_id, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_model_problem(model_id: str, root: Path) -> tuple[str, str] | None:
    """``(message, fix)`` when ``model_id`` is neither a causal LM of the table nor a local path; None when fine."""
    known = BASE_MODELS.get(model_id)
    if known is not None and known.kind == "causal_lm":
        return None
    if known is not None:
        return (
            f"`{model_id}` is an {known.kind} ({known.family}, used by the evaluations), not a causal language model.",
            f"use a causal LM from {TABLE_PATH}.",
        )
    if is_local_path(model_id, root):
        return None
    suggestion = suggest_model_id(model_id)
    if suggestion is not None and model_id in BASE_MODELS[suggestion].mistaken_for:
        problem = "does not exist on the Hub, so the download at launch fails"
    else:
        problem = f"is neither in the base-model table ({TABLE_PATH}) nor a local folder"
    hint = f"; did you mean {suggestion}?" if suggestion else "."
    fix = f"write `{suggestion}` ({BASE_MODELS[suggestion].card})" if suggestion else "use an id of the table"
    return (
        f"`{model_id}` {problem}{hint}",
        f"{fix}; a new model goes into {TABLE_PATH} with its model card; a local folder is written as ./path.",
    )
