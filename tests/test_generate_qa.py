"""``medfactory generate qa``: parsing, schema, grounding and contamination as pure functions, then the command
against ONE real ``llamafactory-cli api`` server (module scope) serving a constant-answer tiny model.

The served model answers every request with :data:`ANSWER`, a JSON array of five MCQ records built so that
each gate has something to remove: one breaks the schema, one is beyond the three asked for, one repeats
a HEAD-QA-format evaluation item written under ``data/`` (contaminated), one repeats another's question
(duplicate). Chunks whose text holds the answers' words pass lexical grounding; the others fail it.

The verification request gets the same JSON array back, which is no verdict (:func:`parse_verdict` only
takes a clear yes / no or ``{"supported": ...}``). So the served runs use ``--no-verify`` for the counts,
and one served run with verification shows every pair removed as ``unverified`` (and the previous
dataset kept); both verdict outcomes are unit-tested on :func:`parse_verdict`.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from medfactory.base.errors import CorpusError
from medfactory.cli.qa import qa_command
from medfactory.corpus.contamination import ReferenceIndex
from medfactory.corpus.mcq import PROMPTS, answer_of, prompt_of, read_items
from medfactory.generate.grounding import content_words, lexical_overlap, parse_verdict, verification_messages
from medfactory.generate.qa import (
    Candidate,
    Chunk,
    McqPair,
    default_eval_sets,
    first_json,
    generation_messages,
    mcq_item,
    read_chunks,
    records_of,
    validate_pair,
)
from testing_utils.served_models import free_port, served
from testing_utils.tiny_models import build_constant_answer_model

GOOD = {
    "question": "¿Qué hormona reduce la glucosa en sangre?",
    "answer": "La insulina reduce la glucosa en sangre",
    "distractors": ["El cortisol", "La tiroxina", "La melatonina"],
}
EVAL_QUESTION = "¿Qué órgano produce la insulina?"
COPIED = {"question": EVAL_QUESTION, "answer": "El páncreas produce la insulina", "distractors": ["El hígado", "El bazo", "El riñón"]}
BAD_SCHEMA = {"question": "¿Qué produce el páncreas?", "answer": "Insulina", "distractors": ["Insulina", "Bilis", "Urea"]}  # answer among distractors
REPEATED = {**GOOD, "question": "¿qué hormona  REDUCE la glucosa en sangre?"}  # GOOD's question, case and spacing changed
EXTRA = {"question": "¿Qué hormona eleva la glucosa?", "answer": "El glucagón eleva la glucosa", "distractors": ["A", "B", "C"]}
ANSWER = json.dumps([GOOD, BAD_SCHEMA, COPIED, REPEATED, EXTRA], ensure_ascii=False)
QUESTIONS = 3
GROUNDED_TEXT = "La insulina, que produce el páncreas, reduce la glucosa en sangre tras las comidas."
UNGROUNDED_TEXT = "La hipertensión arterial aumenta el riesgo de ictus y de infarto de miocardio."
GROUNDED, UNGROUNDED = 3, 2


# --- Pure functions -------------------------------------------------------------------------------------


def test_first_json_finds_the_array_inside_prose_and_fences() -> None:
    assert first_json('Claro:\n```json\n[{"question": "q", "answer": "a"}]\n```') == [{"question": "q", "answer": "a"}]
    assert first_json('texto {roto [{"a": 1}] fin') == [{"a": 1}]  # a broken "{" is skipped, the next candidate parses
    assert first_json("sin JSON") is None and first_json(None) is None
    assert records_of({"preguntas": [1, 2]}) == [1, 2] and records_of({"question": "q"}) == [{"question": "q"}] and records_of("x") == []


@pytest.mark.parametrize(
    ("record", "mcq", "valid"),
    [
        (GOOD, True, True),
        ({"question": GOOD["question"], "answer": GOOD["answer"], "explanation": "ignored"}, False, True),
        ({"question": "  ", "answer": "a"}, False, False),  # blank after stripping
        ({"question": "¿Corto?", "answer": "a"}, False, False),  # under 8 characters
        ({"question": GOOD["question"], "answer": 4}, False, False),  # not a string (strict)
        ({"question": GOOD["question"], "answer": " ¿qué hormona reduce la glucosa en sangre? "}, False, False),  # repeats the question
        ({**GOOD, "distractors": ["El cortisol", "La tiroxina"]}, True, False),  # two, not three
        ({**GOOD, "distractors": ["El cortisol", "el  cortisol", "La melatonina"]}, True, False),  # repeated distractor
        (BAD_SCHEMA, True, False),  # a distractor is the answer
        ({**GOOD, "distractors": ["El cortisol", "", "La melatonina"]}, True, False),
        ({"question": GOOD["question"], "answer": GOOD["answer"]}, True, False),  # MCQ needs distractors
    ],
)
def test_schema(record: dict, mcq: bool, valid: bool) -> None:
    assert (validate_pair(record, mcq) is not None) is valid


def test_lexical_overlap_folds_case_accents_stop_words_and_inflection() -> None:
    passage = content_words("La METFORMINA disminuye la producción hepática de glucosa.", "es")
    assert "la" not in passage and "de" not in passage
    # reduce is not in the passage; metformina, produccion (accent folded), hepatico (stem of hepática), glucosa are: 4 of 5
    assert lexical_overlap("Metformina: reduce la produccion hepatico de glucosa", passage, "es") == 0.8
    assert lexical_overlap("Sí.", passage, "es") == 0.0  # no content word: nothing to check
    pt = content_words("A insulina reduz a glicose no sangue.", "pt")
    assert lexical_overlap("Insulina reduzem glicose", pt, "pt") == 1.0 and lexical_overlap("O glucagon eleva", pt, "pt") == 0.0


@pytest.mark.parametrize(
    ("text", "verdict"),
    [("Sí.", True), ("«sim»", True), ("Yes", True), ('{"supported": true}', True), ('Respuesta {"supported": false}', False),
     ("No", False), ("Não.", False), ("quizá", None), ("", None), (None, None), (ANSWER, None)],
)  # fmt: skip
def test_parse_verdict(text: str | None, verdict: bool | None) -> None:
    assert parse_verdict(text) is verdict


def test_prompts_are_in_the_chunk_language_and_ask_for_the_schema() -> None:
    es = Chunk("d:0", "d", 0, "Texto del capítulo.", None, "es")
    pt = Chunk("d:1", "d", 1, "Texto do capítulo.", None, "pt")
    user_es = generation_messages(es, 4, mcq=True)[1]["content"]
    assert "escribe 4 preguntas" in user_es and '"distractors"' in user_es and "Texto del capítulo." in user_es
    user_pt = generation_messages(pt, 2, mcq=False)[1]["content"]
    assert "escreva 2 perguntas" in user_pt and "distractors" not in user_pt
    assert "Pergunta: q" in verification_messages("p", "q", "a", "pt")[1]["content"]


def test_reference_index_names_exact_and_near_copies_and_every_set() -> None:
    index = ReferenceIndex(shingle_size=3)
    long_question = (
        "¿Cuál es el tratamiento de primera elección de la crisis hipertensiva en el embarazo según las guías actuales "
        "de la sociedad española de ginecología y obstetricia?"
    )
    index.add("a\t1", long_question)
    index.add("b\t7", long_question)  # the same item in a second set
    assert [(m.label, m.kind) for m in index.matches(long_question.upper())] == [("a\t1", "exact"), ("b\t7", "exact")]
    near = index.matches(long_question.replace("obstetricia?", "obstetricia ?"))  # one shingle of 24 changed
    assert [m.kind for m in near] == ["near", "near"] and near[0].jaccard >= 0.85
    assert index.matches("¿Qué órgano produce la insulina?") == []


def test_answer_positions_are_drawn_from_seed_and_id() -> None:
    chunk = Chunk("d:0", "d", 0, "t", "topic", "es")
    pair = McqPair.model_validate(GOOD)
    items = [mcq_item(Candidate(f"d:0:q{i}", chunk, pair, 1.0), seed=42) for i in range(40)]
    assert {item.answer for item in items} == {0, 1, 2, 3}
    for item in items:
        assert item.answer == random.Random(f"42:{item.id}").randrange(4) and item.answer_text == GOOD["answer"]
        assert sorted(item.options) == sorted([GOOD["answer"], *GOOD["distractors"]]) and item.category == "topic"
    assert mcq_item(Candidate("d:0:q1", chunk, pair, 1.0), seed=42) == items[1]


# --- Source and evaluation sets -----------------------------------------------------------------------------


def chunk_record(index: int, text: str, language: str = "es") -> dict:
    return {"id": f"doc{index}:0", "document_id": f"doc{index}", "chunk": 0, "text": text, "topic": "endocrinologia", "language": language}


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({**chunk_record(2, "x"), "text": ""}), '"text" is missing'),
        (json.dumps({**chunk_record(2, "x"), "language": "fr"}), '"language" must be one of es, pt'),
        (json.dumps(chunk_record(1, "again")), "chunk id already used on line 1"),
    ],
)
def test_bad_chunk_file_names_the_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "chunks.jsonl"
    path.write_text(json.dumps(chunk_record(1, "El texto secreto del capítulo.")) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(CorpusError) as error:
        read_chunks(path)
    assert f"{path}, line 2: " in str(error.value) and expected in str(error.value) and "secreto" not in str(error.value)


def test_language_option_refuses_a_chunk_in_another_language(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chunks.jsonl", [chunk_record(1, "Texto."), chunk_record(2, "Texto.", "pt")])
    with pytest.raises(CorpusError, match=r"line 2: language pt but --language es"):
        read_chunks(path, language="es")
    assert len(read_chunks(path)) == 2


@pytest.mark.parametrize("endpoint", ["http://10.1.2.3:8000/v1", "http://example.org/v1", "http://0.0.0.0:8000/v1"])
def test_a_non_loopback_endpoint_is_refused_with_nothing_sent_or_written(tmp_path: Path, endpoint: str) -> None:
    write_jsonl(tmp_path / "data" / "docs_es" / "chunks.jsonl", [chunk_record(1, "El texto secreto del capítulo.")])
    (tmp_path / "dataset_info.json").write_text("{}\n", encoding="utf-8")
    result = run_qa(tmp_path, "--endpoint", endpoint)
    assert result.exit_code == 1 and "--allow-remote-endpoint" in result.output and "nothing was sent" in result.output
    assert "secreto" not in result.output
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["docs_es"] and not (tmp_path / ".medfactory_cache").exists()
    assert (tmp_path / "dataset_info.json").read_text(encoding="utf-8") == "{}\n"


def write_head_qa_eval(root: Path) -> Path:
    """data/head_qa_es/ as the head_qa plugin writes it: MCQ test.jsonl and a manifest naming the plugin."""
    item = {"id": "Cuaderno_2013_1_B-7", "question": EVAL_QUESTION, "options": ["El páncreas", "El bazo", "El hígado", "El riñón"], "answer": 0,
            "letters": ["A", "B", "C", "D"], "category": "biology", "year": 2013, "exam": "Cuaderno_2013_1_B", "has_image": False,
            "language": "es"}  # fmt: skip
    folder = root / "data" / "head_qa_es"
    write_jsonl(folder / "test.jsonl", [item])
    (folder / "manifest.json").write_text(json.dumps({"plugin": "head_qa"}), encoding="utf-8")
    return folder / "test.jsonl"


def test_default_eval_sets_are_the_mcq_files_mcq_plugins_wrote(tmp_path: Path) -> None:
    eval_file = write_head_qa_eval(tmp_path)
    write_jsonl(tmp_path / "data" / "head_qa_es" / "provenance.jsonl", [{"id": "x", "model": "m"}])  # not MCQ: not an eval set
    other = tmp_path / "data" / "notes"
    write_jsonl(other / "test.jsonl", read_items_as_dicts(eval_file))  # MCQ-shaped, but not written by an MCQ plugin
    (other / "manifest.json").write_text(json.dumps({"plugin": "notes"}), encoding="utf-8")
    careqa = tmp_path / "data" / "careqa_es"
    write_jsonl(careqa / "test.jsonl", read_items_as_dicts(eval_file))  # an exam_mcq set (CareQA, MedExpQA, HealthQA-BR, generic)
    (careqa / "manifest.json").write_text(json.dumps({"plugin": "exam_mcq"}), encoding="utf-8")
    found = [(s.name, s.path) for s in default_eval_sets(tmp_path)]
    assert sorted(found) == [("careqa_es/test", careqa / "test.jsonl"), ("head_qa_es/test", eval_file)]


def read_items_as_dicts(path: Path) -> list[dict]:
    return [item.to_dict() for item in read_items(path)]


# --- The command, served ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory):
    """One `llamafactory-cli api` for the module, serving a tiny model that always answers ANSWER."""
    folder = tmp_path_factory.mktemp("qa-server")
    with served({"qa": build_constant_answer_model(folder / "model", ANSWER)}, folder) as endpoints:
        yield endpoints["qa"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qa-root")
    # distinct texts, so each chunk is its own request and cache entry (identical texts would share one)
    texts = [f"{GROUNDED_TEXT} Capítulo {i}." for i in range(GROUNDED)] + [f"{UNGROUNDED_TEXT} Capítulo {i}." for i in range(UNGROUNDED)]
    chunks = [chunk_record(i, text) for i, text in enumerate(texts)]
    write_jsonl(root / "data" / "docs_es" / "chunks.jsonl", chunks)
    write_head_qa_eval(root)
    (root / "dataset_info.json").write_text("{}", encoding="utf-8")
    return root


def run_qa(root: Path, *args: str) -> typer.testing.Result:
    app = typer.Typer()
    app.command()(qa_command)
    source = str(root / "data" / "docs_es" / "chunks.jsonl")
    base = ["--source", source, "--name", "qa_es", "--mcq", "--questions-per-chunk", str(QUESTIONS), "--output-root", str(root), "--concurrency", "2"]
    return CliRunner().invoke(app, [*base, *args])


@pytest.fixture(scope="module")
def first_run(endpoint: str, workspace: Path) -> typer.testing.Result:
    result = run_qa(workspace, "--endpoint", endpoint, "--no-verify")
    assert result.exit_code == 0, result.output
    return result


def test_gates_count_what_an_independent_computation_expects(first_run: typer.testing.Result, workspace: Path) -> None:
    manifest = json.loads((workspace / "data" / "qa_es" / "manifest.json").read_text(encoding="utf-8"))
    chunks = GROUNDED + UNGROUNDED
    # Per reply: 5 records; BAD_SCHEMA fails the schema; 3 valid ones fill the 3 asked for, so EXTRA is beyond them.
    # Grounded chunks keep GOOD, COPIED, REPEATED; the ungrounded ones lose all 3. COPIED is contaminated in each
    # grounded chunk; of the 2 GOOD + REPEATED per grounded chunk, only the first chunk's GOOD is not a duplicate.
    expected = {"request_failed": 0, "truncated": 0, "unparseable": 0, "schema": chunks, "beyond_requested": chunks,
                "ungrounded_lexical": QUESTIONS * UNGROUNDED, "contaminated": GROUNDED, "verification_failed": 0, "unverified": 0,
                "duplicate": 2 * GROUNDED - 1}  # fmt: skip
    assert manifest["dropped"] == expected
    assert manifest["gates"]["pairs"]["parsed"] == 5 * chunks and manifest["kept"] == 1
    assert manifest["gates"]["pairs"]["parsed"] == sum(expected.values()) + manifest["kept"]
    assert manifest["gates"]["contaminated"] == {"head_qa_es/test": GROUNDED}
    assert manifest["contamination"]["examples"][0] == {"id": "doc0:0:q3", "eval_set": "head_qa_es/test", "eval_id": "Cuaderno_2013_1_B-7"}
    assert manifest["client"]["requests"] == chunks and manifest["prompt_version"] == "qa-generate/1"
    registry = json.loads((workspace / "dataset_info.json").read_text(encoding="utf-8"))
    assert registry["qa_es"]["file_name"] == "data/qa_es/sft.json" and manifest["datasets"]["qa_es"]["records"] == 1
    assert f"{chunks} chunks, {5 * chunks} pairs parsed, 1 kept" in first_run.output


def test_outputs_items_sft_and_provenance(first_run: typer.testing.Result, workspace: Path) -> None:
    folder = workspace / "data" / "qa_es"
    (item,) = read_items(folder / "items.jsonl")
    assert item.id == "doc0:0:q1" and item.answer_text == GOOD["answer"] and item.answer == random.Random(f"42:{item.id}").randrange(4)
    (row,) = json.loads((folder / "sft.json").read_text(encoding="utf-8"))
    assert row == {"instruction": prompt_of(item, PROMPTS["es"]), "input": "", "output": answer_of(item, item.answer, PROMPTS["es"]), "id": item.id}
    (provenance,) = [json.loads(line) for line in (folder / "provenance.jsonl").read_text(encoding="utf-8").splitlines()]
    assert provenance == {"id": item.id, "document_id": "doc0", "chunk_id": "doc0:0", "model": "default", "prompt_version": "qa-generate/1",
                          "lexical_overlap": 1.0, "verified": None}  # fmt: skip
    manifest_text = (folder / "manifest.json").read_text(encoding="utf-8")
    for text in ("insulina", "hipertensión", "cortisol", "páncreas"):  # no chunk text, question or answer in the manifest or the console
        assert text not in manifest_text and text not in first_run.output


def test_rerun_answers_from_the_cache_against_a_dead_endpoint(first_run: typer.testing.Result, workspace: Path) -> None:
    folder = workspace / "data" / "qa_es"
    before = (folder / "sft.json").read_bytes(), (folder / "items.jsonl").read_bytes()
    result = run_qa(workspace, "--endpoint", f"http://127.0.0.1:{free_port()}/v1", "--no-verify", "--retries", "0")
    assert result.exit_code == 0, result.output
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["client"]["from_cache"] == manifest["client"]["requests"] == GROUNDED + UNGROUNDED
    assert ((folder / "sft.json").read_bytes(), (folder / "items.jsonl").read_bytes()) == before


def test_verification_without_a_yes_removes_every_pair_and_keeps_the_previous_dataset(first_run: typer.testing.Result, endpoint: str, workspace: Path) -> None:
    folder = workspace / "data" / "qa_es"
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    result = run_qa(workspace, "--endpoint", endpoint)  # verification on: the reply to it is ANSWER, no verdict
    assert result.exit_code == 1
    # the 3 grounded chunks' GOOD and REPEATED reach verification (verified before de-duplication)
    assert "no generated item passed the gates" in result.output and f"unverified {2 * GROUNDED}" in result.output
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".qa_es")]  # no staging folder left behind


def test_free_qa_rows_are_question_and_answer(endpoint: str, workspace: Path) -> None:
    app = typer.Typer()
    app.command()(qa_command)
    source = str(workspace / "data" / "docs_es" / "chunks.jsonl")
    args = ["--source", source, "--name", "qa_free_es", "--output-root", str(workspace), "--endpoint", endpoint, "--no-verify", "--questions-per-chunk", "5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    folder = workspace / "data" / "qa_free_es"
    rows = json.loads((folder / "sft.json").read_text(encoding="utf-8"))
    # free Q&A ignores distractors, so BAD_SCHEMA passes the schema; its answer "Insulina" is grounded; EXTRA's is not
    assert [(row["instruction"], row["output"]) for row in rows] == [(GOOD["question"], GOOD["answer"]), (BAD_SCHEMA["question"], BAD_SCHEMA["answer"])]
    assert not (folder / "items.jsonl").exists()


# --- The command through llamafactory-cli predict, in rounds ------------------------------------------------


def predict_round(root: Path, llamafactory_train, model: Path, round_set: str, output: str) -> Path:
    """One round answered by `llamafactory-cli train` predict (the clinical-cases predict recipe, any predict recipe serves), greedy."""
    manifest = json.loads((root / "data" / round_set / "manifest.json").read_text(encoding="utf-8"))
    run = llamafactory_train(root, "recipes/clinical_cases_predict.yaml", model_name_or_path=model, adapter_name_or_path="null", template="empty",
                             quantization_bit="null", bf16="false", eval_dataset=round_set, preprocessing_num_workers=1,
                             max_new_tokens=manifest["decoding_asked"]["max_tokens"], output_dir=root / "saves" / output)  # fmt: skip
    return run / "generated_predictions.jsonl"


@pytest.mark.slow
def test_predict_rounds_generate_then_verify_and_publish_what_the_served_engine_publishes(
    first_run: typer.testing.Result, workspace: Path, repo_copy: Path, llamafactory_train
) -> None:
    """Round 1 (generation) by one predict run, round 2 (verification, built from round 1's replies) by another model's: the items
    and SFT rows equal the served run's byte for byte (verification keeps what --no-verify kept), and nothing is published before."""
    root = repo_copy
    shutil.copytree(workspace / "data" / "docs_es", root / "data" / "docs_es")
    write_head_qa_eval(root)
    first = run_qa(root, "--engine", "predict")
    assert first.exit_code == 0, first.output
    assert "not finished: 5 requests await a predict run: registered qa_es_round" in first.output and not (root / "data" / "qa_es").exists()
    generator = build_constant_answer_model(root / "generator", ANSWER)
    replies = predict_round(root, llamafactory_train, generator, "qa_es_round", "round1")

    second = run_qa(root, "--engine", "predict", "--predictions", str(replies))
    assert second.exit_code == 0, second.output
    assert f"{2 * GROUNDED} requests await a predict run" in second.output and not (root / "data" / "qa_es").exists()  # GOOD, REPEATED per grounded chunk
    verifier = build_constant_answer_model(root / "verifier", '{"supported": true}')
    verdicts = predict_round(root, llamafactory_train, verifier, "qa_es_round", "round2")

    third = run_qa(root, "--engine", "predict", "--predictions", str(verdicts))
    assert third.exit_code == 0, third.output
    folder, served_folder = root / "data" / "qa_es", workspace / "data" / "qa_es"
    for name in ("items.jsonl", "sft.json"):
        assert (folder / name).read_bytes() == (served_folder / name).read_bytes(), name
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["verdicts"] == {"supported": 2 * GROUNDED} and manifest["dropped"]["unverified"] == 0 and manifest["kept"] == 1
    assert manifest["client"]["engine"] == "llamafactory-cli predict (rounds)" and manifest["client"]["from_cache"] == 5 + 2 * GROUNDED
    (provenance,) = [json.loads(line) for line in (folder / "provenance.jsonl").read_text(encoding="utf-8").splitlines()]
    assert provenance["verified"] is True

    wrong = run_qa(root, "--engine", "predict", "--predictions", str(replies))  # round 1's replies against round 2's set
    assert wrong.exit_code == 1 and "rows for the" in wrong.output and "insulina" not in wrong.output
