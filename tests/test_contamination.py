"""Near-duplicate index and the contamination report, on invented Portuguese notes.

Every note here is invented (hand-written below, or from medfactory.corpus.synthetic_notes): the sets plant
exact copies, copy-forward near copies (a long note with 1-3 words changed) and notes that share
a template but differ substantially, and the tests check that each is counted as planted, that
examples are ids only, and that no note text reaches a report, a summary or an error message.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from medfactory.base.errors import CorpusError
from medfactory.cli.contamination import contamination_command
from medfactory.corpus.contamination import contamination_report, format_summary
from medfactory.corpus.dedup import NearDuplicateIndex, lsh_params, normalise_for_dedup, shingles
from medfactory.corpus.synthetic_notes import generate_notes

# --- Invented notes -------------------------------------------------------------------------------
# A backslash at the end of a source line continues the same line of the note (the text is unchanged).

LONG_EVOLUTION = """EVOLUÇÃO MÉDICA - UTI ADULTO - D3 de internação
Paciente [NOME], 67 anos, sexo masculino, internado em [DATA] por choque séptico de foco pulmonar, em uso de ceftriaxona e claritromicina desde a admissão.
Antecedentes: HAS, DM2 insulinodependente, ex-tabagista de 40 anos-maço, DPOC em oxigenoterapia domiciliar noturna.
S: Refere cansaço e tosse com expectoração amarelada em menor quantidade que ontem. Nega dor torácica. Aceitou parcialmente a dieta via oral. Família \
presente no horário de visita.
O: REG, lúcido e orientado, descorado +/4+, hidratado, acianótico. Tax 38,1 °C no pico das últimas 24 horas. PA 118x72 mmHg em uso de noradrenalina \
0,08 mcg/kg/min, em desmame. FC 96 bpm, FR 22 irpm, SpO2 93% com cateter nasal a 3 L/min.
ACV: RCR 2T BNF, sem sopros. AR: MV diminuído em base direita com crepitações finas até terço médio. ABD: globoso, flácido, indolor, RHA presentes. \
MMII: sem edema, panturrilhas livres.
Balanço hídrico positivo de 850 mL nas últimas 24 horas, diurese de 1,4 L por SVD. Glicemias capilares entre 160 e 210 mg/dL com insulina regular \
conforme esquema.
Exames: leucócitos 15.800 com desvio à esquerda, PCR 18,2 mg/dL em queda, lactato 1,9 mmol/L, creatinina 1,6 mg/dL, potássio 4,1 mEq/L. Hemoculturas \
de admissão ainda sem crescimento.
A: Choque séptico de foco pulmonar em melhora, lesão renal aguda KDIGO 1 em recuperação, DM2 descompensado.
P: Mantenho antibioticoterapia, completa o terceiro dia hoje. Desmame de noradrenalina conforme PAM alvo acima de 65 mmHg. Fisioterapia respiratória \
duas vezes ao dia. Ajusto insulina NPH para 14 UI pela manhã. Solicito nova radiografia de tórax e controle laboratorial amanhã. Reavalio em 12 horas \
ou antes se intercorrências."""

# Same template and skeleton, another patient and day: shares many phrases, differs substantially.
LONG_EVOLUTION_OTHER_PATIENT = """EVOLUÇÃO MÉDICA - UTI ADULTO - D7 de internação
Paciente [NOME], 45 anos, sexo feminino, internada em [DATA] por pancreatite aguda grave de origem biliar, em jejum e nutrição enteral por sonda nasojejunal.
Antecedentes: obesidade grau II, colelitíase sintomática há dois anos, sem outras comorbidades conhecidas.
S: Refere dor abdominal em faixa de menor intensidade, sem náuseas. Evacuou uma vez, fezes pastosas. Dormiu bem durante a noite. Marido presente no \
horário de visita.
O: BEG, lúcida e orientada, corada, hidratada, anictérica. Tax 37,2 °C no pico das últimas 24 horas. PA 132x84 mmHg sem drogas vasoativas. FC 84 bpm, \
FR 18 irpm, SpO2 97% em ar ambiente.
ACV: RCR 2T BNF, sem sopros. AR: MV presente bilateralmente, sem ruídos adventícios. ABD: distendido, doloroso em epigástrio, sem sinais de \
peritonite, RHA diminuídos. MMII: edema +/4+ bilateral.
Balanço hídrico negativo de 300 mL nas últimas 24 horas, diurese de 2,1 L espontânea. Glicemias capilares entre 110 e 140 mg/dL sem necessidade de insulina.
Exames: leucócitos 11.200 sem desvio, PCR 9,4 mg/dL, amilase 410 U/L, lipase 980 U/L, cálcio 8,6 mg/dL, triglicerídeos normais. TC de abdome com \
necrose pancreática inferior a 30%.
A: Pancreatite aguda grave biliar em melhora clínica, sem critérios de infecção de necrose.
P: Progrido dieta enteral para 60 mL/h. Analgesia com dipirona e tramadol. Solicito avaliação da cirurgia geral para colecistectomia na mesma \
internação. Repito TC de abdome em sete dias. Mantenho profilaxia de TEV."""

LONG_DISCHARGE = """RESUMO DE ALTA HOSPITALAR - CLÍNICA MÉDICA
Paciente [NOME], 54 anos, sexo feminino, natural e procedente de [CIDADE], internada de [DATA] a [DATA] por pielonefrite aguda à direita complicada \
com bacteremia por Escherichia coli sensível a ceftriaxona.
História: procurou o pronto-socorro com febre de 39 °C, calafrios, dor lombar à direita e disúria há quatro dias. Antecedentes de hipotireoidismo em \
uso de levotiroxina 75 mcg/dia e dois episódios prévios de cistite no último ano.
Evolução: iniciada ceftriaxona 1 g EV a cada 24 horas após coleta de urocultura e hemoculturas. Manteve febre nas primeiras 48 horas, com \
ultrassonografia de rins e vias urinárias sem sinais de obstrução ou abscesso. Ficou afebril a partir do terceiro dia, com queda progressiva da PCR \
de 24 para 3,5 mg/dL e normalização dos leucócitos. Função renal preservada durante toda a internação.
Condições de alta: bom estado geral, afebril há 72 horas, deambulando sem auxílio, aceitando dieta livre, diurese espontânea sem queixas.
Prescrição de alta: ciprofloxacino 500 mg VO de 12 em 12 horas por mais sete dias, completando catorze dias de tratamento; dipirona 1 g VO se dor ou \
febre; manter levotiroxina.
Orientações: retornar ao pronto-socorro se febre, vômitos persistentes ou piora da dor lombar. Aumentar a ingesta hídrica. Retorno ao ambulatório de \
clínica médica em 15 dias com urocultura de controle."""

ADMISSION_HEART_FAILURE = """ADMISSÃO - CLÍNICA MÉDICA
Paciente [NOME], 72 anos, sexo feminino, natural de [CIDADE], admitida em [DATA] com queixa de dispneia aos mínimos esforços e ortopneia há 5 dias.
Antecedentes: ICC, FA crônica, HAS. Nega alergias medicamentosas.
Ao exame: REG, dispneica, descorada +/4+, hidratada, afebril. PA 150x90 mmHg, FC 112 bpm, FR 26 irpm, SpO2 89% em ar ambiente.
ACV: RCI 2T, sopro sistólico +/6+ em foco mitral. AR: crepitações bibasais até terço médio. ABD: Abdome globoso, flácido, indolor.
HD: ICC descompensada por FA de alta resposta.
Conduta: furosemida 40 mg EV 12/12h, controle de frequência e ecocardiograma."""

# Same admission template, another patient and disease.
ADMISSION_PYELONEPHRITIS = """ADMISSÃO - CLÍNICA MÉDICA
Paciente [NOME], 35 anos, sexo masculino, natural de [CIDADE], admitido em [DATA] com queixa de febre e dor lombar à esquerda há 2 dias.
Antecedentes: nefrolitíase. Nega alergias medicamentosas.
Ao exame: BEG, corado, hidratado, febril ao toque. PA 124x78 mmHg, FC 98 bpm, FR 18 irpm, SpO2 98% em ar ambiente.
ACV: RCR 2T BNF s/ sopros. AR: MV+ bilateralmente s/ RA. ABD: Abdome plano, doloroso à punho-percussão lombar esquerda.
HD: pielonefrite aguda.
Conduta: ceftriaxona 1 g EV 24/24h, analgesia e urocultura."""

SHORT_EVOLUTION = """EVOLUÇÃO - ENFERMARIA
Paciente estável, sem queixas, aceitando dieta oral. Afebril há 48 horas, diurese presente.
Mantida antibioticoterapia; programada alta para amanhã se mantiver estabilidade."""

SHORT_CONSULT = """PARECER DA NEFROLOGIA
Solicitado por elevação de creatinina para 2,3 mg/dL. Sem indicação de diálise de urgência.
Sugerimos suspender AINE, hidratar e repetir função renal em 24 horas."""


def change_words(text: str, changes: dict[int, str]) -> str:
    """``text`` with its whitespace-separated words at the given positions replaced (layout kept)."""
    parts = re.split(r"(\s+)", text)
    for position, word in changes.items():
        assert parts[2 * position] != word
        parts[2 * position] = word
    return "".join(parts)


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def true_jaccard(first: str, second: str) -> float:
    a, b = shingles(first), shingles(second)
    return len(a & b) / len(a | b)


# A long note made of four generated notes, copied forward with three words changed (two adjacent).
LONG_COMPOSED = "EVOLUÇÃO MULTIPROFISSIONAL\n" + "\n".join(generate_notes(4, seed=303))
NEAR_EVOLUTION = replace_once(replace_once(LONG_EVOLUTION, "D3 de", "D4 de"), "38,1 °C", "37,4 °C")
NEAR_DISCHARGE = replace_once(LONG_DISCHARGE, "em 15 dias", "em 30 dias").upper().replace("\n", "  \n ")
NEAR_COMPOSED = change_words(LONG_COMPOSED, {40: "estável,", 41: "acordado,", 200: "melhor"})
EXACT_SHORT_CONSULT = "  " + SHORT_CONSULT.upper().replace(" ", "   ") + "\n"


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def planted_sets(root: Path) -> dict:
    """B: a prepared folder (train.jsonl with ids, validation.jsonl without); A: test.jsonl."""
    b_generated = list(generate_notes(40, seed=101))
    train = [{"id": f"tr-{i:04d}", "text": t} for i, t in enumerate(b_generated)]
    train += [
        {"id": "tr-long-evol", "text": LONG_EVOLUTION},
        {"id": "tr-long-alta", "text": LONG_DISCHARGE},
        {"id": "tr-adm-icc", "text": ADMISSION_HEART_FAILURE},
        {"id": "tr-short-evol", "text": SHORT_EVOLUTION},
    ]
    validation = [
        {"text": b_generated[0] + " Reavaliação à tarde."},
        {"text": "Intercorrência: queda do leito sem trauma craniano, avaliada pela equipe de plantão."},
        {"text": LONG_COMPOSED},  # line 3
        {"text": SHORT_CONSULT},  # line 4
    ]
    b_dir = root / "b_set"
    write_jsonl(b_dir / "train.jsonl", train)
    write_jsonl(b_dir / "validation.jsonl", validation)
    (b_dir / "README.txt").write_text("not a dataset file\n", encoding="utf-8")
    b_texts = [r["text"] for r in train + validation]

    # Generated filler for A, kept only if clearly far from every B note (the generator's
    # templates make some notes near-identical by chance).
    b_shingles = [shingles(t) for t in b_texts]
    filler = []
    for text in generate_notes(60, seed=202):
        s = shingles(text)
        if max(len(s & other) / len(s | other) for other in b_shingles) < 0.6:
            filler.append(text)
    assert len(filler) >= 20

    test = [{"id": f"te-{i:04d}", "text": t} for i, t in enumerate(filler[:10])]
    test += [
        {"id": "te-exact-1", "text": SHORT_EVOLUTION},
        {"id": "te-near-evol", "text": NEAR_EVOLUTION},
        {"id": "te-sib-long", "text": LONG_EVOLUTION_OTHER_PATIENT},
        {"text": EXACT_SHORT_CONSULT},  # no id: labelled by its line (14)
        {"id": "te-near-alta", "text": NEAR_DISCHARGE},
        {"id": "te-adm-pna", "text": ADMISSION_PYELONEPHRITIS},
        {"id": "te-near-comp", "text": NEAR_COMPOSED},
    ]
    test += [{"id": f"te-{i:04d}", "text": t} for i, t in enumerate(filler[10:20], start=10)]
    a_file = write_jsonl(root / "a_set" / "test.jsonl", test)
    return {"a": a_file, "b": b_dir, "a_texts": [r["text"] for r in test], "b_texts": b_texts}


EXPECTED_EXAMPLES = [
    ("test.jsonl:te-exact-1", "train.jsonl:tr-short-evol", "exact"),
    ("test.jsonl:te-near-evol", "train.jsonl:tr-long-evol", "near"),
    ("test.jsonl:14", "validation.jsonl:4", "exact"),
    ("test.jsonl:te-near-alta", "train.jsonl:tr-long-alta", "near"),
    ("test.jsonl:te-near-comp", "validation.jsonl:3", "near"),
]


@pytest.fixture()
def sets(tmp_path: Path) -> dict:
    return planted_sets(tmp_path)


def assert_no_text(serialized: str, texts: list[str]) -> None:
    """No planted note, and no run of 8 consecutive words of one, appears in ``serialized``."""
    haystack = normalise_for_dedup(serialized)
    for text in texts:
        words = normalise_for_dedup(text).split(" ")
        assert normalise_for_dedup(text) not in haystack
        for start in range(max(1, len(words) - 7)):
            run = " ".join(words[start : start + 8])
            assert run not in haystack, f"an 8-word run of a note leaked: starts at word {start}"


# --- The planted notes are what they claim to be ---------------------------------------------------


def test_planted_pairs_have_the_intended_similarity() -> None:
    for copy, source in [(NEAR_EVOLUTION, LONG_EVOLUTION), (NEAR_DISCHARGE, LONG_DISCHARGE), (NEAR_COMPOSED, LONG_COMPOSED)]:
        assert normalise_for_dedup(copy) != normalise_for_dedup(source)
        assert len(normalise_for_dedup(source).split()) >= 200
        assert true_jaccard(copy, source) >= 0.9
    assert true_jaccard(LONG_EVOLUTION_OTHER_PATIENT, LONG_EVOLUTION) < 0.5
    assert true_jaccard(ADMISSION_PYELONEPHRITIS, ADMISSION_HEART_FAILURE) < 0.5
    assert normalise_for_dedup(EXACT_SHORT_CONSULT) == normalise_for_dedup(SHORT_CONSULT)


# --- neardup ---------------------------------------------------------------------------------------


def test_normalise_and_shingles() -> None:
    assert normalise_for_dedup("  Paciente\tEVOLUI\n\n bem ") == "paciente evolui bem"
    assert normalise_for_dedup("Febre e\u0301 alta") == normalise_for_dedup("febre É ALTA")  # NFD vs NFC
    assert shingles("Dor   torácica") == {"dor torácica".encode()}
    assert shingles("") == {b""}
    assert shingles("a b c d e f") == {b"a b c d e", b"b c d e f"}
    assert shingles("A B c d e f", size=5) == shingles("a b C D E F")
    with pytest.raises(ValueError):
        shingles("a b", size=0)


def test_lsh_banding_finds_pairs_at_the_threshold() -> None:
    assert lsh_params(0.85, 128) == (16, 8)
    for threshold in (0.5, 0.7, 0.85, 0.95, 1.0):
        bands, rows = lsh_params(threshold, 128)
        assert bands * rows <= 128 and bands >= 2
        assert 1 - (1 - threshold**rows) ** bands >= 0.99


def test_index_add_query_add_if_new() -> None:
    index = NearDuplicateIndex()
    index.add("evol", LONG_EVOLUTION)
    index.add("alta", LONG_DISCHARGE)
    assert len(index) == 2 and "evol" in index
    assert index.query(NEAR_EVOLUTION) == ["evol"]
    assert index.query(LONG_EVOLUTION.lower()) == ["evol"]
    assert index.query(LONG_EVOLUTION_OTHER_PATIENT) == []
    assert index.query(ADMISSION_HEART_FAILURE) == []
    assert index.add_if_new("evol-d4", NEAR_EVOLUTION) == "evol"
    assert "evol-d4" not in index
    assert index.add_if_new("adm", ADMISSION_HEART_FAILURE) is None
    assert "adm" in index and index.query(ADMISSION_HEART_FAILURE) == ["adm"]
    with pytest.raises(ValueError, match="already"):
        index.add("adm", SHORT_CONSULT)
    with pytest.raises(ValueError, match="already"):
        index.add_if_new("adm", SHORT_CONSULT)
    # Deterministic: a fresh index gives the same signatures and estimates.
    other = NearDuplicateIndex()
    estimate = index.jaccard(index.minhash(NEAR_EVOLUTION), index.minhash(LONG_EVOLUTION))
    assert estimate == other.jaccard(other.minhash(NEAR_EVOLUTION), other.minhash(LONG_EVOLUTION))
    assert 0.85 <= estimate < 1.0


def test_index_grows_past_its_first_block_and_dedups_generated_notes() -> None:
    index = NearDuplicateIndex()
    notes = list(generate_notes(1500, seed=5))
    first_seen = {}
    for i, text in enumerate(notes):
        found = index.add_if_new(str(i), text)
        key = normalise_for_dedup(text)
        if key in first_seen:
            assert found is not None  # an exact repeat is always a near duplicate
        first_seen.setdefault(key, i)
    assert 0 < len(index) <= len(first_seen)


# --- contamination_report --------------------------------------------------------------------------


def test_report_counts_planted_copies(sets: dict) -> None:
    report = contamination_report(sets["a"], sets["b"], progress=False)
    counts = report["counts"]
    assert counts["a_records"] == len(sets["a_texts"]) == 27
    assert counts["b_records"] == len(sets["b_texts"]) == 48
    assert counts["a_exact_in_b"] == 2
    assert counts["a_near_in_b"] == 3
    assert counts["a_contaminated"] == 5
    assert counts["a_contaminated_fraction"] == round(5 / 27, 6)
    assert counts["b_records_matched"] == 5
    assert [(e["a"], e["b"], e["kind"]) for e in report["examples"]] == EXPECTED_EXAMPLES
    for example in report["examples"]:
        if example["kind"] == "exact":
            assert example["jaccard"] == 1.0
        else:
            assert 0.85 <= example["jaccard"] < 1.0
    assert report["examples_left_out"] == 0
    # Settings and input hashes.
    settings = report["settings"]
    assert (settings["threshold"], settings["num_perm"], settings["shingle_size"]) == (0.85, 128, 5)
    assert (settings["lsh_bands"], settings["lsh_rows"]) == (16, 8)
    import hashlib

    assert report["a"]["files"] == [
        {"file": "test.jsonl", "sha256": hashlib.sha256(sets["a"].read_bytes()).hexdigest(), "records": 27, "exact": 2, "near": 3}
    ]
    assert [(f["file"], f["records"]) for f in report["b"]["files"]] == [("train.jsonl", 44), ("validation.jsonl", 4)]
    for entry in report["b"]["files"]:
        assert entry["sha256"] == hashlib.sha256((sets["b"] / entry["file"]).read_bytes()).hexdigest()
    assert report["b"]["distinct_texts"] == len({normalise_for_dedup(t) for t in sets["b_texts"]})
    # Ids only: no note text, not even an 8-word run, in the report or the summary.
    assert_no_text(json.dumps(report, ensure_ascii=False), sets["a_texts"] + sets["b_texts"])
    assert_no_text("\n".join(format_summary(report)), sets["a_texts"] + sets["b_texts"])


def test_threshold_and_example_limit(sets: dict) -> None:
    strict = contamination_report(sets["a"], sets["b"], threshold=1.0, max_examples=1, progress=False)
    assert strict["counts"]["a_exact_in_b"] == 2
    assert strict["counts"]["a_near_in_b"] == 0  # 1-3 changed words are below an estimated 1.0
    assert [e["a"] for e in strict["examples"]] == ["test.jsonl:te-exact-1"]
    assert strict["examples_left_out"] == 1


def test_folder_and_single_file_forms(sets: dict, tmp_path: Path) -> None:
    # B as one file of the folder: only train.jsonl's sources count.
    only_train = contamination_report(sets["a"], sets["b"] / "train.jsonl", progress=False)
    assert (only_train["counts"]["a_exact_in_b"], only_train["counts"]["a_near_in_b"]) == (1, 2)
    # A as a folder: files sorted, records tagged with their file, per-file counts.
    a_dir = sets["a"].parent
    write_jsonl(
        a_dir / "likert_heldout.jsonl", [{"id": "lk-1", "text": LONG_DISCHARGE}, {"id": "lk-2", "text": SHORT_CONSULT[:60]}]
    )
    (a_dir / ".partial.jsonl").write_text("not json\n", encoding="utf-8")  # hidden: ignored
    report = contamination_report(a_dir, sets["b"], progress=False)
    assert [f["file"] for f in report["a"]["files"]] == ["likert_heldout.jsonl", "test.jsonl"]
    assert [(f["records"], f["exact"], f["near"]) for f in report["a"]["files"]] == [(2, 1, 0), (27, 2, 3)]
    assert report["examples"][0] == {
        "a": "likert_heldout.jsonl:lk-1",
        "b": "train.jsonl:tr-long-alta",
        "kind": "exact",
        "jaccard": 1.0,
    }
    assert report["counts"]["a_records"] == 29 and report["counts"]["a_contaminated"] == 6


# --- The command -----------------------------------------------------------------------------------


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(contamination_command)
    return app


def test_command_summary_report_and_fail_on_overlap(sets: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    output = tmp_path / "reports" / "contamination.json"
    result = runner.invoke(cli_app(), [str(sets["a"]), str(sets["b"]), "--output", str(output)])
    assert result.exit_code == 0, result.output
    summary = result.stdout
    assert re.search(r"exact copies of B in A: +2 \(7\.41%\)", summary)
    assert re.search(r"near duplicates \(J >= 0\.85\): +3 \(11\.11%\)", summary)
    assert "5 of 27 (18.52%)" in summary
    for a_label, b_label, kind in EXPECTED_EXAMPLES:
        assert re.search(rf"{kind} +{re.escape(a_label)} -> {re.escape(b_label)}", summary)
    assert f"report written to {output}" in summary
    written = json.loads(output.read_text(encoding="utf-8"))
    assert written["counts"]["a_contaminated"] == 5
    everything = summary + result.output + output.read_text(encoding="utf-8")
    assert_no_text(everything, sets["a_texts"] + sets["b_texts"])

    failing = runner.invoke(cli_app(), [str(sets["a"]), str(sets["b"]), "--fail-on-overlap", "--max-examples", "2"])
    assert failing.exit_code == 2
    assert "5 records of A overlap B" in failing.stderr
    assert "... and 3 more" in failing.stdout

    clean = write_jsonl(
        tmp_path / "clean.jsonl",
        [{"id": "c1", "text": ADMISSION_PYELONEPHRITIS}, {"id": "c2", "text": LONG_EVOLUTION_OTHER_PATIENT}],
    )
    passing = runner.invoke(cli_app(), [str(clean), str(sets["b"]), "--fail-on-overlap"])
    assert passing.exit_code == 0, passing.output
    assert "contaminated A records:        0 of 2 (0.00%)" in passing.stdout


# --- Bad input -------------------------------------------------------------------------------------

SECRET = "Paciente relata dor precordial irradiada para o braço esquerdo"


def bad_inputs(root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path to pass as one side, text the message must contain besides the path)."""
    good = {"id": "ok", "text": SHORT_EVOLUTION}
    empty_dir = root / "empty"
    empty_dir.mkdir(parents=True)
    (empty_dir / "notes.json").write_text("{}\n", encoding="utf-8")
    not_json = root / "not_json.jsonl"
    not_json.write_text(json.dumps(good) + "\n" + json.dumps(good) + '\n{"text": "' + SECRET + '", \n', encoding="utf-8")
    no_text = write_jsonl(root / "no_text.jsonl", [good, {"id": "n2", "note": SECRET}])
    text_not_string = write_jsonl(root / "text_not_string.jsonl", [{"text": [SECRET]}])
    not_object = root / "not_object.jsonl"
    not_object.write_text(json.dumps(good) + "\n\n" + json.dumps([SECRET]) + "\n", encoding="utf-8")
    not_utf8 = root / "not_utf8.jsonl"
    not_utf8.write_bytes(
        json.dumps(good).encode() + b"\n" + json.dumps({"text": SECRET}, ensure_ascii=False).encode("cp1252") + b"\n"
    )
    return {
        "missing": (root / "nowhere" / "test.jsonl", "no such file or folder"),
        "folder without jsonl": (empty_dir, "holds no .jsonl files"),
        "not a jsonl file": (empty_dir / "notes.json", "not a .jsonl file"),
        "not json": (not_json, "line 3: not valid JSON"),
        "no text": (no_text, 'line 2: no "text" field'),
        "text not a string": (text_not_string, 'line 1: the "text" field is a JSON array, not a string'),
        "not an object": (not_object, "line 3: a JSON array, not an object"),
        "not utf-8": (not_utf8, "line 2: not UTF-8"),
    }


@pytest.mark.parametrize("side", ["a", "b"])
def test_bad_input_names_file_and_line(tmp_path: Path, side: str) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [{"id": "ok", "text": SHORT_EVOLUTION}])
    runner = CliRunner()
    for name, (bad, expected) in bad_inputs(tmp_path / side).items():
        args = (bad, good) if side == "a" else (good, bad)
        with pytest.raises(CorpusError) as caught:
            contamination_report(*args, progress=False)
        message = str(caught.value)
        assert str(bad) in message and expected in message, name
        assert "Fix:" in message, name
        assert SECRET.lower() not in message.lower(), name
        result = runner.invoke(cli_app(), [str(args[0]), str(args[1])])
        assert result.exit_code == 1, name
        assert str(bad) in result.stderr and expected in result.stderr, name
        assert SECRET.lower() not in result.output.lower(), name


# --- A recipe's evaluation sets against all its training datasets ---------------------------------


def patient_in(plan, split: str, prefix: str) -> str:
    """The first patient id ``<prefix><n>`` that ``plan`` puts in ``split``."""
    return next(f"{prefix}{n}" for n in range(10_000) if plan.split_of(f"patient:{prefix}{n}") == split)


def prepare_two_corpora(root: Path) -> dict:
    """corpus_a and corpus_b prepared under ``root``, sharing three notes: one in A's Likert set, one
    (case-folded) in A's test split and one copy-forward in A's validation split, all in B's train."""
    from medfactory.corpus.pipeline import PrepareOptions, prepare_corpus
    from medfactory.corpus.splits import SplitPlan
    from medfactory.plugins.notes import GENERIC_MAPPING

    plan = SplitPlan(0.2, 0.2, seed=11)
    kept: list[set[bytes]] = [shingles(t) for t in (LONG_DISCHARGE, SHORT_EVOLUTION, LONG_EVOLUTION)]
    filler = []
    for text in generate_notes(120, seed=404):  # far from each other and from the planted notes
        s = shingles(text)
        if max(len(s & other) / len(s | other) for other in kept) < 0.5:
            kept.append(s)
            filler.append(text)
    assert len(filler) >= 30
    a = [{"id": f"a-{i}", "patient_id": f"pa{i}", "text": t} for i, t in enumerate(filler[:15])]
    a += [
        {"id": "a-alta", "patient_id": patient_in(plan, "test", "pat-a-alta-"), "text": LONG_DISCHARGE},  # -> A's Likert set
        {"id": "a-evol-curta", "patient_id": patient_in(plan, "test", "pat-a-curta-"), "text": SHORT_EVOLUTION.upper()},  # stays in test
        {"id": "a-evol-d4", "patient_id": patient_in(plan, "validation", "pat-a-d4-"), "text": NEAR_EVOLUTION},
    ]
    b = [{"id": f"b-{i}", "patient_id": f"pb{i}", "text": t} for i, t in enumerate(filler[15:30])]
    b += [
        {"id": "b-alta", "patient_id": patient_in(plan, "train", "pat-b-1-"), "text": LONG_DISCHARGE},
        {"id": "b-evol-curta", "patient_id": patient_in(plan, "train", "pat-b-2-"), "text": SHORT_EVOLUTION},
        {"id": "b-evol-d3", "patient_id": patient_in(plan, "train", "pat-b-3-"), "text": LONG_EVOLUTION},
    ]
    for name, rows in (("corpus_a", a), ("corpus_b", b)):
        options = PrepareOptions(name=name, mapping=GENERIC_MAPPING, split=plan, likert_notes=20, likert_min_characters=1000)
        prepare_corpus([write_jsonl(root / "sources" / f"{name}.jsonl", rows)], options, root)
    likert = [json.loads(line)["id"] for line in (root / "data" / "corpus_a" / "likert_heldout.jsonl").read_text().splitlines()]
    assert likert == ["a-alta"]
    return {"texts": [r["text"] for r in a + b]}


def test_recipe_overlap_finds_notes_shared_across_corpora(tmp_path: Path) -> None:
    from medfactory.corpus.recipe_overlap import format_recipe_summary, recipe_overlap

    planted = prepare_two_corpora(tmp_path)
    report = recipe_overlap({"dataset": "corpus_a, corpus_b", "dataset_dir": "."}, tmp_path / "dataset_info.json", tmp_path)
    assert report["overlap"] is True
    sets = {entry["dataset"]: entry for entry in report["evaluation"]}
    assert list(sets) == [f"{c}_{s}" for c in ("corpus_a", "corpus_b") for s in ("validation", "test", "likert")]
    assert (sets["corpus_a_likert"]["role"], sets["corpus_a_likert"]["of"]) == ("likert", "corpus_a")
    found = {name: (e["exact"], e["near"], e["contaminated_by"]) for name, e in sets.items() if e["contaminated"]}
    assert found == {
        "corpus_a_validation": (0, 1, {"corpus_b": 1}),
        "corpus_a_test": (1, 0, {"corpus_b": 1}),  # differs only in case: the same note, as prepare defines it
        "corpus_a_likert": (1, 0, {"corpus_b": 1}),
    }
    pairs = {(e["evaluation"], e["training"], e["kind"]) for e in report["examples"]}
    assert pairs == {
        ("corpus_a_validation:a-evol-d4", "corpus_b:b-evol-d3", "near"),
        ("corpus_a_test:a-evol-curta", "corpus_b:b-evol-curta", "exact"),
        ("corpus_a_likert:a-alta", "corpus_b:b-alta", "exact"),
    }
    assert report["counts"]["contaminated"] == 3 and report["unavailable"] == []
    assert [t["dataset"] for t in report["training"]] == ["corpus_a", "corpus_b"]
    summary = "\n".join(format_recipe_summary(report))
    assert "corpus_a_likert (likert of corpus_a): 1 of 1 records in training (exact 1, near 0, same prompt 0); from corpus_b 1" in summary
    assert_no_text(json.dumps(report, ensure_ascii=False) + summary, planted["texts"])
    # One corpus alone: its evaluation sets are clean against its own training split.
    alone = recipe_overlap({"dataset": "corpus_a"}, tmp_path / "dataset_info.json", tmp_path)
    assert alone["overlap"] is False and [e["dataset"] for e in alone["evaluation"]] == ["corpus_a_validation", "corpus_a_test", "corpus_a_likert"]
    assert alone["not_patient_disjoint"] == []
    # A training corpus split by admission (no patient column) is named with its manifest's caveat.
    from medfactory.corpus.pipeline import PrepareOptions, prepare_corpus
    from medfactory.plugins.notes import GENERIC_MAPPING

    rows = [{"id": f"c-{i}", "admission_id": f"adm{i}", "text": t} for i, t in enumerate(generate_notes(10, seed=505))]
    prepare_corpus([write_jsonl(tmp_path / "sources" / "c.jsonl", rows)], PrepareOptions(name="corpus_c", mapping=GENERIC_MAPPING, likert_notes=0), tmp_path)
    by_admission = recipe_overlap({"dataset": "corpus_c"}, tmp_path / "dataset_info.json", tmp_path)
    (flagged,) = by_admission["not_patient_disjoint"]
    assert flagged["dataset"] == "corpus_c" and flagged["caveats"][0].startswith("splits are by admission; the same patient can be in train and test")
    assert "warning: corpus_c: splits are by admission" in "\n".join(format_recipe_summary(by_admission))


def test_contamination_recipe_command_exits_non_zero_on_overlap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare_two_corpora(tmp_path)
    (tmp_path / "recipes").mkdir()
    both = tmp_path / "recipes" / "both.yaml"
    both.write_text("stage: pt\ndataset: corpus_a,corpus_b\ndataset_dir: .\n", encoding="utf-8")
    alone = tmp_path / "recipes" / "alone.yaml"
    alone.write_text("stage: pt\ndataset: corpus_b\neval_dataset: corpus_b_validation,not_prepared\ndataset_dir: .\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    failing = runner.invoke(cli_app(), ["--recipe", str(both), "--output", "overlap.json"])
    assert failing.exit_code == 2, failing.output
    assert "corpus_a_likert:a-alta -> corpus_b:b-alta" in failing.stdout
    assert "3 evaluation records are in the recipe's training data" in failing.stderr
    assert json.loads((tmp_path / "overlap.json").read_text())["counts"]["contaminated"] == 3
    # No overlap, but a dataset that is not registered: named, with the fix, exit 1.
    unchecked = runner.invoke(cli_app(), ["--recipe", str(alone)])
    assert unchecked.exit_code == 1, unchecked.output
    assert "not checked: not_prepared (eval_dataset): not registered" in unchecked.stdout
    assert "not_prepared could not be checked" in unchecked.stderr
    assert runner.invoke(cli_app(), ["--recipe", str(both), "a.jsonl"]).exit_code == 1
    assert "or --recipe" in runner.invoke(cli_app(), []).stderr


def test_recipes_check_prepared_fails_a_recipe_whose_eval_sets_overlap_its_training_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The path a user runs on the VM before training: the overlap is one more problem of the recipe, counts only."""
    from medfactory.cli import app

    planted = prepare_two_corpora(tmp_path)
    recipe = tmp_path / "recipes" / "both.yaml"
    recipe.parent.mkdir()
    real = (Path(__file__).resolve().parents[1] / "recipes" / "clinical_br_mistral.yaml").read_text(encoding="utf-8")
    lines = [line for line in real.splitlines() if not line.startswith(("dataset:", "eval_dataset:", "dataset_dir:"))]
    recipe.write_text("\n".join([*lines, "dataset: corpus_a,corpus_b", "eval_dataset: corpus_a_validation", "dataset_dir: ."]) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["recipes", "check", "--prepared", str(recipe)])
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.stderr.splitlines() if "overlap the training data" in line]
    assert line.startswith(f"{recipe}: `eval_dataset`: evaluation sets overlap the training data (")
    assert "corpus_a_likert (likert of corpus_a): 1 of 1 records in training" in line
    assert f"Fix: run `medfactory contamination --recipe {recipe}` for the ids" in line
    assert_no_text(result.output, planted["texts"])
    clean = CliRunner().invoke(app, ["recipes", "check", str(recipe)])  # without --prepared the data is not read
    assert "overlap the training data" not in clean.output


def test_recipe_overlap_reads_instruction_datasets_and_flags_same_prompt(tmp_path: Path) -> None:
    from medfactory.corpus.recipe_overlap import format_recipe_summary, recipe_overlap

    question = "Paciente de 70 anos com dispneia e edema de membros inferiores. Qual o diagnóstico mais provável?"
    other = "Gestante de 32 semanas com cefaleia e PA elevada. Qual a conduta inicial recomendada?"
    (tmp_path / "data").mkdir()
    train = [{"instruction": "Responda.", "input": question, "output": "Insuficiência cardíaca."}]
    (tmp_path / "data" / "qa_train.json").write_text(json.dumps(train), encoding="utf-8")
    test = [
        {"instruction": "Responda.", "input": question, "output": "ICC descompensada."},  # the training question, another answer
        {"instruction": "Responda.", "input": other, "output": "Sulfato de magnésio."},
    ]
    (tmp_path / "data" / "qa_test.json").write_text(json.dumps(test), encoding="utf-8")
    turns = [("system", "Você é um médico."), ("user", other), ("assistant", "Sulfato de magnésio.")]
    chat = [{"messages": [{"role": role, "content": content} for role, content in turns]}]
    write_jsonl(tmp_path / "data" / "chat_eval.jsonl", chat)
    sharegpt_tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant", "system_tag": "system"}
    registry = {
        "qa_train": {"file_name": "data/qa_train.json"},  # alpaca defaults: instruction / input / output
        "qa_test": {"file_name": "data/qa_test.json"},
        "chat_eval": {"file_name": "data/chat_eval.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": sharegpt_tags},
        "hub_eval": {"hf_hub_url": "someone/eval"},
    }
    report = recipe_overlap({"dataset": "qa_train", "eval_dataset": "chat_eval,hub_eval"}, registry, tmp_path)
    sets = {entry["dataset"]: entry for entry in report["evaluation"]}
    assert list(sets) == ["qa_test", "chat_eval"]  # qa_test: the "_test" sibling of qa_train (stem qa)
    assert (sets["qa_test"]["same_prompt"], sets["qa_test"]["contaminated"], sets["qa_test"]["records"]) == (1, 1, 2)
    assert sets["chat_eval"]["contaminated"] == 0
    assert report["examples"] == [{"evaluation": "qa_test:#1", "training": "qa_train:#1", "kind": "same_prompt", "jaccard": 1.0}]
    assert [(u["dataset"], u["role"]) for u in report["unavailable"]] == [("hub_eval", "eval_dataset")]
    # A prediction-only recipe trains nothing: nothing to check, and it says so.
    predict = recipe_overlap({"eval_dataset": "qa_test"}, registry, tmp_path)
    assert (predict["overlap"], predict["evaluation"], predict["unavailable"]) == (False, [], [])
    assert "prediction only" in format_recipe_summary(predict)[0]
