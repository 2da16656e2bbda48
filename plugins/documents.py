"""Folders of Spanish or Portuguese medical documents as stage-pt datasets and sources for generation.

``medfactory prepare documents --source DIR --language es`` reads every ``.txt``, ``.md``,
JATS/NLM ``.xml`` / ``.nxml`` (SciELO, PubMed Central), ``.pdf``, ``.vtt`` and ``.srt`` under DIR
(recursively), cleans each into plain text, drops duplicates and documents in another language,
splits by document and writes ``data/<name>/{train,validation,chunks}.jsonl`` with a manifest; it
registers ``<name>`` (train) and ``<name>_validation`` for stage pt. ``chunks.jsonl`` cuts the
*train* documents at sentence boundaries for ``medfactory generate qa``, so generated Q&A never
comes from a held-out document. Every rule (what each format keeps, the clean-up, the language
check, de-duplication, the split, the topic tag) is in docs/documents.md; manifests and messages
hold counts, ids and hashes, never text.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from xml.etree.ElementTree import Element

import typer
from tqdm import tqdm

from medfactory.base.errors import CorpusError, exit_on_corpus_error
from medfactory.base.jsonl import jsonl_line
from medfactory.base.manifest import dataset_records, estimate_tokens, manifest_header, output_facts
from medfactory.base.publish import publish_datasets
from medfactory.base.registry import REGISTRY_NAME
from medfactory.corpus.dedup import DEFAULT_THRESHOLD, NearDuplicateIndex, SeenKeys, duplicate_key
from medfactory.corpus.language import identify
from medfactory.corpus.sentences import chunk_text
from medfactory.corpus.splits import unit_hash
from medfactory.corpus.text import UndecodableBytes, decode, normalise_note, wide_bom_codec
from medfactory.plugins import CorpusPlugin, ReplaceOption

PLUGIN_NAME = "documents"
LANGUAGES = ("es", "pt")
ON_ERROR_CHOICES = ("fail", "skip")
# File suffix -> the record's source_format.
FORMATS = {".txt": "txt", ".md": "md", ".markdown": "md", ".xml": "jats", ".nxml": "jats", ".pdf": "pdf", ".vtt": "vtt", ".srt": "srt"}
TRAIN_FILE, VALIDATION_FILE, CHUNKS_FILE = "train.jsonl", "validation.jsonl", "chunks.jsonl"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
TOPIC_PATTERN = re.compile(r"^[\w][\w.-]{0,99}$")
NO_TOPIC = "(none)"  # the manifest's key for documents without a topic (their records say null)
DEFAULT_SEED = 20240901
DEFAULT_MIN_LANGUAGE_PROBABILITY = 0.5
DEFAULT_MIN_CHARACTERS = 50
MAX_LISTED = 200  # skipped files and duplicate pairs listed (by id) in the manifest; all are counted

logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings about damaged objects would flood the progress bar


class UnreadableDocument(Exception):
    """A file that cannot be read as its format: ``reason`` is the manifest's count key."""

    def __init__(self, reason: str, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.fix = reason, detail, fix


@dataclass(frozen=True)
class DocumentFile:
    path: Path
    relative: str  # POSIX path under --source: what messages name
    source_format: str
    topic: str | None
    document_id: str


@dataclass(frozen=True)
class DocumentOptions:
    source: Path
    language: str
    name: str
    topic: str | None = None
    validation_fraction: float = 0.05
    chunk_characters: int = 2000
    min_language_probability: float = DEFAULT_MIN_LANGUAGE_PROBABILITY
    min_characters: int = DEFAULT_MIN_CHARACTERS
    near_duplicates: float = DEFAULT_THRESHOLD
    on_error: str = "fail"
    seed: int = DEFAULT_SEED
    output_root: Path = Path(".")
    replace: bool = False


@dataclass
class Tally:
    """What the manifest counts (never text)."""

    files_by_format: Counter = field(default_factory=Counter)
    documents_by_format: Counter = field(default_factory=Counter)
    documents_by_topic: Counter = field(default_factory=Counter)
    languages_detected: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    cleaning: Counter = field(default_factory=Counter)
    splits: dict[str, Counter] = field(default_factory=lambda: {"train": Counter(), "validation": Counter()})
    source_bytes: int = 0
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[dict[str, str]] = field(default_factory=list)
    source_digest: Any = field(default_factory=hashlib.sha256)


# --- Finding the files and naming the documents -------------------------------------------------


def document_id(relative: str) -> str:
    """A stable id from the path under --source: a readable ASCII slug of it, then 10 hex digits of its hash.

    ``alternative_medicine/Acupuntura básica.txt`` -> ``alternative_medicine-acupuntura_basica-<hash>``;
    the hash (of the whole relative path, suffix included) keeps ``a.txt`` and ``a.md`` apart.
    """
    stem = relative.rsplit(".", 1)[0] if "." in relative.rsplit("/", 1)[-1] else relative
    ascii_text = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii").lower()
    parts = [re.sub(r"[^a-z0-9]+", "_", part).strip("_") for part in ascii_text.split("/")]
    slug = "-".join(part for part in parts if part)[:80].strip("-_") or "document"
    digest = hashlib.blake2b(relative.encode("utf-8"), digest_size=5).hexdigest()
    return f"{slug}-{digest}"


def _inside(base: Path, path: Path) -> bool:
    resolved = path.resolve()
    return resolved == base or base in resolved.parents


def find_documents(source: Path, topic: str | None, ignored: Counter) -> list[DocumentFile]:
    """The supported files under ``source``, sorted by relative path. Hidden files, other suffixes and links
    that lead outside ``source`` are left out and counted in ``ignored``; folders behind links are not entered."""
    source = Path(source)
    if not source.is_dir():
        what = "is a file" if source.exists() else "does not exist"
        raise CorpusError(f"--source {source} {what}. Fix: pass the folder that holds the documents ({', '.join(sorted(set(FORMATS)))}).")
    base = source.resolve()
    found: list[DocumentFile] = []
    for folder, subfolders, names in os.walk(source, followlinks=False):
        linked = [name for name in subfolders if (Path(folder) / name).is_symlink()]
        if linked:
            ignored["linked_folder"] += len(linked)  # never entered, wherever it leads (os.walk does not follow links)
        subfolders[:] = sorted(name for name in subfolders if not name.startswith(".") and name not in linked)
        for file_name in names:
            path = Path(folder) / file_name
            suffix = path.suffix.lower()
            if file_name.startswith("."):
                ignored["hidden_file"] += 1
            elif suffix not in FORMATS:
                ignored[f"suffix {suffix[:12] or '(none)'}"] += 1
            elif not _inside(base, path) or not path.is_file():
                ignored["link_outside_source"] += 1  # no path leaves --source, whatever a link says
            else:
                relative = path.relative_to(source).as_posix()
                first_level = relative.split("/", 1)[0] if "/" in relative else None
                found.append(DocumentFile(path, relative, FORMATS[suffix], topic or first_level, document_id(relative)))
    if not found:
        listed = ", ".join(f"{reason} {count}" for reason, count in sorted(ignored.items())) or "nothing"
        raise CorpusError(
            f"--source {source}: no document files found (supported: {', '.join(sorted(FORMATS))}; ignored: {listed}). "
            "Fix: point --source at the folder of documents."
        )
    return sorted(found, key=lambda document: document.relative)


# --- Reading each format into text ---------------------------------------------------------------


def decode_text(data: bytes) -> str:
    """Bytes of a text file: UTF-16/32 with a byte-order mark, else UTF-8, else cp1252 (medfactory.corpus.text.decode)."""
    codec = wide_bom_codec(data[:4])
    if codec is None and b"\x00" in data:
        raise UndecodableBytes(data.index(b"\x00"), 0, "text (NUL bytes: a binary file, or UTF-16 without a byte-order mark)")
    text, _ = decode(data, codec or "auto")
    return text.lstrip("\ufeff")


_FENCE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})[^\n]*\n.*?(?:^[ ]{0,3}\1[`~]*[ \t]*$|\Z)", re.M | re.S)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n.*?\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
# (pattern, replacement) in the order they apply; see docs/documents.md ("Markdown").
_MARKDOWN_RULES = [
    (re.compile(r"<!--.*?-->", re.S), ""),  # HTML comments
    (re.compile(r"^[ ]{0,3}\[[^\]\n]+\]:[ \t]*\S+.*$", re.M), ""),  # link reference definitions
    (re.compile(r"!\[[^\]\n]*\](?:\([^)\n]*\)|\[[^\]\n]*\])"), ""),  # images
    (re.compile(r"\[\^[^\]\n]+\]"), ""),  # footnote references
    (re.compile(r"\[([^\]\n]+)\](?:\([^)\n]*\)|\[[^\]\n]*\])"), r"\1"),  # links -> their text
    (re.compile(r"<(?:https?://|mailto:)[^>\s]+>"), ""),  # autolinks
    (re.compile(r"(`+)(.+?)\1"), r"\2"),  # inline code -> its text
    (re.compile(r"^[ ]{0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.M), r"\n\1\n"),  # ATX headings -> own paragraph
    (re.compile(r"^(?=[^\n]*\S)([^\n]+)\n[ ]{0,3}(?:=+|-+)[ \t]*$", re.M), r"\n\1\n"),  # setext headings (linear: no .*\S.*)
    (re.compile(r"^[ ]{0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.M), ""),  # horizontal rules
    (re.compile(r"^[ \t]*\|.*\|[ \t]*$", re.M), ""),  # table rows (tables are dropped, as in JATS)
    (re.compile(r"^[ ]{0,3}(?:>[ ]?)+", re.M), ""),  # block quote markers
    (re.compile(r"^[ \t]*(?:[-*+]|\d{1,3}[.)])[ \t]+", re.M), ""),  # list markers
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # strong emphasis
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),  # emphasis
    (re.compile(r"(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)"), r"\1"),
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"), r"\1"),  # strike-through
    (re.compile(r"</?[A-Za-z][^>\n]*>"), ""),  # inline HTML tags (their text stays)
]


def markdown_to_text(markdown: str) -> str:
    """Markdown as plain text: markup gone, headings their own paragraphs, links their text; code blocks,
    images, tables, front matter and HTML comments dropped."""
    text = _FRONT_MATTER.sub("", markdown.replace("\r\n", "\n"))
    text = _FENCE.sub("\n", text)
    for pattern, replacement in _MARKDOWN_RULES:
        text = pattern.sub(replacement, text)
    return text


# JATS elements left out with their content (see docs/documents.md, "JATS"), and those kept only for their caption.
JATS_DROPPED = frozenset(
    {"ref-list", "back", "sub-article", "table", "disp-formula", "inline-formula", "graphic", "inline-graphic", "media", "alternatives",
     "tex-math", "math", "label", "fn-group", "fn", "ack", "app-group", "glossary", "supplementary-material", "object-id", "trans-abstract",
     "trans-title-group", "table-wrap-foot", "permissions", "funding-group", "kwd-group", "related-article", "processing-meta"}
)  # fmt: skip
JATS_CAPTIONED = frozenset({"fig", "table-wrap", "chem-struct-wrap"})
JATS_PARAGRAPHS = frozenset({"p", "title", "verse-line", "term", "attrib", "article-title", "subtitle"})
# Blocks JATS allows inside a <p>: they become paragraphs of their own after it.
JATS_NESTED_BLOCKS = frozenset({"list", "fig", "table-wrap", "disp-quote", "boxed-text", "def-list", "fig-group", "table-wrap-group", "statement", "speech"})
CITATION_REF_TYPES = (None, "bibr", "fn", "table-fn")  # a numeric xref of these is a reference number; "figura <xref>1</xref>" stays
_CITATION_MARKER = re.compile(r"[\d\s,;–—\-\[\]()]+")
_EMPTY_BRACKETS = re.compile(r"\s*[\[(][\s,;–—\-]*[\])]")


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _is_citation_number(element: Element, tag: str) -> bool:
    return tag == "xref" and element.get("ref-type") in CITATION_REF_TYPES and bool(_CITATION_MARKER.fullmatch("".join(element.itertext()) or " "))


def _inline(element: Element, nested: list[Element]) -> str:
    """The text of a paragraph-like element, without dropped elements and numeric citation markers."""
    parts = [element.text or ""]
    for child in element:
        tag = _local(child.tag)
        if tag in JATS_NESTED_BLOCKS:
            nested.append(child)
        elif tag in JATS_DROPPED or _is_citation_number(child, tag):
            # "[12]" or a superscript "3": reference numbers, meaningless without the dropped ref-list
            if (child.tail or " ")[0] in ".,;:)":
                parts[-1] = parts[-1].rstrip()  # "Latina [1]." -> "Latina."
        else:
            parts.append(_inline(child, nested))
        parts.append(child.tail or "")
    return "".join(parts)


def _jats_blocks(element: Element, out: list[str]) -> None:
    """Append the paragraphs of ``element`` to ``out``, in document order."""
    tag = _local(element.tag)
    if tag in JATS_DROPPED:
        return
    if tag in JATS_CAPTIONED:  # a figure's graphic and a table's cells are not prose; the caption is
        for child in element:
            if _local(child.tag) == "caption":
                _jats_blocks(child, out)
        return
    loose_text = (element.text or "").strip() or any((child.tail or "").strip() for child in element)
    if tag in JATS_PARAGRAPHS or loose_text:
        nested: list[Element] = []
        text = _EMPTY_BRACKETS.sub("", " ".join(_inline(element, nested).split()))
        if text:
            out.append(text)
        for child in nested:
            _jats_blocks(child, out)
        return
    for child in element:
        _jats_blocks(child, out)


def _child(element: Element | None, name: str) -> Element | None:
    return None if element is None else next((child for child in element if _local(child.tag) == name), None)


def jats_to_text(data: bytes) -> str:
    """A JATS / NLM article: its title, abstracts and body (sections, paragraphs, lists, figure and table
    captions), parsed with defusedxml (entity declarations and external references are refused)."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError, fromstring

    fix = "re-export the article as JATS XML (SciELO and PMC offer it), or remove the file"
    try:
        root = fromstring(data)
    except DefusedXmlException as error:
        raise UnreadableDocument("xml_refused", f"XML refused: it declares entities or external references ({type(error).__name__})", fix) from error
    except ParseError as error:
        line, column = getattr(error, "position", (0, 0))
        raise UnreadableDocument("malformed_xml", f"malformed XML at line {line}, column {column}", fix) from error
    article = root if _local(root.tag) == "article" else _child(root, "article")
    if article is None:
        raise UnreadableDocument("not_jats", f"not a JATS/NLM article (its root element is <{_local(root.tag)[:40]}>, not <article>)", fix)
    meta = _child(_child(article, "front"), "article-meta")
    paragraphs: list[str] = []
    try:
        title = _child(_child(meta, "title-group"), "article-title")
        if title is not None:
            _jats_blocks(title, paragraphs)
        for element in [child for child in (meta if meta is not None else []) if _local(child.tag) == "abstract"]:
            _jats_blocks(element, paragraphs)
        for part in ("body", "floats-group"):
            element = _child(article, part)
            if element is not None:
                _jats_blocks(element, paragraphs)
    except RecursionError as error:
        raise UnreadableDocument("malformed_xml", "XML nested too deeply to be an article", fix) from error
    return "\n\n".join(paragraphs)


def pdf_pages(data: bytes) -> list[str]:
    """The text of each page (pypdf's extraction); an encrypted PDF is tried with the empty password."""
    from pypdf import PdfReader

    fix = "check that the file opens in a PDF viewer and re-download it, or remove it"
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableDocument("encrypted_pdf", "the PDF is encrypted with a password", "save an unencrypted copy (e.g. with qpdf) or remove it")
        return [page.extract_text() or "" for page in reader.pages]
    except UnreadableDocument:
        raise
    except Exception as error:  # pypdf raises many types (PdfReadError, KeyError, ValueError...) on damaged files
        raise UnreadableDocument("unreadable_pdf", f"not a readable PDF ({type(error).__name__})", fix) from error


PDF_EDGE_LINES = 3  # lines at the top and at the bottom of a page where running headers, footers and page numbers are looked for
_PAGE_NUMBER = re.compile(r"(?:(?:p[áa]g(?:ina)?|page|p)\.?\s*)?[-–—]?\s*\d{1,4}\s*[-–—]?(?:\s*(?:de|of|/)\s*\d{1,4})?", re.I)


def _signature(line: str) -> str:
    """A line as running headers repeat it: digits (page numbers, dates) equal, case and spacing ignored."""
    return re.sub(r"\d+", "#", " ".join(line.split())).casefold()


def _edge(lines: list[str]) -> set[int]:
    filled = [index for index, line in enumerate(lines) if line.strip()]
    return set(filled[:PDF_EDGE_LINES] + filled[-PDF_EDGE_LINES:])


def strip_running_lines(pages: list[str], counts: Counter) -> str:
    """The pages joined, without page numbers and without running headers and footers: lines near a page's
    top or bottom whose :func:`_signature` is near the top or bottom of more than half of the pages (3 pages or more)."""
    page_lines = [page.splitlines() for page in pages]
    repeated: set[str] = set()
    if len(pages) >= 3:
        seen = Counter(signature for lines in page_lines for signature in {_signature(lines[i]) for i in _edge(lines)})
        repeated = {signature for signature, pages_seen in seen.items() if pages_seen > len(pages) / 2}
    kept_pages = []
    for lines in page_lines:
        edge = _edge(lines)
        kept = []
        for index, line in enumerate(lines):
            if index in edge and _signature(line) in repeated:
                counts["pdf_running_lines_removed"] += 1
            elif index in edge and _PAGE_NUMBER.fullmatch(line.strip()):
                counts["pdf_page_numbers_removed"] += 1
            else:
                kept.append(line.rstrip())
        kept_pages.append("\n".join(kept))
    return "\n".join(kept_pages)


_SOUND_TAG = re.compile(r"\[[^\]\n]*\]|\((?:m[úu]sica|music|risas?|risos?|laughter|aplausos?|applause|inaudible|sil[eê]ncio)\)|[♪♫]+", re.I)
# Speaker labels at a cue's start: ">>", a dialogue dash, "Speaker 2:", or a name in capitals ("DRA. LÓPEZ:").
_SPEAKER = re.compile(
    r"^(?:>>+\s*|-\s+|(?i:speaker|orador|oradora|hablante|locutor|locutora|interlocutor|participante)\s*\d+\s*:\s*"
    r"|[A-ZÁÉÍÓÚÑÇÃÕÊÂ][A-ZÁÉÍÓÚÑÇÃÕÊÂ.\- ]{1,40}:\s+)"
)


def captions_to_text(text: str, source_format: str, counts: Counter) -> str:
    """The spoken text of WebVTT / SubRip captions, one paragraph: no timestamps, cue settings, tags, speaker
    labels or sound tags; a line equal to the one before (rolling auto captions) or a prefix of the next is dropped."""
    import webvtt
    from webvtt.errors import MalformedCaptionError, MalformedFileError

    try:
        captions = webvtt.from_string(text) if source_format == "vtt" else webvtt.from_buffer(text.splitlines(True), format="srt")
    except (MalformedFileError, MalformedCaptionError, ValueError) as error:
        kind = "WebVTT (it must start with WEBVTT)" if source_format == "vtt" else "SubRip (numbered cues with 00:00:01,000 --> times)"
        raise UnreadableDocument("malformed_captions", f"not valid {kind} ({type(error).__name__})", "re-export the captions, or remove the file") from error
    spoken: list[str] = []
    for caption in captions:
        for raw_line in caption.text.split("\n"):
            line = " ".join(_SPEAKER.sub("", _SOUND_TAG.sub(" ", raw_line).strip()).split())
            if not line:
                continue
            last = spoken[-1] if spoken else ""
            if line.casefold() == last.casefold():
                counts["caption_repeated_lines_removed"] += 1
            elif last and line.casefold().startswith(last.casefold()):
                spoken[-1] = line  # an auto caption growing word by word
                counts["caption_repeated_lines_removed"] += 1
            else:
                spoken.append(line)
    return " ".join(spoken)


def read_bytes(document: DocumentFile, tally: Tally) -> bytes:
    try:
        data = document.path.read_bytes()
    except OSError as error:
        raise UnreadableDocument("unreadable_file", f"cannot be read ({error.strerror or type(error).__name__})", "check its permissions") from error
    tally.source_bytes += len(data)
    tally.source_digest.update(f"{document.relative}\x00{hashlib.sha256(data).hexdigest()}\n".encode())
    return data


def document_text(document: DocumentFile, data: bytes, counts: Counter) -> str:
    """The raw text of one file (before the clean-up shared by every format)."""
    if document.source_format == "pdf":
        return strip_running_lines(pdf_pages(data), counts)
    if document.source_format == "jats":
        return jats_to_text(data)
    try:
        text = decode_text(data)
    except UndecodableBytes as error:
        raise UnreadableDocument("undecodable", f"not text in UTF-8, cp1252, UTF-16 or UTF-32 (byte offset {error.offset})", "re-save it as UTF-8") from error
    if document.source_format == "md":
        return markdown_to_text(text)
    if document.source_format in ("vtt", "srt"):
        return captions_to_text(text, document.source_format, counts)
    return text


# --- Clean-up shared by every format ----------------------------------------------------------------

# Whole lines (stripped, at most BOILERPLATE_MAX_CHARACTERS long) dropped wherever they are; counted by name.
BOILERPLATE_MAX_CHARACTERS = 250
BOILERPLATE_PATTERNS = tuple(
    (name, re.compile(pattern, re.I))
    for name, pattern in (
        ("copyright", r"(?:©|\(c\)\s|copyright\b).*|.*\b(?:all rights reserved|todos los derechos reservados|todos os direitos reservados)\b.*"),
        ("licence", r".*\b(?:creative commons|cc[ -]by(?:[ -](?:nc|nd|sa))*(?:[ -]\d\.\d)?|bajo (?:una|la) licencia|sob (?:uma|a) licença"
                    r"|open access article)\b.*"),
        ("downloaded_from", r"(?:downloaded|descargado|baixado|retrieved|consultado|acessado|accedido)\s+(?:from|de|desde|em|el|on)\b.*"),
        ("doi", r"(?:doi:?\s*|https?://(?:dx\.)?doi\.org/)10\.\d{4,9}/\S+"),
        ("url", r"(?:https?://|www\.)\S+"),
        ("issn", r"(?:e-?|print\s+|online\s+)?issn\b.*"),
        # a date right after the word ("Recibido: 3 de mayo", "Aceito em 2021", "Received May 3"), so prose that starts so stays
        ("dates_received_accepted", r"(?:recibido|aceptado|received|accepted|recebido|aceito|aprovado)(?: (?:el|em|en|on|in))?\s*:?\s*(?:\d|[a-zç]+ \d).*"),
        ("correspondence", r"(?:\*\s*)?(?:correspondencia|correspondência|correspondence|autor para correspondencia|autor correspondente|e-?mail)\b.*"),
    )
)
REFERENCES_HEADING = re.compile(
    r"^[ \t]*(?:\d{1,2}\.?[ \t]+)?(?:referencias(?: bibliogr[áa]ficas)?|refer[êe]ncias(?: bibliogr[áa]ficas)?|references|reference list|"
    r"bibliograf[íi]a|bibliography|literatura citada|literature cited)[ \t]*:?[ \t]*$",
    re.I | re.M,
)
# word-\nword -> wordword when both sides are letters and the next is lower case (Guillain-\nBarré keeps its hyphen).
_HYPHENATED = re.compile(r"(?<=[^\W\d_])-[ \t]*\n[ \t]*(?=[^\W\d_])")
# Portuguese clitics after a hyphen stay hyphenated ("encontra-\nse" is "encontra-se").
PT_CLITICS = frozenset({"se", "lhe", "lhes", "me", "te", "nos", "vos", "o", "a", "os", "as", "lo", "la", "los", "las", "no", "na", "nas"})
_SENTENCE_END_LINE = re.compile(r"(?<=[^\n.!?:;»”\"')\]])\n(?=[^\n])")


def drop_boilerplate(text: str, counts: Counter) -> str:
    kept = []
    for line in text.split("\n"):
        stripped = line.strip()
        short = 0 < len(stripped) <= BOILERPLATE_MAX_CHARACTERS
        name = next((name for name, pattern in BOILERPLATE_PATTERNS if pattern.fullmatch(stripped)), None) if short else None
        if name:
            counts[f"boilerplate_{name}_lines_removed"] += 1
        else:
            kept.append(line)
    return "\n".join(kept)


def drop_references(text: str, counts: Counter) -> str:
    """Text before the last References / Referencias / Referências / Bibliografía heading (a line of its own)."""
    last = None
    for match in REFERENCES_HEADING.finditer(text):
        last = match
    if last is None or not text[: last.start()].strip():
        return text
    counts["references_sections_removed"] += 1
    counts["references_characters_removed"] += len(text) - last.start()
    return text[: last.start()]


def dehyphenate(text: str, language: str, counts: Counter) -> str:
    def join(match: re.Match) -> str:
        following = re.match(r"[^\W\d_]+", text[match.end() :])
        word = following.group(0) if following else ""
        if not word[:1].islower() or (language == "pt" and word.lower() in PT_CLITICS):
            return "-"
        counts["hyphenations_joined"] += 1
        return ""

    return _HYPHENATED.sub(join, text)


def clean_text(text: str, source_format: str, language: str, counts: Counter) -> str:
    """Boilerplate lines, a final references section and line-end hyphenation removed, whitespace collapsed
    (medfactory.corpus.text.normalise_note); PDF lines re-joined except after a sentence end."""
    text = normalise_note(text)
    text = drop_boilerplate(text, counts)
    text = drop_references(text, counts)
    text = dehyphenate(text, language, counts)
    if source_format == "pdf":
        text = _SENTENCE_END_LINE.sub(" ", text)
    return normalise_note(text)


# --- Preparing the corpus -------------------------------------------------------------------------


def registry_entries(name: str) -> dict[str, dict[str, Any]]:
    folder = f"data/{name}"
    return {
        name: {"file_name": f"{folder}/{TRAIN_FILE}", "columns": {"prompt": "text"}},
        f"{name}_validation": {"file_name": f"{folder}/{VALIDATION_FILE}", "columns": {"prompt": "text"}},
    }


def check_options(options: DocumentOptions) -> None:
    problems = []
    if options.language not in LANGUAGES:
        problems.append(f"--language {options.language!r}: use one of {', '.join(LANGUAGES)}")
    if not NAME_PATTERN.match(options.name or ""):
        problems.append(f"--name {options.name!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit (it names data/<name>/)")
    if options.topic is not None and not TOPIC_PATTERN.match(options.topic):
        problems.append(f"--topic {options.topic!r}: use letters, digits, '_', '-' or '.' (e.g. alternative_medicine)")
    if not 0 <= options.validation_fraction < 1:
        problems.append(f"--validation-fraction {options.validation_fraction}: use a value in [0, 1)")
    if options.chunk_characters < 100:
        problems.append(f"--chunk-characters {options.chunk_characters}: use at least 100")
    if not 0 <= options.min_language_probability <= 1:
        problems.append(f"--min-language-probability {options.min_language_probability}: use a value in [0, 1]")
    if not 0 <= options.near_duplicates <= 1:
        problems.append(f"--near-duplicates {options.near_duplicates}: use a Jaccard similarity in (0, 1], or 0 to keep near duplicates")
    if options.on_error not in ON_ERROR_CHOICES:
        problems.append(f"--on-error {options.on_error!r}: use one of {', '.join(ON_ERROR_CHOICES)}")
    if problems:
        raise CorpusError("; ".join(problems) + ". Nothing was written.")


@dataclass
class Deduplicator:
    seen: SeenKeys = field(default_factory=SeenKeys)
    kept_by_key: dict[int, str] = field(default_factory=dict)
    near: NearDuplicateIndex | None = None

    def duplicate_of(self, document_id_: str, text: str, near: bool) -> tuple[str, str] | None:
        """(kind, kept document id) when ``text`` duplicates a kept document; else None (and, with ``near``, remember it)."""
        key = duplicate_key(text)
        if not near:
            if not self.seen.add_if_new(key):
                return "exact_duplicate", self.kept_by_key.get(key, "")
            self.kept_by_key[key] = document_id_
            return None
        if self.near is not None:
            match = self.near.add_if_new(document_id_, text)
            if match is not None:
                return "near_duplicate", match
        return None


IDENTIFY_SAMPLE_CHARACTERS = 3000  # from the start, the middle and the end: py3langid reads about 1 MB/s


def language_sample(text: str) -> str:
    """What the language check reads: the whole text up to 3 samples' length, else its start, middle and end."""
    size = IDENTIFY_SAMPLE_CHARACTERS
    if len(text) <= 3 * size:
        return text
    middle = len(text) // 2 - size // 2
    return "\n".join((text[:size], text[middle : middle + size], text[-size:]))


def clean_document(document: DocumentFile, options: DocumentOptions, tally: Tally, dedup: Deduplicator) -> str | None:
    """The cleaned text of one file, or None when it is dropped (counted by reason)."""
    try:
        raw = document_text(document, read_bytes(document, tally), tally.cleaning)
        text = clean_text(raw, document.source_format, options.language, tally.cleaning)
    except UnreadableDocument as problem:
        if options.on_error == "fail":
            raise CorpusError(
                f"{document.relative} (in --source {options.source}): {problem.detail}. Fix: {problem.fix}, or pass --on-error skip "
                "to leave such files out (counted in the manifest). Nothing was written."
            ) from problem
        tally.dropped[problem.reason] += 1
        if len(tally.skipped_files) < MAX_LISTED:
            tally.skipped_files.append({"document_id": document.document_id, "reason": problem.reason})
        return None
    reason = "empty" if not text else "too_short" if len(text) < options.min_characters else None
    duplicate = None
    if reason is None:
        language, probability = identify(language_sample(text))
        tally.languages_detected[language] += 1
        if language != options.language:
            reason = f"language_{language}"
        elif probability < options.min_language_probability:
            reason = "language_uncertain"
        else:  # exact first (8 bytes a document), then near (a MinHash signature a document)
            duplicate = dedup.duplicate_of(document.document_id, text, near=False) or dedup.duplicate_of(document.document_id, text, near=True)
    if duplicate is not None:
        reason = duplicate[0]
        if len(tally.duplicates) < MAX_LISTED:
            tally.duplicates.append({"document_id": document.document_id, "duplicate_of": duplicate[1], "kind": duplicate[0]})
    if reason:
        tally.dropped[reason] += 1
        return None
    return text


def write_document(document: DocumentFile, text: str, options: DocumentOptions, tally: Tally, handles: dict[str, Any]) -> None:
    split = "validation" if unit_hash(options.seed, document.document_id) < options.validation_fraction else "train"
    record = {"id": document.document_id, "text": text, "topic": document.topic, "language": options.language, "source_format": document.source_format}
    handles[split].write(jsonl_line(record))
    tally.splits[split]["documents"] += 1
    tally.splits[split]["characters"] += len(text)
    tally.documents_by_format[document.source_format] += 1
    tally.documents_by_topic[document.topic or NO_TOPIC] += 1
    if split != "train":
        return  # chunks come from training documents only: generated Q&A never quotes a held-out document
    pieces = [piece.strip() for piece in chunk_text(text, options.chunk_characters, options.language)]
    for index, chunk in enumerate(piece for piece in pieces if piece):
        row = {"id": f"{document.document_id}:{index}", "document_id": document.document_id, "chunk": index, "text": chunk}
        handles["chunks"].write(jsonl_line({**row, "topic": document.topic, "language": options.language}))
        tally.splits["train"]["chunks"] += 1
        tally.splits["train"]["chunk_characters"] += len(chunk)


def build_manifest(options: DocumentOptions, tally: Tally, files: list[DocumentFile], ignored: Counter, staging: Path, stale: int) -> dict[str, Any]:
    entries = registry_entries(options.name)
    kept = sum(counter["documents"] for counter in tally.splits.values())
    characters = sum(counter["characters"] for counter in tally.splits.values())
    near = NearDuplicateIndex(options.near_duplicates).settings() if options.near_duplicates > 0 else None
    settings = {key: getattr(options, key) for key in ("language", "topic", "validation_fraction", "chunk_characters", "min_language_probability",
                                                      "min_characters", "near_duplicates", "on_error", "seed")}  # fmt: skip
    return {
        **manifest_header(PLUGIN_NAME, options.source, settings),
        "name": options.name,
        "language": options.language,
        "files": len(files),
        "files_by_format": dict(sorted(tally.files_by_format.items())),
        "ignored_files": dict(sorted(ignored.items())),
        "source_bytes": tally.source_bytes,
        "source_sha256": tally.source_digest.hexdigest(),
        "documents": kept,
        "documents_by_format": dict(sorted(tally.documents_by_format.items())),
        "documents_by_topic": dict(sorted(tally.documents_by_topic.items())),
        "characters": characters,
        "estimated_tokens": estimate_tokens(characters),
        "splits": {split: {key: counter[key] for key in ("documents", "characters", "chunks", "chunk_characters") if split == "train" or "chunk" not in key}
                   for split, counter in tally.splits.items()},  # fmt: skip
        "split": {"by": "document", "rule": "validation when unit_hash(seed, document id) < validation_fraction", "seed": options.seed},
        "chunks": {"file": CHUNKS_FILE, "from_split": "train", "max_characters": options.chunk_characters, "records": tally.splits["train"]["chunks"]},
        "languages_detected": dict(sorted(tally.languages_detected.items())),
        "dropped": dict(sorted(tally.dropped.items())),
        "cleaning": dict(sorted(tally.cleaning.items())),
        "duplicates": tally.duplicates,
        "skipped_files": tally.skipped_files,
        "near_duplicate_settings": near,
        "stale_staging_removed": stale,
        "datasets": dataset_records(staging, entries, Path("data") / options.name),
        "outputs": output_facts([staging / TRAIN_FILE, staging / VALIDATION_FILE, staging / CHUNKS_FILE]),
        "registered": sorted(entries),
    }


def prepare_documents(options: DocumentOptions) -> dict[str, Any]:
    """Read, clean, check and split the documents under ``options.source``; publish ``data/<name>/`` and its
    two registry entries together (nothing is replaced when anything fails). Returns the manifest."""
    check_options(options)
    ignored: Counter = Counter()
    files = find_documents(options.source, options.topic, ignored)
    tally = Tally()
    dedup = Deduplicator(near=NearDuplicateIndex(options.near_duplicates) if options.near_duplicates > 0 else None)
    entries = registry_entries(options.name)
    with publish_datasets(options.output_root, Path("data") / options.name, entries, PLUGIN_NAME, options.replace) as publication:
        staging = publication.staging
        names = {"train": TRAIN_FILE, "validation": VALIDATION_FILE, "chunks": CHUNKS_FILE}
        handles = {split: open(staging / file_name, "w", encoding="utf-8") for split, file_name in names.items()}  # noqa: SIM115 (closed below)
        try:
            for document in tqdm(files, desc="documents", unit="file"):
                tally.files_by_format[document.source_format] += 1
                text = clean_document(document, options, tally, dedup)
                if text is not None:
                    write_document(document, text, options, tally, handles)
        finally:
            for handle in handles.values():
                handle.close()
        if not tally.splits["train"]["documents"]:
            kept = tally.splits["validation"]["documents"]
            dropped = ", ".join(f"{reason} {count}" for reason, count in sorted(tally.dropped.items())) or "none"
            raise CorpusError(
                f"--source {options.source}: no training document remains ({kept} in validation; dropped: {dropped}). "
                "Nothing was written. Fix: add documents, lower --validation-fraction or --min-language-probability, or check --language."
            )
        manifest = build_manifest(options, tally, files, ignored, staging, publication.stale_removed)
        publication.write_manifest(manifest)
    return manifest


# --- Command line (mounted as ``medfactory prepare documents``) ---------------------------------------


def prepare_command(
    source: Annotated[Path, typer.Option(help="Folder of .txt, .md, JATS .xml/.nxml, .pdf, .vtt, .srt documents (searched recursively)")],
    language: Annotated[str, typer.Option(help="Language of the corpus: es or pt (documents identified as another language are dropped)")],
    name: Annotated[str | None, typer.Option(help="Dataset name: data/<name>/, registered as <name> and <name>_validation (documents_<language>)")] = None,
    topic: Annotated[str | None, typer.Option(help="Topic tag of every document (default: the first folder level under --source)")] = None,
    validation_fraction: Annotated[float, typer.Option(help="Share of documents in the validation split (by document id and --seed)")] = 0.05,
    chunk_characters: Annotated[int, typer.Option(help="Longest chunk of chunks.jsonl, cut at sentence boundaries")] = 2000,
    min_language_probability: Annotated[float, typer.Option(help="Drop documents identified as --language with a lower probability")] = 0.5,
    min_characters: Annotated[int, typer.Option(help="Drop documents shorter than this after clean-up")] = DEFAULT_MIN_CHARACTERS,
    near_duplicates: Annotated[float, typer.Option(help="Drop near duplicates at this estimated Jaccard similarity (word 5-grams); 0 keeps them")] = 0.85,
    on_error: Annotated[str, typer.Option(help="fail on the first unreadable file (naming it), or skip such files (counted by reason)")] = "fail",
    seed: Annotated[int, typer.Option(help="Seed of the train/validation split")] = DEFAULT_SEED,
    output_root: Annotated[Path, typer.Option(help="Repository root: gets data/<name>/ and dataset_info.json")] = Path("."),
    replace: ReplaceOption = False,
) -> None:
    """Clean, de-duplicate, language-check and split a folder of medical documents into stage-pt datasets and chunks for generation."""
    options = DocumentOptions(
        source=source, language=language, name=name or f"documents_{language}", topic=topic, validation_fraction=validation_fraction,
        chunk_characters=chunk_characters, min_language_probability=min_language_probability, min_characters=min_characters,
        near_duplicates=near_duplicates, on_error=on_error, seed=seed, output_root=output_root, replace=replace,
    )  # fmt: skip
    with exit_on_corpus_error():
        manifest = prepare_documents(options)
    splits = manifest["splits"]
    dropped = ", ".join(f"{reason} {count}" for reason, count in manifest["dropped"].items()) or "none"
    typer.echo(
        f"{manifest['documents']} documents of {manifest['files']} files ({manifest['characters']:,} characters): train {splits['train']['documents']}, "
        f"validation {splits['validation']['documents']}, {splits['train']['chunks']} chunks; dropped: {dropped}"
    )
    if not splits["validation"]["documents"]:
        warning = f"warning: the validation split is empty; raise --validation-fraction before using {options.name}_validation"
        typer.secho(warning, fg=typer.colors.YELLOW, err=True)
    folder = Path(output_root) / "data" / options.name
    registered = ", ".join(manifest["registered"])
    typer.echo(f"wrote {folder}/{{{TRAIN_FILE},{VALIDATION_FILE},{CHUNKS_FILE}}}; registered {registered} in {Path(output_root) / REGISTRY_NAME}")


PLUGIN = CorpusPlugin(
    name=PLUGIN_NAME,
    summary="Folders of Spanish/Portuguese medical documents (.txt, .md, JATS XML, PDF, .vtt/.srt) as stage-pt datasets and chunks for generation",
    command=prepare_command,
)
