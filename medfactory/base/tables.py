"""Markdown tables for reports and cards: one writer, through ``pandas.DataFrame.to_markdown`` (tabulate)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def _cell(value: Any) -> str:
    # A "|" or a line break inside a cell would end it; GitHub Markdown escapes the first, joins the second.
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table of already formatted cells (numbers are written as given, never re-parsed)."""
    import pandas as pd

    frame = pd.DataFrame([[_cell(value) for value in row] for row in rows], columns=[_cell(name) for name in header], dtype=str)
    return frame.to_markdown(index=False, tablefmt="pipe", disable_numparse=True)
