"""`medfactory recipes check` passes on the repository and fails, clearly, on broken recipes.

Each defect is planted in a copy of a repository recipe; the check must name the recipe, the key
and the fix. Where LLaMA-Factory itself refuses the defect at launch, its own `get_train_args`
is run on the same copy too, so the offline reproduction is held to the real thing.
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from medfactory.base.registry import load_registry
from medfactory.recipes.base_models import BASE_MODELS, load_base_models, share_root, suggest_model_id
from medfactory.recipes.check import check_recipe, inspect_recipe
from medfactory.recipes.dataset_checks import has_no_records
from medfactory.recipes.launch_checks import ENVIRONMENT_CHECKS, EXTRA_DEPENDENCIES, LAUNCH_RULES
from medfactory.recipes.lock import lock_recipes
from medfactory.recipes.paper_values import PAPER_VALUES
from medfactory.recipes.recipe_file import default_recipe_paths, load_recipe, read_header

MISTRAL = "recipes/clinical_br_mistral.yaml"
SFT = "recipes/spanish_medical_qlora_sft.yaml"
TRANSLATE = "recipes/mimic_cxr_translate_medgemma27b.yaml"
DPO = "recipes/spanish_medical_dpo.yaml"
QLORA_SFT_RECIPES = [SFT, "recipes/spanish_medical_qlora_sft_llama2_es.yaml", "recipes/spanish_medical_qlora_sft_lince_mistral.yaml",
                     "recipes/spanish_medical_replay_sft.yaml"]  # fmt: skip


def run_check(cwd: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medfactory.cli", "recipes", "check", *arguments], cwd=cwd, capture_output=True, text=True)


def edit(recipe: Path, old: str, new: str) -> None:
    text = recipe.read_text(encoding="utf-8")
    assert old in text, f"test set-up: {old!r} not in {recipe}"
    recipe.write_text(text.replace(old, new, 1), encoding="utf-8")


def set_key(recipe: Path, key: str, value: str | None) -> None:
    """Write ``key: value`` in place of the recipe's line for ``key`` (appended when absent); None removes the line."""
    text = recipe.read_text(encoding="utf-8")
    pattern = re.compile(rf"^{re.escape(key)}:.*$\n?", re.MULTILINE)
    line = "" if value is None else f"{key}: {value}\n"
    text = pattern.sub(line, text, count=1) if pattern.search(text) else text.rstrip("\n") + "\n" + line
    recipe.write_text(text, encoding="utf-8")


def problems_of(recipe: Path, **options) -> list[str]:
    return [str(problem) for problem in check_recipe(recipe, **options)]


def one_problem(recipe: Path, key: str, *expected: str, **options) -> str:
    """The problem of ``recipe`` reported at ``key``; it must name the recipe, the key and a fix, and contain ``expected``."""
    found = [str(problem) for problem in check_recipe(recipe, **options) if problem.key == key and all(text in str(problem) for text in expected)]
    assert found, f"no problem at `{key}` with {expected}: {problems_of(recipe, **options)}"
    assert found[0].startswith(f"{recipe}: `{key}`: ") and " Fix: " in found[0], found[0]
    return found[0]


def real_get_train_args(recipe: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """LLaMA-Factory's own launch-time validation on the recipe (no model is loaded by it)."""
    import torch
    import transformers
    from llamafactory.hparams.parser import get_train_args

    values = load_recipe(recipe)
    if not torch.cuda.is_available():
        values["use_cpu"] = True
    monkeypatch.chdir(tmp_path)  # output_dir is inspected relative to the working folder
    monkeypatch.setenv("LLAMAFACTORY_VERBOSITY", "WARN")
    try:
        get_train_args(values)
    finally:
        transformers.utils.logging.set_verbosity_warning()


# ----------------------------------------------------------------------------------------------
# The repository's recipes
# ----------------------------------------------------------------------------------------------


def test_every_repository_recipe_passes_the_check(repo_root: Path) -> None:
    recipes = default_recipe_paths(repo_root / "recipes")
    assert {path.name for path in recipes} >= {"clinical_br_llama2.yaml", "clinical_br_mistral.yaml", Path(SFT).name}
    result = run_check(repo_root)
    assert result.returncode == 0, result.stderr
    for path in recipes:
        assert f"{path.name}: ok" in result.stdout


def test_every_repository_recipe_passes_with_its_data_prepared(repo_copy: Path) -> None:
    """With every registered file present, `--prepared` (prepared=True) passes too."""
    for name, entry in load_registry(repo_copy / "dataset_info.json").items():
        target = repo_copy / entry["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"text": f"one record of {name}"})  # one distinct record each: an empty file is a problem of its own
        target.write_text(f"[{record}]\n" if target.suffix == ".json" else f"{record}\n", encoding="utf-8")
    failing = {path.name: problems_of(path, prepared=True) for path in default_recipe_paths(repo_copy / "recipes")}
    assert not {name: problems for name, problems in failing.items() if problems}


@pytest.mark.parametrize("recipe", sorted(path.name for path in default_recipe_paths(Path(__file__).resolve().parents[1] / "recipes")))
def test_llamafactory_launch_validation_accepts_every_repository_recipe(
    recipe: str, repo_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_get_train_args(repo_root / "recipes" / recipe, monkeypatch, tmp_path)


def test_qlora_sft_recipes_warm_up_before_the_constant_rate(repo_root: Path) -> None:
    for recipe in QLORA_SFT_RECIPES:
        values = load_recipe(repo_root / recipe)
        assert values["lr_scheduler_type"] == "constant_with_warmup" and values["warmup_steps"] == 0.03, recipe


def test_translation_recipe_claims_no_decoding_value_of_the_report(repo_root: Path) -> None:
    """The MIMIC-CXR-PT-BR report gives no decoding values: none is a paper value or tagged [report]."""
    assert not {"do_sample", "temperature", "top_p", "repetition_penalty"} & set(PAPER_VALUES["mimic_cxr_translate_medgemma27b"])
    for line in (repo_root / TRANSLATE).read_text(encoding="utf-8").splitlines():
        if line.split(":")[0] in {"do_sample", "temperature", "top_p", "repetition_penalty", "max_new_tokens"}:
            assert "[report]" not in line and "[ours]" in line, line


# ----------------------------------------------------------------------------------------------
# Defect 1: model ids
# ----------------------------------------------------------------------------------------------


def test_the_nonexistent_mistral_id_fails_with_a_did_you_mean(repo_copy: Path) -> None:
    set_key(repo_copy / MISTRAL, "model_name_or_path", "mistralai/Mistral-7B-v0.2")
    problem = one_problem(repo_copy / MISTRAL, "model_name_or_path", "does not exist on the Hub")
    assert "did you mean mistral-community/Mistral-7B-v0.2?" in problem
    assert "Fix: write `mistral-community/Mistral-7B-v0.2`" in problem


@pytest.mark.parametrize(
    ("key", "written", "meant"),
    [
        ("model_name_or_path", "BioMistral/BioMistral-7b", "BioMistral/BioMistral-7B"),
        ("model_name_or_path", "meta-llama/Llama-2-7b", "meta-llama/Llama-2-7b-hf"),
        ("ref_model", "BioMistral/Biomistral-7B", "BioMistral/BioMistral-7B"),
    ],
)
def test_an_unknown_hub_id_fails_with_the_closest_known_id(repo_copy: Path, key: str, written: str, meant: str) -> None:
    set_key(repo_copy / DPO, key, written)
    problem = one_problem(repo_copy / DPO, key, "is neither in the base-model table")
    assert f"did you mean {meant}?" in problem


def test_local_paths_and_table_ids_pass_and_encoders_fail(repo_copy: Path) -> None:
    recipe = repo_copy / SFT
    (repo_copy / "models" / "mine").mkdir(parents=True)
    for value in ("models/mine", "./saves/not_yet_merged", "/opt/models/biomistral", "clibrain/lince-mistral-7b-it-es"):
        set_key(recipe, "model_name_or_path", value)
        assert not [p for p in problems_of(recipe) if "base-model table" in p or "on the Hub" in p], value
    set_key(recipe, "model_name_or_path", "neuralmind/bert-base-portuguese-cased")
    one_problem(recipe, "model_name_or_path", "is an encoder")


def test_every_model_id_the_repository_names_is_in_the_base_model_table(repo_root: Path) -> None:
    """Docs, recipes, paper values and code: any Hub id of a known owner must be a table entry."""
    owners = sorted({model_id.split("/")[0] for model_id in BASE_MODELS if "/" in model_id})
    pattern = re.compile(rf"(?<![\w./-])((?:{'|'.join(map(re.escape, owners))})/[\w.-]*\w)")
    files = [repo_root / "README.md", *(repo_root / "docs").rglob("*.md"), *(repo_root / "recipes").rglob("*.yaml"),
             *(repo_root / "recipes").rglob("*.md"), *(repo_root / "medfactory").rglob("*.yaml"), *(repo_root / "eval").rglob("*.py")]  # fmt: skip
    # the table names the ids that do not exist (mistaken_for); the changelog is history and names the ids it replaced
    files = [path for path in files if path.name not in ("base_models.yaml", "CHANGELOG.md")]
    meant = {mistaken: model.model_id for model in BASE_MODELS.values() for mistaken in model.mistaken_for}
    unknown = {
        f"{path.relative_to(repo_root)}: {match}"
        for path in files
        for line in path.read_text("utf-8").splitlines()
        for match in pattern.findall(line)
        if match not in BASE_MODELS and (match not in meant or meant[match] not in line)  # a known mistake beside the right id is fine
    }
    assert not unknown, sorted(unknown)
    for recipe, values in PAPER_VALUES.items():
        for key in ("model_name_or_path", "ref_model"):
            assert values.get(key) in (None, *BASE_MODELS), (recipe, key)


def test_base_model_table_lineage_and_sources() -> None:
    assert share_root("BioMistral/BioMistral-7B", "clibrain/lince-mistral-7b-it-es")  # both from Mistral-7B-v0.1
    assert not share_root("BioMistral/BioMistral-7B", "mistral-community/Mistral-7B-v0.2")
    assert not share_root("BioMistral/BioMistral-7B", "clibrain/Llama-2-7b-ft-instruct-es")
    assert suggest_model_id("mistralai/Mistral-7B-v0.2") == "mistral-community/Mistral-7B-v0.2"
    for model in BASE_MODELS.values():
        assert model.card == f"https://huggingface.co/{model.model_id}" or model.model_id == "xlm-roberta-large", model
        assert isinstance(model.gated, bool)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("a/b: {kind: causal_lm, family: llama, config: null, config_note: x, derived_from: null, gated: false}", "needs kind, family"),
        ("a/b: {kind: causal_lm, family: llama, config: null, config_note: x, derived_from: c/d, gated: false, card: 'https://x'}", "derives from"),
        ("a/b: {kind: causal_lm, family: llama, config: nope, config_note: x, derived_from: null, gated: false, card: 'https://x'}", "names config"),
        ("a/b: {kind: causal_lm, family: llama, config: null, config_note: x, derived_from: null, gated: false, card: 'x'}", "URL of its model card"),
        ("a/b: {kind: llm, family: llama, config: null, config_note: x, derived_from: null, gated: false, card: 'https://x'}", "has kind"),
    ],
)
def test_base_model_table_errors_name_the_entry_and_the_field(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=rf"base_models.yaml: 'a/b' .*{re.escape(error)}"):
        load_base_models(text)


# ----------------------------------------------------------------------------------------------
# Defects 3 and 5: silently ignored values, launch-time refusals, types, unprepared datasets
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", QLORA_SFT_RECIPES)
@pytest.mark.parametrize("warmup_key", ["warmup_steps", "warmup_ratio"])
def test_constant_schedule_with_warmup_fails(repo_copy: Path, recipe: str, warmup_key: str) -> None:
    set_key(repo_copy / recipe, "lr_scheduler_type", "constant")
    set_key(repo_copy / recipe, "warmup_steps", None)
    set_key(repo_copy / recipe, warmup_key, "0.03")
    problem = one_problem(repo_copy / recipe, "lr_scheduler_type", "silently ignored", f"`{warmup_key}: 0.03`")
    assert "use `lr_scheduler_type: constant_with_warmup`" in problem


def test_full_finetuning_of_a_4bit_model_fails_as_llamafactory_does(repo_copy: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    set_key(repo_copy / SFT, "finetuning_type", "full")
    problem = one_problem(repo_copy / SFT, "quantization_bit", "`finetuning_type: full`", "Quantization is only compatible with the LoRA or OFT method.")
    assert "set `finetuning_type: lora`" in problem
    with pytest.raises(ValueError, match="Quantization is only compatible"):
        real_get_train_args(repo_copy / SFT, monkeypatch, tmp_path)


def test_pretraining_with_predict_with_generate_fails_as_llamafactory_does(repo_copy: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    set_key(repo_copy / MISTRAL, "model_name_or_path", "mistral-community/Mistral-7B-v0.2")  # only the planted defect
    set_key(repo_copy / MISTRAL, "predict_with_generate", "true")
    problem = one_problem(repo_copy / MISTRAL, "predict_with_generate", "`stage: pt`", "cannot be set as True except SFT")
    assert "generate with `stage: sft`" in problem
    with pytest.raises(ValueError, match="cannot be set as True except SFT"):
        real_get_train_args(repo_copy / MISTRAL, monkeypatch, tmp_path)


def test_sft_predict_without_predict_with_generate_fails_as_llamafactory_does(
    repo_copy: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_key(repo_copy / TRANSLATE, "predict_with_generate", None)
    problem = one_problem(repo_copy / TRANSLATE, "do_predict", "Please enable `predict_with_generate`")
    assert "add `predict_with_generate: true`" in problem
    # and its decoding settings would be ignored: nothing generates
    one_problem(repo_copy / TRANSLATE, "temperature", "silently ignored", "`predict_with_generate: false` (the default)")
    with pytest.raises(ValueError, match="Please enable `predict_with_generate`"):
        real_get_train_args(repo_copy / TRANSLATE, monkeypatch, tmp_path)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("learning_rate", "fast", "expects a number"),
        ("lora_rank", "64.5", "expects an integer"),
        ("bf16", '"yes"', "expects true or false"),
        ("cutoff_len", '"2048"', "expects an integer"),
        ("dataset", "42", "expects a string"),
        ("eval_strategy", "no", "YAML reads a bare no"),  # YAML 1.1: a bare no is false
    ],
)
def test_wrong_types_fail_before_training(repo_copy: Path, key: str, value: str, expected: str) -> None:
    set_key(repo_copy / SFT, key, value)
    problem = one_problem(repo_copy / SFT, key, expected, "the parser accepts this")
    assert "Fix: write " in problem or 'Fix: quote the word: `eval_strategy: "no"`' in problem


def test_a_wrong_type_passes_llamafactorys_own_parser(repo_copy: Path) -> None:
    """Why the type check exists: LLaMA-Factory's parser keeps `learning_rate: fast` as a string."""
    import torch
    from llamafactory.hparams.parser import _parse_train_args

    values = load_recipe(repo_copy / SFT) | {"learning_rate": "fast", "use_cpu": not torch.cuda.is_available()}
    assert _parse_train_args(values)[2].learning_rate == "fast"


def test_val_size_with_eval_dataset_fails(repo_copy: Path) -> None:
    set_key(repo_copy / SFT, "eval_dataset", "head_qa_es_dpo")
    problem = one_problem(repo_copy / SFT, "val_size", "Cannot specify `val_size` if `eval_dataset` is not None.")
    assert "remove `val_size`" in problem


@pytest.mark.parametrize(
    ("recipe", "changes", "key", "expected"),
    [
        (SFT, {"quantization_bit": None}, "quantization_type", "nothing is quantized"),
        (SFT, {"quantization_bit": "8"}, "double_quantization", "only bitsandbytes 4-bit"),
        (SFT, {"eval_strategy": "epoch"}, "eval_steps", "`eval_strategy: epoch`"),
        (SFT, {"eval_strategy": '"no"'}, "val_size", "never evaluated"),
        (SFT, {"oft_target": "q_proj"}, "oft_target", "never reads it"),
        (SFT, {"pref_beta": "0.1"}, "pref_beta", "dpo and kto trainers only"),
        (DPO, {"ref_model": None}, "ref_model_adapters", "reads them only with `ref_model`"),
        (DPO, {"pref_loss": "simpo"}, "ref_model", "use_ref_model is false"),
        (TRANSLATE, {"do_sample": "false"}, "temperature", "only when sampling"),
        (TRANSLATE, {"max_length": "4096"}, "max_length", "drops `max_length`"),
    ],
)
def test_other_silently_ignored_values_fail(repo_copy: Path, recipe: str, changes: dict, key: str, expected: str) -> None:
    for name, value in changes.items():
        set_key(repo_copy / recipe, name, value)
    one_problem(repo_copy / recipe, key, "silently ignored", expected)


def test_unprepared_dataset_warns_by_default_and_fails_when_asked(repo_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    recipe = repo_copy / SFT
    report = inspect_recipe(recipe)
    assert report.problems == []
    assert [warning.key for warning in report.warnings] == ["dataset"]
    with caplog.at_level(logging.WARNING, logger="medfactory.recipes.check"):
        assert check_recipe(recipe) == []
    assert "dataset `head_qa_es_sft` is registered but not prepared" in caplog.text

    problem = one_problem(recipe, "dataset", "`head_qa_es_sft` is registered but not prepared", prepared=True)
    assert "data/head_qa_es/sft_train.json is missing" in problem
    assert "run `medfactory prepare head_qa --source /data/head_qa --language es`" in problem  # the recipe's own command

    (repo_copy / "data" / "head_qa_es").mkdir(parents=True)
    (repo_copy / "data" / "head_qa_es" / "sft_train.json").write_text('[{"instruction": "q", "input": "", "output": "a"}]\n', encoding="utf-8")
    assert check_recipe(recipe, prepared=True) == []


def test_unprepared_dataset_names_the_plugin_that_prepares_it(repo_copy: Path) -> None:
    problem = one_problem(repo_copy / MISTRAL, "dataset", "`lopes2019` is registered but not prepared", prepared=True)
    assert "run `medfactory prepare lopes2019`" in problem


@pytest.mark.parametrize(
    ("recipe", "dataset", "command"),
    [
        # the owner tag decides, not the folder's prefix: head_qa_en_translated_es is written by a generation step, not the head_qa plugin
        ("spanish_medical_sft_mix.yaml", "head_qa_en_translated_es", "run `medfactory generate translate --kind mcq --source data/head_qa_en/train.jsonl"),
        ("spanish_medical_sft_mix.yaml", "qa_es", "run `medfactory generate qa --source data/documents_es/chunks.jsonl"),
        # a command named in the header's prose is not a command to run; the owner's plugin is
        ("spanish_medical_pt.yaml", "spanish_general_replay_text", "run `medfactory prepare replay --source /data/general_es.jsonl --ratio 0.1"),
    ],
)
def test_unprepared_dataset_names_the_command_of_its_registry_owner(repo_copy: Path, recipe: str, dataset: str, command: str) -> None:
    problem = one_problem(repo_copy / "recipes" / recipe, "dataset", f"`{dataset}` is registered but not prepared", prepared=True)
    assert command in problem and not problem.rstrip(".").endswith("\\")


def test_a_prepared_but_empty_dataset_is_a_problem_naming_its_writer(repo_copy: Path) -> None:
    folder = repo_copy / "data" / "documents_es"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text('{"text": "Un documento."}\n', encoding="utf-8")
    (folder / "validation.jsonl").write_text("\n", encoding="utf-8")  # a held-out split that drew no document
    problem = one_problem(repo_copy / "recipes" / "spanish_medical_pt.yaml", "eval_dataset", "`documents_es_validation` has no records", prepared=True)
    assert "data/documents_es/validation.jsonl is empty" in problem and "run `medfactory prepare documents" in problem
    assert not [p for p in check_recipe(repo_copy / "recipes" / "spanish_medical_pt.yaml", prepared=True) if "`documents_es` has no records" in str(p)]
    (folder / "validation.jsonl").write_text(" [ ]\n", encoding="utf-8")
    assert has_no_records(folder / "validation.jsonl") is False  # a JSON Lines file is not read as a JSON array
    (folder / "empty.json").write_text(" [ \n ]", encoding="utf-8")
    assert has_no_records(folder / "empty.json") and not has_no_records(folder / "train.jsonl")


def test_cli_on_a_clean_clone_passes_and_prints_the_unprepared_warning(repo_copy: Path) -> None:
    result = run_check(repo_copy, SFT)
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "head_qa_es_sft` is registered but not prepared" in result.stderr


def test_an_existing_tokenized_cache_is_a_warning(repo_copy: Path) -> None:
    tokenized = repo_copy / load_recipe(repo_copy / SFT)["tokenized_path"]
    tokenized.mkdir(parents=True)
    (tokenized / "dataset_dict.json").write_text("{}", encoding="utf-8")
    report = inspect_recipe(repo_copy / SFT)
    assert report.problems == [] and "ignores dataset, cutoff_len" in str(report.warnings[-1])


# ----------------------------------------------------------------------------------------------
# The launch rules track LLaMA-Factory's source
# ----------------------------------------------------------------------------------------------


def _raised_messages(function) -> set[str]:
    messages = set()
    for node in ast.walk(ast.parse(inspect.getsource(function))):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            argument = node.exc.args[0]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                messages.add(argument.value)
    return messages


def test_every_launch_check_of_llamafactory_is_reproduced_or_named_environment_only() -> None:
    from llamafactory.hparams import parser

    raised = _raised_messages(parser.get_train_args) | _raised_messages(parser._verify_model_args)
    covered = {rule.says for rule in LAUNCH_RULES} | set(ENVIRONMENT_CHECKS)
    assert raised - covered == set(), "LLaMA-Factory gained launch checks: add them to LAUNCH_RULES"
    required = set()
    for node in ast.walk(ast.parse(inspect.getsource(parser._check_extra_dependencies))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "check_version":
            required.add(node.args[0].value)
    reproduced = {requirement for _, _, requirements in EXTRA_DEPENDENCIES for requirement in requirements}
    assert {r for r in required - reproduced if not r.startswith(("vllm", "sglang"))} == set()  # infer_backend is refused anyway


# ----------------------------------------------------------------------------------------------
# The rest of the check (paper values, policies, header, version rule)
# ----------------------------------------------------------------------------------------------


def test_typo_in_a_key_fails_with_a_suggestion(repo_copy: Path) -> None:
    edit(repo_copy / MISTRAL, "lora_dropout: 0.1", "lora_dropuot: 0.1")
    result = run_check(repo_copy, MISTRAL)
    assert result.returncode == 1
    assert "clinical_br_mistral.yaml: `lora_dropuot`: unknown key" in result.stderr
    assert "did you mean `lora_dropout`?" in result.stderr


def test_silently_ignored_quantization_method_fails(repo_copy: Path) -> None:
    with open(repo_copy / MISTRAL, "a", encoding="utf-8") as handle:
        handle.write("quantization_bit: 4\nquantization_method: bitsandbytes\n")
    result = run_check(repo_copy, MISTRAL)
    assert result.returncode == 1
    assert "`quantization_method`: `bitsandbytes` is accepted but silently ignored" in result.stderr
    assert "use `quantization_method: bnb`" in result.stderr


def test_invalid_enum_value_fails(repo_copy: Path) -> None:
    edit(repo_copy / MISTRAL, "stage: pt", "stage: pretrain")
    problems = problems_of(repo_copy / MISTRAL)
    assert any("`stage`: `pretrain` is not one of LLaMA-Factory's values" in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ("learning_rate: 2.0e-5", "learning_rate: 1.0e-4", "learning_rate", "uses 2e-05"),
        ("lora_rank: 8 ", "lora_rank: 16 ", "lora_rank", "uses 8"),
        ("lora_target: q_proj,v_proj", "lora_target: all", "lora_target", "uses 'q_proj,v_proj'"),
        ("cutoff_len: 32768", "cutoff_len: 4096", "cutoff_len", "uses 32768"),
    ],
)
def test_changed_paper_value_fails(repo_copy: Path, old: str, new: str, key: str, expected: str) -> None:
    edit(repo_copy / MISTRAL, old, new)
    drift = [str(p) for p in check_recipe(repo_copy / MISTRAL) if p.key == key]
    assert len(drift) == 1, drift
    assert f"clinical_br_mistral.yaml: `{key}`: is" in drift[0]
    assert expected in drift[0] and "Clinical-BR" in drift[0]


def test_changed_paper_value_fails_the_cli(repo_copy: Path) -> None:
    edit(repo_copy / MISTRAL, "lora_alpha: 16", "lora_alpha: 32")
    result = run_check(repo_copy, MISTRAL)
    assert result.returncode == 1
    assert "clinical_br_mistral.yaml: `lora_alpha`: is 32 but Clinical-BR" in result.stderr
    assert "1 of 1 recipes have problems" in result.stderr


def test_sixteen_bit_training_is_required(repo_copy: Path) -> None:
    edit(repo_copy / MISTRAL, "bf16: true", "bf16: false")
    assert any("16-bit" in problem for problem in problems_of(repo_copy / MISTRAL))


def test_unregistered_dataset_fails(repo_copy: Path) -> None:
    edit(repo_copy / MISTRAL, "dataset: semclinbr,brateca,lopes2019", "dataset: semclinbr,brateca,lopes2019,notes_hc")
    problems = problems_of(repo_copy / MISTRAL)
    assert any("dataset `notes_hc` is not registered" in problem and "medfactory prepare notes" in problem for problem in problems), problems


def test_remote_logging_and_overwrite_are_refused(repo_copy: Path) -> None:
    edit(repo_copy / MISTRAL, "report_to: none", "report_to: wandb")
    with open(repo_copy / MISTRAL, "a", encoding="utf-8") as handle:
        handle.write("overwrite_output_dir: true\n")
    problems = problems_of(repo_copy / MISTRAL)
    assert any("`report_to`: is 'wandb'" in problem for problem in problems)
    assert any("`overwrite_output_dir`" in problem for problem in problems)


def test_changed_value_without_version_bump_fails_and_bump_plus_lock_passes(repo_copy: Path) -> None:
    recipe = repo_copy / SFT
    version = read_header(recipe)["version"]
    edit(recipe, "save_steps: 200 ", "save_steps: 50 ")
    assert any(f"values changed but the version is still {version}" in problem for problem in problems_of(recipe))

    # A released version can never be re-locked with other values.
    with pytest.raises(ValueError, match="already locked with other values"):
        lock_recipes([recipe])

    bumped = version.rsplit(".", 1)[0] + "." + str(int(version.rsplit(".", 1)[1]) + 1)
    edit(recipe, f"# version: {version}", f"# version: {bumped}")
    assert any(f"no entry for `spanish_medical_qlora_sft {bumped}`" in problem for problem in problems_of(recipe))
    with open(repo_copy / "recipes" / "CHANGELOG.md", "a", encoding="utf-8") as handle:
        handle.write(f"\n## spanish_medical_qlora_sft {bumped}\nCheckpoint every 50 steps.\n")
    lock_recipes([recipe])
    assert check_recipe(recipe) == []


def test_missing_header_and_yaml_error_are_reported(repo_copy: Path) -> None:
    recipe = repo_copy / MISTRAL
    recipe.write_text(recipe.read_text(encoding="utf-8").replace("# source:", "# origin:", 1), encoding="utf-8")
    assert any("`# source:`: missing from the header" in problem for problem in problems_of(recipe))
    broken = repo_copy / "recipes" / "broken.yaml"
    broken.write_text("# recipe: broken\nstage: [pt\n", encoding="utf-8")
    problems = problems_of(broken)
    assert any("not valid YAML" in problem and "line" in problem for problem in problems), problems
