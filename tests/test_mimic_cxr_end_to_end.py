"""MIMIC-CXR-PT-BR end to end on CPU with tiny local models, through the real recipes and CLIs:
MIMIC layout (from the Indiana reports when ../shared has them) -> translation predict -> the
Portuguese multimodal set -> QLoRA SFT of a tiny Gemma 3 image-text model -> predict for the three
scenarios -> BERTScore, chrF, BLEU, ROUGE-L and the box plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfactory.base.jsonl import read_jsonl
from medfactory.corpus.synthetic_notes import generate_notes
from testing_utils.synthetic_mimic import build_mimic_layout_from_indiana
from testing_utils.tiny_models import build_constant_answer_model, build_tiny_bert, build_tiny_gemma3_text, build_tiny_gemma3_vlm, build_tiny_xlmr

# What the stand-in translator always answers: a complete Portuguese report, long enough for any
# Indiana report (the longest is 1,428 characters; a translation must keep at least half).
PORTUGUESE_REPORT = (
    "ACHADOS: Coração de tamanho normal. Mediastino sem alterações. Os pulmões estão limpos, sem "
    "consolidação, derrame pleural ou pneumotórax. Não há sinais de edema pulmonar. As estruturas "
    "ósseas não apresentam alterações agudas. Seios costofrênicos livres. Traqueia centrada. Hilos "
    "pulmonares de aspecto habitual, sem linfonodomegalia. Cúpulas diafragmáticas bem definidas, "
    "sem elevação. Partes moles da parede torácica sem alterações. Não há corpo estranho.\n\n"
    "IMPRESSÃO: Sem doença cardiopulmonar aguda. Exame dentro dos limites da normalidade para a "
    "idade, sem achados que justifiquem investigação adicional neste momento."
)


@pytest.mark.slow
def test_mimic_cxr_ptbr_chain_on_tiny_models(repo_copy: Path, shared_data_or_none: Path | None, llamafactory_train, medfactory_cli) -> None:
    root = repo_copy
    indiana = shared_data_or_none / "iu_xray_reports" if shared_data_or_none else None
    source = build_mimic_layout_from_indiana(indiana, root / "physionet", {"train": 8, "validate": 4, "test": 4}, seed=3)
    medfactory_cli(root, "prepare", "mimic_cxr", "--source", str(source), "--train", "6", "--validation", "3", "--test", "4")
    studies = read_jsonl(root / "data" / "mimic_cxr" / "studies.jsonl")
    assert [s["split"] for s in studies].count("test") == 4
    assert all(1 <= len(s["images"]) <= 2 for s in studies)

    cpu = {"bf16": "false", "preprocessing_num_workers": 1}
    texts = [*generate_notes(200, seed=2), PORTUGUESE_REPORT, *(s["report_en"] for s in studies)]
    # The translation recipe as written runs with a tiny text-only Gemma 3 (template `gemma`) ...
    llamafactory_train(root, "recipes/mimic_cxr_translate_medgemma27b.yaml", model_name_or_path=build_tiny_gemma3_text(texts),
                 max_new_tokens=8, output_dir=root / "saves" / "translate_gemma3", **cpu)  # fmt: skip
    # ... and a tiny model that can only answer one Portuguese report gives translations to keep.
    translator = build_constant_answer_model(root / "translator", PORTUGUESE_REPORT, eos_token="<end_of_turn>")
    translations = llamafactory_train(root, "recipes/mimic_cxr_translate_medgemma27b.yaml", model_name_or_path=translator,
                                do_sample="false", max_new_tokens=8, output_dir=root / "saves" / "translate", **cpu)  # fmt: skip
    medfactory_cli(root, "prepare", "mimic-cxr-ptbr", "--translations", str(translations / "generated_predictions.jsonl"))
    train = json.loads((root / "data" / "mimic_cxr_ptbr" / "train.json").read_text())
    assert train and all(item["messages"][0]["content"].count("<image>") == len(item["images"]) for item in train)
    assert all(item["messages"][1]["content"] == PORTUGUESE_REPORT for item in train)

    vlm = build_tiny_gemma3_vlm(texts)
    adapter = llamafactory_train(root, "recipes/medgemma_cxr_ptbr_lora.yaml", model_name_or_path=vlm, max_steps=2,
                           output_dir=root / "saves" / "lora", tokenized_path=root / "saves" / "tokenized", **cpu)  # fmt: skip
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"], adapter_config["lora_dropout"]) == (16, 16, 0.05)
    assert not any("vision" in module for module in adapter_config["target_modules"])  # the language model only

    scenarios = {}
    for scenario, extra in (("zeroshot", {}), ("fewshot", {}), ("lora", {"adapter_name_or_path": adapter})):
        run = llamafactory_train(root, f"recipes/medgemma_cxr_ptbr_predict_{scenario}.yaml", model_name_or_path=vlm,
                           max_new_tokens=12, output_dir=root / "saves" / f"predict_{scenario}", **extra, **cpu)  # fmt: skip
        predictions = (run / "generated_predictions.jsonl").read_text().splitlines()
        assert len(predictions) == len(json.loads((root / "data" / "mimic_cxr_ptbr" / "test_ids.json").read_text()))
        scenarios[scenario] = run / "generated_predictions.jsonl"
    fewshot_prompt = json.loads(scenarios["fewshot"].read_text().splitlines()[0])["prompt"]
    assert "Exemplo de relatório" in fewshot_prompt

    bert, xlmr = build_tiny_bert(texts), build_tiny_xlmr(texts)
    out = root / "reports" / "bertscore"
    medfactory_cli(root, "eval", "bertscore", "--references", "data/mimic_cxr_ptbr/test_references.jsonl", "--out-dir", str(out),
               *(arg for name, path in scenarios.items() for arg in ("--scenario", f"{name}={path}")),
               "--pt-model", str(bert), "--pt-layers", "2", "--xlmr-model", str(xlmr), "--xlmr-layers", "2")  # fmt: skip
    per_item = (out / "per_item.csv").read_text().splitlines()
    assert len(per_item) == 1 + 3 * 4
    for config in ("bertimbau", "xlmr"):
        for metric in ("precision", "recall", "f1"):
            assert (out / "figures" / f"{config}_{metric}.png").stat().st_size > 1000
    settings = json.loads((out / "settings.json").read_text())
    assert "bertimbau" in json.dumps(settings) and "xlmr" in json.dumps(settings)
