"""The one Markdown table writer: cells as given, pipes escaped, a row per record."""

from __future__ import annotations

from medfactory.base.tables import markdown_table


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split(" | ")]


def test_cells_are_written_as_given_and_pipes_cannot_break_a_row() -> None:
    table = markdown_table(["model", "accuracy"], [["a|b", "0.5000"], ["lora", "1e-05"], ["two\nlines", ""]])
    lines = table.splitlines()
    assert len(lines) == 5 and set(lines[1]) <= set("|:- ")
    assert _cells(lines[0]) == ["model", "accuracy"]
    assert _cells(lines[2]) == ["a\\|b", "0.5000"]  # escaped: still two cells
    assert _cells(lines[3]) == ["lora", "1e-05"]  # numbers are not re-parsed (1e-05 stays as written)
    assert _cells(lines[4])[0] == "two lines"
