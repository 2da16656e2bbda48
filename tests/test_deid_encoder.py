"""The transformers backend of de-identification (medfactory.corpus.deid.encoder), with a tiny local BERT.

The tiny encoder (tests/testing_utils/tiny_models.build_tiny_bert: 3 layers, hidden 32, a WordPiece
trained on the notes) is fine-tuned for real on synthetic pt-BR notes with planted PHI
(medfactory.corpus.deid.planted), so nothing here needs ../shared or a hub; one test adds a MEDDOCAN
sample where ../shared has it. Failure messages carry counts, offsets and categories, never a span's text.
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medfactory.cli import app
from medfactory.corpus.deid.brat import read_brat_folder
from medfactory.corpus.deid.deidentifier import PRIORITY, Deidentifier
from medfactory.corpus.deid.encoder import (
    FACTS_FILE,
    LABELS,
    SOURCE,
    EncoderTagger,
    load_fast_tokenizer,
    merge_window_labels,
    spans_from_token_labels,
    window_labels,
    windows,
)
from medfactory.corpus.deid.planted import write_synthetic_training_set
from medfactory.corpus.deid.spans import CATEGORIES, PhiSpan
from testing_utils.tiny_models import build_tiny_bert

TRAIN_DOCUMENTS = 8
WINDOW, STRIDE = 128, 32  # notes here are ~400 tokens: find() has to cut each into windows and merge them


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Train and tag on one core, as the budget of this file is counted (and no oversubscription under xdist)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, list[PhiSpan]]]]:
    """A BRAT folder of synthetic pt-BR notes with planted PHI, and its (text, spans) pairs."""
    folder = tmp_path_factory.mktemp("planted")
    write_synthetic_training_set(folder, seed=3, documents=TRAIN_DOCUMENTS)
    return folder / "train", [(document.text, document.spans) for document in read_brat_folder(folder / "train", progress=False)]


@pytest.fixture(scope="module")
def tiny_base(planted: tuple[Path, list]) -> Path:
    return build_tiny_bert([text for text, _ in planted[1]])


@pytest.fixture(scope="module")
def trained(planted: tuple[Path, list], tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The tiny encoder fine-tuned on the planted notes (320 steps of 8 windows; about 15 s on one core)."""
    output = tmp_path_factory.mktemp("encoder") / "model"
    facts = EncoderTagger.train(
        planted[1], tiny_base, output, epochs=80, batch_size=8, learning_rate=5e-3, device="cpu", max_length=WINDOW, stride=STRIDE, progress=False
    )
    return output, facts


def _recall(tagger: EncoderTagger, documents: list[tuple[str, list[PhiSpan]]]) -> float:
    gold = found = 0
    for text, spans in documents:
        predicted = {(span.start, span.end, span.category) for span in tagger.find(text)}
        gold += len(spans)
        found += sum((span.start, span.end, span.category) in predicted for span in spans)
    return found / gold


def test_training_writes_a_model_folder_atomically_with_the_label_maps(trained: tuple[Path, dict]) -> None:
    output, facts = trained
    config = json.loads((output / "config.json").read_text())
    assert [config["id2label"][str(index)] for index in range(len(LABELS))] == list(LABELS)
    assert config["label2id"] == {label: index for index, label in enumerate(LABELS)}
    assert (output / "model.safetensors").is_file() and (output / "tokenizer.json").is_file()
    written = json.loads((output / FACTS_FILE).read_text())
    assert written["documents"] == facts["documents"] == TRAIN_DOCUMENTS and written["max_length"] == WINDOW
    assert written["steps"] == -(-written["windows"] // 8) * 80  # every epoch of 8-window batches ran
    assert written["windows"] > TRAIN_DOCUMENTS, "the notes should be longer than one window"
    assert not list(output.parent.glob(f".{output.name}.*")), "a staging folder was left beside the model"


def test_windows_cover_every_character_of_a_long_note(planted: tuple[Path, list], tiny_base: Path) -> None:
    tokenizer = load_fast_tokenizer(tiny_base)
    text = "\n\n".join(text for text, _ in planted[1][:3])
    found = windows(tokenizer, [text, "curta"], max_length=32, stride=8)
    long_ones = [window for window in found if window.document == 0]
    assert len(long_ones) > 10 and [window.document for window in found[-1:]] == [1]
    assert all(len(window.input_ids) <= 32 for window in found)
    covered = set()
    for window in long_ones:
        covered.update(range(*window.char_range))
    missing = [index for index, char in enumerate(text) if not char.isspace() and index not in covered]
    assert not missing, f"{len(missing)} non-space characters are in no window, first at offset {missing[0]}"
    # Consecutive windows share `stride` tokens, and every token sits inside one window's character range.
    for previous, window in zip(long_ones, long_ones[1:], strict=False):
        shared = {offset for offset in previous.offsets if offset} & {offset for offset in window.offsets if offset}
        assert len(shared) == 8
    with pytest.raises(ValueError, match="stride"):
        windows(tokenizer, [text], max_length=32, stride=30)


def test_labels_go_on_every_subword_and_come_back_as_the_same_spans(tiny_base: Path) -> None:
    tokenizer = load_fast_tokenizer(tiny_base)
    text = "Paciente Lucrécia Xavantes, 54 anos, prontuário 1234567.\nAlta em 03/02/2021."
    gold = [
        PhiSpan(9, 26, "NOMBRE_SUJETO_ASISTENCIA"), PhiSpan(28, 35, "EDAD_SUJETO_ASISTENCIA"), PhiSpan(48, 55, "PRONTUARIO"),
        PhiSpan(65, 75, "FECHAS"),
    ]  # fmt: skip
    assert [text[span.start : span.end].count(" ") for span in gold] == [1, 1, 0, 0]
    (window,) = windows(tokenizer, [text], max_length=64, stride=8)
    labels = window_labels(window, gold)
    assert labels[0] == labels[-1] == -100  # [CLS] and [SEP]
    # The name is several subwords: one B, the rest I (every subword labelled, not only the first).
    name = [LABELS[label] for label, offset in zip(labels, window.offsets, strict=True) if offset and 9 <= offset[0] < 26]
    assert len(name) > 2 and name[0] == "B-NOMBRE_SUJETO_ASISTENCIA" and set(name[1:]) == {"I-NOMBRE_SUJETO_ASISTENCIA"}
    (tokens,) = merge_window_labels([window], [labels], 1)
    decoded = spans_from_token_labels(text, ((start, end, LABELS[label]) for start, end, label in tokens))
    assert [(span.start, span.end, span.category) for span in decoded] == [(span.start, span.end, span.category) for span in gold]
    assert all(span.source == SOURCE for span in decoded)


def test_decoding_starts_a_span_at_a_stray_inside_tag_and_trims_spaces() -> None:
    text = "ab cd ef gh"
    tokens = [(0, 2, "I-FECHAS"), (3, 5, "I-FECHAS"), (6, 8, "B-FECHAS"), (9, 11, "O")]
    assert spans_from_token_labels(text, tokens) == [PhiSpan(0, 5, "FECHAS", SOURCE), PhiSpan(6, 8, "FECHAS", SOURCE)]
    assert spans_from_token_labels(text, [(2, 6, "B-CPF")]) == [PhiSpan(3, 5, "CPF", SOURCE)]
    assert spans_from_token_labels(text, [(0, 2, "B-NOT_A_CATEGORY")]) == []


def test_the_trained_tiny_encoder_recovers_the_planted_spans(trained: tuple[Path, dict], planted: tuple[Path, list]) -> None:
    tagger = EncoderTagger(trained[0], device="cpu")
    assert tagger.max_length == WINDOW
    for text, _ in planted[1][:3]:
        assert len(tagger.tokenizer(text)["input_ids"]) > WINDOW, "the note must be longer than one window"
        spans = tagger.find(text)
        assert spans and all(0 <= span.start < span.end <= len(text) and span.category in CATEGORIES and span.source == SOURCE for span in spans)
        assert all(previous.end <= span.start for previous, span in zip(spans, spans[1:], strict=False))
    # Strict span recall on its own training notes: fails if labels and offsets are misaligned anywhere.
    assert _recall(tagger, planted[1]) > 0.8
    assert tagger.find_many([planted[1][0][0], ""]) == [tagger.find(planted[1][0][0]), []]


def test_the_deidentifier_runs_the_encoder_in_place_of_the_crf_and_pickles(trained: tuple[Path, dict], planted: tuple[Path, list]) -> None:
    deidentifier = Deidentifier("pt", encoder=trained[0])
    assert deidentifier.layers == ("rules", "encoder") and deidentifier.model is None
    assert PRIORITY["encoder"] == PRIORITY["crf"]
    text = planted[1][1][0]
    spans = deidentifier.find(text)
    assert "encoder" in {span.source for span in spans}
    rebuilt = pickle.loads(pickle.dumps(deidentifier))  # what a worker process receives
    assert rebuilt.layers == deidentifier.layers and rebuilt.find(text) == spans
    with pytest.raises(ValueError, match="--model .* --encoder"):
        Deidentifier("es", model="x.crfsuite", encoder=trained[0])


def test_bad_encoder_folders_are_refused_with_the_folder_and_a_fix(tiny_base: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(tmp_path))}.*no config\.json.*Fix"):
        EncoderTagger(tmp_path)
    with pytest.raises(ValueError, match=r"labels are not de-identification categories.*Fix"):
        EncoderTagger(tiny_base)  # a base encoder: its labels are LABEL_0, LABEL_1
    # A real slow (Python) tokenizer gives no offsets: ByT5's, beside the tiny BERT's weights.
    from transformers import ByT5Tokenizer

    slow = tmp_path / "slow"
    slow.mkdir()
    for name in ("config.json", "model.safetensors"):
        (slow / name).write_bytes((tiny_base / name).read_bytes())
    ByT5Tokenizer().save_pretrained(slow)
    with pytest.raises(ValueError, match=rf"{re.escape(str(slow))}.*not a fast .*Fix"):
        EncoderTagger.train([("texto", [])], slow, tmp_path / "out", device="cpu")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="non-empty folder.*Fix"):
        EncoderTagger.train([("texto", [])], tiny_base, notes, device="cpu")
    assert (notes / "keep.txt").is_file()


def test_cli_train_then_apply_and_eval_round_trip(planted: tuple[Path, list], tiny_base: Path, tmp_path: Path) -> None:
    gold, model = planted[0], tmp_path / "model"
    runner = CliRunner()
    train = ["deid", "train", "--backend", "encoder", "--encoder", str(tiny_base), "--gold", str(gold), "--language", "pt", "--output", str(model)]
    result = runner.invoke(app, [*train, "--epochs", "1", "--batch-size", "8", "--learning-rate", "5e-3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"trained on {TRAIN_DOCUMENTS} documents" in result.output and (model / "config.json").is_file()
    notes = tmp_path / "notes"
    notes.mkdir()
    texts = {path.name: path.read_text(encoding="utf-8") for path in sorted(gold.glob("*.txt"))[:2]}
    for name, text in texts.items():
        (notes / name).write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    applied = runner.invoke(app, ["deid", "apply", "--language", "pt", "--encoder", str(model), "--input", str(notes), "--output", str(out),
                                  "--mode", "placeholder", "--seed", "k"])  # fmt: skip
    assert applied.exit_code == 0, applied.output
    assert "rules + encoder" in applied.output and all((out / name).is_file() for name in texts)
    findings = [json.loads(line) for line in (out / "spans.jsonl").read_text().splitlines()]
    assert findings and all(row["document"] in texts and 0 <= row["start"] < row["end"] <= len(texts[row["document"]]) for row in findings)
    report = tmp_path / "report"
    evaluated = runner.invoke(app, ["deid", "eval", "--gold", str(gold), "--language", "pt", "--encoder", str(model), "--output", str(report)])
    assert evaluated.exit_code == 0, evaluated.output
    assert f"encoder `{model}`" in evaluated.output and (report / "scores.json").is_file()


def test_cli_refuses_bad_encoder_inputs(planted: tuple[Path, list], tmp_path: Path) -> None:
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("Paciente Ana, 54 anos.")
    applied = runner.invoke(app, ["deid", "apply", "--language", "pt", "--encoder", str(empty), "--input", str(notes), "--output", str(tmp_path / "o")])
    assert applied.exit_code == 1 and str(empty) in applied.output and "no config.json" in applied.output and "Fix" in applied.output
    evaluated = runner.invoke(app, ["deid", "eval", "--gold", str(planted[0]), "--language", "pt", "--encoder", str(empty), "--output", str(tmp_path / "r")])
    assert evaluated.exit_code == 1 and "no config.json" in evaluated.output
    base = ["deid", "train", "--gold", str(planted[0]), "--output", str(tmp_path / "m")]
    no_base = runner.invoke(app, [*base, "--backend", "encoder"])
    assert no_base.exit_code == 1 and "--encoder BASE_MODEL_DIR" in no_base.output
    wrong = runner.invoke(app, [*base, "--backend", "bert"])
    assert wrong.exit_code == 1 and "--backend 'bert'" in wrong.output
    missing = runner.invoke(app, [*base, "--backend", "encoder", "--encoder", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "no such model folder" in missing.output


def test_a_meddocan_sample_trains_and_tags_past_512_tokens(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "meddocan" / "train"
    if not folder.is_dir():
        pytest.skip(f"MEDDOCAN is absent from {folder.parent} (train/ BRAT folder expected)")
    documents = [(document.text, document.spans) for document in list(read_brat_folder(folder, progress=False))[:6]]
    base = build_tiny_bert([text for text, _ in documents], seed=1)
    facts = EncoderTagger.train(documents, base, tmp_path / "model", epochs=1, batch_size=8, learning_rate=5e-3, device="cpu", progress=False)
    assert facts["max_length"] == 512 and facts["windows"] > len(documents)  # the default window, and notes longer than it
    tagger = EncoderTagger(tmp_path / "model", device="cpu")
    for text, _ in documents[:2]:
        assert all(0 <= span.start < span.end <= len(text) and span.category in CATEGORIES for span in tagger.find(text))


def test_the_crf_path_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import sys; from medfactory.corpus.deid.deidentifier import Deidentifier; import medfactory.corpus.deid.encoder;"
        "Deidentifier('es').find('Paciente de 54 años, NHC 123456.'); print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
