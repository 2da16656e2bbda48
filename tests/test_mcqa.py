"""Multiple-choice QA evaluation (``medfactory.eval.mcqa``): log-likelihoods, metrics, outputs, command.

Nothing is downloaded: tiny random Mistral / Llama models with a tokenizer trained on the
synthetic Spanish and Portuguese exam questions below stand in for the 7B models. The
evaluator's log-likelihoods are checked against a forward pass written out here, its accuracy
and macro-F1 against scikit-learn.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import string
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest
import torch
import typer
from sklearn.metrics import accuracy_score, f1_score
from typer.testing import CliRunner

from medfactory.base.jsonl import write_jsonl
from medfactory.corpus.mcq import McqItem
from medfactory.eval import mcqa
from medfactory.run.tiny_model import build_tiny_model


def _item(id, question, options, answer, category, year, exam, language="es", has_image=False):
    return {
        "id": id, "question": question, "options": options, "answer": answer,
        "letters": list(string.ascii_uppercase[: len(options)]), "category": category, "year": year, "exam": exam,
        "has_image": has_image, "language": language,
    }  # fmt: skip


TEST_ITEMS = [
    _item("es-1", "¿Cuál es el fármaco de elección en la neumonía adquirida en la comunidad sin comorbilidades?",
          ["Amoxicilina", "Vancomicina", "Insulina glargina", "Metformina", "Omeprazol"], 0, "medicine", 2013, "Cuaderno_2013_1_M"),
    _item("es-2", "La hemoglobina glicosilada refleja la glucemia media de los últimos:",
          ["Dos días", "Dos o tres meses", "Cinco años", "Diez minutos"], 1, "medicine", 2016, "Cuaderno_2016_1_M"),
    _item("es-3", "¿Qué enzima cataliza la conversión de angiotensina I en angiotensina II?",
          ["Renina", "Quimotripsina", "Enzima convertidora de angiotensina", "Lipasa", "Amilasa"], 2, "biology", 2013, "Cuaderno_2013_1_B"),
    _item("es-4", "En la reanimación cardiopulmonar del adulto, la frecuencia de compresiones recomendada es:",
          ["40 por minuto", "60 por minuto", "80 por minuto", "100 a 120 por minuto"], 3, "nursery", 2016, "Cuaderno_2016_1_E"),
    _item("es-5", "El antídoto de la intoxicación por paracetamol es:",
          ["Flumazenilo", "Naloxona", "Atropina", "N-acetilcisteína", "Glucagón"], 3, "pharmacology", 2014, "Cuaderno_2014_1_F"),
    _item("es-6", "Observe la imagen. ¿Qué estructura señala la flecha?",
          ["Aorta", "Vena cava", "Tráquea", "Esófago"], 0, "medicine", 2016, "Cuaderno_2016_1_M", has_image=True),
    _item("es-7", "¿Cuál es el pH normal de la sangre arterial?",
          ["6,8", "7,0", "7,35 a 7,45", "7,8"], 2, "chemistry", 2016, "Cuaderno_2016_1_Q"),
    _item("es-8", "La escala de Glasgow valora:",
          ["Dolor", "Nivel de consciencia", "Riesgo de úlceras", "Estado nutricional", "Ansiedad"], 1, None, None, None),
    _item("pt-1", "Qual é o principal agente etiológico da pneumonia adquirida na comunidade em adultos?",
          ["Streptococcus pneumoniae", "Escherichia coli", "Candida albicans", "Giardia lamblia"], 0, "clínica médica", 2020, "Revalida_2020", "pt"),
    _item("pt-2", "A vacina BCG protege principalmente contra:",
          ["Formas graves de tuberculose", "Sarampo", "Hepatite B", "Coqueluche", "Tétano"], 0, "pediatria", 2021, "Revalida_2021", "pt"),
    _item("pt-3", "O sinal de Murphy positivo sugere:",
          ["Apendicite", "Colecistite aguda", "Pancreatite", "Diverticulite"], 1, "cirurgia", 2020, "Revalida_2020", "pt"),
    _item("pt-4", "Na insuficiência cardíaca, os inibidores da ECA reduzem:",
          ["A mortalidade", "A pressão intraocular", "A glicemia em jejum", "A função renal a zero", "O colesterol HDL"], 0,
          "clínica médica", 2021, "Revalida_2021", "pt"),
]  # fmt: skip

POOL_ITEMS = [
    _item("es-1", "¿Cuál es el fármaco de elección en la neumonía adquirida en la comunidad sin comorbilidades?",
          ["Amoxicilina", "Vancomicina", "Insulina", "Metformina", "Omeprazol"], 0, "medicine", 2013, "Cuaderno_2013_1_M"),
    _item("pool-dup", "¿Cuál es el pH normal de la sangre arterial?", ["6,8", "7,0", "7,35 a 7,45", "7,8"], 2, "chemistry", 2015,
          "Cuaderno_2015_1_Q"),
    _item("pool-img", "Observe la radiografía adjunta:", ["Neumotórax", "Derrame", "Normal", "Atelectasia"], 0, "medicine", 2015,
          "Cuaderno_2015_1_M", has_image=True),
    _item("pool-1", "La vitamina K es necesaria para la síntesis de:", ["Factores de coagulación II, VII, IX y X", "Insulina", "Hemoglobina", "Colágeno"],
          0, "biology", 2015, "Cuaderno_2015_1_B"),
    _item("pool-2", "El nervio que inerva el diafragma es:", ["Vago", "Frénico", "Facial", "Hipogloso"], 1, "medicine", 2015, "Cuaderno_2015_1_M"),
    _item("pool-3", "La unidad funcional del riñón es:", ["Alvéolo", "Nefrona", "Hepatocito", "Sarcómero"], 1, "biology", 2015, "Cuaderno_2015_1_B"),
    _item("pool-4", "Una taquicardia se define por una frecuencia cardiaca mayor de:", ["40", "60", "100 latidos por minuto", "200"], 2, "nursery",
          2015, "Cuaderno_2015_1_E"),
    _item("pool-5", "O hormônio produzido pelas células beta do pâncreas é:", ["Glucagon", "Insulina", "Somatostatina", "Gastrina"], 1,
          "clínica médica", 2019, "Revalida_2019", "pt"),
    _item("pool-6", "A principal via de transmissão da hepatite A é:", ["Fecal-oral", "Sexual", "Vertical", "Transfusional"], 0, "preventiva", 2019,
          "Revalida_2019", "pt"),
]  # fmt: skip


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    write_jsonl(path, records)
    return path


def _corpus(with_letter_answers: bool) -> list[str]:
    """Prompts of the synthetic items; with ``Respuesta: C``-style answers the BPE learns ' A'..' E'
    as single tokens, without them ' C' etc. stay split (' ' + 'C'): both tokenizations get tested."""
    texts = []
    for record in TEST_ITEMS + POOL_ITEMS:
        item = mcqa.to_item(record)
        if with_letter_answers:
            texts.append(mcqa.letter_prompt(item) + f" {item.letters[item.answer]}")
        texts.append(mcqa.loglik_context(item) + f" {item.options[item.answer]}")
    return texts * 3


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mcq")
    return {"items": _write_jsonl(folder / "test.jsonl", TEST_ITEMS), "pool": _write_jsonl(folder / "validation.jsonl", POOL_ITEMS)}


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, Path]:
    return {
        "mistral": build_tiny_model("mistral", _corpus(with_letter_answers=True), vocab_size=600),
        "llama": build_tiny_model("llama", _corpus(with_letter_answers=False), vocab_size=600),
    }


@pytest.fixture(scope="module")
def loaded(tiny_models):
    return mcqa.load_model(str(tiny_models["mistral"]), dtype="fp32", device="cpu")


@pytest.fixture(scope="module")
def items(files) -> list[McqItem]:
    return mcqa.load_items(files["items"])


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    application = typer.Typer()

    @application.callback()
    def main() -> None:
        """Local test app: `mcqa` is mounted as a subcommand, as in `medfactory eval mcqa`."""

    application.command("mcqa")(mcqa.mcqa_command)
    return application


def _run(app, *args: str):
    result = CliRunner().invoke(app, ["mcqa", *args])
    return result


def _scores(scored: list[mcqa.ItemScores]) -> list[list[float]]:
    return [result.loglik for result in scored]


# --------------------------------------------------------------------------------------------
# Log-likelihoods against a direct transformers computation
# --------------------------------------------------------------------------------------------


def _direct_loglik(model, tokenizer, context: str, continuation: str) -> float:
    """Forward the concatenated prompt + continuation once, log-softmax, sum over the continuation tokens."""
    context_ids = tokenizer(context)["input_ids"]
    whole = tokenizer(context + continuation)["input_ids"]
    assert whole[: len(context_ids)] == context_ids
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return sum(float(logprobs[position - 1, whole[position]]) for position in range(len(context_ids), len(whole)))


@pytest.mark.parametrize("architecture", ["mistral", "llama"])
@pytest.mark.parametrize("protocol", ["letter", "loglik_norm"])
def test_logliks_match_direct_transformers_computation(tiny_models, items, files, architecture, protocol):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_models[architecture]
    network, tokenizer = mcqa.load_model(str(path), dtype="fp32", device="cpu")
    scorer = mcqa.LogLikelihoodScorer(network, tokenizer)
    chosen = [items[0], items[1], items[8], items[9]]  # es 5 and 4 options, pt 4 and 5 options
    sampler = mcqa.FewShotSampler(mcqa.load_items(files["pool"]), seed=3)
    direct_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    direct_tokenizer = AutoTokenizer.from_pretrained(path)
    for shots in (0, 2):
        scored = mcqa.score_items(scorer, chosen, protocol, shots=shots, sampler=sampler, batch_size=3)
        if protocol == "letter":  # mistral's vocabulary has every ' X' as one token, llama's splits some
            lengths = {len(tokens) for result in scored for tokens in result.tokens}
            assert lengths == ({1} if architecture == "mistral" else {1, 2})

        for result in scored:
            item = result.item
            examples = sampler.sample(item, shots)
            assert result.prompt == mcqa.build_prompt(item, protocol, examples)
            if protocol == "letter":
                texts = [" " + letter for letter in item.letters]
            else:
                texts = [" " + option for option in item.options]
            expected = [_direct_loglik(direct_model, direct_tokenizer, result.prompt, text) for text in texts]
            assert result.loglik == pytest.approx(expected, abs=1e-4)
            if protocol == "loglik_norm":
                assert result.normalised["bytes"] == pytest.approx(
                    [value / len(option.encode("utf-8")) for value, option in zip(expected, item.options)], abs=1e-4
                )


def test_letter_tokens_scored_are_recorded(loaded, items):
    """Single-token letters are read from one row per item; that equals one row per option."""
    network, tokenizer = loaded
    scorer = mcqa.LogLikelihoodScorer(network, tokenizer)
    shared = mcqa.score_items(scorer, items, "letter", batch_size=4)
    assert scorer.stats.sequences == len(items)
    separate = mcqa.score_items(scorer, items, "letter", batch_size=4, share_single_tokens=False)
    assert scorer.stats.sequences == len(items) + sum(item.n_options for item in items)
    for a, b in zip(shared, separate):
        assert a.loglik == pytest.approx(b.loglik, abs=1e-5)
    assert mcqa.letter_tokens(shared) == {letter: [["Ġ" + letter]] for letter in "ABCDE"}


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["letter", "loglik_norm"])
def test_batched_equals_unbatched(loaded, items, files, protocol):
    network, tokenizer = loaded
    scorer = mcqa.LogLikelihoodScorer(network, tokenizer)
    sampler = mcqa.FewShotSampler(mcqa.load_items(files["pool"]), seed=0)
    one = mcqa.score_items(scorer, items, protocol, shots=1, sampler=sampler, batch_size=1)
    passes_one = scorer.stats.forward_passes
    many = mcqa.score_items(scorer, items, protocol, shots=1, sampler=sampler, batch_size=5)
    assert scorer.stats.forward_passes - passes_one < passes_one  # several sequences per pass
    for a, b in zip(one, many):
        assert a.loglik == pytest.approx(b.loglik, abs=1e-5)
        assert a.predictions == b.predictions
    # the batches really were padded: prompts of different lengths
    assert len({len(result.prompt) for result in many}) > 1


# --------------------------------------------------------------------------------------------
# Few-shot examples
# --------------------------------------------------------------------------------------------


def test_kshot_prompt_has_k_examples_and_never_the_item(files, items):
    pool = mcqa.load_items(files["pool"])
    sampler = mcqa.FewShotSampler(pool, seed=7)
    assert all(not item.has_image for item in sampler.pool)
    for k in (1, 3, 6):
        for item in items:
            examples = sampler.sample(item, k)
            assert len(examples) == k
            assert len({example.id for example in examples}) == k
            assert all(example.id != item.id and example.question != item.question for example in examples)
            assert "pool-img" not in {example.id for example in examples}
            labels = mcqa.LABELS[item.language]
            prompt = mcqa.letter_prompt(item, examples)
            assert prompt.count(f"{labels.question}:") == k + 1
            assert prompt.count(f"{labels.answer}:") == k + 1
            assert prompt.count(item.question) == 1 and prompt.rstrip().endswith(f"{labels.answer}:")
            for example in examples:
                assert f"{labels.answer}: {example.letters[example.answer]}" in prompt
            context = mcqa.loglik_context(item, examples)
            assert context.count(f"{labels.question}:") == k + 1 and context.count(item.question) == 1
            # deterministic: same seed, same draw, whatever the order of the pool file
            assert mcqa.FewShotSampler(list(reversed(pool)), seed=7).sample(item, k) == examples
    # 8 text-only pool items; es-1 (same id) and es-7 (same question) each have a twin there
    es_7 = next(item for item in items if item.id == "es-7")
    for item in (items[0], es_7):
        assert len(sampler.sample(item, 7)) == 7
        with pytest.raises(mcqa.McqaError, match="only 7"):
            sampler.sample(item, 8)
    assert len(sampler.sample(items[1], 8)) == 8
    draws = {tuple(e.id for e in mcqa.FewShotSampler(pool, seed=seed).sample(items[1], 2)) for seed in range(10)}
    assert len(draws) > 1  # the seed matters


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def test_accuracy_and_macro_f1_match_sklearn():
    rng = random.Random(0)
    for trial in range(50):
        n = rng.randint(1, 40)
        gold = [rng.randrange(5) for _ in range(n)]
        predicted = [rng.choice([0, 1, 2]) if trial % 3 else rng.randrange(5) for _ in range(n)]
        assert mcqa.accuracy(gold, predicted) == pytest.approx(accuracy_score(gold, predicted))
        assert mcqa.macro_f1(gold, predicted) == pytest.approx(f1_score(gold, predicted, average="macro", zero_division=0))
    assert mcqa.macro_f1([0, 1, 2], [0, 1, 2]) == 1.0
    assert mcqa.confusion_matrix([0, 0, 1], [0, 1, 1], [0, 1]) == [[1, 1], [0, 1]]


def test_exam_points_hand_example():
    # 3 right, 2 wrong: 3*3 - 2 = 7 out of 15
    assert mcqa.exam_points([True, False, True, True, False]) == {
        "points": 7, "max_points": 15, "n": 5, "right": 3, "wrong": 2, "unanswered": 0,
    }  # fmt: skip
    records = [
        _item("a", "q a", ["x", "y", "z", "w"], 0, "medicine", 2016, "M16"),
        _item("b", "q b", ["x", "y", "z", "w"], 1, "medicine", 2016, "M16"),
        _item("c", "q c", ["x", "y", "z", "w", "v"], 2, "biology", 2013, "B13"),
        _item("d", "q d", ["x", "y", "z", "w", "v"], 4, "biology", 2013, "B13"),
        _item("e", "q e", ["x", "y", "z", "w", "v"], 4, "biology", 2013, "B13"),
    ]
    summary = mcqa.summarize([mcqa.to_item(r) for r in records], [0, 0, 2, 4, 1])  # right, wrong, right, right, wrong
    assert summary["exam_points"]["per_exam"]["M16"]["points"] == 3 - 1
    assert summary["exam_points"]["per_exam"]["B13"]["points"] == 3 + 3 - 1
    assert summary["exam_points"]["total"]["points"] == 7
    assert summary["per_category"]["biology"] == {"n": 3, "correct": 2, "accuracy": pytest.approx(2 / 3), "macro_f1": pytest.approx(
        f1_score([2, 4, 4], [2, 4, 1], average="macro", zero_division=0))}
    assert summary["confusion"]["labels"] == ["A", "B", "C", "E"]


# --------------------------------------------------------------------------------------------
# The command, end to end
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["letter", "loglik_norm"])
def test_command_outputs(app, tiny_models, files, tmp_path, protocol):
    out = tmp_path / protocol
    result = _run(app, "--items", str(files["items"]), "--model", str(tiny_models["mistral"]), "--out-dir", str(out),
                  "--protocol", protocol, "--shots", "2", "--fewshot-from", str(files["pool"]), "--seed", "1",
                  "--batch-size", "3", "--dtype", "fp32")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout
    per_item = pd.read_csv(out / "per_item.csv")
    metrics = json.loads((out / "metrics.json").read_text())
    report = (out / "report.md").read_text()

    # image question left out and counted
    assert "es-6" not in set(per_item["id"])
    assert metrics["n"] == len(per_item) == len(TEST_ITEMS) - 1
    assert metrics["n_image_items_excluded"] == 1 and metrics["settings"]["include_images"] is False
    # 4- and 5-option items mixed
    assert set(per_item["n_options"]) == {4, 5}
    score = "logprob" if protocol == "letter" else "loglik_norm"
    four = per_item[per_item["n_options"] == 4]
    assert four[f"{score}_E"].isna().all() and four[f"{score}_D"].notna().all()
    assert per_item[per_item["n_options"] == 5][f"{score}_E"].notna().all()
    # prediction = argmax of the per-option scores
    columns = [f"{score}_{letter}" for letter in "ABCDE"]
    assert [column for column in per_item.columns if re.fullmatch(rf"{score}_[A-Z]", column)] == columns  # no F.. for <= 5 options
    argmax = per_item[columns].fillna(-math.inf).to_numpy().argmax(axis=1)
    assert list(per_item["prediction"]) == ["ABCDE"[i] for i in argmax]
    assert list(per_item["correct"]) == list(per_item["prediction"] == per_item["answer"])

    # accuracy and macro-F1 against sklearn on the same predictions (positions as labels)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(per_item["answer"], per_item["prediction"]))
    assert metrics["macro_f1"] == pytest.approx(f1_score(per_item["answer"], per_item["prediction"], average="macro", zero_division=0))
    # breakdowns add up
    for breakdown in ("per_category", "per_year", "per_n_options", "per_language"):
        assert sum(entry["n"] for entry in metrics[breakdown].values()) == metrics["n"]
        assert sum(entry["correct"] for entry in metrics[breakdown].values()) == metrics["correct"]
    assert "(none)" in metrics["per_category"] and "(none)" in metrics["per_year"]
    for category, entry in metrics["per_category"].items():
        rows = per_item[per_item["category"].fillna("(none)") == category]
        assert entry["accuracy"] == pytest.approx(accuracy_score(rows["answer"], rows["prediction"]))
        assert entry["macro_f1"] == pytest.approx(f1_score(rows["answer"], rows["prediction"], average="macro", zero_division=0))
    for year, entry in metrics["per_year"].items():
        rows = per_item[per_item["year"].astype("Int64").astype(str).replace("<NA>", "(none)") == year]
        assert entry["n"] == len(rows) and entry["correct"] == int(rows["correct"].sum())
    total = metrics["exam_points"]["total"]
    assert total["points"] == 3 * int(per_item["correct"].sum()) - int((~per_item["correct"]).sum())
    assert sum(entry["points"] for entry in metrics["exam_points"]["per_exam"].values()) == total["points"]
    # settings recorded
    settings = metrics["settings"]
    assert (settings["protocol"], settings["shots"], settings["seed"], settings["model"]) == (protocol, 2, 1, str(tiny_models["mistral"]))
    assert settings["adapter"] is None and settings["dtype"] == "float32"
    assert {"torch", "transformers", "peft"} <= set(metrics["versions"])
    assert re.search(r"^\| (letter log-prob|loglik / bytes) \(primary\) +\|", report, re.MULTILINE)
    assert "## Per category" in report and "## Exam points" in report

    if protocol == "loglik_norm":
        variants = metrics["variants"]
        raw_argmax = per_item[[f"loglik_{letter}" for letter in "ABCDE"]].fillna(-math.inf).to_numpy().argmax(axis=1)
        assert list(per_item["prediction_unnorm"]) == ["ABCDE"[i] for i in raw_argmax]
        assert variants["unnormalised"]["accuracy"] == pytest.approx(accuracy_score(per_item["answer"], per_item["prediction_unnorm"]))
        assert variants["char_normalised"]["accuracy"] == pytest.approx(accuracy_score(per_item["answer"], per_item["prediction_char_norm"]))
        for letter in "ABCDE":
            present = per_item[f"n_bytes_{letter}"].notna()
            ratio = per_item.loc[present, f"loglik_{letter}"] / per_item.loc[present, f"n_bytes_{letter}"]
            assert ratio.to_numpy() == pytest.approx(per_item.loc[present, f"loglik_norm_{letter}"].to_numpy())
        # accents: bytes and characters differ for some options
        assert (per_item["n_bytes_A"] != per_item["n_chars_A"]).any() or (per_item["n_bytes_C"] != per_item["n_chars_C"]).any()
    else:
        assert set(metrics["scoring"]["letter_tokens"]) == set("ABCDE")


# --------------------------------------------------------------------------------------------
# More than 5 options (exam_mcq sets have up to 10; the format takes 2 to 26)
# --------------------------------------------------------------------------------------------

SEVEN = ["Amoxicilina", "Vancomicina", "Insulina glargina", "Metformina", "Omeprazol", "Furosemida", "Gentamicina"]  # the same words in es and pt
WIDE_ITEMS = [
    _item("w-1", "¿Cuál de estos fármacos es un diurético de asa?", SEVEN, 5, "pharmacology", 2020, "Examen_2020"),
    _item("w-2", "¿Cuál de estos fármacos es un aminoglucósido?", SEVEN, 6, "pharmacology", 2020, "Examen_2020"),
    _item("w-3", "Qual destes fármacos é um diurético de alça?", SEVEN, 5, "farmacologia", 2021, "Prova_2021", "pt"),
    _item("w-4", "Qual destes fármacos é um aminoglicosídeo?", SEVEN, 6, "farmacologia", 2021, "Prova_2021", "pt"),
    TEST_ITEMS[1],  # 4 options
    TEST_ITEMS[0],  # 5 options
]  # fmt: skip
WIDE = "ABCDEFG"


@pytest.fixture(scope="module")
def wide_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_jsonl(tmp_path_factory.mktemp("mcq_wide") / "test.jsonl", WIDE_ITEMS)


def test_every_option_count_of_the_format_is_accepted():
    options = [f"opción {index}" for index in range(26)]
    item = mcqa.to_item(_item("z", "¿Cuál?", options, 25, None, None, None))
    assert item.n_options == 26 and string.ascii_uppercase == mcqa.POSITIONS
    assert mcqa.position_columns([item]) == string.ascii_uppercase
    assert mcqa.position_columns([mcqa.to_item(TEST_ITEMS[1])]) == "ABCDE"  # at least A-E, as before
    assert mcqa.continuations(item, "letter")[-1] == " Z"


def test_letter_prompt_lists_every_letter_of_the_item(wide_file):
    item = mcqa.load_items(wide_file)[0]
    prompt = mcqa.letter_prompt(item)
    lines = [f"{letter}) {option}" for letter, option in zip(WIDE, SEVEN)]
    assert prompt.endswith("Pregunta: " + item.question + "\n" + "\n".join(lines) + "\nRespuesta:")
    assert "H)" not in prompt
    assert mcqa.continuations(item, "letter") == [f" {letter}" for letter in WIDE]


@pytest.mark.parametrize("architecture", ["mistral", "llama"])
def test_seven_option_logliks_match_direct_computation(tiny_models, wide_file, architecture):
    """F and G are scored like A-E; a letter the vocabulary splits (llama: ' G' = 'Ġ' + 'G') gets its own rows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_models[architecture]
    scorer = mcqa.LogLikelihoodScorer(*mcqa.load_model(str(path), dtype="fp32", device="cpu"))
    direct_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    direct_tokenizer = AutoTokenizer.from_pretrained(path)
    items = mcqa.load_items(wide_file)[:4]
    scored = mcqa.score_items(scorer, items, "letter", batch_size=4)
    expected_rows = 0
    for result in scored:
        lengths = [len(direct_tokenizer(result.prompt + " " + letter)["input_ids"]) - len(direct_tokenizer(result.prompt)["input_ids"]) for letter in WIDE]
        assert [len(tokens) for tokens in result.tokens] == lengths
        expected_rows += 1 if set(lengths) == {1} else len(WIDE)  # one shared row only when every letter is one token
        expected = [_direct_loglik(direct_model, direct_tokenizer, result.prompt, " " + letter) for letter in WIDE]
        assert result.loglik == pytest.approx(expected, abs=1e-4)
    assert scorer.stats.sequences == expected_rows
    assert expected_rows == (len(items) if architecture == "mistral" else len(items) * len(WIDE))
    assert set(mcqa.letter_tokens(scored)) == set(WIDE)


@pytest.mark.parametrize("protocol", ["letter", "loglik_norm"])
def test_seven_option_command_outputs(app, tiny_models, wide_file, tmp_path, protocol):
    out = tmp_path / protocol
    result = _run(app, "--items", str(wide_file), "--model", str(tiny_models["mistral"]), "--out-dir", str(out), "--protocol", protocol,
                  "--batch-size", "4", "--dtype", "fp32")  # fmt: skip
    assert result.exit_code == 0, result.output
    per_item = pd.read_csv(out / "per_item.csv", keep_default_na=False, na_values=[""])
    metrics = json.loads((out / "metrics.json").read_text())
    score = "logprob" if protocol == "letter" else "loglik_norm"
    columns = [f"{score}_{letter}" for letter in WIDE]
    assert [column for column in per_item.columns if re.fullmatch(rf"{score}_[A-Z]", column)] == columns  # A-G: the set's widest item
    by_options = per_item.set_index("id")
    assert by_options.loc[["w-1", "w-2", "w-3", "w-4"], columns].notna().all().all()
    assert by_options.loc["es-2", columns[4:]].isna().all() and by_options.loc["es-2", columns[:4]].notna().all()
    assert by_options.loc["es-1", columns[5:]].isna().all() and by_options.loc["es-1", columns[:5]].notna().all()
    assert list(by_options.loc[["w-1", "w-2", "w-3", "w-4"], "answer"]) == ["F", "G", "F", "G"]
    argmax = per_item[columns].fillna(-math.inf).to_numpy().argmax(axis=1)
    assert list(per_item["prediction"]) == [WIDE[i] for i in argmax]
    assert metrics["accuracy"] == pytest.approx(accuracy_score(per_item["answer"], per_item["prediction"]))
    assert metrics["macro_f1"] == pytest.approx(f1_score(per_item["answer"], per_item["prediction"], average="macro", zero_division=0))
    labels = sorted(set(per_item["answer"]) | set(per_item["prediction"]))
    assert list(metrics["per_position"]) == labels == metrics["confusion"]["labels"] and {"F", "G"} <= set(labels)
    f1 = f1_score(per_item["answer"], per_item["prediction"], labels=labels, average=None, zero_division=0)
    assert [metrics["per_position"][label]["f1"] for label in labels] == pytest.approx(list(f1))
    assert metrics["per_position"]["G"]["support"] == 2 and metrics["per_n_options"]["7"]["n"] == 4
    if protocol == "letter":
        assert set(metrics["scoring"]["letter_tokens"]) == set(WIDE)
    else:
        row = by_options.loc["w-2"]
        assert row["n_bytes_G"] == len(SEVEN[6].encode("utf-8")) and row["loglik_norm_G"] == pytest.approx(row["loglik_G"] / row["n_bytes_G"])


def test_seven_option_chat_template_prompt(tiny_models, head_qa_set, wide_file, tmp_path):
    """The SFT prompt lists A) .. G), and the letter scored after ``Respuesta:`` tells all seven apart."""
    loaded = mcqa.load_model(str(tiny_models["mistral"]), dtype="fp32", device="cpu")
    manifest = head_qa_set / "data/head_qa_es/manifest.json"
    prompter = mcqa.ChatPrompter(loaded[1], "mistral", mcqa.load_sft_prompt(manifest))
    item = mcqa.load_items(wide_file)[1]
    context, scored = prompter.pairs(item, "letter")
    assert "\n".join(f"{letter}) {option}" for letter, option in zip(WIDE, SEVEN)) in loaded[1].decode(context)
    assert [loaded[1].decode(ids).strip() for ids in scored] == list(WIDE)
    metrics = mcqa.evaluate(wide_file, "tiny", tmp_path, loaded=loaded, chat_template="mistral", sft_prompt_from=manifest, progress=False)
    assert metrics["n"] == len(WIDE_ITEMS) and pd.read_csv(tmp_path / "per_item.csv")["logprob_G"].notna().sum() == 4


def test_include_images_and_limit(app, tiny_models, files, tmp_path):
    out = tmp_path / "images"
    result = _run(app, "--items", str(files["items"]), "--model", str(tiny_models["llama"]), "--out-dir", str(out), "--include-images")
    assert result.exit_code == 0, result.output
    per_item = pd.read_csv(out / "per_item.csv")
    assert "es-6" in set(per_item["id"]) and len(per_item) == len(TEST_ITEMS)
    result = _run(app, "--items", str(files["items"]), "--model", str(tiny_models["llama"]), "--out-dir", str(out), "--limit", "3")
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(out / "per_item.csv")["id"]) == ["es-1", "es-2", "es-3"]


def test_adapter_changes_scores(app, tiny_models, files, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_path = tiny_models["mistral"]
    torch.manual_seed(0)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_path),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], lora_dropout=0.0),
    )
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5)  # B starts at zero: make the adapter do something
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    assert (adapter / "adapter_config.json").is_file()

    common = ["--items", str(files["items"]), "--model", str(base_path), "--protocol", "loglik_norm", "--batch-size", "4"]
    assert _run(app, *common, "--out-dir", str(tmp_path / "base")).exit_code == 0
    result = _run(app, *common, "--out-dir", str(tmp_path / "lora"), "--adapter", str(adapter))
    assert result.exit_code == 0, result.output
    base = pd.read_csv(tmp_path / "base" / "per_item.csv")
    lora = pd.read_csv(tmp_path / "lora" / "per_item.csv")
    assert list(base["id"]) == list(lora["id"])
    difference = (base["loglik_A"] - lora["loglik_A"]).abs()
    assert difference.min() > 1e-3
    assert json.loads((tmp_path / "lora" / "metrics.json").read_text())["settings"]["adapter"] == str(adapter)


def test_command_errors(app, tiny_models, files, tmp_path):
    model = str(tiny_models["mistral"])
    out = str(tmp_path / "out")
    cases = [
        (["--items", str(tmp_path / "missing.jsonl"), "--model", model, "--out-dir", out], "does not exist"),
        (["--items", str(files["items"]), "--model", model, "--out-dir", out, "--protocol", "cloze"], "unknown protocol"),
        (["--items", str(files["items"]), "--model", model, "--out-dir", out, "--shots", "3"], "--fewshot-from"),
        (["--items", str(files["items"]), "--model", model, "--out-dir", out, "--shots", "2",
          "--fewshot-from", str(tmp_path / "nopool.jsonl")], "does not exist"),
        (["--items", str(files["items"]), "--model", model, "--out-dir", out, "--dtype", "int3"], "unknown dtype"),
        (["--items", str(files["items"]), "--model", str(tmp_path / "no-model"), "--out-dir", out], "error"),
        (["--items", str(files["items"]), "--model", model, "--out-dir", out, "--shots", "20",
          "--fewshot-from", str(files["pool"])], "20-shot"),
    ]
    for args, message in cases:
        result = _run(app, *args)
        assert result.exit_code == 1, (args, result.output)
        assert "error:" in result.stderr and message in result.stderr, (args, result.stderr)
    assert not (tmp_path / "out").exists()
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{**TEST_ITEMS[0], "answer": 9}])
    result = _run(app, "--items", str(bad), "--model", model, "--out-dir", out)
    assert result.exit_code == 1 and "answer" in result.stderr


# --------------------------------------------------------------------------------------------
# Chat templates: the SFT prompt, encoded as LLaMA-Factory's training encodes it
# --------------------------------------------------------------------------------------------


def _head_qa_release(folder: Path) -> Path:
    """The Spanish test items as an official HEAD-QA release (every split holds them: only train matters here)."""
    exams: dict[str, dict] = {}
    for record in TEST_ITEMS:
        if record["language"] != "es" or record["exam"] is None:
            continue
        exam = exams.setdefault(record["exam"], {"name": record["exam"], "category": record["category"], "year": str(record["year"]), "data": []})
        exam["data"].append({
            "qid": record["id"].split("-")[1], "qtext": record["question"], "ra": str(record["answer"] + 1), "image": "x.png" if record["has_image"] else "",
            "answers": [{"aid": aid, "atext": text} for aid, text in enumerate(record["options"], start=1)],
        })  # fmt: skip
    (folder / "es").mkdir(parents=True)
    for split in ("train", "dev", "test"):  # the official splits share no exam: one name per split
        named = {f"{key}_{split}": {**exam, "name": f"{key}_{split}"} for key, exam in exams.items()}
        payload = {"version": "1.0", "language": "es", "exams": named}
        (folder / "es" / f"{split}_HEAD.json").write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def head_qa_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/head_qa_es/ as `medfactory prepare head_qa` writes it (dpo_fraction 0.2: most questions in the SFT set)."""
    from medfactory.plugins.head_qa import prepare_head_qa

    root = tmp_path_factory.mktemp("head_qa_repo")
    (root / "dataset_info.json").write_text("{}")
    prepare_head_qa(_head_qa_release(root / "release"), "es", root, dpo_fraction=0.2)
    return root


def _llamafactory_sft_examples(root: Path, model_path: Path, template_name: str) -> list[dict]:
    """head_qa_es_sft through LLaMA-Factory's own loader and supervised processor: what training feeds the model."""
    from types import SimpleNamespace

    from llamafactory.data import loader
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from transformers import AutoTokenizer

    data_args = DataArguments(dataset_dir=str(root), template=template_name, cutoff_len=2048)
    model_args = SimpleNamespace(cache_dir=str(root / "cache"), hf_hub_token=None)
    training_args = SimpleNamespace(local_process_index=0, dataloader_num_workers=0, seed=42)
    dataset = loader._get_merged_dataset(["head_qa_es_sft"], model_args, data_args, training_args, stage="sft", return_dict=True)["head_qa_es_sft"]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    processor = loader._get_dataset_processor(data_args, "sft", template, tokenizer, None)
    encoded = processor.preprocess_dataset(dataset[:])
    rows = json.loads((root / "data/head_qa_es/sft_train.json").read_text(encoding="utf-8"))
    return [{"id": row["id"], "input_ids": ids, "labels": labels} for row, ids, labels in zip(rows, encoded["input_ids"], encoded["labels"])]


def test_chat_template_prompt_is_the_token_ids_llamafactory_trains_on(tiny_models, head_qa_set):
    root = head_qa_set
    examples = _llamafactory_sft_examples(root, tiny_models["mistral"], "mistral")
    assert len(examples) >= 3
    network, tokenizer = mcqa.load_model(str(tiny_models["mistral"]), dtype="fp32", device="cpu")
    prompter = mcqa.ChatPrompter(tokenizer, "mistral", mcqa.load_sft_prompt(root / "data/head_qa_es/manifest.json"))
    items = {item.id: item for item in mcqa.load_items(root / "data/head_qa_es/train.jsonl")}
    for example in examples:
        item = items[example["id"]]
        prompt_part = next(index for index, label in enumerate(example["labels"]) if label != -100)  # training's prompt ends here
        prompt, answers = prompter.encode(item)
        assert prompt == example["input_ids"][:prompt_part]
        assert prompt + answers[item.answer] == example["input_ids"]  # the right option's answer is the training target
        assert tokenizer.decode(prompt).startswith("<s>[INST] " + mcqa.load_sft_prompt(root / "data/head_qa_es/manifest.json").instruction)
        for protocol in ("letter", "loglik_norm"):
            context, scored = prompter.pairs(item, protocol)
            assert (context + scored[item.answer]) == example["input_ids"][: len(context) + len(scored[item.answer])]
            assert len(context) > prompt_part and tokenizer.decode(context[prompt_part:]).strip() == "Respuesta:"
        letters = prompter.pairs(item, "letter")[1]
        assert len({tuple(ids) for ids in letters}) == item.n_options


def test_chat_template_scores_the_templated_prompt(tiny_models, head_qa_set, tmp_path):
    root = head_qa_set
    items_path = root / "data/head_qa_es/test.jsonl"
    loaded = mcqa.load_model(str(tiny_models["mistral"]), dtype="fp32", device="cpu")
    raw = mcqa.evaluate(items_path, "tiny", tmp_path / "raw", protocol="letter", loaded=loaded, progress=False)
    chat = mcqa.evaluate(items_path, "tiny", tmp_path / "chat", protocol="letter", loaded=loaded, progress=False, chat_template="mistral")
    norm = mcqa.evaluate(items_path, "tiny", tmp_path / "norm", protocol="loglik_norm", loaded=loaded, progress=False, chat_template="mistral")
    assert raw["settings"]["chat_template"] is None and raw["prompt"]["chat_template"] is None
    assert chat["settings"]["chat_template"] == "mistral" and chat["settings"]["chat_template_source"] == "--chat-template"
    assert chat["settings"]["sft_prompt_from"] == str(root / "data/head_qa_es/manifest.json")
    shape = chat["prompt"]["shape"]
    assert shape.startswith("<s>[INST] Responde a la siguiente pregunta") and shape.endswith("[/INST] Respuesta:")
    assert "{question}\n\nA) {option A}\nB) {option B}" in shape and chat["prompt"]["continuation_of_option_A"].strip() == "A"
    assert norm["prompt"]["continuation_of_option_A"].strip() == "A) {option A}</s>"
    assert raw["prompt"]["shape"].endswith("Respuesta:") and "[INST]" not in raw["prompt"]["shape"]
    raw_items = pd.read_csv(tmp_path / "raw" / "per_item.csv")
    chat_items = pd.read_csv(tmp_path / "chat" / "per_item.csv")
    assert list(raw_items["id"]) == list(chat_items["id"])
    assert (raw_items["logprob_A"] - chat_items["logprob_A"]).abs().min() > 1e-4  # another prompt, other scores
    assert re.search(r"^\| prompt +\| chat template mistral +\|", (tmp_path / "chat" / "report.md").read_text(), re.MULTILINE)
    # the score is the direct log-probability of the scored tokens after the templated context
    network, tokenizer = mcqa.load_model(str(tiny_models["mistral"]), dtype="fp32", device="cpu")
    prompter = mcqa.ChatPrompter(tokenizer, "mistral", mcqa.load_sft_prompt(root / "data/head_qa_es/manifest.json"))
    item = mcqa.load_items(items_path)[0]
    context, scored = prompter.pairs(item, "loglik_norm")
    with torch.no_grad():
        for option in range(item.n_options):
            whole = context + scored[option]
            logprobs = torch.log_softmax(network(torch.tensor([whole])).logits[0].float(), dim=-1)
            expected = sum(float(logprobs[position - 1, whole[position]]) for position in range(len(context), len(whole)))
            row = pd.read_csv(tmp_path / "norm" / "per_item.csv").iloc[0]
            assert row[f"loglik_{'ABCDE'[option]}"] == pytest.approx(expected, abs=1e-4)
            assert row[f"n_bytes_{'ABCDE'[option]}"] == len(f"{'ABCDE'[option]}) {item.options[option]}".encode())


def test_chat_template_few_shot_examples_are_earlier_turns(tiny_models, head_qa_set, files):
    _, tokenizer = mcqa.load_model(str(tiny_models["mistral"]), dtype="fp32", device="cpu")
    sft_prompt = mcqa.load_sft_prompt(head_qa_set / "data/head_qa_es/manifest.json")
    prompter = mcqa.ChatPrompter(tokenizer, "mistral", sft_prompt)
    items = mcqa.load_items(head_qa_set / "data/head_qa_es/test.jsonl")
    shots = mcqa.FewShotSampler(mcqa.load_items(files["pool"]), seed=0).sample(items[0], 2)
    context, _ = prompter.pairs(items[0], "letter", shots)
    text = tokenizer.decode(context)
    assert text.count("[INST]") == 3 and text.count("</s>") == 2
    for shot in shots:
        assert sft_prompt.response_text(shot, shot.answer) + "</s>" in text


def test_chat_template_choice_errors_and_auto(tmp_path, head_qa_set, monkeypatch):
    with pytest.raises(mcqa.McqaError, match=r"'mistrall'.*did you mean mistral"):
        mcqa.resolve_chat_template("mistrall", "m", None)
    assert mcqa.resolve_chat_template("none", "m", None) == (None, "--chat-template none")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    adapter = tmp_path / "saves" / "sft"
    adapter.mkdir(parents=True)
    (recipes / "sft.yaml").write_text(f"model_name_or_path: org/base\ntemplate: mistral\noutput_dir: {adapter}\n")
    (recipes / "other.yaml").write_text("model_name_or_path: org/base\ntemplate: llama2\noutput_dir: saves/other\n")
    assert mcqa.resolve_chat_template("auto", "org/base", str(adapter), recipes) == ("mistral", f"auto: {recipes / 'sft.yaml'}")
    monkeypatch.chdir(tmp_path)  # a relative output_dir names the same folder
    assert mcqa.find_chat_template("org/base", "saves/sft", Path("recipes"))[0] == "mistral"
    with pytest.raises(mcqa.McqaError, match=r"recipes disagree.*other.yaml \(llama2\).*sft.yaml \(mistral\)"):
        mcqa.resolve_chat_template("auto", "org/base", None, recipes)  # the base model: two recipes, two templates
    with pytest.raises(mcqa.McqaError, match=r"no training_args.yaml and no recipe.*--chat-template mistral"):
        mcqa.resolve_chat_template("auto", "org/base", str(tmp_path / "elsewhere"), recipes)
    (adapter / "training_args.yaml").write_text("template: qwen\n")  # LLaMA-Board's record wins
    assert mcqa.find_chat_template("org/base", str(adapter), recipes) == ("qwen", str(adapter / "training_args.yaml"))
    # a set without the SFT prompt record: the error names the manifest and the fix
    items = _write_jsonl(tmp_path / "pt" / "test.jsonl", [r for r in TEST_ITEMS if r["language"] == "pt"])
    with pytest.raises(mcqa.McqaError, match=r"pt/manifest.json: cannot read the SFT prompt record.*--sft-prompt-from"):
        mcqa.evaluate(items, "m", tmp_path / "out", chat_template="mistral", loaded=(None, None))
    (tmp_path / "pt" / "manifest.json").write_text(json.dumps({"sft": {"instruction": "x"}}))
    with pytest.raises(mcqa.McqaError, match=r"no `sft.prompt` record"):
        mcqa.evaluate(items, "m", tmp_path / "out", chat_template="mistral", loaded=(None, None))
    assert mcqa.load_sft_prompt(head_qa_set / "data/head_qa_es/manifest.json").answer_prefix == "Respuesta"


# --------------------------------------------------------------------------------------------
# Model paths: a missing or damaged --model / --adapter is a message naming the flag and the path
# --------------------------------------------------------------------------------------------


def test_a_missing_model_or_adapter_folder_is_named_before_anything_loads(app, tiny_models, files, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("nothing may load for a path that is not there")

    monkeypatch.setattr(mcqa, "load_model", never)
    (tmp_path / "weights.bin").write_bytes(b"x")
    model = str(tiny_models["mistral"])
    cases = [
        (["--model", str(tmp_path / "no-model")], f"--model {tmp_path / 'no-model'}: no such folder"),
        (["--model", "./saves/no-run"], "--model ./saves/no-run: no such folder"),
        (["--model", str(tmp_path / "weights.bin")], f"--model {tmp_path / 'weights.bin'}: a file, not a model folder"),
        (["--model", model, "--adapter", str(tmp_path / "no-adapter")], f"--adapter {tmp_path / 'no-adapter'}: no such folder"),
    ]
    for extra, words in cases:
        result = _run(app, "--items", str(files["items"]), "--out-dir", str(tmp_path / "out"), *extra)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (extra, result.output)
        assert f"error: {words}" in result.stderr and "Fix: pass a model folder" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_a_model_that_cannot_load_is_named_not_a_traceback(app, tiny_models, files, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_models["mistral"], damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # an interrupted download
    result = _run(app, "--items", str(files["items"]), "--model", str(damaged), "--out-dir", str(tmp_path / "out"))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"error: --model {damaged}: cannot be loaded" in result.stderr and "download or export the model again" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run(app, "--items", str(files["items"]), "--model", str(empty), "--out-dir", str(tmp_path / "out"))
    assert result.exit_code == 1 and f"error: --model {empty}: cannot be loaded" in result.stderr
    result = _run(app, "--items", str(files["items"]), "--model", "nobody/no-such-model", "--out-dir", str(tmp_path / "out"))  # offline
    assert result.exit_code == 1 and "--model nobody/no-such-model: not a local folder, and not loadable" in result.stderr
    assert not (tmp_path / "out").exists()


def test_bertscore_names_a_missing_or_damaged_model_by_its_flag(tiny_models, tmp_path):
    """`eval bertscore` loads its models through the same helpers: --pt-model / --xlmr-model, never a traceback."""
    from medfactory.cli.evaluate import eval_app

    write_jsonl(tmp_path / "refs.jsonl", [{"id": "1", "report_pt": "sem alterações", "report_en": "no change"}])
    write_jsonl(tmp_path / "pred.jsonl", [{"predict": "sem alterações", "label": ""}])
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_models["mistral"], damaged)
    (damaged / "model.safetensors").write_bytes((damaged / "model.safetensors").read_bytes()[:1000])
    common = ["bertscore", "-s", f"zs={tmp_path / 'pred.jsonl'}", "--references", str(tmp_path / "refs.jsonl"), "--out-dir", str(tmp_path / "out")]
    cases = [
        (["--pt-model", str(tmp_path / "nowhere"), "--skip-xlmr"], f"--pt-model {tmp_path / 'nowhere'}: no such folder"),
        (["--xlmr-model", str(tmp_path / "nowhere"), "--skip-bertimbau"], f"--xlmr-model {tmp_path / 'nowhere'}: no such folder"),
        (["--pt-model", str(damaged), "--pt-layers", "1", "--skip-xlmr"], f"--pt-model {damaged}: cannot be loaded (SafetensorError"),
    ]
    for extra, words in cases:
        result = CliRunner().invoke(eval_app, [*common, *extra])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (extra, result.output)
        assert f"error: {words}" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
