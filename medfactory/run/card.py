"""`medfactory card saves/<run>`: the run's provenance and a Hugging Face model card.

Reads what LLaMA-Factory leaves in a run folder (``trainer_state.json``, ``all_results.json`` /
``train_results.json`` / ``eval_results.json``, ``trainer_log.jsonl``, ``adapter_config.json``;
never ``training_args.bin``, a pickle that is unsafe to load), the recipe that produced it and the
manifests of its datasets, and writes into the run folder:

* ``provenance.json``: recipe (path, version, file sha256, values hash, values), dataset
  manifests (path + sha256, or "not prepared"), package versions, git commit, training results,
  adapter config;
* ``README.md``: the model card (YAML front matter through ``huggingface_hub.ModelCardData``);
  LLaMA-Factory's own auto card is kept as ``README.llamafactory.md``.

Both are written atomically. Nothing is uploaded unless ``--push REPO_ID`` is given; the upload
then holds only the adapter, tokenizer, card and provenance files, never ``data/``.
Cards hold numbers only, never note text.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from medfactory.base.atomic import atomic_write, sha256_file, write_json_atomic
from medfactory.base.jsonl import read_jsonl
from medfactory.base.tables import markdown_table
from medfactory.base.versions import package_versions
from medfactory.recipes.paper_values import PAPER_SOURCE, PAPER_VALUES, SIXTEEN_BIT_RECIPES
from medfactory.recipes.recipe_file import RECIPES_DIR, load_recipe, read_header, values_hash

PROVENANCE_NAME = "provenance.json"
CARD_NAME = "README.md"
LLAMAFACTORY_CARD_NAME = "README.llamafactory.md"
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


def git_state(where: Path | None = None) -> dict[str, Any]:
    """``git rev-parse HEAD`` and whether the tree has uncommitted changes; "unknown" outside git."""
    where = Path(where or Path.cwd())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if commit.returncode != 0:
            return {"commit": "unknown", "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {
        "commit": commit.stdout.strip(),
        "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None,
    }


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


# --------------------------------------------------------------------------- provenance


def build_provenance(run_dir: Path, recipe: Path) -> dict[str, Any]:
    header = read_header(recipe)
    values = load_recipe(recipe)
    return {
        "run_dir": str(run_dir),
        "recipe": {
            "path": str(recipe),
            "name": recipe.stem,
            "version": header.get("version", "unknown"),
            "source": read_source(recipe),
            "sha256": hashlib.sha256(recipe.read_bytes()).hexdigest(),
            "values_hash": values_hash(values),
            "values": values,
        },
        "datasets": dataset_manifests(values),
        "packages": package_versions_record(),
        "git": git_state(),
        "training": training_results(run_dir),
        "adapter_config": adapter_config(run_dir),
        "created_utc": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    }


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


def training_value_rows(
    name: str, values: dict[str, Any]
) -> list[tuple[str, str, str]]:
    """(label, value, from) rows: "paper" where the source paper fixes the value (PAPER_VALUES), else "ours"."""
    paper = PAPER_VALUES.get(name, {})

    def origin(*keys: str) -> str:
        present = [key for key in keys if key in values]
        if present and all(
            key in paper and paper[key] == values[key] for key in present
        ):
            return "paper"
        return "ours"

    spec = [
        ("base model", ("model_name_or_path",)),
        ("stage", ("stage",)),
        ("fine-tuning", ("finetuning_type",)),
        ("LoRA r", ("lora_rank",)),
        ("LoRA alpha", ("lora_alpha",)),
        ("LoRA dropout", ("lora_dropout",)),
        ("LoRA targets", ("lora_target",)),
        ("learning rate", ("learning_rate",)),
        ("epochs", ("num_train_epochs",)),
        ("context (cutoff_len)", ("cutoff_len",)),
        ("optimizer", ("optim",)),
        ("scheduler", ("lr_scheduler_type",)),
    ]
    rows = [
        (label, _fmt(values[keys[0]]), origin(*keys))
        for label, keys in spec
        if keys[0] in values
    ]
    precision_origin = (
        "paper"
        if name in SIXTEEN_BIT_RECIPES and (values.get("bf16") or values.get("fp16"))
        else origin("quantization_bit")
    )
    rows.append(("precision", _precision(values), precision_origin))
    if "per_device_train_batch_size" in values:
        batch = f"{values['per_device_train_batch_size']} × {values.get('gradient_accumulation_steps', 1)}"
        rows.append(
            (
                "batch × accumulation",
                batch,
                origin("per_device_train_batch_size", "gradient_accumulation_steps"),
            )
        )
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
    if name in PAPER_SOURCE:
        out += ["", f"Values marked *paper* are those of {PAPER_SOURCE[name]}; *ours* are not in the source."]
    return out


def _training_values_section(name: str, values: dict[str, Any], adapter: dict[str, Any] | None) -> list[str]:
    out = ["## Training values", "", _table(["value", "setting", "from"], training_value_rows(name, values))]
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


def _provenance_section(provenance: dict[str, Any]) -> list[str]:
    recipe, git = provenance["recipe"], provenance["git"]
    dirty = {True: " (uncommitted changes)", False: "", None: ""}[git.get("dirty")]
    out = [
        "## Provenance",
        "",
        f"- recipe: `{recipe['path']}` version {recipe['version']}, sha256 `{recipe['sha256']}`, values hash `{recipe['values_hash']}`",
        f"- medfactory git commit: `{git['commit']}`{dirty}",
    ]
    for dataset, info in provenance["datasets"].items():
        detail = f"manifest sha256 `{info['sha256']}`" if info["status"] == "prepared" else info["status"]
        out.append(f"- {dataset}: {detail}")
    out.append(f"- full record: `{PROVENANCE_NAME}` in this folder")
    return out


def build_card_body(provenance: dict[str, Any], reports: list[dict[str, Any]], license_note: str) -> str:
    """The model card's markdown below its YAML front matter: one section after the other."""
    recipe = provenance["recipe"]
    name, values = recipe["name"], recipe["values"]
    adapter = provenance.get("adapter_config")
    base = (adapter or {}).get("base_model_name_or_path") or values.get("model_name_or_path", "unknown")
    language = {"pt": "Brazilian Portuguese", "es": "Spanish", "en": "English"}
    langs = " / ".join(language.get(code, code) for code in languages_for(name))
    sections = [
        _description_section(provenance, base, langs),
        _training_values_section(name, values, adapter),
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

    recipe = provenance["recipe"]
    name, values = recipe["name"], recipe["values"]
    adapter = provenance.get("adapter_config")
    base = (adapter or {}).get("base_model_name_or_path") or values.get(
        "model_name_or_path"
    )
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
