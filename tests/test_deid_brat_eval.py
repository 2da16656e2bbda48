"""BRAT gold reading (bad files refused with file and line, never the value), writing, Label Studio round trip,
MEDDOCAN's measures against independent computations, the leak measures, and `medfactory deid eval` end to end."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
from sklearn.metrics import precision_recall_fscore_support
from typer.testing import CliRunner

from medfactory.base.errors import CorpusError
from medfactory.cli import app
from medfactory.corpus.deid.brat import BratDocument, read_brat, read_brat_folder, write_brat
from medfactory.corpus.deid.evaluate import (
    ScoredDocument,
    count_sentences,
    evaluate_documents,
    merge_spans,
    score_tables,
    token_leaks,
)
from medfactory.corpus.deid.label_studio import export_label_studio, import_label_studio, label_studio_tasks, spans_from_label_studio
from medfactory.corpus.deid.spans import PhiSpan

# A made-up note: "Maria Souza" (0-11), "12/03/2020" (26-36), "Lisboa" (40-46).
TEXT = "Maria Souza, internada em 12/03/2020 em Lisboa.\nAlta.\n"
NAME, DATE, CITY = (0, 11), (26, 36), (40, 46)
assert TEXT[NAME[0] : NAME[1]] == "Maria Souza" and TEXT[DATE[0] : DATE[1]] == "12/03/2020" and TEXT[CITY[0] : CITY[1]] == "Lisboa"
GOOD_LINES = [
    f"T1\tNOMBRE_SUJETO_ASISTENCIA {NAME[0]} {NAME[1]}\tMaria Souza",
    f"T2\tFECHAS {DATE[0]} {DATE[1]}\t12/03/2020",
    f"T3\tTERRITORIO {CITY[0]} {CITY[1]}\tLisboa",
]


def write_pair(folder: Path, name: str, text: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_bytes(text.encode("utf-8"))
    (folder / f"{name}.ann").write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))
    return folder / f"{name}.ann"


# --- reading gold ------------------------------------------------------------------------------------


def test_good_document_reads_spans_in_text_order_and_counts_skipped_lines(tmp_path: Path) -> None:
    lines = [GOOD_LINES[2], "#1\tAnnotatorNotes T1\tchecked", GOOD_LINES[0], "R1\tSame Arg1:T1 Arg2:T3", "A1\tNegated T2", GOOD_LINES[1], ""]
    write_pair(tmp_path, "note", TEXT, lines)
    document = read_brat(tmp_path / "note")
    assert document.spans == [PhiSpan(*NAME, "NOMBRE_SUJETO_ASISTENCIA", "gold"), PhiSpan(*DATE, "FECHAS", "gold"), PhiSpan(*CITY, "TERRITORIO", "gold")]
    assert document.skipped_lines == 3 and document.text == TEXT and document.name == "note"


BAD_GOLD = {
    "overlapping spans": ([*GOOD_LINES, "T4\tNOMBRE_SUJETO_ASISTENCIA 6 11\tSouza"], 4, "overlaps span 0-11 of line 1"),
    "offsets past the text": ([GOOD_LINES[0], f"T2\tFECHAS 50 {len(TEXT) + 3}\tx"], 2, "ends past the text"),
    "value mismatch": ([GOOD_LINES[0], f"T2\tFECHAS {DATE[0] + 1} {DATE[1] + 1}\t12/03/2020"], 2, "covered-text column differs"),
    "unknown category": ([GOOD_LINES[0], f"T2\tDATE {DATE[0]} {DATE[1]}\t12/03/2020"], 2, "unknown category 'DATE'"),
    "malformed line": ([GOOD_LINES[0], "T2 FECHAS 26 36 12/03/2020"], 2, "malformed line"),
    "malformed offsets": ([f"T1\tFECHAS {DATE[0]} end\t12/03/2020"], 1, "malformed text-bound annotation"),
    "discontinuous span": (["T1\tNOMBRE_SUJETO_ASISTENCIA 0 5;6 11\tMaria Souza"], 1, "discontinuous span"),
    "start after end": ([f"T1\tFECHAS {DATE[1]} {DATE[0]}\t12/03/2020"], 1, "empty or reversed span"),
    "repeated id": ([GOOD_LINES[0], GOOD_LINES[1].replace("T2", "T1", 1)], 2, "already used on line 1"),
    "unknown line kind": ([GOOD_LINES[0], "X1\tsomething"], 2, "malformed line"),
}


@pytest.mark.parametrize("case", sorted(BAD_GOLD))
def test_bad_gold_is_refused_with_file_line_and_fix_never_the_value(tmp_path: Path, case: str) -> None:
    lines, line_number, what = BAD_GOLD[case]
    ann = write_pair(tmp_path, "note", TEXT, lines)
    with pytest.raises(CorpusError) as caught:
        read_brat(tmp_path / "note")
    message = str(caught.value)
    assert message.startswith(f"{ann}:{line_number}: "), message
    assert what in message and "Fix:" in message
    assert not any(value in message for value in ("Maria", "Souza", "12/03/2020", "Lisboa"))


def test_crlf_text_with_lf_offsets_is_a_value_mismatch(tmp_path: Path) -> None:
    # Offsets computed on the LF text point one character early per line break in the CRLF copy.
    text = "Alta.\nPaciente Maria Souza.\n"
    start = text.index("Maria")
    write_pair(tmp_path, "note", text.replace("\n", "\r\n"), [f"T1\tNOMBRE_SUJETO_ASISTENCIA {start} {start + 11}\tMaria Souza"])
    with pytest.raises(CorpusError, match=r"note\.ann:1: the covered-text column differs"):
        read_brat(tmp_path / "note")


def test_folder_reads_sorted_and_refuses_a_text_without_annotations(tmp_path: Path) -> None:
    for name in ("b", "a", "c"):
        write_pair(tmp_path, name, TEXT, GOOD_LINES[:1])
    assert [document.name for document in read_brat_folder(tmp_path)] == ["a", "b", "c"]
    (tmp_path / "d.txt").write_text("Sem dados.\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"d\.txt: no \.ann beside it \(1 such"):
        list(read_brat_folder(tmp_path))
    documents = list(read_brat_folder(tmp_path, missing_ann="empty"))
    assert [document.name for document in documents] == ["a", "b", "c", "d"] and documents[-1].spans == []
    (tmp_path / "e.ann").write_text("", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"e\.ann: no \.txt beside it"):
        list(read_brat_folder(tmp_path, missing_ann="empty"))


def test_a_bom_before_the_annotations_is_not_a_malformed_line(tmp_path: Path) -> None:
    ann = write_pair(tmp_path, "note", TEXT, GOOD_LINES)
    ann.write_bytes(b"\xef\xbb\xbf" + ann.read_bytes())
    assert len(read_brat(ann).spans) == 3


def test_non_utf8_text_is_refused_with_the_byte(tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_bytes("Jos\u00e9".encode("latin-1"))
    (tmp_path / "note.ann").write_text("", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"note\.txt: byte 3 is not UTF-8"):
        read_brat(tmp_path / "note")


# --- writing and round trips -----------------------------------------------------------------------------


def test_write_brat_round_trip_keeps_offsets_crlf_and_multiline_spans(tmp_path: Path) -> None:
    text = "Paciente: Maria\r\nSouza, 54 anos.\r\nÁvila, 03/03/2021\n"
    name_end = text.index(",")
    spans = [
        PhiSpan(text.index("03/03"), text.index("03/03") + 10, "FECHAS", "crf"),
        PhiSpan(10, name_end, "NOMBRE_SUJETO_ASISTENCIA", "rules"),  # spans a CRLF: written on one line
        PhiSpan(text.index("Ávila"), text.index("Ávila") + 5, "TERRITORIO", "crf"),
    ]
    txt, ann = write_brat(tmp_path / "out" / "note", text, spans)
    assert txt.read_bytes() == text.encode("utf-8") and len(ann.read_text(encoding="utf-8").splitlines()) == 3
    document = read_brat(tmp_path / "out" / "note.ann")
    assert document.text == text
    assert [(span.start, span.end, span.category) for span in document.spans] == sorted((s.start, s.end, s.category) for s in spans)
    with pytest.raises(ValueError, match="outside the text"):
        write_brat(tmp_path / "bad", text, [PhiSpan(0, len(text) + 1, "FECHAS")])
    assert not (tmp_path / "bad.txt").exists()


def test_label_studio_export_and_import_round_trip() -> None:
    document = BratDocument("note", TEXT, [PhiSpan(*NAME, "NOMBRE_SUJETO_ASISTENCIA", "crf"), PhiSpan(*DATE, "FECHAS", "rules")])
    (task,) = label_studio_tasks([document])
    assert task["data"]["text"] == TEXT and len(task["predictions"][0]["result"]) == 2
    # The annotator accepts the prediction and adds the city.
    result = [*task["predictions"][0]["result"], {"from_name": "label", "to_name": "text", "type": "labels",
              "value": {"start": CITY[0], "end": CITY[1], "labels": ["TERRITORIO"]}}]  # fmt: skip
    completed = {**task, "annotations": [{"was_cancelled": True, "result": []}, {"result": result}]}
    back = spans_from_label_studio(completed, where="export.json task 1")
    assert back.name == "note"
    assert back.spans == [PhiSpan(*NAME, "NOMBRE_SUJETO_ASISTENCIA", "gold"), PhiSpan(*DATE, "FECHAS", "gold"), PhiSpan(*CITY, "TERRITORIO", "gold")]
    overlapping = {**task, "annotations": [{"result": [*result, {"value": {"start": 5, "end": 15, "labels": ["TERRITORIO"]}}]}]}
    with pytest.raises(CorpusError, match="export.json task 1: spans .* overlap"):
        spans_from_label_studio(overlapping, where="export.json task 1")
    # Offsets counted another way (UTF-16, folded CRLF): the region's own text no longer matches.
    shifted = {**task, "annotations": [{"result": [{"value": {"start": 1, "end": 12, "text": "Maria Souza", "labels": ["NOMBRE_SUJETO_ASISTENCIA"]}}]}]}
    with pytest.raises(CorpusError) as caught:
        spans_from_label_studio(shifted, where="export.json task 1")
    assert "task 1 region 1: the region's text differs" in str(caught.value) and "Maria" not in str(caught.value)


def test_label_studio_files_round_trip_to_brat(tmp_path: Path) -> None:
    documents = [BratDocument(name, TEXT, [PhiSpan(*NAME, "NOMBRE_SUJETO_ASISTENCIA", "crf")]) for name in ("a", "b")]
    assert export_label_studio(documents, tmp_path / "tasks.json") == 2
    tasks = json.loads((tmp_path / "tasks.json").read_text(encoding="utf-8"))
    exported = [{**task, "annotations": [{"result": task["predictions"][0]["result"]}]} for task in tasks]
    (tmp_path / "export.json").write_text(json.dumps(exported), encoding="utf-8")
    assert import_label_studio(tmp_path / "export.json", tmp_path / "gold") == 2
    assert [(d.name, d.spans) for d in read_brat_folder(tmp_path / "gold")] == [(n, [PhiSpan(*NAME, "NOMBRE_SUJETO_ASISTENCIA", "gold")]) for n in "ab"]
    exported[1]["data"]["document"] = "../escape"
    (tmp_path / "export.json").write_text(json.dumps(exported), encoding="utf-8")
    with pytest.raises(CorpusError, match="export.json task 2"):
        import_label_studio(tmp_path / "export.json", tmp_path / "gold2")
    assert not (tmp_path / "escape.txt").exists()


# --- the measures -----------------------------------------------------------------------------------------------


def random_documents(seed: int, count: int = 30) -> list[ScoredDocument]:
    """Documents whose predictions keep, shift, relabel or drop gold spans and add false ones."""
    rng = random.Random(seed)
    categories = ["FECHAS", "TERRITORIO", "NOMBRE_SUJETO_ASISTENCIA", "EDAD_SUJETO_ASISTENCIA"]
    documents = []
    for index in range(count):
        text = "x" * 400
        gold = [PhiSpan(start, start + rng.randint(2, 8), rng.choice(categories)) for start in range(0, 390, 40) if rng.random() < 0.7]
        predicted = []
        for span in gold:
            roll = rng.random()
            if roll < 0.6:
                predicted.append(span)
            elif roll < 0.7:
                predicted.append(PhiSpan(span.start + 1, span.end, span.category))
            elif roll < 0.8:
                predicted.append(PhiSpan(span.start, span.end, rng.choice(categories)))
        predicted += [PhiSpan(start, start + 3, rng.choice(categories)) for start in range(20, 390, 40) if rng.random() < 0.15]
        documents.append(ScoredDocument(f"d{index}", text, gold, predicted))
    return documents


def sklearn_scores(documents: list[ScoredDocument], key, category: str | None = None) -> tuple[float, float, float]:
    """Precision, recall and F1 from scikit-learn: each distinct (document, key(span)) item is one binary label."""
    items: set[tuple] = set()
    truth: set[tuple] = set()
    guess: set[tuple] = set()
    for document in documents:
        for spans, bucket in ((document.gold, truth), (document.predicted, guess)):
            for span in spans:
                if category is None or span.category == category:
                    bucket.add((document.name, key(span)))
        items |= truth | guess
    ordered = sorted(items)
    precision, recall, f1, _ = precision_recall_fscore_support(
        [item in truth for item in ordered], [item in guess for item in ordered], average="binary", zero_division=0
    )
    return precision, recall, f1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_strict_scores_match_scikit_learn(seed: int) -> None:
    documents = random_documents(seed)
    scores = evaluate_documents(documents)
    ner = sklearn_scores(documents, lambda span: (span.category, span.start, span.end))
    assert (scores["subtrack1_ner"]["precision"], scores["subtrack1_ner"]["recall"], scores["subtrack1_ner"]["f1"]) == pytest.approx(ner)
    spans_only = sklearn_scores(documents, lambda span: (span.start, span.end))
    assert (scores["subtrack2_strict"]["precision"], scores["subtrack2_strict"]["recall"], scores["subtrack2_strict"]["f1"]) == pytest.approx(spans_only)
    for category, values in scores["categories"].items():
        expected = sklearn_scores(documents, lambda span: (span.category, span.start, span.end), category)
        assert (values["precision"], values["recall"], values["f1"]) == pytest.approx(expected), category
    assert sum(values["tp"] for values in scores["categories"].values()) == scores["subtrack1_ner"]["tp"]


def test_merged_spans_by_hand() -> None:
    # Gold splits the name in two; the system finds it whole: strict misses both, merged counts one hit.
    text = "Juan Pérez, 3 de mayo; Madrid"
    gold = [PhiSpan(0, 4, "NOMBRE_SUJETO_ASISTENCIA"), PhiSpan(5, 10, "NOMBRE_SUJETO_ASISTENCIA"), PhiSpan(23, 29, "TERRITORIO")]
    predicted = [PhiSpan(0, 10, "NOMBRE_SUJETO_ASISTENCIA"), PhiSpan(17, 21, "FECHAS")]
    assert merge_spans(text, [(0, 4), (5, 10), (23, 29)]) == [(0, 10), (23, 29)]  # ", 3 de mayo; " has letters: not merged
    scores = evaluate_documents([ScoredDocument("d", text, gold, predicted)])
    assert (scores["subtrack2_strict"]["tp"], scores["subtrack2_strict"]["fp"], scores["subtrack2_strict"]["fn"]) == (0, 2, 3)
    # merged: hit (0, 10); FP = "mayo" (its gap to the name holds letters); FN = Madrid; the two halves are inside the hit.
    assert (scores["subtrack2_merged"]["tp"], scores["subtrack2_merged"]["fp"], scores["subtrack2_merged"]["fn"]) == (1, 1, 1)
    assert scores["subtrack2_merged"]["precision"] == pytest.approx(0.5) and scores["subtrack2_merged"]["recall"] == pytest.approx(0.5)


def test_token_leak_and_official_leak_by_hand() -> None:
    # Gold: name "Ana Lima Rocha" (3 tokens), date "1/2/2020" (3 tokens: 1, 2, 2020). The system covers
    # "Ana Lima" and half of "Rocha", and the date as a whole but with the wrong category.
    text = "Paciente Ana Lima Rocha. Consulta em 1/2/2020.\nSem queixas."
    name_start = text.index("Ana")
    date_start = text.index("1/2")
    gold = [PhiSpan(name_start, name_start + 14, "NOMBRE_SUJETO_ASISTENCIA"), PhiSpan(date_start, date_start + 8, "FECHAS")]
    predicted = [PhiSpan(name_start, name_start + 11, "NOMBRE_SUJETO_ASISTENCIA"), PhiSpan(date_start, date_start + 8, "EDAD_SUJETO_ASISTENCIA")]
    assert token_leaks(text, gold, predicted) == (6, 1)  # "Rocha" is only half covered: it leaks
    assert count_sentences(text) == 3
    clean = ScoredDocument("clean", "Sem dados.", [], [])
    scores = evaluate_documents([ScoredDocument("d", text, gold, predicted), clean])
    assert scores["token_leak"] == {"gold_tokens": 6, "leaked_tokens": 1, "share": pytest.approx(1 / 6), "documents_with_phi": 1, "documents_with_leak": 1}
    assert scores["leak_official"]["false_negatives"] == 2 and scores["leak_official"]["sentences"] == 4
    assert scores["leak_official"]["score"] == pytest.approx(0.5)
    table = score_tables(scores)
    assert "| all (micro)" in table and "1 / 6 gold PHI tokens" in table and "Rocha" not in table


def test_no_predictions_and_no_gold_score_zero_without_dividing_by_zero() -> None:
    scores = evaluate_documents([ScoredDocument("d", "nada", [], [])])
    assert scores["subtrack1_ner"]["f1"] == 0.0 and scores["token_leak"]["share"] == 0.0 and scores["categories"] == {}


# --- real MEDDOCAN ------------------------------------------------------------------------------------------------


def test_meddocan_sample_reads_one_span_per_t_line(shared_data: Path) -> None:
    folder = shared_data / "meddocan" / "train"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    documents = list(read_brat_folder(folder, progress=False))
    assert len(documents) == len(list(folder.glob("*.txt")))
    for document in documents[:40]:
        lines = (folder / f"{document.name}.ann").read_text(encoding="utf-8").splitlines()
        assert len(document.spans) == sum(1 for line in lines if line.startswith("T")), document.name
    # gold scored against itself is perfect
    sample = [ScoredDocument(d.name, d.text, d.spans, d.spans) for d in documents[:40]]
    scores = evaluate_documents(sample)
    assert scores["subtrack1_ner"]["f1"] == 1.0 and scores["token_leak"]["leaked_tokens"] == 0


# --- the command ----------------------------------------------------------------------------------------------------


def test_deid_eval_compares_two_folders_end_to_end(tmp_path: Path) -> None:
    gold, predicted, report = tmp_path / "gold", tmp_path / "predicted", tmp_path / "report"
    write_pair(gold, "a", TEXT, GOOD_LINES)
    write_pair(gold, "b", TEXT, GOOD_LINES[:1])
    write_brat(predicted / "a", TEXT, [PhiSpan(*NAME, "NOMBRE_SUJETO_ASISTENCIA"), PhiSpan(*DATE, "FECHAS"), PhiSpan(1, 5, "TERRITORIO")])
    # b has no prediction: its name counts as missed
    result = CliRunner().invoke(app, ["deid", "eval", "--gold", str(gold), "--predicted", str(predicted), "--output", str(report)])
    assert result.exit_code == 0, result.output
    scores = json.loads((report / "scores.json").read_text(encoding="utf-8"))
    assert (scores["subtrack1_ner"]["tp"], scores["subtrack1_ner"]["fp"], scores["subtrack1_ner"]["fn"]) == (2, 1, 2)
    assert scores["documents"] == 2 and scores["documents_without_prediction"] == 1
    assert (report / "category_scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (report / "report.md").read_text(encoding="utf-8")
    assert "| all (micro)" in markdown and "| all (micro)" in result.output
    for output in (markdown, result.output, json.dumps(scores)):
        assert not any(value in output for value in ("Maria", "Souza", "12/03/2020", "Lisboa"))


def test_deid_eval_reads_deid_apply_spans_jsonl(tmp_path: Path) -> None:
    gold, predicted = tmp_path / "gold", tmp_path / "applied"
    write_pair(gold, "a", TEXT, GOOD_LINES)
    predicted.mkdir()
    lines = [{"document": "a.txt", "start": NAME[0], "end": NAME[1], "category": "NOMBRE_SUJETO_ASISTENCIA"}]
    (predicted / "spans.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    result = CliRunner().invoke(app, ["deid", "eval", "--gold", str(gold), "--predicted", str(predicted), "--output", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "r" / "scores.json").read_text(encoding="utf-8"))
    assert (scores["subtrack1_ner"]["tp"], scores["subtrack1_ner"]["fn"]) == (1, 2)


def test_deid_eval_refuses_bad_gold_and_bad_options(tmp_path: Path) -> None:
    gold = tmp_path / "gold"
    ann = write_pair(gold, "a", TEXT, [*GOOD_LINES, "T4\tFECHAS 27 30\t2/0"])
    result = CliRunner().invoke(app, ["deid", "eval", "--gold", str(gold), "--predicted", str(gold), "--output", str(tmp_path / "r")])
    assert result.exit_code == 1 and f"{ann}:4:" in result.output.replace("\n", "")
    result = CliRunner().invoke(app, ["deid", "eval", "--gold", str(gold), "--output", str(tmp_path / "r")])
    assert result.exit_code == 1 and "exactly one of --predicted" in result.output
    assert not (tmp_path / "r").exists()


def test_deid_eval_runs_the_deidentifier_with_language_and_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in with the de-identifier's interface, Deidentifier(language, model=None).find_many(texts) -> spans per text.
    import types

    calls = []

    class FakeDeidentifier:
        def __init__(self, language: str, model: Path | None = None) -> None:
            calls.append((language, model))

        def find_many(self, texts: list[str]) -> list[list[PhiSpan]]:
            return [[PhiSpan(*NAME, "NOMBRE_SUJETO_ASISTENCIA", "crf")] for _ in texts]

    module = types.ModuleType("medfactory.corpus.deid.deidentifier")
    module.Deidentifier = FakeDeidentifier
    monkeypatch.setitem(sys.modules, "medfactory.corpus.deid.deidentifier", module)
    gold = tmp_path / "gold"
    write_pair(gold, "a", TEXT, GOOD_LINES)
    command = ["deid", "eval", "--gold", str(gold), "--language", "pt", "--model", str(tmp_path / "m.crfsuite"), "--output", str(tmp_path / "r")]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert calls == [("pt", tmp_path / "m.crfsuite")]
    scores = json.loads((tmp_path / "r" / "scores.json").read_text(encoding="utf-8"))
    assert (scores["subtrack1_ner"]["tp"], scores["subtrack1_ner"]["fn"]) == (1, 2)
    result = CliRunner().invoke(app, ["deid", "eval", "--gold", str(gold), "--language", "fr", "--output", str(tmp_path / "r2")])
    assert result.exit_code == 1 and "--language must be es or pt" in result.output
