"""Streaming readers for the formats hospitals export notes in: .txt folders, CSV/TSV, JSONL, Parquet.

Each reader yields one :class:`RawNote` at a time (memory does not grow with the corpus), knows
where every record came from (file and line, for error messages) and hashes every byte it reads
(for the manifest). Text files are decoded per line, UTF-8 first then cp1252, because exports
mix the two even inside one file; files with a UTF-16/32 byte-order mark (or a forced UTF-16/32
encoding) are decoded as one stream. The encodings met are counted per file.

No message names a cell value: the columns of a file are listed only when they look like column
names (:func:`describe_columns`), and CSV quoting gone wrong (a quote that is never closed and
swallows the rows after it) stops the read at the line where the quote opened.
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import io
import itertools
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medfactory.base.errors import CorpusError
from medfactory.corpus.text import AUTO_ENCODING, UndecodableBytes, decode, stream_codec

SUPPORTED_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl", ".parquet")
FIELDS = ("text", "note_id", "patient_id", "admission_id", "date")
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # notes can exceed csv's 128 KB default
# The option of ``medfactory prepare notes|semclinbr|brateca`` that names each field's column
# (tests/test_hostile_readers.py checks that every one is an option of the command).
FIELD_FLAGS = {
    "text": "--text-column",
    "note_id": "--id-column",
    "patient_id": "--patient-column",
    "admission_id": "--admission-column",
    "date": "--date-column",
}
# A column name: starts with a letter or "_", then letters, digits, "_", "-" or "."; short, at most
# three digits. Prose (spaces), numbers, dates, CPFs, e-mails and record numbers do not match.
_HEADER_NAME = re.compile(r"[^\W\d][\w.\-]{0,39}")
_HEADER_MAX_DIGITS = 3


def looks_like_column_name(value: str) -> bool:
    """True when ``value`` can be shown as a column name: it does not look like data."""
    return bool(_HEADER_NAME.fullmatch(value)) and sum(char.isdigit() for char in value) <= _HEADER_MAX_DIGITS


# Per kind of column list: what its entries are called, what they are when they are data, and the
# fix when they look like data (a headerless CSV cannot name its columns, so no flag helps there).
_COLUMN_SOURCES = {
    "header": ("columns", "the first row does not look like a header row", "add a header row of column names (the first row is read as the header)"),
    "keys": ("keys", "the first record's keys do not look like field names", "pass {flag} with the key that holds the {field}"),
    "schema": ("columns", "some column names look like data", "pass {flag} with the column that holds the {field}"),
}


def describe_columns(columns: Sequence[str], kind: str = "header") -> str:
    """The one way a message names the columns of a user's file (a CSV header, the keys of a JSON
    record, a Parquet schema: ``kind``).

    They are listed only when every one looks like a column name; otherwise only their number is
    given, because a headerless file's "columns" are its first note's cells.
    """
    what, why, _ = _COLUMN_SOURCES[kind]
    if not columns:
        return f"no {what} found"
    if all(map(looks_like_column_name, columns)):
        return f"the {what} found are: {', '.join(map(repr, columns))}"
    hint = ""
    if any("\x00" in column for column in columns):
        hint = "; it holds NUL characters, as UTF-16 or UTF-32 without a byte-order mark does: pass --encoding utf-16-le, utf-16-be, utf-32-le or utf-32-be"
    counted = f"{len(columns)} {what if len(columns) != 1 else what[:-1]}"
    return f"{counted} found, not shown because {why} (it may be data{hint})"


@dataclass(frozen=True)
class ColumnMapping:
    """Candidate column names per field; the first one present in a file is used.

    ``required`` fields must be found (the text always; others when the user named them).
    """

    text: tuple[str, ...]
    note_id: tuple[str, ...] = ()
    patient_id: tuple[str, ...] = ()
    admission_id: tuple[str, ...] = ()
    date: tuple[str, ...] = ()
    required: frozenset[str] = frozenset({"text"})

    def resolve(self, columns: Sequence[str], where: str, kind: str = "header") -> dict[str, str | None]:
        """Field -> column actually used in a file with ``columns`` (``kind`` as in
        :func:`describe_columns`, which is the only way the message shows them); a clear error,
        with the option to pass, when a required one is missing."""
        resolved: dict[str, str | None] = {}
        for name in FIELDS:
            candidates = getattr(self, name)
            resolved[name] = next((column for column in candidates if column in columns), None)
            if resolved[name] is None and name in self.required:
                flag = FIELD_FLAGS[name]
                fix = f"pass {flag} with the right name"
                if columns and not all(map(looks_like_column_name, columns)):
                    fix = _COLUMN_SOURCES[kind][2].format(flag=flag, field=name.replace("_", " "))
                raise CorpusError(
                    f"{where}: no {name} column (looked for {', '.join(map(repr, candidates))}); {describe_columns(columns, kind)}. Fix: {fix}."
                )
        return resolved


@dataclass
class RawNote:
    """One record as read, before any cleaning."""

    text: str
    where: str
    note_id: str | None = None
    patient_id: str | None = None
    admission_id: str | None = None
    date: str | None = None
    id_from_data: bool = True  # False where the id is made up (a .txt file's name), not read from a column


@dataclass
class SourceFile:
    """What the manifest says about one input file."""

    path: Path
    bytes: int = 0
    records: int = 0
    encodings: Counter = field(default_factory=Counter)
    sha256: str = ""


@dataclass
class ReadOptions:
    mapping: ColumnMapping
    encoding: str = AUTO_ENCODING
    delimiter: str | None = None  # None: tab for .tsv, comma otherwise
    on_error: str = "fail"  # or "skip": skip the record and count the reason
    drop: Callable[[str], None] = lambda reason: None  # counts skipped records by reason


def list_source_files(source: Path) -> list[Path]:
    """The supported files at ``source`` (a file, or a folder searched recursively), sorted."""
    source = Path(source)
    if not source.exists():
        raise CorpusError(f"{source}: no such file or folder. Fix: check the --source path.")
    if source.is_file():
        files = [source]
    else:
        files = sorted(path for path in source.rglob("*") if path.is_file() and not path.name.startswith("."))
    supported = [path for path in files if path.suffix.lower() in SUPPORTED_SUFFIXES]
    if not supported:
        found = sorted({path.suffix or "(no extension)" for path in files})
        raise CorpusError(
            f"{source}: no note files found (supported: {', '.join(SUPPORTED_SUFFIXES)}; found: "
            f"{', '.join(found) or 'nothing'}). Fix: point --source at the export's folder or file."
        )
    return supported


def _fail_or_skip(options: ReadOptions, reason: str, message: str) -> None:
    if options.on_error == "fail":
        raise CorpusError(message)
    options.drop(reason)


BLOCK_BYTES = 1 << 20
# Where a stream's bytes do not decode, the decoder writes this lone surrogate: no strict decoder
# ever yields one, so the mark cannot be confused with text (it is replaced before anyone sees it).
_UNDECODABLE = "\udcff"
_MARK_UNDECODABLE = "medfactory-mark-undecodable"
codecs.register_error(_MARK_UNDECODABLE, lambda error: (_UNDECODABLE, error.end))


def _decoded_blocks(path: Path, handle, info: SourceFile, options: ReadOptions, bad_lines: set[int]) -> Iterator[str]:
    """The file as decoded text blocks of whole lines, hashing every byte on the way.

    Files in an encoding that writes line ends as the byte ``\\n`` (nearly all) are decoded block
    by block or line by line (:func:`_line_blocks`); files with a UTF-16/32 byte-order mark, or in
    a forced encoding that does not (UTF-16/32, EBCDIC), by one decoder over the whole stream
    (:func:`_stream_blocks`).
    """
    digest = hashlib.sha256()
    first = handle.read(BLOCK_BYTES)
    chunks = itertools.chain([first] if first else [], iter(lambda: handle.read(BLOCK_BYTES), b""))
    codec = stream_codec(options.encoding, first[:4096])
    if codec is None:
        yield from _line_blocks(path, chunks, digest, info, options, bad_lines)
    else:
        yield from _stream_blocks(path, chunks, codec, digest, info, options, bad_lines)
    info.sha256 = digest.hexdigest()


def _line_blocks(path: Path, chunks: Iterator[bytes], digest, info: SourceFile, options: ReadOptions, bad_lines: set[int]) -> Iterator[str]:
    """Blocks of whole lines. A block that is valid UTF-8 (the common case) is decoded in one call;
    otherwise each line is decoded on its own (UTF-8, then cp1252), which is how mixed exports are
    read. A line that neither decodes fails with its line number, or, with ``--on-error skip``, is
    read as Latin-1 and its number put in ``bad_lines`` so that the record holding it is skipped."""
    lines_before = 0
    remainder = b""
    for chunk in itertools.chain(chunks, [b""]):
        data = remainder + chunk
        if not data:
            break
        cut = len(data) if not chunk else data.rfind(b"\n") + 1  # at the end, the last line needs no newline
        if cut == 0:  # no line end in this megabyte yet: read on
            remainder = data
            continue
        block, remainder = data[:cut], data[cut:]
        digest.update(block)
        info.bytes += len(block)
        if lines_before == 0 and block.startswith(codecs.BOM_UTF8):
            block = block[3:]
        line_count = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        text = None
        if options.encoding in (AUTO_ENCODING, "utf-8"):
            try:
                text = block.decode("utf-8")
                info.encodings["utf-8"] += line_count
            except UnicodeDecodeError:
                text = None
        if text is None:
            text = "".join(_decode_lines(path, block, lines_before, info, options, bad_lines))
        lines_before += line_count
        yield text
        if not chunk:
            break


def _stream_blocks(path: Path, chunks: Iterator[bytes], codec: str, digest, info: SourceFile, options: ReadOptions, bad_lines: set[int]) -> Iterator[str]:
    """Blocks of whole lines from one incremental ``codec`` decoder over the whole file: how UTF-16
    and UTF-32 are read, whose line ends are not the byte ``\\n``. Bytes that do not decode (a damaged
    or truncated file) fail with their line, or under ``--on-error skip`` put it in ``bad_lines``."""
    decoder = codecs.getincrementaldecoder(codec)(errors=_MARK_UNDECODABLE)
    lines_before, remainder, started = 0, "", False
    for chunk in itertools.chain(chunks, [None]):
        if chunk is not None:
            digest.update(chunk)
            info.bytes += len(chunk)
        try:
            text = remainder + decoder.decode(chunk or b"", final=chunk is None)
        except UnicodeError as error:  # what the error handler does not cover (a stream that needs a mark)
            raise CorpusError(f"{path}:{lines_before + 1}: not readable as {codec} ({error}). Fix: check --encoding, or re-export the file.") from error
        if text and not started:  # a forced utf-16-le / -be leaves the byte-order mark as a character
            text, started = text.removeprefix("\ufeff"), True
        cut = len(text) if chunk is None else text.rfind("\n") + 1
        block, remainder = text[:cut], text[cut:]
        if not block:
            continue
        line_count = block.count("\n") + (0 if block.endswith("\n") else 1)
        if _UNDECODABLE in block:
            block = _mark_bad_lines(path, block, lines_before, codec, options, bad_lines)
        info.encodings[codec] += line_count
        lines_before += line_count
        yield block


def _mark_bad_lines(path: Path, block: str, lines_before: int, codec: str, options: ReadOptions, bad_lines: set[int]) -> str:
    for index, line in enumerate(block.split("\n")):
        if _UNDECODABLE in line:
            number = lines_before + index + 1
            if options.on_error == "fail":
                raise CorpusError(
                    f"{path}:{number}: bytes that are not valid {codec} (a damaged or truncated file). "
                    "Fix: re-export the file, or --on-error skip to leave out the records on such lines."
                )
            bad_lines.add(number)
    return block.replace(_UNDECODABLE, "\ufffd")


def _decode_lines(path: Path, block: bytes, lines_before: int, info: SourceFile, options: ReadOptions, bad_lines: set[int]) -> Iterator[str]:
    pieces = block.split(b"\n")
    lines = [piece + b"\n" for piece in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])
    for index, raw in enumerate(lines):
        number = lines_before + index + 1
        try:
            line, used = decode(raw, options.encoding)
        except UndecodableBytes as error:
            hint = "--encoding latin-1 to accept every byte" if options.encoding == AUTO_ENCODING else "--encoding auto"
            if options.on_error == "fail":
                raise CorpusError(
                    f"{path}:{number}: {error}. Fix: re-export the file as UTF-8, use {hint}, or --on-error skip."
                ) from error
            bad_lines.add(number)
            line, used = raw.decode("latin-1"), "undecodable"
        info.encodings[used] += 1
        yield line


def _text_lines(blocks: Iterator[str]) -> Iterator[str]:
    """Lines as csv expects them from a file opened with newline='' (C-level splitting per block)."""
    return itertools.chain.from_iterable(io.StringIO(block, newline="") for block in blocks)


def read_text_file(path: Path, info: SourceFile, options: ReadOptions) -> Iterator[RawNote]:
    """A .txt file is one note; its id is the file name."""
    data = path.read_bytes()
    info.bytes, info.sha256 = len(data), hashlib.sha256(data).hexdigest()
    try:
        text, used = decode(data, stream_codec(options.encoding, data[:4096]) or options.encoding)
    except UndecodableBytes as error:
        _fail_or_skip(options, "undecodable", f"{path}: {error}. Fix: re-export as UTF-8 or --on-error skip.")
        return
    info.encodings[used] += 1
    info.records += 1
    yield RawNote(text=text.lstrip("\ufeff"), where=str(path), note_id=path.stem, id_from_data=False)


# Appended to the text csv parses: after a closed record it is a row of its own (and ends the read),
# but a quoted field still open at the end of the file swallows it, which is how that shows (csv,
# not strict, would end such a field silently). The NULs keep it from ever matching a real row.
_END_MARK = "\x00medfactory:end-of-file\x00"
_DIGIT_RUNS = re.compile(r"\d+")
_LETTER_RUNS = re.compile(r"[^\W\d_]+")


def _with_end_mark(blocks: Iterator[str]) -> Iterator[str]:
    empty = True
    for block in blocks:
        empty = empty and not block
        yield block
    if not empty:
        yield "\n" + _END_MARK + "\n"


def _shape(value: str) -> str:
    """``"p4"`` and ``"p31"`` -> ``"a9"``; ``"2020-01-03"`` -> ``"9-9-9"``: what ids of one column share."""
    return _LETTER_RUNS.sub("a", _DIGIT_RUNS.sub("9", value))


@functools.lru_cache(maxsize=64)
def _row_pattern(width: int, text_at: int, delimiter: str) -> re.Pattern:
    """A physical line that could be an unquoted row: ``width`` fields, the ones outside the text
    column short and not starting with a space (prose after a comma does). One C-level search per
    multi-line field keeps legitimate notes fast; only its matches are compared shape by shape."""
    d = re.escape(delimiter)
    short, text = f"(?:[^{d}\\n\\s][^{d}\\n]{{0,39}}+)?+", f"[^{d}\\n]*+"  # possessive: no backtracking
    return re.compile("\\n" + d.join(text if i == text_at else short for i in range(width)) + "(?=\\r?(?:\\n|\\Z))")


def _rows_inside(value: str, row: list[str], width: int, text_at: int, delimiter: str) -> int:
    """How many physical lines of the field ``value`` (after its first) look like rows of the file:
    they split into ``width`` fields whose values outside the text column have the shapes of the
    record's own (``"4","p4"`` like ``"3","p3"``), or 0 when there are too few to tell.

    One such line is enough when the record's own values are telling (two non-empty, one of them
    more than a plain number or word: ``p3``, a date); two are needed when they are weaker. Plain
    numbers alone (ids 1, 2, 3) tell nothing: a note's "2,5 mg" has that shape too. A swallowed row
    was unquoted (a quote would have closed the field), so a plain split is how csv would read it.
    """
    if width < 2 or len(row) != width:
        return 0
    candidates = [match.group()[1:] for match in _row_pattern(width, text_at, delimiter).finditer(value)]
    if not candidates:
        return 0
    positions = [i for i in range(width) if i != text_at]
    own = [_shape(row[i]) for i in positions]
    filled = sum(1 for shape in own if shape)
    telling = sum(1 for shape in own if shape not in ("", "9", "a"))
    needed = 1 if telling and filled >= 2 else 2 if telling or filled >= 2 else 0
    found = 0
    for line in candidates if needed else []:
        pieces = line.split(delimiter)
        if all(_shape(pieces[i]) == shape for i, shape in zip(positions, own, strict=True)):
            found += 1
    return found if needed and found >= needed else 0


def _refuse_runaway_quote(path: Path, row: list[str], first_line: int, width: int, text_at: int, delimiter: str) -> None:
    """Stop at a quoted field that is never closed: one that runs to the end of the file, or over
    later lines that look like rows of their own. csv reads on to the next quote, so the rows in
    between would become one note (other patients' notes, possibly of the test split)."""
    for position, value in enumerate(row):
        if "\n" not in value:
            continue
        at_end = _END_MARK in value[-len(_END_MARK) - 2 :]  # the mark can only end the field
        rows = _rows_inside(value.replace(_END_MARK, "") if at_end else value, row, width, text_at, delimiter)
        extent = ["to the end of the file"] if at_end else []
        extent += [f"over {rows} later line(s) that look like rows of their own"] if rows else []
        if extent:
            opened = first_line + sum(earlier.count("\n") for earlier in row[:position])
            raise CorpusError(
                f"{path}:{opened}: the quoted field that opens on this line is never closed: it runs "
                f"{', '.join(extent)}. Fix: close the quote, or escape it (CSV writes a quote inside a field "
                "as \"\"); --on-error skip cannot tell where the rows it swallowed begin."
            )


def read_delimited(path: Path, info: SourceFile, options: ReadOptions) -> Iterator[RawNote]:
    """CSV/TSV with a header row; multi-line quoted notes are fine, a row of the wrong width is not,
    and neither is a quote that is never closed (:func:`_refuse_runaway_quote`)."""
    delimiter = options.delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    bad_lines: set[int] = set()
    with open(path, "rb") as handle:
        lines = _text_lines(_with_end_mark(_decoded_blocks(path, handle, info, options, bad_lines)))
        reader = csv.reader(lines, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise CorpusError(f"{path}:1: the header row is not valid CSV ({error}).") from error
        if header == [_END_MARK]:  # nothing but blank space
            return
        if reader.line_num > 1:
            _refuse_runaway_quote(path, header, 1, 0, -1, delimiter)
        columns = [column.strip() for column in header]
        resolved = options.mapping.resolve(columns, str(path))
        index = {name: columns.index(column) for name, column in resolved.items() if column is not None}
        width = len(columns)
        last_line = reader.line_num
        while True:
            first_line = last_line + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                last_line = reader.line_num
                _fail_or_skip(
                    options,
                    "malformed_row",
                    f"{path}:{reader.line_num}: {error}. Fix: quote the field (CSV writes a quote as \"\"), or --on-error skip.",
                )
                continue
            last_line = reader.line_num
            if row == [_END_MARK]:
                break
            if last_line > first_line:
                _refuse_runaway_quote(path, row, first_line, width, index["text"], delimiter)
            if bad_lines and any(line in bad_lines for line in range(first_line, last_line + 1)):
                options.drop("undecodable")
                continue
            if not row:
                continue
            if len(row) != width:
                _fail_or_skip(
                    options,
                    "wrong_field_count",
                    f"{path}:{first_line}: row has {len(row)} fields, the header has {width}. Fix: quote notes "
                    f"that contain the delimiter {delimiter!r} or a line break, or use --on-error skip to leave such rows out.",
                )
                continue
            info.records += 1
            yield RawNote(where=f"{path}:{first_line}", **{name: row[position] for name, position in index.items()})


_SURROGATES = re.compile("[\ud800-\udfff]")


def read_jsonl_notes(path: Path, info: SourceFile, options: ReadOptions) -> Iterator[RawNote]:
    """A user's JSON Lines export, one note per line: decoded line by line (any encoding), fail or skip per
    ``--on-error``. (Files medfactory writes itself are read with :mod:`medfactory.base.jsonl`.)"""
    resolved: dict[str, str | None] | None = None
    bad_lines: set[int] = set()
    with open(path, "rb") as handle:
        for number, line in enumerate(_text_lines(_decoded_blocks(path, handle, info, options, bad_lines)), start=1):
            if number in bad_lines:
                options.drop("undecodable")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, RecursionError) as error:  # RecursionError: "[[[[..." nested past Python's limit
                _fail_or_skip(options, "malformed_row", f"{path}:{number}: not a JSON object ({error}). Fix: one object per line, or --on-error skip.")
                continue
            if resolved is None:
                resolved = options.mapping.resolve(list(record), f"{path}:{number}", kind="keys")
            if resolved["text"] not in record:
                fix = "every record needs the note text, or --on-error skip"
                _fail_or_skip(options, "missing_text", f"{path}:{number}: no {resolved['text']!r} field. Fix: {fix}.")
                continue
            values = {name: _as_text(record.get(column)) for name, column in resolved.items() if column is not None}
            if "\\u" in line and any(value and _SURROGATES.search(value) for value in values.values()):
                # "\ud800" alone is valid JSON but not text: it could not be written as UTF-8.
                fix = "re-export the file, or --on-error skip"
                _fail_or_skip(options, "undecodable", f"{path}:{number}: an unpaired surrogate escape (\\ud800-\\udfff) is not text. Fix: {fix}.")
                continue
            info.records += 1
            yield RawNote(where=f"{path}:{number}", **values)


def read_parquet(path: Path, info: SourceFile, options: ReadOptions) -> Iterator[RawNote]:
    """Parquet, read in record batches of the needed columns only."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise CorpusError(f"{path}: not a readable Parquet file ({error}). Fix: re-export it.") from error
    resolved = options.mapping.resolve(parquet.schema_arrow.names, str(path), kind="schema")
    wanted = {name: column for name, column in resolved.items() if column is not None}
    info.bytes = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    info.sha256 = digest.hexdigest()
    row = 0
    batches = parquet.iter_batches(batch_size=8192, columns=sorted(set(wanted.values())))
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                break
            columns = {name: batch.column(column).to_pylist() for name, column in wanted.items()}
        except Exception as error:  # a damaged page: pyarrow's message is not shown, it may quote data
            raise CorpusError(f"{path}: after row {row}, the data cannot be read ({type(error).__name__}). Fix: re-export the file.") from error
        for position in range(batch.num_rows):
            row += 1
            info.records += 1
            yield RawNote(where=f"{path}:row {row}", **{name: _as_text(values[position]) for name, values in columns.items()})


def _as_text(value: object) -> str | None:
    return None if value is None else str(value)


READERS = {".txt": read_text_file, ".csv": read_delimited, ".tsv": read_delimited, ".jsonl": read_jsonl_notes, ".parquet": read_parquet}


def read_notes(path: Path, info: SourceFile, options: ReadOptions) -> Iterator[RawNote]:
    """The notes of one file, with the reader its extension calls for."""
    return READERS[path.suffix.lower()](path, info, options)
