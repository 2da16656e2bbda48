"""Benchmark: one generation step (``generate translate --kind mcq``) through both engines, items/s of each.

The served engine: ``llamafactory-cli api`` serving the tests' tiny constant-answer model (a tiny Mistral that
answers a 4-option Spanish MCQ JSON whatever the prompt), the client at ``--concurrency``. The predict engine:
``generate translate --requests-only``, ``llamafactory-cli train`` predict on the requests set with
``recipes/mimic_cxr_translate_medgemma27b.yaml`` (greedy, 16-bit: a tiny model cannot be 4-bit quantized on CPU),
then ``generate translate --predictions``. It prints, per engine, the seconds and items/s of the generation alone
(the client's own timing; LLaMA-Factory's ``predict_runtime``) and of the whole step (model load included), and
whether the two runs wrote byte-identical outputs. On a CPU and a tiny model these numbers measure each engine's
overhead, not a model's decoding; a GPU run with the real model is what projects a corpus's translation time.

    python benchmarks/generation_engines.py                 # 200 items
    python benchmarks/generation_engines.py --items 1000 --concurrency 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from generation_throughput import print_engine_table, tiny_server

REPOSITORY = Path(__file__).resolve().parents[1]
OUTPUTS = ("items.jsonl", "sft.json", "translate_ids.json", "provenance.jsonl")


def write_source(path: Path, count: int) -> None:
    """``count`` distinct English 4-option MCQ items in the MCQ format."""
    options = ["A thiazide diuretic", "A macrolide antibiotic", "A proton pump inhibitor", "A short-acting benzodiazepine"]
    with open(path, "w", encoding="utf-8") as handle:
        for number in range(count):
            question = f"Question {number}: what is the initial treatment of high blood pressure in a patient without other diseases?"
            item = {"id": f"q{number}", "question": question, "options": options,
                    "answer": number % 4, "letters": list("ABCD"), "category": "medicine", "year": 2020, "exam": "bench", "has_image": False,
                    "language": "en"}  # fmt: skip
            handle.write(json.dumps(item) + "\n")


def medfactory(root: Path, *args: str) -> float:
    """Run ``medfactory ARGS`` in ``root``; its wall seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medfactory.cli", *args], cwd=root, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def served_run(root: Path, source: Path, endpoint: str, concurrency: int) -> dict[str, float]:
    seconds = medfactory(root, "generate", "translate", "--kind", "mcq", "--source", str(source), "--name", "bench_es", "--endpoint", endpoint,
                         "--concurrency", str(concurrency))  # fmt: skip
    client = json.loads((root / "data/bench_es/manifest.json").read_text())["client"]
    return {"generation_seconds": client["seconds"], "step_seconds": seconds, "items": client["requests"]}


def predict_run(root: Path, source: Path, model: Path) -> dict[str, float]:
    first = medfactory(root, "generate", "translate", "--kind", "mcq", "--source", str(source), "--name", "bench_es", "--requests-only")
    shutil.copytree(REPOSITORY / "recipes", root / "recipes")
    overrides = {"model_name_or_path": model, "eval_dataset": "bench_es_requests", "template": "empty", "quantization_bit": "null", "do_sample": "false",
                 "bf16": "false", "max_new_tokens": 128, "preprocessing_num_workers": 1, "output_dir": root / "saves/translate"}  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    started = time.perf_counter()
    subprocess.run(["llamafactory-cli", "train", "recipes/mimic_cxr_translate_medgemma27b.yaml", *(f"{k}={v}" for k, v in overrides.items())],
                   cwd=root, env=env, check=True, capture_output=True, text=True)  # fmt: skip
    predict_seconds = time.perf_counter() - started
    last = medfactory(root, "generate", "translate", "--kind", "mcq", "--source", str(source), "--name", "bench_es",
                      "--predictions", str(root / "saves/translate/generated_predictions.jsonl"))  # fmt: skip
    results = json.loads((root / "saves/translate/predict_results.json").read_text())
    return {"generation_seconds": results["predict_runtime"], "step_seconds": first + predict_seconds + last, "items": results.get("predict_samples")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200, help="MCQ items to translate")
    parser.add_argument("--concurrency", type=int, default=4, help="The served engine's client concurrency")
    args = parser.parse_args()
    sys.path.insert(0, str(REPOSITORY / "tests"))
    from testing_utils.tiny_models import build_constant_answer_model

    question = "¿Cuál es el tratamiento inicial de la hipertensión arterial en un paciente sin otras enfermedades?"
    options = ["Un diurético tiazídico", "Un antibiótico macrólido", "Un inhibidor de la bomba de protones", "Una benzodiacepina de acción corta"]
    answer = json.dumps({"question": question, "options": options}, ensure_ascii=False)  # the tests' reply: passes every gate
    with tempfile.TemporaryDirectory(prefix="generation-engines-") as folder:
        folder = Path(folder)
        source = folder / "source.jsonl"
        write_source(source, args.items)
        model = build_constant_answer_model(folder / "model", answer)
        roots = {name: folder / name for name in ("served", "predict")}
        for root in roots.values():
            root.mkdir()
            (root / "dataset_info.json").write_text("{}\n")
        with tiny_server(folder, model) as endpoint:
            served = served_run(roots["served"], source, endpoint, args.concurrency)
        predicted = predict_run(roots["predict"], source, model)
        same = all((roots["served"] / "data/bench_es" / name).read_bytes() == (roots["predict"] / "data/bench_es" / name).read_bytes() for name in OUTPUTS)
    print(f"{args.items} MCQ items, tiny constant-answer model on CPU; outputs identical across engines: {same}")
    print_engine_table(args.items, [(f"served (api, concurrency {args.concurrency})", served), ("llamafactory-cli predict", predicted)])


if __name__ == "__main__":
    main()
