"""SpanishMedicalLLM on CPU with tiny local models, through the real recipes and CLIs:
HEAD-QA (SFT and DPO sets from disjoint train questions) -> QLoRA SFT -> DPO (the loss moves away from
its start) -> TIES merge with the instruct model the base derives from -> eval mcqa, raw and chat-templated."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from medfactory.corpus.synthetic_notes import generate_notes
from medfactory.run.tiny_model import build_tiny_model


def synthetic_head_qa(folder: Path) -> Path:
    """A small HEAD-QA release in the official layout, for machines without ../shared."""
    exams = {}
    for year, n_options in ((2013, 5), (2016, 4)):
        data = [
            {"qid": str(q), "qtext": f"Pregunta {q} del examen {year}: ¿cuál es el fármaco de elección en el caso {q}?",
             "ra": str(1 + q % n_options), "image": "",
             "answers": [{"aid": a + 1, "atext": f"Fármaco {chr(65 + a)} para el caso {q}."} for a in range(n_options)]}
            for q in range(1, 41)
        ]  # fmt: skip
        exams[f"Cuaderno_{year}_1_M"] = {"name": f"Cuaderno_{year}_1_M", "category": "medicine", "year": str(year), "data": data}
    (folder / "es").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (folder / "es" / f"{split}_HEAD.json").write_text(json.dumps({"version": "1.0", "language": "es", "exams": exams}, ensure_ascii=False))
    return folder


def instruct_sibling(model: Path, target: Path) -> Path:
    """A stand-in for the instruct model the base was pre-trained from: the same weights, each moved by 1 % of its spread."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(model, target)
    generator = torch.Generator().manual_seed(11)
    weights = load_file(str(model / "model.safetensors"))
    moved = {name: t + 0.01 * t.float().std().nan_to_num(0.0) * torch.randn(t.shape, generator=generator) for name, t in weights.items()}
    save_file({name: t.contiguous() for name, t in moved.items()}, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


@pytest.mark.slow
def test_qlora_sft_dpo_merge_and_mcqa(repo_copy: Path, shared_data_or_none: Path | None, llamafactory_train, medfactory_cli) -> None:
    root = repo_copy
    head_qa = shared_data_or_none / "head_qa" if shared_data_or_none else synthetic_head_qa(root / "head_qa_release")
    medfactory_cli(root, "prepare", "head_qa", "--source", str(head_qa), "--language", "es")
    sft_items = json.loads((root / "data" / "head_qa_es" / "sft_train.json").read_text())
    dpo_items = json.loads((root / "data" / "head_qa_es" / "dpo_train.json").read_text())
    assert not {row["id"] for row in sft_items} & {row["id"] for row in dpo_items}  # DPO never sees an SFT question
    model = build_tiny_model("mistral", [*generate_notes(100, seed=6), *(item["instruction"] for item in sft_items[:400])])
    cpu = {"bf16": "false", "preprocessing_num_workers": 1}

    sft = llamafactory_train(root, "recipes/spanish_medical_qlora_sft.yaml", model_name_or_path=model, max_steps=4, eval_steps=4,
                       tokenized_path=root / "saves" / "tok_sft", output_dir=root / "saves" / "sft", **cpu)  # fmt: skip
    assert json.loads((sft / "adapter_config.json").read_text())["r"] == 64

    # DPO from the SFT adapter with the SFT model as reference: the loss starts at ln 2 and moves.
    # The learning rate is raised for the tiny run only: at the recipe's 5e-6 six steps move nothing measurable.
    dpo = llamafactory_train(root, "recipes/spanish_medical_dpo.yaml", model_name_or_path=model, adapter_name_or_path=sft, ref_model=model,
                       ref_model_adapters=sft, max_steps=8, logging_steps=1, learning_rate=5e-3, output_dir=root / "saves" / "dpo", **cpu)  # fmt: skip
    losses = [r["loss"] for r in map(json.loads, (dpo / "trainer_log.jsonl").read_text().splitlines()) if "loss" in r]
    assert abs(losses[0] - math.log(2)) < 0.01, losses  # the reference is the SFT model itself
    assert max(abs(loss - losses[0]) for loss in losses[1:]) > 0.005, losses

    # The merge of the recipe: the Spanish medical model (the DPO adapter on its base) with the instruct model it derives from.
    instruct = instruct_sibling(model, root / "instruct")
    merged = root / "saves" / "ties"
    medfactory_cli(root, "merge", "recipes/merge/spanish_medical_ties.yaml", "--base-model", str(instruct), "--model", str(dpo), "--output", str(merged))
    manifest = json.loads((merged / "merge_manifest.json").read_text())
    assert manifest["method"] == "ties" and manifest["recipe"]["version"] == "1.1.0"
    assert manifest["base_model"]["path"] == str(instruct.resolve())
    assert manifest["models"][0]["kind"] == "lora_adapter" and manifest["models"][0]["merged_into"] == str(model)  # as LLaMA-Factory recorded it

    for prompt, extra in (("raw", []), ("chat", ["--chat-template", "mistral"])):
        out = root / "reports" / f"mcqa_{prompt}"
        medfactory_cli(root, "eval", "mcqa", "--items", "data/head_qa_es/test.jsonl", "--model", str(merged), "--out-dir", str(out), "--limit", "24", *extra)
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["n"] == 24 and 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1
        assert metrics["settings"]["chat_template"] == (None if prompt == "raw" else "mistral")
        per_item = (out / "per_item.csv").read_text().splitlines()
        assert len(per_item) == 25
    assert json.loads((root / "reports/mcqa_chat/metrics.json").read_text())["prompt"]["shape"].startswith("<s>[INST] Responde")
