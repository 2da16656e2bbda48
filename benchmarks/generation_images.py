"""Benchmark: the MIMIC-CXR-PT-BR inference scenario (image + prompt -> report) through both engines, items/s of each.

The predict engine: ``llamafactory-cli train recipes/medgemma_cxr_ptbr_predict_zeroshot.yaml`` (its batch of 4;
greedy, 16-bit: a tiny model cannot be 4-bit quantized on CPU) on a registered set of ``--items`` image records.
The served engine: ``medfactory generate predict`` on the same set, each image sent as a base64 data-URL content
part to ``llamafactory-cli api`` serving the same model with the recipe's template and image size, at
``--concurrency``. The model is the tests' tiny Gemma 3 image-text model (MedGemma 4B's architecture: a SigLIP tower
at 896 x 896, 16 image tokens). It prints the seconds and items/s of the generation alone (the client's own timing;
LLaMA-Factory's ``predict_runtime``), and how many replies the two engines gave alike (batched predict pads on the
left, the server answers one at a time, so a tiny random model may differ on a few). On a CPU these numbers
measure each engine's overhead on the image pipeline, not a real model's decoding.

    python benchmarks/generation_images.py                  # 40 records, 16 new tokens
    python benchmarks/generation_images.py --items 200 --concurrency 8
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
PROMPT = "<image>Descreva os achados desta radiografia de tórax em português."
SERVER_ARGS = ("--template", "gemma3", "--image_max_pixels", "802816")  # the scenario recipe's template and image size


def write_image_set(root: Path, count: int) -> None:
    """``count`` records in the MIMIC-CXR-PT-BR sharegpt layout, each with its own 512 x 512 grey-level PNG."""
    import numpy as np
    from PIL import Image

    images = root / "data/bench_cxr"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = []
    for number in range(count):
        Image.fromarray(rng.integers(0, 256, (512, 512), dtype=np.uint8), mode="L").save(images / f"{number}.png")
        records.append({"messages": [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "Sem alterações agudas."}],
                        "images": [f"data/bench_cxr/{number}.png"]})  # fmt: skip
    (images / "test.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    registry = {"bench_cxr": {"file_name": "data/bench_cxr/test.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
                              "tags": tags}}  # fmt: skip
    (root / "dataset_info.json").write_text(json.dumps(registry), encoding="utf-8")


def served_run(root: Path, endpoint: str, concurrency: int, max_tokens: int) -> dict[str, float]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medfactory.cli", "generate", "predict", "--dataset", "bench_cxr", "--output-dir", "saves/served",
                    "--max-tokens", str(max_tokens), "--endpoint", endpoint, "--concurrency", str(concurrency)],
                   cwd=root, check=True, capture_output=True, text=True)  # fmt: skip
    client = json.loads((root / "saves/served/served_predict.json").read_text())["client"]
    return {"generation_seconds": client["seconds"], "step_seconds": time.perf_counter() - started}


def predict_run(root: Path, model: Path, max_tokens: int) -> dict[str, float]:
    overrides = {"model_name_or_path": model, "eval_dataset": "bench_cxr", "quantization_bit": "null", "do_sample": "false", "repetition_penalty": 1.0,
                 "bf16": "false", "max_new_tokens": max_tokens, "preprocessing_num_workers": 1, "output_dir": root / "saves/predicted"}  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    started = time.perf_counter()
    subprocess.run(["llamafactory-cli", "train", "recipes/medgemma_cxr_ptbr_predict_zeroshot.yaml", *(f"{k}={v}" for k, v in overrides.items())],
                   cwd=root, env=env, check=True, capture_output=True, text=True)  # fmt: skip
    results = json.loads((root / "saves/predicted/predict_results.json").read_text())
    return {"generation_seconds": results["predict_runtime"], "step_seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40, help="image records")
    parser.add_argument("--concurrency", type=int, default=4, help="the served engine's client concurrency")
    parser.add_argument("--max-tokens", type=int, default=16, help="new tokens per reply (both engines)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPOSITORY / "tests"))
    from testing_utils.tiny_models import build_tiny_gemma3_vlm

    with tempfile.TemporaryDirectory(prefix="generation-images-") as folder:
        root = Path(folder) / "root"
        root.mkdir()
        write_image_set(root, args.items)
        shutil.copytree(REPOSITORY / "recipes", root / "recipes")
        model = build_tiny_gemma3_vlm(["Descreva os achados desta radiografia de tórax em português.", "Sem alterações agudas."])
        with tiny_server(Path(folder), model, SERVER_ARGS) as endpoint:
            served = served_run(root, endpoint, args.concurrency, args.max_tokens)
        predicted = predict_run(root, model, args.max_tokens)
        rows = {name: [json.loads(line)["predict"] for line in (root / f"saves/{name}/generated_predictions.jsonl").read_text().splitlines()]
                for name in ("served", "predicted")}  # fmt: skip
    alike = sum(a == b for a, b in zip(rows["served"], rows["predicted"], strict=True))
    print(f"{args.items} image records, tiny Gemma 3 image-text model on CPU, {args.max_tokens} new tokens; replies alike across engines: {alike}/{args.items}")
    print_engine_table(args.items, [(f"served (api, concurrency {args.concurrency})", served), ("llamafactory-cli predict (batch 4)", predicted)])


if __name__ == "__main__":
    main()
