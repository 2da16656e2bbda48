"""``medfactory demo``: the offline CPU demo (what ``make demo`` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo_command(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes data/ and saves/")] = Path("."),
    max_steps: Annotated[int, typer.Option(help="Training steps of the tiny CPU run")] = 800,
) -> None:
    """Offline CPU demo: tiny Mistral + synthetic pt-BR notes through the real Clinical-BR recipe."""
    from medfactory.run.demo import run_demo

    run_demo(workdir=workdir, max_steps=max_steps)
