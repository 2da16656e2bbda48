"""The multiple-choice item format shared by the exam plugins and ``medfactory eval mcqa``.

``data/<name>/<split>.jsonl`` holds one item per line::

    {"id": "Cuaderno_2013_1_B-1", "question": "...", "options": ["...", "...", "...", "...", "..."],
     "answer": 2, "letters": ["A", "B", "C", "D", "E"], "category": "biology", "year": 2013,
     "exam": "Cuaderno_2013_1_B", "has_image": false, "language": "es"}

``answer`` is the 0-based index of the right option; ``letters`` label the options in order
(always ``A``, ``B``, ... here). The plugins write 4 or 5 options; the reader accepts 2 to 26 so
other sets in this format load too. Every key is required (``null`` where unknown); an unknown
key is an error, so that a misspelt field never passes silently.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from medfactory.base.errors import CorpusError
from medfactory.base.jsonl import JsonlLineError, iter_jsonl, write_jsonl

LANGUAGES = ("es", "en", "pt")
LETTERS = tuple(string.ascii_uppercase)
MIN_OPTIONS = 2


@dataclass
class McqItem:
    """One exam question with its options, the right one, and where it comes from."""

    id: str
    question: str
    options: list[str]
    answer: int
    letters: list[str]
    category: str | None
    year: int | None
    exam: str | None
    has_image: bool
    language: str

    @property
    def answer_letter(self) -> str:
        return self.letters[self.answer]

    @property
    def answer_text(self) -> str:
        return self.options[self.answer]

    @property
    def n_options(self) -> int:
        return len(self.options)

    def problems(self) -> list[str]:
        """What is wrong with the item (an empty list when it is valid)."""
        found: list[str] = []
        if not isinstance(self.id, str) or not self.id.strip():
            found.append("id must be a non-empty string")
        if not isinstance(self.question, str) or not self.question.strip():
            found.append("question must be a non-empty string")
        if not isinstance(self.options, list) or not all(isinstance(option, str) for option in self.options):
            found.append("options must be a list of strings")
            return found
        if not MIN_OPTIONS <= len(self.options) <= len(LETTERS):
            found.append(f"options must hold {MIN_OPTIONS} to {len(LETTERS)} entries, not {len(self.options)}")
        if any(not option.strip() for option in self.options):
            found.append("options must not be empty")
        if self.letters != list(LETTERS[: len(self.options)]):
            found.append(f"letters must be {list(LETTERS[: len(self.options)])} for {len(self.options)} options, not {self.letters!r}")
        if isinstance(self.answer, bool) or not isinstance(self.answer, int) or not 0 <= self.answer < len(self.options):
            found.append(f"answer must be an option index 0..{len(self.options) - 1}, not {self.answer!r}")
        for name in ("category", "exam"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                found.append(f"{name} must be a string or null, not {value!r}")
        if self.year is not None and (isinstance(self.year, bool) or not isinstance(self.year, int)):
            found.append(f"year must be an integer or null, not {self.year!r}")
        if not isinstance(self.has_image, bool):
            found.append(f"has_image must be true or false, not {self.has_image!r}")
        if self.language not in LANGUAGES:
            found.append(f"language must be one of {', '.join(LANGUAGES)}, not {self.language!r}")
        return found

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> McqItem:
        """Build and validate an item; ValueError (TypeError for a non-object) says what is wrong."""
        if not isinstance(record, dict):
            raise TypeError(f"expected a JSON object, got {type(record).__name__}")
        names = [field.name for field in fields(cls)]
        missing = [name for name in names if name not in record]
        unknown = sorted(set(record) - set(names))
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown {', '.join(unknown)}")
            raise ValueError("; ".join(parts))
        item = cls(**{name: record[name] for name in names})
        problems = item.problems()
        if problems:
            raise ValueError("; ".join(problems))
        return item


def lettered_options(item: McqItem) -> str:
    """``A) first option`` ... one per line, as the SFT prompts show them."""
    return "\n".join(f"{letter}) {option}" for letter, option in zip(item.letters, item.options))


# --- The SFT prompt of an MCQ item ------------------------------------------------------------------
# The SFT / DPO prompt and answer, recorded in each MCQ set's manifest (`sft.prompt`) so that `eval mcqa
# --chat-template` rebuilds exactly the prompt the model was trained on. `options` is
# lettered_options: one `<letter>) <text>` line per option.
USER_FORMAT = "{instruction}\n\n{question}\n\n{options}"
RESPONSE_FORMAT = "{answer_prefix}: {letter}) {option}"


@dataclass(frozen=True)
class PromptStyle:
    """The instruction before each question and the prefix of the answer, in the questions' language."""

    instruction: str
    answer_prefix: str

    def record(self) -> dict[str, str]:
        """The prompt as the manifest records it: what ``eval mcqa --chat-template`` reads back."""
        return {
            "user": USER_FORMAT,
            "response": RESPONSE_FORMAT,
            "instruction": self.instruction,
            "answer_prefix": self.answer_prefix,
            "options": "medfactory.corpus.mcq.lettered_options: '<letter>) <text>', one line per option",
        }


# One style per item language. es and en are HEAD-QA's (its manifests record them: do not reword them, the
# models trained on those sets expect them); pt is the same instruction in Brazilian Portuguese.
PROMPTS = {
    "es": PromptStyle(
        instruction=(
            "Responde a la siguiente pregunta de un examen de especialización sanitaria eligiendo una sola "
            "opción. Indica la letra y el texto de la respuesta correcta."
        ),
        answer_prefix="Respuesta",
    ),
    "en": PromptStyle(
        instruction=(
            "Answer the following question from a Spanish healthcare specialisation exam by choosing one "
            "option. Give the letter and the text of the right answer."
        ),
        answer_prefix="Answer",
    ),
    "pt": PromptStyle(
        instruction=(
            "Responda à seguinte questão de um exame da área da saúde escolhendo uma única opção. "
            "Indique a letra e o texto da resposta correta."
        ),
        answer_prefix="Resposta",
    ),
}


def prompt_of(item: McqItem, style: PromptStyle) -> str:
    """The user turn of an SFT row: instruction, question and lettered options."""
    return USER_FORMAT.format(instruction=style.instruction, question=item.question, options=lettered_options(item))


def answer_of(item: McqItem, index: int, style: PromptStyle) -> str:
    """The assistant turn that names option ``index``: ``Respuesta: C) <text>``."""
    return RESPONSE_FORMAT.format(answer_prefix=style.answer_prefix, letter=item.letters[index], option=item.options[index])


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``iter_jsonl``'s (line number, object) pairs, its errors re-worded as this format's CorpusError."""
    try:
        yield from iter_jsonl(path)
    except JsonlLineError as error:
        where = f"{path}, line {error.line}"
        if error.decode_error is not None:
            cause = error.decode_error
            raise CorpusError(f"{where}: invalid JSON ({cause.msg}, column {cause.colno}).") from cause
        raise CorpusError(f"{where}: not an MCQ item: {error.reason}.") from error
    except UnicodeDecodeError:
        raise  # the file, not a line, is at fault (not UTF-8): let the decoder's own error through
    except ValueError as error:  # the file is missing or not a file
        raise CorpusError(str(error)) from error


def read_items(path: Path) -> list[McqItem]:
    """Every item of a ``.jsonl`` file; a bad line raises CorpusError naming the file and line.

    Blank lines are skipped. Two items with one id are an error (scores are kept by id).
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: not found. Prepare the exam set first (medfactory prepare head_qa / pt_exam_mcq / exam_mcq).")
    items: list[McqItem] = []
    first_line_of: dict[str, int] = {}
    for number, record in _records(path):
        try:
            item = McqItem.from_dict(record)
        except (TypeError, ValueError) as error:
            raise CorpusError(f"{path}, line {number}: not an MCQ item: {error}.") from error
        if item.id in first_line_of:
            raise CorpusError(f"{path}, line {number}: id {item.id!r} already used on line {first_line_of[item.id]}.")
        first_line_of[item.id] = number
        items.append(item)
    return items


def _checked_records(path: Path, items: Iterable[McqItem]) -> Iterator[dict[str, Any]]:
    """Each item as a JSON object; an invalid or repeated item raises CorpusError (the write is then abandoned)."""
    seen: set[str] = set()
    for item in items:
        problems = item.problems()
        if problems:
            raise CorpusError(f"{path}: item {item.id!r}: {'; '.join(problems)}")
        if item.id in seen:
            raise CorpusError(f"{path}: item {item.id!r}: duplicate id")
        seen.add(item.id)
        yield item.to_dict()


def write_items(path: Path, items: Iterable[McqItem]) -> int:
    """Write items as JSONL, atomically (all or nothing); return how many. An invalid item raises CorpusError."""
    return write_jsonl(Path(path), _checked_records(path, items))
