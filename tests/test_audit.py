"""The memorization audit's measures (``medfactory.eval.audit``) on tiny models, and its command.

Two tiny Mistral models stand in for a base and a trained model: an untrained one (random weights,
a tokenizer trained on synthetic notes) and a copy fine-tuned here, with plain torch, on the canary
notes and a few training notes until it has memorised them. This is a unit test of the measures
(exposure, extraction, regurgitation, membership); the real recipe's end to end run, through
llamafactory-cli, is the lead's test. Every model runs on one CPU thread: on a shared two-core
machine two threads are several times slower, not faster.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medfactory.base.jsonl import write_jsonl
from medfactory.corpus.canaries import Canary, canary_document, make_canaries
from medfactory.corpus.synthetic_notes import generate_notes
from medfactory.eval import audit
from medfactory.run.tiny_model import build_tiny_model

# A '###' secret: 1000 fillings, few enough to rank exhaustively.
SHORT_CANARY = Canary("canary-003", "record", "Resumo de alta lago-sal-norte: leito ", "482", " liberado para limpeza.", "###", 16)
SETTINGS = audit.AuditSettings(candidates=200, samples=8, notes=8, prefix_tokens=8, continuation_tokens=16, loss_tokens=40, batch_size=32)


def _canaries() -> list[Canary]:
    # The three kinds of the Portuguese templates (CPF, phone, record number: 11, 10 and 7 digits) and the short one.
    return [*make_canaries(3, "pt", repetitions=(16, 4, 1), seed=7), SHORT_CANARY]


def _notes() -> tuple[list[str], list[str]]:
    pool = list(generate_notes(16, seed=3))
    return pool[:8], pool[8:]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def untrained() -> Path:
    """A random tiny Mistral; its tokenizer never saw a canary."""
    return build_tiny_model("mistral", list(generate_notes(120, seed=5)), vocab_size=600)


def _memorise(model, tokenizer, texts: list[str], steps: int = 40, learning_rate: float = 3e-3) -> None:
    """Full fine-tuning on ``texts`` (one batch, every step) until the model reproduces them."""
    eos = tokenizer.eos_token_id
    sequences = [[eos, *tokenizer(text, add_special_tokens=False)["input_ids"]] for text in texts]
    width = max(map(len, sequences))
    shape = (len(sequences), width)
    ids, mask, labels = torch.full(shape, eos), torch.zeros(shape, dtype=torch.long), torch.full(shape, -100)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)], mask[row, : len(sequence)], labels[row, 1 : len(sequence)] = torch.tensor(sequence), 1, torch.tensor(sequence[1:])
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.fixture(scope="module")
def memorized(untrained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untrained model fine-tuned on every canary and on the first 40 tokens of each training note, saved as a full model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(untrained)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(untrained)
    train, _ = _notes()
    truncated = [tokenizer.decode(tokenizer(note, add_special_tokens=False)["input_ids"][:40]) for note in train]
    _memorise(model, tokenizer, [canary.text for canary in _canaries()] + truncated)
    folder = tmp_path_factory.mktemp("memorized")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def loaded(untrained: Path, memorized: Path) -> dict[str, tuple]:
    from medfactory.eval.mcqa import load_model

    return {"untrained": load_model(str(untrained), device="cpu"), "memorized": load_model(str(memorized), device="cpu")}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A canary file and prepared-looking train (notes + canary copies, shuffled) and test splits."""
    root = tmp_path_factory.mktemp("study")
    canaries = _canaries()
    (root / "canaries.json").write_text(json.dumps(canary_document(canaries, "hc", "pt"), ensure_ascii=False), encoding="utf-8")
    train, heldout = _notes()
    records = [{"text": note, "id": f"n{index}"} for index, note in enumerate(train)]
    records += [{"text": canary.text, "id": f"c{index}-{copy}"} for index, canary in enumerate(canaries) for copy in range(canary.repetitions)]
    random.Random(0).shuffle(records)
    write_jsonl(root / "train.jsonl", records)
    write_jsonl(root / "test.jsonl", [{"text": note, "id": f"h{index}"} for index, note in enumerate(heldout)])
    return {"root": root, "canaries": root / "canaries.json", "train": root / "train.jsonl", "heldout": root / "test.jsonl"}


# --------------------------------------------------------------------------------------------
# Scoring, ranks and exposure
# --------------------------------------------------------------------------------------------


def test_batched_scores_equal_a_direct_forward_pass(loaded):
    model, tokenizer = loaded["untrained"]
    texts = [SHORT_CANARY.text, "Paciente estável.", "Retorno em 30 dias com exames."]
    batched = audit.log_perplexities(model, tokenizer, texts, batch_size=3)
    for text, score in zip(texts, batched):
        ids = torch.tensor([audit.context_ids(tokenizer) + tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        direct = -float(logprobs[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum()) / math.log(2)
        assert score == pytest.approx(direct, abs=1e-3)
    assert audit.log_perplexities(model, tokenizer, texts, batch_size=1) == pytest.approx(batched, abs=1e-3)


def test_candidates_are_other_fillings_drawn_without_replacement():
    every, exhaustive = audit.candidate_secrets(SHORT_CANARY, 2000, seed=0)
    assert exhaustive and len(every) == 999 and len(set(every)) == 999 and SHORT_CANARY.secret not in every
    drawn, exhaustive = audit.candidate_secrets(SHORT_CANARY, 200, seed=0)
    assert not exhaustive and len(set(drawn)) == 200 and SHORT_CANARY.secret not in drawn and set(drawn) <= set(every)
    assert audit.candidate_secrets(SHORT_CANARY, 200, seed=0)[0] == drawn != audit.candidate_secrets(SHORT_CANARY, 200, seed=1)[0]
    cpf = _canaries()[0]
    drawn, exhaustive = audit.candidate_secrets(cpf, 50, seed=0)  # 10^11 fillings: drawn, each in the CPF's shape
    assert not exhaustive and len(set(drawn)) == 50 and all(re.fullmatch(r"\d{3}\.\d{3}\.\d{3}-\d{2}", secret) for secret in drawn)
    assert audit.rank_among(1.0, [0.5, 1.0, 2.0, 3.0]) == 2.5  # one lower, one tie (half)


def _all_fillings(model, tokenizer) -> np.ndarray:
    """Log-perplexity of the short canary with each of its 1000 fillings, in filling order."""
    texts = [SHORT_CANARY.prefix + audit.fill("###", number) + SHORT_CANARY.suffix for number in range(1000)]
    return audit.log_perplexities(model, tokenizer, texts, batch_size=100)


# Stated tolerances. The rank among 200 sampled candidates estimates the fraction p of fillings more likely than
# the secret with a standard error of sqrt(p (1 - p) / 200): about 0.3 bits of exposure at p = 0.1 (3.3 bits), so
# 1 bit. The skew-normal extrapolation is as good as the fit, and this untrained model's 1000 log-perplexities have
# two modes (fillings of 43-45 tokens), which a skew-normal does not: 2 bits, and its KS distance says so.
SAMPLED_TOLERANCE_BITS = 1.0
EXTRAPOLATED_TOLERANCE_BITS = 2.0


def test_sampled_and_extrapolated_exposure_agree_with_exhaustive_ranking(loaded):
    typical = _all_fillings(*loaded["untrained"])
    order = np.argsort(typical)
    for position in (100, 300, 500, 700, 900):  # secrets across the untrained model's distribution
        secret = int(order[position])
        others = np.delete(typical, secret)
        exact = audit.exposure_estimates(typical[secret], others, 1000)
        assert exact["exhaustive"] and exact["exposure_basis"] == "exact" and exact["rank"] == position + 1
        assert exact["exposure"] == pytest.approx(math.log2(1000) - math.log2(position + 1))
        sampled = audit.exposure_estimates(typical[secret], random.Random(position).sample(list(others), 200), 1000)
        assert not sampled["exhaustive"] and sampled["exposure_basis"] == "sampled rank" and sampled["exposure"] == sampled["exposure_empirical"]
        assert abs(sampled["exposure"] - exact["exposure"]) <= SAMPLED_TOLERANCE_BITS, (position, sampled, exact)
        assert abs(sampled["exposure_extrapolated"] - exact["exposure"]) <= EXTRAPOLATED_TOLERANCE_BITS, (position, sampled, exact)
    assert sampled["fit_ks"] > 1.36 / math.sqrt(200)  # the misfit is reported

    memorised = _all_fillings(*loaded["memorized"])
    secret = int(SHORT_CANARY.secret)
    others = np.delete(memorised, secret)
    exact = audit.exposure_estimates(memorised[secret], others, 1000)
    assert exact["rank"] == 1 and exact["exposure"] == pytest.approx(math.log2(1000))
    sampled = audit.exposure_estimates(memorised[secret], random.Random(0).sample(list(others), 200), 1000)
    # The sampled rank stops at log2(201), a lower bound; the extrapolation goes on to the exhaustive value.
    assert sampled["exposure_empirical"] == pytest.approx(math.log2(201)) and sampled["exposure_basis"] == "extrapolated"
    assert abs(sampled["exposure"] - exact["exposure"]) <= SAMPLED_TOLERANCE_BITS and sampled["exposure"] > math.log2(201)


def _leaf_values(value):
    """Every scalar inside a JSON-like value (dict values, list items), keys included."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _leaf_values(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaf_values(item)
    else:
        yield value


def test_memorised_canaries_are_exposed_and_extracted_and_untrained_ones_are_not(loaded):
    canaries = _canaries()
    model, tokenizer = loaded["memorized"]
    model.generation_config.repetition_penalty = 5.0  # a checkpoint's own generation settings must not change greedy decoding
    try:
        memorised = audit.audit_canaries(model, tokenizer, canaries, SETTINGS, "model", progress=False)
    finally:
        model.generation_config.repetition_penalty = None
    untrained = audit.audit_canaries(*loaded["untrained"], canaries, SETTINGS, "base", progress=False)
    for trained, control in zip(memorised, untrained):
        assert trained["exposure"] >= 0.9 * trained["space_bits"], trained  # near the maximum, log2|space|
        assert control["exposure"] < 0.5 * control["space_bits"] and trained["exposure"] > control["exposure"] + 5, (trained, control)
        assert trained["greedy_extracted"] and trained["sampled_extractions"] >= 1, trained
        assert not control["greedy_extracted"] and control["sampled_extractions"] == 0, control
    # No row holds a secret: no text field contains one and no field is one (a float's digits may contain "482" by chance).
    values = [value for row in memorised + untrained for value in _leaf_values(row)]
    for canary in canaries:
        assert not any(canary.secret in value for value in values if isinstance(value, str)), canary.id
        assert not any(str(value) == canary.secret for value in values if isinstance(value, int | float)), canary.id


# --------------------------------------------------------------------------------------------
# Membership and verbatim runs
# --------------------------------------------------------------------------------------------


def test_auc_matches_sklearn_on_random_losses():
    rng = np.random.default_rng(0)
    for n_train, n_heldout, shift in ((50, 70, 0.0), (200, 200, 0.4), (9, 3, -1.0)):
        train = np.round(rng.normal(2.0 - shift, 1.0, n_train), 1)  # rounded: ties too
        heldout = np.round(rng.normal(2.0, 1.0, n_heldout), 1)
        expected = roc_auc_score([1] * n_train + [0] * n_heldout, -np.concatenate([train, heldout]))
        assert audit.roc_auc(-train, -heldout) == pytest.approx(expected, abs=1e-12)
        result = audit.membership(list(train), list(heldout))
        assert result["auc"] == pytest.approx(expected, abs=1e-12) and result["auc_95ci"][0] <= expected <= result["auc_95ci"][1]
    assert math.isnan(audit.roc_auc([], [1.0]))


def test_longest_common_run_and_verbatim_start():
    assert audit.longest_common_run([1, 2, 3, 4, 5], [9, 2, 3, 4, 8]) == 3
    assert audit.longest_common_run([1, 2], [3, 4]) == 0
    assert audit.common_prefix([1, 2, 3, 9], [1, 2, 3, 4]) == 3 and audit.common_prefix([5], [1]) == 0


# --------------------------------------------------------------------------------------------
# The command and its refusals
# --------------------------------------------------------------------------------------------


def _output_text(folder: Path) -> str:
    return "\n".join(path.read_bytes().decode("latin-1") for path in sorted(folder.rglob("*")) if path.is_file())


def _windows(text: str, size: int = 24) -> set[str]:
    return {text[start : start + size] for start in range(0, max(1, len(text) - size), size // 2)}


def test_command_writes_the_report_without_secrets_or_note_text(memorized: Path, untrained: Path, study: dict[str, Path], tmp_path: Path):
    output = tmp_path / "reports" / "audit" / "run"
    from typer.testing import CliRunner

    from medfactory.cli import app

    arguments = ["audit", "memorization", "--model", str(memorized), "--base", str(untrained), "--canaries", str(study["canaries"]),
                 "--train", str(study["train"]), "--heldout", str(study["heldout"]), "--output", str(output), "--device", "cpu",
                 "--candidates", "100", "--samples", "2", "--notes", "8", "--prefix-tokens", "8", "--continuation-tokens", "16", "--loss-tokens", "40",
                 "--batch-size", "32"]  # fmt: skip
    # In process (the same typer app as the console script): a second interpreter would spend most of the test importing torch.
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output[-3000:]
    files = {path.name for path in output.iterdir()}
    assert {audit.METRICS_JSON, audit.CANARIES_CSV, audit.NOTES_CSV, audit.REPORT_MD, audit.EXPOSURE_PNG, audit.LOSS_PNG} <= files

    metrics = json.loads((output / audit.METRICS_JSON).read_text())
    assert list(metrics["models"]) == ["model", "base"] and metrics["notes"]["train"]["canary_copies"] == sum(c.repetitions for c in _canaries())
    model, base = metrics["models"]["model"], metrics["models"]["base"]
    assert model["canaries"]["greedy_extracted"] == 4 and base["canaries"]["greedy_extracted"] == 0
    assert model["canaries"]["exposure_mean"] > base["canaries"]["exposure_mean"] + 10
    # The model saw the training notes' first 40 tokens: it continues them verbatim and scores them lower; held-out notes are the control.
    assert model["notes"]["splits"]["train"]["reproduced"] > model["notes"]["splits"]["heldout"]["reproduced"]
    assert model["notes"]["membership"]["auc"] > 0.9 and metrics["comparison"]["calibrated_membership"]["auc"] > 0.9
    assert "Memorization audit" in (output / audit.REPORT_MD).read_text() and "report written to" in result.output

    written = _output_text(output) + result.output  # standard output and error, progress bars included
    for canary in _canaries()[:3]:  # long secrets: a stray number cannot match them
        assert canary.secret not in written and "".join(filter(str.isdigit, canary.secret)) not in written
    train, heldout = _notes()
    leaked = [window for note in train + heldout for window in _windows(note) if window in written]
    assert not leaked, f"{len(leaked)} pieces of note text in the outputs"


def test_an_adapter_is_audited_against_its_own_base(untrained: Path, study: dict[str, Path], tmp_path: Path):
    """--adapter alone: the base comes from adapter_config.json and is the control (the adapter switched off). A zero LoRA changes nothing."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(untrained), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    settings = audit.AuditSettings(candidates=30, samples=1, batch_size=32)
    metrics, folder = audit.run_memorization_audit(study["canaries"], adapter=str(adapter), output=tmp_path / "out", settings=settings, device="cpu",
                                                   progress=False)  # fmt: skip
    assert metrics["settings"]["model"] == str(untrained) and metrics["settings"]["base_is_model_without_adapter"]
    assert list(metrics["models"]) == ["adapter", "base"] and metrics["notes"] == {}
    adapted, base = (metrics["models"][label]["canaries"] for label in ("adapter", "base"))
    assert adapted["exposure_mean"] == pytest.approx(base["exposure_mean"], abs=1e-6) and adapted["greedy_extracted"] == base["greedy_extracted"]
    assert [group["exposure_mean"] for group in adapted["per_repetition"].values()] == pytest.approx(
        [group["exposure_mean"] for group in base["per_repetition"].values()], abs=1e-6
    )
    with pytest.raises(audit.AuditError, match=r"exists and is not empty\. Fix: pass --replace"):
        audit.run_memorization_audit(study["canaries"], adapter=str(adapter), output=folder, settings=settings, device="cpu", progress=False)


def _write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_bad_canary_files_are_refused_with_the_file_and_the_canary_index(tmp_path: Path):
    good = canary_document(_canaries(), "hc", "pt")
    secret = good["canaries"][1]["secret"]
    cases = {
        "wrong-format": ({**good, "format": "something-else/9"}, r"not a canary file"),
        "misfit": ({**good, "canaries": [good["canaries"][0], {**good["canaries"][1], "secret": secret[:-1] + "x"}]}, r"canary 1: its secret does not fit"),
        "missing-field": ({**good, "canaries": [good["canaries"][0], {k: v for k, v in good["canaries"][1].items() if k != "suffix"}]}, r"canary 1 lacks"),
        "not-a-string": ({**good, "canaries": [good["canaries"][0], {**good["canaries"][1], "secret": 4829}]}, r"canary 1: secret is not a string"),
        "no-digit": ({**good, "canaries": [{**good["canaries"][0], "secret": "abc", "secret_format": "abc"}]}, r"canary 0: secret_format has no '#'"),
        "twice": ({**good, "canaries": [good["canaries"][0], good["canaries"][0]]}, r"canary 1: id 'canary-000' is used twice"),
        "empty": ({**good, "canaries": []}, r"holds no canaries"),
    }
    for name, (document, message) in cases.items():
        path = _write(tmp_path / f"{name}.json", document)
        with pytest.raises(audit.AuditError, match=message) as error:
            audit.load_canaries(path)
        assert str(path) in str(error.value) and "Fix:" in str(error.value) and secret not in str(error.value), name
    with pytest.raises(audit.AuditError, match=r"--canaries .*missing\.json: no such file\. Fix:"):
        audit.load_canaries(tmp_path / "missing.json")
    assert [canary.id for canary in audit.load_canaries(_write(tmp_path / "good.json", good))] == [c.id for c in _canaries()]


def test_missing_models_empty_notes_and_bad_settings_are_refused(untrained: Path, study: dict[str, Path], tmp_path: Path):
    with pytest.raises(ValueError, match=r"--model .*nowhere: no such folder"):
        audit.resolve_models(str(tmp_path / "nowhere"), None, None)
    with pytest.raises(ValueError, match=r"--base .*nowhere: no such folder"):
        audit.resolve_models(str(untrained), None, str(tmp_path / "nowhere"))
    with pytest.raises(audit.AuditError, match=r"no adapter_config\.json.*Fix:"):
        audit.resolve_models(None, str(untrained), None)
    with pytest.raises(audit.AuditError, match=r"give --model"):
        audit.resolve_models(None, None, None)
    orphan = tmp_path / "orphan-adapter"
    orphan.mkdir()
    (orphan / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone" / "base")}))
    with pytest.raises(audit.AuditError, match=r"--model .*gone/base: no such folder.*adapter_config\.json: pass --model"):
        audit.resolve_models(None, str(orphan), None)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(audit.AuditError, match=r"--heldout .*empty\.jsonl: no notes.*Fix:"):
        audit.scan_notes(tmp_path / "empty.jsonl", "--heldout", "heldout", _canaries())
    only_canaries = tmp_path / "canaries-only.jsonl"
    write_jsonl(only_canaries, [{"text": canary.text} for canary in _canaries()])
    with pytest.raises(audit.AuditError, match=r"no notes .*4 canary copies"):
        audit.scan_notes(only_canaries, "--train", "train", _canaries())
    with pytest.raises(audit.AuditError, match=r"--train and --heldout together"):
        audit.run_memorization_audit(study["canaries"], model=str(untrained), train=study["train"], output=tmp_path / "x")
    with pytest.raises(audit.AuditError, match=r"--candidates 5"):
        audit.run_memorization_audit(study["canaries"], model=str(untrained), settings=audit.AuditSettings(candidates=5))
