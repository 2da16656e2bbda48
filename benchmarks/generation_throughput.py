"""Benchmark: the LLM client's throughput (items/s, completion tokens/s) at concurrency 1, 2, 4.

Without ``--endpoint`` it builds the tests' tiny constant-answer model (tests/testing_utils, a tiny
Mistral that answers one token whatever the prompt) and serves it with ``llamafactory-cli api`` on
a free 127.0.0.1 port, so the numbers measure the client and the server's per-request overhead,
not a model's decoding. With ``--endpoint`` it measures a model you serve (vLLM, ``llamafactory-cli
api``). Each concurrency sends ``--requests`` distinct requests, without a cache, after one warm-up
phase. Numbers only: the prompts are synthetic and never printed.

    python benchmarks/generation_throughput.py                                  # tiny served model, 64 requests
    python benchmarks/generation_throughput.py --requests 200 --concurrency 1,4,16
    python benchmarks/generation_throughput.py --endpoint http://127.0.0.1:8000/v1 --model qwen --max-tokens 256
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medfactory.generate.client import ChatRequest, ClientSettings, LlmClient

ANSWER = "Respuesta constante."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def tiny_server(folder: Path, model: Path | None = None, extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """``model`` (default: the constant-answer model) served by ``llamafactory-cli api`` on CPU; yields its endpoint.

    The template is ``empty`` unless ``extra_args`` give another ``--template`` (the last one wins).
    """
    if model is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from testing_utils.tiny_models import build_constant_answer_model

        model = build_constant_answer_model(folder / "model", ANSWER)
    port = free_port()
    env = {**os.environ, "API_PORT": str(port), "API_HOST": "127.0.0.1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [str(Path(sys.executable).parent / "llamafactory-cli"), "api", "--model_name_or_path", str(model), "--template", "empty", *extra_args]
    with open(folder / "api.log", "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 180
        while True:
            if process.poll() is not None or time.time() > deadline:
                raise SystemExit(f"llamafactory-cli api did not start; see {folder / 'api.log'}")
            try:
                urllib.request.build_opener(urllib.request.ProxyHandler({})).open(endpoint + "/models", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)


def print_engine_table(items: int, rows: list[tuple[str, dict[str, float]]]) -> None:
    """Seconds and items/s of each engine: the generation alone, and the whole step (generation_engines.py, generation_images.py)."""
    width = max(len(name) for name, _ in rows)
    print(f"{'engine':<{width}} {'generation s':>12} {'items/s':>8} {'whole step s':>12} {'items/s':>8}")
    for name, row in rows:
        print(f"{name:<{width}} {row['generation_seconds']:>12.2f} {items / row['generation_seconds']:>8.1f} {row['step_seconds']:>12.2f} "
              f"{items / row['step_seconds']:>8.1f}")  # fmt: skip


def requests_for(count: int, tag: str, max_tokens: int) -> list[ChatRequest]:
    """Distinct synthetic requests (the tag keeps runs apart)."""
    return [
        ChatRequest(f"{tag}-{number}", ({"role": "user", "content": f"Pregunta de prueba {tag} {number}: ¿qué es la hipertensión?"},), max_tokens=max_tokens)
        for number in range(count)
    ]


def measure(endpoint: str, model: str, concurrency: int, count: int, max_tokens: int) -> dict[str, float]:
    """Send ``count`` requests at ``concurrency``; the client's summary numbers."""
    measured = LlmClient(ClientSettings(endpoint=endpoint, model=model, concurrency=concurrency, retries=0), None)
    for _ in measured.complete(requests_for(count, f"c{concurrency}", max_tokens), desc=f"concurrency {concurrency}"):
        pass
    summary = measured.summary
    return {"seconds": summary.seconds, "failed": summary.failed, "items_per_second": summary.items_per_second(),
            "completion_tokens_per_second": summary.completion_tokens_per_second()}  # fmt: skip


def report(endpoint: str, model: str, levels: list[int], count: int, max_tokens: int) -> None:
    print(f"endpoint {endpoint}, model {model!r}, {count} requests per concurrency, max_tokens {max_tokens}")
    warm = LlmClient(ClientSettings(endpoint=endpoint, model=model, concurrency=max(levels), retries=0), None)
    list(warm.complete(requests_for(8 * max(levels), "warmup", max_tokens), desc="warm-up"))  # the server's first requests are slow
    print(f"{'concurrency':>11}  {'seconds':>8}  {'failed':>6}  {'items/s':>8}  {'completion tokens/s':>19}")
    for level in levels:
        row = measure(endpoint, model, level, count, max_tokens)
        print(f"{level:>11}  {row['seconds']:>8.2f}  {row['failed']:>6}  {row['items_per_second']:>8.1f}  {row['completion_tokens_per_second']:>19.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="An OpenAI-compatible endpoint to measure (default: serve the tiny constant-answer model)")
    parser.add_argument("--model", default="tiny", help="The served model's name")
    parser.add_argument("--requests", type=int, default=64, help="Requests per concurrency level")
    parser.add_argument("--concurrency", default="1,2,4", help="Comma-separated concurrency levels")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",") if level.strip()]
    if args.endpoint:
        report(args.endpoint, args.model, levels, args.requests, args.max_tokens)
        return
    with tempfile.TemporaryDirectory(prefix="generation-throughput-") as folder, tiny_server(Path(folder)) as endpoint:
        report(endpoint, args.model, levels, args.requests, args.max_tokens)


if __name__ == "__main__":
    main()
