"""The values each recipe must carry from its source paper, read from ``paper_values.yaml`` beside this file.

The table is data, with a comment per source saying where each value comes from; ``recipes check``
enforces it and ``medfactory card`` marks its values as *paper*.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

TABLE_FILE = "paper_values.yaml"


def _load_table() -> dict[str, dict[str, Any]]:
    table = yaml.safe_load(resources.files("medfactory.recipes").joinpath(TABLE_FILE).read_text(encoding="utf-8"))
    for name, entry in table.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("values"), dict) or not entry.get("source"):
            raise ValueError(f"{TABLE_FILE}: {name!r} needs `source:` and a `values:` mapping")
    return table


_TABLE = _load_table()

PAPER_VALUES: dict[str, dict[str, Any]] = {name: entry["values"] for name, entry in _TABLE.items()}
PAPER_SOURCE: dict[str, str] = {name: entry["source"] for name, entry in _TABLE.items()}
# Recipes whose paper trained in 16-bit: one of bf16 / fp16 / pure_bf16 must be true.
SIXTEEN_BIT_RECIPES: set[str] = {name for name, entry in _TABLE.items() if entry.get("sixteen_bit")}
