"""BRATECA (Brazilian Tertiary Care Dataset, PhysioNet, credentialed): admission notes of 10 hospitals.

BRATECA ships as CSV tables; the Clinical-BR paper used its 73,040 admission notes. The column
names below are the documented defaults for its notes table; they could not be checked against
the credentialed release from here, so each one can be overridden and a table whose columns do
not fit fails with the list of the columns it actually has. Notes are split by patient, so no
patient of an evaluation split is trained on, only when the table has a patient column. Without
one they are split by admission (or by note, without an admission column either): the same
patient can then be in train and test, and the manifest (``patient_disjoint: false``,
``split_caveats``) and the prepare summary say so.

| field | default columns, first present wins |
|---|---|
| text | ``texto``, ``text``, ``evolucao``, ``nota`` |
| note id | ``id``, ``id_nota``, ``note_id`` |
| patient | ``id_paciente``, ``patient_id``, ``paciente`` |
| admission | ``id_atendimento``, ``admission_id``, ``atendimento`` |
| date | ``data``, ``dt_evolucao``, ``date`` |

    medfactory prepare brateca --source /data/brateca/notes.csv
"""

from __future__ import annotations

from medfactory.corpus.readers import ColumnMapping
from medfactory.plugins import CorpusPlugin
from medfactory.plugins.notes import make_prepare_command

BRATECA_MAPPING = ColumnMapping(
    text=("texto", "text", "evolucao", "nota"),
    note_id=("id", "id_nota", "note_id"),
    patient_id=("id_paciente", "patient_id", "paciente"),
    admission_id=("id_atendimento", "admission_id", "atendimento"),
    date=("data", "dt_evolucao", "date"),
)

PLUGIN = CorpusPlugin(
    name="brateca",
    summary="BRATECA admission notes (PhysioNet CSV tables; documented default columns)",
    command=make_prepare_command("brateca", BRATECA_MAPPING, dataset_name="brateca"),
)
