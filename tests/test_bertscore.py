"""BERTScore (BERTimbau / XLM-R configurations), chrF, BLEU and ROUGE-L of ``medfactory.eval.bertscore``.

Nothing is downloaded: a tiny random BERT with a WordPiece tokenizer trained here stands in for
BERTimbau (its tokenizer, like BERTimbau's, has no real ``model_max_length``), and a tiny random
XLM-R with a Unigram tokenizer stands in for XLM-R large. The command's numbers are checked
against ``bert_score.score()`` called directly on the same local models.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from medfactory.base.jsonl import write_jsonl
from medfactory.eval import bertscore as bs

FINDINGS = [
    ("derrame pleural", "pleural effusion"),
    ("pneumotórax", "pneumothorax"),
    ("opacidade", "opacity"),
    ("consolidação", "consolidation"),
    ("atelectasia", "atelectasis"),
    ("cardiomegalia", "cardiomegaly"),
    ("edema pulmonar", "pulmonary edema"),
    ("nódulo", "nodule"),
    ("fratura de arco costal", "rib fracture"),
    ("elevação da cúpula diafragmática", "elevation of the hemidiaphragm"),
]
SIDES = [
    ("à direita", "on the right"),
    ("à esquerda", "on the left"),
    ("bilateral", "bilateral"),
    ("no lobo inferior direito", "in the right lower lobe"),
    ("na base esquerda", "at the left base"),
]
TEMPLATES_PT = [
    "{f} {s}.",
    "Sem sinais de {f} {s}.",
    "Pequeno {f} {s}, sem alterações em relação ao exame anterior.",
    "Observa-se {f} {s}; coração de dimensões normais.",
]
TEMPLATES_EN = [
    "{f} {s}.",
    "No evidence of {f} {s}.",
    "Small {f} {s}, unchanged from the prior study.",
    "There is {f} {s}; the heart size is normal.",
]
BATCH = 4
PT_LAYERS = 2
XLMR_LAYERS = 3

REFERENCES = [
    {"id": "s1", "report_pt": "Derrame pleural à direita. Coração de dimensões normais.",
     "report_en": "Right pleural effusion. The heart size is normal."},
    {"id": "s2", "report_pt": "Pneumotórax à esquerda, sem alterações em relação ao exame anterior.",
     "report_en": "Left pneumothorax, unchanged from the prior study."},
    {"id": "s3", "report_pt": "Sem sinais de consolidação ou derrame pleural.",
     "report_en": "No evidence of consolidation or pleural effusion."},
    {"id": "s4", "report_pt": "Opacidade no lobo inferior direito; atelectasia na base esquerda.",
     "report_en": "Opacity in the right lower lobe; atelectasis at the left base."},
    {"id": "s5", "report_pt": "Cardiomegalia com edema pulmonar bilateral.",
     "report_en": "Cardiomegaly with bilateral pulmonary edema."},
    {"id": "s6", "report_pt": "Fratura de arco costal à esquerda. Nódulo à direita.",
     "report_en": "Left rib fracture. Nodule on the right."},
]
SCENARIOS = {
    "zero-shot": [
        "The heart is normal.",
        "Pulmões limpos.",
        "",
        "Opacidade pulmonar.",
        "Coração aumentado.",
        "Sem alterações.",
    ],
    "few-shot": [
        "Derrame pleural direito.",
        "Pneumotórax à direita.",
        "Sem consolidação.",
        "Opacidade no lobo inferior direito.",
        "Cardiomegalia e edema pulmonar.",
        "Fratura de arco costal.",
    ],
    "lora": [
        "Derrame pleural à direita. Coração de dimensões normais.",
        "Pneumotórax à esquerda, sem alterações em relação ao exame anterior.",
        "Sem sinais de consolidação ou derrame pleural.",
        "Opacidade no lobo inferior direito; atelectasia à esquerda.",
        "Cardiomegalia com edema pulmonar bilateral.",
        "Fratura de arco costal à esquerda. Nódulo pulmonar à direita.",
    ],
}


def corpus() -> list[str]:
    sentences = []
    for (f_pt, f_en) in FINDINGS:
        for (s_pt, s_en) in SIDES:
            sentences += [t.format(f=f_pt, s=s_pt) for t in TEMPLATES_PT]
            sentences += [t.format(f=f_en, s=s_en) for t in TEMPLATES_EN]
    sentences += [r["report_pt"] for r in REFERENCES] + [r["report_en"] for r in REFERENCES]
    sentences += [text for texts in SCENARIOS.values() for text in texts if text]
    return sentences


# --- Tiny local models ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    """A tiny BERT (BERTimbau stand-in, max_position_embeddings 512, no model_max_length) and a tiny XLM-R."""
    from testing_utils.tiny_models import build_tiny_bert, build_tiny_xlmr

    sentences = corpus()
    return {"bert": build_tiny_bert(sentences), "xlmr": build_tiny_xlmr(sentences)}


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bertscore-inputs")
    references = root / "test_references.jsonl"
    write_jsonl(references, REFERENCES)
    scenarios = {}
    for name, texts in SCENARIOS.items():
        path = root / name / "generated_predictions.jsonl"
        lines = [{"prompt": "Laudo:", "predict": text, "label": ref["report_pt"]} for text, ref in zip(texts, REFERENCES)]
        write_jsonl(path, lines)
        scenarios[name] = path
    return {"references": references, "scenarios": scenarios}


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(bs.bertscore_command)
    return app


def command_args(inputs: dict, models: dict[str, Path], out_dir: Path, *extra: str) -> list[str]:
    args = []
    for name, path in inputs["scenarios"].items():
        args += ["--scenario", f"{name}={path}"]
    return args + [
        "--references", str(inputs["references"]), "--out-dir", str(out_dir),
        "--pt-model", str(models["bert"]), "--pt-layers", str(PT_LAYERS),
        "--xlmr-model", str(models["xlmr"]), "--xlmr-layers", str(XLMR_LAYERS),
        "--batch-size", str(BATCH), *extra,
    ]


def direct(cands: list[str], refs: list[str], model: Path, layers: int, **options) -> np.ndarray:
    """bert_score.score() called directly: (n, 3) array of P, R, F1."""
    import bert_score

    precision, recall, f1 = bert_score.score(
        cands, refs, model_type=str(model), num_layers=layers, batch_size=BATCH, **options
    )
    return np.stack([precision.double().numpy(), recall.double().numpy(), f1.double().numpy()], axis=1)


@pytest.fixture()
def transformers4_empty_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """For direct bert_score calls only: transformers 4's ``build_inputs_with_special_tokens``
    (``[CLS] ids [SEP]`` / ``<s> ids </s>``), which bert-score uses to encode an empty text and
    transformers 5 removed."""
    from transformers import BertTokenizer, XLMRobertaTokenizer

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        assert token_ids_1 is None
        return [self.cls_token_id, *token_ids_0, self.sep_token_id]

    for cls in (BertTokenizer, XLMRobertaTokenizer):
        monkeypatch.setattr(cls, "build_inputs_with_special_tokens", build_inputs_with_special_tokens, raising=False)


@pytest.fixture()
def direct_max_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """For direct bert_score calls only: a tokenizer whose sentinel max length is 512, as BERTimbau's
    should be. Without it transformers 5 refuses every input (see the test below)."""
    import importlib

    score_module = importlib.import_module("bert_score.score")
    original = score_module.get_tokenizer

    def get_tokenizer(model_type, use_fast=False):
        tokenizer = original(model_type, use_fast)
        if tokenizer.model_max_length > 10**6:
            tokenizer.model_max_length = 512
        return tokenizer

    monkeypatch.setattr(score_module, "get_tokenizer", get_tokenizer)


@pytest.fixture(scope="module", params=[False, True], ids=["no-idf", "idf"])
def command_run(request: pytest.FixtureRequest, inputs: dict, tiny_models: dict[str, Path], tmp_path_factory) -> dict:
    out_dir = tmp_path_factory.mktemp("bertscore-out") / "report"
    extra = ["--idf"] if request.param else []
    result = CliRunner().invoke(cli_app(), command_args(inputs, tiny_models, out_dir, *extra))
    assert result.exit_code == 0, result.output
    return {"idf": request.param, "out_dir": out_dir, "stdout": result.stdout}


# --- The command equals bert_score.score() ----------------------------------------------------


def test_tiny_bert_tokenizer_has_no_real_max_length(tiny_models: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tiny_models["bert"]).model_max_length > 10**9  # like BERTimbau's
    assert AutoTokenizer.from_pretrained(tiny_models["xlmr"]).model_max_length == 512


def test_command_equals_bert_score_direct(
    command_run: dict, tiny_models: dict[str, Path], transformers4_empty_encoding, direct_max_length
) -> None:
    per_item = pd.read_csv(command_run["out_dir"] / "per_item.csv", keep_default_na=False)
    for config, model, layers, field in (
        ("bertimbau", tiny_models["bert"], PT_LAYERS, "report_pt"),
        ("xlmr", tiny_models["xlmr"], XLMR_LAYERS, "report_en"),
    ):
        refs = [r[field] for r in REFERENCES]
        for scenario, cands in SCENARIOS.items():
            expected = direct(cands, refs, model, layers, idf=command_run["idf"], lang="pt")
            columns = [f"{config}_P", f"{config}_R", f"{config}_F1"]
            got = per_item.loc[per_item["scenario"] == scenario, columns].to_numpy(float)
            np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert list(per_item.loc[per_item["scenario"] == "lora", "id"]) == [r["id"] for r in REFERENCES]
    assert "report written to" in command_run["stdout"] and "bertimbau_F1" in command_run["stdout"]


def test_outputs_summary_settings_and_figures(command_run: dict, tiny_models: dict[str, Path]) -> None:
    out_dir = command_run["out_dir"]
    per_item = pd.read_csv(out_dir / "per_item.csv")
    metrics = ["bertimbau_P", "bertimbau_R", "bertimbau_F1", "xlmr_P", "xlmr_R", "xlmr_F1", "chrf", "bleu", "rouge_l"]
    assert list(per_item.columns) == ["scenario", "id", *metrics]
    assert len(per_item) == 3 * len(REFERENCES)

    summary = pd.read_csv(out_dir / "summary.csv")
    assert list(summary.columns) == ["scenario", "metric", "mean", "sd", "min", "q25", "median", "q75", "max", "n"]
    for (scenario, metric), row in summary.set_index(["scenario", "metric"]).iterrows():
        values = per_item.loc[per_item["scenario"] == scenario, metric]
        expected = [values.mean(), values.std(), values.min(), values.quantile(0.25), values.median(),
                    values.quantile(0.75), values.max(), values.count()]
        stats = row[["mean", "sd", "min", "q25", "median", "q75", "max", "n"]].to_numpy(float)
        np.testing.assert_allclose(stats, expected, atol=1e-9)
    assert set(summary["metric"]) == set(metrics) and list(summary["scenario"].drop_duplicates()) == list(SCENARIOS)

    settings = json.loads((out_dir / "settings.json").read_text(encoding="utf-8"))
    configs = {entry["name"]: entry for entry in settings["bertscore"]}
    assert configs["bertimbau"]["model"] == str(tiny_models["bert"]) and configs["bertimbau"]["layer"] == PT_LAYERS
    assert configs["xlmr"]["num_layers"] == XLMR_LAYERS and configs["xlmr"]["reference"] == "report_en"
    for entry in configs.values():
        assert entry["idf"] is command_run["idf"] and entry["rescale_with_baseline"] is False
        assert entry["max_length"] == 512 and entry["baseline_path"] is None and entry["batch_size"] == BATCH
    assert configs["bertimbau"]["tokenizer_model_max_length_original"].startswith("unset")
    for package in ("bert-score", "transformers", "sacrebleu"):
        assert settings["versions"][package][0].isdigit()
    assert "tok:intl" in settings["text_metrics"]["signatures"]["bleu_corpus"]
    assert settings["scenarios"]["lora"]["labels_equal_report_pt"] == len(REFERENCES)

    corpus_table = pd.read_csv(out_dir / "corpus.csv")
    assert list(corpus_table["scenario"]) == list(SCENARIOS)
    report = (out_dir / "report.md").read_text(encoding="utf-8")
    for config in ("bertimbau", "xlmr"):
        for part in ("precision", "recall", "f1"):
            figure = out_dir / "figures" / f"{config}_{part}.png"
            assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"(figures/{config}_{part}.png)" in report
    assert "## bertimbau_F1" in report and re.search(r"^\| lora +\|", report, re.MULTILINE)


def test_empty_prediction_scores_instead_of_crashing(tiny_models: dict[str, Path]) -> None:
    """transformers 5 dropped build_inputs_with_special_tokens; bert-score needs it for an empty text."""
    import bert_score
    from transformers import XLMRobertaTokenizer

    cands, refs = ["", "  ", "Derrame pleural."], ["Derrame pleural à direita.", "Pneumotórax.", "Derrame pleural."]
    if not hasattr(XLMRobertaTokenizer, "build_inputs_with_special_tokens"):  # tiny XLM-R: a sane max length
        with pytest.raises(AttributeError, match="build_inputs_with_special_tokens"):
            bert_score.score(cands, refs, model_type=str(tiny_models["xlmr"]), num_layers=XLMR_LAYERS)
    config = replace(bs.BERTIMBAU, model=str(tiny_models["bert"]), num_layers=PT_LAYERS, batch_size=BATCH)
    scores = bs.score_scenario(cands, refs, config)
    assert scores.loc[:1, ["P", "R", "F1"]].to_numpy().tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert scores.loc[2, "F1"] == pytest.approx(1.0, abs=1e-5)


# --- The max-length fix ------------------------------------------------------------------------


def test_bert_score_alone_fails_on_the_sentinel_max_length(tiny_models: dict[str, Path]) -> None:
    """transformers 5 passes max_length=1e30 to the Rust tokenizer: even a short text fails."""
    import bert_score

    with pytest.raises((OverflowError, IndexError, RuntimeError)):
        bert_score.score(
            ["Derrame pleural."], ["Derrame pleural à direita."], model_type=str(tiny_models["bert"]), num_layers=PT_LAYERS
        )


@pytest.mark.parametrize("idf", [False, True], ids=["no-idf", "idf"])
def test_long_reference_is_truncated_to_512(
    tiny_models: dict[str, Path], idf: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    candidates = ("derrame", "pleural", "pneumotórax", "direita", "esquerda", "opacidade", "coração")
    words = [word for word in candidates if len(tokenizer.tokenize(word)) == 1]
    assert len(words) >= 4
    long_words = [words[i % len(words)] for i in range(600)]
    long_reference = " ".join(long_words)
    truncated = " ".join(long_words[:510])  # 510 single-piece words + [CLS] + [SEP] = 512
    assert len(tokenizer(long_reference)["input_ids"]) == 602
    cands = ["Derrame pleural à direita.", "Pneumotórax à esquerda."]
    refs_long, refs_cut = [long_reference, REFERENCES[1]["report_pt"]], [truncated, REFERENCES[1]["report_pt"]]

    config = replace(bs.BERTIMBAU, model=str(tiny_models["bert"]), num_layers=PT_LAYERS, idf=idf, batch_size=BATCH)
    got = bs.score_scenario(cands, refs_long, config)[["P", "R", "F1"]].to_numpy()
    # the reference: bert-score on the pre-truncated text, its tokenizer limited to 512 as it should be
    import importlib

    score_module = importlib.import_module("bert_score.score")
    original = score_module.get_tokenizer

    def get_tokenizer(model_type, use_fast=False):
        tokenizer = original(model_type, use_fast)
        tokenizer.model_max_length = 512
        return tokenizer

    monkeypatch.setattr(score_module, "get_tokenizer", get_tokenizer)
    expected = direct(cands, refs_cut, tiny_models["bert"], PT_LAYERS, idf=idf, nthreads=0)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    # with the 512 limit but no truncation, the long reference overflows the position embeddings
    monkeypatch.setattr(
        score_module, "get_tokenizer", lambda model_type, use_fast=False: _no_truncation(original(model_type, use_fast))
    )
    with pytest.raises((IndexError, RuntimeError)):
        direct(cands, refs_long, tiny_models["bert"], PT_LAYERS, nthreads=0)


def _no_truncation(tokenizer):
    tokenizer.model_max_length = 10**6  # fits the Rust tokenizer, truncates nothing
    return tokenizer


def test_selected_layer_is_that_layer_of_the_full_model(tiny_models: dict[str, Path]) -> None:
    """Under transformers 5, bert-score's layer cut still yields hidden_states[num_layers]."""
    import torch
    from bert_score.utils import get_model
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    batch = tokenizer(["Derrame pleural à direita."], return_tensors="pt")
    full = AutoModel.from_pretrained(tiny_models["bert"]).eval()
    cut = get_model(str(tiny_models["bert"]), PT_LAYERS)
    with torch.no_grad():
        expected = full(**batch, output_hidden_states=True).hidden_states[PT_LAYERS]
        got = cut(batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    torch.testing.assert_close(got, expected)


# --- Rescaling ----------------------------------------------------------------------------------


def test_rescale_without_baseline_fails_clearly(inputs: dict, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    config = replace(bs.BERTIMBAU, model=str(tiny_models["bert"]), num_layers=PT_LAYERS, rescale_with_baseline=True)
    with pytest.raises(bs.BaselineError) as caught:
        bs.score_scenario(["a"], ["b"], config)
    message = str(caught.value)
    assert str(tiny_models["bert"]) in message and "--baseline-path" in message and "--rescale" in message

    out_dir = tmp_path / "out"
    result = CliRunner().invoke(cli_app(), command_args(inputs, tiny_models, out_dir, "--rescale", "--skip-xlmr"))
    assert result.exit_code == 1
    assert "no rescale baseline" in result.stderr and str(tiny_models["bert"]) in result.stderr
    assert "--baseline-path" in result.stderr and not out_dir.exists()


def test_xlmr_preset_finds_bert_scores_portuguese_baseline() -> None:
    path = bs.resolve_baseline(replace(bs.XLMR, rescale_with_baseline=True))
    assert path is not None and path.parts[-2:] == ("pt", "xlm-roberta-large.tsv")
    assert set(bs.read_baseline(path, 17)) == {"P", "R", "F"}
    with pytest.raises(bs.BaselineError, match="no rescale baseline for model 'neuralmind/bert-base-portuguese-cased'"):
        bs.resolve_baseline(replace(bs.BERTIMBAU, rescale_with_baseline=True))


def test_rescale_with_baseline_file(
    inputs: dict, tiny_models: dict[str, Path], tmp_path: Path, direct_max_length, transformers4_empty_encoding
) -> None:
    baseline = tmp_path / "tiny-bertimbau-pt.csv"
    rows = [(layer, 0.50 + 0.05 * layer, 0.48 + 0.05 * layer, 0.49 + 0.05 * layer) for layer in range(4)]
    baseline.write_text("LAYER,P,R,F\n" + "".join(f"{layer},{p},{r},{f}\n" for layer, p, r, f in rows), encoding="utf-8")
    out_dir = tmp_path / "out"
    args = command_args(inputs, tiny_models, out_dir, "--rescale", "--baseline-path", str(baseline), "--skip-xlmr")
    result = CliRunner().invoke(cli_app(), args)
    assert result.exit_code == 0, result.output
    per_item = pd.read_csv(out_dir / "per_item.csv")
    assert "xlmr_F1" not in per_item.columns
    b = np.array(rows[PT_LAYERS][1:])
    refs = [r["report_pt"] for r in REFERENCES]
    for scenario, cands in SCENARIOS.items():
        raw = direct(cands, refs, tiny_models["bert"], PT_LAYERS)
        got = per_item.loc[per_item["scenario"] == scenario, ["bertimbau_P", "bertimbau_R", "bertimbau_F1"]].to_numpy(float)
        np.testing.assert_allclose(got, (raw - b) / (1 - b), atol=1e-6, rtol=0)
    entry = json.loads((out_dir / "settings.json").read_text(encoding="utf-8"))["bertscore"][0]
    assert entry["rescale_with_baseline"] is True and entry["baseline_path"] == str(baseline)
    assert entry["baseline_values"] == pytest.approx({"P": b[0], "R": b[1], "F": b[2]})


# --- chrF, BLEU, ROUGE-L ------------------------------------------------------------------------


def test_chrf_and_bleu_equal_sacrebleu() -> None:
    from sacrebleu.metrics import BLEU, CHRF

    cands, refs = SCENARIOS["few-shot"], [r["report_pt"] for r in REFERENCES]
    table = bs.text_metrics(cands, refs)
    sentence_bleu = BLEU(tokenize="intl", effective_order=True)
    for index, (cand, ref) in enumerate(zip(cands, refs)):
        assert table["chrf"][index] == pytest.approx(CHRF().sentence_score(cand, [ref]).score, abs=1e-9)
        assert table["bleu"][index] == pytest.approx(sentence_bleu.sentence_score(cand, [ref]).score, abs=1e-9)
    corpus_scores = bs.corpus_text_metrics(cands, refs)
    assert corpus_scores["chrf"] == pytest.approx(CHRF().corpus_score(cands, [refs]).score, abs=1e-9)
    assert corpus_scores["bleu"] == pytest.approx(BLEU(tokenize="intl").corpus_score(cands, [refs]).score, abs=1e-9)


def test_rouge_l_portuguese_by_hand() -> None:
    assert bs.rouge_tokenize("Pneumotórax à direita.") == ["pneumotórax", "à", "direita"]
    nfd = "pneumoto\u0301rax"  # decomposed accent: still one token
    assert bs.rouge_tokenize(nfd) == ["pneumotórax"]
    # prediction "derrame pleural direito" (3 words) vs reference "derrame pleural à direita" (4 words):
    # LCS = "derrame pleural" = 2 -> P = 2/3, R = 2/4, F1 = 2PR/(P+R) = 4/7
    precision, recall, f1 = bs.rouge_l("derrame pleural direito", "derrame pleural à direita")
    assert (precision, recall) == (pytest.approx(2 / 3), pytest.approx(1 / 2))
    assert f1 == pytest.approx(4 / 7)
    # case and punctuation do not matter; accents do: "à" != "a"
    assert bs.rouge_l("Pneumotórax à direita.", "pneumotórax à direita") == (1.0, 1.0, 1.0)
    # LCS("a pneumotórax direita", "pneumotórax à direita") = 2 -> P = R = 2/3
    assert bs.rouge_l("a pneumotórax direita", "pneumotórax à direita")[2] == pytest.approx(2 / 3)
    assert bs.rouge_l("", "derrame") == (0.0, 0.0, 0.0)


def test_lcs_matches_dynamic_program() -> None:
    def dp(a: list[str], b: list[str]) -> int:
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
        return table[-1][-1]

    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
        assert bs.lcs_length(a, b) == dp(a, b)


# --- Input errors -------------------------------------------------------------------------------


def test_count_mismatch_names_both_files(inputs: dict, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    short = tmp_path / "short" / "generated_predictions.jsonl"
    short.parent.mkdir()
    lines = inputs["scenarios"]["lora"].read_text(encoding="utf-8").splitlines(keepends=True)
    short.write_text("".join(lines[:-1]), encoding="utf-8")
    with pytest.raises(bs.BertScoreError) as caught:
        bs.evaluate({"lora": short}, inputs["references"], tmp_path / "out", [bs.BERTIMBAU])
    assert str(short) in str(caught.value) and str(inputs["references"]) in str(caught.value)

    args = ["--scenario", f"lora={short}", "--references", str(inputs["references"]), "--out-dir", str(tmp_path / "out"),
            "--pt-model", str(tiny_models["bert"]), "--pt-layers", "2", "--skip-xlmr"]
    result = CliRunner().invoke(cli_app(), args)
    assert result.exit_code == 1
    assert str(short) in result.stderr and str(inputs["references"]) in result.stderr and "5 predictions" in result.stderr
