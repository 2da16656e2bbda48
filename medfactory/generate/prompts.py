"""The translation prompts: one instruction per (target language, kind of text), sent as one user turn.

A request is the alpaca row ``{"instruction": <prompt>, "input": <source>, "output": ""}`` that
``plugins/mimic_cxr.py`` writes for medgemma-27b-text-it (``translate.jsonl``); the chat message is
``instruction + "\\n" + input``, exactly the user turn LLaMA-Factory builds from that row, so the same
prompt gives the same request through a served model or through ``llamafactory-cli train`` predict.

Kinds: ``report`` (a radiology report: the MIMIC-CXR-PT-BR recipe's prompt, word for word), ``text``
(plain text: a document chunk, one field of a Q&A pair), ``mcq`` (a JSON object ``{"question",
"options"}`` translated as JSON). English prompts are for back-translation. Changing any text here
changes every request's cache key: bump :data:`PROMPT_VERSION` with it (manifests and provenance record it).
"""

from __future__ import annotations

import hashlib
import json

from medfactory.base.errors import CorpusError

PROMPT_VERSION = "translate-2025-1"
KINDS = ("report", "text", "mcq")

# The MIMIC-CXR-PT-BR report prompt (medgemma-27b-text-it translated the reports with it): kept verbatim.
REPORT_PROMPT_PT = (
    "Você é um assistente médico que traduz relatórios de raio-x para o português. "
    "Traduza o relatório abaixo para o português."
)

# The same two sentences (who the model is, what to translate), then what the answer must be: plain text or the JSON object.
_MCQ_JSON = '{"question": "...", "options": ["...", "..."]}'
PROMPTS: dict[tuple[str, str], str] = {
    ("pt", "report"): REPORT_PROMPT_PT,
    ("pt", "text"): (
        "Você é um assistente médico que traduz textos médicos para o português. "
        "Traduza o texto abaixo para o português. Responda apenas com a tradução."
    ),
    ("es", "text"): (
        "Eres un asistente médico que traduce textos médicos al español. "
        "Traduce el texto de abajo al español. Responde solo con la traducción."
    ),
    ("en", "text"): (
        "You are a medical assistant who translates medical texts into English. "
        "Translate the text below into English. Answer with the translation only."
    ),
    ("pt", "mcq"): (
        "Você é um assistente médico que traduz questões de exame para o português. "
        "Traduza para o português a pergunta e cada uma das opções do objeto JSON abaixo, na mesma ordem, "
        f"sem juntar, acrescentar ou remover opções. Responda apenas com o objeto JSON {_MCQ_JSON}."
    ),
    ("es", "mcq"): (
        "Eres un asistente médico que traduce preguntas de examen al español. "
        "Traduce al español la pregunta y cada una de las opciones del objeto JSON de abajo, en el mismo orden, "
        f"sin unir, añadir ni quitar opciones. Responde solo con el objeto JSON {_MCQ_JSON}."
    ),
    ("en", "mcq"): (
        "You are a medical assistant who translates exam questions into English. "
        "Translate into English the question and each of the options of the JSON object below, in the same order, "
        f"without merging, adding or removing options. Answer with the JSON object {_MCQ_JSON} only."
    ),
}


def prompt_for(language: str, kind: str) -> str:
    """The instruction that translates ``kind`` into ``language``; CorpusError when there is none."""
    try:
        return PROMPTS[(language, kind)]
    except KeyError:
        known = ", ".join(f"{lang}/{k}" for lang, k in PROMPTS)
        raise CorpusError(f"no translation prompt into {language!r} for {kind!r} texts (prompts exist for {known}).") from None


def mcq_input(question: str, options: list[str]) -> str:
    """The ``input`` of an MCQ request: the question and its options as one JSON object (non-ASCII kept)."""
    return json.dumps({"question": question, "options": options}, ensure_ascii=False)


def user_message(instruction: str, source: str) -> str:
    """The user turn LLaMA-Factory builds from the alpaca row (instruction, input): joined by one newline."""
    return f"{instruction}\n{source}"


def prompt_sha256(instruction: str) -> str:
    """A prompt's fingerprint for manifests (which record the version and this, not the text of requests)."""
    return hashlib.sha256(instruction.encode("utf-8")).hexdigest()
