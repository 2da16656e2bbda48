"""Synthetic Brazilian-Portuguese clinical notes for the offline demo and the tests.

Every note is generated from the templates below with a seeded random generator: no real
patient, no real text. The style follows Brazilian hospital notes (admission, evolution and
discharge notes, the usual abbreviations, de-identification placeholders in brackets).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

SEXES = [("masculino", "o", "Paciente"), ("feminino", "a", "Paciente")]
COMORBIDITIES = ["HAS", "DM2", "DPOC", "IRC dialítica", "ICC", "dislipidemia", "hipotireoidismo", "FA crônica", "obesidade"]
COMPLAINTS = [
    ("dor torácica em aperto", "IAM sem supra de ST", "AAS 100 mg/dia, clopidogrel 75 mg/dia e enoxaparina"),
    ("dispneia aos mínimos esforços", "ICC descompensada", "furosemida 40 mg EV 12/12h"),
    ("febre e tosse produtiva", "pneumonia adquirida na comunidade", "ceftriaxona 1 g EV 12/12h e azitromicina"),
    ("dor abdominal em fossa ilíaca direita", "apendicite aguda", "jejum, analgesia e avaliação da cirurgia geral"),
    ("disúria e febre", "pielonefrite aguda", "ceftriaxona 1 g EV 24/24h"),
    ("hemiparesia à direita há 2 horas", "AVC isquêmico", "protocolo de trombólise e TC de crânio"),
    ("cefaleia intensa súbita", "hemorragia subaracnóidea", "TC de crânio e avaliação da neurocirurgia"),
    ("poliúria e polidipsia", "cetoacidose diabética", "hidratação vigorosa e insulina regular EV"),
    ("edema de membros inferiores", "síndrome nefrótica", "restrição hídrica e furosemida"),
    ("hematêmese", "hemorragia digestiva alta", "omeprazol 80 mg EV e EDA de urgência"),
]
EXAM_LINES = [
    "BEG, LOTE, corado, hidratado, anictérico, acianótico, afebril.",
    "REG, sonolento, descorado +/4+, desidratado +/4+, afebril.",
    "MEG, torporoso, descorado ++/4+, taquipneico, febril ao toque.",
]
CARDIO = ["RCR 2T BNF s/ sopros.", "RCI 2T, sopro sistólico +/6+ em foco mitral.", "RCR 2T BNF, taquicárdico."]
RESP = ["MV+ bilateralmente s/ RA.", "MV+ com crepitações em base direita.", "MV diminuído em base esquerda, sibilos esparsos."]
ABDOMEN = ["Abdome plano, flácido, indolor à palpação, RHA+.", "Abdome globoso, doloroso em FID, Blumberg+.", "Abdome flácido, sem VMG."]
EVOLUTION = [
    "Evolui estável hemodinamicamente, sem queixas.",
    "Refere melhora parcial da dor, aceitando bem a dieta.",
    "Mantém febre vespertina, aguarda resultado de hemoculturas.",
    "Apresentou episódio de vômito no período noturno, sem outras intercorrências.",
    "Diurese presente, evacuações ausentes há 2 dias.",
]
PLANS = [
    "Mantenho conduta e reavalio em 24 horas.",
    "Solicito hemograma, PCR, ureia, creatinina e eletrólitos.",
    "Oriento família sobre o quadro e prognóstico.",
    "Programo alta hospitalar para amanhã se mantiver estabilidade.",
    "Discuto o caso com a equipe de plantão.",
]


def _decimal_comma(value: float) -> str:
    """Brazilian notation: 38,3 not 38.3."""
    return f"{value:.1f}".replace(".", ",")


def _vitals(rng: random.Random) -> str:
    return (
        f"PA {rng.randint(90, 170)}x{rng.randint(55, 100)} mmHg, FC {rng.randint(58, 128)} bpm, "
        f"FR {rng.randint(12, 28)} irpm, SpO2 {rng.randint(88, 99)}% em ar ambiente, Tax {_decimal_comma(rng.uniform(35.8, 39.2))} °C."
    )


def _admission(rng: random.Random) -> str:
    sex, article, word = rng.choice(SEXES)
    complaint, diagnosis, treatment = rng.choice(COMPLAINTS)
    comorbid = ", ".join(rng.sample(COMORBIDITIES, rng.randint(1, 3)))
    return "\n".join(
        [
            "ADMISSÃO - CLÍNICA MÉDICA",
            f"{word} [NOME], {rng.randint(18, 92)} anos, sexo {sex}, natural de [CIDADE], "
            f"admitid{article} em [DATA] com queixa de {complaint} há {rng.randint(1, 10)} dias.",
            f"Antecedentes: {comorbid}. Nega alergias medicamentosas.",
            f"Ao exame: {rng.choice(EXAM_LINES)} {_vitals(rng)}",
            f"ACV: {rng.choice(CARDIO)} AR: {rng.choice(RESP)} ABD: {rng.choice(ABDOMEN)}",
            f"HD: {diagnosis}.",
            f"Conduta: {treatment}. {rng.choice(PLANS)}",
        ]
    )


def _evolution(rng: random.Random) -> str:
    _, diagnosis, treatment = rng.choice(COMPLAINTS)
    return "\n".join(
        [
            f"EVOLUÇÃO MÉDICA - D{rng.randint(1, 15)} de internação",
            f"# {diagnosis.capitalize()}",
            f"S: {rng.choice(EVOLUTION)}",
            f"O: {rng.choice(EXAM_LINES)} {_vitals(rng)} {rng.choice(RESP)}",
            f"A: {diagnosis} em tratamento com {treatment}.",
            f"P: {rng.choice(PLANS)} {rng.choice(PLANS)}",
        ]
    )


def _discharge(rng: random.Random) -> str:
    sex, article, word = rng.choice(SEXES)
    _, diagnosis, treatment = rng.choice(COMPLAINTS)
    return "\n".join(
        [
            "RESUMO DE ALTA",
            f"{word} [NOME], sexo {sex}, internad{article} por {diagnosis}, tratad{article} com {treatment}.",
            f"Evoluiu com melhora clínica e laboratorial. {rng.choice(EVOLUTION)}",
            f"Alta em [DATA] em {rng.choice(['bom', 'regular'])} estado geral, com retorno ao ambulatório em "
            f"{rng.choice([7, 15, 30])} dias.",
            f"Orientações: {rng.choice(PLANS)}",
        ]
    )


NOTE_KINDS = (_admission, _evolution, _discharge)


def generate_notes(count: int, seed: int = 13) -> Iterator[str]:
    """``count`` synthetic notes, the same for the same seed."""
    rng = random.Random(seed)
    for _ in range(count):
        yield rng.choice(NOTE_KINDS)(rng)
