"""The blind Likert study of the Clinical-BR paper, end to end: completions -> blind cards -> ratings -> report,
plus an LLM judge. The rubric and the file names every stage shares live here; the stages and the files
between them are described in docs/likert.md.
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
