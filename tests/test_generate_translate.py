"""`medfactory generate translate`: MCQ sets, Q&A pairs and documents through a real `llamafactory-cli api`.

Two tiny constant-answer models are served once for the module (started together): one always answers a
Spanish JSON MCQ translation with 4 options, the other one Spanish sentence. Every expected gate count
below follows from the sources' design (said beside each source), not from the gate functions. The gates
themselves are tested as pure functions at the end, without a server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu
from typer.testing import CliRunner

from medfactory.base.jsonl import read_jsonl, write_jsonl
from medfactory.cli import app
from medfactory.corpus.mcq import PROMPTS, McqItem, read_items
from medfactory.generate import gates
from medfactory.generate.gates import GateSettings, parse_mcq, residue_share, translation_gate
from medfactory.generate.prompts import PROMPT_VERSION, REPORT_PROMPT_PT, prompt_for
from medfactory.plugins import mimic_cxr
from testing_utils.served_models import free_port, served
from testing_utils.tiny_models import build_constant_answer_model

ES_QUESTION = "¿Cuál es el tratamiento inicial de la hipertensión arterial en un paciente sin otras enfermedades?"
ES_OPTIONS = ["Un diurético tiazídico", "Un antibiótico macrólido", "Un inhibidor de la bomba de protones", "Una benzodiacepina de acción corta"]
ES_MCQ = json.dumps({"question": ES_QUESTION, "options": ES_OPTIONS}, ensure_ascii=False)
ES_SENTENCE = "El paciente presenta hipertensión arterial y recibe tratamiento con un diurético tiazídico."

EN_QUESTION = "What is the initial treatment of high blood pressure in a patient without other diseases?"
EN_OPTIONS = ["A thiazide diuretic", "A macrolide antibiotic", "A proton pump inhibitor", "A short-acting benzodiazepine"]
VIGNETTE = "A 54-year-old man with a long history of smoking and poorly controlled diabetes comes to the clinic with chest pain. " * 6


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``{"mcq": url, "sentence": url}``: two `llamafactory-cli api` servers, started at once (the module's only ones)."""
    folder = tmp_path_factory.mktemp("translate-servers")
    models = {name: build_constant_answer_model(folder / name, answer) for name, answer in (("mcq", ES_MCQ), ("sentence", ES_SENTENCE))}
    with served(models, folder) as urls:
        yield urls


def translate(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["generate", "translate", "--output-root", str(root), *args])
    return result.exit_code, result.output


def mcq_item(item_id: str, question: str, options: list[str], answer: int, has_image: bool = False) -> dict:
    letters = [chr(ord("A") + index) for index in range(len(options))]
    return McqItem(item_id, question, options, answer, letters, "medicine", 2020, "usmle", has_image, "en").to_dict()


# The constant answer is a 4-option Spanish translation of MCQ_A: these expectations follow from each source.
MCQ_SOURCE = [
    mcq_item("q-a", EN_QUESTION, EN_OPTIONS, 0),  # kept
    mcq_item("q-b", "Which drug is first given to a patient with new high blood pressure?", EN_OPTIONS, 2),  # kept
    mcq_item("q-c", EN_QUESTION, [*EN_OPTIONS, "A loop diuretic"], 1),  # 5 options -> 4: option_count
    mcq_item("q-d", VIGNETTE + EN_QUESTION, EN_OPTIONS, 3),  # ~800 source characters -> ~215: length_ratio
    mcq_item("q-e", ES_QUESTION, EN_OPTIONS, 1),  # the question is Spanish already, copied in the reply: untranslated_residue
    mcq_item("q-f", "Which finding does the image show in this patient with high blood pressure?", EN_OPTIONS, 1, has_image=True),  # kept, not SFT
]
MCQ_EXPECTED = {"q-a": None, "q-b": None, "q-c": "option_count", "q-d": "length_ratio", "q-e": "untranslated_residue", "q-f": None}


def test_mcq_translation_end_to_end(endpoints: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "mcq_en.jsonl"
    write_jsonl(source, MCQ_SOURCE)
    (tmp_path / "dataset_info.json").write_text("{}\n")
    code, output = translate(tmp_path, "--kind", "mcq", "--source", str(source), "--name", "mcq_es", "--endpoint", endpoints["mcq"])
    assert code == 0, output
    folder = tmp_path / "data/mcq_es"
    manifest = json.loads((folder / "manifest.json").read_text())
    expected_gates = {gate: sum(value == gate for value in MCQ_EXPECTED.values()) for gate in manifest["gate_order"]}
    assert manifest["gates"] == expected_gates and manifest["kept"] == 3 and manifest["total"] == 6
    assert manifest["gate_order"] == [g for g in gates.GATES if g != "back_translation"]
    assert manifest["prompt_version"] == PROMPT_VERSION and manifest["client"]["sent"] == 6
    assert manifest["datasets"] == {"mcq_es": {"file": "data/mcq_es/sft.json", "records": 2}}
    text = (folder / "manifest.json").read_text()
    assert EN_QUESTION not in text and ES_QUESTION not in text and "diuretic" not in text  # counts, never text

    items = read_items(folder / "items.jsonl")
    source_by_id = {item["id"]: item for item in MCQ_SOURCE}
    assert [item.id for item in items] == ["q-a", "q-b", "q-f"]
    for item in items:
        assert item.answer == source_by_id[item.id]["answer"] and item.letters == ["A", "B", "C", "D"]
        assert (item.question, item.options, item.language) == (ES_QUESTION, ES_OPTIONS, "es")
    sft = json.loads((folder / "sft.json").read_text())
    assert [row["id"] for row in sft] == ["q-a", "q-b"]  # the image question is in items.jsonl only
    style = PROMPTS["es"]
    options = "\n".join(f"{letter}) {option}" for letter, option in zip("ABCD", ES_OPTIONS, strict=True))
    answer = "Respuesta: C) Un inhibidor de la bomba de protones"
    assert sft[1] == {"instruction": f"{style.instruction}\n\n{ES_QUESTION}\n\n{options}", "input": "", "output": answer, "id": "q-b"}
    assert manifest["sft"]["prompt"] == style.record()

    requests = read_jsonl(folder / "translate_requests.jsonl")
    assert json.loads((folder / "translate_ids.json").read_text()) == [item["id"] for item in MCQ_SOURCE]
    sent = json.dumps({"question": EN_QUESTION, "options": [*EN_OPTIONS, "A loop diuretic"]}, ensure_ascii=False)
    assert requests[2] == {"instruction": prompt_for("es", "mcq"), "input": sent, "output": ""}
    provenance = read_jsonl(folder / "provenance.jsonl")
    assert {row["id"]: row["rejected_by"] for row in provenance} == MCQ_EXPECTED
    assert all(row["prompt_version"] == PROMPT_VERSION and row["model"] == "default" and row["source_id"] == row["id"] for row in provenance)
    assert json.loads((tmp_path / "dataset_info.json").read_text())["mcq_es"]["file_name"] == "data/mcq_es/sft.json"

    # Against a dead endpoint the rerun is answered by the request cache entirely: same outputs, nothing sent.
    dead = f"http://127.0.0.1:{free_port()}/v1"
    code, output = translate(tmp_path, "--kind", "mcq", "--source", str(source), "--name", "mcq_es", "--endpoint", dead, "--retries", "0")
    assert code == 0, output
    again = json.loads((folder / "manifest.json").read_text())
    assert again["client"]["from_cache"] == 6 and again["client"]["sent"] == 0 and again["gates"] == manifest["gates"]
    assert again["outputs"]["items.jsonl"] == manifest["outputs"]["items.jsonl"]

    # A failure inside the run (every item rejected: all have 5 options) leaves the previous data/mcq_es/ as it was.
    five = tmp_path / "five.jsonl"
    write_jsonl(five, [mcq_item(f"f-{n}", EN_QUESTION, [*EN_OPTIONS, "A loop diuretic"], 0) for n in range(2)])
    before = (folder / "manifest.json").read_bytes()
    code, output = translate(tmp_path, "--kind", "mcq", "--source", str(five), "--name", "mcq_es", "--endpoint", endpoints["mcq"])
    assert code == 1 and "every one of 2 records was rejected" in output and "option_count" in output
    assert (folder / "manifest.json").read_bytes() == before and EN_QUESTION not in output


def test_refusals_write_nothing(tmp_path: Path) -> None:
    source = tmp_path / "mcq_en.jsonl"
    write_jsonl(source, MCQ_SOURCE[:2])
    (tmp_path / "dataset_info.json").write_text("{}\n")
    code, output = translate(tmp_path, "--kind", "mcq", "--source", str(source), "--name", "remote", "--endpoint", "http://10.1.2.3:8000/v1")
    assert code == 1 and "--allow-remote-endpoint" in output and "nothing was sent" in output
    assert not (tmp_path / "data").exists() and not (tmp_path / ".medfactory_cache").exists()
    assert (tmp_path / "dataset_info.json").read_text() == "{}\n"

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(MCQ_SOURCE[0]) + "\n{not json\n")
    code, output = translate(tmp_path, "--kind", "mcq", "--source", str(bad), "--name", "bad")
    assert code == 1 and f"{bad}, line 2" in output and "invalid JSON" in output
    assert not (tmp_path / "data").exists() and not (tmp_path / ".medfactory_cache").exists()

    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"instruction": "What?", "output": "This."}\n{"instruction": "Why?"}\n')
    code, output = translate(tmp_path, "--kind", "qa", "--source", str(qa), "--name", "bad")
    assert code == 1 and f"{qa}, line 2: 'output' must be a non-empty string" in output


EN_SENTENCE = "The patient has high blood pressure and is treated with a thiazide diuretic every day."


def test_documents_are_chunked_gated_and_reassembled(endpoints: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    write_jsonl(
        source,
        [
            {"id": "d1", "text": EN_SENTENCE, "topic": None},  # one chunk: kept
            {"id": "d2", "text": f"{EN_SENTENCE} {EN_SENTENCE}\n\n{EN_SENTENCE}"},  # three chunks (one sentence each at 100 characters): kept
            {"id": "d3", "text": f"{EN_SENTENCE} He is well today."},  # two chunks; the second (17 characters) is too short to ratio-check: kept
            {"id": "d4", "text": f"{EN_SENTENCE} The patient is stable today."},  # two chunks; the second 28 -> 91 characters: length_ratio
        ],
    )
    args = ["--kind", "documents", "--source", str(source), "--name", "docs_es", "--endpoint", endpoints["sentence"], "--chunk-characters", "100"]
    code, output = translate(tmp_path, *args)
    assert code == 0, output
    manifest = json.loads((tmp_path / "data/docs_es/manifest.json").read_text())
    assert manifest["gates"]["length_ratio"] == 1 and sum(manifest["gates"].values()) == 1 and manifest["kept"] == 3
    assert manifest["parts"]["total"] == 1 + 3 + 2 + 2 and manifest["parts"]["gates"]["length_ratio"] == 1
    train = read_jsonl(tmp_path / "data/docs_es/train.jsonl")
    assert train == [
        {"id": "d1", "text": ES_SENTENCE},
        {"id": "d2", "text": f"{ES_SENTENCE} {ES_SENTENCE}\n\n{ES_SENTENCE}"},  # in order, joined as the source was
        {"id": "d3", "text": f"{ES_SENTENCE} {ES_SENTENCE}"},
    ]
    assert json.loads((tmp_path / "data/docs_es/translate_ids.json").read_text()) == ["d1:0", "d2:0", "d2:1", "d2:2", "d3:0", "d3:1", "d4:0", "d4:1"]
    entry = json.loads((tmp_path / "dataset_info.json").read_text())["docs_es"]
    assert entry == {"file_name": "data/docs_es/train.jsonl", "columns": {"prompt": "text"}, "medfactory_plugin": "translate"}


QA_PAIRS = [
    {
        "id": "p1",
        "instruction": "What is the first-line treatment for high blood pressure in adults?",
        "output": "A thiazide diuretic, for most adults with high blood pressure.",
    },
    # id qa-2 (the file's stem and record number); "Yes." is too short to ratio-check
    {"instruction": "Is the thiazide diuretic taken every single day?", "input": "He takes one thiazide diuretic pill every morning.", "output": "Yes."},
    # Spanish already; the reply copies its output's words: untranslated_residue
    {"id": "p3", "instruction": "¿Qué tratamiento recibe el paciente con hipertensión arterial cada día?", "output": ES_SENTENCE.removesuffix(" tiazídico.")},
]


def test_qa_pairs_with_back_translation(endpoints: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "qa.json"
    source.write_text(json.dumps(QA_PAIRS))
    args = ["--kind", "qa", "--source", str(source), "--name", "qa_es", "--back-translate"]
    code, output = translate(tmp_path, *args, "--endpoint", endpoints["sentence"], "--min-chrf", "0")
    assert code == 0, output
    folder = tmp_path / "data/qa_es"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {gate: count for gate, count in manifest["gates"].items() if count} == {"untranslated_residue": 1} and manifest["kept"] == 2
    # 7 field requests, then 5 back-translations of the kept pairs' fields (all the same text: sent once)
    assert manifest["client"]["requests"] == 12 and manifest["client"]["sent"] == 8
    sft = json.loads((folder / "sft.json").read_text())
    assert sft == [
        {"instruction": ES_SENTENCE, "input": "", "output": ES_SENTENCE, "id": "p1"},
        {"instruction": ES_SENTENCE, "input": ES_SENTENCE, "output": ES_SENTENCE, "id": "qa-2"},
    ]
    ids = ["p1:instruction", "p1:output", "qa-2:instruction", "qa-2:input", "qa-2:output", "p3:instruction", "p3:output"]
    assert json.loads((folder / "translate_ids.json").read_text()) == ids
    # The constant model answers a prompt that ends with its own answer with nothing: every back-translation is
    # empty, whose chrF against any source is 0 (sacrebleu's, computed here directly).
    provenance = {row["id"]: row for row in read_jsonl(folder / "provenance.jsonl")}
    expected = min(sacrebleu.sentence_chrf("", [QA_PAIRS[0][key]]).score for key in ("instruction", "output"))
    assert provenance["p1"]["back_translation_chrf"] == expected == 0.0 and provenance["p3"]["back_translation_chrf"] is None
    assert provenance["p1"]["gates_passed"][-1] == "back_translation" and provenance["p3"]["rejected_by"] == "untranslated_residue"

    # A stricter threshold, against a dead endpoint: answered from the cache (back-translations included), every
    # pair now fails, and the previous data/qa_es/ stays.
    before = (folder / "manifest.json").read_bytes()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    code, output = translate(tmp_path, *args, "--endpoint", dead, "--retries", "0", "--min-chrf", "0.5")
    assert code == 1 and "'untranslated_residue': 1, 'back_translation': 2" in output
    assert (folder / "manifest.json").read_bytes() == before


# --- The gates as pure functions -----------------------------------------------------------------------------

ES = GateSettings("es")


def test_each_gate_alone() -> None:
    source = [EN_SENTENCE]
    assert translation_gate([ES_SENTENCE], source, ES) is None
    assert translation_gate(["  "], source, ES) == "empty"
    assert translation_gate([ES_SENTENCE.rstrip(".") + " con"], source, ES) == "truncated"
    assert translation_gate(["Le patient a une hypertension artérielle et il est traité avec un diurétique thiazidique."], source, ES) == "target_language"
    assert translation_gate(["El paciente es hipertenso."], source, ES) == "length_ratio"  # 26 / 86 characters
    assert translation_gate([ES_SENTENCE + " " + ES_SENTENCE + " " + ES_SENTENCE], source, ES) == "length_ratio"
    half = "El paciente tiene la presión arterial muy alta desde hace años y por eso is treated with a thiazide diuretic every day."
    assert translation_gate([half], source, ES) == "untranslated_residue"  # 6 of the source's 13 word trigrams copied
    assert translation_gate([half], source, GateSettings("es", max_residue_share=0.5)) is None
    assert GateSettings("pt").record()["length_ratio"] == [0.5, 2.0]
    # Options that become one (source options distinct) are rejected; options identical in the source are not.
    assert translation_gate([ES_QUESTION, "Sí", "Sí"], [EN_QUESTION, "Yes", "Yes, always"], ES, options_from=1) == "identical_options"
    assert translation_gate([ES_QUESTION, "Sí", "Sí"], [EN_QUESTION, "Yes", "yes"], ES, options_from=1) is None


def test_residue_counts_word_trigrams_of_letters() -> None:
    assert residue_share(["a b c d"], ["a b c d"]) == 1.0
    assert residue_share(["x y z"], ["a b c d"]) == 0.0
    assert residue_share(["a b c zz"], ["a b c d"]) == 0.5  # (a b c) found, (b c d) not
    assert residue_share(["5 mg"], ["5 mg"]) == 0.0  # fewer than 3 words: nothing to copy
    assert residue_share(["x", "a b c"], ["q r s", "a b c"]) == 0.5  # pooled over fields, each against its own


def test_mcq_replies_are_parsed_strictly() -> None:
    assert parse_mcq(ES_MCQ) == (ES_QUESTION, ES_OPTIONS)
    assert parse_mcq(f"Aquí está:\n```json\n{ES_MCQ}\n```") == (ES_QUESTION, ES_OPTIONS)
    assert parse_mcq('{"question": "¿Qué?", "options": "A, B"}') is None
    assert parse_mcq('{"question": "¿Qué?", "options": ["A"], "answer": 0}') is None
    assert parse_mcq('{"question": "¿Qué?", "options": ["A", "B"]') is None  # cut short


def test_back_translation_score_is_sacrebleu_chrf() -> None:
    assert gates.chrf(EN_SENTENCE, EN_SENTENCE) == pytest.approx(100.0)
    assert gates.chrf(ES_SENTENCE, EN_SENTENCE) == pytest.approx(sacrebleu.sentence_chrf(ES_SENTENCE, [EN_SENTENCE]).score)


def test_mimic_keeps_its_prompt_and_rules() -> None:
    assert mimic_cxr.TRANSLATE_PROMPT == REPORT_PROMPT_PT == prompt_for("pt", "report")
    assert mimic_cxr.rejection_reason is gates.rejection_reason and mimic_cxr.is_portuguese is gates.is_portuguese


@pytest.mark.slow
def test_the_predict_engine_gives_the_served_outputs(endpoints: dict[str, str], tmp_path: Path, repo_root: Path, llamafactory_train) -> None:
    """--requests-only -> `llamafactory-cli train` predict on NAME_requests -> --predictions: the served run's files, row ids and gate counts."""
    import shutil

    source = tmp_path / "mcq_en.jsonl"
    write_jsonl(source, MCQ_SOURCE)
    served_root, predict_root = tmp_path / "served", tmp_path / "predict"
    for root in (served_root, predict_root):
        root.mkdir()
        (root / "dataset_info.json").write_text("{}\n")
    code, output = translate(served_root, "--kind", "mcq", "--source", str(source), "--name", "mcq_es", "--endpoint", endpoints["mcq"])
    assert code == 0, output

    code, output = translate(predict_root, "--kind", "mcq", "--source", str(source), "--name", "mcq_es", "--requests-only")
    assert code == 0 and "registered 'mcq_es_requests'" in output, output
    shutil.copytree(repo_root / "recipes", predict_root / "recipes")
    model = build_constant_answer_model(tmp_path / "mcq_model", ES_MCQ)
    saves = llamafactory_train(predict_root, "recipes/mimic_cxr_translate_medgemma27b.yaml", model_name_or_path=model, eval_dataset="mcq_es_requests",
                               template="empty", quantization_bit="null", do_sample="false", bf16="false", max_new_tokens=128,
                               preprocessing_num_workers=1, per_device_eval_batch_size=2, output_dir=predict_root / "saves" / "translate")  # fmt: skip
    predictions = saves / "generated_predictions.jsonl"
    code, output = translate(predict_root, "--kind", "mcq", "--source", str(source), "--name", "mcq_es", "--predictions", str(predictions))
    assert code == 0 and "6 replies read from a llamafactory-cli predict run" in output, output

    served_dir, predict_dir = served_root / "data/mcq_es", predict_root / "data/mcq_es"
    for name in ("items.jsonl", "sft.json", "translate_requests.jsonl", "translate_ids.json", "provenance.jsonl"):
        assert (predict_dir / name).read_bytes() == (served_dir / name).read_bytes(), name
    served_manifest, predict_manifest = (json.loads((folder / "manifest.json").read_text()) for folder in (served_dir, predict_dir))
    assert predict_manifest["gates"] == served_manifest["gates"] and predict_manifest["kept"] == 3
    assert predict_manifest["client"]["engine"] == "llamafactory-cli predict" and predict_manifest["client"]["sent"] == 0

    # Predictions of another set (one row short) and a changed source are refused, naming the files; nothing is replaced.
    before = (predict_dir / "manifest.json").read_bytes()
    short = tmp_path / "short.jsonl"
    short.write_text("".join(predictions.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8")
    code, output = translate(predict_root, "--kind", "mcq", "--source", str(source), "--name", "mcq_es", "--predictions", str(short), "--replace")
    assert code == 1 and "has 5 rows but" in output and "translate_ids.json lists 6 requests" in output
    write_jsonl(source, MCQ_SOURCE[1:])
    code, output = translate(predict_root, "--kind", "mcq", "--source", str(source), "--name", "mcq_es", "--predictions", str(predictions), "--replace")
    assert code == 1 and "the source or the options changed since --requests-only" in output
    assert (predict_dir / "manifest.json").read_bytes() == before and EN_QUESTION not in output
