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

# Recipes whose paper trained in 16-bit: one of these keys must be true.
SIXTEEN_BIT_RECIPES = {"clinical_br_llama2", "clinical_br_mistral"}

PAPER_SOURCE = {
    "clinical_br_llama2": "Clinical-BR (Pinto et al., BRACIS 2024)",
    "clinical_br_mistral": "Clinical-BR (Pinto et al., BRACIS 2024)",
    "clinical_br_complete": "Clinical-BR (Pinto et al., BRACIS 2024), error analysis",
}
