"""MIMIC-CXR-PT-BR: the MIMIC-CXR subset and translation set, then the translations into multimodal sets.

MIMIC-CXR is credentialed, so the corpus here is written in its PhysioNet layout by
``testing_utils.synthetic_mimic``: from invented English reports always, and from the Indiana University
chest X-ray reports in ``../shared/data/iu_xray_reports`` where that folder exists (those tests skip,
with the reason, elsewhere). Every Portuguese translation below is invented for the tests.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import typer
from PIL import Image, ImageOps
from typer.testing import CliRunner

from medfactory.base.errors import CorpusError
from medfactory.base.jsonl import read_jsonl, write_jsonl
from medfactory.plugins import mimic_cxr
from medfactory.plugins.mimic_cxr import (
    DIAGNOSIS_PROMPT,
    PLUGIN,
    PTBR_ENTRIES,
    PTBR_PLUGIN,
    TRANSLATE_ENTRY,
    TRANSLATE_PROMPT,
    choose_images,
    english_report,
    extract_sections,
    is_portuguese,
    prepare_mimic_cxr,
    prepare_mimic_cxr_ptbr,
    rejection_reason,
    square_resize,
)
from testing_utils.synthetic_mimic import build_mimic_layout_from_indiana, set_table_cell

INDIANA_DIR = Path(__file__).resolve().parents[1].parent / "shared/data/iu_xray_reports"
LAYOUT_COUNTS = {"train": 10, "validation": 6, "test": 8}
SUBSET = {"train": 6, "validation": 3, "test": 4}
OFFICIAL = {"train": "train", "validate": "validation", "test": "test"}


def studies_of(output_root: Path) -> list[dict]:
    return read_jsonl(output_root / "data/mimic_cxr/studies.jsonl")


def official_splits(root: Path) -> dict[str, str]:
    table = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz", dtype=str)
    return {study: OFFICIAL[split] for study, split in zip(table.study_id, table.split, strict=True)}


def views_by_study(root: Path) -> dict[str, list[tuple[str, str]]]:
    table = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", dtype=str)
    views: dict[str, list[tuple[str, str]]] = {}
    for dicom, study, view in zip(table.dicom_id, table.study_id, table.ViewPosition, strict=True):
        views.setdefault(study, []).append((dicom, view))
    return views


def source_jpg(root: Path, study: dict, image: str) -> Path:
    subject, study_id, dicom = study["subject_id"], study["study_id"], Path(image).stem
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study_id}" / f"{dicom}.jpg"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mimic_layout_from_indiana(None, tmp_path_factory.mktemp("mimic") / "source", LAYOUT_COUNTS, seed=3)


@pytest.fixture(scope="module")
def prepared(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    output_root = tmp_path_factory.mktemp("repo")
    (output_root / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "data/other.jsonl"}}))
    manifest = prepare_mimic_cxr(layout, output_root=output_root, counts=SUBSET, seed=42, workers=4)
    return output_root, manifest


# --- Report sections -------------------------------------------------------------------------------------

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough  // eval for pneumonia

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities most likely represent nipple shadows.

 The cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
 NOTIFIED AT 10:15 AM to Dr. ___.
"""


def test_sections_are_extracted_and_unwrapped() -> None:
    sections = extract_sections(REPORT)
    assert sections["findings"] == (
        "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular opacities most "
        "likely represent nipple shadows.\nThe cardiomediastinal silhouette is normal."
    )
    assert sections["impression"] == "No acute cardiopulmonary process. NOTIFIED AT 10:15 AM to Dr. ___."
    assert english_report(**sections).startswith("FINDINGS: There is no focal")
    assert "\n\nIMPRESSION: No acute cardiopulmonary process." in english_report(**sections)


def test_headers_match_any_case_and_spacing_and_end_at_the_next_header() -> None:
    text = (
        " WET READ: ___ 9:40 AM\n  Left effusion.\n FINAL REPORT\n findings :  Small left effusion.\n"
        " Impression:   Left pleural effusion.\n RECOMMENDATION(S):  Follow-up radiograph.\n"
    )
    assert extract_sections(text) == {"findings": "Small left effusion.", "impression": "Left pleural effusion."}
    # An unknown all-capitals header ends the section; a mixed-case "Label:" inside a section does not.
    text = " FINDINGS: Lines: right PICC in the SVC.\n LINES AND TUBES: as above.\n IMPRESSION: PICC in place."
    assert extract_sections(text) == {"findings": "Lines: right PICC in the SVC.", "impression": "PICC in place."}


def test_missing_findings_or_impression() -> None:
    no_findings = " FINAL REPORT\n INDICATION: cough\n\n IMPRESSION: \n\n No acute process.\n"
    assert extract_sections(no_findings) == {"findings": None, "impression": "No acute process."}
    assert english_report(None, "No acute process.") == "IMPRESSION: No acute process."
    no_impression = " FINAL REPORT\n FINDINGS: Heart size is normal.\n\n IMPRESSION:   \n\n"
    assert extract_sections(no_impression) == {"findings": "Heart size is normal.", "impression": None}
    assert english_report("Heart size is normal.", None) == "FINDINGS: Heart size is normal."
    assert extract_sections(" FINAL REPORT\n EXAMINATION: chest\n TECHNIQUE: PA\n") == {"findings": None, "impression": None}


# --- Subset, images, outputs ----------------------------------------------------------------------------------


def test_subset_has_the_requested_counts_from_the_official_splits(layout: Path, prepared: tuple[Path, dict]) -> None:
    output_root, manifest = prepared
    studies = studies_of(output_root)
    assert manifest["studies_by_split"] == SUBSET
    assert {split: sum(s["split"] == split for s in studies) for split in SUBSET} == SUBSET
    official = official_splits(layout)
    assert all(official[s["study_id"]] == s["split"] for s in studies)
    assert len({s["study_id"] for s in studies}) == len(studies)
    assert all(s["report_en"] == english_report(s["findings"], s["impression"]) for s in studies)


def test_subset_is_seeded_and_deterministic(layout: Path, prepared: tuple[Path, dict], tmp_path: Path) -> None:
    output_root, _ = prepared
    first = [s["study_id"] for s in studies_of(output_root)]
    prepare_mimic_cxr(layout, output_root=tmp_path, counts=SUBSET, seed=42)
    assert [s["study_id"] for s in studies_of(tmp_path)] == first
    prepare_mimic_cxr(layout, output_root=tmp_path, counts=SUBSET, seed=7)
    assert [s["study_id"] for s in studies_of(tmp_path)] != first
    # A larger draw keeps the smaller one's studies.
    prepare_mimic_cxr(layout, output_root=tmp_path, counts={"train": 8, "validation": 3, "test": 4}, seed=42)
    assert set(first) <= {s["study_id"] for s in studies_of(tmp_path)}


def test_at_most_two_images_frontal_first_then_lateral(layout: Path, prepared: tuple[Path, dict]) -> None:
    output_root, manifest = prepared
    available = views_by_study(layout)
    for study in studies_of(output_root):
        views = [view for _dicom, view in available[study["study_id"]]]
        assert 1 <= len(study["images"]) <= 2
        assert len(study["views"]) == len(study["images"])
        frontal = "PA" if "PA" in views else "AP" if "AP" in views else None
        lateral = "LATERAL" if "LATERAL" in views else "LL" if "LL" in views else None
        assert study["views"] == [view for view in (frontal, lateral) if view]
        assert all(Path(image).stem in {dicom for dicom, _ in available[study["study_id"]]} for image in study["images"])
    assert sum(manifest["images"]["by_view"].values()) == manifest["images"]["total"]


def test_choose_images_order_and_fallbacks() -> None:
    images = [("d1", "LATERAL"), ("d2", "AP"), ("d3", "PA"), ("d4", "LL")]
    assert choose_images(images, 2) == [("d3", "PA"), ("d1", "LATERAL")]
    assert choose_images(images, 1) == [("d3", "PA")]
    assert choose_images(images, 3) == [("d3", "PA"), ("d1", "LATERAL"), ("d2", "AP")]
    assert choose_images([("d1", "LL"), ("d2", "AP")], 2) == [("d2", "AP"), ("d1", "LL")]
    assert choose_images([("d1", "PA"), ("d0", "PA")], 2) == [("d0", "PA"), ("d1", "PA")]
    # Other views only when there is no frontal or lateral image.
    assert choose_images([("d1", "LAO"), ("d2", "AP")], 2) == [("d2", "AP")]
    assert choose_images([("d2", "UNKNOWN"), ("d1", "LAO")], 2) == [("d1", "LAO"), ("d2", "UNKNOWN")]


def test_images_are_cached_at_896_rgb_and_not_rewritten(layout: Path, prepared: tuple[Path, dict]) -> None:
    output_root, manifest = prepared
    paths = [output_root / image for study in studies_of(output_root) for image in study["images"]]
    assert manifest["images"]["written"] == len(paths) == manifest["images"]["total"]
    for path in paths:
        assert path.parent.parent == output_root / "data/mimic_cxr_images"
        with Image.open(path) as image:
            assert image.size == (896, 896) and image.mode == "RGB"
    before = {path: path.stat().st_mtime_ns for path in paths}
    rerun = prepare_mimic_cxr(layout, output_root=output_root, counts=SUBSET, seed=42)
    assert rerun["images"]["written"] == 0 and rerun["images"]["reused_from_cache"] == len(paths)
    assert {path: path.stat().st_mtime_ns for path in paths} == before


def test_padding_is_black_and_keeps_the_whole_image(layout: Path, prepared: tuple[Path, dict]) -> None:
    output_root, _ = prepared
    checked = set()
    for study in studies_of(output_root):
        for image in study["images"]:
            with Image.open(source_jpg(layout, study, image)) as source:
                width, height = source.size
            cached = Image.open(output_root / image).convert("L")
            band = round(896 * abs(width - height) / (2 * max(width, height)))
            if width > height:  # wide: black bands above and below
                edges = [cached.getpixel((x, y)) for x in range(0, 896, 7) for y in (0, 1, 895)]
                middle = [cached.getpixel((x, 448)) for x in range(0, 896, 7)]
                inside = cached.getpixel((448, band + 8))
                checked.add("wide")
            else:  # tall: black bands left and right
                edges = [cached.getpixel((x, y)) for y in range(0, 896, 7) for x in (0, 1, 895)]
                middle = [cached.getpixel((448, y)) for y in range(0, 896, 7)]
                inside = cached.getpixel((band + 8, 448))
                checked.add("tall")
            assert max(edges) == 0
            assert min(middle) > 0 and inside > 0
    assert checked == {"wide", "tall"}


def test_square_resize_pads_a_wide_image_with_black() -> None:
    padded = square_resize(Image.new("L", (300, 100), 200))
    assert padded.size == (896, 896) and padded.mode == "RGB"
    assert padded.getpixel((448, 0)) == (0, 0, 0) and padded.getpixel((448, 290)) == (0, 0, 0)
    assert padded.getpixel((448, 448)) == (200, 200, 200) and padded.getpixel((0, 448)) == (200, 200, 200)


def test_translate_rows_align_with_ids(prepared: tuple[Path, dict]) -> None:
    output_root, _ = prepared
    folder = output_root / "data/mimic_cxr"
    rows = read_jsonl(folder / "translate.jsonl")
    ids = json.loads((folder / "translate_ids.json").read_text())
    studies = {s["study_id"]: s for s in studies_of(output_root)}
    assert len(rows) == len(ids) == len(studies) == sum(SUBSET.values())
    for row, study_id in zip(rows, ids, strict=True):
        assert row == {"instruction": TRANSLATE_PROMPT, "input": studies[study_id]["report_en"], "output": ""}
    # train, then validation, then test
    order = [studies[study_id]["split"] for study_id in ids]
    assert order == sorted(order, key=["train", "validation", "test"].index)


def test_registry_entry_is_added_and_others_kept(prepared: tuple[Path, dict]) -> None:
    output_root, _ = prepared
    registry = json.loads((output_root / "dataset_info.json").read_text())
    assert registry["mimic_cxr_translate"] == {
        "file_name": "data/mimic_cxr/translate.jsonl",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        "medfactory_plugin": "mimic_cxr",
    }
    assert registry["mimic_cxr_translate"] == {**TRANSLATE_ENTRY["mimic_cxr_translate"], "medfactory_plugin": "mimic_cxr"}
    assert registry["other"] == {"file_name": "data/other.jsonl"}


def test_manifest_counts(layout: Path, prepared: tuple[Path, dict]) -> None:
    output_root, manifest = prepared
    assert json.loads((output_root / "data/mimic_cxr/manifest.json").read_text())["studies_by_split"] == SUBSET
    studies = studies_of(output_root)
    assert manifest["sections_missing"] == {
        "findings_missing": sum(not s["findings"] for s in studies),
        "impression_missing": sum(not s["impression"] for s in studies),
    }
    assert manifest["sections_missing"]["findings_missing"] >= 1  # the generator leaves some out
    longest = max(studies, key=lambda s: len(s["report_en"]))
    assert manifest["longest_report"]["characters"] == len(longest["report_en"])
    assert manifest["longest_report"]["words"] == max(len(s["report_en"].split()) for s in studies)
    assert set(manifest["tables"]) == {"split", "metadata", "chexpert"}
    assert all(len(entry["sha256"]) == 64 for entry in manifest["tables"].values())
    assert manifest["options"]["seed"] == 42 and manifest["options"]["max_images"] == 2
    assert manifest["official_studies_by_split"] == LAYOUT_COUNTS
    assert sum(s["chexpert"] is not None for s in studies) == sum(manifest["chexpert_by_split"].values())
    labelled = next(s for s in studies if s["chexpert"] is not None)
    assert len(labelled["chexpert"]) == 14 and set(labelled["chexpert"].values()) <= {1, 0, -1, None}
    assert "There is" not in json.dumps(manifest)  # counts and ids, never report text
    # The schema's datasets: each registered set with its record count (what `medfactory card` reports).
    lines = (output_root / "data/mimic_cxr/translate.jsonl").read_text(encoding="utf-8").splitlines()
    assert manifest["datasets"] == {"mimic_cxr_translate": {"file": "data/mimic_cxr/translate.jsonl", "records": len(lines)}}
    assert json.loads((output_root / "data/mimic_cxr/manifest.json").read_text())["datasets"] == manifest["datasets"]


def test_drops_and_shortfall_are_counted(tmp_path: Path) -> None:
    root = build_mimic_layout_from_indiana(None, tmp_path / "source", {"train": 6, "validation": 2, "test": 2}, seed=11)
    reports = sorted((root / "files").rglob("s*.txt"))
    reports[0].unlink()  # report_missing
    reports[1].write_text(" FINAL REPORT\n EXAMINATION: chest\n INDICATION: cough\n")  # no_findings_or_impression
    for jpg in reports[2].with_suffix("").glob("*.jpg"):  # no_images
        jpg.unlink()
    dropped_ids = {path.stem[1:] for path in reports[:3]}
    manifest = prepare_mimic_cxr(root, output_root=tmp_path / "out", counts={"train": 50, "validation": 50, "test": 50})
    assert manifest["dropped"] == {"no_findings_or_impression": 1, "no_images": 1, "report_missing": 1}
    assert sum(manifest["studies_by_split"].values()) == 10 - 3
    assert not dropped_ids & {s["study_id"] for s in studies_of(tmp_path / "out")}
    assert len(manifest["warnings"]) == 3 and all("took them all" in warning for warning in manifest["warnings"])


def test_separate_jpg_root_and_plain_tables(tmp_path: Path) -> None:
    build_mimic_layout_from_indiana(
        None, tmp_path / "reports", {"train": 3, "validation": 1, "test": 1}, seed=5, jpg_root=tmp_path / "jpg", compress_tables=False
    )
    assert (tmp_path / "jpg/mimic-cxr-2.0.0-split.csv").is_file()
    manifest = prepare_mimic_cxr(
        tmp_path / "reports", jpg_root=tmp_path / "jpg", output_root=tmp_path / "out", counts={"train": 2, "validation": 1, "test": 1}
    )
    assert manifest["studies_by_split"] == {"train": 2, "validation": 1, "test": 1}
    # Without the chexpert table the label field is null.
    (tmp_path / "jpg/mimic-cxr-2.0.0-chexpert.csv").unlink()
    manifest = prepare_mimic_cxr(
        tmp_path / "reports", jpg_root=tmp_path / "jpg", output_root=tmp_path / "out", counts={"train": 2, "validation": 1, "test": 1}
    )
    assert "chexpert" not in manifest["tables"]
    assert all(s["chexpert"] is None for s in studies_of(tmp_path / "out"))


def test_input_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not found"):
        prepare_mimic_cxr(tmp_path / "nowhere", output_root=tmp_path)
    root = build_mimic_layout_from_indiana(None, tmp_path / "source", {"train": 2, "validation": 1, "test": 1}, seed=2)
    (root / "mimic-cxr-2.0.0-metadata.csv.gz").rename(tmp_path / "metadata.csv.gz")
    with pytest.raises(CorpusError, match="mimic-cxr-2.0.0-metadata.csv"):
        prepare_mimic_cxr(root, output_root=tmp_path / "out")
    (tmp_path / "metadata.csv.gz").rename(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(CorpusError, match="mimic-cxr-2.0.0-split.csv"):
        prepare_mimic_cxr(root, output_root=tmp_path / "out")
    root = build_mimic_layout_from_indiana(None, tmp_path / "bare", {"train": 2, "validation": 1, "test": 1}, seed=2)
    for report in root.rglob("s*.txt"):
        report.unlink()
    with pytest.raises(CorpusError, match="no eligible study.*report_missing"):
        prepare_mimic_cxr(root, output_root=tmp_path / "out")
    assert not (tmp_path / "out/data/mimic_cxr").exists()


def command_app(command) -> typer.Typer:
    app = typer.Typer()
    app.command()(command)
    return app


def test_command_prints_a_summary_and_turns_errors_into_exit_1(layout: Path, tmp_path: Path) -> None:
    args = ["--source", str(layout), "--output-root", str(tmp_path), "--train", "2", "--validation", "1", "--test", "1"]
    result = CliRunner().invoke(command_app(PLUGIN.command), args)
    assert result.exit_code == 0, result.output
    assert "train: 2 studies" in result.stdout and "longest English report" in result.stdout
    result = CliRunner().invoke(command_app(PLUGIN.command), ["--source", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "not found" in result.stderr and "Traceback" not in result.output


def test_plugins_are_named_for_the_cli() -> None:
    assert PLUGIN.name == "mimic_cxr" and PLUGIN.command is mimic_cxr.prepare_command
    assert PTBR_PLUGIN.name == "mimic-cxr-ptbr" and PTBR_PLUGIN.command is mimic_cxr.prepare_ptbr_command


# --- The Indiana University reports in the MIMIC layout ---------------------------------------------------------


def test_indiana_reports_in_the_mimic_layout(tmp_path: Path) -> None:
    if not (INDIANA_DIR / "indiana_reports.csv").is_file():
        pytest.skip(f"{INDIANA_DIR} is absent (only CI and the developers' machines have ../shared)")
    root = build_mimic_layout_from_indiana(INDIANA_DIR, tmp_path / "source", {"train": 30, "validation": 8, "test": 8}, seed=1)
    manifest = prepare_mimic_cxr(root, output_root=tmp_path / "out", counts=SUBSET, seed=42)
    studies = studies_of(tmp_path / "out")
    assert manifest["studies_by_split"] == SUBSET
    assert all(s["report_en"] and "XXXX" not in s["report_en"] for s in studies)
    assert all(s["report_en"].startswith(("FINDINGS: ", "IMPRESSION: ")) for s in studies)
    assert manifest["longest_report"]["characters"] == max(len(s["report_en"]) for s in studies)
    # Indiana reports without findings are kept with their impression (about one in eight).
    reports = pd.read_csv(INDIANA_DIR / "indiana_reports.csv", dtype=str, keep_default_na=False)
    assert (reports.findings.str.strip() == "").sum() > 0


# --- Part 2: translations into the multimodal sets ------------------------------------------------------------

PT_SENTENCES = (
    "O contorno cardiomediastinal está dentro dos limites da normalidade.",
    "Não há consolidação focal, derrame pleural ou pneumotórax.",
    "Há pequeno derrame pleural à esquerda com atelectasia adjacente.",
    "Os pulmões estão limpos e sem opacidades.",
)


def invented_translation(report_en: str) -> str:
    """A Portuguese text about as long as the English report (its content is invented)."""
    findings, impression, index = [], [], 0
    while len(" ".join(findings)) < 0.9 * len(report_en):
        findings.append(PT_SENTENCES[index % len(PT_SENTENCES)])
        index += 1
    impression = "Sem alterações cardiopulmonares agudas."
    return f"ACHADOS: {' '.join(findings)}\n\nIMPRESSÃO: {impression}"


def write_predictions(path: Path, rows: list[tuple[str, str]]) -> Path:
    """``(report_en, predict)`` pairs as LLaMA-Factory's generated_predictions.jsonl."""
    write_jsonl(path, ({"prompt": f"user\n{TRANSLATE_PROMPT}\n{report_en}\nmodel\n", "predict": predict, "label": ""} for report_en, predict in rows))
    return path


@pytest.fixture(scope="module")
def translated(prepared: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict, dict]:
    source_root, _ = prepared
    output_root = tmp_path_factory.mktemp("ptbr")
    shutil.copytree(source_root, output_root, dirs_exist_ok=True)
    ids = json.loads((output_root / "data/mimic_cxr/translate_ids.json").read_text())
    studies = {s["study_id"]: s for s in studies_of(output_root)}
    translations = {study_id: invented_translation(studies[study_id]["report_en"]) for study_id in ids}
    by_split = {split: [i for i in ids if studies[i]["split"] == split] for split in SUBSET}
    planted = {
        by_split["train"][1]: ("empty", "   "),
        by_split["validation"][0]: ("not_portuguese", studies[by_split["validation"][0]]["report_en"]),
        by_split["test"][0]: ("truncated", translations[by_split["test"][0]][:-15]),  # cut mid-sentence
        by_split["test"][2]: ("truncated", "ACHADOS: Normal."),  # far shorter than the source
    }
    for study_id, (_reason, text) in planted.items():
        translations[study_id] = text
    predictions = write_predictions(output_root / "generated_predictions.jsonl", [(studies[i]["report_en"], translations[i]) for i in ids])
    manifest = prepare_mimic_cxr_ptbr(predictions, output_root=output_root, seed=42)
    return output_root, manifest, translations, planted


def test_rejected_translations_are_listed_by_reason(translated) -> None:
    output_root, manifest, _translations, planted = translated
    expected: dict[str, list[str]] = {}
    for study_id, (reason, _text) in planted.items():
        expected.setdefault(reason, []).append(study_id)
    ids = json.loads((output_root / "data/mimic_cxr/translate_ids.json").read_text())
    assert manifest["rejected"] == {
        reason: {"count": len(v), "study_ids": sorted(v, key=ids.index)} for reason, v in sorted(expected.items())
    }
    assert manifest["studies_by_split"] == {"train": 5, "validation": 2, "test": 2}
    on_disk = json.loads((output_root / "data/mimic_cxr_ptbr/manifest.json").read_text())
    assert on_disk["rejected"] == manifest["rejected"]
    assert "ACHADOS" not in json.dumps(manifest)


def test_sharegpt_sets_have_one_image_token_per_image(translated) -> None:
    output_root, manifest, translations, planted = translated
    folder = output_root / "data/mimic_cxr_ptbr"
    studies = studies_of(output_root)
    for split in SUBSET:
        items = json.loads((folder / f"{split}.json").read_text())
        assert len(items) == manifest["studies_by_split"][split]
        kept = [s for s in studies if s["split"] == split and s["study_id"] not in planted]
        for item, study in zip(items, kept, strict=True):
            user, assistant = item["messages"]
            assert set(item) == {"messages", "images"}
            assert user["role"] == "user" and assistant["role"] == "assistant"
            assert item["images"] == study["images"] and 1 <= len(item["images"]) <= 2
            assert user["content"] == "<image>" * len(item["images"]) + DIAGNOSIS_PROMPT
            assert user["content"].count("<image>") == len(item["images"])
            assert assistant["content"] == translations[study["study_id"]]
            assert all((output_root / image).is_file() for image in item["images"])


def test_fewshot_prompt_holds_one_training_report(translated) -> None:
    output_root, manifest, translations, _planted = translated
    folder = output_root / "data/mimic_cxr_ptbr"
    test_items = json.loads((folder / "test.json").read_text())
    fewshot = json.loads((folder / "test_fewshot.json").read_text())
    example_id = manifest["fewshot_example_study_id"]
    studies = {s["study_id"]: s for s in studies_of(output_root)}
    assert studies[example_id]["split"] == "train"
    example = translations[example_id]
    assert len(fewshot) == len(test_items)
    for item, plain in zip(fewshot, test_items, strict=True):
        content = item["messages"][0]["content"]
        n = len(item["images"])
        assert item["images"] == plain["images"] and item["messages"][1] == plain["messages"][1]
        assert content.startswith("<image>" * n) and content.count("<image>") == n
        assert f"Exemplo de relatório:\n{example}\n\n{DIAGNOSIS_PROMPT}" in content
        assert content.endswith("\n\n" + DIAGNOSIS_PROMPT)


def test_test_ids_and_references_are_aligned(translated) -> None:
    output_root, _manifest, translations, planted = translated
    folder = output_root / "data/mimic_cxr_ptbr"
    test_ids = json.loads((folder / "test_ids.json").read_text())
    references = read_jsonl(folder / "test_references.jsonl")
    test_items = json.loads((folder / "test.json").read_text())
    studies = {s["study_id"]: s for s in studies_of(output_root)}
    assert [r["id"] for r in references] == test_ids
    assert not set(test_ids) & set(planted)
    for study_id, reference, item in zip(test_ids, references, test_items, strict=True):
        assert reference == {"id": study_id, "report_pt": translations[study_id], "report_en": studies[study_id]["report_en"]}
        assert item["messages"][1]["content"] == reference["report_pt"]
        assert item["images"] == studies[study_id]["images"]


def test_ptbr_registry_entries(translated) -> None:
    output_root, *_ = translated
    registry = json.loads((output_root / "dataset_info.json").read_text())
    names = ["mimic_cxr_ptbr_train", "mimic_cxr_ptbr_validation", "mimic_cxr_ptbr_test", "mimic_cxr_ptbr_test_fewshot"]
    assert set(PTBR_ENTRIES) == set(names)
    for name in names:
        entry = registry[name]
        assert entry["formatting"] == "sharegpt"
        assert entry["columns"] == {"messages": "messages", "images": "images"}
        assert entry["tags"] == {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
        assert (output_root / entry["file_name"]).is_file()
    assert registry["mimic_cxr_ptbr_test_fewshot"]["file_name"] == "data/mimic_cxr_ptbr/test_fewshot.json"
    assert "mimic_cxr_translate" in registry and "other" in registry


def test_ptbr_manifest_counts_the_records_of_every_registered_set(translated) -> None:
    output_root, manifest, *_ = translated
    on_disk = json.loads((output_root / "data/mimic_cxr_ptbr/manifest.json").read_text())
    assert on_disk["datasets"] == manifest["datasets"]
    assert set(manifest["datasets"]) == set(PTBR_ENTRIES)
    for name, entry in PTBR_ENTRIES.items():
        items = json.loads((output_root / entry["file_name"]).read_text(encoding="utf-8"))
        assert manifest["datasets"][name] == {"file": entry["file_name"], "records": len(items)}
    for split, count in manifest["studies_by_split"].items():
        assert manifest["datasets"][f"mimic_cxr_ptbr_{split}"]["records"] == count
    assert manifest["datasets"]["mimic_cxr_ptbr_test_fewshot"]["records"] == manifest["studies_by_split"]["test"]


def test_ptbr_command_prints_counts_and_ids_never_text(translated) -> None:
    output_root, manifest, *_ = translated
    args = ["--translations", str(output_root / "generated_predictions.jsonl"), "--output-root", str(output_root)]
    result = CliRunner().invoke(command_app(PTBR_PLUGIN.command), args)
    assert result.exit_code == 0, result.output
    for reason, entry in manifest["rejected"].items():
        assert f"rejected {reason}: {entry['count']} (study ids: {', '.join(entry['study_ids'])})" in result.stdout
    assert "ACHADOS" not in result.output and "FINDINGS" not in result.output


def test_count_mismatch_names_both_files(translated, tmp_path: Path) -> None:
    output_root, *_ = translated
    lines = (output_root / "generated_predictions.jsonl").read_text().splitlines()
    short = tmp_path / "generated_predictions.jsonl"
    short.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(CorpusError) as error:
        prepare_mimic_cxr_ptbr(short, output_root=output_root)
    assert str(short) in str(error.value) and str(output_root / "data/mimic_cxr/translate_ids.json") in str(error.value)
    result = CliRunner().invoke(command_app(PTBR_PLUGIN.command), ["--translations", str(short), "--output-root", str(output_root)])
    assert result.exit_code == 1 and "translate_ids.json" in result.stderr


def test_predictions_of_another_translate_set_are_refused(translated, tmp_path: Path) -> None:
    output_root, *_ = translated
    lines = (output_root / "generated_predictions.jsonl").read_text().splitlines()
    shuffled = tmp_path / "generated_predictions.jsonl"
    shuffled.write_text("\n".join(lines[1:] + lines[:1]) + "\n")
    with pytest.raises(CorpusError, match="another translate.jsonl"):
        prepare_mimic_cxr_ptbr(shuffled, output_root=output_root)


def test_everything_rejected_is_an_error(translated, tmp_path: Path) -> None:
    output_root, *_ = translated
    rows = read_jsonl(output_root / "generated_predictions.jsonl")
    empty = tmp_path / "generated_predictions.jsonl"
    write_jsonl(empty, ({**row, "predict": ""} for row in rows))
    before = (output_root / "data/mimic_cxr_ptbr/train.json").stat().st_mtime_ns
    with pytest.raises(CorpusError, match="every translation was rejected"):
        prepare_mimic_cxr_ptbr(empty, output_root=output_root)
    assert (output_root / "data/mimic_cxr_ptbr/train.json").stat().st_mtime_ns == before


def test_missing_prepared_studies_is_an_error(tmp_path: Path) -> None:
    predictions = write_predictions(tmp_path / "generated_predictions.jsonl", [("FINDINGS: x.", "ACHADOS: x.")])
    with pytest.raises(CorpusError, match="prepare mimic_cxr"):
        prepare_mimic_cxr_ptbr(predictions, output_root=tmp_path)


def test_unreadable_prediction_lines_name_the_file_and_line(tmp_path: Path) -> None:
    predictions = write_predictions(tmp_path / "generated_predictions.jsonl", [("FINDINGS: x.", "ACHADOS: x.")])
    with open(predictions, "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    with pytest.raises(CorpusError, match=r"generated_predictions.jsonl, line 2: not valid JSON"):
        prepare_mimic_cxr_ptbr(predictions, output_root=tmp_path)
    write_jsonl(predictions, [{"prompt": "x", "predict": "ACHADOS: x."}, {"prompt": "x", "label": ""}])
    with pytest.raises(CorpusError, match=r"generated_predictions.jsonl, line 2: no \"predict\" text"):
        prepare_mimic_cxr_ptbr(predictions, output_root=tmp_path)


def test_rejection_rules() -> None:
    source = "FINDINGS: Heart size is normal. There is no pleural effusion or pneumothorax.\n\nIMPRESSION: No acute process."
    good = "ACHADOS: O tamanho do coração é normal. Não há derrame pleural ou pneumotórax.\n\nIMPRESSÃO: Sem processo agudo."
    assert rejection_reason(good, source) is None
    assert rejection_reason(" \n", source) == "empty"
    assert rejection_reason(source, source) == "not_portuguese"
    mixed = "ACHADOS: Heart size is normal. There is no pleural effusion and the lungs are clear. IMPRESSÃO: Sem processo agudo."
    assert rejection_reason(mixed, source) == "not_portuguese"
    assert rejection_reason(good[: len(good) - 20], source) == "truncated"  # stops mid-sentence
    assert rejection_reason("IMPRESSÃO: Normal.", source) == "truncated"  # < half the source's characters
    # A source without final punctuation does not require it of the translation.
    assert rejection_reason(good.rstrip("."), source.rstrip(".")) is None
    assert rejection_reason(good + "**", source) is None  # markdown emphasis at the end is not a cut
    assert rejection_reason("IMPRESSION: Stable  mild cardiomegaly.", "IMPRESSION: Stable mild cardiomegaly.") == "not_portuguese"
    assert is_portuguese("Normal.") and is_portuguese("Sem alterações.")
    assert not is_portuguese("Lungs clear bilaterally; heart normal size; bony structures intact; pleura normal today")


def test_llamafactory_reads_the_registry_entries(translated) -> None:
    """LLaMA-Factory's own parser and converter read the sets, images resolved under dataset_dir."""
    parser = pytest.importorskip("llamafactory.data.parser")
    from llamafactory.data.converter import get_dataset_converter
    from llamafactory.hparams import DataArguments

    output_root, *_ = translated
    attrs = parser.get_dataset_list(["mimic_cxr_ptbr_train", "mimic_cxr_ptbr_test_fewshot", "mimic_cxr_translate"], str(output_root))
    assert [attr.formatting for attr in attrs] == ["sharegpt", "sharegpt", "alpaca"]
    assert attrs[0].images == "images" and attrs[0].messages == "messages"
    data_args = DataArguments(dataset_dir=str(output_root))  # recipes: dataset_dir: . (media_dir defaults to it)
    fewshot = json.loads((output_root / attrs[1].dataset_name).read_text())[0]
    converted = get_dataset_converter("sharegpt", attrs[1], data_args)(fewshot)
    assert converted["_prompt"][0]["content"] == fewshot["messages"][0]["content"]
    assert converted["_response"][0]["content"] == fewshot["messages"][1]["content"]
    assert [Path(image) for image in converted["_images"]] == [output_root / image for image in fewshot["images"]]
    translate_row = read_jsonl(output_root / attrs[2].dataset_name)[0]
    converted = get_dataset_converter("alpaca", attrs[2], data_args)(translate_row)
    assert converted["_prompt"][0]["content"] == f"{TRANSLATE_PROMPT}\n{translate_row['input']}"


# --- Ids from the tables never lead outside their folders --------------------------------------------------

TRAVERSAL_IDS = ["../../x", "/abs/x", "a/b", "..", ".", "\uff0e\uff0e", "\u2025", "a\\b", "x\x1fy", ""]


@pytest.fixture()
def small_layout(tmp_path: Path) -> Path:
    return build_mimic_layout_from_indiana(None, tmp_path / "source", {"train": 3, "validation": 1, "test": 1}, seed=4)


@pytest.mark.parametrize("column", ["dicom_id", "study_id", "subject_id"])
@pytest.mark.parametrize("payload", TRAVERSAL_IDS, ids=ascii)
def test_ids_that_are_not_one_path_component_are_refused_naming_the_row_not_the_value(
    small_layout: Path, tmp_path: Path, column: str, payload: str
) -> None:
    table = set_table_cell(small_layout, "mimic-cxr-2.0.0-split.csv", 2, column, payload)
    output_root = tmp_path / "out"
    with pytest.raises(CorpusError) as error:
        prepare_mimic_cxr(small_layout, output_root=output_root, counts={"train": 3, "validation": 1, "test": 1})
    message = str(error.value)
    assert f"{table}, row 3 after the header: the {column} (value not shown) cannot name a file or folder" in message
    assert "download it again" in message
    if payload not in ("", ".", ".."):  # (those are words of the reason: "it is '.' or '..'")
        assert payload not in message.replace(str(table), "")
    assert not output_root.exists()
    assert not list(tmp_path.rglob("x.png")) and not list(tmp_path.rglob("*.png"))


@pytest.mark.parametrize("payload", TRAVERSAL_IDS, ids=ascii)
def test_paths_built_from_ids_stay_in_their_folder(tmp_path: Path, payload: str) -> None:
    """Refused (value not shown), or one file inside its folder (".." + ".jpg" is the harmless "...jpg")."""
    files, cache = tmp_path / "files", tmp_path / "data/mimic_cxr_images"
    built = [
        (files, 4, lambda: mimic_cxr.image_path(tmp_path, "10000001", "50000001", payload)),
        (files, 3, lambda: mimic_cxr.report_path(tmp_path, payload, "50000001")),
        (files, 3, lambda: mimic_cxr.report_path(tmp_path, "10000001", payload)),
        (cache, 2, lambda: mimic_cxr.cached_image(tmp_path, payload, "d1")),
        (cache, 2, lambda: mimic_cxr.cached_image(tmp_path, "50000001", payload)),
    ]
    for folder, depth, build in built:
        try:
            path = build()
        except CorpusError as error:
            assert "(value not shown) cannot name a file or folder" in str(error)
            continue
        assert len(path.relative_to(folder).parts) == depth and folder.resolve() in path.resolve().parents


def test_a_link_out_of_the_image_cache_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "data/mimic_cxr_images"
    cache.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (cache / "50000001").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CorpusError, match="leads outside"):
        mimic_cxr.cached_image(tmp_path, "50000001", "d1")
    assert mimic_cxr.cached_image(tmp_path, "50000002", "d1") == cache / "50000002/d1.png"


def test_image_paths_of_prepared_studies_must_be_cache_files(translated, tmp_path: Path) -> None:
    source_root, *_ = translated
    output_root = tmp_path / "repo"
    shutil.copytree(source_root, output_root)
    studies_path = output_root / "data/mimic_cxr/studies.jsonl"
    records = read_jsonl(studies_path)
    for payload in ("../../outside.png", "/abs/x.png", "data/mimic_cxr_images/../x.png", "data/mimic_cxr_images/s1/../../x.png"):
        write_jsonl(studies_path, [records[0], {**records[1], "images": [payload]}, *records[2:]])
        with pytest.raises(CorpusError) as error:
            prepare_mimic_cxr_ptbr(output_root / "generated_predictions.jsonl", output_root=output_root)
        assert f"{studies_path}, record 2:" in str(error.value) and payload not in str(error.value)


# --- The image cache is checked against its source -----------------------------------------------------------

SMALL_SUBSET = {"train": 3, "validation": 1, "test": 1}


def first_cached(output_root: Path) -> tuple[dict, Path]:
    study = studies_of(output_root)[0]
    return study, output_root / study["images"][0]


def test_a_changed_source_is_converted_again(small_layout: Path, tmp_path: Path) -> None:
    output_root = tmp_path / "out"
    first = prepare_mimic_cxr(small_layout, output_root=output_root, counts=SMALL_SUBSET)
    assert first["images"]["written"] == first["images"]["total"]
    study, cached = first_cached(output_root)
    source = source_jpg(small_layout, study, study["images"][0])
    # A new version of the source (another image, as a corrected download would be).
    with Image.open(source) as image:
        ImageOps.invert(image.convert("L")).save(source, quality=85)
    second = prepare_mimic_cxr(small_layout, output_root=output_root, counts=SMALL_SUBSET)
    assert second["images"]["written"] == 1 and second["images"]["reused_from_cache"] == first["images"]["total"] - 1
    with Image.open(source) as image, Image.open(cached) as redone:
        assert list(redone.getdata()) == list(square_resize(image).getdata())
    record = json.loads(mimic_cxr.cache_record_path(cached).read_text())
    assert record["source"] == {"bytes": source.stat().st_size, "mtime_ns": source.stat().st_mtime_ns}
    # Only the mtime changed (touched, copied without -p): converted again too, never trusted.
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    assert prepare_mimic_cxr(small_layout, output_root=output_root, counts=SMALL_SUBSET)["images"]["written"] == 1


def test_a_truncated_or_altered_cached_image_is_converted_again(small_layout: Path, tmp_path: Path) -> None:
    output_root = tmp_path / "out"
    first = prepare_mimic_cxr(small_layout, output_root=output_root, counts=SMALL_SUBSET)
    study, cached = first_cached(output_root)
    whole = cached.read_bytes()
    cached.write_bytes(whole[: len(whole) // 2])  # a copy or a disk that stopped half way
    second = prepare_mimic_cxr(small_layout, output_root=output_root, counts=SMALL_SUBSET)
    assert second["images"]["written"] == 1 and cached.read_bytes() == whole
    with Image.open(cached) as image:
        image.load()  # the whole image decodes
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0xFF  # same size, other bytes
    cached.write_bytes(bytes(flipped))
    assert prepare_mimic_cxr(small_layout, output_root=output_root, counts=SMALL_SUBSET)["images"]["written"] == 1
    assert cached.read_bytes() == whole
    # A cache without its records (an older medfactory, or records deleted) is converted once, then reused.
    for record in (output_root / "data/mimic_cxr_images").rglob(f"*{mimic_cxr.CACHE_RECORD_SUFFIX}"):
        record.unlink()
    assert prepare_mimic_cxr(small_layout, output_root=output_root, counts=SMALL_SUBSET)["images"]["written"] == first["images"]["total"]
    assert prepare_mimic_cxr(small_layout, output_root=output_root, counts=SMALL_SUBSET)["images"]["written"] == 0
    leftovers = [path.name for path in (output_root / "data/mimic_cxr_images").rglob("*") if path.name.endswith(".tmp")]
    assert leftovers == []
