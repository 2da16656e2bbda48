"""The blind Likert study of the Clinical-BR paper, end to end.

Stages and the files between them (all under ``reports/likert/<study>/``):

1. ``completions`` (:mod:`.completions`): held-out notes -> excerpts -> a prediction set ->
   ``llamafactory-cli train recipes/clinical_br_complete.yaml`` once per model ->
   ``completions.jsonl`` (note_id, model, excerpt, completion, reference).
2. ``cards`` (:mod:`.cards`): completions -> blind cards ``cards.jsonl`` (card_id, note_id
   hidden from raters, excerpt, completion), the key ``key.csv`` (card_id, note_id, model) that
   raters never get, one XLSX per rater, the canonical long CSV template and a Label Studio project.
3. ``ratings`` (:mod:`.ratings`): filled XLSX, long CSV or Label Studio export -> validated long
   table (card_id, rater, criterion, score, observation).
4. ``report`` (:mod:`.report`): ratings + key -> Markdown report with Table 1, Table 2, Fig. 3,
   inter-rater agreement and significance tests.
5. ``judge`` (:mod:`.judge`): the same rubric scored by a served model, written as ratings of
   rater ``judge:<model>``.
"""

from __future__ import annotations

from dataclasses import dataclass

SCORES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Criterion:
    key: str
    name: str
    question: str


# The paper's three criteria (section 3.3), with definitions summarised for the raters.
CRITERIA: tuple[Criterion, ...] = (
    Criterion(
        "format",
        "Authenticity of Format and Structure",
        "Does the continuation look like a real clinical note of this kind: its sections, layout, "
        "abbreviations and telegraphic style? 1 = not at all, 5 = indistinguishable from a real note.",
    ),
    Criterion(
        "spelling",
        "Spelling Accuracy",
        "Are Portuguese words, medical terms, drug names and abbreviations spelled correctly? "
        "1 = many errors or invented words, 5 = no errors.",
    ),
    Criterion(
        "coherence",
        "Clinical Coherence",
        "Is the clinical content plausible and consistent with the excerpt (findings, diagnoses, "
        "treatments, timeline)? 1 = incoherent or contradictory, 5 = fully coherent.",
    ),
)
CRITERION_KEYS = tuple(criterion.key for criterion in CRITERIA)

# File names inside a study folder.
COMPLETIONS_FILE = "completions.jsonl"
CARDS_FILE = "cards.jsonl"
KEY_FILE = "key.csv"
RATINGS_TEMPLATE_FILE = "ratings_template.csv"
LONG_COLUMNS = ("card_id", "rater", "criterion", "score", "observation")
