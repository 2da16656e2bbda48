"""The CRF layer of de-identification: tokenizer offsets, BIO round trip, training on a MEDDOCAN sample,
the embedded Spanish model, ``deid train``, and the planted pt-BR evaluation set.

Failure messages carry counts, offsets and indices only, never a span's text.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from medfactory.cli import app
from medfactory.corpus.deid import gazetteers
from medfactory.corpus.deid.brat import read_brat_folder
from medfactory.corpus.deid.crf import CrfTagger, bio_labels, features, spans_from_labels, tokenize
from medfactory.corpus.deid.planted import PATTERN_SOURCE, SOURCE, planted_documents, write_planted_set, write_synthetic_training_set
from medfactory.corpus.deid.spans import CATEGORIES, PhiSpan

MODELS = Path(__file__).resolve().parents[1] / "medfactory" / "corpus" / "deid" / "models"
SAMPLE_DOCUMENTS = 30


def test_tokenize_offsets_round_trip() -> None:
    text = "Nombre: José Ñúñez-García.\r\nNHC: 368503; C/ del Abedul 5-7, 2º dcha\n\tcorreo: a.b@c.es  São Paulo/SP 01234-567"
    tokens = tokenize(text)
    assert all(text[token.start : token.end] == token.text for token in tokens)
    assert all(previous.end <= token.start for previous, token in zip(tokens, tokens[1:], strict=False))
    # Every non-space character is in exactly one token.
    covered = "".join(token.text for token in tokens)
    assert covered == re.sub(r"\s", "", text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_tokenize_and_features_hold_for_any_text(text: str) -> None:
    tokens = tokenize(text)
    assert all(text[token.start : token.end] == token.text for token in tokens)
    assert len(features(text, tokens, use_rules=False)) == len(tokens)


def test_odd_digits_do_not_break_features() -> None:
    text = "Lesión de 5² cm, ٣ días"
    assert len(features(text, tokenize(text), use_rules=False)) == len(tokenize(text))


def test_bio_labels_round_trip_to_the_same_spans() -> None:
    text = "Paciente Ana Souza, 54 anos, prontuário 1234567."
    tokens = tokenize(text)
    spans = [PhiSpan(9, 18, "NOMBRE_SUJETO_ASISTENCIA", "crf"), PhiSpan(20, 27, "EDAD_SUJETO_ASISTENCIA", "crf"), PhiSpan(40, 47, "PRONTUARIO", "crf")]
    assert spans_from_labels(tokens, bio_labels(tokens, spans)) == spans


def test_features_hold_gazetteer_and_line_header() -> None:
    assert "maría" in gazetteers.first_names() and "garcía" in gazetteers.surnames() and "madrid" in gazetteers.places()
    text = "Nombre: María García\nOtro"
    tokens = tokenize(text)
    per_token = features(text, tokens, use_rules=False)
    assert len(per_token) == len(tokens)
    assert "hd=nombre" in per_token[2] and "gaz=F" in per_token[2] and "hd=otro" in per_token[-1] and "bol" in per_token[-1]


@pytest.fixture(scope="module")
def meddocan_sample(shared_data: Path) -> tuple[list, list]:
    folder = shared_data / "meddocan"
    if not (folder / "train").is_dir():
        pytest.skip(f"MEDDOCAN is absent from {folder} (train/ and dev/ BRAT folders expected)")
    train = [(document.text, document.spans) for document in list(read_brat_folder(folder / "train", progress=False))[:SAMPLE_DOCUMENTS]]
    held_out = [(document.text, document.spans) for document in list(read_brat_folder(folder / "dev", progress=False))[:3]]
    return train, held_out


def _recall(tagger: CrfTagger, documents: list) -> float:
    gold = found = 0
    for text, spans in documents:
        predicted = {(span.start, span.end, span.category) for span in tagger.find(text)}
        gold += len(spans)
        found += sum((span.start, span.end, span.category) in predicted for span in spans)
    return found / gold


def test_train_on_a_meddocan_sample_then_tag_a_held_out_document(meddocan_sample: tuple[list, list], tmp_path: Path) -> None:
    train, held_out = meddocan_sample
    model = tmp_path / "sample.crfsuite"
    counts = CrfTagger.train(train, model, max_iterations=60, progress=False)
    assert counts["documents"] == SAMPLE_DOCUMENTS and model.is_file()
    assert not list(tmp_path.glob(".*.tmp")), "the temporary model file was left behind"
    tagger = CrfTagger(model)
    for text, _ in held_out:
        spans = tagger.find(text)
        assert spans, "no span found in a held-out MEDDOCAN document"
        assert all(0 <= span.start < span.end <= len(text) and span.category in CATEGORIES and span.source == "crf" for span in spans)
        assert all(previous.end <= span.start for previous, span in zip(spans, spans[1:], strict=False))
    assert _recall(tagger, train) > 0.9
    assert _recall(tagger, held_out) > 0.5


def test_deid_train_command_writes_a_model(meddocan_sample: tuple[list, list], tmp_path: Path) -> None:
    from medfactory.corpus.deid.brat import write_brat

    gold = tmp_path / "gold"
    for number, (text, spans) in enumerate(meddocan_sample[0][:5]):
        write_brat(gold / f"doc{number}", text, spans)
    model = tmp_path / "cli.crfsuite"
    result = CliRunner().invoke(app, ["deid", "train", "--gold", str(gold), "--language", "es", "--output", str(model), "--max-iterations", "5"])
    assert result.exit_code == 0, result.output
    assert model.is_file() and "trained on 5 documents" in result.output
    bad = CliRunner().invoke(app, ["deid", "train", "--gold", str(gold), "--language", "fr", "--output", str(model)])
    assert bad.exit_code == 1 and "--language" in bad.output


def test_embedded_spanish_model_finds_a_name_and_a_date() -> None:
    model = MODELS / "es_meddocan.crfsuite"
    assert model.is_file(), f"{model} is missing: rebuild it with the command in {MODELS / 'es_meddocan.json'}"
    text = "Nombre: María Fernández López.\nNHC: 4839201.\nFecha de ingreso: 12/03/2019.\nPaciente de 67 años que acude a urgencias."
    spans = CrfTagger(model).find(text)
    name_start, date_start = text.index("María"), text.index("12/03")
    assert any(span.category.startswith("NOMBRE") and span.start == name_start and span.end == text.index(".", name_start) for span in spans)
    assert any(span.category == "FECHAS" and span.start == date_start and span.end == date_start + 10 for span in spans)


# --- the planted pt-BR set ----------------------------------------------------------------------------

_FORMS = {
    "EDAD_SUJETO_ASISTENCIA": r"\d{1,3} (?:anos|meses)",
    "SEXO_SUJETO_ASISTENCIA": r"masculino|feminino",
    "PRONTUARIO": r"\d{5,8}",
    "CPF": r"\d{3}\.?\d{3}\.?\d{3}-?\d{2}",
    "CNS": r"[789]\d{2} ?\d{4} ?\d{4} ?\d{4}",
    "RG": r"\d{1,2}\.\d{3}\.\d{3}-\d",
    "CEP": r"\d{5}-?\d{3}",
    "FECHAS": r"\d{1,2}/\d{1,2}/\d{2,4}|(?:\d{1,2} de )?[A-Za-zç]+ de \d{4}|(?:19|20)\d{2}",  # planted, or pattern-found in the case
    "CRM_COREN": r"\d{4,6}(?:[/-][A-Z]{2})?",
    "CORREO_ELECTRONICO": r"[^@\s]+@[^@\s]+\.[a-z]+",
    "NUMERO_TELEFONO": r"[+\d() -]{8,20}",
    "HOSPITAL": r"(?:Hospital|Santa Casa) .+",
    "TERRITORIO": r"[A-ZÁ-Ú][\w ]+",
    "CALLE": r".+, .+",
}
_PERSON_CATEGORIES = ("NOMBRE_SUJETO_ASISTENCIA", "NOMBRE_PERSONAL_SANITARIO", "FAMILIARES_SUJETO_ASISTENCIA")


def _synthetic_lopes(folder: Path) -> Path:
    """Two raw folders of plain Portuguese cases, the layout of the Lopes corpus (no real text needed)."""
    case = "Mulher de 63 anos, com antecedentes de HTA,\nque iniciou em Maio de 2016 cefaleia.\n\nO exame revelou paresia."
    for folder_name in ("Texts SPN 1 Raw", "Texts SPN 2 Raw"):
        (folder / folder_name).mkdir(parents=True)
        for number in range(6):
            (folder / folder_name / f"CC{number}.txt").write_bytes(case.encode("cp1252"))
    return folder


def _wrong_planted(documents: list) -> tuple[list, list]:
    """(document, span index) of spans not covering their planted value, and of spans not in their category's form."""
    wrong_text, wrong_category = [], []
    for document in documents:
        for index, (span, value) in enumerate(zip(document.spans, document.planted, strict=True)):
            covered = document.text[span.start : span.end]
            if span.source == SOURCE and covered != value:
                wrong_text.append((document.name, index))
            pattern = r"[A-ZÀ-Ú][\w]+(?: [a-zA-ZÀ-ú][\w]*)+" if span.category in _PERSON_CATEGORIES else _FORMS.get(span.category)
            if pattern is None or not re.fullmatch(pattern, covered):
                wrong_category.append((document.name, index, span.category))
    return wrong_text, wrong_category


def _assert_planted_right(documents: list) -> None:
    wrong_text, wrong_category = _wrong_planted(documents)
    del documents  # keep the texts out of a failure's traceback
    assert not wrong_text, f"{len(wrong_text)} spans do not cover what was planted (document, span index): {wrong_text[:10]}"
    assert not wrong_category, f"{len(wrong_category)} spans do not look like their category: {wrong_category[:10]}"


def test_planted_spans_cover_what_was_planted_with_the_right_category(tmp_path: Path) -> None:
    parts = planted_documents(_synthetic_lopes(tmp_path / "lopes"), seed=3)
    assert len(parts["test"]) == 4 and len(parts["train"]) == 8
    _assert_planted_right(parts["train"] + parts["test"])
    sources = {span.source for part in parts.values() for document in part for span in document.spans}
    assert sources == {SOURCE, PATTERN_SOURCE}
    again = planted_documents(tmp_path / "lopes", seed=3)
    same = [one.text == other.text and one.spans == other.spans for one, other in zip(again["test"], parts["test"], strict=True)]
    assert all(same), "the same seed gave another set"


def test_write_planted_set_reads_back_as_brat(tmp_path: Path) -> None:
    facts = write_planted_set(_synthetic_lopes(tmp_path / "lopes"), tmp_path / "planted", seed=4)
    for part in ("train", "test"):
        documents = list(read_brat_folder(tmp_path / "planted" / part, progress=False))
        assert len(documents) == facts["parts"][part]["documents"]
        assert sum(len(document.spans) for document in documents) == facts["parts"][part]["spans"]


def test_planted_set_on_the_real_lopes_cases(shared_data: Path) -> None:
    source = shared_data / "lopes2019"
    if not (source / "Texts SPN 1 Raw").is_dir():
        pytest.skip(f"the Lopes 2019 raw folders are absent from {source}")
    parts = planted_documents(source, documents=40)
    _assert_planted_right(parts["train"] + parts["test"])


def test_deid_train_defaults_are_the_taggers() -> None:
    """The documented rebuild one-liner passes no --c1/--c2/--max-iterations: the command's defaults must be crf's."""
    import inspect

    from medfactory.cli.deid import train_command
    from medfactory.corpus.deid import crf

    defaults = {name: parameter.default for name, parameter in inspect.signature(train_command).parameters.items()}
    assert (defaults["c1"], defaults["c2"], defaults["max_iterations"]) == (crf.DEFAULT_C1, crf.DEFAULT_C2, crf.DEFAULT_MAX_ITERATIONS)


def test_synthetic_training_set_fills_every_placeholder(tmp_path: Path) -> None:
    facts = write_synthetic_training_set(tmp_path / "synthetic", seed=5, documents=40)
    documents = list(read_brat_folder(tmp_path / "synthetic" / "train", progress=False))
    assert len(documents) == 40 and sum(len(document.spans) for document in documents) == facts["parts"]["train"]["spans"]
    left = sum(len(re.findall(r"\[(?:NOME|CIDADE|DATA)\]", document.text)) for document in documents)
    assert left == 0, f"{left} placeholders left unfilled"
    from faker import Faker

    from medfactory.corpus.deid.planted import plant_synthetic_note
    from medfactory.corpus.synthetic_notes import generate_notes

    rng, fake = random.Random(5), Faker("pt_BR")
    _assert_planted_right([plant_synthetic_note(f"n{number}", note, rng, fake) for number, note in enumerate(generate_notes(30, seed=5))])
