"""SemClinBr clinical notes (HAILab-PUCPR): the 2,100,546 notes of the Clinical-BR paper.

The notes come from Brazilian hospitals as tabular exports (CSV/TSV, or JSONL/Parquet after
conversion), one note per row. The column names below are the documented defaults; they could
not be checked against the credentialed release from here, so each one can be overridden
(``--text-column``, ``--patient-column``, ...) and a file whose columns do not fit fails with the
list of the columns it actually has.

| field | default columns, first present wins |
|---|---|
| text | ``text``, ``texto``, ``nota``, ``note_text`` |
| note id | ``id``, ``note_id``, ``id_nota`` |
| patient | ``patient_id``, ``id_paciente``, ``paciente_id`` |
| admission | ``admission_id``, ``id_atendimento``, ``id_internacao`` |
| date | ``date``, ``data``, ``note_date`` |

    medfactory prepare semclinbr --source /data/semclinbr/notes.csv
"""

from __future__ import annotations

from medfactory.corpus.readers import ColumnMapping
from medfactory.plugins import CorpusPlugin
from medfactory.plugins.notes import make_prepare_command

SEMCLINBR_MAPPING = ColumnMapping(
    text=("text", "texto", "nota", "note_text"),
    note_id=("id", "note_id", "id_nota"),
    patient_id=("patient_id", "id_paciente", "paciente_id"),
    admission_id=("admission_id", "id_atendimento", "id_internacao"),
    date=("date", "data", "note_date"),
)

PLUGIN = CorpusPlugin(
    name="semclinbr",
    summary="SemClinBr clinical notes (CSV/TSV/JSONL/Parquet export; documented default columns)",
    command=make_prepare_command("semclinbr", SEMCLINBR_MAPPING, dataset_name="semclinbr"),
)
