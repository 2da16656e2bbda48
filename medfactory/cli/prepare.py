"""``medfactory prepare <corpus>``: one command per corpus plugin, found through entry points."""

from __future__ import annotations

import typer

from medfactory.plugins import discover_plugins

prepare_app = typer.Typer(help="Prepare a corpus into data/ and register it in dataset_info.json.", no_args_is_help=True)

for _plugin in discover_plugins().values():
    prepare_app.command(name=_plugin.name, help=_plugin.summary)(_plugin.command)
