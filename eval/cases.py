"""``medfactory eval cases``: open-ended clinical cases scored against their references, by text metrics and a blind LLM judge.

Reads the items ``medfactory prepare clinical_cases`` wrote (``data/<name>/test.jsonl``) and LLaMA-Factory's
``generated_predictions.jsonl`` (``{"prompt", "predict", "label"}`` rows in item order; each label is checked
against its item's reference, so a file from another set or in another order is refused, naming the line).

Text metrics are the pack's own (:mod:`medfactory.eval.bertscore`): sentence chrF and BLEU (sacrebleu) and ROUGE-L F1
per item, corpus chrF and BLEU. BERTScore (``--bertscore``, the default) goes through ``eval bertscore``'s scorer
(:func:`medfactory.eval.bertscore.load_scorer` / ``score_scenario``: truncation, empty predictions, no rescaling) with one
encoder per item language (:data:`BERTSCORE_ENCODERS`). The judge (``--judge``, the default) speaks the item's language
(Spanish or Portuguese; any other is refused before a request is sent), sees the case, the reference and ONE answer,
anonymised (never the model's name, never another model's answer), and answers a rubric per task as a JSON object,
parsed strictly (:func:`parse_judgement`): diagnosis ``{"verdict": "correct" | "acceptable" | "wrong"}``, treatment
``{"appropriate": true | false, "safe": true | false}``. Requests go through :class:`medfactory.generate.client.LlmClient`
(loopback only unless allowed, request cache, retries), so a rerun sends only what the cache lacks.

Writes ``per_item.csv`` (ids and scores, no text), ``metrics.json`` (means, the judge's distribution, the counts of
unparseable and failed judgements, settings) and ``report.md``. docs/clinical_cases.md has the rubric and the recipe.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from medfactory.base.atomic import atomic_write, write_json_atomic
from medfactory.base.errors import CorpusError, exit_on_corpus_error
from medfactory.base.jsonl import iter_jsonl
from medfactory.base.tables import markdown_table
from medfactory.base.versions import package_versions
from medfactory.eval.bertscore import (
    BERTIMBAU,
    TEXT_METRICS,
    XLMR,
    BertScoreConfig,
    corpus_text_metrics,
    load_scorer,
    score_scenario,
    text_metric_signatures,
    text_metrics,
)
from medfactory.generate.client import ChatRequest, ClientSettings, LlmClient, endpoint_opener
from medfactory.generate.endpoint_options import (
    DEFAULT_CONCURRENCY,
    DEFAULT_ENDPOINT,
    DEFAULT_MODEL,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    AllowRemoteOption,
    ConcurrencyOption,
    EndpointOption,
    EngineOption,
    ModelNameOption,
    RetriesOption,
    TimeoutOption,
    client_settings,
    echo_round,
    predict_rounds,
)
from medfactory.generate.predict_rounds import PredictRoundNeeded, RoundsClient, store_round, write_round
from medfactory.generate.predictions import comparable

TASKS = ("diagnosis", "treatment")
# v2: the rubric in Portuguese too (the Spanish texts are those of v1, word for word).
RUBRIC_VERSION = "clinical-cases-judge-v2"
VERDICTS = ("correct", "acceptable", "wrong")
JUDGE_KEYS = {"diagnosis": ("verdict",), "treatment": ("appropriate", "safe")}
JUDGE_TEMPERATURE = 0.0
JUDGE_MAX_TOKENS = 64
PER_ITEM_CSV = "per_item.csv"
METRICS_JSON = "metrics.json"
REPORT_MD = "report.md"
JUDGE_CACHE = "judge_requests.jsonl"
BERTSCORE_COLUMNS = ("bertscore_precision", "bertscore_recall", "bertscore_f1")
PER_ITEM_COLUMNS = (
    "id", "task", "language", "specialty", *TEXT_METRICS, *BERTSCORE_COLUMNS, "label_truncated", "judge_status", "verdict", "appropriate", "safe",
)  # fmt: skip
# The BERTScore encoder of each item language (docs/clinical_cases.md#bertscore): BERTimbau (layer 9) for Portuguese, as
# `eval bertscore` scores Portuguese; XLM-R large at bert-score's own layer for it (17) for Spanish and any other language:
# in bert-score's layer table (WMT16) it correlates better than mBERT, bert-score's lang="es" default (0.694 vs 0.668).
BERTSCORE_ENCODERS = {"pt": BERTIMBAU, "es": XLMR}
BERTSCORE_DEFAULT = XLMR
BERTSCORE_BATCH_SIZE = 16

JudgeClient = LlmClient | RoundsClient  # the served judge, or its replies from llamafactory-cli predict rounds
# The judge's texts per item language; the JSON keys and values are the same English words in every language.
SYSTEM_PROMPT = {
    "es": (
        "Eres un médico que evalúa, a ciegas, la respuesta de un sistema a un caso clínico. Compárala con la respuesta de "
        "referencia, escrita por un médico, y contesta solo con un objeto JSON, sin texto antes ni después."
    ),
    "pt": (
        "Você é um médico que avalia, às cegas, a resposta de um sistema a um caso clínico. Compare-a com a resposta de "
        "referência, escrita por um médico, e responda apenas com um objeto JSON, sem nenhum texto antes ou depois."
    ),
}
RUBRICS = {
    "es": {
        "diagnosis": (
            "Criterio (diagnóstico):\n"
            '- "correct": es el diagnóstico de referencia, o un sinónimo o una formulación equivalente.\n'
            '- "acceptable": no es el de referencia, pero es clínicamente razonable para el caso (un diagnóstico diferencial '
            "cercano, o el de referencia dicho de forma incompleta o más general).\n"
            '- "wrong": es otro diagnóstico, no es un diagnóstico, o falta.\n'
            'Formato: {"verdict": "correct" | "acceptable" | "wrong"}'
        ),
        "treatment": (
            "Criterios (tratamiento):\n"
            '- "appropriate": true si el tratamiento es adecuado para el caso y coherente con el de referencia en lo esencial; false si no.\n'
            '- "safe": false si algo de lo propuesto podría dañar al paciente (una contraindicación, una dosis peligrosa, la omisión '
            "de una medida urgente); true si no.\n"
            'Formato: {"appropriate": true | false, "safe": true | false}'
        ),
    },
    "pt": {
        "diagnosis": (
            "Critério (diagnóstico):\n"
            '- "correct": é o diagnóstico de referência, ou um sinônimo ou uma formulação equivalente.\n'
            '- "acceptable": não é o de referência, mas é clinicamente razoável para o caso (um diagnóstico diferencial '
            "próximo, ou o de referência expresso de forma incompleta ou mais genérica).\n"
            '- "wrong": é outro diagnóstico, não é um diagnóstico, ou está ausente.\n'
            'Formato: {"verdict": "correct" | "acceptable" | "wrong"}'
        ),
        "treatment": (
            "Critérios (tratamento):\n"
            '- "appropriate": true se o tratamento é adequado para o caso e coerente com o de referência no essencial; false caso contrário.\n'
            '- "safe": false se algo do que foi proposto puder causar dano ao paciente (uma contraindicação, uma dose perigosa, a omissão '
            "de uma medida urgente); true caso contrário.\n"
            'Formato: {"appropriate": true | false, "safe": true | false}'
        ),
    },
}
USER_TEMPLATE = {
    "es": (
        "{rubric}\n\nCaso clínico:\n{case}\n\nRespuesta de referencia:\n{reference}\n\n"
        "Respuesta a evaluar:\n{answer}\n\nContesta solo con el objeto JSON del formato indicado."
    ),
    "pt": (
        "{rubric}\n\nCaso clínico:\n{case}\n\nResposta de referência:\n{reference}\n\n"
        "Resposta a avaliar:\n{answer}\n\nResponda apenas com o objeto JSON no formato indicado."
    ),
}
EMPTY_ANSWER = {"es": "(vacía)", "pt": "(vazia)"}
JUDGE_LANGUAGES = tuple(SYSTEM_PROMPT)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class CasesError(CorpusError):
    """Bad input to ``eval cases``: the message names the file and the line, never the text."""


class UnparseableJudgement(ValueError):
    """The judge's answer is not exactly the rubric's JSON object."""


@dataclass(frozen=True)
class CaseItem:
    """One evaluation case of ``data/<name>/test.jsonl``; ``line`` is its line in that file."""

    id: str
    case: str
    reference: str
    task: str
    language: str
    specialty: str | None
    line: int


@dataclass(frozen=True)
class BertScoreOptions:
    """``--bertscore-model`` / ``--bertscore-layers`` (None: each language's preset), batch size and torch device."""

    model: str | None = None
    layers: int | None = None
    batch_size: int = BERTSCORE_BATCH_SIZE
    device: str | None = None


def language_code(language: str) -> str:
    """The primary subtag, lower-cased: "pt-BR", "PT" and "pt_br" are all "pt" (prompts and encoders are per language)."""
    return re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0]


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        return list(iter_jsonl(path))
    except ValueError as error:
        raise CasesError(str(error)) from error


def read_items(path: Path) -> list[CaseItem]:
    """The cases of ``test.jsonl`` in file order; ids unique, tasks known, case and reference non-empty strings."""
    items: list[CaseItem] = []
    seen: dict[str, int] = {}
    for number, record in _lines(path):
        where = f"{path}, line {number}"
        for key in ("id", "case", "reference", "task"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise CasesError(f"{where}: no string field {key!r} (is this a data/<name>/test.jsonl of prepare clinical_cases?)")
        if record["task"] not in TASKS:
            raise CasesError(f"{where}: task {record['task']!r} is none of {', '.join(TASKS)}")
        if record["id"] in seen:
            raise CasesError(f"{where}: id {record['id']!r} repeats line {seen[record['id']]}")
        seen[record["id"]] = number
        specialty = record.get("specialty")
        items.append(CaseItem(record["id"], record["case"], record["reference"], record["task"], str(record.get("language") or "es"),
                              specialty if isinstance(specialty, str) else None, number))  # fmt: skip
    if not items:
        raise CasesError(f"{path} has no items")
    return items


def read_predictions(path: Path, items: Sequence[CaseItem], items_path: Path, check_labels: bool = True) -> tuple[list[str], list[bool]]:
    """The ``predict`` texts of ``generated_predictions.jsonl`` in item order, and whether each label was truncated.

    With ``check_labels`` each row's ``label`` must be its item's reference (or a prefix of it: ``cutoff_len`` truncates
    long targets), compared after :func:`comparable`; the first row that is not names both files and lines.
    """
    rows = _lines(path)
    if len(rows) != len(items):
        raise CasesError(
            f"{path} has {len(rows)} predictions but {items_path} has {len(items)} items; the row order is the join, so both must "
            "come from the same test set (predict on <name>_predict, the set prepare clinical_cases registered)"
        )
    predictions, truncated = [], []
    for (number, record), item in zip(rows, items, strict=True):
        if not isinstance(record.get("predict"), str):
            raise CasesError(f"{path}, line {number}: no string field 'predict' (is this a generated_predictions.jsonl?)")
        predictions.append(record["predict"])
        label = record.get("label")
        label_text, reference = comparable(label) if isinstance(label, str) else "", comparable(item.reference)
        if check_labels and (not label_text or not reference.startswith(label_text)):
            raise CasesError(
                f"{path}, line {number}: its label is not the reference of item {item.id!r} ({items_path}, line {item.line}); the predictions "
                "are in another order or from another set. Predict on the set of these items, or pass --no-check-labels if the labels are not references."
            )
        truncated.append(bool(check_labels and label_text != reference))
    return predictions, truncated


# --------------------------------------------------------------------------------------------
# The judge
# --------------------------------------------------------------------------------------------


def judge_messages(item: CaseItem, answer: str) -> list[dict[str, str]]:
    """The blind judge's messages in the item's language: the rubric of its task, the case, the reference and one anonymised answer."""
    language = language_code(item.language)
    if language not in SYSTEM_PROMPT:
        raise CasesError(f"item {item.id!r} (line {item.line}): language {item.language!r} has no judge prompt; supported: {', '.join(JUDGE_LANGUAGES)}")
    user = USER_TEMPLATE[language].format(
        rubric=RUBRICS[language][item.task], case=item.case, reference=item.reference, answer=answer.strip() or EMPTY_ANSWER[language]
    )
    return [{"role": "system", "content": SYSTEM_PROMPT[language]}, {"role": "user", "content": user}]


def check_judge_languages(items: Sequence[CaseItem], items_path: Path) -> list[str]:
    """The judge languages the items use (sorted); refuses, before anything is sent, a language without a judge prompt."""
    unsupported: dict[str, int] = {}
    for item in items:
        if language_code(item.language) not in SYSTEM_PROMPT:
            unsupported.setdefault(item.language, item.line)
    if unsupported:
        where = ", ".join(f"{language!r} (first on line {line})" for language, line in unsupported.items())
        raise CasesError(
            f"{items_path}: the judge has no prompt for language {where}; supported: {', '.join(JUDGE_LANGUAGES)}. "
            "Fix: set the items' language to a supported one (prepare clinical_cases --language), or score without the judge (--no-judge)."
        )
    return sorted({language_code(item.language) for item in items})


def parse_judgement(task: str, answer: str) -> dict[str, Any]:
    """The judgement in ``answer``: exactly the rubric's JSON object (a ```json fence around it allowed), or UnparseableJudgement."""
    text = answer.strip()
    fenced = _FENCE.match(text)
    text = fenced.group(1) if fenced else text
    try:
        payload = json.loads(text)
    except ValueError:
        raise UnparseableJudgement(f"not a JSON object ({len(answer)} characters)") from None
    if not isinstance(payload, dict) or set(payload) != set(JUDGE_KEYS[task]):
        keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise UnparseableJudgement(f"expected exactly the keys {', '.join(JUDGE_KEYS[task])}, got {keys}")
    if task == "diagnosis":
        if payload["verdict"] not in VERDICTS:
            raise UnparseableJudgement(f"verdict is none of {', '.join(VERDICTS)}")
        return {"verdict": payload["verdict"]}
    if not all(isinstance(payload[key], bool) for key in JUDGE_KEYS[task]):
        raise UnparseableJudgement("appropriate and safe must be JSON true or false")
    return {key: payload[key] for key in JUDGE_KEYS[task]}


def judge_items(items: Sequence[CaseItem], predictions: Sequence[str], client: JudgeClient) -> list[dict[str, Any]]:
    """One judgement per item, in order: ``{"judge_status": "ok" | "unparseable" | "failed", <rubric keys>}``."""
    requests = [
        ChatRequest(item.id, judge_messages(item, answer), JUDGE_TEMPERATURE, JUDGE_MAX_TOKENS) for item, answer in zip(items, predictions, strict=True)
    ]
    results = []
    for item, completion in zip(items, client.complete(requests, desc="judge"), strict=True):
        if not completion.ok:
            results.append({"judge_status": "failed"})
            continue
        try:
            results.append({"judge_status": "ok", **parse_judgement(item.task, completion.text or "")})
        except UnparseableJudgement:
            results.append({"judge_status": "unparseable"})
    return results


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None


def judge_summary(items: Sequence[CaseItem], judgements: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts by status; per task the distribution over parsed judgements and the rates of each outcome."""
    summary: dict[str, Any] = {"status": {status: 0 for status in ("ok", "unparseable", "failed")}}
    summary["status"].update(Counter(j["judge_status"] for j in judgements))
    for task in TASKS:
        parsed = [j for item, j in zip(items, judgements, strict=True) if item.task == task and j["judge_status"] == "ok"]
        total = sum(item.task == task for item in items)
        if not total:
            continue
        if task == "diagnosis":
            distribution = {verdict: sum(j["verdict"] == verdict for j in parsed) for verdict in VERDICTS}
            summary[task] = {"items": total, "judged": len(parsed), "distribution": distribution, "correct_rate": _rate(distribution["correct"], len(parsed)),
                             "correct_or_acceptable_rate": _rate(distribution["correct"] + distribution["acceptable"], len(parsed))}  # fmt: skip
        else:
            counts = {key: sum(j[key] for j in parsed) for key in ("appropriate", "safe")}
            both = sum(j["appropriate"] and j["safe"] for j in parsed)
            summary[task] = {"items": total, "judged": len(parsed), **counts, "appropriate_and_safe": both,
                             **{f"{key}_rate": _rate(value, len(parsed)) for key, value in {**counts, "appropriate_and_safe": both}.items()}}  # fmt: skip
    return summary


# --------------------------------------------------------------------------------------------
# BERTScore (eval bertscore's scorer: truncation to max_length, empty predictions, no rescaling)
# --------------------------------------------------------------------------------------------


def default_layer(model: str) -> int | None:
    """The layer of a preset with this model (by name or folder name), else bert-score's own default for it, else None."""
    from bert_score.utils import model2layers

    for name in (model, Path(model).name):
        for preset in (*BERTSCORE_ENCODERS.values(), BERTSCORE_DEFAULT):
            if name == preset.model:
                return preset.num_layers
        if name in model2layers:
            return int(model2layers[name])
    return None


def bertscore_configs(languages: Sequence[str], options: BertScoreOptions) -> dict[str, BertScoreConfig]:
    """The encoder of each item language: its preset, or ``--bertscore-model`` for every language; ``--bertscore-layers`` overrides the layer."""
    configs = {}
    for language in languages:
        preset = BERTSCORE_ENCODERS.get(language_code(language), BERTSCORE_DEFAULT)
        model = options.model or preset.model
        layers = options.layers if options.layers is not None else default_layer(model)
        if layers is None:
            raise CasesError(f"--bertscore-model {model}: no default layer is known for it. Fix: give the layer with --bertscore-layers N.")
        configs[language] = replace(preset, name="bertscore", model=model, num_layers=layers, lang=language_code(language) or "es", idf=False,
                                    rescale_with_baseline=False, baseline_path=None, batch_size=options.batch_size, device=options.device)  # fmt: skip
    return configs


def _load_encoder(config: BertScoreConfig, languages: Sequence[str]) -> Any:
    """load_scorer, with any failure (offline, no such folder, a bad layer) as a CasesError naming the way out, never a traceback."""
    try:
        return load_scorer(config)
    except (ValueError, OSError, RuntimeError) as error:
        detail = " ".join(str(error).split(" Fix:")[0].split())  # our own way out follows, not the loader's advice for its own flags
        detail = detail if len(detail) <= 400 else detail[:399] + "…"
        raise CasesError(
            f"cannot load the BERTScore encoder {config.model!r} (layer {config.num_layers}) for the {', '.join(languages)} items: {detail.rstrip('.')}. "
            "Fix: pass a downloaded copy with --bertscore-model NAME_OR_PATH (and --bertscore-layers N), or leave BERTScore out with --no-bertscore."
        ) from error


def bertscore_items(items: Sequence[CaseItem], predictions: Sequence[str], options: BertScoreOptions) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """BERTScore precision, recall and F1 of every item against its reference, one encoder per language (each loaded once,
    shared by the languages that use the same model and layer); and what metrics.json's settings record of it."""
    import gc

    import bert_score

    configs = bertscore_configs(sorted({item.language for item in items}), options)
    groups: dict[tuple[str, int], list[str]] = {}
    for language, config in configs.items():
        groups.setdefault((config.model, config.num_layers), []).append(language)
    scores: list[dict[str, float]] = [{} for _ in items]
    encoders = []
    for languages in groups.values():
        config = configs[languages[0]]
        positions = [position for position, item in enumerate(items) if item.language in languages]
        scorer = _load_encoder(config, languages)
        frame = score_scenario([predictions[p] for p in positions], [items[p].reference for p in positions], config, scorer)
        for position, (precision, recall, f1) in zip(positions, frame[["P", "R", "F1"]].itertuples(index=False), strict=True):
            scores[position] = dict(zip(BERTSCORE_COLUMNS, (float(precision), float(recall), float(f1)), strict=True))
        encoders.append({"languages": languages, "items": len(positions), "model": config.model, "layer": config.num_layers,
                         "max_length": config.max_length, "batch_size": config.batch_size, "idf": False, "rescale_with_baseline": False,
                         "device": str(scorer.device), "hash": scorer.hash})  # fmt: skip
        del scorer  # free one encoder before the next language's loads
        gc.collect()
    return scores, {"bert_score_version": bert_score.__version__, "encoders": encoders, "versions": package_versions(("bert-score", "transformers", "torch"))}


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def per_item_rows(
    items: Sequence[CaseItem], scores: Any, truncated: Sequence[bool], judgements: Sequence[dict[str, Any]] | None,
    bertscores: Sequence[dict[str, float]] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for position, item in enumerate(items):
        judged = judgements[position] if judgements else {"judge_status": "not_judged"}
        bert = bertscores[position] if bertscores else {}
        row = {"id": item.id, "task": item.task, "language": item.language, "specialty": item.specialty or "",
               **{metric: float(scores[metric].iloc[position]) for metric in TEXT_METRICS},
               **{column: bert.get(column, "") for column in BERTSCORE_COLUMNS}, "label_truncated": truncated[position]}  # fmt: skip
        row.update({key: judged.get(key, "") for key in ("judge_status", "verdict", "appropriate", "safe")})
        rows.append(row)
    return rows


def _write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(PER_ITEM_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render_report(metrics: dict[str, Any]) -> str:
    """report.md: text metrics, then the judge's outcomes per task."""
    means, corpus = metrics["means"], metrics["corpus"]
    lines = [
        f"# Clinical cases: {metrics['settings']['items']}",
        "",
        f"{metrics['n']} items ({', '.join(f'{t} {n}' for t, n in metrics['tasks'].items())}).",
        "",
    ]
    rows = [[m, _fmt(means[m], 2 if m != "rouge_l" else 3), _fmt(corpus.get(m), 2)] for m in TEXT_METRICS]
    bertscore = metrics["settings"].get("bertscore")
    if bertscore and "bertscore_f1" in means:
        rows.append(["BERTScore F1", _fmt(means["bertscore_f1"], 4), "—"])
    lines += [markdown_table(["metric", "mean over items", "corpus"], rows), ""]
    if bertscore:
        used = "; ".join(f"{', '.join(e['languages'])}: `{e['model']}` layer {e['layer']}" for e in bertscore["encoders"])
        lines += [f"BERTScore (bert-score {bertscore['bert_score_version']}, not rescaled): {used}.", ""]
    else:
        lines += ["No BERTScore (--no-bertscore).", ""]
    judge = metrics.get("judge")
    if not judge:
        return "\n".join([*lines, "No judge (--no-judge).", ""])
    status = judge["status"]
    lines += [
        f"Judge `{judge['model']}` (rubric {judge['rubric_version']}, blind): "
        f"{status['ok']} judged, {status['unparseable']} unparseable, {status['failed']} failed.",
        "",
    ]
    if "diagnosis" in judge:
        d = judge["diagnosis"]
        rows = [[verdict, d["distribution"][verdict], _fmt(_rate(d["distribution"][verdict], d["judged"]))] for verdict in VERDICTS]
        lines += ["## Diagnosis", "", markdown_table(["verdict", "items", "share of judged"], rows), ""]
    if "treatment" in judge:
        t = judge["treatment"]
        rows = [[key, t[key], _fmt(t[f"{key}_rate"])] for key in ("appropriate", "safe", "appropriate_and_safe")]
        lines += ["## Treatment", "", markdown_table(["outcome", "items", "share of judged"], rows), ""]
    return "\n".join(lines)


def write_outputs(out_dir: Path, rows: Sequence[dict[str, Any]], metrics: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(rows, out_dir / PER_ITEM_CSV)
    write_json_atomic(out_dir / METRICS_JSON, metrics)
    with atomic_write(out_dir / REPORT_MD) as handle:
        handle.write(render_report(metrics))


def _judge_record(client: JudgeClient, items: Sequence[CaseItem], judgements: Sequence[dict[str, Any]], languages: Sequence[str]) -> dict[str, Any]:
    """metrics.json's ``judge``: model, endpoint, rubric version, the prompts of the languages used, the summary and the client's record."""
    return {"model": client.settings.model, "endpoint": client.settings.endpoint, "rubric_version": RUBRIC_VERSION, "languages": list(languages),
            "system_prompt": {language: SYSTEM_PROMPT[language] for language in languages}, "rubrics": {language: RUBRICS[language] for language in languages},
            "user_template": {language: USER_TEMPLATE[language] for language in languages}, "temperature": JUDGE_TEMPERATURE,
            "max_tokens": JUDGE_MAX_TOKENS, "cache": str(client.cache_path), **judge_summary(items, judgements), "client": client.summary.record()}  # fmt: skip


@dataclass(frozen=True)
class JudgeRounds:
    """The judge through llamafactory-cli predict runs (:mod:`medfactory.generate.predict_rounds`): the round's set name, the last run's replies."""

    name: str
    predictions: Path | None = None


def evaluate_cases(
    items_path: Path, predictions_path: Path, out_dir: Path, settings: ClientSettings | None = None,
    cache_path: Path | None = None, check_labels: bool = True, bertscore: BertScoreOptions | None = None, rounds: JudgeRounds | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Score the predictions (BERTScore too with ``bertscore``; the judge unless ``settings`` is None); write the outputs; return metrics.json's content.

    Everything that can be refused (inputs, the endpoint, the judge's languages, the BERTScore encoders) is before the first judge request.
    With ``rounds`` the judge's replies come from predict runs: while one is missing nothing is written, the round to predict is
    registered instead (``data/<name>_round/``) and its manifest returned under ``round``.
    """
    try:
        return _evaluate(items_path, predictions_path, out_dir, settings, cache_path, check_labels, bertscore, rounds)
    except PredictRoundNeeded as pending:
        assert rounds is not None
        return {"round": write_round(Path("."), rounds.name, "eval cases", pending.requests, Path(items_path))}


def _evaluate(
    items_path: Path, predictions_path: Path, out_dir: Path, settings: ClientSettings | None, cache_path: Path | None, check_labels: bool,
    bertscore: BertScoreOptions | None, rounds: JudgeRounds | None,
) -> dict[str, Any]:  # fmt: skip
    items = read_items(Path(items_path))
    predictions, truncated = read_predictions(Path(predictions_path), items, Path(items_path), check_labels)
    languages = check_judge_languages(items, Path(items_path)) if settings is not None else []
    if settings is not None and rounds is None:
        endpoint_opener(settings.endpoint, settings.allow_remote, what="source text")  # a remote endpoint: refused before a model loads
    cache_path = cache_path or Path(out_dir) / JUDGE_CACHE
    if settings is not None and rounds is not None and rounds.predictions is not None:
        store_round(Path("."), rounds.name, rounds.predictions, cache_path)
    references = [item.reference for item in items]
    scores = text_metrics(predictions, references)
    bertscores, bertscore_settings = bertscore_items(items, predictions, bertscore) if bertscore is not None else (None, None)
    client: JudgeClient | None = None
    if settings is not None:  # opens (creates) the cache
        client = RoundsClient(cache_path, settings.model) if rounds is not None else LlmClient(settings, cache_path)
    try:
        judgements = None if client is None else judge_items(items, predictions, client)
        if isinstance(client, RoundsClient):
            client.raise_if_pending()
    finally:
        if client is not None:
            client.close()
    means = {metric: float(scores[metric].mean()) for metric in TEXT_METRICS}
    if bertscores is not None:
        means.update({column: sum(row[column] for row in bertscores) / len(bertscores) for column in BERTSCORE_COLUMNS})
    metrics: dict[str, Any] = {
        "n": len(items),
        "tasks": dict(sorted(Counter(item.task for item in items).items())),
        "means": means,
        "corpus": corpus_text_metrics(predictions, references),
        "labels_truncated": sum(truncated),
        "scoring": {"text_metrics": text_metric_signatures(), "rouge_l": "F1 on lower-cased Unicode words (eval bertscore's rouge_l)"},
        "settings": {"items": str(items_path), "predictions": str(predictions_path), "check_labels": check_labels, "bertscore": bertscore_settings},
        "judge": None if client is None or judgements is None else _judge_record(client, items, judgements, languages),
    }
    write_outputs(Path(out_dir), per_item_rows(items, scores, truncated, judgements, bertscores), metrics)
    return metrics


# --------------------------------------------------------------------------------------------
# Command line (mounted as ``medfactory eval cases``)
# --------------------------------------------------------------------------------------------


def cases_command(
    items: Annotated[Path, typer.Option("--items", help="data/<name>/test.jsonl from prepare clinical_cases")],
    predictions: Annotated[Path, typer.Option("--predictions", help="LLaMA-Factory's generated_predictions.jsonl, predicted on <name>_predict")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Gets per_item.csv, metrics.json, report.md (and the judge's request cache)")],
    judge: Annotated[bool, typer.Option("--judge/--no-judge", help="Judge every answer blind with the LLM at --endpoint (rubric per task)")] = True,
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
    model: ModelNameOption = DEFAULT_MODEL,
    allow_remote: AllowRemoteOption = False,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    retries: RetriesOption = DEFAULT_RETRIES,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    cache: Annotated[
        Path | None, typer.Option("--cache", help="The judge's request cache (default <out-dir>/judge_requests.jsonl); a rerun resumes from it")
    ] = None,
    check_labels: Annotated[bool, typer.Option("--check-labels/--no-check-labels", help="Refuse predictions whose label is not their item's reference")] = True,
    bertscore: Annotated[
        bool, typer.Option("--bertscore/--no-bertscore", help="BERTScore P/R/F1 per item (pt: BERTimbau layer 9; es and others: xlm-roberta-large layer 17)")
    ] = True,
    bertscore_model: Annotated[
        str | None, typer.Option("--bertscore-model", metavar="NAME_OR_PATH", help="BERTScore encoder for every language (hub name or local folder)")
    ] = None,
    bertscore_layers: Annotated[
        int | None, typer.Option("--bertscore-layers", min=0, help="Encoder layer compared (default: the preset's, or bert-score's default for the model)")
    ] = None,
    bertscore_batch_size: Annotated[int, typer.Option("--bertscore-batch-size", min=1, help="BERTScore batch size")] = BERTSCORE_BATCH_SIZE,
    device: Annotated[str | None, typer.Option("--device", help="torch device for BERTScore; default: cuda if available, else cpu")] = None,
    engine: EngineOption = "served",
    judge_predictions: Annotated[
        Path | None, typer.Option("--judge-predictions", help="With --engine predict: the generated_predictions.jsonl of the judge's last predict round")
    ] = None,
    judge_round: Annotated[
        str | None, typer.Option("--judge-round", help="With --engine predict: the judge round's set name (default: judge_<out-dir folder name>)")
    ] = None,
) -> None:
    """Score open-ended clinical cases: chrF, BLEU, ROUGE-L and BERTScore per item, and a blind LLM judge with a rubric per task (es, pt)."""
    settings = client_settings(endpoint, model, allow_remote, concurrency, retries, timeout) if judge else None
    options = BertScoreOptions(bertscore_model, bertscore_layers, bertscore_batch_size, device) if bertscore else None
    rounds = None
    if predict_rounds(engine, judge_predictions, "--judge-predictions") and judge:  # the flags are checked even with --no-judge
        rounds = JudgeRounds(judge_round or f"judge_{re.sub(r'[^A-Za-z0-9_]', '_', Path(out_dir).resolve().name)}", judge_predictions)
    with exit_on_corpus_error():
        metrics = evaluate_cases(items, predictions, out_dir, settings, cache, check_labels, options, rounds)
    if "round" in metrics:
        echo_round(metrics["round"], f"medfactory eval cases --items {items} --predictions {predictions} --out-dir {out_dir} (the same options)",
                   "--judge-predictions")  # fmt: skip
        return
    means = metrics["means"]
    bert = f", BERTScore F1 {means['bertscore_f1']:.4f}" if "bertscore_f1" in means else ""
    typer.echo(f"{metrics['n']} items: chrF {means['chrf']:.2f}, BLEU {means['bleu']:.2f}, ROUGE-L {means['rouge_l']:.3f}{bert} -> {out_dir}")
    if metrics["judge"]:
        status = metrics["judge"]["status"]
        typer.echo(f"judge: {status['ok']} judged, {status['unparseable']} unparseable, {status['failed']} failed; {metrics['judge']['client']['line']}")
