"""Property-based (issue 14): whatever bytes a user's export holds, ``prepare_corpus`` gives a result
or a :class:`CorpusError` (never another exception), the message never holds note text, and the
output is never half-written.

Inputs are random bytes, and valid CSV / TSV / JSONL / .txt / Parquet files holding a sentinel note
that are truncated, re-encoded (UTF-8, UTF-8 with BOM, cp1252, UTF-16 with BOM, Latin-1), stripped
of their header or hit by a few byte flips.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from medfactory.base.errors import CorpusError
from medfactory.corpus.pipeline import PrepareOptions, prepare_corpus
from medfactory.corpus.splits import SplitPlan
from medfactory.plugins.notes import GENERIC_MAPPING

SENTINEL = "Paciente SENTINELA-XYZ, CPF 123.456.789-09"
# Latin-1 characters only, so that every re-encoding can write every note.
ROWS = [
    {"id": "nota-0001", "id_paciente": "pac-0001", "data": "2021-03-04", "texto": f"{SENTINEL}, internada por dispneia; evolui bem."},
    {"id": "nota-0002", "id_paciente": "pac-0002", "data": "2021-03-05", "texto": "Evolução: lúcida, orientada, dor em hipocôndrio.\nSegunda linha, PA 12x8."},
    {"id": "nota-0003", "id_paciente": "pac-0003", "data": "2021-03-06", "texto": 'Nota com "aspas" e vírgulas, sem queixas; aceita dieta oral.'},
]
CELLS = [value for row in ROWS for value in row.values()]
ENCODINGS = ["utf-8", "utf-8-sig", "cp1252", "utf-16", "latin-1"]
FORMATS = [".csv", ".tsv", ".jsonl", ".txt", ".parquet"]
WINDOW = 13  # no run of this many characters of a cell may appear in a message


def valid_text(suffix: str) -> str:
    if suffix == ".txt":
        return ROWS[0]["texto"]
    if suffix == ".jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in ROWS)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(ROWS[0]), delimiter="\t" if suffix == ".tsv" else ",", lineterminator="\n")
    writer.writeheader()
    writer.writerows(ROWS)
    return buffer.getvalue()


def valid_parquet() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(ROWS), buffer)
    return buffer.getvalue()


PARQUET = valid_parquet()


@st.composite
def exports(draw: st.DrawFn) -> tuple[str, bytes, bool]:
    """(suffix, file bytes, whether the bytes are random: then no cell is known)."""
    suffix = draw(st.sampled_from(FORMATS))
    kind = draw(st.sampled_from(["random", "truncated", "reencoded", "headerless", "flipped"]))
    if kind == "random":
        return suffix, draw(st.binary(max_size=400)), True
    valid = PARQUET if suffix == ".parquet" else valid_text(suffix).encode("utf-8")
    if kind == "reencoded" and suffix != ".parquet":
        return suffix, valid_text(suffix).encode(draw(st.sampled_from(ENCODINGS))), False
    if kind == "headerless" and suffix in (".csv", ".tsv"):
        return suffix, valid.split(b"\n", 1)[1], False
    if kind == "flipped":
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return suffix, bytes(data), False
    return suffix, valid[: draw(st.integers(0, len(valid)))], False


def windows(text: str) -> set[str]:
    return {text[start : start + WINDOW] for start in range(len(text) - WINDOW + 1)}


def random_runs(data: bytes) -> set[str]:
    """What random bytes could have put in a message: runs of printable characters after the first
    line (which is a header, shown only when it looks like column names), decoded every likely way."""
    runs: set[str] = set()
    for encoding in ("latin-1", "utf-8", "utf-16"):
        lines = re.split(r"[\r\n]", data.decode(encoding, errors="ignore"))
        for line in lines[1:]:
            for run in re.findall(rf"[^\x00-\x1f\x7f-\x9f]{{{WINDOW},}}", line):
                if run.strip():
                    runs |= windows(run)
    return runs


def leftovers(root: Path) -> list[str]:
    return [str(path) for path in root.rglob("*") if "staging" in path.name or path.name.endswith(".tmp") or path.name.endswith(".rewrite")]


def check_output(root: Path, manifest: dict | None) -> None:
    folder = root / "data" / "notes_prop"
    assert not leftovers(root), leftovers(root)
    if manifest is None:
        assert not folder.exists()
        assert not (root / "dataset_info.json").exists()
        return
    assert (folder / "manifest.json").is_file()
    on_disk = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk["outputs"] == manifest["outputs"]
    for name, facts in manifest["outputs"].items():
        assert (folder / name).stat().st_size == facts["bytes"], name
    assert {path.name for path in (root / "data").iterdir()} == {"notes_prop"}


@settings(max_examples=60, deadline=None)
@given(export=exports(), on_error=st.sampled_from(["fail", "skip"]), encoding=st.sampled_from(["auto", "auto", "utf-16", "latin-1"]))
def test_any_export_gives_a_result_or_a_clean_message(export: tuple[str, bytes, bool], on_error: str, encoding: str) -> None:
    suffix, data, random = export
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        source = root / "export"
        source.mkdir()
        (source / f"notes{suffix}").write_bytes(data)
        options = PrepareOptions(
            name="notes_prop", mapping=GENERIC_MAPPING, encoding=encoding, on_error=on_error,
            split=SplitPlan(0.2, 0.3, seed=3), likert_notes=1, likert_min_characters=10, min_characters=1,
        )  # fmt: skip
        try:
            manifest = prepare_corpus([source], options, root / "out")
        except CorpusError as error:
            message = str(error)
            assert "SENTINELA" not in message and "123.456.789-09" not in message, message
            leaked = {window for window in windows(message) if window in (random_runs(data) if random else set().union(*map(windows, CELLS)))}
            assert not leaked, (leaked, message)
            check_output(root / "out", None)
            return
        serialized = json.dumps(manifest, ensure_ascii=False)
        assert "SENTINELA" not in serialized
        check_output(root / "out", manifest)
