"""A stand-in for MIMIC-CXR + MIMIC-CXR-JPG, in PhysioNet's own layout, for tests and dry runs.

MIMIC-CXR is credentialed data; this module writes a small corpus with the same files and
columns, so ``medfactory prepare mimic_cxr`` can run end to end without it::

    ROOT/files/pNN/pSUBJECT/sSTUDY.txt            the free-text report (MIMIC-CXR)
    ROOT/files/pNN/pSUBJECT/sSTUDY/DICOM_ID.jpg   the images (MIMIC-CXR-JPG)
    ROOT/mimic-cxr-2.0.0-split.csv.gz             dicom_id, study_id, subject_id, split
    ROOT/mimic-cxr-2.0.0-metadata.csv.gz          dicom_id, subject_id, study_id, ViewPosition, ...
    ROOT/mimic-cxr-2.0.0-chexpert.csv.gz          subject_id, study_id, 14 labels (1, 0, -1, blank)

The report texts come from the Indiana University chest X-ray collection
(``indiana_reports.csv``: uid, MeSH, Problems, image, indication, comparison, findings, impression;
its de-identified spans ``XXXX`` become MIMIC's ``___``) when a folder holding it is given, or
from a small generator of invented English sentences otherwise. Indiana reports without findings or
impression give MIMIC reports without that section, as real MIMIC reports often are; the generator
leaves out FINDINGS in every 7th study and IMPRESSION in every 11th for the same reason.

Images are small (64 to 200 pixels a side, never square) grey gradients with noise, in 8-bit
grayscale like MIMIC-CXR-JPG, 1 to 3 per study with PA, AP, LATERAL or LL views listed in no
particular order; every subject's studies share one split, as in the official split. Everything is
a pure function of ``seed``.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

INDIANA_FILE = "indiana_reports.csv"
SPLIT_TABLE = "mimic-cxr-2.0.0-split.csv"
METADATA_TABLE = "mimic-cxr-2.0.0-metadata.csv"
CHEXPERT_TABLE = "mimic-cxr-2.0.0-chexpert.csv"
CHEXPERT_LABELS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)  # fmt: skip
# The official split file writes "validate"; callers may say either.
_OFFICIAL_SPLIT = {"train": "train", "validation": "validate", "validate": "validate", "test": "test"}
# View combinations of a study, in the order its images are listed (frontal not always first).
_VIEW_SETS = (
    ("PA", "LATERAL"),
    ("LATERAL", "PA"),
    ("AP",),
    ("PA",),
    ("AP", "LATERAL"),
    ("LATERAL", "AP", "PA"),
    ("LL", "AP"),
    ("PA", "LL", "LATERAL"),
)

_FINDING_SENTENCES = (
    "The cardiomediastinal silhouette is within normal limits.",
    "Heart size is normal.",
    "Mild cardiomegaly is noted.",
    "There is no focal consolidation, pleural effusion or pneumothorax.",
    "Lungs are clear bilaterally.",
    "A small left pleural effusion is present with adjacent atelectasis.",
    "Patchy opacity at the right lung base may reflect atelectasis or early pneumonia.",
    "There is mild pulmonary vascular congestion without frank edema.",
    "A right-sided PICC line terminates in the lower superior vena cava.",
    "Endotracheal tube tip is 4 cm above the carina.",
    "Degenerative changes are seen in the thoracic spine.",
    "The hilar contours are unremarkable.",
    "Median sternotomy wires and mediastinal clips are intact.",
    "No acute osseous abnormality is identified.",
    "Calcification of the aortic knob is noted.",
)
_IMPRESSION_SENTENCES = (
    "No acute cardiopulmonary process.",
    "Small left pleural effusion, new since ___.",
    "Mild pulmonary vascular congestion.",
    "Right basilar opacity, possibly atelectasis; pneumonia is not excluded.",
    "Stable mild cardiomegaly.",
    "Lines and tubes in appropriate position.",
    "No evidence of pneumothorax.",
)
_INDICATIONS = (
    "___F with shortness of breath  // eval for pneumonia",
    "___M with chest pain  // r/o acute process",
    "___M s/p line placement  // line position?",
    "History: ___F with cough and fever",
)


def _mimic_text(value: str) -> str:
    """Indiana's de-identified ``XXXX`` spans as MIMIC's ``___``."""
    return re.sub(r"X{2,}", "___", value.strip())


def _wrap(text: str) -> str:
    """MIMIC reports wrap at about 78 columns, each line starting with a space."""
    return "\n".join(" " + line for line in textwrap.wrap(text, width=76, break_on_hyphens=False, break_long_words=False))


def mimic_report(
    findings: str | None,
    impression: str | None,
    indication: str = "",
    technique: str = "Chest PA and lateral",
    comparison: str = "None.",
    wet_read: str | None = None,
) -> str:
    """A report laid out like MIMIC-CXR's ``sSTUDY.txt`` (sections left out when None or blank)."""
    parts = []
    if wet_read:
        parts.append(f" WET READ: ___ ___ 10:15 AM\n  {wet_read}\n")
    parts.append("                                 FINAL REPORT")
    parts.append(" EXAMINATION:  CHEST (PA AND LAT)\n ")
    if indication:
        parts.append(f" INDICATION:  {indication}\n ")
    parts.append(f" TECHNIQUE:  {technique}\n ")
    parts.append(f" COMPARISON:  {comparison or 'None.'}\n ")
    if findings and findings.strip():
        parts.append(f" FINDINGS: \n \n{_wrap(findings)}\n ")
    if impression and impression.strip():
        parts.append(f" IMPRESSION: \n \n{_wrap(impression)}")
    return "\n".join(parts) + "\n"


def _indiana_reports(indiana_dir: Path, count: int, rng: random.Random) -> list[dict[str, str]]:
    path = Path(indiana_dir) / INDIANA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (the Indiana University chest X-ray reports CSV)")
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if count > len(rows):
        raise ValueError(f"{path}: {count} studies asked for, the file holds {len(rows)} reports")
    chosen = rng.sample(rows, count)
    return [
        {
            "findings": _mimic_text(row.get("findings", "")),
            "impression": _mimic_text(row.get("impression", "")),
            "indication": _mimic_text(row.get("indication", "")),
            "technique": _mimic_text(row.get("image", "")) or "Chest PA and lateral",
            "comparison": _mimic_text(row.get("comparison", "")) or "None.",
            "origin": f"indiana uid {row.get('uid', '')}",
        }
        for row in chosen
    ]


def _generated_reports(count: int, rng: random.Random) -> list[dict[str, str]]:
    reports = []
    for index in range(count):
        findings = " ".join(rng.sample(_FINDING_SENTENCES, rng.randint(2, 6)))
        impression = " ".join(rng.sample(_IMPRESSION_SENTENCES, rng.randint(1, 2)))
        reports.append(
            {
                "findings": "" if index % 7 == 3 else findings,
                "impression": "" if index % 11 == 5 else impression,
                "indication": rng.choice(_INDICATIONS),
                "technique": "Chest PA and lateral",
                "comparison": rng.choice(("None.", "Chest radiograph from ___.")),
                "origin": "generated",
            }
        )
    return reports


def synthetic_xray(width: int, height: int, rng: random.Random) -> Image.Image:
    """A grey gradient with noise in 8-bit grayscale; no pixel is black (padding is)."""
    generator = np.random.default_rng(rng.getrandbits(32))
    columns = np.linspace(70, 200, width)[None, :]
    rows = np.linspace(0, 30, height)[:, None]
    pixels = columns + rows + generator.normal(0, 8, (height, width))
    return Image.fromarray(np.clip(pixels, 40, 235).astype(np.uint8))  # 2-D uint8: mode L


def _image_size(rng: random.Random, wide: bool) -> tuple[int, int]:
    long_side = rng.randint(120, 200)
    short_side = rng.randint(64, long_side - 30)
    return (long_side, short_side) if wide else (short_side, long_side)


def _write_table(path: Path, header: list[str], rows: list[list[object]], compress: bool) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    if compress:
        path = path.with_name(path.name + ".gz")
        # mtime=0: the same bytes (and table hashes) on every run.
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
            handle.write(buffer.getvalue().encode("utf-8"))
    else:
        path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def _dicom_id(rng: random.Random) -> str:
    return "-".join(f"{rng.getrandbits(32):08x}" for _ in range(5))


@dataclass
class _Layout:
    """The layout being written: where, the table rows so far, and the ids and counters already used."""

    out_root: Path
    jpg_root: Path
    rng: random.Random
    reports: list[dict[str, str]]
    split_rows: list[list[object]] = field(default_factory=list)
    metadata_rows: list[list[object]] = field(default_factory=list)
    chexpert_rows: list[list[object]] = field(default_factory=list)
    used_subjects: set[int] = field(default_factory=set)
    used_studies: set[int] = field(default_factory=set)
    report_index: int = 0
    image_index: int = 0


def _new_study_id(layout: _Layout) -> int:
    study = layout.rng.randint(50_000_000, 59_999_999)
    while study in layout.used_studies:
        study = layout.rng.randint(50_000_000, 59_999_999)
    layout.used_studies.add(study)
    return study


def _write_report(layout: _Layout, subject: int, study: int) -> None:
    report = layout.reports[layout.report_index]
    subject_dir = layout.out_root / "files" / f"p{str(subject)[:2]}" / f"p{subject}"
    subject_dir.mkdir(parents=True, exist_ok=True)
    (subject_dir / f"s{study}.txt").write_text(
        mimic_report(
            report["findings"],
            report["impression"],
            indication=report["indication"],
            technique=report["technique"],
            comparison=report["comparison"],
            wet_read="No pneumothorax." if layout.report_index % 5 == 2 else None,
        ),
        encoding="utf-8",
    )


def _write_images(layout: _Layout, subject: int, study: int, official: str) -> None:
    rng = layout.rng
    image_dir = layout.jpg_root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
    image_dir.mkdir(parents=True, exist_ok=True)
    for view in _VIEW_SETS[layout.report_index % len(_VIEW_SETS)]:
        dicom = _dicom_id(rng)
        # Alternate wide and tall images; frontal radiographs are often wider than tall.
        width, height = _image_size(rng, wide=layout.image_index % 2 == 0)
        synthetic_xray(width, height, rng).save(image_dir / f"{dicom}.jpg", quality=85)
        layout.split_rows.append([dicom, study, subject, official])
        layout.metadata_rows.append(
            [dicom, subject, study, f"CHEST ({view})", view, height, width, 21800101 + layout.image_index, "101500.000"]
        )
        layout.image_index += 1


def _write_study(layout: _Layout, subject: int, official: str) -> None:
    """One study of ``subject``: its report, its images and (most of the time) its CheXpert labels."""
    study = _new_study_id(layout)
    _write_report(layout, subject, study)
    _write_images(layout, subject, study, official)
    if layout.report_index % 6 != 4:  # some studies have no CheXpert labels
        labels = [layout.rng.choice(("1.0", "0.0", "-1.0", "", "")) for _ in CHEXPERT_LABELS]
        layout.chexpert_rows.append([subject, study, *labels])
    layout.report_index += 1


def _write_split(layout: _Layout, official: str, count: int) -> None:
    """``count`` studies of new subjects (1 or 2 studies each) in the official split ``official``."""
    remaining = count
    while remaining > 0:
        subject = layout.rng.randint(10_000_000, 19_999_999)
        if subject in layout.used_subjects:
            continue
        layout.used_subjects.add(subject)
        for _ in range(min(remaining, layout.rng.choice((1, 1, 2)))):
            _write_study(layout, subject, official)
            remaining -= 1


def _write_tables(layout: _Layout, compress: bool) -> None:
    jpg_root = layout.jpg_root
    jpg_root.mkdir(parents=True, exist_ok=True)
    # The official tables are not in study order; neither are these.
    layout.rng.shuffle(layout.metadata_rows)
    _write_table(jpg_root / SPLIT_TABLE, ["dicom_id", "study_id", "subject_id", "split"], layout.split_rows, compress)
    _write_table(
        jpg_root / METADATA_TABLE,
        ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime"],
        layout.metadata_rows,
        compress,
    )
    _write_table(jpg_root / CHEXPERT_TABLE, ["subject_id", "study_id", *CHEXPERT_LABELS], layout.chexpert_rows, compress)


def build_mimic_layout_from_indiana(
    indiana_dir: Path | None,
    out_root: Path,
    studies_per_split: dict[str, int],
    seed: int,
    *,
    jpg_root: Path | None = None,
    compress_tables: bool = True,
) -> Path:
    """Write a MIMIC-CXR (+ -JPG) layout under ``out_root`` and return ``out_root``.

    ``studies_per_split`` maps train / validation (or validate) / test to how many studies the
    layout holds in that official split (a subset is drawn from them later). Reports come from
    ``indiana_dir/indiana_reports.csv`` (a random sample without replacement) or, when
    ``indiana_dir`` is None, from the generator. Images and tables go to ``jpg_root`` when given
    (MIMIC-CXR-JPG is a separate download), else beside the reports. Tables are gzipped as on
    PhysioNet unless ``compress_tables`` is False.
    """
    out_root = Path(out_root)
    jpg_root = Path(jpg_root) if jpg_root is not None else out_root
    unknown = set(studies_per_split) - set(_OFFICIAL_SPLIT)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}: use train, validation and test")
    rng = random.Random(seed)
    total = sum(studies_per_split.values())
    reports = _indiana_reports(indiana_dir, total, rng) if indiana_dir is not None else _generated_reports(total, rng)
    layout = _Layout(out_root, jpg_root, rng, reports)
    for split_name, count in studies_per_split.items():
        _write_split(layout, _OFFICIAL_SPLIT[split_name], count)
    _write_tables(layout, compress_tables)
    return out_root


def set_table_cell(jpg_root: Path, table: str, row: int, column: str, value: str) -> Path:
    """Rewrite one cell of a layout's table (``row`` counts data rows from 0), gzipped or plain as found."""
    path = Path(jpg_root) / table
    compress = not path.is_file()
    if compress:
        path = path.with_name(path.name + ".gz")
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    header, *rows = list(csv.reader(io.StringIO(text)))
    rows[row][header.index(column)] = value
    return _write_table(Path(jpg_root) / table, header, rows, compress)
