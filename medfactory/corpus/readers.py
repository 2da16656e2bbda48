"""Streaming readers for the formats hospitals export notes in: .txt folders, CSV/TSV, JSONL, Parquet.

Each reader yields one :class:`RawNote` at a time (memory does not grow with the corpus), knows
where every record came from (file and line, for error messages) and hashes every byte it reads
(for the manifest). Text files are decoded per line, UTF-8 first then cp1252, because exports
mix the two even inside one file; the encodings met are counted per file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medfactory.base.errors import CorpusError
from medfactory.corpus.text import AUTO_ENCODING, UndecodableBytes, decode

SUPPORTED_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl", ".parquet")
FIELDS = ("text", "note_id", "patient_id", "admission_id", "date")
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # notes can exceed csv's 128 KB default


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

    def resolve(self, columns: list[str], where: str) -> dict[str, str | None]:
        """Field -> column actually used in a file with ``columns``; a clear error when one is missing."""
        resolved: dict[str, str | None] = {}
        for name in FIELDS:
            candidates = getattr(self, name)
            resolved[name] = next((column for column in candidates if column in columns), None)
            if resolved[name] is None and name in self.required:
                flag = "--" + name.replace("_", "-") + "-column"
                raise CorpusError(
                    f"{where}: no {name} column (looked for {', '.join(map(repr, candidates))}); "
                    f"the columns found are: {', '.join(map(repr, columns)) or 'none'}. "
                    f"Fix: pass {flag} with the right name."
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


def _decoded_blocks(path: Path, handle, info: SourceFile, options: ReadOptions, bad_lines: set[int]) -> Iterator[str]:
    """The file as decoded text blocks of whole lines, hashing every byte on the way.

    A block that is valid UTF-8 (the common case) is decoded in one call; otherwise each line is
    decoded on its own (UTF-8, then cp1252), which is how mixed exports are read. A line that
    neither decodes fails with its line number, or, with ``--on-error skip``, is read as Latin-1
    and its number put in ``bad_lines`` so that the record holding it is skipped and counted.
    """
    digest = hashlib.sha256()
    lines_before = 0
    remainder = b""
    while True:
        chunk = handle.read(BLOCK_BYTES)
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
        if lines_before == 0 and block.startswith(b"\xef\xbb\xbf"):
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
    info.sha256 = digest.hexdigest()


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
        text, used = decode(data, options.encoding)
    except UndecodableBytes as error:
        _fail_or_skip(options, "undecodable", f"{path}: {error}. Fix: re-export as UTF-8 or --on-error skip.")
        return
    info.encodings[used] += 1
    info.records += 1
    yield RawNote(text=text.lstrip("\ufeff"), where=str(path), note_id=path.stem)


def read_delimited(path: Path, info: SourceFile, options: ReadOptions) -> Iterator[RawNote]:
    """CSV/TSV with a header row; multi-line quoted notes are fine, a row of the wrong width is not."""
    delimiter = options.delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    bad_lines: set[int] = set()
    with open(path, "rb") as handle:
        reader = csv.reader(_text_lines(_decoded_blocks(path, handle, info, options, bad_lines)), delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise CorpusError(f"{path}:1: the header row is not valid CSV ({error}).") from error
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
            except ValueError as error:
                _fail_or_skip(options, "malformed_row", f"{path}:{number}: not a JSON object ({error}). Fix: one object per line, or --on-error skip.")
                continue
            if resolved is None:
                resolved = options.mapping.resolve(list(record), f"{path}:{number}")
            if resolved["text"] not in record:
                fix = "every record needs the note text, or --on-error skip"
                _fail_or_skip(options, "missing_text", f"{path}:{number}: no {resolved['text']!r} field. Fix: {fix}.")
                continue
            info.records += 1
            yield RawNote(
                where=f"{path}:{number}",
                **{name: _as_text(record.get(column)) for name, column in resolved.items() if column is not None},
            )


def read_parquet(path: Path, info: SourceFile, options: ReadOptions) -> Iterator[RawNote]:
    """Parquet, read in record batches of the needed columns only."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise CorpusError(f"{path}: not a readable Parquet file ({error}). Fix: re-export it.") from error
    resolved = options.mapping.resolve(parquet.schema_arrow.names, str(path))
    wanted = {name: column for name, column in resolved.items() if column is not None}
    info.bytes = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    info.sha256 = digest.hexdigest()
    row = 0
    for batch in parquet.iter_batches(batch_size=8192, columns=sorted(set(wanted.values()))):
        columns = {name: batch.column(column).to_pylist() for name, column in wanted.items()}
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
