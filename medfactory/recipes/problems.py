"""What ``recipes check`` reports: one problem of one recipe, naming the key and the fix."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class RecipeProblem:
    """One thing wrong with one recipe."""

    recipe: Path
    key: str | None
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.recipe}" + (f": `{self.key}`" if self.key else "")
        return f"{where}: {self.message} Fix: {self.fix}"


@dataclasses.dataclass(frozen=True)
class ParsedArgs:
    """The five argument dataclasses LLaMA-Factory's parser builds from a recipe, and the recipe itself."""

    values: dict[str, Any]
    model: Any
    data: Any
    training: Any
    finetuning: Any
    generating: Any

    def value(self, key: str) -> Any:
        """The value LLaMA-Factory acts on (after its parser's defaults and post-processing)."""
        for part in (self.model, self.data, self.training, self.finetuning, self.generating):
            if hasattr(part, key):
                return getattr(part, key)
        return self.values.get(key)

    def written(self, key: str) -> bool:
        """Whether the recipe itself sets ``key`` (not a default)."""
        return key in self.values

    def show(self, key: str) -> str:
        """``key: value`` as the recipe writes it, or the default LLaMA-Factory uses."""
        if self.written(key):
            return f"`{key}: {yaml_value(self.values[key])}`"
        return f"`{key}: {yaml_value(self.value(key))}` (the default)"


def yaml_value(value: Any) -> str:
    """A value as YAML writes it (``true``, ``null``, ``0.03``, ``constant``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)
