"""The corpus pipeline every clinical-notes plugin runs: read, clean, scan, de-duplicate, split, write.

One pass, streaming: memory holds one note at a time plus an 8-byte key per kept note (exact
de-duplication) and, only when near-duplicate removal is asked for, one batch of pending notes
(their history is on disk: :mod:`medfactory.corpus.near_dedup`).

Per note, in this order: normalise (:func:`medfactory.corpus.text.normalise_note`); drop empty and
too-short notes; scan for personal identifiers and report, mask or refuse (before anything is
written); drop exact duplicates and optionally near duplicates (copy-forward notes), as
:mod:`medfactory.corpus.dedup` defines them; assign the group's split (patient, else admission,
else note: the manifest says when splits are not patient-disjoint); write. Outputs go to a staging folder that replaces ``data/<name>/`` together with
its ``dataset_info.json`` entries only when everything succeeded (:mod:`medfactory.base.publish`): a
run that fails or is killed leaves the previously prepared dataset and the registry as they were, and
a name another plugin owns is refused unless ``--replace``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from tqdm import tqdm

from medfactory.base.errors import CorpusError
from medfactory.base.jsonl import jsonl_line
from medfactory.base.manifest import (
    CHARS_PER_TOKEN_ESTIMATE,
    dataset_records,
    estimate_tokens,
    manifest_header,
    output_facts,
)
from medfactory.base.publish import publish_datasets
from medfactory.base.versions import package_versions
from medfactory.corpus.dedup import DUPLICATE_KEY, NORMALISATION, NearDuplicateIndex, SeenKeys, key_hex, key_of_normalised, normalise_for_dedup
from medfactory.corpus.near_dedup import DiskNearDuplicateIndex
from medfactory.corpus.readers import ColumnMapping, ReadOptions, SourceFile, list_source_files, read_notes
from medfactory.corpus.splits import SPLITS, HeldOutSampler, SplitPlan, group_of, split_disjointness
from medfactory.corpus.text import AUTO_ENCODING, encoding_problem, normalise_note

log = logging.getLogger(__name__)

IDENTIFIER_MODES = ("report", "mask", "refuse")
DEID_MODES = ("surrogate", "placeholder", "none")
DEID_SEED_VARIABLE = "MEDFACTORY_DEID_SEED"
# The de-identifier's language for each identifier locale (the first locale named decides).
DEID_LANGUAGE = {"br": "pt", "es": "es"}
ON_ERROR_CHOICES = ("fail", "skip")
LIKERT_FILE = "likert_heldout.jsonl"
# Past this many input files the manifest lists a combined hash instead of one entry per file.
MAX_LISTED_SOURCES = 1000
TOKEN_BATCH = 512
# --near-duplicates decides this many notes (or characters) at a time against the index on disk:
# memory stays flat at any corpus size; the output is the same as deciding note by note.
NEAR_DUPLICATE_BATCH_NOTES = 20_000
NEAR_DUPLICATE_BATCH_CHARACTERS = 32_000_000
# "memory": the former note-by-note NearDuplicateIndex (about 6 KB a note), kept only so that
# tests can show the disk index writes byte-identical outputs. Not an option of the command.
NEAR_DUPLICATE_STORE = "disk"


@dataclass
class PrepareOptions:
    """Everything that decides what a prepared dataset contains (recorded in its manifest)."""

    name: str
    mapping: ColumnMapping
    plugin: str = "notes"
    encoding: str = AUTO_ENCODING
    delimiter: str | None = None
    identifier_locales: tuple[str, ...] = ("br",)
    identifier_mode: str = "mask"
    near_duplicate_threshold: float | None = None
    split: SplitPlan = field(default_factory=SplitPlan)
    likert_notes: int = 100
    likert_min_characters: int = 200  # an excerpt plus a continuation worth rating needs some length
    min_characters: int = 20
    on_error: str = "fail"
    tokenizer: str | None = None
    replace: bool = False  # allow replacing datasets / registry keys another plugin wrote
    deid: str = "surrogate"  # de-identification (medfactory.corpus.deid): surrogate, placeholder or none
    deid_model: str | None = None  # a .crfsuite tagger; default: the embedded one of the language, if any
    deid_seed: str | None = None  # secret key of the surrogates; default $MEDFACTORY_DEID_SEED, else random per run
    workers: int = 1  # de-identification processes (medfactory.corpus.deid.parallel); 1: this process
    canaries: int = 0  # canary notes for the memorization audit (medfactory.corpus.canaries), in train only
    canary_repetitions: tuple[int, ...] = (1, 2, 4, 8, 16)
    canary_file: str | None = None  # default: <output root>/canaries/<name>.json, never under data/

    def validate(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise CorpusError(f"dataset name {self.name!r}: pass --name with letters, digits and underscores (e.g. hc_notes).")
        # Every value is checked before anything is read, and each message names the option to change.
        if self.deid not in DEID_MODES:
            raise CorpusError(f"--deid {self.deid!r}: use one of {', '.join(DEID_MODES)}.")
        if self.canaries < 0 or not self.canary_repetitions or min(self.canary_repetitions) < 1:
            raise CorpusError("--canaries N needs N >= 0, and --canary-repetitions whole numbers >= 1 (e.g. 1,2,4,8,16).")
        if self.workers < 1:
            raise CorpusError(f"--workers {self.workers}: pass 1 (de-identify in this process) or more, e.g. the VM's cores (nproc).")
        if self.identifier_mode not in IDENTIFIER_MODES:
            raise CorpusError(f"--identifier-mode {self.identifier_mode!r}: use one of {', '.join(IDENTIFIER_MODES)}.")
        if self.on_error not in ON_ERROR_CHOICES:
            raise CorpusError(f"--on-error {self.on_error!r}: use one of {', '.join(ON_ERROR_CHOICES)}.")
        if self.near_duplicate_threshold is not None and not 0 < self.near_duplicate_threshold <= 1:  # NaN fails too
            raise CorpusError(f"--near-duplicates {self.near_duplicate_threshold:g}: a Jaccard similarity in (0, 1], e.g. 0.85.")
        problem = encoding_problem(self.encoding)
        if problem:
            raise CorpusError(
                f"--encoding {self.encoding!r}: {problem}. Fix: pass auto (UTF-8, then cp1252, per line) "
                "or a codec name such as utf-8, cp1252, latin-1 or utf-16."
            )
        if self.delimiter is not None and (len(self.delimiter) != 1 or self.delimiter in '"\r\n'):
            raise CorpusError(f"--delimiter {self.delimiter!r}: one character other than a quote or a line break, e.g. ';' or '|' (a tab: --delimiter tab).")
        counts = {"--likert-notes": self.likert_notes, "--likert-min-characters": self.likert_min_characters, "--min-characters": self.min_characters}
        for flag, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CorpusError(f"{flag} {value!r}: a whole number, 0 or more.")
        self.check_fractions(self.split.validation_fraction, self.split.test_fraction)

    @staticmethod
    def check_fractions(validation: float, test: float) -> None:
        """The split shares as --validation-fraction / --test-fraction give them (the CLI checks them
        before it builds a :class:`SplitPlan`, whose own check cannot name the options)."""
        for flag, value in (("--validation-fraction", validation), ("--test-fraction", test)):
            if not 0 <= value < 1:  # NaN fails too
                raise CorpusError(f"{flag} {value:g}: a share of the patients in [0, 1), e.g. 0.01.")
        if validation + test >= 1:
            raise CorpusError(f"--validation-fraction {validation:g} + --test-fraction {test:g} leaves no patient for training: keep the sum under 1.")


@dataclass
class SplitStats:
    documents: int = 0
    characters: int = 0
    tokens: int | None = None


class _TokenCounter:
    """Exact token counts with the model's tokenizer, in batches (only with --tokenizer)."""

    def __init__(self, name: str) -> None:
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name)
        except Exception as error:  # OSError, ValueError, HFValidationError...: no tokenizer there
            raise CorpusError(self.problem(name, error)) from error
        self.pending: dict[str, list[str]] = {split: [] for split in (*SPLITS, "likert")}
        self.totals: Counter = Counter()

    @staticmethod
    def problem(name: str, error: Exception) -> str:
        """The message for a --tokenizer that does not load (no traceback: the option and the fix)."""
        fix = "Fix: pass the folder that holds the model's tokenizer files (tokenizer.json, tokenizer_config.json) or a hub name"
        if name.startswith(("/", ".", "~")) and not Path(name).expanduser().exists():
            return f"--tokenizer {name!r}: no such folder. {fix}."
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        return f"--tokenizer {name!r}: no tokenizer could be loaded ({reason}). {fix} already downloaded (offline, only cached models load)."

    def add(self, split: str, text: str) -> None:
        self.pending[split].append(text)
        if len(self.pending[split]) >= TOKEN_BATCH:
            self.flush(split)

    def flush(self, split: str) -> None:
        if self.pending[split]:
            encoded = self.tokenizer(self.pending[split], add_special_tokens=False)["input_ids"]
            self.totals[split] += sum(map(len, encoded))
            self.pending[split] = []


def _package_versions() -> dict[str, str | None]:
    return package_versions(("medfactory", "llamafactory", "transformers", "datasketch", "pyarrow"))


def _sources_summary(files: list[SourceFile]) -> dict[str, Any]:
    listed = [
        {"path": str(info.path), "bytes": info.bytes, "sha256": info.sha256, "records": info.records, "encodings": dict(info.encodings)}
        for info in files
    ]
    combined = hashlib.sha256("".join(sorted(info.sha256 for info in files)).encode()).hexdigest()
    encodings: Counter = Counter()
    for info in files:
        encodings.update(info.encodings)
    summary: dict[str, Any] = {
        "files": len(files),
        "bytes": sum(info.bytes for info in files),
        "records": sum(info.records for info in files),
        "combined_sha256": combined,
        "encodings": dict(encodings),
        "mixed_encoding_files": [str(info.path) for info in files if len(info.encodings) > 1][:MAX_LISTED_SOURCES],
    }
    if len(files) <= MAX_LISTED_SOURCES:
        summary["listed"] = listed
    return summary


def prepare_corpus(sources: list[Path], options: PrepareOptions, output_root: Path = Path(".")) -> dict[str, Any]:
    """Prepare ``sources`` into ``output_root/data/<name>/`` and register the splits; return the manifest."""
    options.validate()
    output_root = Path(output_root)
    files = [path for source in sources for path in list_source_files(Path(source))]
    canary_path = _canary_path(options, output_root) if options.canaries else None
    notes_pass = _NotesPass(options)
    pending_canaries = None
    try:
        with publish_datasets(output_root, Path("data") / options.name, registry_entries(options.name), options.plugin, options.replace) as publication:
            staging = publication.staging
            notes_pass.run(files, staging)
            if canary_path is not None:
                pending_canaries = canary_path.with_name(f".{canary_path.name}.pending")
                canary_record = _insert_canaries(options, notes_language(options), staging / "train.jsonl", pending_canaries)
            manifest = notes_pass.finish(staging, sources)
            manifest["canaries"] = {"count": 0} if canary_path is None else {**canary_record, "file": str(canary_path)}
            manifest["stale_staging_removed"] = publication.stale_removed
            publication.write_manifest(manifest)
        if pending_canaries is not None:
            os.replace(pending_canaries, canary_path)  # with the published data, never before it
    finally:
        if pending_canaries is not None:
            pending_canaries.unlink(missing_ok=True)
    for caveat in manifest["split_caveats"]:
        log.warning("%s: %s", options.name, caveat)
    log.info("%s: %d records read, %d notes kept, dropped %s", options.name, notes_pass.records_read, manifest["documents"], dict(notes_pass.dropped))
    return manifest


def notes_language(options: PrepareOptions) -> str:
    """The language of the notes (de-identification, canaries): that of the first identifier locale, else pt."""
    return DEID_LANGUAGE.get(options.identifier_locales[0], "pt") if options.identifier_locales else "pt"


def _canary_path(options: PrepareOptions, output_root: Path) -> Path:
    """Where the canary file goes: --canary-file, else canaries/<name>.json; never under data/, never over another run's file."""
    path = Path(options.canary_file) if options.canary_file else output_root / "canaries" / f"{options.name}.json"
    data = (output_root / "data").resolve()
    if path.resolve() == data or data in path.resolve().parents:
        raise CorpusError(f"--canary-file {path}: it would lie under {output_root / 'data'}, next to training data. Fix: pass a path outside data/.")
    if path.exists() and not options.replace:
        raise CorpusError(f"--canary-file {path} exists (an earlier run's secrets). Fix: pass another --canary-file, or --replace to replace both.")
    return path


def _insert_canaries(options: PrepareOptions, language: str, train_path: Path, pending: Path) -> dict[str, Any]:
    """Make the canaries, insert them into train.jsonl, write the canary file to ``pending``; what the manifest says of them."""
    from medfactory.corpus.canaries import canary_document, insert_into, make_canaries, write_canary_file

    canaries = make_canaries(options.canaries, language, options.canary_repetitions)
    copies = insert_into(train_path, canaries)
    digest = write_canary_file(pending, canary_document(canaries, options.name, language))
    return {"count": len(canaries), "copies_in_train": copies, "repetitions": sorted({canary.repetitions for canary in canaries}), "file_sha256": digest}


SLOW_DEID_BYTES = 200_000_000  # above this, a one-process de-identification run is told about --workers


class _KeptNote(NamedTuple):
    """A note past cleaning and de-duplication, on its way to its split (de-identification may hold it in a batch)."""

    text: str
    group: str
    note_id: str
    date: Any
    key: str


class _Deid:
    """De-identification of the kept notes: one :class:`~medfactory.corpus.deid.deidentifier.Deidentifier` per run, counts per category."""

    def __init__(self, options: PrepareOptions) -> None:
        from medfactory.corpus.deid.deidentifier import Deidentifier

        self.mode = options.deid
        self.language = notes_language(options)
        try:
            self.deidentifier = Deidentifier(self.language, model=options.deid_model)
        except (FileNotFoundError, ValueError, OSError) as error:
            raise CorpusError(f"{error} (the de-identification tagger of --deid-model)") from error
        seed = options.deid_seed or os.environ.get(DEID_SEED_VARIABLE)
        self.seed_source = "--deid-seed" if options.deid_seed else (f"${DEID_SEED_VARIABLE}" if seed else "random (consistent within this run only)")
        self.seed = seed or secrets.token_hex(16)  # never recorded: it keys the surrogates
        self.findings: Counter = Counter()
        self.notes_with_findings = 0
        from medfactory.corpus.deid.parallel import BatchedDeidentifier

        self.runner = BatchedDeidentifier(self.deidentifier, self.mode, self.seed, workers=options.workers)

    def submit(self, note: _KeptNote) -> list[_KeptNote]:
        """Queue a kept note; returns the notes de-identified so far, in the order they were kept."""
        return [self._counted(done) for done in self.runner.submit(note.text, note.group, note)]

    def finish(self) -> list[_KeptNote]:
        return [self._counted(done) for done in self.runner.finish()]

    def _counted(self, done: Any) -> _KeptNote:
        if done.spans:
            self.notes_with_findings += 1
            self.findings.update(span.category for span in done.spans)
        return done.payload._replace(text=done.text)

    def summary(self) -> dict[str, Any]:
        """What the manifest says: mode, language, layers, model, counts per category (never a value, never the seed)."""
        model = self.deidentifier.model
        return {
            "mode": self.mode,
            "language": self.language,
            "layers": list(self.deidentifier.layers),
            "model": model.name if model else None,
            "surrogate_seed": self.seed_source if self.mode == "surrogate" else None,
            "workers": self.runner.workers,
            "notes_with_findings": self.notes_with_findings,
            "findings_by_category": dict(sorted(self.findings.items())),
        }


class _NotesPass:
    """One streaming pass over the source files: each note is cleaned, scanned, de-duplicated, split, written."""

    def __init__(self, options: PrepareOptions) -> None:
        from medfactory.corpus.identifiers import IdentifierScanner

        self.options = options
        self.scanner = IdentifierScanner(locales=options.identifier_locales)
        self.near_index: NearDuplicateIndex | None = None  # the note-by-note path (NEAR_DUPLICATE_STORE "memory")
        self.near_disk: DiskNearDuplicateIndex | None = None  # opened by run() in the staging folder
        self.near_pending: list[tuple[str, _KeptNote, str]] | None = None  # (group kind, note, normalised text)
        self.near_pending_characters = 0
        if options.near_duplicate_threshold is not None and NEAR_DUPLICATE_STORE == "memory":
            self.near_index = NearDuplicateIndex(threshold=options.near_duplicate_threshold)
        elif options.near_duplicate_threshold is not None:
            self.near_pending = []
        self.tokens = _TokenCounter(options.tokenizer) if options.tokenizer else None
        self.deid = _Deid(options) if options.deid != "none" else None
        self.dropped: Counter = Counter()
        self.findings: Counter = Counter()
        self.notes_with_identifiers = 0
        self.group_kinds: Counter = Counter()
        self.split_stats = {split: SplitStats() for split in SPLITS}
        self.seen = SeenKeys()
        self.note_ids = SeenKeys()  # each note id as an 8-byte hash: flat memory, and no id kept
        self.repeated_note_ids = 0
        self.test_notes = 0  # kept in the test split, before the Likert notes leave it
        self.sampler = HeldOutSampler(options.likert_notes, options.split.seed, options.likert_min_characters)
        self.read_options = ReadOptions(
            mapping=options.mapping, encoding=options.encoding, delimiter=options.delimiter, on_error=options.on_error,
            drop=lambda reason: self.dropped.update((reason,)),
        )  # fmt: skip
        self.infos: list[SourceFile] = []
        self.records_read = 0

    def run(self, files: list[Path], staging: Path) -> None:
        """Stream every file into ``staging/<split>.jsonl``, with a progress bar in bytes."""
        total_bytes = sum(path.stat().st_size for path in files)
        if self.deid is not None and self.options.workers == 1 and total_bytes > SLOW_DEID_BYTES and (os.cpu_count() or 1) > 1:
            log.warning("%s: de-identifying %.0f MB in one process; --workers %d would use every core (the output is the same)",
                        self.options.name, total_bytes / 1e6, os.cpu_count())  # fmt: skip
        with contextlib.ExitStack() as stack:
            handles = {split: stack.enter_context(open(staging / f"{split}.jsonl", "w", encoding="utf-8")) for split in SPLITS}
            bar = stack.enter_context(tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=f"{self.options.name}", smoothing=0.1))
            if self.deid is not None:
                stack.callback(self.deid.runner.close)  # workers stop on an error too
            if self.near_pending is not None:  # its files go with it, before staging is published
                threshold, workers = self.options.near_duplicate_threshold, self.options.workers  # its hashing uses --workers too
                self.near_disk = stack.enter_context(DiskNearDuplicateIndex(staging, threshold=threshold, workers=workers))
            for path in files:
                self._read_file(path, handles, bar)
            self._decide_near_duplicates(handles)
            if self.deid is not None:
                for note in self.deid.finish():
                    self._write(note, handles)

    def _read_file(self, path: Path, handles: dict[str, Any], bar: tqdm) -> None:
        info = SourceFile(path=path)
        self.infos.append(info)
        reported = 0
        for raw in read_notes(path, info, self.read_options):
            self.records_read += 1
            if info.bytes - reported > 1 << 20:
                bar.update(info.bytes - reported)
                reported = info.bytes
                bar.set_postfix(notes=self.records_read, refresh=False)
            self._take(raw, handles)
        bar.update(info.bytes - reported)

    def _clean(self, raw: Any) -> str | None:
        """The normalised, identifier-handled text of a note, or None when it is dropped."""
        text = normalise_note(raw.text or "")
        if not text:
            self.dropped["empty"] += 1
            return None
        if len(text) < self.options.min_characters:
            self.dropped["too_short"] += 1
            return None
        found = self.scanner.find(text)
        if not found:
            return text
        self.notes_with_identifiers += 1
        self.findings.update(finding.kind for finding in found)
        if self.options.identifier_mode == "refuse":
            kinds = ", ".join(sorted({finding.kind for finding in found}))
            raise CorpusError(
                f"{raw.where}: the note contains personal identifiers ({kinds}; values not shown) and "
                "--identifier-mode is refuse, so nothing was written. Fix: de-identify the source, or "
                "use --identifier-mode mask to replace them with placeholders."
            )
        return self.scanner.mask(text, found) if self.options.identifier_mode == "mask" else text

    def _is_duplicate(self, text: str) -> tuple[bool, str, str]:
        """(dropped?, the note's key in hex, its normalised text): dedup's one definition of a
        duplicate, so that ``contamination`` calls the same pairs duplicates. Near duplicates are
        decided here only on the note-by-note path; otherwise by :meth:`_decide_near_duplicates`."""
        normalised = normalise_for_dedup(text)
        key = key_of_normalised(normalised)
        if not self.seen.add_if_new(key):
            self.dropped["duplicate"] += 1
            return True, key_hex(key), normalised
        if self.near_index is not None and self.near_index.add_if_new(key_hex(key), normalised) is not None:
            self.dropped["near_duplicate"] += 1
            return True, key_hex(key), normalised
        return False, key_hex(key), normalised

    def _decide_near_duplicates(self, handles: dict[str, Any]) -> None:
        """Decide the pending notes against the disk index (as if one by one, in order) and send
        the kept ones on in their original order: the outputs equal the note-by-note path's."""
        if not self.near_pending:
            return
        pending, self.near_pending, self.near_pending_characters = self.near_pending, [], 0
        answers = self.near_disk.add_batch([note.key for _, note, _ in pending], [normalised for _, _, normalised in pending])
        for (kind, note, _), duplicate_of in zip(pending, answers):
            if duplicate_of is not None:
                self.dropped["near_duplicate"] += 1
            else:
                self._keep(kind, note, handles)

    def _is_repeated_id(self, raw: Any) -> bool:
        """Whether ``raw``'s note id (read from a column) was an earlier record's: refused under
        ``--on-error fail``; otherwise the first record of the id is kept and the others counted."""
        if not raw.note_id or not raw.id_from_data:
            return False
        digest = hashlib.blake2b(raw.note_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        if self.note_ids.add_if_new(int.from_bytes(digest, "big", signed=True)):
            return False
        self.repeated_note_ids += 1
        if self.options.on_error == "fail":
            raise CorpusError(
                f"{raw.where}: this record has the note id of an earlier record (ids not shown), so two notes "
                "would share one id. Fix: give each note its own id in the export, pass the right --id-column, or "
                "--on-error skip to keep the first record of each id and count the others."
            )
        self.dropped["repeated_note_id"] += 1
        return True

    def _take(self, raw: Any, handles: dict[str, Any]) -> None:
        if self._is_repeated_id(raw):
            return
        text = self._clean(raw)
        if text is None:
            return
        duplicate, key, normalised = self._is_duplicate(text)  # on the text before surrogates, which differ per patient
        if duplicate:
            return
        kind, group = group_of(raw.patient_id, raw.admission_id, raw.note_id or raw.where)
        note = _KeptNote(text, group, raw.note_id or raw.where, raw.date, key)
        if self.near_pending is None:
            self._keep(kind, note, handles)
            return
        self.near_pending.append((kind, note, normalised))
        self.near_pending_characters += len(text)
        if len(self.near_pending) >= NEAR_DUPLICATE_BATCH_NOTES or self.near_pending_characters >= NEAR_DUPLICATE_BATCH_CHARACTERS:
            self._decide_near_duplicates(handles)

    def _keep(self, kind: str, note: _KeptNote, handles: dict[str, Any]) -> None:
        """Count the kept note's group and send it on: de-identification (which may hold it), then its split."""
        self.group_kinds[kind] += 1
        for ready in self.deid.submit(note) if self.deid is not None else (note,):
            self._write(ready, handles)

    def _write(self, note: _KeptNote, handles: dict[str, Any]) -> None:
        """Write a kept (and de-identified) note to its split."""
        text, group, key = note.text, note.group, note.key
        split = self.options.split.split_of(group)
        record = {"text": text, "id": note.note_id}
        if note.date:
            record["date"] = note.date
        line = jsonl_line(record)
        handles[split].write(line)
        self.split_stats[split].documents += 1
        self.split_stats[split].characters += len(text)
        if self.tokens is not None and split != "test":  # test is counted once the Likert notes left it
            self.tokens.add(split, text)
        if split == "test":
            self.test_notes += 1
            self.sampler.offer(group, key, line, len(text))

    def finish(self, staging: Path, sources: list[Path]) -> dict[str, Any]:
        """Carve the Likert notes out of test, finish the token counts and return the manifest."""
        kept = sum(stats.documents for stats in self.split_stats.values())
        if kept == 0:
            raise CorpusError(
                f"{', '.join(map(str, sources))}: no notes kept from {self.records_read} records read "
                f"(dropped: {dict(self.dropped) or 'none'}). Fix: check the text column (--text-column) and the files."
            )
        likert = _carve_held_out(staging, self.sampler.records(), self.split_stats, self.tokens)
        for caveat in self._likert_caveats(likert.documents):
            log.warning("%s: %s", self.options.name, caveat)
        if self.tokens is not None:
            for split in self.tokens.pending:
                self.tokens.flush(split)
            for split in SPLITS:
                self.split_stats[split].tokens = self.tokens.totals[split]
        return self._manifest(staging, sources, kept, likert)

    def _likert_caveats(self, drawn: int) -> list[str]:
        """Why fewer Likert notes than --likert-notes were drawn, and what to change (or nothing)."""
        options = self.options
        if drawn >= options.likert_notes:
            return []
        return [
            f"{drawn:,} of the {options.likert_notes:,} Likert notes asked for (--likert-notes) could be drawn: the test split "
            f"(--test-fraction {options.split.test_fraction:g}) kept {self.test_notes:,} notes, and {drawn:,} of its patients (or "
            f"admissions, notes where no patient id exists) have one of at least {options.likert_min_characters:,} characters "
            "(--likert-min-characters); one note is drawn per patient. Fix: raise --test-fraction or lower --likert-min-characters"
        ]

    def _manifest(self, staging: Path, sources: list[Path], kept: int, likert: SplitStats) -> dict[str, Any]:
        options, characters = self.options, sum(stats.characters for stats in self.split_stats.values())
        return {
            **manifest_header(options.name, sources, _options_record(options)),
            "dataset": options.name,
            "plugin": options.plugin,
            "versions": _package_versions(),
            "sources": _sources_summary(self.infos),
            "records_read": self.records_read,
            "documents": kept,
            "characters": characters,
            "estimated_tokens": estimate_tokens(characters),
            "tokens_estimate_rule": f"characters / {CHARS_PER_TOKEN_ESTIMATE:g}",
            "tokenizer": options.tokenizer,
            "splits": {
                split: {**asdict(stats), "estimated_tokens": estimate_tokens(stats.characters)}
                for split, stats in {**self.split_stats, "likert": likert}.items()
            },
            "notes_by_group_kind": dict(self.group_kinds),
            **split_disjointness(self.group_kinds),
            "deduplication": {
                "exact_key": DUPLICATE_KEY,
                "normalisation": NORMALISATION,
                "near_duplicate_threshold": options.near_duplicate_threshold,
            },
            "dropped": dict(sorted(self.dropped.items())),
            "repeated_note_ids": self.repeated_note_ids,
            "likert_caveats": self._likert_caveats(likert.documents),
            "deid": self.deid.summary() if self.deid is not None else {"mode": "none", "note": "de-identification was turned off (--deid none)"},
            "identifiers": {
                "mode": options.identifier_mode,
                "locales": list(options.identifier_locales),
                "notes_with_findings": self.notes_with_identifiers,
                "findings_by_type": dict(sorted(self.findings.items())),
            },
            "datasets": dataset_records(staging, registry_entries(options.name), Path("data") / options.name),
            "outputs": output_facts(sorted(staging.glob("*.jsonl"))),
        }


def _carve_held_out(staging: Path, chosen_lines: list[str], split_stats: dict[str, SplitStats], tokens: _TokenCounter | None) -> SplitStats:
    """Move the Likert notes out of the test split into their own file (the test file is rewritten)."""
    chosen = set(chosen_lines)
    likert = SplitStats()
    test_path = staging / "test.jsonl"
    rewritten = staging / "test.jsonl.rewrite"
    with open(test_path, encoding="utf-8") as source, open(rewritten, "w", encoding="utf-8") as target:
        for line in source:
            if line not in chosen:
                target.write(line)
                if tokens is not None:
                    tokens.add("test", json.loads(line)["text"])
    os.replace(rewritten, test_path)
    with open(staging / LIKERT_FILE, "w", encoding="utf-8") as handle:
        for line in chosen_lines:
            handle.write(line)
            text = json.loads(line)["text"]
            likert.documents += 1
            likert.characters += len(text)
            split_stats["test"].documents -= 1
            split_stats["test"].characters -= len(text)
            if tokens is not None:
                tokens.add("likert", text)
    if tokens is not None:
        tokens.flush("likert")
        likert.tokens = tokens.totals["likert"]
    return likert


def _options_record(options: PrepareOptions) -> dict[str, Any]:
    record = asdict(options)
    record["mapping"] = {name: list(value) for name, value in asdict(options.mapping).items() if name != "required"}
    record["split"] = asdict(options.split)
    record["deid_seed"] = "given (not recorded)" if options.deid_seed else None  # the key of the surrogates stays secret
    return record


def registry_entries(name: str) -> dict[str, dict[str, Any]]:
    """LLaMA-Factory entries: ``<name>`` is the training split; the others carry a suffix."""
    files = {name: "train", f"{name}_validation": "validation", f"{name}_test": "test", f"{name}_likert": "likert_heldout"}
    return {
        dataset: {"file_name": f"data/{name}/{stem}.jsonl", "columns": {"prompt": "text"}} for dataset, stem in files.items()
    }
