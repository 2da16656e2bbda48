"""Likert completions through a served engine: a model of models.yaml with an `endpoint` is answered by
`llamafactory-cli api` (template `empty`, the recipe's `<s>` system), and its completions equal a predict run's
of the same model, greedy, note for note; a server that builds another prompt is caught before anything is cached."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medfactory.base.jsonl import read_jsonl, write_jsonl
from medfactory.corpus.synthetic_notes import generate_notes
from medfactory.run.tiny_model import build_tiny_model
from testing_utils.served_models import served


def likert_run(cwd: Path, models: str, study: str, *overrides: str) -> subprocess.CompletedProcess:
    (cwd / f"{study}.yaml").write_text(models, encoding="utf-8")
    command = [sys.executable, "-m", "medfactory.cli", "likert", "run", "--heldout", "heldout.jsonl", "--models", f"{study}.yaml", "--study", study]
    return subprocess.run([*command, *(a for o in overrides for a in ("--override", o))], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_served_completions_equal_the_predict_runs_and_a_wrong_server_template_is_refused(repo_copy: Path) -> None:
    root = repo_copy
    notes = list(generate_notes(200, seed=5))
    write_jsonl(root / "heldout.jsonl", ({"text": note, "id": f"note{i}"} for i, note in enumerate(notes[:4])))
    model = build_tiny_model("mistral", notes)
    greedy = ("bf16=false", "do_sample=false", "max_new_tokens=12", "per_device_eval_batch_size=1", "preprocessing_num_workers=1")
    recipe_server = ("--default_system", "<s>", "--repetition_penalty", "1.2")  # the recipe's prompt (BOS as system text) and penalty
    with served({"right": model, "wrong": model}, root, args={"right": recipe_server}) as endpoints:  # `wrong`: template empty, no BOS
        models = (f"models:\n  - {{name: predicted, model_name_or_path: {model}}}\n"
                  f"  - {{name: served, model_name_or_path: {model}, endpoint: '{endpoints['right']}', served_model: tiny}}\n")  # fmt: skip
        result = likert_run(root, models, "s1", *greedy)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        wrong = likert_run(root, f"models:\n  - {{name: no-bos, model_name_or_path: {model}, endpoint: '{endpoints['wrong']}'}}\n", "s2", *greedy)
    completions = read_jsonl(root / "reports/likert/s1/completions.jsonl")
    by_model = {name: {c["note_id"]: c["completion"] for c in completions if c["model"] == name} for name in ("predicted", "served")}
    assert len(by_model["served"]) == 4 and by_model["served"] == by_model["predicted"]
    assert any(text.strip() for text in by_model["served"].values())  # the tiny model continued the notes: the equality compares text
    summary = json.loads((root / "reports/likert/s1/runs/served/served_predict.json").read_text(encoding="utf-8"))
    assert summary["prompt_check"]["records_checked"] == 4 and summary["temperature"] == 0.0 and summary["max_tokens"] == 12
    assert summary["model"] == "tiny" and "repetition_penalty" in summary["recipe_values_not_sent"]

    assert wrong.returncode == 1
    assert "where template 'empty' builds" in wrong.stderr and "default_system '<s>'" in wrong.stderr and "nothing was written or cached" in wrong.stderr
    assert not (root / "reports/likert/s2/runs/no-bos/generated_predictions.jsonl").exists()
    assert not list((root / ".medfactory_cache" / "generate").glob("likert_s2_*"))
    assert not any(note[:30] in wrong.stderr for note in notes[:4])


def test_a_served_model_with_llamafactory_overrides_is_refused_naming_the_entry(tmp_path: Path) -> None:
    from medfactory.eval.likert.completions import load_models

    path = tmp_path / "models.yaml"
    path.write_text("models:\n  - {name: a, model_name_or_path: m, endpoint: 'http://127.0.0.1:8000/v1', overrides: {bf16: false}}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"models.yaml: model 1: `overrides` are llamafactory-cli values"):
        load_models(path)
    path.write_text("models:\n  - {name: a, model_name_or_path: m, endpoint: 8000}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"`endpoint` must be text"):
        load_models(path)


def test_a_whole_string_rendering_is_not_the_tokens_predict_builds(tmp_path: Path) -> None:
    """Why the served path keeps LLaMA-Factory's encoding (docs/generation.md): rendered as one string (what a chat
    template on vLLM's own endpoint does), BOS + excerpt tokenizes differently from the recipe's slots with the real
    Mistral-7B tokenizer, sometimes at the same length, which a prompt-length check cannot see."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from test_tokens import real_mistral_tokenizer, tokenizer_folder
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(tmp_path / "mistral", real_mistral_tokenizer()))
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template="empty", default_system="<s>"))
    excerpts = ["Paciente refere dor torácica.", " Paciente com febre", "HDA: dispneia\nHPP: HAS", "ÿ acentuação é ótima."]
    slots = [template.encode_oneturn(tokenizer, [{"role": "user", "content": e}, {"role": "assistant", "content": ""}])[0] for e in excerpts]
    whole = [tokenizer(tokenizer.bos_token + e, add_special_tokens=False)["input_ids"] for e in excerpts]
    assert all(ids[0] == tokenizer.bos_token_id for ids in slots)  # the recipe's system slot is the BOS
    differ = [s != w for s, w in zip(slots, whole, strict=True)]
    assert sum(differ) == 3 and not differ[1]  # only the excerpt that starts with a space tokenizes alike
    assert any(s != w and len(s) == len(w) for s, w in zip(slots, whole, strict=True))
