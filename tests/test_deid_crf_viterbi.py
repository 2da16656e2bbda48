"""The fast CRF path (crf_viterbi.FastCrf) gives crfsuite's own labels; its tokens are crf.tokenize's; overlaps resolve as before."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medfactory.corpus.deid import crf, crf_viterbi
from medfactory.corpus.deid.deidentifier import default_model
from medfactory.corpus.deid.spans import PhiSpan, resolve_overlaps

MODEL = default_model("es")
# Words that make the embedded Spanish model tag something (names, ids, dates, places) mixed with clinical prose.
WORDS = tuple(
    " ".join((
        "Paciente varón de 45 años NHC : 368503 Nombre Juan Pérez García Dr. María López Hospital Universitario La Paz",
        "Madrid España C/ Mayor 5 28036 fecha 03/02/2021 marzo de 2019 acude por dolor abdominal TAC normal Tel 912345678",
        "correo juan.perez@hospital.es NASS 281234567890 Calle Alcalá nº col. 282812345 Sexo : Hombre madre hija esposa",
        "Servicio de Urología remitido al Centro de Salud Valdemoro , . ( ) - / _ º ª é ñ Ü ² 3,5 mg/dl",
    )).split(" ")
)


def exact_and_fast() -> tuple[crf.CrfTagger, crf.CrfTagger]:
    assert MODEL is not None, "the embedded Spanish model ships with the package"
    return crf.CrfTagger(MODEL, "es", exact_crfsuite=True), crf.CrfTagger(MODEL, "es")


def crfsuite_labels(tagger: crf.CrfTagger, text: str) -> list[str]:
    tokens = crf.tokenize(text)
    return tagger._tagger.tag(crf.features(text, tokens, "es", tagger.use_rules)) if tokens else []


def fast_labels(tagger: crf.CrfTagger, text: str) -> list[str]:
    context = crf_viterbi.tokenize(text)
    rules = crf.rule_labels_at(text, context.starts, context.ends, "es", None) if tagger.use_rules else None
    path = tagger._fast.decode_many([tagger._fast.scores(context, rules)])[0]
    return [tagger._fast.label_names[index] for index in path]


def random_note(rng: random.Random, words: int) -> str:
    separators = [" "] * 12 + ["\n", "  ", "", "\t", "_"]
    return "".join(rng.choice(WORDS) + rng.choice(separators) for _ in range(words))


def test_fast_labels_equal_crfsuite_labels_on_meddocan_dev(shared_data: Path) -> None:
    exact, fast = exact_and_fast()
    texts = [path.read_text(encoding="utf-8") for path in sorted((shared_data / "meddocan" / "dev").glob("*.txt"))[:60]]
    tokens = tagged = 0
    for text in texts:
        expected = crfsuite_labels(exact, text)
        assert fast_labels(fast, text) == expected
        tokens += len(expected)
        tagged += sum(label != "O" for label in expected)
    assert tagged > 500 and tokens > 20_000  # the comparison covered real PHI, not only O
    assert fast.find_many(texts) == [exact.find(text) for text in texts]


def test_fast_labels_equal_crfsuite_labels_on_random_notes() -> None:
    exact, fast = exact_and_fast()
    rng = random.Random(15)
    texts = [random_note(rng, rng.randint(1, 400)) for _ in range(120)] + ["", " \n ", "Juan", "_x_"]
    tagged = 0
    for text in texts:
        expected = crfsuite_labels(exact, text)
        assert fast_labels(fast, text) == expected, f"text {texts.index(text)} of the random set"
        tagged += sum(label != "O" for label in expected)
    assert tagged > 200
    # Decoded together (in lockstep batches), and in batches forced small, the spans are the one-by-one spans.
    one_by_one = [exact.find(text) for text in texts]
    assert fast.find_many(texts) == one_by_one


def test_small_lockstep_batches_decode_the_same_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    _, fast = exact_and_fast()
    rng = random.Random(3)
    texts = [random_note(rng, rng.randint(1, 300)) for _ in range(40)]
    together = fast.find_many(texts)
    monkeypatch.setattr(crf_viterbi, "_BATCH_CELLS", 1)  # one sequence per batch
    assert fast.find_many(texts) == together


def test_scores_are_the_summed_weights_of_the_crf_features() -> None:
    _, fast = exact_and_fast()
    model = fast._fast
    text = random_note(random.Random(5), 300)
    tokens = crf.tokenize(text)
    context = crf_viterbi.tokenize(text)
    rules = crf.rule_labels(text, tokens, "es")
    weights = {(attribute, label): weight for (attribute, label), weight in fast._tagger.info().state_features.items()}
    expected = np.array([[sum(weights.get((name, label), 0.0) for name in names) for label in model.label_names] for names in crf.features(text, tokens, "es")])
    np.testing.assert_allclose(model.scores(context, rules), expected, rtol=0, atol=1e-9)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200) | st.text(alphabet="ab Á1_\n\t.-²", max_size=60))
def test_tokens_are_crf_tokenize_tokens(text: str) -> None:
    context = crf_viterbi.tokenize(text)
    assert context.tokens() == crf.tokenize(text)
    tokens = crf.tokenize(text)
    assert context.line_start.tolist() == crf.line_starts(text, tokens)
    assert context.glued.tolist() == [bool(index and tokens[index - 1].end == token.start) for index, token in enumerate(tokens)]


def quadratic_resolve(spans: list[PhiSpan], priority: dict[str, int]) -> list[PhiSpan]:
    """The rule resolve_overlaps implements, written the obvious O(n^2) way."""
    ranked = sorted(spans, key=lambda span: (-priority.get(span.source, 0), -(span.end - span.start), span.start))
    kept: list[PhiSpan] = []
    for span in ranked:
        if span.end > span.start and not any(span.overlaps(other) for other in kept):
            kept.append(span)
    return sorted(kept)


SPANS = st.lists(
    st.builds(lambda start, length, source: PhiSpan(start, start + length, "FECHAS", source),
              st.integers(0, 200), st.integers(0, 30), st.sampled_from(["rules", "crf", "gazetteer"])),
    max_size=60,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(SPANS)
def test_resolve_overlaps_keeps_what_the_quadratic_rule_keeps(spans: list[PhiSpan]) -> None:
    priority = {"rules": 3, "crf": 2, "gazetteer": 0}
    assert resolve_overlaps(spans, priority) == quadratic_resolve(spans, priority)
