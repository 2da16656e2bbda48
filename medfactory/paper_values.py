"""The values each recipe must carry from its source paper: the one table `recipes check` enforces.

A recipe value that drifts from this table fails the check. Change the table only when the
source says so, and say where in the comment beside the value.
"""

from __future__ import annotations

from typing import Any

# Clinical-BR (Pinto et al., BRACIS 2024): continued pretraining set-up, shared by both models.
_CLINICAL_BR_COMMON: dict[str, Any] = {
    "stage": "pt",
    "finetuning_type": "lora",
    "lora_rank": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.1,
    "lora_target": "q_proj,v_proj",
    "optim": "adamw_torch",
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "learning_rate": 2.0e-5,
    "num_train_epochs": 2.0,
    "dataset": "semclinbr,brateca,lopes2019",
    # "16-bit training": bf16 or fp16 must be on; checked separately (either satisfies the paper).
}

PAPER_VALUES: dict[str, dict[str, Any]] = {
    "clinical_br_llama2": {**_CLINICAL_BR_COMMON, "model_name_or_path": "meta-llama/Llama-2-7b-hf", "cutoff_len": 4096},
    "clinical_br_mistral": {
        **_CLINICAL_BR_COMMON,
        "model_name_or_path": "mistralai/Mistral-7B-v0.2",
        "cutoff_len": 32768,
    },
}

# The Likert study's completions: the decoding the paper's error analysis settled on.
PAPER_VALUES["clinical_br_complete"] = {"temperature": 0.1, "repetition_penalty": 1.2, "do_sample": True}

# MIMIC-CXR-PT-BR (2025 technical report).
_MEDGEMMA_4B_4BIT = {"model_name_or_path": "google/medgemma-4b-it", "quantization_bit": 4, "quantization_method": "bnb", "image_max_pixels": 802816}
PAPER_VALUES["mimic_cxr_translate_medgemma27b"] = {
    "model_name_or_path": "google/medgemma-27b-text-it",
    "quantization_bit": 4,
    "quantization_method": "bnb",
    "do_sample": True,
}
PAPER_VALUES["medgemma_cxr_ptbr_lora"] = {
    **_MEDGEMMA_4B_4BIT,
    "finetuning_type": "lora",
    "lora_rank": 16,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "lora_target": "all",
    "freeze_vision_tower": True,
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 16,
    "num_train_epochs": 4.0,
    "dataset": "mimic_cxr_ptbr_train",
}
for _scenario, _dataset in (("zeroshot", "mimic_cxr_ptbr_test"), ("fewshot", "mimic_cxr_ptbr_test_fewshot"), ("lora", "mimic_cxr_ptbr_test")):
    PAPER_VALUES[f"medgemma_cxr_ptbr_predict_{_scenario}"] = {**_MEDGEMMA_4B_4BIT, "eval_dataset": _dataset}
PAPER_VALUES["medgemma_cxr_ptbr_predict_lora"]["adapter_name_or_path"] = "saves/medgemma_cxr_ptbr_lora"

# SpanishMedicalLLM (proposal, 2024): QLoRA as the QLoRA paper set it up, DPO continuing from SFT
# with the SFT model as reference.
_QLORA = {"quantization_bit": 4, "quantization_method": "bnb", "quantization_type": "nf4", "double_quantization": True, "lora_target": "all"}
for _name, _base in (
    ("spanish_medical_qlora_sft", "BioMistral/BioMistral-7B"),
    ("spanish_medical_replay_sft", "BioMistral/BioMistral-7B"),
    ("spanish_medical_qlora_sft_llama2_es", "clibrain/Llama-2-7b-ft-instruct-es"),
    ("spanish_medical_qlora_sft_lince_mistral", "clibrain/lince-mistral-7b-it-es"),
):
    PAPER_VALUES[_name] = {**_QLORA, "stage": "sft", "model_name_or_path": _base}
PAPER_VALUES["spanish_medical_replay_sft"]["mix_strategy"] = "interleave_under"
PAPER_VALUES["spanish_medical_dpo"] = {
    **{key: value for key, value in _QLORA.items() if key != "lora_target"},
    "stage": "dpo",
    "model_name_or_path": "BioMistral/BioMistral-7B",
    "adapter_name_or_path": "saves/spanish_medical_qlora_sft",
    "ref_model": "BioMistral/BioMistral-7B",
    "ref_model_adapters": "saves/spanish_medical_qlora_sft",
}

# Recipes whose paper trained in 16-bit: one of these keys must be true.
SIXTEEN_BIT_RECIPES = {"clinical_br_llama2", "clinical_br_mistral"}

PAPER_SOURCE = {
    "clinical_br_llama2": "Clinical-BR (Pinto et al., BRACIS 2024)",
    "clinical_br_mistral": "Clinical-BR (Pinto et al., BRACIS 2024)",
    "clinical_br_complete": "Clinical-BR (Pinto et al., BRACIS 2024), error analysis",
}
PAPER_SOURCE.update({name: "the MIMIC-CXR-PT-BR report" for name in PAPER_VALUES if "medgemma" in name})
PAPER_SOURCE.update({name: "the SpanishMedicalLLM proposal (QLoRA / DPO set-up)" for name in PAPER_VALUES if name.startswith("spanish_")})
