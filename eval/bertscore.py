"""BERTScore (BERTimbau and XLM-R large) plus chrF, BLEU and ROUGE-L for generated reports.

Scores the MIMIC-CXR-PT-BR inference scenarios (zero-shot, few-shot, LoRA) against
``test_references.jsonl``, joined by row order, and writes per-item and summary tables, box
plots and ``report.md``. docs/mimic_cxr_ptbr.md gives the inputs, outputs, the two
configurations and the two bert-score 0.3.13 pitfalls handled here.
"""

from __future__ import annotations

import io
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from medfactory.base.atomic import atomic_write, write_json_atomic
from medfactory.base.jsonl import iter_jsonl
from medfactory.base.tables import markdown_table
from medfactory.base.versions import package_versions
from medfactory.eval.mcqa import check_model_reference, load_named

if TYPE_CHECKING:  # heavy imports stay lazy: `medfactory --help` must not load torch
    import pandas as pd
    from bert_score import BERTScorer

# --------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------

REFERENCE_FIELDS = ("report_pt", "report_en")
TEXT_REFERENCE_FIELD = "report_pt"  # chrF / BLEU / ROUGE-L compare Portuguese with Portuguese
SCORE_PARTS = (("P", "precision"), ("R", "recall"), ("F1", "f1"))
TEXT_METRICS = ("chrf", "bleu", "rouge_l")
# sacrebleu's BLEU tokenizer. Both "13a" and "intl" keep accented letters inside a word
# ("pneumotórax" stays one token under both), but 13a's punctuation classes are ASCII-only: the
# curly quotes, guillemets, en/em dashes, ellipsis and degree sign of Portuguese clinical text
# stay glued to the neighbouring word ("“leve”", "37,8°C…", "«ver»"), so the same word counts as
# a different token. "intl" splits on every Unicode punctuation and symbol character and, like
# 13a, keeps decimal commas ("2,5 cm") intact.
BLEU_TOKENIZE = "intl"
UNICODE_NORMALIZATION = "NFC"  # text metrics only; NFD accents would otherwise split words

PER_ITEM_CSV = "per_item.csv"
SUMMARY_CSV = "summary.csv"
CORPUS_CSV = "corpus.csv"
SETTINGS_JSON = "settings.json"
REPORT_MD = "report.md"
FIGURES_DIR = "figures"
SUMMARY_STATS = ("mean", "sd", "min", "q25", "median", "q75", "max", "n")

# Which command-line option gives the baseline file of each preset (named in error messages).
BASELINE_OPTIONS = {"bertimbau": "--baseline-path", "xlmr": "--xlmr-baseline-path"}


class BertScoreError(ValueError):
    """Bad input or setting for the BERTScore evaluation; the message names the file or option."""


class BaselineError(BertScoreError):
    """Rescaling was asked for but no usable baseline file exists for the model."""


@dataclass(frozen=True)
class BertScoreConfig:
    """One BERTScore configuration: which model, which layer, against which reference.

    ``model`` is a Hugging Face name or a local folder (``--pt-model`` / ``--xlmr-model``).
    ``num_layers`` is the layer whose output embeddings are compared (bert-score keeps the
    first ``num_layers`` transformer layers). ``reference`` is the field of
    ``test_references.jsonl`` the predictions are compared with. ``lang`` only selects
    bert-score's shipped rescale baseline (``rescale_baseline/<lang>/<model>.tsv``);
    ``baseline_path`` overrides it. ``max_length`` (word pieces, special tokens included) is
    where both texts are truncated.
    """

    name: str
    model: str
    num_layers: int
    max_length: int = 512
    reference: str = "report_pt"
    lang: str = "pt"
    idf: bool = False
    rescale_with_baseline: bool = False
    baseline_path: Path | None = None
    batch_size: int = 16
    device: str | None = field(default=None, compare=False)

    def columns(self) -> list[str]:
        """The per-item columns this configuration writes: ``<name>_P``, ``<name>_R``, ``<name>_F1``."""
        return [f"{self.name}_{part}" for part, _ in SCORE_PARTS]


# BERTimbau base has 12 layers. We use layer 9, not the last one: bert-score picks each model's
# default layer as the one whose embeddings correlate best with human judgements (WMT16), and for
# every 12-layer BERT-base model in its table that is layer 9 (bert-base-uncased,
# bert-base-cased-finetuned-mrpc and, closest to BERTimbau, bert-base-multilingual-cased); the
# last layer is specialised to the masked-LM objective and correlates worse. Layer 9 of 12 also
# sits at the same relative depth as layer 17 of 24 used for XLM-R large. `--pt-layers 12`
# reproduces a last-layer run; settings.json records the layer either way.
BERTIMBAU = BertScoreConfig(
    "bertimbau",
    "neuralmind/bert-base-portuguese-cased",
    num_layers=9,
    max_length=512,
    reference="report_pt",
    lang="pt",
)
# XLM-R large: bert-score's default layer (17 of 24) and its shipped Portuguese baseline
# (rescale_baseline/pt/xlm-roberta-large.tsv). That baseline was estimated on Portuguese-Portuguese
# pairs; for English references vs Portuguese outputs it is an approximation, which is why
# rescaling is off by default.
# The command's option for each configuration's model, for messages.
MODEL_FLAGS = {"bertimbau": "--pt-model", "xlmr": "--xlmr-model"}
XLMR = BertScoreConfig(
    "xlmr",
    "xlm-roberta-large",
    num_layers=17,
    max_length=512,
    reference="report_en",
    lang="pt",
)
PRESETS = {BERTIMBAU.name: BERTIMBAU, XLMR.name: XLMR}


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) for every non-blank line; a clear error for bad JSON or a missing file."""
    try:
        return list(iter_jsonl(path))
    except ValueError as error:
        raise BertScoreError(str(error)) from error


def read_predictions(path: Path) -> list[dict[str, str]]:
    """LLaMA-Factory's ``generated_predictions.jsonl``: ``{"predict", "label"}`` per row, in file order."""
    rows = []
    for number, record in _read_jsonl(path):
        predict = record.get("predict")
        if not isinstance(predict, str):
            raise BertScoreError(
                f"{path}, line {number}: no string field 'predict' (is this a generated_predictions.jsonl?)"
            )
        label = record.get("label")
        rows.append({"predict": predict, "label": label if isinstance(label, str) else ""})
    if not rows:
        raise BertScoreError(f"{path} has no predictions")
    return rows


def read_references(path: Path, fields: Sequence[str] = REFERENCE_FIELDS) -> list[dict[str, str]]:
    """``test_references.jsonl``: ``{"id", <fields>}`` per row, in file order; ids must be unique."""
    rows: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    for number, record in _read_jsonl(path):
        if record.get("id") is None or str(record.get("id")) == "":
            raise BertScoreError(f"{path}, line {number}: no 'id'")
        item_id = str(record["id"])
        if item_id in seen:
            raise BertScoreError(f"{path}, line {number}: id {item_id!r} repeats line {seen[item_id]}")
        seen[item_id] = number
        row = {"id": item_id}
        for name in fields:
            value = record.get(name)
            if not isinstance(value, str):
                raise BertScoreError(f"{path}, line {number}: no string field {name!r}")
            row[name] = value
        rows.append(row)
    if not rows:
        raise BertScoreError(f"{path} has no references")
    return rows


def parse_scenarios(pairs: Sequence[str]) -> dict[str, Path]:
    """``["zero-shot=runs/zs/generated_predictions.jsonl", ...]`` -> ordered ``{name: path}``."""
    scenarios: dict[str, Path] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name or not value.strip():
            raise BertScoreError(f"--scenario {pair!r}: write name=path/generated_predictions.jsonl")
        if name in scenarios:
            raise BertScoreError(f"--scenario {name!r} is given twice")
        scenarios[name] = Path(value.strip())
    if not scenarios:
        raise BertScoreError("give at least one --scenario name=path/generated_predictions.jsonl")
    return scenarios


def load_inputs(
    scenarios: dict[str, Path], references_path: Path, fields: Sequence[str]
) -> tuple[list[dict[str, str]], dict[str, list[dict[str, str]]]]:
    """Read the references and every scenario; the row counts must agree (the row order is the join)."""
    references = read_references(references_path, fields)
    predictions: dict[str, list[dict[str, str]]] = {}
    for name, path in scenarios.items():
        rows = read_predictions(path)
        if len(rows) != len(references):
            raise BertScoreError(
                f"scenario {name!r}: {path} has {len(rows)} predictions but {references_path} has "
                f"{len(references)} references; the row order is the join, so both must come from the same test set"
            )
        predictions[name] = rows
    return references, predictions


# --------------------------------------------------------------------------------------------
# BERTScore
# --------------------------------------------------------------------------------------------


def shipped_baseline(model: str, lang: str) -> Path | None:
    """bert-score's own rescale baseline for a hub model name and language, if it ships one."""
    import bert_score

    if Path(model).exists():  # a local folder: bert-score's lookup would build a nonsense path
        return None
    path = Path(bert_score.__file__).parent / "rescale_baseline" / lang / f"{model}.tsv"
    return path if path.is_file() else None


def read_baseline(path: Path, num_layers: int) -> dict[str, float]:
    """The (P, R, F) baseline of one layer from a bert-score baseline CSV (``LAYER,P,R,F``, a row per layer).

    bert-score reads the row by position (``iloc[num_layers]``), so the row at that position must
    be the one whose ``LAYER`` is ``num_layers``.
    """
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise BaselineError(f"cannot read the baseline file {path}: {error}") from error
    columns = [str(column).strip() for column in table.columns]
    if columns != ["LAYER", "P", "R", "F"]:
        raise BaselineError(
            f"baseline file {path}: expected the header LAYER,P,R,F (bert-score's format), got {','.join(columns)}"
        )
    table.columns = columns
    if len(table) <= num_layers or int(table["LAYER"].iloc[num_layers]) != num_layers:
        raise BaselineError(
            f"baseline file {path} has no row for layer {num_layers} at position {num_layers} "
            "(bert-score expects one row per layer, 0, 1, 2, ... in order)"
        )
    row = table.iloc[num_layers]
    return {"P": float(row["P"]), "R": float(row["R"]), "F": float(row["F"])}


def resolve_baseline(config: BertScoreConfig) -> Path | None:
    """The baseline file a configuration rescales with (None without rescaling); validated.

    Raises :class:`BaselineError` naming the model and the way out when there is none.
    """
    if not config.rescale_with_baseline:
        return None
    option = BASELINE_OPTIONS.get(config.name, "--baseline-path")
    if config.baseline_path is not None:
        path = Path(config.baseline_path)
        if not path.is_file():
            raise BaselineError(f"baseline file {path} for {config.name} ({config.model}) does not exist")
    else:
        path = shipped_baseline(config.model, config.lang)
        if path is None:
            hint = ""
            candidate = shipped_baseline(Path(config.model).name, config.lang)
            if Path(config.model).exists() and candidate is not None:
                hint = f" (if this folder is a copy of {Path(config.model).name}, bert-score's baseline is {candidate})"
            raise BaselineError(
                f"cannot rescale {config.name}: bert-score ships no rescale baseline for model "
                f"{config.model!r} and language {config.lang!r}{hint}. Give a baseline CSV "
                f"(header LAYER,P,R,F, one row per layer) with {option}, or drop --rescale."
            )
    read_baseline(path, config.num_layers)
    return path


def _position_capacity(model_config: Any) -> int | None:
    """How many tokens the model's position embeddings take (RoBERTa-style models lose pad_id + 1)."""
    positions = getattr(model_config, "max_position_embeddings", None)
    if not positions:
        return None
    model_type = str(getattr(model_config, "model_type", ""))
    if "roberta" in model_type or "camembert" in model_type:
        positions -= int(getattr(model_config, "pad_token_id", 1) or 0) + 1
    return int(positions)


def _check_config(config: BertScoreConfig) -> None:
    if config.reference not in REFERENCE_FIELDS:
        raise BertScoreError(f"{config.name}: reference must be one of {REFERENCE_FIELDS}, not {config.reference!r}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", config.name):
        raise BertScoreError(f"configuration name {config.name!r}: use letters, digits, '_', '.', '-' (it names files)")
    if config.max_length < 2:
        raise BertScoreError(f"{config.name}: max_length must be at least 2 (the special tokens), not {config.max_length}")
    if config.batch_size < 1:
        raise BertScoreError(f"{config.name}: batch_size must be positive, not {config.batch_size}")


def _restore_empty_encoding(tokenizer: Any) -> None:
    """Give a transformers-5 tokenizer back the ``build_inputs_with_special_tokens`` bert-score needs.

    ``bert_score.utils.sent_encode`` encodes an empty (or blank) text as
    ``tokenizer.build_inputs_with_special_tokens([])``, i.e. ``[CLS] [SEP]``; transformers 5's
    tokenizers no longer have that method, so one empty prediction would crash the whole run
    with an AttributeError. This instance (only) gets a stand-in returning what the tokenizer
    itself encodes for an empty text (``[CLS] [SEP]``, ``<s> </s>``), as transformers 4 did;
    bert-score then scores the empty prediction as it always has (raw P = R = 0, with a warning).
    """
    if hasattr(tokenizer, "build_inputs_with_special_tokens"):
        return
    empty = list(tokenizer("", add_special_tokens=True)["input_ids"])

    def build_inputs_with_special_tokens(token_ids_0: list[int], token_ids_1: list[int] | None = None) -> list[int]:
        if token_ids_0 or token_ids_1:
            raise NotImplementedError("medfactory's stand-in only encodes the empty text (all bert-score asks of it)")
        return list(empty)

    tokenizer.build_inputs_with_special_tokens = build_inputs_with_special_tokens


def load_scorer(config: BertScoreConfig, idf_references: Sequence[str] | None = None) -> BERTScorer:
    """A ``bert_score.BERTScorer`` for ``config`` with the max-length fix applied to its own tokenizer.

    With ``config.idf`` the idf weights are computed on ``idf_references`` (as ``bert_score.score``
    does on the references it is given) *after* the max-length fix, so the document frequencies
    count the same truncated token sequences that are scored.
    """
    from bert_score import BERTScorer
    from bert_score.utils import sent_encode
    from transformers import AutoConfig

    _check_config(config)
    flag = MODEL_FLAGS.get(config.name, f"{config.name} model")
    check_model_reference(config.model, flag)  # a missing folder, a truncated download: named, never a traceback
    baseline = resolve_baseline(config)
    model_config = load_named(flag, config.model, lambda: AutoConfig.from_pretrained(config.model))
    total_layers = getattr(model_config, "num_hidden_layers", None)
    if total_layers is not None and not 0 <= config.num_layers <= total_layers:
        raise BertScoreError(
            f"{config.name}: num_layers={config.num_layers}, but {config.model} has layers 0..{total_layers}"
        )
    capacity = _position_capacity(model_config)
    if capacity is not None and config.max_length > capacity:
        raise BertScoreError(
            f"{config.name}: max_length={config.max_length}, but {config.model} takes at most {capacity} tokens"
        )
    if config.idf and idf_references is None:
        raise BertScoreError(f"{config.name}: idf weighting needs the references to compute the weights on")

    scorer = load_named(
        flag,
        config.model,
        lambda: BERTScorer(
            model_type=config.model,
            num_layers=config.num_layers,  # always given: BERTimbau is not in model2layers
            batch_size=config.batch_size,
            nthreads=0,  # idf counts without a process pool (fast tokenizers; forking torch is fragile)
            idf=config.idf,
            idf_sents=None,  # computed below, after the max-length fix
            lang=config.lang,
            rescale_with_baseline=config.rescale_with_baseline,
            baseline_path=str(baseline) if baseline is not None else None,
            device=config.device,
        ),
    )
    tokenizer = scorer._tokenizer  # bert-score exposes no max-length option: fix this instance only
    _restore_empty_encoding(tokenizer)
    scorer._medfactory_original_max_length = tokenizer.model_max_length  # type: ignore[attr-defined]
    tokenizer.model_max_length = config.max_length
    # sent_encode truncates with tokenizer.model_max_length; make sure this tokenizer honours it.
    probe = " ".join(["a"] * (config.max_length + 8))
    if len(sent_encode(tokenizer, probe)) > config.max_length:
        raise RuntimeError(
            f"{config.name}: the tokenizer of {config.model} ignores model_max_length; truncation would not happen"
        )
    if config.idf:
        scorer.compute_idf(list(idf_references or []))
    return scorer


def score_scenario(
    predictions: list[str],
    references: list[str],
    config: BertScoreConfig,
    scorer: BERTScorer | None = None,
) -> pd.DataFrame:
    """BERTScore precision, recall and F1 of each prediction against its reference (columns P, R, F1).

    ``scorer`` (from :func:`load_scorer`) avoids reloading the model for every scenario; with
    idf it must have been built on these same ``references``. Without it one is built here.
    """
    import pandas as pd
    from bert_score.utils import sent_encode

    if len(predictions) != len(references):
        raise BertScoreError(f"{config.name}: {len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise BertScoreError(f"{config.name}: nothing to score")
    if scorer is None:
        scorer = load_scorer(config, references if config.idf else None)
    longest = max([*predictions, *references], key=len)
    if len(sent_encode(scorer._tokenizer, longest)) > config.max_length:
        raise RuntimeError(
            f"{config.name}: inputs are not truncated to {config.max_length} tokens; was the scorer built by load_scorer?"
        )
    # BERTScorer.score has its own batch_size argument (default 64) that ignores the scorer's.
    precision, recall, f1 = scorer.score(list(predictions), list(references), batch_size=config.batch_size)
    return pd.DataFrame(
        {
            "P": precision.double().numpy(),
            "R": recall.double().numpy(),
            "F1": f1.double().numpy(),
        }
    )


# --------------------------------------------------------------------------------------------
# chrF, BLEU, ROUGE-L
# --------------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)


def normalize_text(text: str) -> str:
    """NFC: a decomposed accent (o + U+0301) becomes one character, so words never split at it."""
    return unicodedata.normalize(UNICODE_NORMALIZATION, text)


def rouge_tokenize(text: str) -> list[str]:
    """Lower-cased Unicode words (``\\w+``), no stemming: "Pneumotórax à direita." -> [pneumotórax, à, direita]."""
    return _WORD.findall(normalize_text(text).lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences.

    Bit-parallel (Hyyrö 2004): one big-integer bit per token of ``a``; for each token of ``b``,
    ``U = V & M[token]; V = (V + U) | (V - U)``; the LCS length is the number of zero bits of V.
    O(len(a) * len(b) / word size), exact; tests check it against the textbook dynamic program.
    """
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for position, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << position)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_l(prediction: str, reference: str) -> tuple[float, float, float]:
    """ROUGE-L (precision, recall, F1) on :func:`rouge_tokenize` words: LCS / len(prediction), LCS / len(reference)."""
    candidate, target = rouge_tokenize(prediction), rouge_tokenize(reference)
    lcs = lcs_length(candidate, target)
    if lcs == 0:
        return 0.0, 0.0, 0.0
    precision, recall = lcs / len(candidate), lcs / len(target)
    return precision, recall, 2 * precision * recall / (precision + recall)


def _sacrebleu_metrics() -> dict[str, Any]:
    from sacrebleu.metrics import BLEU, CHRF

    return {
        "chrf": CHRF(),  # chrF2, character 6-grams, no word n-grams (chrF, not chrF++)
        # sentence BLEU needs effective order (no zero for a missing 4-gram in a short report)
        "bleu_sentence": BLEU(tokenize=BLEU_TOKENIZE, effective_order=True),
        "bleu_corpus": BLEU(tokenize=BLEU_TOKENIZE),
    }


def text_metrics(predictions: Sequence[str], references: Sequence[str]) -> pd.DataFrame:
    """Sentence-level chrF (0-100), BLEU (0-100) and ROUGE-L F1 (0-1) of each prediction (NFC texts)."""
    import pandas as pd

    metrics = _sacrebleu_metrics()
    rows = []
    for prediction, reference in zip(predictions, references, strict=True):
        hypothesis, target = normalize_text(prediction), normalize_text(reference)
        rows.append(
            {
                "chrf": metrics["chrf"].sentence_score(hypothesis, [target]).score,
                "bleu": metrics["bleu_sentence"].sentence_score(hypothesis, [target]).score,
                "rouge_l": rouge_l(hypothesis, target)[2],
            }
        )
    return pd.DataFrame(rows, columns=list(TEXT_METRICS))


def corpus_text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus-level chrF and BLEU (sacrebleu's corpus statistics, not means of sentence scores)."""
    metrics = _sacrebleu_metrics()
    hypotheses = [normalize_text(text) for text in predictions]
    targets = [[normalize_text(text) for text in references]]
    return {
        "chrf": metrics["chrf"].corpus_score(hypotheses, targets).score,
        "bleu": metrics["bleu_corpus"].corpus_score(hypotheses, targets).score,
    }


def text_metric_signatures() -> dict[str, str]:
    """sacrebleu signatures (tokenizer, smoothing, version) of the chrF and BLEU used."""
    metrics = _sacrebleu_metrics()
    signatures = {}
    for name, metric in metrics.items():
        metric.corpus_score(["a"], [["a"]])  # sacrebleu only signs a metric that has scored something
        signatures[name] = str(metric.get_signature())
    return signatures


# --------------------------------------------------------------------------------------------
# Tables, figures, report
# --------------------------------------------------------------------------------------------


def metric_columns(configs: Sequence[BertScoreConfig]) -> list[str]:
    """Per-item metric columns in order: each configuration's P/R/F1, then chrf, bleu, rouge_l."""
    return [column for config in configs for column in config.columns()] + list(TEXT_METRICS)


def summarize(per_item: pd.DataFrame, metrics: Sequence[str], scenarios: Sequence[str]) -> pd.DataFrame:
    """Per scenario and metric: mean, SD (n-1), min, q25, median, q75, max and n (non-missing items)."""
    import pandas as pd

    rows = []
    for scenario in scenarios:
        part = per_item[per_item["scenario"] == scenario]
        for metric in metrics:
            values = part[metric].dropna()
            rows.append(
                {
                    "scenario": scenario,
                    "metric": metric,
                    "mean": values.mean(),
                    "sd": values.std(),
                    "min": values.min(),
                    "q25": values.quantile(0.25),
                    "median": values.median(),
                    "q75": values.quantile(0.75),
                    "max": values.max(),
                    "n": int(values.count()),
                }
            )
    return pd.DataFrame(rows, columns=["scenario", "metric", *SUMMARY_STATS])


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_write(path) as handle:
        frame.to_csv(handle, index=False)


def write_boxplots(
    per_item: pd.DataFrame, configs: Sequence[BertScoreConfig], scenarios: Sequence[str], figures_dir: Path
) -> list[Path]:
    """``<config>_{precision,recall,f1}.png``: one box per scenario (the report's Figures 4-9)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths = []
    for config in configs:
        for part, label in SCORE_PARTS:
            column = f"{config.name}_{part}"
            data = [per_item.loc[per_item["scenario"] == scenario, column].dropna().to_numpy() for scenario in scenarios]
            figure = Figure(figsize=(max(4.0, 1.6 * len(scenarios) + 1.5), 4.2), layout="constrained")
            FigureCanvasAgg(figure)
            axes = figure.add_subplot()
            axes.boxplot(data, tick_labels=list(scenarios), showmeans=True)
            shown = {"precision": "precision", "recall": "recall", "f1": "F1"}[label]
            axes.set_ylabel(f"BERTScore {shown}" + (" (rescaled)" if config.rescale_with_baseline else ""))
            axes.set_title(f"{config.name}: {Path(config.model).name}, layer {config.num_layers}", fontsize=10)
            axes.grid(axis="y", alpha=0.3)
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=150)
            path = Path(figures_dir) / f"{config.name}_{label}.png"
            with atomic_write(path, mode="wb") as handle:
                handle.write(buffer.getvalue())
            paths.append(path)
    return paths


def _versions() -> dict[str, str | None]:
    return package_versions(("medfactory", "bert-score", "transformers", "tokenizers", "torch", "sacrebleu", "pandas"), python=True)


def _format(value: float, digits: int) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table of formatted cells, newline-terminated: a blank line follows it in the report."""
    return markdown_table(header, rows) + "\n"


def render_report(
    summary: pd.DataFrame,
    corpus: pd.DataFrame,
    settings: dict[str, Any],
    configs: Sequence[BertScoreConfig],
    figures: Sequence[Path],
    out_dir: Path,
) -> str:
    """``report.md``: settings, the summary table of every metric, corpus scores, figure links; no prose."""
    lines = ["# BERTScore and text metrics\n"]
    scenario_rows = [[name, f"`{info['predictions']}`", str(info["n"])] for name, info in settings["scenarios"].items()]
    lines += [
        "## Inputs\n",
        f"References: `{settings['references']}` ({settings['n_items']} items)\n",
        _table(["scenario", "predictions", "n"], scenario_rows),
    ]
    config_rows = [
        [
            entry["name"],
            f"`{entry['model']}`",
            str(entry["num_layers"]),
            entry["reference"],
            str(entry["max_length"]),
            "yes" if entry["idf"] else "no",
            f"yes (`{entry['baseline_path']}`)" if entry["rescale_with_baseline"] else "no",
        ]
        for entry in settings["bertscore"]
    ]
    header = ["config", "model", "layer", "reference", "max length", "idf", "rescaled"]
    lines += ["## BERTScore configurations\n", _table(header, config_rows)]
    units = {"chrf": "0-100", "bleu": "0-100", "rouge_l": "0-1"}
    for metric in summary["metric"].drop_duplicates():
        part = summary[summary["metric"] == metric]
        digits = 2 if metric in ("chrf", "bleu") else 4
        rows = [
            [row.scenario, *(_format(getattr(row, stat), digits) for stat in SUMMARY_STATS[:-1]), str(row.n)]
            for row in part.itertuples()
        ]
        unit = f" ({units[metric]})" if metric in units else ""
        lines += [f"## {metric}{unit}\n", _table(["scenario", *SUMMARY_STATS], rows)]
    if not corpus.empty:
        rows = [[row.scenario, _format(row.chrf, 2), _format(row.bleu, 2), str(row.n)] for row in corpus.itertuples()]
        lines += ["## Corpus-level chrF and BLEU (0-100)\n", _table(["scenario", "chrf", "bleu", "n"], rows)]
        signatures = settings["text_metrics"]["signatures"].items()
        lines += ["\n".join(f"- {name}: `{signature}`" for name, signature in signatures) + "\n"]
    if figures:
        lines.append("## Figures\n")
        for figure in figures:
            relative = Path(figure).relative_to(out_dir).as_posix()
            lines.append(f"![{Path(figure).stem}]({relative})\n")
    return "\n".join(lines)


def _check_configs(configs: Sequence[BertScoreConfig]) -> None:
    names = [config.name for config in configs]
    if len(set(names)) != len(names):
        raise BertScoreError(f"configuration names repeat: {names}")
    for config in configs:
        _check_config(config)


def _text_metric_frames(
    references: list[dict[str, str]], predictions: dict[str, list[dict[str, str]]]
) -> tuple[list[pd.DataFrame], list[dict[str, Any]]]:
    """Per scenario, its per-item frame (scenario, id, chrf, bleu, rouge_l) and its corpus-level row."""
    import pandas as pd

    ids = [reference["id"] for reference in references]
    targets = [reference[TEXT_REFERENCE_FIELD] for reference in references]
    frames, corpus_rows = [], []
    for scenario, rows in predictions.items():
        texts = [row["predict"] for row in rows]
        frame = pd.DataFrame({"scenario": scenario, "id": ids})
        frames.append(pd.concat([frame, text_metrics(texts, targets)], axis=1))
        corpus_rows.append({"scenario": scenario, **corpus_text_metrics(texts, targets), "n": len(texts)})
    return frames, corpus_rows


def _config_settings(config: BertScoreConfig, scorer: BERTScorer, baseline: Path | None) -> dict[str, Any]:
    """What ``settings.json`` records of one configuration: its options, the model and tokenizer loaded, the baseline."""
    original = scorer._medfactory_original_max_length
    return {
        **{key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(config).items()},
        "layer": config.num_layers,
        "model_layers": getattr(scorer._model.config, "num_hidden_layers", None),
        "tokenizer_class": type(scorer._tokenizer).__name__,
        "tokenizer_model_max_length_original": original if original < 10**9 else f"unset ({original:.0e} sentinel)",
        "baseline_path": str(baseline) if baseline is not None else None,
        "baseline_values": read_baseline(baseline, config.num_layers) if baseline is not None else None,
        "device": str(scorer.device),
        "bert_score_hash": scorer.hash,
    }


def _add_bertscore(
    frames: list[pd.DataFrame],
    references: list[dict[str, str]],
    predictions: dict[str, list[dict[str, str]]],
    config: BertScoreConfig,
    baseline: Path | None,
) -> dict[str, Any]:
    """Add one configuration's P/R/F1 columns to every scenario's frame (its model loaded once); return its settings."""
    import gc

    targets = [reference[config.reference] for reference in references]
    scorer = load_scorer(config, targets if config.idf else None)
    for frame, rows in zip(frames, predictions.values()):
        scores = score_scenario([row["predict"] for row in rows], targets, config, scorer)
        for part, _ in SCORE_PARTS:
            frame[f"{config.name}_{part}"] = scores[part].to_numpy()
    settings = _config_settings(config, scorer, baseline)
    del scorer  # free the model before the next configuration loads its own
    gc.collect()
    return settings


def _scenario_settings(
    scenarios: dict[str, Path], references: list[dict[str, str]], predictions: dict[str, list[dict[str, str]]]
) -> dict[str, Any]:
    return {
        name: {
            "predictions": str(scenarios[name]),
            "n": len(rows),
            # informational alignment check: how many LLaMA-Factory labels equal report_pt
            "labels_equal_report_pt": sum(
                row["label"].strip() == reference[TEXT_REFERENCE_FIELD].strip() for row, reference in zip(rows, references)
            ),
        }
        for name, rows in predictions.items()
    }


def _text_metric_settings() -> dict[str, Any]:
    return {
        "reference": TEXT_REFERENCE_FIELD,
        "unicode_normalization": UNICODE_NORMALIZATION,
        "chrf": "sacrebleu CHRF() sentence_score / corpus_score, 0-100",
        "bleu": f"sacrebleu BLEU(tokenize={BLEU_TOKENIZE!r}); sentence level with effective_order=True, 0-100",
        "rouge_l": "F1 of LCS on lower-cased \\w+ words (re.UNICODE), no stemming, 0-1",
        "signatures": text_metric_signatures(),
    }


def write_outputs(
    out_dir: Path,
    tables: dict[str, pd.DataFrame],
    settings: dict[str, Any],
    configs: Sequence[BertScoreConfig],
    scenarios: Sequence[str],
) -> Path:
    """The CSV tables (``per_item``, ``summary``, ``corpus``), the figures, ``settings.json``, then ``report.md``; its path."""
    out_dir = Path(out_dir)
    _write_csv(tables["per_item"], out_dir / PER_ITEM_CSV)
    _write_csv(tables["summary"], out_dir / SUMMARY_CSV)
    _write_csv(tables["corpus"], out_dir / CORPUS_CSV)
    figures = write_boxplots(tables["per_item"], configs, scenarios, out_dir / FIGURES_DIR)
    write_json_atomic(out_dir / SETTINGS_JSON, settings)
    report = out_dir / REPORT_MD
    with atomic_write(report) as handle:
        handle.write(render_report(tables["summary"], tables["corpus"], settings, configs, figures, out_dir))
    return report


def evaluate(
    scenarios: dict[str, Path],
    references_path: Path,
    out_dir: Path,
    configs: list[BertScoreConfig],
) -> Path:
    """Score every scenario with every BERTScore configuration and the text metrics; write ``out_dir``.

    Everything is validated (inputs, row counts, baselines) before any model is loaded. Each
    model is loaded once and scores all scenarios; with idf, its weights come from that
    configuration's references (the whole test set), as ``bert_score.score`` computes them.
    Returns the path of ``report.md`` (written last).
    """
    import pandas as pd

    _check_configs(configs)
    fields = sorted({TEXT_REFERENCE_FIELD, *(config.reference for config in configs)})
    references, predictions = load_inputs(scenarios, references_path, fields)
    baselines = {config.name: resolve_baseline(config) for config in configs}  # fail before loading

    frames, corpus_rows = _text_metric_frames(references, predictions)
    config_settings = [_add_bertscore(frames, references, predictions, config, baselines[config.name]) for config in configs]

    columns = metric_columns(configs)
    per_item = pd.concat(frames, ignore_index=True)[["scenario", "id", *columns]]
    tables = {
        "per_item": per_item,
        "summary": summarize(per_item, columns, list(predictions)),
        "corpus": pd.DataFrame(corpus_rows, columns=["scenario", "chrf", "bleu", "n"]),
    }
    settings = {
        "references": str(references_path),
        "n_items": len(references),
        "scenarios": _scenario_settings(scenarios, references, predictions),
        "bertscore": config_settings,
        "text_metrics": _text_metric_settings(),
        "versions": _versions(),
    }
    return write_outputs(out_dir, tables, settings, configs, list(predictions))


# --------------------------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------------------------


def _check_baseline_options(
    rescale: bool, baseline_path: Path | None, xlmr_baseline_path: Path | None, skip_bertimbau: bool, skip_xlmr: bool
) -> None:
    """A baseline path only with --rescale, and only for a configuration that runs."""
    if not rescale and (baseline_path is not None or xlmr_baseline_path is not None):
        raise BertScoreError("a baseline path was given without --rescale; add --rescale or drop the baseline path")
    if skip_bertimbau and baseline_path is not None:
        raise BertScoreError("--baseline-path is the Portuguese model's baseline, but --skip-bertimbau leaves it out")
    if skip_xlmr and xlmr_baseline_path is not None:
        raise BertScoreError("--xlmr-baseline-path was given with --skip-xlmr")


def _echo_means(summary_csv: Path, configs: Sequence[BertScoreConfig], scenarios: list[str]) -> None:
    """Print each scenario's mean BERTScore F1 and text metrics, read back from ``summary.csv``."""
    import pandas as pd

    summary = pd.read_csv(summary_csv)
    means = summary.pivot(index="scenario", columns="metric", values="mean")
    shown = [column for column in metric_columns(configs) if column.endswith("_F1")] + list(TEXT_METRICS)
    means = means.loc[scenarios, shown]
    typer.echo(f"{len(means)} scenario(s) x {int(summary['n'].max())} items; means:")
    typer.echo(means.to_string(float_format=lambda value: f"{value:.4f}"))


def bertscore_command(
    scenario: Annotated[
        list[str],
        typer.Option("--scenario", "-s", help="name=path/generated_predictions.jsonl; repeat once per scenario, in plot order"),
    ],
    references: Annotated[Path, typer.Option(help="test_references.jsonl: {id, report_pt, report_en}, in test-set row order")],
    out_dir: Annotated[Path, typer.Option(help="Output folder (per_item.csv, summary.csv, settings.json, figures/, report.md)")],
    pt_model: Annotated[str, typer.Option(help="Portuguese BERTScore model: hub name or local folder")] = BERTIMBAU.model,
    pt_layers: Annotated[
        int, typer.Option(min=0, help="Layer of the Portuguese model (9: bert-score's choice for BERT-base models)")
    ] = BERTIMBAU.num_layers,
    xlmr_model: Annotated[
        str, typer.Option(help="Cross-lingual model (English reference vs Portuguese output): hub name or local folder")
    ] = XLMR.model,
    xlmr_layers: Annotated[
        int, typer.Option(min=0, help="Layer of the cross-lingual model (17: bert-score's default for XLM-R large)")
    ] = XLMR.num_layers,
    idf: Annotated[
        bool, typer.Option("--idf/--no-idf", help="idf-weight word pieces (weights from the test references)")
    ] = False,
    rescale: Annotated[
        bool, typer.Option("--rescale/--no-rescale", help="Rescale with a baseline: (x - b) / (1 - b)")
    ] = False,
    baseline_path: Annotated[
        Path | None, typer.Option(help="Baseline CSV (LAYER,P,R,F) of the Portuguese model; bert-score ships none for BERTimbau")
    ] = None,
    xlmr_baseline_path: Annotated[
        Path | None,
        typer.Option(help="Baseline CSV of the cross-lingual model; default: bert-score's pt baseline for xlm-roberta-large"),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="BERTScore batch size")] = 16,
    max_length: Annotated[int, typer.Option(min=2, help="Truncate both texts to this many word pieces")] = 512,
    device: Annotated[str | None, typer.Option(help="torch device; default: cuda if available, else cpu")] = None,
    skip_xlmr: Annotated[bool, typer.Option("--skip-xlmr", help="Leave out the cross-lingual configuration")] = False,
    skip_bertimbau: Annotated[bool, typer.Option("--skip-bertimbau", help="Leave out the Portuguese configuration")] = False,
) -> None:
    """BERTScore (BERTimbau vs report_pt, XLM-R large vs report_en), chrF, BLEU and ROUGE-L per scenario."""
    try:
        _check_baseline_options(rescale, baseline_path, xlmr_baseline_path, skip_bertimbau, skip_xlmr)
        common = {
            "idf": idf,
            "rescale_with_baseline": rescale,
            "batch_size": batch_size,
            "max_length": max_length,
            "device": device,
        }
        configs = []
        if not skip_bertimbau:
            configs.append(replace(BERTIMBAU, model=pt_model, num_layers=pt_layers, baseline_path=baseline_path, **common))
        if not skip_xlmr:
            configs.append(
                replace(XLMR, model=xlmr_model, num_layers=xlmr_layers, baseline_path=xlmr_baseline_path, **common)
            )
        report = evaluate(parse_scenarios(scenario), references, out_dir, configs)
    except (ValueError, OSError) as error:  # BertScoreError / BaselineError, unreadable model or file
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error

    _echo_means(Path(out_dir) / SUMMARY_CSV, configs, list(parse_scenarios(scenario)))
    typer.echo(f"report written to {report}")
