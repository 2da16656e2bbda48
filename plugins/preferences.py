"""Your own preference pairs (JSONL) as a registered DPO dataset.

Each line of ``--source`` is one pair::

    {"prompt": "...", "chosen": "the better answer", "rejected": "the worse answer"}

with an optional ``"system"`` (system prompt) and ``"id"`` (string or number; ``<name>-<line>``
when absent). Other keys are ignored (and counted in the manifest). Every line is checked: not
JSON, not an object, a required field missing, not a string or empty, ``chosen`` equal to
``rejected`` (after trimming), a repeated id. With ``--on-error fail`` (the default) any problem
stops the run and every problem is listed with its line number; with ``--on-error skip`` the
bad lines are left out and counted by reason (line numbers in the manifest).

``medfactory prepare preferences --source my_prefs.jsonl --name my_prefs`` writes
``data/my_prefs/dpo.json`` in LLaMA-Factory's alpaca ranking format (``instruction``, ``input``,
``chosen``, ``rejected``, ``system``) plus ``manifest.json``, and registers ``my_prefs`` with
``"ranking": true``. Texts are kept as given (no trimming inside a pair).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from medfactory.base.atomic import sha256_file, write_json_atomic
from medfactory.base.errors import CorpusError, exit_on_corpus_error
from medfactory.base.manifest import dataset_records, manifest_header, output_facts
from medfactory.base.publish import publish_datasets
from medfactory.base.registry import REGISTRY_NAME
from medfactory.plugins import CorpusPlugin, ReplaceOption

PLUGIN_NAME = "preferences"
ON_ERROR_CHOICES = ("fail", "skip")
REQUIRED_FIELDS = ("prompt", "chosen", "rejected")
OPTIONAL_FIELDS = ("system", "id")
DPO_FILE = "dpo.json"
# The name becomes a folder under data/ and a registry key.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# How many problems a failing run prints; all of them are counted.
MAX_LISTED_ERRORS = 20


def dataset_dir(name: str) -> Path:
    return Path("data") / name


def registry_entry(name: str) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "file_name": f"{dataset_dir(name).as_posix()}/{DPO_FILE}",
            "ranking": True,
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "chosen": "chosen",
                "rejected": "rejected",
                "system": "system",
            },
        }
    }


def check_pair(record: Any, seen_ids: dict[str, int], name: str, line_number: int) -> tuple[dict[str, str], str | None]:
    """(the pair in ranking format, None) or ({}, the reason it is invalid)."""
    if not isinstance(record, dict):
        return {}, f"not a JSON object ({type(record).__name__})"
    for field in REQUIRED_FIELDS:
        if field not in record or record[field] is None:
            return {}, f"missing field '{field}'"
        if not isinstance(record[field], str):
            return {}, f"field '{field}' is not a string"
        if not record[field].strip():
            return {}, f"field '{field}' is empty"
    if record["chosen"].strip() == record["rejected"].strip():
        return {}, "chosen equals rejected"
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        return {}, "field 'system' is not a string"
    raw_id = record.get("id")
    if raw_id is None:
        pair_id = f"{name}-{line_number}"
    elif isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not str(raw_id).strip():
        return {}, "field 'id' is not a non-empty string or number"
    else:
        pair_id = str(raw_id).strip()
    if pair_id in seen_ids:
        return {}, f"id {pair_id!r} already used on line {seen_ids[pair_id]}"
    seen_ids[pair_id] = line_number
    return {
        "instruction": record["prompt"],
        "input": "",
        "chosen": record["chosen"],
        "rejected": record["rejected"],
        "system": system or "",
        "id": pair_id,
    }, None


def read_pairs(source: Path, name: str) -> tuple[list[dict[str, str]], list[dict[str, Any]], Counter, int]:
    """(valid pairs, problems as {line, reason}, ignored extra keys, lines read) of a JSONL file."""
    source = Path(source)
    if not source.exists():
        raise CorpusError(f"{source}: not found. Pass --source your preference file (JSONL: prompt, chosen, rejected per line).")
    if not source.is_file():
        raise CorpusError(f"{source}: is a folder. Pass --source the JSONL file itself.")
    pairs: list[dict[str, str]] = []
    problems: list[dict[str, Any]] = []
    extra_keys: Counter = Counter()
    seen_ids: dict[str, int] = {}
    lines = 0
    with open(source, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                problems.append({"line": line_number, "reason": f"not UTF-8 (byte {error.start} of the line)"})
                lines += 1
                continue
            if line_number == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            lines += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                problems.append({"line": line_number, "reason": f"invalid JSON ({error.msg}, column {error.colno})"})
                continue
            pair, reason = check_pair(record, seen_ids, name, line_number)
            if reason:
                problems.append({"line": line_number, "reason": reason})
                continue
            extra_keys.update(key for key in record if key not in REQUIRED_FIELDS + OPTIONAL_FIELDS)
            pairs.append(pair)
    return pairs, problems, extra_keys, lines


def _reason_kind(reason: str) -> str:
    """A problem's reason without its details, to count problems by kind."""
    if reason.startswith("id "):
        return "repeated id"
    return re.sub(r" \(.*\)$", "", reason)


def prepare_preferences(source: Path, name: str, output_root: Path = Path("."), on_error: str = "fail", replace: bool = False) -> dict[str, Any]:
    """Validate ``source``, write ``output_root/data/<name>/dpo.json`` and register ``name``; return the manifest."""
    if on_error not in ON_ERROR_CHOICES:
        raise CorpusError(f"on_error={on_error!r}: use one of {', '.join(ON_ERROR_CHOICES)}.")
    if not NAME_PATTERN.match(name or ""):
        raise CorpusError(
            f"--name {name!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit "
            "(it names the folder data/<name>/ and the dataset in dataset_info.json)."
        )
    source, output_root = Path(source), Path(output_root)
    entry = registry_entry(name)
    pairs, problems, extra_keys, lines = read_pairs(source, name)
    if problems and on_error == "fail":
        listed = "; ".join(f"line {problem['line']}: {problem['reason']}" for problem in problems[:MAX_LISTED_ERRORS])
        more = f" (and {len(problems) - MAX_LISTED_ERRORS} more)" if len(problems) > MAX_LISTED_ERRORS else ""
        raise CorpusError(
            f"{source}: {len(problems)} invalid line(s) of {lines}: {listed}{more}. Fix them, or run with "
            "--on-error skip to leave them out. Each line needs non-empty string fields prompt, chosen, rejected "
            "(chosen different from rejected), optionally system and id."
        )
    if not pairs:
        raise CorpusError(f"{source}: no valid preference pair in {lines} line(s) ({len(problems)} invalid).")
    with publish_datasets(output_root, dataset_dir(name), entry, PLUGIN_NAME, replace) as publication:
        staging = publication.staging
        dpo_path = staging / DPO_FILE
        write_json_atomic(dpo_path, pairs)
        skipped = dict(sorted(Counter(_reason_kind(problem["reason"]) for problem in problems).items()))
        manifest = {
            **manifest_header(PLUGIN_NAME, source, {"on_error": on_error}),
            "name": name,
            "source_sha256": sha256_file(source),
            "lines": lines,
            "pairs": len(pairs),
            "with_system": sum(bool(pair["system"]) for pair in pairs),
            "skipped": skipped,
            "dropped": skipped,
            "skipped_lines": problems,
            "ignored_fields": dict(sorted(extra_keys.items())),
            "datasets": dataset_records(staging, entry, dataset_dir(name)),
            "outputs": output_facts([dpo_path]),
            "registered": name,
        }
        publication.write_manifest(manifest)
    return manifest


# --- Command line (mounted as ``medfactory prepare preferences``) ------------------------------------


def prepare_command(
    source: Annotated[Path, typer.Option(help="JSONL: one {prompt, chosen, rejected[, system, id]} per line")],
    name: Annotated[str, typer.Option(help="Dataset name: data/<name>/dpo.json, registered as <name>")],
    output_root: Annotated[Path, typer.Option(help="Repository root: gets data/<name>/ and dataset_info.json")] = Path("."),
    on_error: Annotated[str, typer.Option(help="fail (list every invalid line) or skip (leave them out, counted)")] = "fail",
    replace: ReplaceOption = False,
) -> None:
    """Import your own preference pairs as a DPO (ranking) dataset registered under --name."""
    with exit_on_corpus_error():
        manifest = prepare_preferences(source, name, output_root=output_root, on_error=on_error, replace=replace)
    skipped = ", ".join(f"{reason} {count}" for reason, count in manifest["skipped"].items())
    typer.echo(f"{manifest['pairs']} pairs of {manifest['lines']} lines ({manifest['with_system']} with a system prompt); skipped: {skipped or 'none'}")
    typer.echo(f"wrote {Path(output_root) / dataset_dir(name) / DPO_FILE}; registered '{name}' in {Path(output_root) / REGISTRY_NAME}")


PLUGIN = CorpusPlugin(
    name=PLUGIN_NAME,
    summary="Your own preference pairs (JSONL prompt/chosen/rejected) as a registered DPO dataset",
    command=prepare_command,
)
