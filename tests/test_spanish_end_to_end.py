"""SpanishMedicalLLM on CPU with tiny local models, through the real recipes and CLIs, from documents to an evaluated model:
Spanish documents -> `prepare documents`; English MCQs -> `generate translate` and chunks -> `generate qa`, both through
tiny models served by `llamafactory-cli api` on 127.0.0.1, with their gates; general instructions -> `prepare replay`;
continued pretraining (spanish_medical_pt) -> export -> QLoRA SFT on the mix (HEAD-QA + generated + translated) -> DPO (the loss
moves away from its start) -> TIES merge with the instruct model the base derives from -> eval mcqa, raw and chat-templated."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medfactory.corpus.mcq import McqItem, write_items
from medfactory.corpus.synthetic_notes import generate_notes
from medfactory.run.tiny_model import build_tiny_model
from testing_utils.tiny_models import build_constant_answer_model


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


# What the two served models answer, whatever they are asked: a Spanish MCQ translation with 4 options (so the 5-option
# sources fail the option-count gate), and three Q&A records of which the third repeats the first's question.
ES_MCQ = {
    "question": "¿Cuál es el tratamiento inicial de la hipertensión arterial en un adulto sin otras enfermedades conocidas?",
    "options": ["Un diurético tiazídico", "Un antibiótico macrólido", "Un inhibidor de la bomba de protones", "Una benzodiacepina de acción corta"],
}
QA = [
    {"question": "¿Qué hormona reduce la glucosa en la sangre?", "answer": "La insulina reduce la glucosa en la sangre"},
    {"question": "¿Qué órgano produce la insulina?", "answer": "El páncreas produce la insulina"},
    {"question": "¿qué hormona reduce la glucosa en la sangre?", "answer": "La insulina reduce la glucosa"},
]
DOCUMENT = (
    "La diabetes es una enfermedad crónica en la que el páncreas no produce suficiente insulina. La insulina es la hormona que "
    "reduce la glucosa en la sangre después de cada comida. El tratamiento combina la dieta, el ejercicio físico y, cuando hace falta, "
    "los fármacos orales o la insulina. {extra} El médico revisa la hemoglobina glicosilada cada tres meses para ajustar la pauta."
)


EN_OPTIONS = ["A thiazide diuretic", "A macrolide antibiotic", "A proton pump inhibitor", "A short-acting benzodiazepine", "A loop diuretic"]


def english_mcqs(path: Path) -> Path:
    """Six 4-option and two 5-option English MCQs of a train split (never an evaluation split) in the MCQ format."""
    items = [
        McqItem(id=f"en-train-{i}", question=f"What is the initial treatment of high blood pressure in adult patient number {i} without other known diseases?",
                options=EN_OPTIONS[: 4 + (i >= 6)],
                answer=i % 4, letters=list("ABCDE"[: 4 + (i >= 6)]), category="medicine", year=2016, exam="synthetic_en", has_image=False, language="en")
        for i in range(8)
    ]  # fmt: skip
    write_items(path, items)
    return path


def spanish_documents(folder: Path) -> Path:
    """Six Spanish documents (.txt and .md; two under a topic folder) and one English one that the language check drops."""
    extras = ["La metformina es el primer fármaco.", "La retinopatía se vigila cada año.", "El pie diabético necesita cuidados diarios.",
              "La hipoglucemia se trata con azúcar.", "El ejercicio mejora la sensibilidad a la insulina.",
              "La fitoterapia no sustituye a la insulina."]  # fmt: skip
    (folder / "alternative_medicine").mkdir(parents=True)
    for i, extra in enumerate(extras):
        name = f"alternative_medicine/doc{i}.md" if i >= 4 else f"doc{i}.txt"
        (folder / name).write_text(("# Diabetes\n\n" if name.endswith(".md") else "") + DOCUMENT.format(extra=extra) + "\n", encoding="utf-8")
    (folder / "english.txt").write_text("Diabetes is a chronic disease in which the pancreas does not make enough insulin. " * 4, encoding="utf-8")
    return folder


def general_instructions(path: Path) -> Path:
    rows = [{"instruction": f"Escribe una frase sobre el tema {i}.", "input": "", "output": f"El tema {i} es interesante y útil."} for i in range(80)]
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


def export_merged(root: Path, model: Path, adapter: Path, target: Path) -> Path:
    """`llamafactory-cli export`: the continued-pretraining adapter merged into its base (recipes/spanish_medical_pt.yaml, `then:`)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = ["llamafactory-cli", "export", "--model_name_or_path", str(model), "--adapter_name_or_path", str(adapter),
               "--finetuning_type", "lora", "--template", "mistral", "--export_dir", str(target)]  # fmt: skip
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return target


def manifest(root: Path, name: str) -> dict:
    return json.loads((root / "data" / name / "manifest.json").read_text())


def generated_sets(root: Path, llamafactory_api, medfactory_cli) -> None:
    """Documents, translation and Q&A generation through served tiny models, with the gates' counts."""
    medfactory_cli(root, "prepare", "documents", "--source", str(spanish_documents(root / "docs")), "--language", "es", "--validation-fraction", "0.3")
    documents = manifest(root, "documents_es")
    assert documents["dropped"]["language_en"] == 1  # the English document
    chunks = [json.loads(line) for line in (root / "data/documents_es/chunks.jsonl").read_text().splitlines()]
    train_ids = {json.loads(line)["id"] for line in (root / "data/documents_es/train.jsonl").read_text().splitlines()}
    assert documents["splits"]["validation"]["documents"] >= 1  # the recipe's eval_dataset (an empty one stops LLaMA-Factory)
    assert chunks and {chunk["document_id"] for chunk in chunks} <= train_ids  # no chunk of a held-out document

    translator = llamafactory_api(build_constant_answer_model(root / "translator", json.dumps(ES_MCQ, ensure_ascii=False)))
    generator = llamafactory_api(build_constant_answer_model(root / "generator", json.dumps(QA, ensure_ascii=False)))
    translate = ["generate", "translate", "--kind", "mcq", "--source", str(english_mcqs(root / "en_train.jsonl")), "--source-language", "en",
                 "--target-language", "es", "--name", "head_qa_en_translated_es", "--endpoint", translator]  # fmt: skip
    medfactory_cli(root, *translate)
    translated = manifest(root, "head_qa_en_translated_es")
    assert translated["gates"]["option_count"] == 2 and translated["kept"] == 6, translated["gates"]
    items = [json.loads(line) for line in (root / "data/head_qa_en_translated_es/items.jsonl").read_text().splitlines()]
    assert [item["answer"] for item in items] == [i % 4 for i in range(6)] and {item["language"] for item in items} == {"es"}

    qa = ["generate", "qa", "--source", "data/documents_es/chunks.jsonl", "--name", "qa_es", "--language", "es", "--no-verify", "--endpoint", generator]
    medfactory_cli(root, *qa)
    generated = manifest(root, "qa_es")
    assert generated["dropped"]["duplicate"] >= 1 and generated["kept"] >= 2, generated["dropped"]
    # Killed or not, a rerun sends nothing already answered: with both servers gone it completes from the request cache.
    dead = "http://127.0.0.1:9/v1"
    medfactory_cli(root, *translate[:-1], dead, "--replace")
    medfactory_cli(root, *qa[:-1], dead, "--replace")
    assert manifest(root, "qa_es")["kept"] == generated["kept"]

    medfactory_cli(root, "prepare", "replay", "--source", str(general_instructions(root / "general.json")), "--ratio", "0.5", "--relative-to", "documents_es")


@pytest.mark.slow
def test_documents_to_generated_sets_to_pt_sft_mix_dpo_merge_and_mcqa(repo_copy: Path, shared_data_or_none: Path | None, llamafactory_api,
                                                                       llamafactory_train, medfactory_cli) -> None:  # fmt: skip
    root = repo_copy
    head_qa = shared_data_or_none / "head_qa" if shared_data_or_none else synthetic_head_qa(root / "head_qa_release")
    medfactory_cli(root, "prepare", "head_qa", "--source", str(head_qa), "--language", "es")
    sft_items = json.loads((root / "data" / "head_qa_es" / "sft_train.json").read_text())
    dpo_items = json.loads((root / "data" / "head_qa_es" / "dpo_train.json").read_text())
    assert not {row["id"] for row in sft_items} & {row["id"] for row in dpo_items}  # DPO never sees an SFT question
    generated_sets(root, llamafactory_api, medfactory_cli)
    medfactory_cli(root, "recipes", "check", "--prepared", "recipes/spanish_medical_pt.yaml", "recipes/spanish_medical_sft_mix.yaml")  # present, non-empty
    texts = [DOCUMENT.format(extra=""), json.dumps(ES_MCQ, ensure_ascii=False), json.dumps(QA, ensure_ascii=False)]
    model = build_tiny_model("mistral", [*generate_notes(100, seed=6), *(item["instruction"] for item in sft_items[:400]), *texts])
    cpu = {"bf16": "false", "preprocessing_num_workers": 1}

    pt = llamafactory_train(root, "recipes/spanish_medical_pt.yaml", model_name_or_path=model, max_steps=2, cutoff_len=128, eval_steps=2,
                            tokenized_path=root / "saves" / "tok_pt", output_dir=root / "saves" / "pt", **cpu)  # fmt: skip
    assert json.loads((pt / "adapter_config.json").read_text())["r"] == 8
    merged_pt = export_merged(root, model, pt, root / "saves" / "pt_merged")

    sft = llamafactory_train(root, "recipes/spanish_medical_sft_mix.yaml", model_name_or_path=merged_pt, max_steps=4, eval_steps=4,
                       tokenized_path=root / "saves" / "tok_sft", output_dir=root / "saves" / "sft", **cpu)  # fmt: skip
    assert json.loads((sft / "adapter_config.json").read_text())["r"] == 64

    # DPO from the SFT adapter with the SFT model as reference: the loss starts at ln 2 and moves.
    # The learning rate is raised for the tiny run only: at the recipe's 5e-6 six steps move nothing measurable.
    dpo = llamafactory_train(root, "recipes/spanish_medical_dpo.yaml", model_name_or_path=merged_pt, adapter_name_or_path=sft, ref_model=merged_pt,
                       ref_model_adapters=sft, max_steps=8, logging_steps=1, learning_rate=5e-3, output_dir=root / "saves" / "dpo", **cpu)  # fmt: skip
    losses = [r["loss"] for r in map(json.loads, (dpo / "trainer_log.jsonl").read_text().splitlines()) if "loss" in r]
    assert abs(losses[0] - math.log(2)) < 0.01, losses  # the reference is the SFT model itself
    assert max(abs(loss - losses[0]) for loss in losses[1:]) > 0.005, losses

    # The merge of the recipe: the Spanish medical model (the DPO adapter on its base) with the instruct model it derives from.
    instruct = instruct_sibling(merged_pt, root / "instruct")
    merged = root / "saves" / "ties"
    medfactory_cli(root, "merge", "recipes/merge/spanish_medical_ties.yaml", "--base-model", str(instruct), "--model", str(dpo), "--output", str(merged))
    merge_manifest = json.loads((merged / "merge_manifest.json").read_text())
    assert merge_manifest["method"] == "ties" and merge_manifest["recipe"]["version"] == "1.1.0"
    assert merge_manifest["base_model"]["path"] == str(instruct.resolve())
    assert merge_manifest["models"][0]["kind"] == "lora_adapter" and merge_manifest["models"][0]["merged_into"] == str(merged_pt)

    for prompt, extra in (("raw", []), ("chat", ["--chat-template", "mistral"])):
        out = root / "reports" / f"mcqa_{prompt}"
        medfactory_cli(root, "eval", "mcqa", "--items", "data/head_qa_es/test.jsonl", "--model", str(merged), "--out-dir", str(out), "--limit", "24", *extra)
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["n"] == 24 and 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1
        assert metrics["settings"]["chat_template"] == (None if prompt == "raw" else "mistral")
        per_item = (out / "per_item.csv").read_text().splitlines()
        assert len(per_item) == 25
    assert json.loads((root / "reports/mcqa_chat/metrics.json").read_text())["prompt"]["shape"].startswith("<s>[INST] Responde")
