"""Exceptions shared by medfactory's corpus plugins."""


class CorpusError(ValueError):
    """Bad corpus input: the message names the file, line or record, and the fix."""
