"""HEAD-QA plugin and the shared MCQ item format: synthetic files in the official layout always, the
real release (../shared/data/head_qa) when present."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from medfactory.base.errors import CorpusError
from medfactory.corpus.mcq import McqItem, read_items, write_items
from medfactory.plugins import head_qa
from medfactory.plugins.head_qa import (
    CATEGORY_CODES,
    EXAM_NAME,
    PLUGIN,
    QuestionError,
    build_item,
    prepare_head_qa,
    rejected_index,
)

# --- Synthetic files in the official layout -----------------------------------------------------------


def question(qid, texts, ra, image="", qtext=None) -> dict:
    return {
        "qid": str(qid),
        "qtext": qtext if qtext is not None else f"Pregunta {qid}:",
        "ra": str(ra),
        "answers": [{"aid": aid, "atext": text} for aid, text in enumerate(texts, start=1)],
        "image": image,
    }


def synthetic_splits() -> dict[str, dict]:
    """train: a 5-option exam (2013) with an image question and a repeated wrong option;
    dev: a 4-option exam whose entry lacks category and year; test: a 4-option exam."""
    five = ["Uno.", "Dos.", "Tres.", "Cuatro.", "Cinco."]
    train = {
        "Cuaderno_2013_1_B": {
            "name": "Cuaderno_2013_1_B",
            "category": "biology",
            "year": "2013",
            "data": [
                question(1, five, 3, qtext="Los potenciales postsinápticos excitadores:"),
                question(2, five, 5, image="./data/MIR/Cuaderno_2013_1_M.images/MIR-2013-img1.png"),
                question(4, ["Igual.", "Otra.", "Igual.", "Más.", "Menos."], 2),  # qid 3 annulled
                question(5, ["Sp3.", "sp .", "Sp2.", "SP .", "s."], 2),  # option D repeats the right text
            ],
        }
    }
    dev = {
        "Cuaderno_2015_1_M": {
            "name": "Cuaderno_2015_1_M",
            "data": [question(1, ["a.", "b.", "c.", "d."], 4), question(2, ["a.", "b.", "c.", "d."], 1, image="x.png")],
        }
    }
    test = {
        "Cuaderno_2016_1_Q": {
            "name": "Cuaderno_2016_1_Q",
            "category": "chemistry",
            "year": 2016,
            "data": [question(7, ["w.", "x.", "y.", "z."], 2)],
        }
    }
    return {"train": train, "dev": dev, "test": test}


def write_head_qa(root: Path, splits: dict[str, dict] | None = None, language: str = "es") -> Path:
    folder = root / language
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, exams in (splits or synthetic_splits()).items():
        payload = {"version": "1.0", "language": language, "exams": exams}
        (folder / head_qa.split_file_name(prefix, language)).write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    return root


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture()
def prepared(tmp_path: Path) -> tuple[Path, dict]:
    source = write_head_qa(tmp_path / "head_qa")
    output_root = tmp_path / "repo"
    output_root.mkdir()
    (output_root / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "data/other/x.json"}}))
    return output_root, prepare_head_qa(source, "es", output_root)


def test_manifest_follows_the_one_schema_and_the_card_counts_every_dataset(prepared) -> None:
    from medfactory.base.manifest import REQUIRED_KEYS
    from medfactory.run.card import dataset_manifests

    output_root, manifest = prepared
    assert set(REQUIRED_KEYS) <= set(manifest)
    folder = output_root / "data/head_qa_es"
    sft = json.loads((folder / "sft_train.json").read_text(encoding="utf-8"))
    dpo = json.loads((folder / "dpo_train.json").read_text(encoding="utf-8"))
    assert manifest["datasets"]["head_qa_es_sft"] == {"file": "data/head_qa_es/sft_train.json", "records": len(sft)}
    assert manifest["datasets"]["head_qa_es_dpo"]["records"] == len(dpo)
    # what `medfactory card` reports for a Spanish SFT recipe's dataset (blank before the one schema)
    datasets = dataset_manifests({"dataset": "head_qa_es_sft", "eval_dataset": "head_qa_es_dpo", "dataset_dir": str(output_root)})
    assert datasets["head_qa_es_sft"]["counts"] == {"records": len(sft)}
    assert datasets["head_qa_es_dpo"]["counts"] == {"records": len(dpo)}


def test_evaluation_sets_hold_every_question_of_each_split(prepared) -> None:
    output_root, manifest = prepared
    folder = output_root / "data/head_qa_es"
    train, validation, test = (read_items(folder / f"{split}.jsonl") for split in ("train", "validation", "test"))
    assert [item.id for item in train] == ["Cuaderno_2013_1_B-1", "Cuaderno_2013_1_B-2", "Cuaderno_2013_1_B-4", "Cuaderno_2013_1_B-5"]
    assert [len(validation), len(test)] == [2, 1]
    first = train[0]
    assert first.question == "Los potenciales postsinápticos excitadores:"
    assert first.options == ["Uno.", "Dos.", "Tres.", "Cuatro.", "Cinco."] and first.letters == ["A", "B", "C", "D", "E"]
    assert (first.answer, first.answer_letter, first.category, first.year, first.exam, first.language) == (2, "C", "biology", 2013, "Cuaderno_2013_1_B", "es")
    assert test[0].letters == ["A", "B", "C", "D"] and test[0].answer == 1 and test[0].year == 2016
    assert [item.has_image for item in train] == [False, True, False, False]
    assert manifest["splits"]["train"]["options"] == {"5": 4} and manifest["splits"]["test"]["options"] == {"4": 1}
    assert manifest["splits"]["train"]["image_questions"] == 1 and manifest["splits"]["validation"]["image_questions"] == 1
    assert manifest["splits"]["train"]["answer_positions"] == {"B": 2, "C": 1, "E": 1}
    assert manifest["items"] == 7 and manifest["dropped"] == {} and manifest["dropped_questions"] == []
    assert set(manifest["outputs"]) == {"train.jsonl", "validation.jsonl", "test.jsonl", "sft_train.json", "dpo_train.json"}
    assert manifest["questions_with_repeated_option_text"] == ["Cuaderno_2013_1_B-4", "Cuaderno_2013_1_B-5"]


def test_category_and_year_come_from_the_exam_name_when_the_entry_lacks_them(prepared) -> None:
    output_root, _ = prepared
    item = read_items(output_root / "data/head_qa_es/validation.jsonl")[0]
    assert (item.category, item.year, item.exam) == ("medicine", 2015, "Cuaderno_2015_1_M")
    assert item.answer == 3 and item.has_image is False


def test_sft_set_is_its_part_of_train_without_image_questions(prepared) -> None:
    output_root, manifest = prepared
    rows = read_json(output_root / "data/head_qa_es/sft_train.json")
    # seed 42: B-1 falls in the SFT part, B-4 and B-5 in the DPO part, B-2 (image) in neither
    assert [row["id"] for row in rows] == ["Cuaderno_2013_1_B-1"]
    first = rows[0]
    assert first["instruction"] == (
        f"{head_qa.PROMPTS['es'].instruction}\n\nLos potenciales postsinápticos excitadores:\n\n"
        "A) Uno.\nB) Dos.\nC) Tres.\nD) Cuatro.\nE) Cinco."
    )
    assert first["input"] == "" and first["output"] == "Respuesta: C) Tres."
    assert manifest["sft"]["skipped"] == {}
    # the manifest records the prompt, so that `eval mcqa --chat-template` rebuilds it exactly
    prompt = manifest["sft"]["prompt"]
    item = read_items(output_root / "data/head_qa_es/train.jsonl")[0]
    options = "\n".join(f"{letter}) {text}" for letter, text in zip(item.letters, item.options))
    assert prompt["user"].format(instruction=prompt["instruction"], question=item.question, options=options) == first["instruction"]
    assert prompt["response"].format(answer_prefix=prompt["answer_prefix"], letter="C", option="Tres.") == first["output"]


def test_an_ambiguous_question_in_the_sft_part_is_skipped(tmp_path: Path) -> None:
    source = write_head_qa(tmp_path / "head_qa")
    manifest = prepare_head_qa(source, "es", tmp_path / "out", seed=44)  # seed 44: B-1 and B-5 SFT, B-4 DPO
    rows = read_json(tmp_path / "out/data/head_qa_es/sft_train.json")
    assert [row["id"] for row in rows] == ["Cuaderno_2013_1_B-1"]
    # Question 5's right answer ("sp .") is also option D ("SP ."): ambiguous, not taught.
    assert manifest["sft"]["skipped"] == {"right_answer_text_repeated": 1}
    assert manifest["preference_split"]["sft_questions"] == 2 and manifest["preference_split"]["dpo_questions"] == 1


def test_dpo_pairs_reject_a_wrong_option_drawn_with_the_seed(prepared, tmp_path: Path) -> None:
    output_root, manifest = prepared
    rows = read_json(output_root / "data/head_qa_es/dpo_train.json")
    items = {item.id: item for item in read_items(output_root / "data/head_qa_es/train.jsonl")}
    assert [row["id"] for row in rows] == ["Cuaderno_2013_1_B-4", "Cuaderno_2013_1_B-5"]
    for row in rows:
        item = items[row["id"]]
        assert row["chosen"] == f"Respuesta: {item.answer_letter}) {item.answer_text}"
        letter, text = row["rejected"].removeprefix("Respuesta: ").split(") ", 1)
        wrong = item.letters.index(letter)
        assert wrong != item.answer and item.options[wrong] == text
        assert " ".join(text.split()).casefold() != " ".join(item.answer_text.split()).casefold()
    # Question 5: options B ("sp .") and D ("SP .") say the same; D is never the rejected answer.
    for seed in range(50):
        assert rejected_index(items["Cuaderno_2013_1_B-5"], seed) in (0, 2, 4)
    assert manifest["dpo"]["pairs"] == 2 and manifest["dpo"]["skipped"] == {}
    # The same seed gives the same file; the draw depends only on the seed and the question id.
    again = prepare_head_qa(tmp_path / "head_qa", "es", tmp_path / "again")
    assert again["outputs"]["dpo_train.json"]["sha256"] == manifest["outputs"]["dpo_train.json"]["sha256"]
    drawn = {seed: rejected_index(items["Cuaderno_2013_1_B-1"], seed) for seed in range(30)}
    assert set(drawn.values()) == {0, 1, 3, 4}


def many_questions_train(n: int = 120) -> dict[str, dict]:
    """The synthetic release with a train exam of ``n`` plain 5-option questions (plus an image question)."""
    splits = synthetic_splits()
    data = [question(q, [f"Opción {a} de {q}." for a in "ABCDE"], 1 + q % 5) for q in range(1, n + 1)]
    data.append(question(n + 1, ["a.", "b.", "c.", "d.", "e."], 1, image="x.png"))
    splits["train"]["Cuaderno_2014_1_M"] = {"name": "Cuaderno_2014_1_M", "category": "medicine", "year": "2014", "data": data}
    return splits


def test_sft_and_dpo_questions_are_disjoint_and_cover_the_usable_train_questions(tmp_path: Path) -> None:
    source = write_head_qa(tmp_path / "head_qa", many_questions_train())
    for seed, fraction in ((42, 0.3), (7, 0.5), (42, 0.1)):
        out = tmp_path / f"out-{seed}-{fraction}"
        manifest = prepare_head_qa(source, "es", out, seed=seed, dpo_fraction=fraction)
        train = read_items(out / "data/head_qa_es/train.jsonl")
        text_only = {item.id for item in train if not item.has_image}
        sft = {row["id"] for row in read_json(out / "data/head_qa_es/sft_train.json")}
        dpo = {row["id"] for row in read_json(out / "data/head_qa_es/dpo_train.json")}
        assert not sft & dpo, (seed, fraction)
        skipped = sum(manifest["sft"]["skipped"].values()) + sum(manifest["dpo"]["skipped"].values())
        assert sft | dpo <= text_only and len(sft | dpo) + skipped == len(text_only)
        split = manifest["preference_split"]
        assert split["sft_questions"] + split["dpo_questions"] == len(text_only) == 123
        assert split["image_questions_excluded"] == 2 and split["train_questions"] == len(train)
        assert (split["seed"], split["dpo_fraction"]) == (seed, fraction) and "sha256" in split["rule"]
        assert manifest["options"]["dpo_fraction"] == fraction
        # roughly the fraction asked for (123 questions: binomial spread)
        assert abs(split["dpo_questions"] / 123 - fraction) < 0.12
        # deterministic: the same inputs give byte-identical files in a fresh run
        again = prepare_head_qa(source, "es", tmp_path / f"again-{seed}-{fraction}", seed=seed, dpo_fraction=fraction)
        for name in ("sft_train.json", "dpo_train.json"):
            assert again["outputs"][name]["sha256"] == manifest["outputs"][name]["sha256"]
    # a question keeps its part when others are dropped: the part depends on the seed and its id only
    fewer = many_questions_train(60)
    smaller = prepare_head_qa(write_head_qa(tmp_path / "fewer", fewer), "es", tmp_path / "fewer-out")
    full = {row["id"] for row in read_json(tmp_path / "out-42-0.3/data/head_qa_es/dpo_train.json")}
    part = {row["id"] for row in read_json(tmp_path / "fewer-out/data/head_qa_es/dpo_train.json")}
    assert part == {item_id for item_id in full if not item_id.startswith("Cuaderno_2014_1_M-") or int(item_id.rsplit("-", 1)[1]) <= 60}
    assert smaller["preference_split"]["dpo_questions"] == len(part)


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.2, True])
def test_a_bad_dpo_fraction_is_refused(tmp_path: Path, fraction) -> None:
    with pytest.raises(CorpusError, match="--dpo-fraction"):
        prepare_head_qa(write_head_qa(tmp_path / "hq"), "es", tmp_path / "out", dpo_fraction=fraction)


def test_an_empty_part_is_refused_with_the_fix(tmp_path: Path) -> None:
    splits = synthetic_splits()
    splits["train"]["Cuaderno_2013_1_B"]["data"] = splits["train"]["Cuaderno_2013_1_B"]["data"][:1]  # one text-only question
    with pytest.raises(CorpusError, match=r"no train question is usable for (SFT|DPO).*--dpo-fraction"):
        prepare_head_qa(write_head_qa(tmp_path / "hq", splits), "es", tmp_path / "out")


def test_registry_entries_are_added_and_others_kept(prepared) -> None:
    output_root, manifest = prepared
    registry = read_json(output_root / "dataset_info.json")
    assert registry["other"] == {"file_name": "data/other/x.json"}
    assert registry["head_qa_es_sft"] == {
        "medfactory_plugin": "head_qa",
        "file_name": "data/head_qa_es/sft_train.json",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
    }
    assert registry["head_qa_es_dpo"] == {
        "medfactory_plugin": "head_qa",
        "file_name": "data/head_qa_es/dpo_train.json",
        "ranking": True,
        "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"},
    }
    assert manifest["registered"] == ["head_qa_es_dpo", "head_qa_es_sft"]


def load_with_llamafactory(output_root: Path, name: str, stage: str, cache: Path):
    """The dataset as LLaMA-Factory's own loader reads and aligns it for a training stage."""
    loader = pytest.importorskip("llamafactory.data.loader")
    from llamafactory.hparams import DataArguments

    model_args = SimpleNamespace(cache_dir=str(cache), hf_hub_token=None)
    training_args = SimpleNamespace(local_process_index=0, dataloader_num_workers=0, seed=42)
    data_args = DataArguments(dataset_dir=str(output_root))  # recipes: dataset_dir: .
    return loader._get_merged_dataset([name], model_args, data_args, training_args, stage=stage, return_dict=True)[name]


def test_llamafactory_loads_the_sft_and_dpo_sets(prepared, tmp_path: Path) -> None:
    output_root, _ = prepared
    sft_rows = read_json(output_root / "data/head_qa_es/sft_train.json")
    sft = load_with_llamafactory(output_root, "head_qa_es_sft", "sft", tmp_path / "cache")
    assert len(sft) == len(sft_rows)
    assert sft[0]["_prompt"] == [{"role": "user", "content": sft_rows[0]["instruction"]}]
    assert sft[0]["_response"] == [{"role": "assistant", "content": "Respuesta: C) Tres."}]
    dpo_rows = read_json(output_root / "data/head_qa_es/dpo_train.json")
    dpo = load_with_llamafactory(output_root, "head_qa_es_dpo", "rm", tmp_path / "cache")  # stage dpo loads as "rm"
    assert len(dpo) == len(dpo_rows)
    assert dpo[0]["_prompt"] == [{"role": "user", "content": dpo_rows[0]["instruction"]}]
    assert [turn["content"] for turn in dpo[0]["_response"]] == [dpo_rows[0]["chosen"], dpo_rows[0]["rejected"]]
    with pytest.raises(ValueError, match="not applicable in the current training stage"):
        load_with_llamafactory(output_root, "head_qa_es_dpo", "sft", tmp_path / "cache")


def test_a_malformed_question_names_the_exam_and_qid(tmp_path: Path) -> None:
    splits = synthetic_splits()
    splits["train"]["Cuaderno_2013_1_B"]["data"][2]["ra"] = "7"
    source = write_head_qa(tmp_path / "head_qa", splits)
    with pytest.raises(CorpusError, match=r"train_HEAD.json: exam Cuaderno_2013_1_B, qid 4: ra '7' is none of the aids 1, 2, 3, 4, 5"):
        prepare_head_qa(source, "es", tmp_path / "out")
    assert not (tmp_path / "out/data").exists() and not (tmp_path / "out/dataset_info.json").exists()
    manifest = prepare_head_qa(source, "es", tmp_path / "out", on_error="skip")
    assert manifest["dropped_questions"] == [{"split": "train", "exam": "Cuaderno_2013_1_B", "qid": "4", "reason": "ra '7' is none of the aids 1, 2, 3, 4, 5"}]
    assert manifest["dropped"] == {"train": 1}
    assert manifest["splits"]["train"]["items"] == 3


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda q: q.update(answers=q["answers"][:3]), "3 answers"),
        (lambda q: q.update(qtext="  "), "empty or missing qtext"),
        (lambda q: q.pop("ra"), "no ra"),
        (lambda q: q["answers"][1].update(aid=1), "aid 1 appears more than once"),
        (lambda q: q["answers"][2].update(atext=""), "answer aid 3 has an empty or missing atext"),
        (lambda q: q.pop("qid"), "no qid"),
    ],
)
def test_malformed_questions_are_refused_with_the_reason(change, reason: str) -> None:
    entry = question(9, ["a.", "b.", "c.", "d."], 1)
    change(entry)
    with pytest.raises(QuestionError, match=reason):
        build_item(entry, "Cuaderno_2016_1_M", "medicine", 2016, "es")


def test_answers_are_put_in_aid_order_and_numeric_ids_accepted() -> None:
    answers = [{"aid": 2, "atext": "b."}, {"aid": 1, "atext": "a."}, {"aid": 4, "atext": "d."}, {"aid": 3, "atext": "c."}]
    entry = {"qid": 3, "qtext": "¿?", "ra": 2, "image": None, "answers": answers}
    item = build_item(entry, "Cuaderno_2016_1_M", "medicine", 2016, "es")
    assert (item.id, item.options, item.answer, item.has_image) == ("Cuaderno_2016_1_M-3", ["a.", "b.", "c.", "d."], 1, False)


def test_source_errors_name_the_folder_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not found. Pass --source the HEAD-QA folder"):
        prepare_head_qa(tmp_path / "nowhere", "es", tmp_path)
    (tmp_path / "empty/es").mkdir(parents=True)
    with pytest.raises(CorpusError, match=r"empty/es: missing train_HEAD.json, dev_HEAD.json, test_HEAD.json"):
        prepare_head_qa(tmp_path / "empty", "es", tmp_path)
    with pytest.raises(CorpusError, match="HEAD-QA ships es, en"):
        prepare_head_qa(tmp_path / "empty", "pt", tmp_path)
    source = write_head_qa(tmp_path / "hq")
    (source / "es/dev_HEAD.json").write_text('{"exams": {', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"dev_HEAD.json: line 1, column \d+: invalid JSON"):
        prepare_head_qa(source, "es", tmp_path)


def test_the_language_folder_itself_and_english_file_names(tmp_path: Path) -> None:
    source = write_head_qa(tmp_path / "hq", language="en")
    manifest = prepare_head_qa(source / "en", "en", tmp_path / "out")
    assert list(manifest["source_files"]) == ["train_HEAD_EN.json", "dev_HEAD_EN.json", "test_HEAD_EN.json"]
    rows = read_json(tmp_path / "out/data/head_qa_en/sft_train.json")
    assert rows[0]["instruction"].startswith(head_qa.PROMPTS["en"].instruction) and rows[0]["output"] == "Answer: C) Tres."
    assert read_items(tmp_path / "out/data/head_qa_en/test.jsonl")[0].language == "en"
    assert {"head_qa_en_sft", "head_qa_en_dpo"} <= set(read_json(tmp_path / "out/dataset_info.json"))


def test_a_failed_run_keeps_the_previous_dataset(prepared, tmp_path: Path) -> None:
    output_root, _ = prepared
    before = (output_root / "data/head_qa_es/train.jsonl").read_bytes()
    splits = synthetic_splits()
    splits["test"]["Cuaderno_2016_1_Q"]["data"][0]["answers"] = []
    with pytest.raises(CorpusError, match="exam Cuaderno_2016_1_Q, qid 7: 0 answers"):
        prepare_head_qa(write_head_qa(tmp_path / "broken", splits), "es", output_root)
    assert (output_root / "data/head_qa_es/train.jsonl").read_bytes() == before


def command_app(command) -> typer.Typer:
    app = typer.Typer()
    app.command()(command)
    return app


def test_command_prints_counts_and_turns_errors_into_exit_1(tmp_path: Path) -> None:
    source = write_head_qa(tmp_path / "hq")
    result = CliRunner().invoke(command_app(PLUGIN.command), ["--source", str(source), "--output-root", str(tmp_path), "--language", "es"])
    assert result.exit_code == 0, result.output
    assert "train: 4 questions (5 options: 4; with an image: 1)" in result.stdout
    assert "sft: 1 instructions" in result.stdout and "dpo: 2 pairs, seed 42" in result.stdout
    assert "train questions split for training: 1 SFT, 2 DPO" in result.stdout
    assert "Pregunta" not in result.stdout  # counts only, never question text
    result = CliRunner().invoke(command_app(PLUGIN.command), ["--source", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "not found" in result.stderr and "Traceback" not in result.output


def test_plugin_is_named_for_the_cli() -> None:
    assert PLUGIN.name == "head_qa" and PLUGIN.command is head_qa.prepare_command


# --- The shared MCQ item format -------------------------------------------------------------------------


def mcq_item(**changes) -> McqItem:
    values = {
        "id": "x-1", "question": "¿?", "options": ["a", "b", "c", "d"], "answer": 0, "letters": ["A", "B", "C", "D"],
        "category": None, "year": None, "exam": None, "has_image": False, "language": "pt",
    }  # fmt: skip
    return McqItem(**{**values, **changes})


def test_mcq_items_round_trip(tmp_path: Path) -> None:
    items = [mcq_item(), mcq_item(id="x-2", options=list("abcde"), letters=list("ABCDE"), answer=4, year=2020, category="c", exam="e")]
    assert write_items(tmp_path / "set.jsonl", items) == 2
    assert read_items(tmp_path / "set.jsonl") == items
    assert items[1].answer_letter == "E" and items[1].answer_text == "e"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"line 2: invalid JSON"),
        ('["a"]', r"line 2: not an MCQ item: expected a JSON object"),
        (json.dumps({**mcq_item().to_dict(), "answer": 4}), r"line 2: not an MCQ item: answer must be an option index 0..3"),
        (json.dumps({**mcq_item().to_dict(), "letters": ["A", "B", "C", "E"]}), r"line 2: .*letters must be"),
        (json.dumps({**mcq_item().to_dict(), "language": "fr"}), r"line 2: .*language must be one of es, en, pt"),
        (json.dumps({k: v for k, v in mcq_item().to_dict().items() if k != "has_image"} | {"image": True}), r"line 2: .*missing has_image; unknown image"),
        (json.dumps(mcq_item().to_dict()), r"line 2: id 'x-1' already used on line 1"),
    ],
)
def test_a_bad_mcq_line_names_the_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps(mcq_item().to_dict()) + "\n" + line + "\n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=rf"set.jsonl, {message}"):
        read_items(path)


def test_writing_an_invalid_item_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="item 'x-1': answer must be"):
        write_items(tmp_path / "set.jsonl", [mcq_item(answer=9)])
    assert not (tmp_path / "set.jsonl").exists()


# --- The real release ----------------------------------------------------------------------------------


# The real release at seed 42, DPO fraction 0.3: 2,589 text-only train questions.
REAL_SFT_DPO_COUNTS = (1793, 796)


@pytest.fixture(scope="module")
def real(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    output_root = tmp_path_factory.mktemp("head_qa_real")
    return output_root, prepare_head_qa(shared_data / "head_qa", "es", output_root)


def test_real_split_counts_are_the_readmes(real) -> None:
    _, manifest = real
    splits = manifest["splits"]
    assert [splits[name]["items"] for name in ("train", "validation", "test")] == [2657, 1366, 2742]
    assert manifest["items"] == 6765 and manifest["dropped"] == {}
    assert splits["train"]["options"] == {"5": 2657}  # 2013-2014
    assert splits["validation"]["options"] == {"4": 1366} and splits["test"]["options"] == {"4": 2742}
    assert [splits[name]["image_questions"] for name in ("train", "validation", "test")] == [68, 30, 67]
    assert splits["train"]["years"] == {"2013": 1318, "2014": 1339} and splits["validation"]["years"] == {"2015": 1366}
    assert [splits[name]["exams"] for name in ("train", "validation", "test")] == [12, 6, 12]


def test_real_items_are_valid_and_images_flagged(real, shared_data: Path) -> None:
    output_root, _ = real
    official = json.loads((shared_data / "head_qa/es/HEAD.json").read_text(encoding="utf-8"))["exams"]
    for split in ("train", "validation", "test"):
        for item in read_items(output_root / f"data/head_qa_es/{split}.jsonl"):
            exam = official[item.exam]
            entry = next(q for q in exam["data"] if f"{item.exam}-{q['qid']}" == item.id)
            assert 0 <= item.answer < len(item.options) and str(item.answer + 1) == entry["ra"]
            assert item.has_image == bool(entry["image"])
            # The name-derived fallback agrees with every real exam entry.
            match = EXAM_NAME.match(item.exam)
            assert (CATEGORY_CODES[match["code"]], int(match["year"])) == (item.category, item.year) == (exam["category"], int(exam["year"]))


def test_real_sft_and_dpo_sets_are_disjoint_and_leave_out_image_questions(real) -> None:
    output_root, manifest = real
    train = {item.id: item for item in read_items(output_root / "data/head_qa_es/train.jsonl")}
    text_only = {item_id for item_id, item in train.items() if not item.has_image}
    sft = read_json(output_root / "data/head_qa_es/sft_train.json")
    dpo = read_json(output_root / "data/head_qa_es/dpo_train.json")
    sft_ids, dpo_ids = {row["id"] for row in sft}, {row["id"] for row in dpo}
    assert not sft_ids & dpo_ids and sft_ids | dpo_ids == text_only  # no real question is skipped
    assert len(text_only) == 2657 - 68
    split = manifest["preference_split"]
    assert (split["sft_questions"], split["dpo_questions"]) == (len(sft), len(dpo)) == (manifest["sft"]["items"], manifest["dpo"]["pairs"])
    assert (len(sft), len(dpo)) == REAL_SFT_DPO_COUNTS
    for row in dpo:
        item = train[row["id"]]
        assert row["chosen"] == f"Respuesta: {item.answer_letter}) {item.answer_text}" != row["rejected"]
        assert not row["rejected"].startswith(f"Respuesta: {item.answer_letter})")
    assert set(manifest["dpo"]["rejected_positions"]) == {"A", "B", "C", "D", "E"}
