"""MIMIC-CXR-PT-BR: MIMIC-CXR chest X-ray studies with their reports translated into Brazilian Portuguese.

``prepare mimic_cxr`` reads the PhysioNet files, draws the subset, caches 896x896 images and writes the
translation set; ``prepare mimic-cxr-ptbr`` joins the translations back, rejects unusable ones and
writes the multimodal sets. Input layout, section rules, the subset draw, image handling and the
rejection rules are in docs/mimic_cxr_ptbr.md ("Plugin reference").
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from PIL import Image, ImageOps
from tqdm import tqdm

from medfactory.base.atomic import atomic_write, sha256_file, write_json_atomic
from medfactory.base.errors import CorpusError, exit_on_corpus_error
from medfactory.base.jsonl import iter_jsonl, read_jsonl, write_jsonl
from medfactory.base.manifest import PreparationStats, build_manifest, dataset_records
from medfactory.base.names import confined_path, safe_component
from medfactory.base.publish import publish_datasets
from medfactory.base.registry import REGISTRY_NAME, load_registry
from medfactory.corpus.readers import describe_columns
from medfactory.corpus.splits import unit_hash
from medfactory.generate.gates import MIN_LENGTH_RATIO, MIN_PORTUGUESE_SHARE, MIN_WORDS_FOR_LANGUAGE, rejection_reason
from medfactory.generate.gates import is_portuguese as is_portuguese  # re-exported: the plugin's rule, tested with it
from medfactory.generate.prompts import prompt_for
from medfactory.plugins import CorpusPlugin, ReplaceOption

log = logging.getLogger(__name__)

CORPUS_NAME = "mimic_cxr"
PTBR_COMMAND = "mimic-cxr-ptbr"
PTBR_NAME = "mimic_cxr_ptbr"
DATASET_DIR = Path("data") / CORPUS_NAME
IMAGE_CACHE_DIR = Path("data") / "mimic_cxr_images"
PTBR_DIR = Path("data") / PTBR_NAME

# The report prompt of medgemma-27b-text-it's translation run: one text, shared with `generate translate`.
TRANSLATE_PROMPT = prompt_for("pt", "report")
DIAGNOSIS_PROMPT = "Dê o diagnóstico das imagens apresentadas"
FEWSHOT_INSTRUCTION = (
    "Escreva o relatório das imagens no formato do exemplo abaixo, que é de outro exame "
    "e não descreve estas imagens.\n\n"
)
IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 896

SPLITS = ("train", "validation", "test")
OFFICIAL_SPLITS = {"train": "train", "validate": "validation", "validation": "validation", "test": "test"}
DEFAULT_COUNTS = {"train": 960, "validation": 473, "test": 965}
DEFAULT_SEED = 42
DEFAULT_MAX_IMAGES = 2

SPLIT_TABLE = "mimic-cxr-2.0.0-split.csv"
METADATA_TABLE = "mimic-cxr-2.0.0-metadata.csv"
CHEXPERT_TABLE = "mimic-cxr-2.0.0-chexpert.csv"
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition")
CHEXPERT_ID_COLUMNS = ("subject_id", "study_id")

STUDIES_FILE = "studies.jsonl"
TRANSLATE_FILE = "translate.jsonl"
TRANSLATE_IDS_FILE = "translate_ids.json"
TEST_IDS_FILE = "test_ids.json"
TEST_REFERENCES_FILE = "test_references.jsonl"
FEWSHOT_FILE = "test_fewshot.json"

TRANSLATE_DATASET = "mimic_cxr_translate"
TRANSLATE_ENTRY = {
    TRANSLATE_DATASET: {
        "file_name": f"{DATASET_DIR.as_posix()}/{TRANSLATE_FILE}",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
    }
}


def _sharegpt_entry(file_name: str) -> dict[str, Any]:
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    }


PTBR_ENTRIES = {
    **{f"{PTBR_NAME}_{split}": _sharegpt_entry(f"{PTBR_DIR.as_posix()}/{split}.json") for split in SPLITS},
    f"{PTBR_NAME}_test_fewshot": _sharegpt_entry(f"{PTBR_DIR.as_posix()}/{FEWSHOT_FILE}"),
}

# --- Report sections ----------------------------------------------------------------------------------

FINDINGS_NAMES = frozenset({"FINDINGS", "FINDING"})
IMPRESSION_NAMES = frozenset({"IMPRESSION", "IMPRESSIONS"})
# Section names of MIMIC-CXR reports (matched in any case); other all-capitals names end a section too.
KNOWN_HEADERS = FINDINGS_NAMES | IMPRESSION_NAMES | frozenset(
    {
        "EXAMINATION", "EXAM", "TYPE OF EXAMINATION", "REFERENCE EXAM", "PROCEDURE",
        "INDICATION", "INDICATIONS", "CLINICAL INDICATION", "HISTORY", "CLINICAL HISTORY",
        "CLINICAL INFORMATION", "REASON FOR EXAM", "REASON FOR EXAMINATION", "TECHNIQUE",
        "COMPARISON", "COMPARISONS", "WET READ", "FINAL REPORT", "ADDENDUM", "NOTIFICATION",
        "RECOMMENDATION", "RECOMMENDATIONS", "RECOMMENDATION(S)", "CONCLUSION", "CONCLUSIONS",
        "PFI", "PROVISIONAL FINDINGS IMPRESSION", "PROVISIONAL FINDINGS IMPRESSION (PFI)",
    }
)  # fmt: skip
# Letters only (no digits): "NOTIFIED AT 10:15" is not a header.
_HEADER_LINE = re.compile(r"^\s*(?P<name>[A-Za-z][A-Za-z /&(),\-]*?)\s*:(?P<rest>.*)$")
_FINAL_REPORT_LINE = re.compile(r"^\s*final\s+report\s*$", re.IGNORECASE)


def _header_of(line: str) -> tuple[str, str] | None:
    """(normalized header name, the rest of the line) when ``line`` starts a section, else None."""
    if _FINAL_REPORT_LINE.match(line):
        return "FINAL REPORT", ""
    match = _HEADER_LINE.match(line)
    if not match:
        return None
    written = " ".join(match["name"].split())
    name = written.upper()
    if name in KNOWN_HEADERS:
        return name, match["rest"]
    if written == name and sum(char.isalpha() for char in written) >= 4:
        return name, match["rest"]
    return None


def _clean_section(lines: Iterable[str]) -> str:
    """Unwrap lines, collapse spaces; paragraphs (blank-line separated) stay apart by one newline."""
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(" ".join(current).split()))
            current = []
    if current:
        paragraphs.append(" ".join(" ".join(current).split()))
    return "\n".join(paragraphs)


def extract_sections(text: str) -> dict[str, str | None]:
    """``{"findings": ..., "impression": ...}`` of a MIMIC-CXR report, None where absent or empty."""
    sections: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        header = _header_of(line)
        if header is None:
            if current is not None:
                current.append(line)
            continue
        name, rest = header
        current = [rest]
        sections.append((name, current))

    def first_non_empty(names: frozenset[str]) -> str | None:
        for name, body in sections:
            cleaned = _clean_section(body) if name in names else ""
            if cleaned:
                return cleaned
        return None

    return {"findings": first_non_empty(FINDINGS_NAMES), "impression": first_non_empty(IMPRESSION_NAMES)}


def english_report(findings: str | None, impression: str | None) -> str:
    parts = []
    if findings:
        parts.append(f"FINDINGS: {findings}")
    if impression:
        parts.append(f"IMPRESSION: {impression}")
    return "\n\n".join(parts)


# --- Tables ---------------------------------------------------------------------------------------------


def find_table(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_table(path: Path, required: Iterable[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, compression="infer")
    except Exception as error:  # pandas raises many kinds (parser, gzip, unicode): name the file
        raise CorpusError(f"{path}: cannot read the table ({type(error).__name__}: {error}). Download it again from PhysioNet.") from error
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise CorpusError(
            f"{path}: missing column(s) {', '.join(missing)} ({describe_columns([str(column) for column in frame.columns])}). "
            "Use the table as PhysioNet releases it."
        )
    for column in frame.columns:
        frame[column] = frame[column].str.strip()
    return frame


def _require_table(root: Path, name: str) -> Path:
    path = find_table(root, name)
    if path is None:
        raise CorpusError(
            f"{root / name}(.gz): table not found. It ships with MIMIC-CXR-JPG "
            "(physionet.org/content/mimic-cxr-jpg/); pass the folder holding it as --jpg-root."
        )
    return path


# Real MIMIC ids are digits (subject, study) or hex with dashes (dicom): checked in bulk, the rest one by one.
_PLAIN_ID = r"[A-Za-z0-9_-]+"
ID_FIX = "Use the table as PhysioNet releases it (download it again); ids name files and folders."


def check_ids(path: Path, table: pd.DataFrame, columns: Iterable[str]) -> None:
    """Refuse a table whose id cells cannot name one file or folder (``..``, ``/``, ``a/b``, ...).

    The ids become paths (reports, images, the image cache); the message names the table and the row,
    never the value (cells of a credentialed dataset).
    """
    for column in columns:
        values = table[column]
        for row in np.flatnonzero(~values.str.fullmatch(_PLAIN_ID).to_numpy(dtype=bool)):
            where = f"{path}, row {row + 1} after the header"
            safe_component(values.iat[row], f"the {column}", where=where, fix=ID_FIX, show_value=False)


def _label_value(value: str) -> int | float | None:
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else number


# --- Images ---------------------------------------------------------------------------------------------

FRONTAL_VIEWS = ("PA", "AP")
LATERAL_VIEWS = ("LATERAL", "LL")
_VIEW_RANK = {view: rank for rank, view in enumerate((*FRONTAL_VIEWS, *LATERAL_VIEWS))}


def choose_images(images: list[tuple[str, str]], max_images: int) -> list[tuple[str, str]]:
    """``(dicom_id, view)`` pairs of a study -> the ones to use, in order (see the module docstring)."""
    known = sorted((image for image in images if image[1] in _VIEW_RANK), key=lambda image: (_VIEW_RANK[image[1]], image[0]))
    if not known:
        return sorted(images, key=lambda image: (image[1], image[0]))[:max_images]
    chosen: list[tuple[str, str]] = []
    for group in (FRONTAL_VIEWS, LATERAL_VIEWS):
        best = next((image for image in known if image[1] in group), None)
        if best is not None:
            chosen.append(best)
    chosen += [image for image in known if image not in chosen]
    return chosen[:max_images]


def square_resize(image: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """Pad to a centred square with black, resize to ``size`` x ``size`` (Lanczos), as RGB."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit or float grayscale (not in MIMIC-CXR-JPG, which is 8-bit): stretch to 8 bits.
        pixels = np.asarray(image, dtype=np.float64)
        top = pixels.max() or 1.0
        image = Image.fromarray(np.clip(pixels / top * 255.0, 0, 255).astype(np.uint8))  # 2-D uint8: mode L
    elif image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    side = max(image.size)
    square = Image.new(image.mode, (side, side), 0)
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square.resize((size, size), Image.Resampling.LANCZOS).convert("RGB")


# What each cached image was made from, in ``<dicom>.png.source.json`` beside it: a cached image is
# reused only when its source has the same size and mtime and the PNG the same bytes (sha256).
CACHE_RECORD_SUFFIX = ".source.json"
CACHE_FORMAT = 1  # bump when square_resize's output changes: images cached in another format are redone


def cache_record_path(target: Path) -> Path:
    return target.with_name(target.name + CACHE_RECORD_SUFFIX)


def _source_facts(source: Path) -> dict[str, int]:
    stat = source.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_is_current(source: Path, target: Path, size: int = IMAGE_SIZE) -> bool:
    """Whether ``target`` was made from ``source`` as it is now, at ``size``, and is whole."""
    try:
        record = json.loads(cache_record_path(target).read_text(encoding="utf-8"))
        if not isinstance(record, dict) or (record.get("format"), record.get("size")) != (CACHE_FORMAT, size):
            return False
        if record.get("source") != _source_facts(source):
            return False
        image = record.get("image") or {}
        return target.stat().st_size == image.get("bytes") and sha256_file(target) == image.get("sha256")
    except (OSError, ValueError, AttributeError):  # no record, unreadable, or not what we wrote
        return False


def cache_image(source: Path, target: Path, size: int = IMAGE_SIZE) -> bool:
    """Write ``target`` from ``source`` unless the cache holds it as made from ``source`` now; True when written."""
    if cache_is_current(source, target, size):
        return False
    try:
        facts = _source_facts(source)  # before the read: a source changed meanwhile is redone next time
        with Image.open(source) as image:
            image.load()
            prepared = square_resize(image, size)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise CorpusError(f"{source}: cannot read the image ({error}). Download it again from MIMIC-CXR-JPG.") from error
    with atomic_write(target, mode="wb") as handle:
        prepared.save(handle, format="PNG")
    image_facts = {"bytes": target.stat().st_size, "sha256": sha256_file(target)}
    write_json_atomic(cache_record_path(target), {"format": CACHE_FORMAT, "size": size, "source": facts, "image": image_facts})
    return True


# --- Part 1: the subset and the translation set ----------------------------------------------------------


@dataclass
class _Study:
    study_id: str
    subject_id: str
    split: str
    images: list[tuple[str, str]] = field(default_factory=list)  # (dicom_id, view) from the tables


def _group(part: str) -> str:
    return f"p{part[:2]}"


def _under_files(root: Path, *parts: str) -> Path:
    """``root/files/<parts>``, each part one path component (the ids were checked when the tables were read)."""
    return Path(root, "files", *(safe_component(part, "a MIMIC id", fix=ID_FIX, show_value=False) for part in parts))


def report_path(root: Path, subject_id: str, study_id: str) -> Path:
    return _under_files(root, _group(subject_id), f"p{subject_id}", f"s{study_id}.txt")


def image_path(root: Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    return _under_files(root, _group(subject_id), f"p{subject_id}", f"s{study_id}", f"{dicom_id}.jpg")


def cached_image(output_root: Path, study_id: str, dicom_id: str) -> Path:
    """The cache file of one image, checked to stay inside ``data/mimic_cxr_images/``."""
    return confined_path(output_root / IMAGE_CACHE_DIR, study_id, f"{dicom_id}.png", what="a cached image name", fix=ID_FIX, show_value=False)


def _check_registry(registry: Path) -> None:
    if registry.exists():
        try:
            load_registry(registry)
        except ValueError as error:
            raise CorpusError(f"{error} Fix or delete {registry}, then run again.") from error


def _load_studies(split_path: Path, metadata_path: Path, stats: PreparationStats) -> dict[str, _Study]:
    split_table = read_table(split_path, SPLIT_COLUMNS)
    check_ids(split_path, split_table, ("dicom_id", "study_id", "subject_id"))
    metadata = read_table(metadata_path, METADATA_COLUMNS)
    views = dict(zip(metadata["dicom_id"], metadata["ViewPosition"], strict=True))
    studies: dict[str, _Study] = {}
    conflicting: set[str] = set()
    unknown_splits: Counter = Counter()
    for dicom_id, study_id, subject_id, split in split_table[list(SPLIT_COLUMNS)].itertuples(index=False):
        ours = OFFICIAL_SPLITS.get(split.lower())
        if ours is None:
            unknown_splits[split] += 1
            continue
        study = studies.setdefault(study_id, _Study(study_id, subject_id, ours))
        if study.split != ours or study.subject_id != subject_id:
            conflicting.add(study_id)
        study.images.append((dicom_id, views.get(dicom_id, "").upper() or "UNKNOWN"))
    if unknown_splits:
        raise CorpusError(
            f"{split_path}: unknown split value(s) {dict(unknown_splits)}; expected train, validate or test."
        )
    for study_id in conflicting:
        # One study listed under two splits or two subjects: not in the official file; never guess.
        del studies[study_id]
        stats.drop("split_conflict")
    return studies


def _chexpert(path: Path | None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    if path is None:
        return {}, []
    table = read_table(path, CHEXPERT_ID_COLUMNS)
    labels = [column for column in table.columns if column not in CHEXPERT_ID_COLUMNS]
    by_study = {
        row["study_id"]: {label: _label_value(row[label]) for label in labels} for row in table.to_dict("records")
    }
    return by_study, labels


@dataclass
class _Inputs:
    """The checked inputs of ``prepare mimic_cxr``: folders, tables and options."""

    source: Path
    jpg_root: Path
    output_root: Path
    counts: dict[str, int]
    seed: int
    max_images: int
    workers: int
    split_path: Path
    metadata_path: Path
    chexpert_path: Path | None

    @property
    def registry(self) -> Path:
        return self.output_root / REGISTRY_NAME


@dataclass
class _Draw:
    """The studies drawn from each split, and what the draw walked past to find them."""

    selected: list[dict[str, Any]] = field(default_factory=list)  # {"study", "findings", "impression", "chosen"}
    inspected: Counter = field(default_factory=Counter)
    available: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    image_files_missing: int = 0


def _check_folders(source: Path, jpg_root: Path) -> None:
    if not source.is_dir():
        raise CorpusError(f"{source}: MIMIC-CXR folder not found. Pass the folder holding files/p10/... as --source.")
    if not (source / "files").is_dir():
        raise CorpusError(
            f"{source / 'files'}: not found. --source is the MIMIC-CXR folder where the reports "
            "(mimic-cxr-reports.zip) extract to files/pNN/pSUBJECT/sSTUDY.txt."
        )
    if not jpg_root.is_dir():
        raise CorpusError(f"{jpg_root}: MIMIC-CXR-JPG folder not found. Pass it as --jpg-root.")


def _check_inputs(
    source: Path,
    jpg_root: Path | None,
    output_root: Path,
    counts: dict[str, int] | None,
    seed: int,
    max_images: int,
    workers: int | None,
) -> _Inputs:
    """Resolve the options and find the folders, tables and registry, before anything is read."""
    source = Path(source)
    jpg_root = Path(jpg_root) if jpg_root is not None else source
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    if set(counts) != set(SPLITS) or any(value < 0 for value in counts.values()):
        raise CorpusError(f"counts {counts}: give train, validation and test, each 0 or more.")
    if max_images < 1:
        raise CorpusError(f"--max-images {max_images}: use 1 or more.")
    workers = workers or min(8, os.cpu_count() or 1)
    _check_folders(source, jpg_root)
    inputs = _Inputs(
        source=source,
        jpg_root=jpg_root,
        output_root=Path(output_root),
        counts=counts,
        seed=seed,
        max_images=max_images,
        workers=workers,
        split_path=_require_table(jpg_root, SPLIT_TABLE),
        metadata_path=_require_table(jpg_root, METADATA_TABLE),
        chexpert_path=find_table(jpg_root, CHEXPERT_TABLE),
    )
    _check_registry(inputs.registry)
    return inputs


def _eligible(inputs: _Inputs, study: _Study, stats: PreparationStats, draw: _Draw) -> dict[str, Any] | None:
    """The study's sections and chosen images when it has a report with FINDINGS or IMPRESSION and an image, else None."""
    path = report_path(inputs.source, study.subject_id, study.study_id)
    if not path.is_file():
        stats.drop("report_missing")
        return None
    stats.files_read += 1
    sections = extract_sections(path.read_text(encoding="utf-8", errors="replace"))
    if not sections["findings"] and not sections["impression"]:
        stats.drop("no_findings_or_impression")
        return None
    present = [image for image in study.images if image_path(inputs.jpg_root, study.subject_id, study.study_id, image[0]).is_file()]
    draw.image_files_missing += len(study.images) - len(present)
    if not present:
        stats.drop("no_images")
        return None
    return {"study": study, **sections, "chosen": choose_images(present, inputs.max_images)}


def _draw_split(inputs: _Inputs, studies: dict[str, _Study], split: str, stats: PreparationStats, draw: _Draw) -> None:
    """Walk one split in seeded hash order, taking eligible studies until it has its count."""
    wanted = inputs.counts[split]
    candidates = sorted(
        (study for study in studies.values() if study.split == split),
        key=lambda study: (unit_hash(inputs.seed, study.study_id), study.study_id),
    )
    taken: list[dict[str, Any]] = []
    for study in candidates:
        if len(taken) == wanted:
            break
        draw.inspected[split] += 1
        item = _eligible(inputs, study, stats, draw)
        if item is not None:
            taken.append(item)
    if len(taken) < wanted:
        message = (
            f"{split}: {wanted} studies requested, only {len(taken)} eligible among "
            f"{draw.available[split]} in the official split; took them all"
        )
        draw.warnings.append(message)
        log.warning(message)
    draw.selected += sorted(taken, key=lambda item: (len(item["study"].study_id), item["study"].study_id))


def _draw_subset(inputs: _Inputs, studies: dict[str, _Study], stats: PreparationStats) -> _Draw:
    """Draw every split; fail when no study at all is eligible."""
    draw = _Draw(available=Counter(study.split for study in studies.values()))
    for split in SPLITS:
        _draw_split(inputs, studies, split, stats, draw)
    if not draw.selected:
        raise CorpusError(
            f"{inputs.source}: no eligible study (a report with FINDINGS or IMPRESSION and at least one image) "
            f"among {sum(draw.inspected.values())} inspected; dropped: {dict(stats.dropped) or 'none'}. "
            "Check --source (reports) and --jpg-root (images and tables)."
        )
    return draw


def _cache_images(inputs: _Inputs, selected: list[dict[str, Any]]) -> list[bool]:
    """Write the chosen images once into the persistent cache, in parallel (PIL releases the GIL)."""
    jobs = []
    for item in selected:
        study = item["study"]
        for dicom_id, _view in item["chosen"]:
            jobs.append(
                (
                    image_path(inputs.jpg_root, study.subject_id, study.study_id, dicom_id),
                    cached_image(inputs.output_root, study.study_id, dicom_id),
                )
            )
    with ThreadPoolExecutor(max_workers=inputs.workers) as pool:
        return list(tqdm(pool.map(lambda job: cache_image(*job), jobs), total=len(jobs), unit="image", desc=f"{CORPUS_NAME} images"))


def _study_records(
    selected: list[dict[str, Any]], chexpert: dict[str, dict[str, Any]], has_chexpert: bool, stats: PreparationStats
) -> list[dict[str, Any]]:
    """One ``studies.jsonl`` record per drawn study, in the draw's order; counts each report in ``stats``."""
    records = []
    for item in selected:
        study = item["study"]
        report = english_report(item["findings"], item["impression"])
        stats.keep(report, study.split)
        records.append(
            {
                "study_id": study.study_id,
                "subject_id": study.subject_id,
                "split": study.split,
                "report_en": report,
                "findings": item["findings"],
                "impression": item["impression"],
                "images": [(IMAGE_CACHE_DIR / study.study_id / f"{dicom}.png").as_posix() for dicom, _view in item["chosen"]],
                "views": [view for _dicom, view in item["chosen"]],
                "chexpert": chexpert.get(study.study_id) if has_chexpert else None,
            }
        )
    return records


def _write_translation_set(staging: Path, records: list[dict[str, Any]]) -> list[Path]:
    """Write the studies, the alpaca translation rows and their study ids (same order) into ``staging``."""
    write_jsonl(staging / STUDIES_FILE, records)
    write_jsonl(staging / TRANSLATE_FILE, ({"instruction": TRANSLATE_PROMPT, "input": record["report_en"], "output": ""} for record in records))
    with atomic_write(staging / TRANSLATE_IDS_FILE) as handle:
        json.dump([record["study_id"] for record in records], handle)
        handle.write("\n")
    return [staging / STUDIES_FILE, staging / TRANSLATE_FILE, staging / TRANSLATE_IDS_FILE]


def _longest_report(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The longest English report in characters and in words, with its study (the first one on a tie)."""
    longest = {"characters": 0, "characters_study_id": None, "words": 0, "words_study_id": None}
    for record in records:
        report = record["report_en"]
        words = len(report.split())
        if len(report) > longest["characters"]:
            longest.update(characters=len(report), characters_study_id=record["study_id"])
        if words > longest["words"]:
            longest.update(words=words, words_study_id=record["study_id"])
    return longest


def _image_facts(records: list[dict[str, Any]], written: list[bool], files_missing: int) -> dict[str, Any]:
    """The manifest's ``images``: totals by view and per study, and how many the cache already held."""
    views = Counter(view for record in records for view in record["views"])
    per_study = Counter(len(record["images"]) for record in records)
    return {
        "total": sum(per_study[n] * n for n in per_study),
        "by_view": dict(sorted(views.items())),
        "per_study": {str(n): per_study[n] for n in sorted(per_study)},
        "written": sum(written),
        "reused_from_cache": len(written) - sum(written),
        "files_missing_in_inspected_studies": files_missing,
        "cache": IMAGE_CACHE_DIR.as_posix(),
        "cache_check": f"reused only when the source's bytes and mtime and the PNG's sha256 match <image>{CACHE_RECORD_SUFFIX}",
    }


def _subset_options(inputs: _Inputs) -> dict[str, Any]:
    return {
        "train": inputs.counts["train"],
        "validation": inputs.counts["validation"],
        "test": inputs.counts["test"],
        "seed": inputs.seed,
        "max_images": inputs.max_images,
        "image_size": IMAGE_SIZE,
        "image_format": "RGB PNG, padded to a centred square with black, Lanczos resize",
        "selection": "per official split, studies ranked by blake2b(seed, study_id), first eligible taken",
    }


def _subset_manifest(
    inputs: _Inputs,
    staging: Path,
    outputs: list[Path],
    stats: PreparationStats,
    draw: _Draw,
    records: list[dict[str, Any]],
    written: list[bool],
    chexpert_labels: list[str],
) -> dict[str, Any]:
    """The manifest of ``data/mimic_cxr/``: the schema's keys, then the draw's counts; no report text."""
    manifest = build_manifest(CORPUS_NAME, inputs.source, outputs, stats, options=_subset_options(inputs))
    manifest["datasets"] = dataset_records(staging, TRANSLATE_ENTRY, DATASET_DIR)
    tables = {"split": inputs.split_path, "metadata": inputs.metadata_path, **({"chexpert": inputs.chexpert_path} if inputs.chexpert_path else {})}
    manifest.update(
        {
            "jpg_root": str(inputs.jpg_root.resolve()),
            "tables": {name: {"file": path.name, "sha256": sha256_file(path)} for name, path in tables.items()},
            "chexpert_labels": chexpert_labels,
            "studies_by_split": {split: sum(record["split"] == split for record in records) for split in SPLITS},
            "requested_by_split": inputs.counts,
            "official_studies_by_split": {split: draw.available[split] for split in SPLITS},
            "inspected_by_split": {split: draw.inspected[split] for split in SPLITS},
            "sections_missing": {
                "findings_missing": sum(not record["findings"] for record in records),
                "impression_missing": sum(not record["impression"] for record in records),
            },
            "images": _image_facts(records, written, draw.image_files_missing),
            "chexpert_by_split": {
                split: sum(record["split"] == split and record["chexpert"] is not None for record in records) for split in SPLITS
            },
            "longest_report": _longest_report(records),
            "warnings": draw.warnings,
        }
    )
    return manifest


def prepare_mimic_cxr(
    source: Path,
    jpg_root: Path | None = None,
    output_root: Path = Path("."),
    counts: dict[str, int] | None = None,
    seed: int = DEFAULT_SEED,
    max_images: int = DEFAULT_MAX_IMAGES,
    workers: int | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    """Draw the subset, cache its images, write ``data/mimic_cxr/`` and register the translation set."""
    inputs = _check_inputs(source, jpg_root, output_root, counts, seed, max_images, workers)
    stats = PreparationStats()
    studies = _load_studies(inputs.split_path, inputs.metadata_path, stats)
    chexpert, chexpert_labels = _chexpert(inputs.chexpert_path)
    draw = _draw_subset(inputs, studies, stats)
    written = _cache_images(inputs, draw.selected)
    records = _study_records(draw.selected, chexpert, inputs.chexpert_path is not None, stats)
    with publish_datasets(inputs.output_root, DATASET_DIR, TRANSLATE_ENTRY, CORPUS_NAME, replace) as publication:
        staging = publication.staging
        outputs = _write_translation_set(staging, records)
        manifest = _subset_manifest(inputs, staging, outputs, stats, draw, records, written, chexpert_labels)
        publication.write_manifest(manifest)
    return manifest


# --- Part 2: the translations back into multimodal sets ---------------------------------------------------

# The rejection rules (rejection_reason, is_portuguese and their thresholds) are medfactory.generate.gates'.
_ALNUM = re.compile(r"[\W_]+")


def _alignment_key(text: str, length: int = 40) -> str:
    return _ALNUM.sub("", text.casefold())[:length]


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CorpusError(f"{path}: not found ({what}). Run `medfactory prepare mimic_cxr` first.")
    if path.suffix == ".jsonl":
        try:
            return read_jsonl(path)
        except ValueError as error:  # names the file and the line
            raise CorpusError(f"{error}. Run `medfactory prepare mimic_cxr` again.") from error
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CorpusError(f"{path}: invalid JSON ({error}). Run `medfactory prepare mimic_cxr` again.") from error


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """LLaMA-Factory's ``generated_predictions.jsonl``: one {"prompt", "predict", "label"} per line."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(
            f"{path}: translations not found. Run llamafactory-cli with recipes/mimic_cxr_translate_medgemma27b.yaml "
            "and pass its generated_predictions.jsonl as --translations."
        )
    try:
        numbered = list(iter_jsonl(path))
    except ValueError as error:  # names the file and the line
        raise CorpusError(f"{error}.") from error
    for number, row in numbered:
        if not isinstance(row.get("predict"), str):
            raise CorpusError(f"{path}, line {number}: no \"predict\" text (expected LLaMA-Factory's generated_predictions.jsonl).")
    return [row for _number, row in numbered]


def _user_message(n_images: int, text: str) -> dict[str, str]:
    return {"role": "user", "content": IMAGE_TOKEN * n_images + text}


def _item(study: dict[str, Any], report_pt: str, prompt: str) -> dict[str, Any]:
    return {
        "messages": [_user_message(len(study["images"]), prompt), {"role": "assistant", "content": report_pt}],
        "images": list(study["images"]),
    }


def fewshot_prompt(example_report: str) -> str:
    return f"{FEWSHOT_INSTRUCTION}Exemplo de relatório:\n{example_report}\n\n{DIAGNOSIS_PROMPT}"


@dataclass
class _Translations:
    """The prediction lines joined by position to the study ids of ``translate.jsonl`` and their studies."""

    file: Path
    prepared_dir: Path  # data/mimic_cxr/ under the output root
    ids_path: Path
    predictions: list[dict[str, Any]]
    ids: list[str]
    studies: dict[str, dict[str, Any]]


@dataclass
class _PtbrSets:
    """The accepted studies as the sharegpt sets, the test ids and references, and the longest report."""

    by_split: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {split: [] for split in SPLITS})
    test_ids: list[str] = field(default_factory=list)
    fewshot: list[dict[str, Any]] = field(default_factory=list)
    references: list[dict[str, str]] = field(default_factory=list)
    longest: dict[str, int] = field(default_factory=lambda: {"characters": 0, "words": 0})


def _read_translations(translations: Path, output_root: Path) -> _Translations:
    """Read the predictions and the prepared studies; refuse predictions that cannot be joined by position."""
    ids_path = output_root / DATASET_DIR / TRANSLATE_IDS_FILE
    studies_path = output_root / DATASET_DIR / STUDIES_FILE
    predictions = read_predictions(translations)
    ids = _read_json(ids_path, "the study ids of translate.jsonl")
    records = _read_json(studies_path, "the prepared studies")
    for number, record in enumerate(records, start=1):
        _check_image_paths(output_root, record.get("images"), f"{studies_path}, record {number}")
    studies = {record["study_id"]: record for record in records}
    if len(predictions) != len(ids):
        raise CorpusError(
            f"{translations} has {len(predictions)} predictions but {ids_path} lists {len(ids)} studies: "
            f"the predictions must come from the {TRANSLATE_DATASET} set written with those ids "
            "(rerun the translation, or `medfactory prepare mimic_cxr` with the options it was run with)."
        )
    missing_studies = [study_id for study_id in ids if study_id not in studies]
    if missing_studies:
        raise CorpusError(f"{ids_path}: {len(missing_studies)} ids not in {studies_path}. Run `medfactory prepare mimic_cxr` again.")
    return _Translations(translations, output_root / DATASET_DIR, ids_path, predictions, ids, studies)


def _check_image_paths(output_root: Path, images: Any, where: str) -> None:
    """A study's ``images`` must be files of the image cache (the sets hand these paths to LLaMA-Factory)."""
    fix = "Run `medfactory prepare mimic_cxr` again."
    if not isinstance(images, list):
        raise CorpusError(f"{where}: no list of images. {fix}")
    for image in images:
        parts = Path(str(image)).parts
        if len(parts) != len(IMAGE_CACHE_DIR.parts) + 2 or Path(*parts[:-2]) != IMAGE_CACHE_DIR:
            raise CorpusError(f"{where}: an image path outside {IMAGE_CACHE_DIR.as_posix()}/<study>/ (value not shown). {fix}")
        confined_path(output_root / IMAGE_CACHE_DIR, *parts[-2:], what="an image path", where=where, fix=fix, show_value=False)


def _judge_translations(joined: _Translations) -> tuple[dict[str, str], dict[str, list[str]], int]:
    """(accepted translation by study id, rejected study ids by reason, lines with a prompt)."""
    rejected: dict[str, list[str]] = {}
    accepted: dict[str, str] = {}
    with_prompt = 0
    for study_id, row in zip(joined.ids, joined.predictions, strict=True):
        study = joined.studies[study_id]
        prompt = row.get("prompt")
        if isinstance(prompt, str) and prompt.strip():
            with_prompt += 1
            if _alignment_key(study["report_en"]) not in _alignment_key(prompt, length=10**9):
                rejected.setdefault("misaligned", []).append(study_id)
                continue
        translation = row["predict"].strip()
        reason = rejection_reason(translation, study["report_en"])
        if reason:
            rejected.setdefault(reason, []).append(study_id)
        else:
            accepted[study_id] = translation
    return accepted, rejected, with_prompt


def _check_judgement(joined: _Translations, accepted: dict[str, str], rejected: dict[str, list[str]], with_prompt: int) -> None:
    """Refuse predictions of another translate.jsonl, and a run whose every translation was rejected."""
    misaligned = len(rejected.get("misaligned", []))
    if with_prompt and misaligned * 2 > with_prompt:
        raise CorpusError(
            f"{joined.file}: {misaligned} of {with_prompt} prompts do not hold the English report of the study at "
            f"that position in {joined.ids_path}: the predictions come from another translate.jsonl. Rerun the translation "
            "on the current data/mimic_cxr/translate.jsonl."
        )
    if not accepted:
        raise CorpusError(
            f"{joined.file}: every translation was rejected ({ {reason: len(v) for reason, v in rejected.items()} }). "
            "Check the translation run's output (generation settings, template)."
        )


def _check_cached_images(output_root: Path, joined: _Translations, accepted: dict[str, str]) -> None:
    missing_images = [path for study_id in accepted for path in joined.studies[study_id]["images"] if not (output_root / path).is_file()]
    if missing_images:
        raise CorpusError(
            f"{output_root / missing_images[0]}: cached image missing ({len(missing_images)} in all). "
            "Run `medfactory prepare mimic_cxr` again with the same options to rebuild the cache."
        )


def _fewshot_example(joined: _Translations, accepted: dict[str, str], seed: int) -> str:
    """The study id of the few-shot example: an accepted training study, with both sections where any has them."""
    studies = joined.studies
    train_ids = [study_id for study_id in joined.ids if study_id in accepted and studies[study_id]["split"] == "train"]
    if not train_ids:
        raise CorpusError(f"{joined.file}: no accepted training translation to serve as the few-shot example.")
    both_sections = [study_id for study_id in train_ids if studies[study_id]["findings"] and studies[study_id]["impression"]]
    return min(both_sections or train_ids, key=lambda study_id: (unit_hash(seed, f"fewshot:{study_id}"), study_id))


def _build_sets(joined: _Translations, accepted: dict[str, str], example_prompt: str, stats: PreparationStats) -> _PtbrSets:
    """The accepted studies, in translate.jsonl order, as items of their split (and, for test, the few-shot set)."""
    sets = _PtbrSets()
    for study_id in joined.ids:
        if study_id not in accepted:
            continue
        study, report_pt = joined.studies[study_id], accepted[study_id]
        stats.keep(report_pt, study["split"])
        sets.longest = {"characters": max(sets.longest["characters"], len(report_pt)), "words": max(sets.longest["words"], len(report_pt.split()))}
        sets.by_split[study["split"]].append(_item(study, report_pt, DIAGNOSIS_PROMPT))
        if study["split"] == "test":
            sets.test_ids.append(study_id)
            sets.fewshot.append(_item(study, report_pt, example_prompt))
            sets.references.append({"id": study_id, "report_pt": report_pt, "report_en": study["report_en"]})
    return sets


def _write_ptbr_sets(staging: Path, sets: _PtbrSets) -> list[Path]:
    """Write the split sets, the few-shot set, the test ids and the test references into ``staging``."""
    outputs = []
    for name, payload in (
        *((f"{split}.json", sets.by_split[split]) for split in SPLITS),
        (FEWSHOT_FILE, sets.fewshot),
        (TEST_IDS_FILE, sets.test_ids),
    ):
        with atomic_write(staging / name) as handle:
            json.dump(payload, handle, ensure_ascii=False, indent=1 if name != TEST_IDS_FILE else None)
            handle.write("\n")
        outputs.append(staging / name)
    write_jsonl(staging / TEST_REFERENCES_FILE, sets.references)
    outputs.append(staging / TEST_REFERENCES_FILE)
    return outputs


def _ptbr_options(seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "diagnosis_prompt": DIAGNOSIS_PROMPT,
        "rules": {
            "not_portuguese": f"Portuguese share of common function words < {MIN_PORTUGUESE_SHARE} (or none of them in {MIN_WORDS_FOR_LANGUAGE}+ words)",
            "truncated": f"characters < {MIN_LENGTH_RATIO} x the English report's, or no final sentence punctuation where the English report has it",
            "order": "misaligned, empty, not_portuguese, truncated (first that applies)",
        },
    }


def _ptbr_manifest(
    joined: _Translations,
    staging: Path,
    outputs: list[Path],
    stats: PreparationStats,
    sets: _PtbrSets,
    rejected: dict[str, list[str]],
    example_id: str,
    seed: int,
) -> dict[str, Any]:
    """The manifest of ``data/mimic_cxr_ptbr/``: the schema's keys, then the rejections by reason (ids, never text)."""
    manifest = build_manifest(PTBR_NAME, joined.prepared_dir, outputs, stats, options=_ptbr_options(seed))
    manifest["datasets"] = dataset_records(staging, PTBR_ENTRIES, PTBR_DIR)
    manifest.update(
        {
            "translations": {"file": str(joined.file.resolve()), "sha256": sha256_file(joined.file), "lines": len(joined.predictions)},
            "studies_by_split": {split: len(sets.by_split[split]) for split in SPLITS},
            "rejected": {reason: {"count": len(v), "study_ids": v} for reason, v in sorted(rejected.items())},
            "rejected_total": sum(len(v) for v in rejected.values()),
            "images_by_split": {split: sum(len(item["images"]) for item in sets.by_split[split]) for split in SPLITS},
            "fewshot_example_study_id": example_id,
            "longest_report_pt": sets.longest,
            "warnings": [f"{split}: no accepted translation; {split}.json is empty" for split in SPLITS if not sets.by_split[split]],
        }
    )
    return manifest


def prepare_mimic_cxr_ptbr(translations: Path, output_root: Path = Path("."), seed: int = DEFAULT_SEED, replace: bool = False) -> dict[str, Any]:
    """Join the translations to the studies; write ``data/mimic_cxr_ptbr/`` and register its sets."""
    translations, output_root = Path(translations), Path(output_root)
    joined = _read_translations(translations, output_root)
    _check_registry(output_root / REGISTRY_NAME)
    accepted, rejected, with_prompt = _judge_translations(joined)
    _check_judgement(joined, accepted, rejected, with_prompt)
    _check_cached_images(output_root, joined, accepted)
    example_id = _fewshot_example(joined, accepted, seed)
    stats = PreparationStats(files_read=len(joined.predictions))
    sets = _build_sets(joined, accepted, fewshot_prompt(accepted[example_id]), stats)
    for reason, study_ids in rejected.items():
        stats.dropped[reason] = len(study_ids)
    with publish_datasets(output_root, PTBR_DIR, PTBR_ENTRIES, PTBR_COMMAND, replace) as publication:
        staging = publication.staging
        outputs = _write_ptbr_sets(staging, sets)
        manifest = _ptbr_manifest(joined, staging, outputs, stats, sets, rejected, example_id, seed)
        publication.write_manifest(manifest)
    return manifest


# --- Command line ------------------------------------------------------------------------------------------


def prepare_command(
    source: Annotated[Path, typer.Option(help="MIMIC-CXR folder holding files/pNN/pSUBJECT/sSTUDY.txt (the reports)")],
    jpg_root: Annotated[
        Path | None,
        typer.Option(help="MIMIC-CXR-JPG folder (files/.../DICOM_ID.jpg and the mimic-cxr-2.0.0-*.csv[.gz] tables); default: --source"),
    ] = None,
    output_root: Annotated[Path, typer.Option(help="Repository root: gets data/mimic_cxr/, data/mimic_cxr_images/ and dataset_info.json")] = Path("."),
    train: Annotated[int, typer.Option(help="Studies from the official train split")] = DEFAULT_COUNTS["train"],
    validation: Annotated[int, typer.Option(help="Studies from the official validate split")] = DEFAULT_COUNTS["validation"],
    test: Annotated[int, typer.Option(help="Studies from the official test split")] = DEFAULT_COUNTS["test"],
    seed: Annotated[int, typer.Option(help="Seed of the subset draw")] = DEFAULT_SEED,
    max_images: Annotated[int, typer.Option(help="Images per study: frontal (PA, AP) first, then lateral (LATERAL, LL)")] = DEFAULT_MAX_IMAGES,
    workers: Annotated[int | None, typer.Option(help="Threads resizing images (default: up to 8)")] = None,
    replace: ReplaceOption = False,
) -> None:
    """Draw the MIMIC-CXR subset, cache its images at 896x896 and register 'mimic_cxr_translate'."""
    with exit_on_corpus_error():
        manifest = prepare_mimic_cxr(
            source,
            jpg_root=jpg_root,
            output_root=output_root,
            counts={"train": train, "validation": validation, "test": test},
            seed=seed,
            max_images=max_images,
            workers=workers,
            replace=replace,
        )
    for split, count in manifest["studies_by_split"].items():
        typer.echo(f"{split}: {count} studies ({manifest['inspected_by_split'][split]} inspected)")
    dropped = ", ".join(f"{reason} {count}" for reason, count in manifest["dropped"].items())
    typer.echo(f"dropped: {dropped or 'none'}; kept without a section: {manifest['sections_missing']}")
    images = manifest["images"]
    typer.echo(f"images: {images['total']} ({images['written']} written, {images['reused_from_cache']} cached), by view {images['by_view']}")
    longest = manifest["longest_report"]
    typer.echo(f"longest English report: {longest['characters']} characters, {longest['words']} words")
    for warning in manifest["warnings"]:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"wrote {Path(output_root) / DATASET_DIR}; registered '{TRANSLATE_DATASET}' in {Path(output_root) / REGISTRY_NAME}")


def prepare_ptbr_command(
    translations: Annotated[Path, typer.Option(help="generated_predictions.jsonl of the mimic_cxr_translate run")],
    output_root: Annotated[Path, typer.Option(help="Repository root holding data/mimic_cxr/ (from `prepare mimic_cxr`)")] = Path("."),
    seed: Annotated[int, typer.Option(help="Seed choosing the few-shot example among the training studies")] = DEFAULT_SEED,
    replace: ReplaceOption = False,
) -> None:
    """Join the Portuguese translations to the studies and register the mimic_cxr_ptbr_* sets."""
    with exit_on_corpus_error():
        manifest = prepare_mimic_cxr_ptbr(translations, output_root=output_root, seed=seed, replace=replace)
    for split, count in manifest["studies_by_split"].items():
        typer.echo(f"{split}: {count} studies, {manifest['images_by_split'][split]} images")
    for reason, entry in manifest["rejected"].items():
        typer.echo(f"rejected {reason}: {entry['count']} (study ids: {', '.join(entry['study_ids'])})")
    if not manifest["rejected"]:
        typer.echo("rejected: none")
    typer.echo(f"few-shot example: study {manifest['fewshot_example_study_id']}")
    for warning in manifest["warnings"]:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"wrote {Path(output_root) / PTBR_DIR}; registered {', '.join(PTBR_ENTRIES)} in {Path(output_root) / REGISTRY_NAME}")


PLUGIN = CorpusPlugin(
    name=CORPUS_NAME,
    summary="MIMIC-CXR reports + MIMIC-CXR-JPG images: subset, 896x896 image cache, translation set",
    command=prepare_command,
)
PTBR_PLUGIN = CorpusPlugin(
    name=PTBR_COMMAND,
    summary="MIMIC-CXR-PT-BR: join medgemma translations to the studies; multimodal sharegpt sets",
    command=prepare_ptbr_command,
)
