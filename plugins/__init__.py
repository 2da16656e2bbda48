"""Corpus plugins: each module turns one real corpus format into registered LLaMA-Factory datasets.

A plugin is a :class:`CorpusPlugin` exposed under the ``medfactory.plugins`` entry-point
group. ``medfactory prepare <name>`` lists and runs every plugin found there, including
those of third-party packages, so a new corpus never needs an edit to this repository::

    [project.entry-points."medfactory.plugins"]
    my_hospital = "my_package.my_hospital:PLUGIN"

Plugins run before training and produce files; nothing here patches LLaMA-Factory at run time
(that would not survive ``FORCE_TORCHRUN`` re-launches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Annotated

import typer

ENTRY_POINT_GROUP = "medfactory.plugins"

# Every prepare command takes --replace: a dataset folder or registry key another plugin (or a person)
# wrote is refused without it (medfactory.base.publish).
ReplaceOption = Annotated[bool, typer.Option("--replace", help="Replace a data/ folder or dataset_info.json keys that another plugin (or a person) wrote")]


@dataclass(frozen=True)
class CorpusPlugin:
    """One corpus format.

    ``command`` is a typer-style function (its parameters become the CLI options of
    ``medfactory prepare <name>``); it prepares the corpus and registers its datasets.
    """

    name: str
    summary: str
    command: Callable[..., object]


def discover_plugins() -> dict[str, CorpusPlugin]:
    """Every installed plugin, by name.

    A plugin that fails to load does not take the whole CLI down: it is replaced by a command
    that reports the failure when someone runs it.
    """
    found: dict[str, CorpusPlugin] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = entry.load()
            if not isinstance(plugin, CorpusPlugin):
                raise TypeError(f"{entry.value} is not a medfactory.plugins.CorpusPlugin")
        except Exception as error:  # a third-party plugin can fail in any way; report it, keep the CLI
            plugin = _broken_plugin(entry.name, entry.value, error)
        found[plugin.name] = plugin
    return dict(sorted(found.items()))


def _broken_plugin(name: str, target: str, error: Exception) -> CorpusPlugin:
    def command() -> None:
        raise SystemExit(f"plugin {name!r} ({target}) failed to load: {type(error).__name__}: {error}")

    return CorpusPlugin(name=name, summary=f"(failed to load: {error})", command=command)
