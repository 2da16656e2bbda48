"""The statistical layer of de-identification: a BIO tagger over :data:`~.spans.CATEGORIES` with python-crfsuite.

Text is cut into tokens with character offsets (letter runs, digit runs, single punctuation
marks), each token gets binary string features (its word, affixes, shape, gazetteer membership,
the words around it, the header word of its line, the nearest keyword cue before it and, when the
rules layer is installed, the rule span it sits in), and the CRF labels it ``B-<category>``,
``I-<category>`` or ``O``. Runs of B/I tokens become :class:`~.spans.PhiSpan` with offsets into
the original text. Training reads (text, gold spans) pairs, e.g. MEDDOCAN's BRAT files.
"""

from __future__ import annotations

import bisect
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pycrfsuite
from tqdm import tqdm

from medfactory.corpus.deid import gazetteers
from medfactory.corpus.deid.spans import CATEGORIES, PhiSpan

if TYPE_CHECKING:
    from medfactory.corpus.deid.crf_viterbi import FastCrf

SOURCE = "crf"
# Fewer notes than this are tagged by crfsuite itself: lockstep Viterbi pays one numpy step per token
# position, which only a batch of notes amortises (the labels are the same either way).
LOCKSTEP_MIN_TEXTS = 8
DEFAULT_C1 = 0.02
DEFAULT_C2 = 0.01
DEFAULT_MAX_ITERATIONS = 150
# Features seen fewer times than this in training are dropped: a smaller model, same scores.
DEFAULT_MIN_FREQUENCY = 1

# Letter runs, digit runs, or one other non-space character: fine enough that gold span
# boundaries ("2º", "28036Madrid", "c/ del") fall on token boundaries.
_TOKEN_RE = re.compile(r"[^\W\d_]+|\d+|[^\w\s]")
# Words that announce PHI in MEDDOCAN and Brazilian notes ("NHC: 368503", "Dr. ...", "prontuário 123").
CUES = frozenset(
    {
        "nhc", "nass", "nombre", "apellidos", "dr", "dra", "doctor", "doctora", "paciente", "prontuário", "prontuario",
        "crm", "coren", "hospital", "clínica", "clinica", "centro", "calle", "c", "avenida", "av", "rua", "col", "nº",
        "colegiado", "remitido", "médico", "medico", "correo", "email", "mail", "tel", "teléfono", "telefone", "fax",
        "fecha", "data", "edad", "idade", "sexo", "domicilio", "dirección", "endereço", "cpf", "cns", "rg", "cep",
        "sr", "sra", "don", "doña", "años", "anos", "ingreso", "nacimiento", "nascimento", "natural", "cidade",
        "servicio", "serviço", "unidad", "madre", "padre", "mãe", "pai", "esposa", "marido", "hijo", "hija", "filho", "filha",
    }
)  # fmt: skip
# Month names and abbreviations of Spanish and Portuguese: dates are written "enero 2001", "3 de março de 2021".
MONTHS = frozenset(
    {
        "enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "setiembre", "octubre", "noviembre",
        "diciembre", "janeiro", "fevereiro", "março", "maio", "junho", "julho", "setembro", "outubro", "novembro", "dezembro",
        "ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "sept", "set", "oct", "nov", "dic", "jan", "fev", "mai", "out", "dez",
    }
)  # fmt: skip
CUE_WINDOW = 5  # tokens back a cue still counts
PAD = (("-2pad",), ("-1pad",), ("1pad",), ("2pad",))  # no token there (the text's start or end)


class Token(NamedTuple):
    """``text[start:end]`` of the original text."""

    start: int
    end: int
    text: str


def tokenize(text: str) -> list[Token]:
    """Tokens of ``text`` with their character offsets (``text[token.start:token.end] == token.text``)."""
    return [Token(match.start(), match.end(), match.group()) for match in _TOKEN_RE.finditer(text)]


def _shape(word: str) -> str:
    """``Xxxx`` / ``dd`` / ``x.`` style shape, with runs longer than 4 cut at 4."""
    shape = []
    for char in word:
        kind = "X" if char.isupper() else "x" if char.isalpha() else "d" if char.isdigit() else char
        if len(shape) < 4 or kind != shape[-1] or shape[-4:] != [kind] * 4:
            shape.append(kind)
    return "".join(shape)


@lru_cache(maxsize=1 << 18)
def word_features(word: str) -> tuple[tuple[str, ...], str, tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(the token's own features, its lowercase, what it lends to its neighbours at -2, -1, +1, +2); cached: words repeat."""
    lower = word.lower()
    shape = _shape(word)
    short = re.sub(r"(.)\1+", r"\1", shape)
    folded = word.casefold()
    gazetteer = "".join(
        flag for flag, names in (("F", gazetteers.first_names()), ("S", gazetteers.surnames()), ("P", gazetteers.places())) if folded in names
    )
    own = [f"w={lower}", f"sh={shape}", f"ss={short}", f"len={min(len(word), 12)}", f"s3={lower[-3:]}", f"s2={lower[-2:]}", f"p3={lower[:3]}"]
    own += [f"p2={lower[:2]}", f"s1={lower[-1:]}"]
    if word.istitle():
        own.append("title")
    if word.isupper():
        own.append("upper")
    if word.isdigit():
        own.append("digit")
    if word.isdecimal():  # not "²": isdigit() but no int()
        if len(word) == 4 and word[:2] in ("19", "20"):
            own.append("year")
        elif len(word) <= 2 and int(word) <= 31:
            own.append("day")
    if lower in MONTHS:
        own.append("month")
    if gazetteer:
        own.append(f"gaz={gazetteer}")
    if lower in CUES:
        own.append("cue")
    lend = (f"w={lower}", f"ss={short}", f"gaz={gazetteer}")
    # What this word lends to the tokens 2 and 1 after it (-2, -1) and 1 and 2 before it (1, 2), prefixed once here.
    before_2, before_1 = tuple(f"-2{name}" for name in lend[:2]), tuple(f"-1{name}" for name in lend)
    return tuple(own), lower, before_2, before_1, tuple(f"1{name}" for name in lend), tuple(f"2{name}" for name in lend[:2])


def line_starts(text: str, tokens: Sequence[Token]) -> list[bool]:
    """Whether each token is the first of its line."""
    flags = []
    previous_end = 0
    for index, token in enumerate(tokens):
        flags.append(index == 0 or "\n" in text[previous_end : token.start])
        previous_end = token.end
    return flags


def rule_labels(text: str, tokens: Sequence[Token], language: str, rule_spans: Sequence[PhiSpan] | None = None) -> list[str]:
    """The rules layer's category of each token ('' outside its spans); all '' when rules.py is absent.

    ``rule_spans``: the rules' spans of ``text`` when the caller has them already (the de-identifier does).
    """
    return rule_labels_at(text, [token.start for token in tokens], [token.end for token in tokens], language, rule_spans)


def rule_labels_at(text: str, starts: Sequence[int], ends: Sequence[int], language: str, rule_spans: Sequence[PhiSpan] | None) -> list[str]:
    """rule_labels for tokens given as offset arrays (crf_viterbi's)."""
    finder = _rules_finder()
    labels = [""] * len(starts)
    if (finder is None and rule_spans is None) or not len(starts):
        return labels
    starts = list(starts)
    for span in finder(text, language) if rule_spans is None else rule_spans:
        for index in range(max(bisect.bisect_right(starts, span.start) - 1, 0), bisect.bisect_left(starts, span.end)):
            if ends[index] > span.start:
                labels[index] = span.category
    return labels


@lru_cache(maxsize=1)
def _rules_finder() -> Callable[[str, str], list[PhiSpan]] | None:
    """rules.find when the rules layer is installed (it is built beside this module); None keeps the CRF usable alone."""
    try:
        from medfactory.corpus.deid.rules import find
    except ImportError:
        return None
    return find


def features(
    text: str, tokens: Sequence[Token], language: str = "es", use_rules: bool = True, rule_spans: Sequence[PhiSpan] | None = None
) -> list[list[str]]:
    """One list of binary string features per token of ``text`` (crf_viterbi.FastCrf sums the same features' weights)."""
    per_word = [word_features(token.text) for token in tokens]
    line_start = line_starts(text, tokens)
    rules = rule_labels(text, tokens, language, rule_spans) if use_rules else [""] * len(tokens)
    result: list[list[str]] = []
    header = ""
    cue, cue_at = "", -CUE_WINDOW - 1
    last = len(tokens) - 1
    for index, (own, lower, *_) in enumerate(per_word):
        if line_start[index]:
            header, cue, cue_at = lower, "", -CUE_WINDOW - 1
        feats = [*own, f"hd={header}"]
        if line_start[index]:
            feats.append("bol")
        if index - cue_at <= CUE_WINDOW:
            feats.append(f"cue={cue}")
        if rules[index]:
            feats.append(f"rule={rules[index]}")
        # The neighbours' words, shapes and gazetteer hits, as -2, -1, 1, 2 features (tuples prefixed once per word).
        feats.extend(per_word[index - 2][2] if index >= 2 else PAD[0])
        feats.extend(per_word[index - 1][3] if index >= 1 else PAD[1])
        feats.extend(per_word[index + 1][4] if index < last else PAD[2])
        feats.extend(per_word[index + 2][5] if index < last - 1 else PAD[3])
        if index and tokens[index - 1].end == tokens[index].start:
            feats.append("glued")
        result.append(feats)
        if lower in CUES:
            cue, cue_at = lower, index
    return result


def bio_labels(tokens: Sequence[Token], spans: Iterable[PhiSpan]) -> list[str]:
    """``B-``/``I-``/``O`` per token: a token overlapping a gold span takes its category (the first span wins)."""
    labels = ["O"] * len(tokens)
    starts = [token.start for token in tokens]
    for span in sorted(spans):
        first = max(bisect.bisect_right(starts, span.start) - 1, 0)
        inside = [index for index in range(first, bisect.bisect_left(starts, span.end)) if tokens[index].end > span.start]
        if not inside or any(labels[index] != "O" for index in inside):
            continue
        labels[inside[0]] = f"B-{span.category}"
        for index in inside[1:]:
            labels[index] = f"I-{span.category}"
    return labels


def spans_from_labels(tokens: Sequence[Token], labels: Sequence[str]) -> list[PhiSpan]:
    """Runs of ``B-X I-X ...`` as spans (an ``I-X`` after ``O`` or another category starts a run too)."""
    spans: list[PhiSpan] = []
    start = end = -1
    category = ""
    for token, label in zip(tokens, labels, strict=True):
        tag, _, label_category = label.partition("-")
        if tag == "I" and label_category == category:
            end = token.end
            continue
        if category:
            spans.append(PhiSpan(start, end, category, SOURCE))
        category = label_category if tag in ("B", "I") and label_category in CATEGORIES else ""
        start, end = token.start, token.end
    if category:
        spans.append(PhiSpan(start, end, category, SOURCE))
    return spans


def _write_model(trainer: pycrfsuite.Trainer, model_path: Path) -> None:
    """Train into a temporary file beside ``model_path`` and rename it into place (a killed run leaves the old model)."""
    model_path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{model_path.name}.", suffix=".tmp", dir=model_path.parent)
    os.close(handle)
    try:
        trainer.train(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, model_path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _fast_crf(tagger: pycrfsuite.Tagger) -> FastCrf:
    from medfactory.corpus.deid.crf_viterbi import FastCrf  # here: crf_viterbi imports this module

    return FastCrf(tagger)


class CrfTagger:
    """A trained CRF model: ``CrfTagger(path).find(text)`` lists the PHI spans it tags."""

    def __init__(self, model_path: Path | str, language: str = "es", use_rules: bool = True, exact_crfsuite: bool = False) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: no CRF model there. Fix: `medfactory deid train --gold DIR --output {self.model_path}`.")
        self.language = language
        self._tagger = pycrfsuite.Tagger()
        self._tagger.open(str(self.model_path))
        # Rule spans are computed only for a model trained with them (a model without them would ignore them).
        self.use_rules = use_rules and any(name.startswith("rule=") for name, _ in self._tagger.info().state_features)
        # exact_crfsuite: tag with crfsuite itself (feature strings per token); else the same labels from cached per-word
        # weight vectors (crf_viterbi.FastCrf), about ten times faster.
        self._fast = None if exact_crfsuite else _fast_crf(self._tagger)

    def find(self, text: str, rule_spans: Sequence[PhiSpan] | None = None) -> list[PhiSpan]:
        """PHI spans of ``text`` (source ``crf``), offsets into ``text``; ``rule_spans``: the rules' spans, if already found."""
        return self.find_many([text], None if rule_spans is None else [rule_spans])[0]

    def find_many(self, texts: Sequence[str], rule_spans: Sequence[Sequence[PhiSpan]] | None = None) -> list[list[PhiSpan]]:
        """:meth:`find` of each text; faster per note than one call each (the label paths are decoded together)."""
        if self._fast is None or len(texts) < LOCKSTEP_MIN_TEXTS:
            found = []
            for index, text in enumerate(texts):
                tokens = tokenize(text)
                spans = None if rule_spans is None else rule_spans[index]
                labels = self._tagger.tag(features(text, tokens, self.language, self.use_rules, spans)) if tokens else []
                found.append(spans_from_labels(tokens, labels))
            return found
        from medfactory.corpus.deid import crf_viterbi

        contexts = [crf_viterbi.tokenize(text) for text in texts]
        scores = []
        for index, (text, context) in enumerate(zip(texts, contexts, strict=True)):
            rule_categories = None
            if self.use_rules:
                rule_categories = rule_labels_at(text, context.starts, context.ends, self.language, None if rule_spans is None else rule_spans[index])
            scores.append(self._fast.scores(context, rule_categories))
        paths = self._fast.decode_many(scores)
        return [crf_viterbi.spans_from_label_ids(context, path, self._fast.label_names) for context, path in zip(contexts, paths, strict=True)]

    @staticmethod
    def train(
        documents: Iterable[tuple[str, Sequence[PhiSpan]]],
        model_path: Path | str,
        c1: float = DEFAULT_C1,
        c2: float = DEFAULT_C2,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
        language: str = "es",
        use_rules: bool = True,
        min_frequency: int = DEFAULT_MIN_FREQUENCY,
        progress: bool = True,
    ) -> dict[str, int]:
        """Train on (text, gold spans) pairs, write the model atomically; return document, token and span counts."""
        trainer = pycrfsuite.Trainer(verbose=False)
        counts = {"documents": 0, "tokens": 0, "spans": 0}
        for text, spans in tqdm(documents, desc="CRF features", unit="doc", disable=not progress):
            tokens = tokenize(text)
            if not tokens:
                continue
            trainer.append(features(text, tokens, language, use_rules), bio_labels(tokens, spans))
            counts["documents"] += 1
            counts["tokens"] += len(tokens)
            counts["spans"] += len(spans)
        if not counts["documents"]:
            raise ValueError("no training document has any token. Fix: pass gold folders holding .txt files with text.")
        trainer.set_params(
            {"c1": c1, "c2": c2, "max_iterations": max_iterations, "feature.possible_transitions": True, "feature.minfreq": min_frequency}
        )
        _write_model(trainer, Path(model_path))
        return counts
