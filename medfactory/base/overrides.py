"""``key=value`` overrides, typed the way ``llamafactory-cli`` types them (OmegaConf's dotlist).

``llamafactory-cli train recipe.yaml bf16=false`` merges ``OmegaConf.from_cli`` into the recipe, so
``false`` is a bool and ``2e-5`` a float. Parsing our own ``--override`` options the same way means
what we record (settings files, provenance) is what LLaMA-Factory ran.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import OmegaConf


class OverrideError(ValueError):
    """An override that is not ``key=value``; the message shows the expected form."""


def parse_overrides(pairs: Iterable[str] | None, option: str = "--override", example: str = "bf16=false") -> dict[str, Any]:
    """``["bf16=false", "cutoff_len=512"]`` -> ``{"bf16": False, "cutoff_len": 512}``, in order."""
    pairs = list(pairs or [])
    for pair in pairs:
        key, sep, _ = pair.partition("=")
        if not sep or not key.strip():
            raise OverrideError(f"{option} {pair!r}: write overrides as key=value, e.g. {example}")
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_dotlist([pair.strip() for pair in pairs]), resolve=True)
    except Exception as error:  # OmegaConf raises its own grammar and interpolation errors
        raise OverrideError(f"{option}: {error.__class__.__name__} in {' '.join(pairs)!r}; write plain key=value, e.g. {example}") from error
    return dict(parsed)


def _as_cli_value(value: Any) -> str:
    # A string that OmegaConf reads back as the same string goes as it is; anything else (bools,
    # None, strings like "1" or "true" that must stay strings) as JSON, which YAML reads exactly.
    if isinstance(value, str):
        round_trip = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={value}"]))["value"]
        if round_trip == value:
            return value
    return json.dumps(value, ensure_ascii=False)


def to_cli_arguments(overrides: Mapping[str, Any]) -> list[str]:
    """``{"bf16": False}`` -> ``["bf16=false"]``: arguments ``llamafactory-cli`` reads back to the same values."""
    return [f"{key}={_as_cli_value(value)}" for key, value in overrides.items()]
