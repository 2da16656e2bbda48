"""One benchmark run in its own process: LLaMA-Factory's own training entry point plus a timing callback.

``python -m medfactory.bench.worker ARGS.json RESULT.json``. ``run_exp`` is what
``llamafactory-cli train`` calls; the only addition is a ``TrainerCallback`` that times each
optimizer step (after a CUDA synchronize) and reads the trainer's own count of non-padding input
tokens. A separate process per run gives each run clean GPU memory and a clean peak.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import traceback
from pathlib import Path

from transformers import TrainerCallback


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(TrainerCallback):
    """Wall time and cumulative input tokens at the end of every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self.trainable_params = 0
        self.total_params = 0
        self.started = 0.0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
            self.total_params = sum(p.numel() for p in model.parameters())
        _synchronize()
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _synchronize()
        self.steps.append({"step": state.global_step, "time": time.perf_counter() - self.started, "tokens": state.num_input_tokens_seen})


def _memory() -> dict[str, float]:
    import torch

    memory = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}
    if torch.cuda.is_available():
        memory["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 1024**3
        memory["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 1024**3
    return memory


def _device() -> dict[str, object]:
    import torch

    if torch.cuda.is_available():
        return {"device": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "torch": torch.__version__}
    return {"device": "cpu", "gpus": 0, "torch": torch.__version__}


def main(args_path: str, result_path: str) -> int:
    from llamafactory.train.tuner import run_exp

    args = json.loads(Path(args_path).read_text(encoding="utf-8"))
    timer = StepTimer()
    result: dict[str, object] = {"ok": False}
    try:
        run_exp(args, callbacks=[timer])
        result["ok"] = True
    except Exception as error:
        import torch

        out_of_memory = isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()
        result["error"] = "out of memory" if out_of_memory else f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        traceback.print_exc()
    result.update(steps=timer.steps, trainable_params=timer.trainable_params, total_params=timer.total_params, **_memory(), **_device())
    Path(result_path).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0 if result["ok"] else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
