#!/usr/bin/env bash
# One device call (<= 10 minutes): `medfactory bench` of training recipes on the GPU, each under its own
# time limit, every result JSON and console log into $OUT (the device tool brings $OUT back).
#
#   bash benchmarks/gpu_recipes.sh                        # the default set: the two Clinical-BR recipes and the Spanish QLoRA SFT
#   RECIPES="spanish_medical_dpo medgemma_cxr_ptbr_lora" PER_RECIPE_S=280 bash benchmarks/gpu_recipes.sh
#
# Random weights with the published configurations (medfactory/model_configs), 3 warm-up + 10 measured
# steps as written; the sweep does not fit one call (docs/benchmarks.md, "Device runs").
set -u
OUT="${OUT:-reports/bench}"
PER_RECIPE_S="${PER_RECIPE_S:-180}"
RECIPES="${RECIPES:-clinical_br_llama2 clinical_br_mistral spanish_medical_qlora_sft}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>&1 || true
for recipe in $RECIPES; do
  started=$(date +%s)
  timeout "$PER_RECIPE_S" medfactory bench "recipes/$recipe.yaml" --full-size --output "$OUT/$recipe.json" > "$OUT/$recipe.log" 2>&1
  echo "$recipe rc=$? seconds=$(( $(date +%s) - started ))" | tee -a "$OUT/summary.txt"
done
