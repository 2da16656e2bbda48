"""The memorization audit on a model trained by the real recipe: canaries prepared, llamafactory-cli trains, the audit sees it.

``prepare notes --canaries`` puts canaries repeated 1x and 16x into a small training split, the real
Clinical-BR recipe continues a tiny Mistral on it through ``llamafactory-cli`` (a LoRA adapter, with
the overrides a memorising CPU run needs: a high learning rate, enough steps, trainable embeddings),
and ``medfactory audit memorization --adapter`` must find what it memorised: exposure far higher for
the 16x canaries than for the 1x ones and than under the untrained base, and the 16x secrets
extracted by greedy decoding; the base (the same weights without the adapter) must show neither.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medfactory.cli import app
from medfactory.corpus import canaries as canaries_module
from medfactory.corpus.canaries import read_canaries
from medfactory.corpus.synthetic_notes import generate_notes
from medfactory.run.demo import demo_overrides
from medfactory.run.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow
STEPS = 200
# The canaries' secrets come from a fixed seed here (prepare draws them from the OS's randomness), so a run is
# reproducible: with fresh digits each run, whether a tiny model memorised every 16x secret varied from run to run.
CANARY_SEED = int(os.environ.get("MEDFACTORY_TEST_CANARY_SEED", "11"))
# What the recipe's values become for a tiny CPU run that must memorise (each on top of demo_overrides):
MEMORISING_OVERRIDES = {
    "learning_rate": 5e-3,  # the recipe's 2e-5 barely moves a random tiny model in a few hundred steps
    "lora_target": "all",
    "lora_rank": 16,
    "lora_alpha": 32,
    "additional_target": "embed_tokens,lm_head",  # a random model's frozen embeddings cannot learn new strings
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "cutoff_len": 128,
    "warmup_steps": 0,
}


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> dict:
    root = tmp_path_factory.mktemp("audit-e2e")
    (root / "recipes").mkdir()
    (root / "recipes" / "clinical_br_mistral.yaml").write_bytes((repo_root / "recipes" / "clinical_br_mistral.yaml").read_bytes())
    notes = list(generate_notes(150, seed=5))
    with open(root / "notes.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "patient_id", "text"])
        writer.writerows([f"n{index}", f"p{index}", note] for index, note in enumerate(notes))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(canaries_module, "make_canaries", functools.partial(canaries_module.make_canaries, seed=CANARY_SEED))
        patch.setattr(canaries_module, "insert_into", functools.partial(canaries_module.insert_into, seed=CANARY_SEED))
        prepared = CliRunner().invoke(app, [
            "prepare", "notes", "--source", str(root / "notes.csv"), "--name", "hc", "--output-root", str(root), "--deid-seed", "k",
            "--canaries", "4", "--canary-repetitions", "1,16", "--likert-notes", "0", "--validation-fraction", "0.1", "--test-fraction", "0.2",
        ])  # fmt: skip
    assert prepared.exit_code == 0, prepared.output
    model = build_tiny_model("mistral", notes)
    overrides = {**demo_overrides(model, root / "saves" / "run", max_steps=STEPS), "dataset": "hc", "eval_dataset": "hc_validation",
                 **MEMORISING_OVERRIDES, "eval_steps": STEPS, "save_steps": STEPS}  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    trained = subprocess.run(["llamafactory-cli", "train", "recipes/clinical_br_mistral.yaml", *(f"{k}={v}" for k, v in overrides.items())],
                             cwd=root, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a shared two-core machine are slower, not faster
    try:
        result = CliRunner().invoke(app, [
            "audit", "memorization", "--adapter", str(root / "saves" / "run"), "--canaries", str(root / "canaries" / "hc.json"),
            "--train", str(root / "data" / "hc" / "train.jsonl"), "--heldout", str(root / "data" / "hc" / "test.jsonl"),
            "--output", str(root / "reports" / "audit"), "--candidates", "300", "--samples", "2", "--notes", "10", "--device", "cpu",
        ])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    metrics = json.loads((root / "reports" / "audit" / "metrics.json").read_text(encoding="utf-8"))
    return {"root": root, "metrics": metrics, "output": result.output, "canaries": read_canaries(root / "canaries" / "hc.json")}


def by_repetitions(audited: dict, model: str) -> dict[int, dict]:
    """The audit's summary per repetition count (metrics.json: models.<model>.canaries.per_repetition)."""
    return {int(count): summary for count, summary in audited["metrics"]["models"][model]["canaries"]["per_repetition"].items()}


def test_exposure_rises_with_repetitions_under_the_adapter_and_not_under_the_base(audited: dict) -> None:
    adapter, base = by_repetitions(audited, "adapter"), by_repetitions(audited, "base")
    assert adapter[16]["canaries"] == adapter[1]["canaries"] == 2
    most = adapter[16]["exposure_min"]
    assert most > adapter[1]["exposure_max"] + 1.0  # every 16x canary is more exposed than every 1x canary, by more than a bit
    assert most > 7.0  # among the top 1/128 of its candidates at least
    # The untrained control is far below for every canary. (Its own values are chance: the secrets are new random
    # digits each run, and a random model ranks a few of them high, so two canaries per group show no trend to test.)
    assert all(summary["exposure_max"] < most - 2.0 for summary in base.values())
    assert all(summary["greedy_extracted"] == 0 for summary in base.values())


def test_greedy_decoding_extracts_the_most_repeated_secrets_only_after_training(audited: dict) -> None:
    adapter, base = by_repetitions(audited, "adapter"), by_repetitions(audited, "base")
    assert adapter[16]["greedy_extracted"] == adapter[16]["canaries"]
    assert sum(summary["greedy_extracted"] for summary in base.values()) == 0


def test_the_report_holds_no_secret_and_no_note_text(audited: dict) -> None:
    root = audited["root"]
    written = "".join(path.read_text(encoding="utf-8", errors="replace") for path in (root / "reports" / "audit").iterdir() if path.suffix != ".png")
    written += audited["output"]
    for canary in audited["canaries"]:
        assert canary.secret not in written and canary.prefix not in written
    train_notes = [json.loads(line)["text"] for line in (root / "data" / "hc" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert not any(note[:60] in written for note in train_notes)
