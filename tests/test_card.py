"""`medfactory card`: provenance.json and the Hugging Face model card of a LLaMA-Factory run folder."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import typer
from huggingface_hub import HfApi, ModelCard
from typer.testing import CliRunner

from medfactory.base.jsonl import write_jsonl
from medfactory.cli.run import card_command
from medfactory.recipes.recipe_file import load_recipe, read_header, values_hash
from medfactory.run.card import IMAGE_COMMIT_ENV, value_tags

REPO = Path(__file__).resolve().parents[1]
RUN = "saves/clinical_br_mistral"
RECIPE = REPO / "recipes" / "clinical_br_mistral.yaml"
BASE_MODEL = load_recipe(RECIPE)["model_name_or_path"]
VERSION = read_header(RECIPE)["version"]

app = typer.Typer()
app.command()(card_command)


LOG_HISTORY = [
    {"epoch": 0.5, "step": 10, "loss": 2.31, "learning_rate": 1.9e-5},
    {"epoch": 1.0, "step": 20, "loss": 1.87, "learning_rate": 1.0e-5},
    {"epoch": 1.0, "step": 20, "eval_loss": 1.95, "eval_runtime": 3.2},
    {"epoch": 2.0, "step": 40, "loss": 1.62, "learning_rate": 0.0},
    {
        "epoch": 2.0,
        "step": 40,
        "train_loss": 1.93,
        "train_runtime": 812.5,
        "total_flos": 1.0e15,
    },
]


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value), encoding="utf-8")


def _write_prepared_lopes2019(root: Path) -> None:
    """A prepared lopes2019 corpus: one synthetic note and its manifest."""
    data = root / "data" / "lopes2019"
    data.mkdir(parents=True)
    write_jsonl(data / "train.jsonl", [{"text": "nota sintética"}])
    manifest = {
        "corpus": "lopes2019",
        "documents": 1,
        "characters": 14,
        "estimated_tokens": 4,
        "datasets": {"lopes2019": {"file": "data/lopes2019/train.jsonl", "records": 1}},
        "outputs": {
            "train.jsonl": {
                "sha256": hashlib.sha256(
                    (data / "train.jsonl").read_bytes()
                ).hexdigest(),
                "bytes": 29,
            }
        },
    }
    _write_json(data / "manifest.json", manifest)


def _write_trainer_files(run: Path) -> None:
    """What LLaMA-Factory's trainer leaves: trainer_state.json, all_results.json, trainer_log.jsonl."""
    _write_json(
        run / "trainer_state.json",
        {"epoch": 2.0, "global_step": 40, "max_steps": 40, "log_history": LOG_HISTORY},
    )
    _write_json(
        run / "all_results.json",
        {
            "epoch": 2.0,
            "eval_loss": 1.95,
            "perplexity": 7.03,
            "train_loss": 1.93,
            "train_runtime": 812.5,
        },
    )
    write_jsonl(
        run / "trainer_log.jsonl",
        (
            {"current_steps": e["step"], "total_steps": 40, "loss": e["loss"]}
            for e in LOG_HISTORY
            if "loss" in e
        ),
    )


def _write_adapter_files(run: Path) -> None:
    """The saved LoRA adapter, a training_args.bin that must never be loaded, LLaMA-Factory's own card."""
    _write_json(
        run / "adapter_config.json",
        {
            "base_model_name_or_path": BASE_MODEL,
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": 8,
            "lora_alpha": 16,
            "lora_dropout": 0.1,
            "target_modules": ["v_proj", "q_proj"],
        },
    )
    (run / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    (run / "training_args.bin").write_bytes(b"not a pickle: must never be loaded")
    (run / "README.md").write_text(
        "---\nlibrary_name: peft\n---\n# clinical_br_mistral\nLLaMA-Factory auto card\n",
        encoding="utf-8",
    )


def _write_mcqa_report(root: Path) -> None:
    reports = root / "reports" / "mcqa" / "clinical_br_mistral"
    reports.mkdir(parents=True)
    _write_json(
        reports / "metrics.json",
        {"n": 120, "correct": 54, "accuracy": 0.45, "macro_f1": 0.4321},
    )


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of recipes/ and dataset_info.json, a prepared lopes2019 manifest, a finished run folder."""
    monkeypatch.delenv(IMAGE_COMMIT_ENV, raising=False)
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    shutil.copy(REPO / "dataset_info.json", tmp_path / "dataset_info.json")
    _write_prepared_lopes2019(tmp_path)
    run = tmp_path / RUN
    run.mkdir(parents=True)
    _write_trainer_files(run)
    _write_adapter_files(run)
    _write_mcqa_report(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _table_rows(markdown: str) -> set[tuple[str, ...]]:
    """The cells of every markdown table row in ``markdown``, stripped (column padding is not content)."""
    return {
        tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
        for line in markdown.splitlines()
        if line.lstrip().startswith("|")
    }


def _assert_provenance(provenance: dict, workspace: Path) -> None:
    """provenance.json of the demo-like run: recipe, dataset manifests, git, packages, training, adapter."""
    recipe = Path("recipes/clinical_br_mistral.yaml")
    assert provenance["recipe"]["path"] == str(recipe)
    assert provenance["recipe"]["version"] == read_header(recipe)["version"] == VERSION
    assert (
        provenance["recipe"]["sha256"]
        == hashlib.sha256(recipe.read_bytes()).hexdigest()
    )
    assert provenance["recipe"]["values_hash"] == values_hash(load_recipe(recipe))
    assert provenance["recipe"]["values"]["lora_rank"] == 8
    lopes = provenance["datasets"]["lopes2019"]
    assert (
        lopes["sha256"]
        == hashlib.sha256(
            (workspace / "data/lopes2019/manifest.json").read_bytes()
        ).hexdigest()
    )
    assert (
        lopes["outputs"]["train.jsonl"]
        == hashlib.sha256(
            (workspace / "data/lopes2019/train.jsonl").read_bytes()
        ).hexdigest()
    )
    assert provenance["datasets"]["semclinbr"]["status"] == "not prepared"
    assert provenance["git"] == {
        "commit": "unknown",
        "dirty": None,
    }  # the tmp copy is not a git checkout
    assert provenance["packages"]["medfactory"]
    assert (
        provenance["training"]["eval_loss"] == 1.95
        and provenance["training"]["global_step"] == 40
    )
    assert (
        provenance["training"]["final_logged_train_loss"] == 1.62
        and provenance["training"]["epoch"] == 2.0
    )
    assert provenance["adapter_config"]["r"] == 8 and provenance["adapter_config"][
        "target_modules"
    ] == ["q_proj", "v_proj"]
    assert provenance["created_utc"]


def test_card_writes_provenance_and_model_card(workspace: Path) -> None:
    result = CliRunner().invoke(app, [RUN, "--reports", "reports/mcqa"])
    assert result.exit_code == 0, result.output
    run = workspace / RUN
    assert (
        str(Path(RUN) / "provenance.json") in result.output
        and str(Path(RUN) / "README.md") in result.output
    )

    provenance = json.loads((run / "provenance.json").read_text(encoding="utf-8"))
    _assert_provenance(provenance, workspace)
    lopes = provenance["datasets"]["lopes2019"]

    card = ModelCard.load(run / "README.md")
    assert card.data.base_model == BASE_MODEL
    assert card.data.language == ["pt"]
    assert card.data.license == "other" and card.data.library_name == "peft"
    assert {"medfactory", "llama-factory", "lora", "medical", "clinical", "pt"} <= set(
        card.data.tags
    )
    assert card.data.datasets == ["semclinbr", "brateca", "lopes2019"]

    body = card.text
    rows = _table_rows(body)
    assert ("LoRA r", "8", "paper") in rows and ("LoRA alpha", "16", "paper") in rows
    assert ("learning rate", "2e-05", "paper") in rows
    assert ("batch × accumulation", "1 × 2", "ours") in rows
    assert "Pinto et al." in body and f"version {VERSION}" in body
    assert ("120", "0.45", "0.4321") in rows and ("eval_loss", "1.95") in rows
    assert ("lopes2019", "prepared", "1", "1", "14", "4") in rows
    assert (
        "not for clinical decisions" in body.lower() and "plausible but false" in body
    )
    assert "Apache-2.0" in body
    assert provenance["recipe"]["sha256"] in body and lopes["sha256"] in body
    assert "nota sintética" not in body  # numbers only, never text

    kept = run / "README.llamafactory.md"
    assert kept.read_text(encoding="utf-8").endswith("LLaMA-Factory auto card\n")

    # Writing the card again keeps LLaMA-Factory's card, not ours, in README.llamafactory.md.
    assert CliRunner().invoke(app, [RUN]).exit_code == 0
    assert "LLaMA-Factory auto card" in kept.read_text(encoding="utf-8")


def test_unknown_run_needs_recipe(workspace: Path) -> None:
    shutil.copytree(workspace / RUN, workspace / "saves" / "my_own_run")
    result = CliRunner().invoke(app, ["saves/my_own_run"])
    assert result.exit_code == 1
    assert "--recipe" in result.output and "saves/my_own_run" in result.output
    assert not (workspace / "saves/my_own_run/provenance.json").exists()

    result = CliRunner().invoke(
        app,
        [
            "saves/my_own_run",
            "--recipe",
            "recipes/clinical_br_mistral.yaml",
            "--license",
            "apache-2.0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        ModelCard.load(workspace / "saves/my_own_run/README.md").data.license
        == "apache-2.0"
    )


def test_push_uploads_the_run_folder_only_when_asked(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(
        HfApi,
        "create_repo",
        lambda self, **kwargs: calls.append(("create_repo", kwargs)),
    )
    monkeypatch.setattr(
        HfApi,
        "upload_folder",
        lambda self, **kwargs: calls.append(("upload_folder", kwargs)),
    )

    assert CliRunner().invoke(app, [RUN]).exit_code == 0
    assert calls == []  # no --push, no upload

    result = CliRunner().invoke(
        app, [RUN, "--push", "someone/clinical-br-mistral-lora"]
    )
    assert result.exit_code == 0, result.output
    assert calls[0] == (
        "create_repo",
        {
            "repo_id": "someone/clinical-br-mistral-lora",
            "private": True,
            "exist_ok": True,
            "repo_type": "model",
        },
    )
    name, upload = calls[1]
    assert (
        name == "upload_folder"
        and upload["repo_id"] == "someone/clinical-br-mistral-lora"
    )
    assert Path(upload["folder_path"]).resolve() == (workspace / RUN).resolve()
    assert (
        "data" not in Path(upload["folder_path"]).resolve().relative_to(workspace).parts
    )
    assert {
        "README.md",
        "provenance.json",
        "adapter_config.json",
        "adapter_model.safetensors",
    } <= set(upload["allow_patterns"])
    assert not any(
        "data" in pattern.split("/")[0] for pattern in upload["allow_patterns"]
    )
    assert (
        "data/**" in upload["ignore_patterns"]
        and "training_args.bin" in upload["ignore_patterns"]
    )


def test_read_reports_quotes_bertscore_and_likert_summaries(tmp_path: Path) -> None:
    from medfactory.run.card import read_reports

    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "summary.csv").write_text("scenario,metric,mean,n\nlora,bertimbau_f1,0.81,965\n", encoding="utf-8")
    (tmp_path / "likert" / "report").mkdir(parents=True)
    (tmp_path / "likert" / "report" / "table1_summary.csv").write_text("model,criterion,mean\nm1,coherence,3.5\n", encoding="utf-8")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (tmp_path / "bert" / "table1_summary.csv").write_text("x,y\n1,2\n", encoding="utf-8")  # wrong columns: not quoted
    reports = read_reports([tmp_path])
    assert [(r["kind"], r["rows"]) for r in reports] == [
        ("bertscore", [("lora", "bertimbau_f1", "0.81", "965")]),
        ("likert", [("m1", "coherence", "3.5", "")]),
    ]


# --------------------------------------------------------------------------- what ran, and each value's source

TRAINER_CARD = """---
library_name: peft
---

# clinical_br_mistral

This model is a fine-tuned version of [{base}](https://huggingface.co/{base}) on the semclinbr, the brateca and the lopes2019 datasets.

## Training procedure

### Training hyperparameters

The following hyperparameters were used during training:
- learning_rate: 0.0001
- train_batch_size: 1
- eval_batch_size: 1
- seed: 42
- gradient_accumulation_steps: 2
- total_train_batch_size: 2
- optimizer: Use OptimizerNames.ADAMW_TORCH with betas=(0.9,0.999) and epsilon=1e-08 and optimizer_args=No additional optimizer arguments
- lr_scheduler_type: cosine
- lr_scheduler_warmup_steps: 0.01
- num_epochs: 1.0

### Framework versions

- Transformers 5.5.4
"""


def _run_card(workspace: Path, *arguments: str) -> tuple[dict, set[tuple[str, ...]], str]:
    result = CliRunner().invoke(app, [RUN, *arguments])
    assert result.exit_code == 0, result.output
    provenance = json.loads((workspace / RUN / "provenance.json").read_text(encoding="utf-8"))
    body = ModelCard.load(workspace / RUN / "README.md").text
    return provenance, _table_rows(body), body


def test_card_shows_the_epochs_the_trainer_state_ran_not_the_recipe_file(workspace: Path) -> None:
    """`llamafactory-cli train recipe.yaml num_train_epochs=1`: the recipe says 2, the run folder 1."""
    assert load_recipe(workspace / "recipes/clinical_br_mistral.yaml")["num_train_epochs"] == 2
    history = [{**entry, "epoch": entry["epoch"] / 2} for entry in LOG_HISTORY]
    state = {"epoch": 1.0, "global_step": 40, "max_steps": 40, "num_train_epochs": 1, "train_batch_size": 1, "log_history": history}
    _write_json(workspace / RUN / "trainer_state.json", state)
    provenance, rows, body = _run_card(workspace)
    assert provenance["overridden"]["num_train_epochs"] == {"recipe": 2.0, "ran": 1.0, "from": "trainer_state.json"}
    assert ("epochs", "1", "override") in rows
    assert provenance["recipe"]["values"]["num_train_epochs"] == 2.0  # the file's values stay the file's
    assert "`num_train_epochs` 2 in the recipe, 1 in the run (trainer_state.json)" in body
    # Values the run folder confirms keep their recipe tag; nothing else is called an override.
    assert set(provenance["overridden"]) == {"num_train_epochs"}
    assert ("LoRA r", "8", "paper") in rows and ("batch × accumulation", "1 × 2", "ours") in rows


def test_card_reads_the_arguments_the_trainer_ran_with(workspace: Path) -> None:
    """The Trainer's card (learning rate, epochs) and the adapter (LoRA r) override the recipe's values."""
    run = workspace / RUN
    (run / "README.md").write_text(TRAINER_CARD.format(base=BASE_MODEL), encoding="utf-8")
    adapter = json.loads((run / "adapter_config.json").read_text(encoding="utf-8"))
    _write_json(run / "adapter_config.json", {**adapter, "r": 16})
    provenance, rows, body = _run_card(workspace)
    overridden = provenance["overridden"]
    assert overridden["learning_rate"]["recipe"] == 2e-5 and overridden["learning_rate"]["ran"] == 1e-4
    assert overridden["num_train_epochs"]["ran"] == 1.0 and "README.llamafactory.md" in overridden["num_train_epochs"]["from"]
    assert overridden["lora_rank"] == {"recipe": 8, "ran": 16, "from": "adapter_config.json"}
    assert set(overridden) == {"learning_rate", "num_train_epochs", "lora_rank"}, overridden
    assert ("learning rate", "0.0001", "override") in rows and ("epochs", "1", "override") in rows
    assert ("LoRA r", "16", "override") in rows and ("LoRA alpha", "16", "paper") in rows
    assert ("optimizer", "adamw_torch", "paper") in rows and ("warm-up", "0.01", "ours") in rows
    assert provenance["ran"]["dataset"]["value"] == "semclinbr,brateca,lopes2019"
    # What the run folder cannot confirm is said, not passed off as the run's.
    assert "does not record stage, fine-tuning, context (cutoff_len), precision" in body
    # A second `card` reads LLaMA-Factory's card from README.llamafactory.md, with the same result.
    assert _run_card(workspace)[0]["overridden"] == overridden


def test_an_override_of_a_key_the_recipe_leaves_unset_is_compared_with_the_default(workspace: Path) -> None:
    run = workspace / RUN
    card = TRAINER_CARD.format(base=BASE_MODEL).replace("- num_epochs: 1.0", "- training_steps: 30")
    (run / "README.md").write_text(card.replace("learning_rate: 0.0001", "learning_rate: 2e-05"), encoding="utf-8")
    provenance, rows, _ = _run_card(workspace)
    assert provenance["overridden"] == {"max_steps": {"recipe": None, "ran": 30, "from": provenance["ran"]["max_steps"]["from"], "default": -1}}
    assert ("max steps", "30", "override") in rows and ("epochs", "2 (max_steps decides)", "paper") in rows


def test_launch_record_of_a_medfactory_launcher_is_read(workspace: Path) -> None:
    from medfactory.run.card import write_launch_args

    write_launch_args(workspace / RUN, Path("recipes/clinical_br_mistral.yaml"), {"cutoff_len": 256, "bf16": False})
    provenance, rows, _ = _run_card(workspace)
    assert provenance["overridden"]["cutoff_len"] == {"recipe": 32768, "ran": 256, "from": "medfactory_launch.json"}
    assert ("context (cutoff_len)", "256", "override") in rows and ("precision", "fp32", "override") in rows


def test_each_value_carries_the_tag_its_recipe_line_gives_it(workspace: Path) -> None:
    """[qlora] values show qlora, not "paper"; a line with two tags shows both; an untagged one "recipe"."""
    recipe = workspace / "recipes" / "spanish_medical_qlora_sft.yaml"
    values = load_recipe(recipe)
    tags = value_tags(recipe)
    assert tags["lora_rank"] == ["qlora"] and value_tags(workspace / "recipes/clinical_br_mistral.yaml")["bf16"] == ["paper", "ours"]
    run = workspace / values["output_dir"]
    run.mkdir(parents=True)
    epochs = values["num_train_epochs"]
    _write_json(run / "trainer_state.json", {"epoch": epochs, "global_step": 30, "max_steps": 30, "log_history": LOG_HISTORY})
    _write_json(
        run / "adapter_config.json",
        {"base_model_name_or_path": values["model_name_or_path"], "peft_type": "LORA", "r": values["lora_rank"],
         "lora_alpha": values["lora_alpha"], "lora_dropout": values["lora_dropout"], "target_modules": ["q_proj", "v_proj", "o_proj"]},
    )  # fmt: skip
    result = CliRunner().invoke(app, [values["output_dir"], "--recipe", str(recipe.relative_to(workspace))])
    assert result.exit_code == 0, result.output
    provenance = json.loads((run / "provenance.json").read_text(encoding="utf-8"))
    assert provenance["overridden"] == {}
    rows = {row[0]: row[1:] for row in _table_rows(ModelCard.load(run / "README.md").text) if len(row) == 3}
    assert rows["LoRA r"] == (str(values["lora_rank"]), "qlora")
    assert rows["learning rate"] == (f"{values['learning_rate']:g}", "qlora")
    assert rows["epochs"][1] == " + ".join(tags["num_train_epochs"]) and "qlora" in rows["precision"][1]
    assert rows["stage"][1] == (" + ".join(tags["stage"]) if tags.get("stage") else "recipe")
    assert "paper" not in {origin for _, origin in rows.values()}  # this recipe has no [paper] value


def test_the_commit_of_the_docker_image_reaches_the_card(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a git checkout (a container without the checkout mounted) the image's build argument is the commit."""
    monkeypatch.setenv(IMAGE_COMMIT_ENV, "0123456789abcdef0123456789abcdef01234567")
    provenance, _, body = _run_card(workspace)
    assert provenance["git"]["commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert provenance["git"]["dirty"] is None and "image build argument" in provenance["git"]["source"]
    assert "`0123456789abcdef0123456789abcdef01234567`" in body and "Docker image's build argument" in body
    monkeypatch.setenv(IMAGE_COMMIT_ENV, "unknown")  # built without GIT_COMMIT: nothing is claimed
    assert _run_card(workspace)[0]["git"] == {"commit": "unknown", "dirty": None}
