"""Lopes et al. 2019: European-Portuguese neurology clinical cases, prepared for continued pretraining.

Its raw folders (PDF text) and its tagged folder (one token per line, contractions and clitics
split) both become one plain-text document per file in ``data/lopes2019/train.jsonl``, with a
manifest and a registry entry. The source layout and the rebuild rules are in docs/corpora.md
("Lopes et al. 2019").
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from tqdm import tqdm

from medfactory.base.errors import CorpusError, exit_on_corpus_error
from medfactory.base.manifest import PreparationStats, build_manifest, dataset_records
from medfactory.base.publish import publish_datasets
from medfactory.base.registry import REGISTRY_NAME
from medfactory.corpus.text import UndecodableBytes, decode
from medfactory.plugins import CorpusPlugin, ReplaceOption

log = logging.getLogger(__name__)

CORPUS_NAME = "lopes2019"
RAW_FOLDERS = ("Texts SPN 1 Raw", "Texts SPN 2 Raw")
TAGGED_FOLDER = "Texts Word Embeddings Training"
EXPECTED_FOLDERS = (*RAW_FOLDERS, TAGGED_FOLDER)
DATASET_DIR = Path("data") / CORPUS_NAME
TRAIN_FILE = "train.jsonl"
# Shorter than this after cleaning is a fragment (a lone heading or a number), not a clinical case.
MIN_CHARACTERS = 20
ON_ERROR_CHOICES = ("fail", "skip")
REGISTRY_ENTRIES = {CORPUS_NAME: {"file_name": f"{DATASET_DIR.as_posix()}/{TRAIN_FILE}", "columns": {"prompt": "text"}}}

# --- Rebuilding text from token/POS/lemma lines ---------------------------------------------------

_VERB_TAGS = frozenset({"v-fin", "v-ger", "v-inf"})
_DEMONSTRATIVES = (
    "este", "esta", "estes", "estas", "esse", "essa", "esses", "essas",
    "aquele", "aquela", "aqueles", "aquelas", "isto", "isso", "aquilo",
)  # fmt: skip
_ARTICLES = ("o", "a", "os", "as")
_PERSONAL = ("ele", "ela", "eles", "elas")
_INDEFINITES = ("um", "uma", "uns", "umas")
_OTHERS = ("outro", "outra", "outros", "outras")

# (preposition, next word) -> the written contraction. Worked out on the 279 cases present both
# raw and tagged: each pair below is split in the tagged file where the raw text contracts it.
# Not here because the raw texts keep them apart: "de um(a)", "de outro(s)", "por um(a)", "a um(a)".
# "em um(a)" is here: the raw texts write "num(a)" 11 times and "em uma" once (European usage).
CONTRACTIONS: dict[tuple[str, str], str] = {
    **{("de", word): "d" + word for word in (*_ARTICLES, *_DEMONSTRATIVES, *_PERSONAL, "aí", "ali", "aqui")},
    **{("em", word): "n" + word for word in (*_ARTICLES, *_DEMONSTRATIVES, *_PERSONAL, *_INDEFINITES, *_OTHERS)},
    **{("por", word): "pel" + word for word in _ARTICLES},
    ("a", "o"): "ao",
    ("a", "os"): "aos",
    ("a", "a"): "à",
    ("a", "as"): "às",
    **{("a", word): "à" + word[1:] for word in ("aquele", "aquela", "aqueles", "aquelas", "aquilo")},
}

# The tokenizer writes "me, te, lhe" as "a mim, a ti, a ele" and "ma, ta, mo, to" as "ela a mim" ...
_INDIRECT_CLITICS = {"ele": "lhe", "eles": "lhes", "mim": "me", "ti": "te", "nós": "nos", "vós": "vos"}
_DOUBLE_CLITICS = {
    (direct, "a", indirect): prefix + ending
    for indirect, prefix in (("mim", "m"), ("ti", "t"))
    for direct, ending in (("ele", "o"), ("ela", "a"), ("eles", "os"), ("elas", "as"))
}
# ... and a hyphenated "-o, -a, -lo, -na" as "ele, ela".
_DIRECT_CLITICS = {"ele": "o", "ela": "a", "eles": "os", "elas": "as"}
# "era ele", "estava ela": the pronoun is the subject, not a clitic.
_COPULA_LEMMAS = frozenset({"ser", "estar"})
# Infinitives lose the "r" before -lo/-la and the vowel takes an accent: "convencer ela" -> "convencê-la".
_STRESSED_VOWEL = {"a": "á", "e": "ê", "i": "i", "o": "ô", "u": "u"}

# A clitic "se" after these words goes before the verb ("que se verificou"), never after it.
_PROCLISIS_WORDS = frozenset(
    [
        "a", "ao", "após", "até", "com", "contra", "de", "desde", "em", "entre", "para", "perante", "por", "sem", "sob", "sobre", "durante", "que",
        "qual", "quais", "quem", "onde", "quando", "como", "porque", "pois", "se", "embora", "enquanto", "caso", "conforme", "não", "nunca", "nem",
        "jamais", "já", "também", "só", "sempre", "ainda", "bem", "mal", "talvez", "apenas", "assim", "logo", "e", "ou", "mas", "o", "os", "todos",
        "tudo", "ambos", "ambas", "algo", "alguém", "ninguém", "nada", "cada",
    ]
)
# Endings of verb forms only (preterite, imperfect, gerund): "Objetivou/adv se" is still a verb.
_VERB_ENDINGS = ("ou", "iu", "ava", "avam", "aram", "eram", "iram", "ando", "endo", "indo")
_FUNCTION_TAGS = frozenset({"art", "pron-det", "pron-indp", "pron-pers", "conj-c", "conj-s", "adv", "num", "punc"})

_SENTENCE_END = frozenset({".", "!", "?", ";", ":"})
_NO_SPACE_BEFORE = frozenset({",", ".", ";", ":", "!", "?", ")", "]", "}", "%", "»", "…"})
_NO_SPACE_AFTER = frozenset({"(", "[", "{", "«"})
_PAIRED_QUOTES = frozenset({'"', "'"})
_ORDINAL_INDICATORS = frozenset({"ª", "º"})
_HGVS_PREFIX = re.compile(r"[cgmnpr]\.")
_INITIAL = re.compile(r"[A-Z]\.")


@dataclass(frozen=True)
class _Token:
    text: str
    pos: str
    lemma: str

    @property
    def lower(self) -> str:
        return self.text.lower()


@dataclass
class _Piece:
    """A word or punctuation mark of the rebuilt text, and how it joins its neighbours."""

    text: str
    pos: str
    lemma: str = ""
    glue_before: bool = False
    glue_after: bool = False


def _match_case(template: str, word: str) -> str:
    """Give ``word`` the case of ``template``: EM -> NO, Em -> No, em -> no."""
    if len(template) > 1 and template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _is_verb(piece: _Piece | None) -> bool:
    # A token that already holds a hyphen ("apresentou-se") has its clitic; "a nós" after it is a phrase.
    return piece is not None and piece.pos in _VERB_TAGS and "-" not in piece.text


def _attach_direct_clitic(verb: str, clitic: str) -> str:
    """``encontraram`` + ``a`` -> ``encontraram-na``; ``convencer`` + ``a`` -> ``convencê-la``."""
    lower = verb.lower()
    if lower.endswith(("r", "s", "z")) and len(verb) > 2:
        stem = verb[:-1]
        if lower.endswith(("r", "z")):
            stem = stem[:-1] + _STRESSED_VOWEL.get(stem[-1].lower(), stem[-1])
        return f"{stem}-l{clitic}"
    if lower.endswith(("m", "ão", "õe")):
        return f"{verb}-n{clitic}"
    return f"{verb}-{clitic}"


def _looks_like_code(text: str) -> bool:
    """``SS``, ``MELAN``, ``anti-TNF``, ``beta-1``: where a following ``ela`` was a hyphenated ``-A``."""
    return any(char.isdigit() for char in text) or sum(char.isupper() for char in text) >= 2


def _starts_sentence(pieces: list[_Piece]) -> bool:
    """Whether the last piece is the first word of its sentence."""
    return len(pieces) == 1 or pieces[-2].text in _SENTENCE_END


def _is_enclitic_se(pieces: list[_Piece], following: _Token | None) -> bool:
    """Whether a clitic ``se`` after the last piece was written ``<verb>-se``.

    The tagger often misses the verb ("Manteve/prop se"), so an open-class word also counts as
    the verb when nothing verbal follows, or when it starts the sentence (European Portuguese never
    starts a sentence with a clitic).
    """
    previous = pieces[-1] if pieces else None
    if previous is None or not previous.text.isalpha():
        return False
    word = previous.text.lower()
    if word in _PROCLISIS_WORDS or (previous.text.isupper() and len(word) > 1):  # "SOS se TA": "if"
        return False
    if previous.pos in _VERB_TAGS or word.endswith(_VERB_ENDINGS):
        return True
    if previous.pos in _FUNCTION_TAGS:
        return False
    return _starts_sentence(pieces) or following is None or following.pos not in _VERB_TAGS


def _rebuild_paragraph(tokens: list[_Token]) -> str:
    pieces: list[_Piece] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        after = tokens[index + 2] if index + 2 < len(tokens) else None
        previous = pieces[-1] if pieces else None
        pair = (token.lower, following.lower) if following else None
        triple = (token.lower, following.lower, after.lower) if following and after else None

        if previous and previous.text.endswith("-") and token.text.startswith("-") and token.text[1:2].isalnum():
            # The PDF repeated the hyphen of a compound cut at a line end: "RM-" "-CE" -> "RM-CE".
            previous.text += token.text[1:]
            index += 1
            continue

        if triple in _DOUBLE_CLITICS:
            # Mostly not a clitic at all: "ELA A TI" is the abbreviation TA (tensão arterial).
            clitic = _DOUBLE_CLITICS[triple]
            if _is_verb(previous) and not token.text.isupper():
                pieces.append(_Piece("-" + clitic, "pron-pers", glue_before=True))
            else:
                pieces.append(_Piece(_match_case(token.text, clitic), "prop"))
            index += 3
            continue

        if (
            token.lower == "a"
            and following is not None
            and following.pos == "pron-pers"
            and following.lower in _INDIRECT_CLITICS
            and (_is_verb(previous) or (after is not None and after.pos in _VERB_TAGS))
        ):
            clitic = _INDIRECT_CLITICS[following.lower]
            if _is_verb(previous):
                pieces.append(_Piece("-" + clitic, "pron-pers", glue_before=True))
            else:
                pieces.append(_Piece(_match_case(token.text, clitic), "pron-pers"))
            index += 2
            continue

        if token.pos == "pron-pers" and token.text in _DIRECT_CLITICS and previous is not None:
            clitic = _DIRECT_CLITICS[token.text]
            if _is_verb(previous) and previous.lemma.lower() not in _COPULA_LEMMAS:
                previous.text = _attach_direct_clitic(previous.text, clitic)
                index += 1
                continue
            if _looks_like_code(previous.text) and not _starts_sentence(pieces):
                last_letter = next((char for char in reversed(previous.text) if char.isalpha()), "a")
                previous.text += "-" + (clitic.upper() if last_letter.isupper() else clitic)
                index += 1
                continue

        if token.lower == "se" and token.pos == "pron-pers" and _is_enclitic_se(pieces, following):
            pieces.append(_Piece("-" + token.text, "pron-pers", glue_before=True))
            index += 1
            continue

        # "de ELA" (the disease) or "por A" (a letter) is not a contraction: "de o" always is.
        if pair in CONTRACTIONS and not (following.text[:1].isupper() and token.text.islower()):
            pieces.append(_Piece(_match_case(token.text, CONTRACTIONS[pair]), following.pos, following.lemma))
            index += 2
            continue

        pieces.append(_Piece(token.text, token.pos, token.lemma))
        index += 1
    return _render(pieces)


def _render(pieces: list[_Piece]) -> str:
    """Join pieces with single spaces, except around punctuation, hyphens and slashes."""
    quote_open = dict.fromkeys(_PAIRED_QUOTES, False)
    for piece, following in zip(pieces, [*pieces[1:], None], strict=True):
        text = piece.text
        if text in _NO_SPACE_BEFORE or text in _ORDINAL_INDICATORS:
            piece.glue_before = True
        elif text in _NO_SPACE_AFTER:
            piece.glue_after = True
        elif text == "/" or (text == "-" and piece.pos != "punc"):
            # "mg/dL", "e/ou"; a hyphen the tokenizer cut out of "TC-CE" (a spaced dash is tagged punc).
            piece.glue_before = piece.glue_after = True
        elif text in _PAIRED_QUOTES:
            # Quotes alternate: an opening one sticks to the next word, a closing one to the previous.
            piece.glue_before, piece.glue_after = quote_open[text], not quote_open[text]
            quote_open[text] = not quote_open[text]
        elif following is None:
            continue
        elif text.endswith("-") and text.strip("-") and following.text[:1].isalnum():
            # "20-" "30", "tendo-" "se", "temporo-" "parietal": a hyphen at a PDF line end. Not
            # "intra- e extra-": there the hyphen is suspended.
            # "grau 4-" "nos membros": a grade, "4 minus".
            piece.glue_after = following.text.lower() not in {"e", "ou"} and not (
                text[:-1].isdigit() and following.text[:1].isalpha()
            )
        elif _HGVS_PREFIX.fullmatch(text) and any(char.isdigit() for char in following.text):
            piece.glue_after = True  # "c." "434del" -> "c.434del", "p." "Gly413Asp" (mutations)
        elif _INITIAL.fullmatch(text) and _INITIAL.fullmatch(following.text):
            piece.glue_after = True  # "S." "U." -> "S.U."
    parts: list[str] = []
    for position, piece in enumerate(pieces):
        if position and not (piece.glue_before or pieces[position - 1].glue_after):
            parts.append(" ")
        parts.append(piece.text)
    return "".join(parts)


def _parse_tagged_line(line: str, line_number: int) -> _Token | None:
    """One ``token<TAB>POS<TAB>lemma`` line; None for a blank line (a paragraph break)."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    fields = line.split("\t")
    if len(fields) < 2:
        raise CorpusError(
            f"line {line_number}: expected token<TAB>POS<TAB>lemma but found no tab. "
            "Fix or remove that line, or run with --on-error skip to leave the file out."
        )
    return _Token(fields[0].strip(), fields[1].strip(), fields[2].strip() if len(fields) > 2 else "")


def rebuild_tagged_text(lines: Iterable[str]) -> str:
    """Readable text from ``token<TAB>POS<TAB>lemma`` lines: contractions, clitics and spacing restored.

    A blank line separates paragraphs (joined with a blank line); tokens with an empty token column
    are skipped. Raises CorpusError naming the line when a line has no tab.
    """
    paragraphs: list[list[_Token]] = [[]]
    for line_number, line in enumerate(lines, start=1):
        token = _parse_tagged_line(line, line_number)
        if token is None:
            if paragraphs[-1]:
                paragraphs.append([])
        elif token.text:
            paragraphs[-1].append(token)
    rebuilt = (_rebuild_paragraph(paragraph) for paragraph in paragraphs if paragraph)
    return "\n\n".join(text for text in rebuilt if text)


# --- Raw texts --------------------------------------------------------------------------------------

_BLANK_LINE = re.compile(r"\n[^\S\n]*\n\s*")
_WHITESPACE = re.compile(r"\s+")


def unwrap_raw_text(text: str) -> str:
    """Undo hard line wraps: lines of a paragraph become one line, blank lines stay paragraph breaks.

    A line that ends in a hyphen attached to a word is joined without a space ("encontra-\\nse" ->
    "encontra-se"): in this corpus such hyphens are real (clitics, compounds), not syllable breaks.
    """
    paragraphs = []
    for block in _BLANK_LINE.split(text.strip()):
        joined = ""
        for line in block.split("\n"):
            line = _WHITESPACE.sub(" ", line).strip()
            if not line:
                continue
            if joined.endswith("-") and len(joined) > 1 and not joined[-2].isspace():
                # Portuguese typesetting repeats the hyphen on the next line: "tendo-" / "-se".
                joined += line[1:] if line.startswith("-") and line[1:2].isalpha() else line
            else:
                joined = f"{joined} {line}" if joined else line
        if joined:
            paragraphs.append(joined)
    return "\n\n".join(paragraphs)


# --- Reading the corpus -----------------------------------------------------------------------------


def decode_bytes(data: bytes, path: Path) -> tuple[str, str]:
    """Decode as UTF-8 if valid, else cp1252; return (NFC text with LF line ends, encoding name).

    cp1252 leaves 0x81, 0x8D, 0x8F, 0x90 and 0x9D undefined: such a byte raises CorpusError naming
    the file and byte offset.
    """
    try:
        text, encoding = decode(data)
    except UndecodableBytes as error:
        raise CorpusError(
            f"{path}: byte 0x{error.byte:02X} at offset {error.offset} is valid neither in UTF-8 "
            "nor in cp1252 (the corpus encoding). Re-save the file as UTF-8 or cp1252, or run with "
            "--on-error skip to leave it out."
        ) from error
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", text), encoding


def check_layout(source: Path) -> None:
    """Raise CorpusError unless ``source`` is a folder holding the three corpus folders."""
    source = Path(source)
    if not source.exists():
        raise CorpusError(
            f"{source}: not found. Pass --source the folder of the Lopes et al. 2019 corpus "
            f"(github.com/fabioacl/PortugueseClinicalNER), the one holding {', '.join(EXPECTED_FOLDERS)}."
        )
    if not source.is_dir():
        raise CorpusError(
            f"{source}: is a file. Pass --source the corpus folder that holds {', '.join(EXPECTED_FOLDERS)}."
        )
    if not _has_layout(source):
        missing = [name for name in EXPECTED_FOLDERS if not (source / name).is_dir()]
        found = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in source.iterdir())
        nested = [child for child in sorted(source.iterdir()) if _has_layout(child)]
        hint = f" It looks like --source {nested[0]}." if nested else ""
        raise CorpusError(
            f"{source}: missing {', '.join(repr(name) for name in missing)}. Expected the corpus layout as "
            f"published: {', '.join(repr(name + '/') for name in EXPECTED_FOLDERS)}; found "
            f"{', '.join(repr(name) for name in found[:20]) or 'nothing'}"
            f"{' ...' if len(found) > 20 else ''}. Point --source at the folder that holds those three.{hint}"
        )


def _has_layout(folder: Path) -> bool:
    return folder.is_dir() and all((folder / name).is_dir() for name in EXPECTED_FOLDERS)


def corpus_files(source: Path) -> list[tuple[str, Path]]:
    """(folder name, path) of every file, folder by folder, files sorted by name: a stable order."""
    return [
        (folder, path)
        for folder in EXPECTED_FOLDERS
        for path in sorted((Path(source) / folder).iterdir(), key=lambda entry: entry.name)
        if path.is_file() and not path.name.startswith(".")
    ]


# PDF extraction left a space after the "fi" and "fl" ligatures ("verifi cou", "infl amatório") in
# both folders; no Portuguese word ends in "fi" or "fl", so the gap is always an artefact.
_LIGATURE_GAP = re.compile(r"(?<=f[il]) (?=[a-záâãçéêíóôõú])")


def clean_text(folder: str, text: str) -> str:
    """The document text of one decoded corpus file: tagged files rebuilt, raw files unwrapped."""
    cleaned = rebuild_tagged_text(text.split("\n")) if folder == TAGGED_FOLDER else unwrap_raw_text(text)
    return _LIGATURE_GAP.sub("", cleaned)


_NOT_LETTER_OR_DIGIT = re.compile(r"[\W_]+")


def dedup_key(text: str) -> str:
    """The text's letters and digits, case-folded: equal for copies that differ only in spacing or punctuation."""
    return _NOT_LETTER_OR_DIGIT.sub("", text.casefold())


def _documents(source: Path, stats: PreparationStats, files_by_folder: Counter, on_error: str) -> Iterator[str]:
    """Stream kept documents as JSONL lines, one file in memory at a time, counting every drop."""
    seen_hashes: set[str] = set()
    seen_loose_hashes: set[str] = set()
    for folder, path in tqdm(corpus_files(source), unit="file", desc=CORPUS_NAME):
        stats.files_read += 1
        files_by_folder[folder] += 1
        try:
            decoded, encoding = decode_bytes(path.read_bytes(), path)
        except CorpusError:
            if on_error == "fail":
                raise
            stats.drop("undecodable")
            continue
        stats.encodings[encoding] += 1
        try:
            text = clean_text(folder, decoded)
        except CorpusError as error:
            if on_error == "fail":
                raise CorpusError(f"{path}: {error}") from error
            stats.drop("malformed")
            continue
        if not text:
            stats.drop("empty")
            continue
        if len(text) < MIN_CHARACTERS:
            stats.drop("too_short")
            continue
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if digest in seen_hashes:
            stats.drop("duplicate")
            continue
        # The same case rebuilt from the tagged folder often differs from its raw text only in
        # spacing, quotes or punctuation: compare letters and digits too (the raw copy, read first, stays).
        loose_digest = hashlib.sha256(dedup_key(text).encode("utf-8")).hexdigest()
        if loose_digest in seen_loose_hashes:
            stats.drop("duplicate_except_punctuation")
            continue
        seen_hashes.add(digest)
        seen_loose_hashes.add(loose_digest)
        stats.keep(text, folder)
        yield json.dumps({"text": text, "source": f"{folder}/{path.name}"}, ensure_ascii=False)


def prepare_lopes2019(source: Path, output_root: Path = Path("."), on_error: str = "fail", replace: bool = False) -> dict[str, Any]:
    """Prepare the corpus into ``output_root/data/lopes2019`` and register it; return the manifest.

    ``on_error="skip"`` leaves out (and counts) files that cannot be decoded or parsed instead of
    failing. The dataset folder and its registry entry are replaced together: a failed run leaves the previous ones as they were.
    """
    if on_error not in ON_ERROR_CHOICES:
        raise CorpusError(f"on_error={on_error!r}: use one of {', '.join(ON_ERROR_CHOICES)}.")
    source, output_root = Path(source), Path(output_root)
    check_layout(source)
    stats = PreparationStats()
    files_by_folder: Counter = Counter()
    with publish_datasets(output_root, DATASET_DIR, REGISTRY_ENTRIES, CORPUS_NAME, replace) as publication:
        staging = publication.staging
        train_path = staging / TRAIN_FILE
        with open(train_path, "w", encoding="utf-8") as train:
            for line in _documents(source, stats, files_by_folder, on_error):
                train.write(line + "\n")
        if stats.documents == 0:
            raise CorpusError(
                f"{source}: no documents in {stats.files_read} files (dropped: {dict(stats.dropped) or 'none'}). "
                f"Check that the files under {', '.join(EXPECTED_FOLDERS)} hold the corpus text."
            )
        manifest = build_manifest(
            CORPUS_NAME,
            source,
            [train_path],
            stats,
            options={"on_error": on_error, "min_characters": MIN_CHARACTERS, "dedup": "sha256 of the cleaned text, then of its case-folded letters and digits"},
        )
        # Every file is counted here, kept or not; documents_by_source counts the kept ones.
        manifest["files_read_by_source"] = {folder: files_by_folder[folder] for folder in EXPECTED_FOLDERS}
        manifest["datasets"] = dataset_records(staging, REGISTRY_ENTRIES, DATASET_DIR)
        publication.write_manifest(manifest)
    log.info(
        "%s: %d files read, %d documents kept, %d characters (~%d tokens), dropped %s",
        CORPUS_NAME,
        stats.files_read,
        stats.documents,
        stats.characters,
        manifest["estimated_tokens"],
        dict(stats.dropped),
    )
    return manifest


# --- Command line (mounted as ``medfactory prepare lopes2019``) ---------------------------------------


def prepare_command(
    source: Annotated[
        Path,
        typer.Option(
            help="The corpus folder, holding 'Texts SPN 1 Raw', 'Texts SPN 2 Raw' and 'Texts Word Embeddings Training'"
        ),
    ],
    output_root: Annotated[
        Path, typer.Option(help="Repository root: gets data/lopes2019/ and dataset_info.json")
    ] = Path("."),
    on_error: Annotated[str, typer.Option(help="fail or skip")] = "fail",
    replace: ReplaceOption = False,
) -> None:
    """Prepare the Lopes et al. 2019 corpus for continued pretraining and register it as 'lopes2019'."""
    with exit_on_corpus_error():
        manifest = prepare_lopes2019(source, output_root=output_root, on_error=on_error, replace=replace)
    for folder, files in manifest["files_read_by_source"].items():
        typer.echo(f"{folder}: {files} files, {manifest['documents_by_source'].get(folder, 0)} documents kept")
    typer.echo(
        f"{manifest['documents']} documents, {manifest['characters']:,} characters, "
        f"~{manifest['estimated_tokens']:,} tokens ({manifest['tokens_estimate_rule']})"
    )
    dropped = ", ".join(f"{reason} {count}" for reason, count in manifest["dropped"].items())
    typer.echo(f"dropped: {dropped or 'none'}")
    output_root = Path(output_root)
    typer.echo(
        f"wrote {output_root / DATASET_DIR / TRAIN_FILE}; registered '{CORPUS_NAME}' in {output_root / REGISTRY_NAME}"
    )


PLUGIN = CorpusPlugin(
    name=CORPUS_NAME,
    summary="Lopes et al. 2019 pt clinical cases (raw cp1252 texts + token/POS/lemma files)",
    command=prepare_command,
)
