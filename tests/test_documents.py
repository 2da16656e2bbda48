"""``medfactory prepare documents`` on a folder with one file of each real format (JATS with a ref-list,
a PDF, WebVTT and SubRip captions, Markdown, text), through the real command: what each format keeps,
the clean-up, de-duplication, the language check, the split by document, chunks from train only,
reruns, and unreadable files named without their content."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medfactory.cli import app
from medfactory.corpus.language import identify, language_share
from medfactory.corpus.sentences import chunk_text, split_sentences
from medfactory.corpus.splits import unit_hash
from medfactory.plugins.documents import clean_text, document_id

SEED = 7
FRACTION = 0.3
CHUNK = 300

ARTICLE = """Hipertensión arterial en atención primaria

El Dr. García y la Sra. López revisaron 120 historias clínicas de pacientes con hiper-
tensión arterial. La presión media fue de 150.5 mmHg al inicio del estudio. Según García et al. el control mejora
con el seguimiento, p. ej. con visitas mensuales.
© 2023 Sociedad Española de Cardiología. Todos los derechos reservados.
doi:10.1016/j.rec.2023.01.002
Los pacientes que recibieron educación sanitaria redujeron la presión sistólica de forma significativa.
No hubo efectos adversos graves durante el seguimiento de doce meses.

Referencias
1. García J, López M. Control de la hipertensión. Rev Esp Cardiol. 2020;73:1-5.
2. Pérez A. Atención primaria y riesgo cardiovascular. Aten Primaria. 2019;51:20-8.
"""

LONG = " ".join(
    f"En la consulta número {n} se valoró a un paciente con diabetes tipo dos que presentaba cifras de glucosa elevadas y se ajustó el tratamiento "
    f"con metformina según las guías clínicas vigentes, insistiendo en la dieta y el ejercicio físico regular."
    for n in range(1, 13)
)

ENGLISH = (
    "Hypertension in primary care. We reviewed the records of one hundred and twenty patients with high blood pressure. "
    "Patients who received health education lowered their systolic pressure significantly, and no serious adverse events were seen."
)

ACUPUNCTURE = (
    "La acupuntura es una práctica de la medicina tradicional china que consiste en insertar agujas finas en puntos concretos del cuerpo. "
    "Algunos ensayos clínicos sugieren un efecto modesto sobre el dolor lumbar crónico, aunque la calidad de la evidencia es baja."
)

MARKDOWN = """---
title: Guía
---
# Tratamiento de la **diabetes**

La [metformina](https://example.org/metformina) es el *fármaco de primera línea* en la diabetes tipo dos. Se recomienda empezar con dosis bajas.

```python
print("CODIGO_SECRETO")
```

![figura](imagen.png)

| fármaco | dosis |
|---|---|
| TABLA_SECRETA | 850 mg |

- Revisar la función renal antes de iniciar el tratamiento.
- Ajustar la dosis si el filtrado glomerular es bajo.
"""

JATS = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE article PUBLIC "-//NLM//DTD JATS (Z39.96) Journal Publishing DTD v1.1 20151215//EN" "JATS-journalpublishing1.dtd">
<article xmlns:xlink="http://www.w3.org/1999/xlink" article-type="research-article" xml:lang="es">
<front><journal-meta><journal-title-group><journal-title>REVISTA_SECRETA</journal-title></journal-title-group></journal-meta>
<article-meta>
<title-group><article-title>Tuberculosis pulmonar en adultos mayores</article-title>
<trans-title-group xml:lang="en"><trans-title>Pulmonary tuberculosis in older adults</trans-title></trans-title-group></title-group>
<abstract><p>Se describen los casos de tuberculosis pulmonar diagnosticados en mayores de sesenta y cinco años durante una década.</p></abstract>
<trans-abstract xml:lang="en"><p>We describe the cases of pulmonary tuberculosis diagnosed in people over sixty-five.</p></trans-abstract>
</article-meta></front>
<body><sec><title>Introducción</title>
<p>La tuberculosis sigue siendo un problema de salud pública en muchos países de América Latina <xref ref-type="bibr" rid="B1">[1]</xref>.
El diagnóstico en los ancianos suele ser tardío, como muestra la figura <xref ref-type="fig" rid="f1">1</xref>.</p>
<table-wrap id="t1"><label>Tabla 1</label><caption><p>Características clínicas de los pacientes incluidos.</p></caption>
<table><tr><td>CELDA_SECRETA</td></tr></table></table-wrap>
<p>La fórmula <disp-formula><tex-math>FORMULA_SECRETA</tex-math></disp-formula> no se conserva.</p>
<fig id="f1"><label>Figura 1</label><caption><title>Radiografía de tórax con cavitación apical.</title></caption><graphic xlink:href="f1.jpg"/></fig>
</sec></body>
<back><ref-list><title>Referencias</title><ref id="B1"><mixed-citation>REFERENCIA_SECRETA. Tuberculosis. 2019.</mixed-citation></ref></ref-list></back>
</article>
"""

PDF_PAGES = [
    [
        "Revista Clínica Española - Vol. 12",
        "La insuficiencia cardíaca es una causa frecuente de ingreso hospi-",
        "talario en los pacientes mayores de setenta años.",
        "El tratamiento con diuréticos alivia los síntomas congestivos.",
        "Página 1 de 3",
    ],
    [
        "Revista Clínica Española - Vol. 12",
        "Los inhibidores de la enzima convertidora reducen la mortalidad en",
        "los pacientes con fracción de eyección reducida.",
        "Página 2 de 3",
    ],
    [
        "Revista Clínica Española - Vol. 12",
        "La rehabilitación cardíaca mejora la capacidad funcional y la calidad de vida.",
        "Página 3 de 3",
    ],
]

VTT = """WEBVTT
Kind: captions
Language: es

00:00:00.000 --> 00:00:02.000 align:start position:0%
<v Dra. Ruiz>hoy vamos a hablar de la vacunación

00:00:02.000 --> 00:00:04.000 align:start position:0%
hoy vamos a hablar de la vacunación
en los niños pequeños

00:00:04.000 --> 00:00:06.000 align:start position:0%
en los niños pequeños
las vacunas previenen enfermedades graves como el sarampión

00:00:06.000 --> 00:00:08.000
[Música]
y el calendario de vacunación se revisa cada año en cada comunidad
"""

SRT = """1
00:00:01,000 --> 00:00:03,000
DRA. LÓPEZ: Buenos días, hoy hablamos del asma infantil.

2
00:00:03,000 --> 00:00:06,500
[Música]
El asma es una enfermedad crónica de las vías respiratorias.

3
00:00:06,500 --> 00:00:09,000
- Los inhaladores controlan los síntomas en la mayoría de los niños.
"""


def pdf_bytes(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF: each page shows its lines in Helvetica (WinAnsi, so accents survive)."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    pages_id = 1 + 2 * len(pages) + 1
    kids = []
    for lines in pages:
        shown = [b"(" + line.encode("cp1252").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b") Tj T*" for line in lines]
        stream = b"\n".join([b"BT /F1 11 Tf 14 TL 50 780 Td", *shown, b"ET"])
        content = add(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        page = b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] /Contents %d 0 R /Resources << /Font << /F1 %d 0 R >> >> >>"
        kids.append(add(page % (pages_id, content, font)))
    assert add(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % kid for kid in kids), len(kids))) == pages_id
    catalog = add(b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1) + b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, catalog, xref)
    return bytes(out)


def build_corpus(root: Path) -> Path:
    source = root / "corpus"
    (source / "alternative_medicine").mkdir(parents=True)
    (source / "articulo.txt").write_text(ARTICLE, encoding="utf-8")
    copy = ARTICLE.replace("Hipertensión arterial en atención primaria", "HIPERTENSIÓN ARTERIAL EN ATENCIÓN PRIMARIA").replace(" ", "  ")
    (source / "copia_exacta.txt").write_bytes(copy.replace("\n", "\r\n").encode("cp1252"))  # equal after case folding and spacing
    (source / "diabetes.txt").write_text(LONG, encoding="utf-8")
    (source / "diabetes_copia.txt").write_text(LONG.replace("ejercicio físico regular.", "ejercicio físico diario.", 1), encoding="utf-8")
    (source / "english.txt").write_text(ENGLISH, encoding="utf-8")
    (source / "alternative_medicine" / "acupuntura.txt").write_text(ACUPUNCTURE, encoding="utf-8")
    (source / "guia.md").write_text(MARKDOWN, encoding="utf-8")
    (source / "tuberculosis.xml").write_text(JATS, encoding="utf-8")
    (source / "insuficiencia.pdf").write_bytes(pdf_bytes(PDF_PAGES))
    (source / "charla.vtt").write_text(VTT, encoding="utf-8")
    (source / "entrevista.srt").write_text(SRT, encoding="utf-8")
    (source / "anotaciones.ann").write_text("T1\tNOMBRE 0 5\tGarcía\n", encoding="utf-8")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secreto.txt").write_text("SECRETO_FUERA " + ACUPUNCTURE, encoding="utf-8")
    (source / "enlace.txt").symlink_to(outside / "secreto.txt")
    (source / "enlazada").symlink_to(outside, target_is_directory=True)
    return source


def prepare(output_root: Path, source: Path, *extra: str) -> tuple[int, str]:
    arguments = ["prepare", "documents", "--source", str(source), "--language", "es", "--output-root", str(output_root)]
    result = CliRunner().invoke(app, [*arguments, "--seed", str(SEED), "--validation-fraction", str(FRACTION), "--chunk-characters", str(CHUNK), *extra])
    return result.exit_code, result.output


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> dict:
    """The corpus prepared once for the tests that read it (the rerun test leaves it as it was)."""
    tmp_path = tmp_path_factory.mktemp("documents")
    repo_copy = tmp_path / "repo"
    repo_copy.mkdir()
    shutil.copy2(repo_root / "dataset_info.json", repo_copy / "dataset_info.json")
    source = build_corpus(tmp_path)
    code, output = prepare(repo_copy, source)
    assert code == 0, output
    folder = repo_copy / "data" / "documents_es"
    return {
        "root": repo_copy,
        "source": source,
        "folder": folder,
        "output": output,
        "manifest": json.loads((folder / "manifest.json").read_text(encoding="utf-8")),
        "train": read_jsonl(folder / "train.jsonl"),
        "validation": read_jsonl(folder / "validation.jsonl"),
        "chunks": read_jsonl(folder / "chunks.jsonl"),
    }


def by_id(prepared: dict, relative: str) -> dict:
    wanted = document_id(relative)
    return next(record for record in prepared["train"] + prepared["validation"] if record["id"] == wanted)


def test_files_registry_and_manifest_counts(prepared: dict) -> None:
    manifest, root = prepared["manifest"], prepared["root"]
    assert sorted(path.name for path in prepared["folder"].iterdir()) == ["chunks.jsonl", "manifest.json", "train.jsonl", "validation.jsonl"]
    registry = json.loads((root / "dataset_info.json").read_text(encoding="utf-8"))
    assert registry["documents_es"]["file_name"] == "data/documents_es/train.jsonl" and registry["documents_es"]["columns"] == {"prompt": "text"}
    assert registry["documents_es_validation"]["file_name"] == "data/documents_es/validation.jsonl"
    assert manifest["plugin"] == "documents" and manifest["files"] == 11
    assert manifest["files_by_format"] == {"jats": 1, "md": 1, "pdf": 1, "srt": 1, "txt": 6, "vtt": 1}
    assert manifest["ignored_files"] == {"link_outside_source": 1, "linked_folder": 1, "suffix .ann": 1}
    assert manifest["dropped"] == {"exact_duplicate": 1, "language_en": 1, "near_duplicate": 1}
    assert manifest["languages_detected"]["en"] == 1
    assert manifest["documents"] == 8 == len(prepared["train"]) + len(prepared["validation"])
    assert manifest["documents_by_topic"] == {"(none)": 7, "alternative_medicine": 1}
    assert manifest["documents_by_format"] == {"jats": 1, "md": 1, "pdf": 1, "srt": 1, "txt": 3, "vtt": 1}
    assert manifest["datasets"]["documents_es"]["records"] == len(prepared["train"])
    assert manifest["datasets"]["documents_es_validation"]["records"] == len(prepared["validation"])
    assert manifest["splits"]["train"]["chunks"] == len(prepared["chunks"]) == manifest["chunks"]["records"]
    assert {pair["kind"] for pair in manifest["duplicates"]} == {"exact_duplicate", "near_duplicate"}
    cleaning = manifest["cleaning"]
    # files are cleaned before duplicates are known: the article and its exact copy count twice, the PDF once
    assert cleaning["references_sections_removed"] == 2 and cleaning["hyphenations_joined"] == 3
    assert cleaning["pdf_running_lines_removed"] == 6  # the journal line and "Página N de 3" on each of the 3 pages
    assert cleaning["boilerplate_copyright_lines_removed"] == 2 and cleaning["boilerplate_doi_lines_removed"] == 2
    assert cleaning["caption_repeated_lines_removed"] == 2
    text = json.dumps(manifest, ensure_ascii=False)
    for secret in ("Hipertensión", "tuberculosis", "SECRETO_FUERA", "vacunación"):
        assert secret not in text  # counts and ids, never text


def test_each_format_is_cleaned(prepared: dict) -> None:
    article = by_id(prepared, "articulo.txt")["text"]
    assert "hipertensión arterial" in article and "hiper-" not in article
    assert "Referencias" not in article and "Rev Esp Cardiol" not in article and "©" not in article and "doi:" not in article
    assert "Los pacientes que recibieron educación sanitaria" in article
    markdown = by_id(prepared, "guia.md")
    assert markdown["source_format"] == "md" and markdown["text"].startswith("Tratamiento de la diabetes\n\nLa metformina es el fármaco de primera línea")
    for markup in ("CODIGO_SECRETO", "TABLA_SECRETA", "](", "**", "#", "title:", "figura", "- Revisar"):
        assert markup not in markdown["text"]
    assert "Revisar la función renal" in markdown["text"]
    jats = by_id(prepared, "tuberculosis.xml")["text"]
    assert jats.startswith("Tuberculosis pulmonar en adultos mayores\n\nSe describen los casos")
    assert "América Latina. El diagnóstico en los ancianos suele ser tardío, como muestra la figura 1." in jats
    assert "Características clínicas de los pacientes incluidos." in jats and "Radiografía de tórax" in jats
    for dropped in ("REFERENCIA_SECRETA", "CELDA_SECRETA", "FORMULA_SECRETA", "REVISTA_SECRETA", "older adults", "over sixty-five", "[1]", "Tabla 1"):
        assert dropped not in jats
    pdf = by_id(prepared, "insuficiencia.pdf")["text"]
    assert "Revista Clínica" not in pdf and "Página" not in pdf
    assert "ingreso hospitalario en los pacientes mayores" in pdf and pdf.count("\n") == 3  # lines re-joined up to sentence ends
    vtt = by_id(prepared, "charla.vtt")["text"]
    assert vtt.count("hoy vamos a hablar de la vacunación") == 1 and vtt.count("en los niños pequeños") == 1
    assert "-->" not in vtt and "Dra. Ruiz" not in vtt and "Música" not in vtt and "align:" not in vtt
    srt = by_id(prepared, "entrevista.srt")["text"]
    assert srt.startswith("Buenos días, hoy hablamos del asma infantil.") and "LÓPEZ" not in srt and "Música" not in srt and "- Los" not in srt
    assert by_id(prepared, "alternative_medicine/acupuntura.txt")["topic"] == "alternative_medicine" and by_id(prepared, "articulo.txt")["topic"] is None
    everything = json.dumps(prepared["train"] + prepared["validation"] + prepared["chunks"], ensure_ascii=False)
    assert "SECRETO_FUERA" not in everything and "Hypertension" not in everything


def test_split_by_document_and_chunks_from_train_only(prepared: dict) -> None:
    train, validation, chunks = prepared["train"], prepared["validation"], prepared["chunks"]
    assert validation and train  # this seed and fraction put documents on both sides
    for split, records in (("train", train), ("validation", validation)):
        for record in records:
            assert ("validation" if unit_hash(SEED, record["id"]) < FRACTION else "train") == split
            assert set(record) == {"id", "text", "topic", "language", "source_format"} and record["language"] == "es"
    validation_ids = {record["id"] for record in validation}
    assert not validation_ids & {chunk["document_id"] for chunk in chunks}
    for document in train:
        own = [chunk for chunk in chunks if chunk["document_id"] == document["id"]]
        assert [chunk["chunk"] for chunk in own] == list(range(len(own)))
        assert [chunk["id"] for chunk in own] == [f"{document['id']}:{i}" for i in range(len(own))]
        assert " ".join(chunk["text"] for chunk in own).split() == document["text"].split()  # re-joined, modulo whitespace
        for chunk in own:
            assert len(chunk["text"]) <= CHUNK and chunk["topic"] == document["topic"] and chunk["language"] == "es"
            if document["source_format"] != "vtt":  # auto captions have no punctuation: cut at words
                assert re.search(r"[.!?]$", chunk["text"]), chunk["id"]
    assert any(len([c for c in chunks if c["document_id"] == document["id"]]) > 1 for document in train)


def test_rerun_is_identical(prepared: dict) -> None:
    before = {name: (prepared["folder"] / name).read_bytes() for name in ("train.jsonl", "validation.jsonl", "chunks.jsonl")}
    code, output = prepare(prepared["root"], prepared["source"])
    assert code == 0, output
    assert {name: (prepared["folder"] / name).read_bytes() for name in before} == before
    again = json.loads((prepared["folder"] / "manifest.json").read_text(encoding="utf-8"))
    assert {**again, "created_utc": None} == {**prepared["manifest"], "created_utc": None}


BAD_FILES = {
    "roto.pdf": (b"%PDF-1.4\n1 0 obj << /Type /Catalog", "unreadable_pdf", "not a readable PDF"),
    "mal.xml": (b"<article><body><p>Texto sin cerrar</body></article>", "malformed_xml", "malformed XML at line 1"),
    "bomba.xml": (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx"><!ENTITY y "&x;&x;&x;">]><article>&y;</article>', "xml_refused", "XML refused"),
    "xxe.xml": (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/hostname">]><article>&e;</article>', "xml_refused", "XML refused"),
    "binario.txt": (b"\x81\x8d\x00\xff\xfe\x00\x01", "undecodable", "not text in UTF-8"),
    "otro.xml": (b"<html><body>no</body></html>", "not_jats", "not a JATS/NLM article"),
}


def test_unreadable_files_are_named_and_nothing_is_replaced(tmp_path: Path, repo_copy: Path) -> None:
    source = tmp_path / "bad"
    (source / "sub").mkdir(parents=True)
    (source / "bueno.txt").write_text(ACUPUNCTURE, encoding="utf-8")
    assert prepare(repo_copy, source)[0] == 0
    folder = repo_copy / "data" / "documents_es"
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    registry = (repo_copy / "dataset_info.json").read_bytes()
    for file_name, (data, _, detail) in BAD_FILES.items():
        (source / "sub" / file_name).write_bytes(data)
        code, output = prepare(repo_copy, source)
        assert code == 1 and f"sub/{file_name}" in output and detail in output and "--on-error skip" in output, (file_name, output)
        assert {path.name: path.read_bytes() for path in folder.iterdir()} == before  # the previous dataset is intact
        assert (repo_copy / "dataset_info.json").read_bytes() == registry
        (source / "sub" / file_name).unlink()
    for file_name, (data, _, _) in BAD_FILES.items():
        (source / "sub" / file_name).write_bytes(data)
    code, output = prepare(repo_copy, source, "--on-error", "skip")
    assert code == 0, output
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["dropped"] == dict(Counter(reason for _, reason, _ in BAD_FILES.values())) and manifest["documents"] == 1
    assert sorted(manifest["skipped_files"], key=str) == sorted(
        ({"document_id": document_id(f"sub/{name}"), "reason": reason} for name, (_, reason, _) in BAD_FILES.items()), key=str
    )


def test_empty_or_unsupported_folders_are_refused(tmp_path: Path, repo_copy: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output = prepare(repo_copy, empty)
    assert code == 1 and "no document files found" in output and "ignored: nothing" in output
    (empty / "notas.ann").write_text("x", encoding="utf-8")
    code, output = prepare(repo_copy, empty)
    assert code == 1 and "suffix .ann 1" in output
    code, output = prepare(repo_copy, tmp_path / "missing")
    assert code == 1 and "does not exist" in output
    assert not (repo_copy / "data").exists()


def test_line_end_hyphenation_is_joined_only_between_letters() -> None:
    counts: Counter = Counter()
    spanish = clean_text("la hiper-\ntensión y el síndrome de Guillain-\nBarré tras la COVID-\n19 en 2020-\n2021", "txt", "es", counts)
    assert spanish == "la hipertensión y el síndrome de Guillain-Barré tras la COVID-\n19 en 2020-\n2021" and counts["hyphenations_joined"] == 1
    portuguese = clean_text("o doente encontra-\nse melhor e a medica-\nção foi suspensa", "txt", "pt", counts)
    assert portuguese == "o doente encontra-se melhor e a medicação foi suspensa"


def test_sentences_respect_abbreviations_and_decimals() -> None:
    text = "El Dr. García vio al paciente, p. ej. en 2005. La dosis fue de 2.5 mg. Según Pérez et al. funciona. ¿Y ahora? J. R. Ruiz llegó.\n\nFin"
    sentences = split_sentences(text, "es")
    assert "".join(sentences) == text
    assert [sentence.strip() for sentence in sentences] == [
        "El Dr. García vio al paciente, p. ej. en 2005.",
        "La dosis fue de 2.5 mg.",
        "Según Pérez et al. funciona.",
        "¿Y ahora?",
        "J. R. Ruiz llegó.",
        "Fin",
    ]
    chunks = chunk_text(text, 60, "es")
    assert "".join(chunks) == text and all(len(chunk.rstrip()) <= 60 for chunk in chunks)
    assert chunk_text("palabra " * 30, 50, "es")[0] == "palabra " * 6  # a long sentence is cut at a word boundary


def test_language_identification() -> None:
    spanish = "El paciente presenta fiebre y dolor abdominal desde hace tres días. Se realizó una ecografía abdominal."
    english = "The patient presented with fever and abdominal pain for three days. An abdominal ultrasound was performed."
    language, probability = identify(spanish)
    assert language == "es" and probability > 0.9
    assert identify("O paciente apresenta febre e dor abdominal há três dias.")[0] == "pt"
    assert identify("123 456") == ("und", 0.0)
    assert language_share(spanish, "es") > 0.9 and language_share(english, "es") < 0.05
    assert 0.3 < language_share(spanish + " " + english, "es") < 0.7


def test_real_spanish_clinical_cases(shared_data: Path, repo_copy: Path, tmp_path: Path) -> None:
    """MEDDOCAN's dev cases (real Spanish clinical text, 250 .txt with .ann beside them): all Spanish, all kept."""
    dev = shared_data / "meddocan" / "dev"
    if not dev.is_dir():
        pytest.skip(f"{dev} is absent")
    code, output = prepare(repo_copy, dev, "--name", "meddocan_docs")
    assert code == 0, output
    manifest = json.loads((repo_copy / "data" / "meddocan_docs" / "manifest.json").read_text(encoding="utf-8"))
    cases = len(list(dev.glob("*.txt")))
    assert manifest["files_by_format"] == {"txt": cases} and manifest["ignored_files"] == {"suffix .ann": cases}
    assert manifest["languages_detected"] == {"es": cases}
    assert manifest["documents"] + sum(manifest["dropped"].values()) == cases and manifest["documents"] >= 0.95 * cases
