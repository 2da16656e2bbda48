"""Exceptions shared by medfactory's corpus plugins, and how a command reports them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class CorpusError(ValueError):
    """Bad corpus input: the message names the file, line or record, and the fix."""


@contextlib.contextmanager
def exit_on_corpus_error() -> Iterator[None]:
    """For a command's work: a :class:`CorpusError` becomes ``error: <message>`` (red, on stderr) and exit status 1, no traceback.

    The message is the error's own, which names files, lines and counts, never a note's text.
    """
    import typer  # the commands' library; only a command enters this

    try:
        yield
    except CorpusError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error
